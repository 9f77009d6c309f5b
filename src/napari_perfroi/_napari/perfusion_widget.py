"""The "Perfusion" dock widget: pixel-wise MBF, AHA segments and the flow report.

Compute runs the flow and aha steps of :mod:`napari_perfroi.pipeline` in a
napari thread worker (progress bar, Cancel), so the viewer stays responsive.
The results show as layers by fixed name and in the panel: the AHA bullseye
(click a segment to highlight it), the AIF and tissue curves, the global MBF,
the lowest territory, the model line and the QA flags. A store that already
has a report shows it when opened, without computing again.

The maps are stored in each slice's reference-frame geometry, one (S, Y, X)
array each. The overlays show that array on every frame without copying it
(a broadcast view, or a single frame stretched over t) and are shifted by the
frame's motion as the viewer steps through frames: they sit on the heart on
every frame, and a pixel painted in "AIF ROI" on any frame lands on the
reference-frame pixel under the brush.

An edited "AIF ROI" is written to the store as the manual AIF ROI after each
stroke, before each Compute and when the widget is hidden; erasing it all, or
"Automatic AIF", goes back to the automatic AIF.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QWidget,
)

from ..errors import InputError
from ..progress import Cancelled
from ..report import (
    SEGMENT_NAMES,
    SEGMENT_TERRITORY,
    TERRITORY_NAMES,
    bullseye_segment_at,
    draw_bullseye,
    draw_curves,
    draw_upslope_bullseye,
    flow_report,
    has_absolute_mbf,
)
from ..study import SLICE_LEVELS, StoreError, Study, checked_slice_levels
from .layers import (
    AHA_BOUNDARIES_LAYER,
    AHA_HIGHLIGHT_COLORS,
    AHA_LAYER,
    AHA_NUMBERS_LAYER,
    AIF_ROI_LAYER,
    IMAGE_LAYER,
    LABELS_LAYER,
    MAP_LAYERS,
    MBF_LAYER,
    MBF_RANGE_ML_MIN_G,
    STORE_KEY,
    aha_boundaries_layer,
    aha_layer,
    aha_numbers_layer,
    aif_mask_from_layer,
    aif_roi_layer,
    find_layer,
    frame_at,
    go_to_frame,
    mbf_layer,
    parameter_map_layer,
    study_scale,
)
from .scroll import scrolling_layout
from .segment_widget import find_store
from .step_worker import (
    clear_step_progress,
    request_cancel,
    show_step_error,
    show_step_progress,
    step_worker,
)

if TYPE_CHECKING:
    from matplotlib.backend_bases import MouseEvent

MBF_COLORMAP = "turbo"  # the "MBF" layer's colormap (layers.mbf_layer): bullseye and map agree
# The result layers over the labels, bottom to top. They are drawn in the reference frames
# and follow the motion of the frame on screen: their data are moved frame by frame, the
# editable AIF ROI (one frame for all) is moved as a layer.
OVERLAYS = (*(name for name, _ in MAP_LAYERS.values()), MBF_LAYER, AHA_LAYER,
            AHA_BOUNDARIES_LAYER, AHA_NUMBERS_LAYER, AIF_ROI_LAYER)
# The Perfusion dock's model list: flow step option -> label.
FLOW_MODEL_CHOICES = {"fermi": "Fermi", "2cxm": "2CXM (two-compartment)"}
AIF_SOURCES = {"manual": "manual ROI", "auto": "automatic, LV blood pool",
               "aif series": "separate AIF series"}
# Properties of a points or shapes layer set again after its data is replaced.
RESTYLED = ("features", "edge_color", "edge_width", "face_color", "border_color", "size")
HEMATOCRIT_STEP = 0.01
DEFAULT_HEMATOCRIT = 0.45  # shown until a study says otherwise
PROGRESS_UNITS = {"motion": "slices", "segment": "slices", "flow": "slices", "aha": "steps"}


def _indices_text(indices: dict[str, Any]) -> str:
    """The semi-quantitative indices of one segment, in one line."""
    def value(key, fmt):
        return "-" if indices.get(key) is None else format(indices[key], fmt)

    return (f"relative upslope {value('relative_upslope', '.3f')}, time to peak "
            f"{value('time_to_peak_s', '.1f')} s, peak {value('relative_peak', '.0%')}")


def _narrow(box: QComboBox) -> QComboBox:
    """A list as wide as a few characters, not its longest item, so the dock stays narrow."""
    box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    box.setMinimumContentsLength(5)
    return box


def _draw_study_bullseye(ax, report: dict[str, Any], highlight: int | None) -> None:
    """A study's bullseye: MBF on the fixed scale, or the relative upslope without a
    trustworthy AIF."""
    if has_absolute_mbf(report):
        low, high = MBF_RANGE_ML_MIN_G
        draw_bullseye(ax, report["segment_mbf"], vmin=low, vmax=high, cmap=MBF_COLORMAP,
                      highlight=highlight, units=report.get("units", "mL/min/g"))
    else:  # the semi-quantitative index instead of a flow
        draw_upslope_bullseye(ax, report, highlight)


def run_perfusion(
    path: Path, hematocrit: float, cancel: threading.Event, closed: threading.Event,
    on_progress: Callable[[str, int, int], None], flow_model: str = "fermi",
    dose_ratio: float | None = None,
) -> dict[str, str]:
    """Run the flow and aha steps on the store, after the motion and segment steps when
    the store lacks their results (as ``perfroi analyze`` does); {step: summary}.

    Runs in the worker thread and reports through ``on_progress(step, done,
    total)``, never once the dock is ``closed`` (its widget is gone). ``cancel``
    stops the steps up to flow before they write (:class:`Cancelled`); once the
    flow map is written the aha step finishes the report, unless the dock is
    closed, which stops it before it writes.
    """
    from ..pipeline import run_step, with_prerequisites

    study = Study.open(path, writable=True)

    def progress_of(step: str, stop: threading.Event) -> Callable[[int, int], None]:
        def progress(done: int, total: int) -> None:
            if stop.is_set() or closed.is_set():
                raise Cancelled
            on_progress(step, done, total)

        return progress

    summaries = {}
    for step in with_prerequisites(study, ["flow"]):
        if step != "flow":
            progress = progress_of(step, cancel)
            progress(0, study.shape[0])
            summaries[step] = run_step(study, step, progress)
    flow_progress, aha_progress = progress_of("flow", cancel), progress_of("aha", closed)
    flow_progress(0, study.shape[0])
    summaries["flow"] = run_step(study, "flow", flow_progress, hematocrit=hematocrit,
                                 flow_model=flow_model, dose_ratio=dose_ratio)
    aha_progress(0, 1)
    summaries["aha"] = run_step(study, "aha", aha_progress)
    return summaries


def _teardown(closed: threading.Event, connections: list[tuple[Any, Any]], *_) -> None:
    """Stop a run and disconnect from the viewer's events once the widget is gone."""
    closed.set()
    for emitter, callback in connections:
        emitter.disconnect(callback)
    connections.clear()


class PerfusionWidget(QWidget):
    """Dock widget: compute and review the myocardial blood flow of the study in the viewer."""

    finished = Signal()  # a Compute ended: done, cancelled or failed
    segment_selected = Signal(object)  # the highlighted segment 1-16, or None
    _progressed = Signal(str, float, int)  # step, done, total (emitted from the worker)

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None  # the running thread worker, None when idle
        self.report: dict[str, Any] | None = None  # the flow report on show
        self.selected_segment: int | None = None
        self._store: Path | None = None  # the store of the perfusion layer
        self._shown_store: Path | None = None  # the store whose results are on show
        self._run_store: Path | None = None  # the store of the current Compute
        self._shape: tuple[int, int] | None = None  # (slices, frames) of the shown store
        self._slice_levels: list[str] = []
        self._reference_frames: list[int] = []
        self._motion: np.ndarray | None = None  # (S, T, 2) px, frame relative to reference
        self._shown_slice: int | None = None
        self._aif_layer = None  # the "AIF ROI" layer whose edits are watched
        self._aif_edited = False  # the user painted in it since it was loaded
        self._default_hematocrit = DEFAULT_HEMATOCRIT
        self._cancel = threading.Event()  # Cancel pressed
        self._closed = threading.Event()  # the widget is gone
        self._connections: list[tuple[Any, Any]] = []

        self.study_label = QLabel()
        self.study_label.setWordWrap(True)
        self.hematocrit = QDoubleSpinBox()
        self.hematocrit.setRange(0.0, 0.95)
        self.hematocrit.setSingleStep(HEMATOCRIT_STEP)
        self.hematocrit.setDecimals(2)
        self.hematocrit.setToolTip("Blood hematocrit: converts the AIF from blood to plasma")
        self.hematocrit.setValue(DEFAULT_HEMATOCRIT)
        self.flow_model = _narrow(QComboBox())
        for key, label in FLOW_MODEL_CHOICES.items():
            self.flow_model.addItem(label, key)
        self.flow_model.setToolTip(
            "Tissue model of the flow fit: Fermi-constrained deconvolution, or the "
            "two-compartment exchange model (also PS, vp and ve maps, hidden layers)")
        self.dose_ratio = QDoubleSpinBox()
        self.dose_ratio.setRange(0.0, 100.0)
        self.dose_ratio.setDecimals(1)
        self.dose_ratio.setSpecialValueText("single")
        self.dose_ratio.setToolTip(
            "Dual bolus: main dose over the dilute pre-bolus dose (the AIF is the pre-bolus "
            "scaled by it); 'single' for a single bolus or a separate AIF series")
        self.compute_button = QPushButton("Compute")
        self.compute_button.setToolTip("Fit the MBF map, then the AHA segments and the report")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.rest_button = QPushButton("Rest study…")
        self.rest_button.setToolTip(
            "Pair this stress study with its rest study (an analysed store): both bullseyes "
            "and the perfusion reserve per territory")
        self.automatic_aif_button = QPushButton("Automatic AIF")
        self.automatic_aif_button.setToolTip(
            "Forget the manual AIF ROI: the next Compute finds the AIF itself")
        self.progress_bar = QProgressBar()
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.aif_label = QLabel()
        self.aif_label.setWordWrap(True)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.segment_label = QLabel()
        self.segment_label.setWordWrap(True)
        self.canvas = FigureCanvasQTAgg(Figure(figsize=(4.0, 7.5), layout="constrained"))
        self.canvas.setMinimumHeight(520)
        self.canvas.setVisible(False)  # until there is a report to draw
        self.canvas.setToolTip("Click a bullseye segment to highlight it; click it again to clear")
        self.bullseye_axes = None  # the axes of the bullseye and of the curves on show
        self.curves_axes = None
        self.rest_axes = None  # the rest study's bullseye, when paired
        self.rest_pair = None  # StressRest of the study on show and its rest study
        self._rest_store: Path | None = None
        self._paired_store: Path | None = None  # the stress store the rest store belongs to

        hematocrit_row = QHBoxLayout()
        hematocrit_row.addWidget(QLabel("hematocrit"))
        hematocrit_row.addWidget(self.hematocrit)
        hematocrit_row.addWidget(QLabel("model"))
        hematocrit_row.addWidget(self.flow_model)
        bolus_row = QHBoxLayout()
        bolus_row.addWidget(QLabel("bolus"))
        bolus_row.addWidget(self.dose_ratio, stretch=1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.compute_button)
        buttons.addWidget(self.cancel_button)
        layout = scrolling_layout(self)
        layout.addWidget(self.study_label)
        layout.addLayout(hematocrit_row)
        layout.addLayout(bolus_row)
        self.levels_row = QHBoxLayout()  # a level list per slice, base to apex
        layout.addLayout(self.levels_row)
        self.level_boxes: list[QComboBox] = []
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addWidget(self.aif_label)
        aif_and_rest = QHBoxLayout()
        aif_and_rest.addWidget(self.automatic_aif_button)
        aif_and_rest.addWidget(self.rest_button)
        layout.addLayout(aif_and_rest)
        layout.addWidget(self.summary)
        layout.addWidget(self.segment_label)
        layout.addWidget(self.canvas)

        self._save_timer = QTimer(self)
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(0)
        self._save_timer.timeout.connect(self._save_aif_roi)

        self.compute_button.clicked.connect(self.compute)
        self.cancel_button.clicked.connect(self.cancel)
        self.automatic_aif_button.clicked.connect(self.use_automatic_aif)
        self.rest_button.clicked.connect(self._choose_rest)
        self._progressed.connect(self._show_progress)
        self.canvas.mpl_connect("button_press_event", self._on_click)
        # A reader adds a store's layers one by one: look at them once it is done, so its
        # result layers are taken over rather than shown twice.
        self._attach_timer = QTimer(self)
        self._attach_timer.setSingleShot(True)
        self._attach_timer.setInterval(0)
        self._attach_timer.timeout.connect(self._attach)
        self._connect(self.viewer.layers.events.inserted, self._schedule_attach)
        self._connect(self.viewer.layers.events.removed, self._schedule_attach)
        self._connect(self.viewer.layers.selection.events.active, self._schedule_attach)
        self._connect(self.viewer.dims.events.point, self._on_frame)
        # Not self: the slot runs when the widget is gone.
        self.destroyed.connect(partial(_teardown, self._closed, self._connections))
        self._attach()

    # ---------------------------------------------------------------- actions
    def compute(self) -> None:
        """Run the flow and aha steps on the study's store in a worker thread."""
        self._attach()
        if self._store is None or self.worker is not None:
            return
        self._save_aif_roi()
        self._cancel.clear()
        self._run_store = self._store  # the layer may go while the run goes on
        self.worker = step_worker(
            run_perfusion, self._run_store, self._chosen_hematocrit(), self._cancel, self._closed,
            self._progressed.emit, self.flow_model.currentData(),
            self.dose_ratio.value() or None, on_done=self._on_done,
            on_error=self._on_error, on_finished=self._on_finished,
        )
        self._set_running(True)
        clear_step_progress(self.progress_bar, self.status)  # not the last run's
        self.status.setText("starting…")
        self.worker.start()

    def cancel(self) -> None:
        """Stop the run before the flow step writes; nothing new is written."""
        if self.worker is not None:
            request_cancel(self._cancel, self.cancel_button, self.status)

    def use_automatic_aif(self) -> None:
        """Let the next Compute find the AIF itself instead of using the manual ROI."""
        if self._shown_store is None or self.worker is not None:
            return
        try:
            Study.open(self._shown_store, writable=True).update_attrs(aif_roi="auto")
        except (InputError, OSError) as exc:
            self.status.setText(f"could not change the AIF: {exc}")
            return
        self._aif_edited = False
        self._show_aif()

    def select_segment(self, segment: int | None) -> None:
        """Highlight one AHA segment (None: none) in the bullseye, the layer and the curves."""
        self.selected_segment = segment
        layer = self._layer(AHA_LAYER)
        if layer is not None:
            layer.selected_label = segment or 0
        curve = self._curve(segment)
        if curve is not None:
            s = int(curve["slice"])
            self.go_to(s, self._reference_frames[s])
        self._show_segment()
        self._draw()
        self.segment_selected.emit(segment)

    def go_to(self, s: int, t: int) -> None:
        """Move the viewer to frame ``t`` of slice ``s``."""
        layer = self._frame_layer()
        if layer is not None:
            go_to_frame(self.viewer, layer, s, t)

    def current_frame(self) -> tuple[int, int] | None:
        """(slice, t) of the viewer's position, None without a study on show."""
        layer = self._frame_layer()
        if layer is None or self._shape is None:
            return None
        return frame_at(self.viewer, layer, self._shape)

    # ---------------------------------------------------------------- store -> layers and panel
    def _schedule_attach(self, event=None) -> None:
        self._attach_timer.start()

    def _attach(self, event=None) -> None:
        """Find the store of the perfusion layer and show its results if it is a new one."""
        self._store, note = find_store(self.viewer, self._shown_store)
        self.study_label.setText(note)
        self._set_running(self.worker is not None)
        if self._store != self._shown_store:
            self._load(self._store)

    def _load(self, path: Path | None) -> None:
        """Show what the store at ``path`` has: layers, report, AIF; clear the panel without."""
        if path != self._paired_store:  # another study: its rest pair is not this one's
            self._rest_store, self.rest_pair = None, None
        if path != self._shown_store and self.worker is None and self._shown_store is not None:
            clear_step_progress(self.progress_bar, self.status)  # the last study's run
        self._shown_store, self._shape, self._motion = path, None, None
        self.report, self.selected_segment, self._shown_slice = None, None, None
        self._aif_edited = False
        study = None
        if path is not None:
            try:
                study = Study.open(path)
            except InputError as exc:
                self.status.setText(str(exc))
        if study is not None:
            attrs = study.attrs
            self._shape = study.shape[:2]
            self._slice_levels = list(attrs["slice_levels"])
            self._show_levels()
            self._reference_frames = [int(t) for t in attrs["reference_frame"]]
            self._motion = study.read("motion") if study.has("motion") else None
            self._show_layers(study)
            try:
                self.report = flow_report(study)
            except StoreError:
                self.report = None  # not computed yet, or an incomplete run
            hematocrit = (self.report or attrs)["hematocrit"]
            self._default_hematocrit = float(hematocrit)
            self.hematocrit.setValue(self._default_hematocrit)
            self._pair_with_rest(study)
        self._show_summary(study)
        self._show_aif(study)
        self._show_segment()
        frame = self.current_frame()
        self._shown_slice = None if frame is None else frame[0]
        self._on_frame()  # shifts the overlays with the motion of the frame on show
        self._draw()

    def _show_layers(self, study: Study) -> None:
        """Add the result layers the store has data for, or update those already there."""
        from napari.layers import Image, Labels, Points, Vectors

        scale = study_scale(study)
        for array, (name, _) in MAP_LAYERS.items():
            if study.has(array):
                self._put_layer(Image, *parameter_map_layer(study, scale, self._motion,
                                                             array=array))
            elif self._layer(name) is not None:  # left by an earlier two-compartment run
                self.viewer.layers.remove(self._layer(name))
        if study.has("mbf"):
            mbf = self._put_layer(Image, *mbf_layer(study, scale, self._motion))
            mbf.colorbar.visible = True
        if study.has("aha"):
            aha = self._put_layer(Labels, *aha_layer(study, scale, self._motion))
            aha.colormap = dict(AHA_HIGHLIGHT_COLORS)
            aha.contour = 1
            aha.opacity = 1.0
            aha.selected_label = 0  # none: the chosen segment only is outlined
            aha.show_selected_label = True
            aha.visible = True
            self._put_layer(Vectors, *aha_boundaries_layer(study, scale, self._motion))
            self._put_layer(Points, *aha_numbers_layer(study, scale, self._motion))
        if study.has("labels") or study.has("aif_mask"):
            aif = self._put_layer(Labels, *aif_roi_layer(study, scale))
            aif.selected_label = 1
            aif.editable = self.worker is None
            if aif is not self._aif_layer:
                self._connect(aif.events.paint, self._on_aif_painted)
                # hidden, it is not moved: it follows when it is shown again
                self._connect(aif.events.visible, self._on_frame)
                self._aif_layer = aif
        self._stack_overlays()

    def _stack_overlays(self) -> None:
        """Keep the labels under the result layers, and those in the order of OVERLAYS: the
        maps above the labels (which would hide them), the AIF ROI above the maps."""
        layers = self.viewer.layers
        below = -1
        for name in (LABELS_LAYER, *OVERLAYS):
            layer = self._layer(name)
            if layer is None:
                continue
            if layers.index(layer) < below:
                layers.move(layers.index(layer), below + 1)
            below = layers.index(layer)

    def _put_layer(self, kind: type, data: Any, kwargs: dict[str, Any], layer_type: str):
        """The layer named ``kwargs["name"]`` showing ``data``: updated in place, or added
        (without making it the active layer: the user's keeps its keys)."""
        layer = self._layer(kwargs["name"])
        if isinstance(layer, kind):
            layer.data = data
            for name in RESTYLED:  # new vectors and points come with the layer's defaults
                if name in kwargs:
                    setattr(layer, name, kwargs[name])
            layer.metadata.update(kwargs["metadata"])
            layer.scale = kwargs["scale"]
            layer.translate = kwargs.get("translate", np.zeros(layer.ndim))
            return layer
        active = self.viewer.layers.selection.active
        layer = getattr(self.viewer, f"add_{layer_type}")(data, **kwargs)
        if active is not None:
            self.viewer.layers.selection.active = active
        return layer

    def _layer(self, name: str):
        """The layer ``name`` of the shown store, None if there is none."""
        if self._shown_store is None:
            return None
        return find_layer(self.viewer, name, self._shown_store)

    def _frame_layer(self):
        return self._layer(IMAGE_LAYER) or self._layer(MBF_LAYER)

    def _show_summary(self, study: Study | None) -> None:
        report = self.report
        if study is None:
            self.summary.setText("")
            return
        if report is None:
            hint = ("press Compute" if study.has("labels")
                    else "press Compute (it segments the study first)")
            self.summary.setText(f"no flow report yet: {hint}")
            return
        units = html.escape(report.get("units", "mL/min/g"))
        lines = [f"<b>global MBF {_number(report['global_mbf'])} {units}</b>"
                 if has_absolute_mbf(report)
                 else "<b>no absolute MBF</b> (AIF saturated): relative upslope shown"]
        territories = report.get("territory_mbf") or {}
        lowest = report.get("lowest_territory")
        if lowest:
            lines[0] += (f" · lowest territory <b>{TERRITORY_NAMES[lowest]}</b>"
                         f" ({_number(territories.get(lowest))})")
        if territories:
            lines.append(" · ".join(f"{TERRITORY_NAMES[name]} {_number(value)}"
                                    for name, value in territories.items()))
        shown_model = self.flow_model.findData(report.get("flow_model", "fermi"))
        if shown_model >= 0:  # the list shows the model of the results on show
            self.flow_model.setCurrentIndex(shown_model)
        lines.append(html.escape(f"{report['model']} · {report['flow']} flow · "
                                 f"hematocrit {report['hematocrit']:.2f}"))
        if self.rest_pair is not None:
            from ..reserve import reserve_line

            lines.append(html.escape(f"rest {self.rest_pair.rest_name}: "
                                     + reserve_line(self.rest_pair.reserve)))
        flags = report.get("qa") or []
        if self.rest_pair is not None:
            flags = [*flags, *self.rest_pair.warnings, *self.rest_pair.reserve.qa]
        lines.append("QA: none" if not flags else "QA:<br>" + "<br>".join(
            f"&#9888; {html.escape(flag)}" for flag in flags))
        self.summary.setText("<br>".join(lines))

    def _show_aif(self, study: Study | None = None) -> None:
        """Say where the report's AIF came from, and whether a manual ROI waits for Compute."""
        if study is None and self._shown_store is not None:
            try:
                study = Study.open(self._shown_store)
            except InputError:
                study = None
        if study is None:
            self.aif_label.setText("")
            self.automatic_aif_button.setEnabled(False)
            return
        manual_roi = study.attrs.get("aif_roi") == "manual"
        self.automatic_aif_button.setEnabled(manual_roi and self.worker is None)
        used = self.report.get("aif_source") if self.report else None
        if manual_roi and (used != "manual" or self._aif_edited):
            mask = study.read("aif_mask") if study.has("aif_mask") else None
            text = f"AIF: manual ROI {_roi_text(mask)}: press Compute to use it"
        elif used is not None:
            text = f"AIF: {AIF_SOURCES.get(used, used)} (slice {int(self.report['aif_slice']) + 1})"
            if used == "manual" and not manual_roi:
                text += ": press Compute for the automatic AIF"
        else:
            text = f'AIF: automatic (paint in "{AIF_ROI_LAYER}" to choose it)'
        self.aif_label.setText(text)

    def _show_segment(self) -> None:
        segment, report = self.selected_segment, self.report
        if segment is None or report is None:
            self.segment_label.setText("")
            return
        head = (f"segment {segment} {SEGMENT_NAMES[segment]} "
                f"({TERRITORY_NAMES[SEGMENT_TERRITORY[segment]]})")
        value = report["segment_mbf"][segment - 1]
        indices = (report.get("segment_semiquant") or [None] * 16)[segment - 1]
        if value is None:
            self.segment_label.setText(f"{head}: not imaged" if indices is None else
                                       f"{head}: {_indices_text(indices)}")
            return
        stats = report["segment_stats"][segment - 1] or {}
        curve = self._curve(segment)
        text = f"{head}: {value:.2f} {report.get('units', 'mL/min/g')}"
        if stats.get("mean") is not None:
            text += (f"; map {stats['mean']:.2f} ± {stats['sd']:.2f} over "
                     f"{stats['pixels']} px")
        if curve is not None:
            text += f"; fit error {curve['fit_error']:.2f}"
        if indices is not None:
            text += f"; {_indices_text(indices)}"
        self.segment_label.setText(text)

    def _curve(self, segment: int | None) -> dict[str, Any] | None:
        if segment is None or self.report is None:
            return None
        return self.report["segment_curves"][segment - 1]

    def _draw(self) -> None:
        """Redraw the bullseye (with the highlight; the rest study's beside it when paired)
        and the curves."""
        figure = self.canvas.figure
        figure.clear()
        self.bullseye_axes = self.curves_axes = self.rest_axes = None
        report = self.report
        if report is not None:
            if self.rest_pair is None:
                bullseye_ax, curves_ax = figure.subplots(2, 1, height_ratios=(1.1, 1.0))
            else:
                axes = figure.subplot_mosaic([["stress", "rest"], ["curves", "curves"]],
                                             height_ratios=(1.1, 1.0))
                bullseye_ax, curves_ax, self.rest_axes = axes["stress"], axes["curves"], axes["rest"]
                _draw_study_bullseye(self.rest_axes, self.rest_pair.rest_report,
                                     self.selected_segment)
                bullseye_ax.set_title("stress", fontsize=9)
                self.rest_axes.set_title(f"rest: {self.rest_pair.rest_name}", fontsize=9)
            _draw_study_bullseye(bullseye_ax, report, self.selected_segment)
            self.bullseye_axes, self.curves_axes = bullseye_ax, curves_ax
            segment = self.selected_segment
            if segment is not None:
                segments, title = [segment], f"segment {segment} {SEGMENT_NAMES[segment]}"
            else:
                s = self._shown_slice or 0
                segments = [n for n, curve in enumerate(report["segment_curves"], start=1)
                            if curve and curve["slice"] == s]
                title = f"slice {s + 1} ({self._slice_levels[s]})" if self._slice_levels else ""
            draw_curves(curves_ax, report, segments, highlight=segment)
            curves_ax.set_title(title, fontsize=9)
        self.canvas.setVisible(report is not None)  # no empty white figure
        self.canvas.draw_idle()

    # ---------------------------------------------------------------- slice levels
    def _show_levels(self) -> None:
        """One list per slice with its level (basal, mid, apical), which sets its AHA ring."""
        while self.levels_row.count():
            item = self.levels_row.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.level_boxes = []
        self.levels_row.addWidget(QLabel("levels"))
        for s, level in enumerate(self._slice_levels):
            box = _narrow(QComboBox())
            box.addItems(SLICE_LEVELS)
            box.setCurrentText(level)
            box.setToolTip(f"slice {s + 1}: its AHA ring (base to apex)")
            box.currentTextChanged.connect(self._levels_chosen)
            self.levels_row.addWidget(box)
            self.level_boxes.append(box)

    def set_slice_levels(self, levels: list[str]) -> None:
        """Store the slice levels (base to apex); the next Compute redraws the AHA segments."""
        for box, level in zip(self.level_boxes, levels):
            box.blockSignals(True)
            box.setCurrentText(level)
            box.blockSignals(False)
        self._levels_chosen()

    def _levels_chosen(self, _text: str = "") -> None:
        if self._shown_store is None or self.worker is not None:
            return
        study = Study.open(self._shown_store, writable=True)
        try:
            levels = checked_slice_levels([box.currentText() for box in self.level_boxes],
                                          study.shape[0])
        except InputError as exc:
            self.status.setText(str(exc))
            return
        if levels != self._slice_levels:
            study.update_attrs(slice_levels=levels)
            self._slice_levels = levels
            self.status.setText(f"slice levels {', '.join(levels)}: press Compute for the "
                                "AHA segments")

    # ---------------------------------------------------------------- stress and rest
    def _choose_rest(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Rest study (a .zarr store)")
        if chosen:
            self.pair_rest(Path(chosen))

    def pair_rest(self, path: Path) -> None:
        """Pair the study on show with the rest study at ``path``: its bullseye beside this
        one and the reserve in the summary; one status line if it cannot be paired."""
        if self._shown_store is None:
            return
        self._rest_store, self._paired_store = path, self._shown_store
        study = Study.open(self._shown_store)
        self._pair_with_rest(study)
        self._show_summary(study)
        self._draw()

    def _pair_with_rest(self, study: Study) -> None:
        """(Re)compute the pair with the chosen rest store, from both current reports."""
        from ..reserve import pair_studies

        self.rest_pair = None
        if self._rest_store is None or self.report is None:
            return
        try:
            self.rest_pair = pair_studies(study, Study.open(self._rest_store))
        except InputError as exc:
            self._rest_store = None
            self.status.setText(str(exc))

    # ---------------------------------------------------------------- the AIF ROI edits
    def _on_aif_painted(self, event=None) -> None:
        self._aif_edited = True
        self._save_timer.start()  # napari may announce a paint before it writes the pixels

    def _save_aif_roi(self) -> None:
        """Write an edited "AIF ROI" layer as the manual AIF ROI (all erased: automatic)."""
        layer = self._aif_layer
        if (not self._aif_edited or self.worker is not None or self._shown_store is None
                or layer is None or layer.metadata.get(STORE_KEY) != str(self._shown_store)):
            return
        mask = aif_mask_from_layer(layer.data)
        try:
            study = Study.open(self._shown_store, writable=True)
            if study.has("aif_mask") and np.array_equal(study.read("aif_mask") > 0, mask > 0):
                return
            study.write("aif_mask", mask)
            study.update_attrs(aif_roi="manual" if mask.any() else "auto")
        except (InputError, OSError) as exc:
            self.status.setText(f"could not save the AIF ROI: {exc}")
            return
        if not mask.any():
            self.status.setText("AIF ROI erased: the next Compute finds the AIF automatically")
        self._show_aif(study)

    # ---------------------------------------------------------------- slots (GUI thread)
    def _connect(self, emitter, callback) -> None:
        emitter.connect(callback)
        self._connections.append((emitter, callback))

    def _on_frame(self, event=None) -> None:
        """Move the AIF ROI with the frame's motion; follow the slice in the curves."""
        frame = self.current_frame()
        if frame is None:
            return
        layer = self._layer(AIF_ROI_LAYER)
        # Moving a layer costs a refresh and a dims update of the viewer: not while hidden.
        if self._motion is not None and layer is not None and layer.visible:
            offset = self._motion[frame] * np.asarray(layer.scale[-2:])
            if not np.allclose(layer.translate[-2:], offset):
                layer.translate = (*layer.translate[:-2], *offset)
        if frame[0] != self._shown_slice:
            self._shown_slice = frame[0]
            if self.report is not None and self.selected_segment is None:
                self._draw()

    def _on_click(self, event: MouseEvent) -> None:
        if self.bullseye_axes is None or event.inaxes is not self.bullseye_axes:
            return
        segment = bullseye_segment_at(event.xdata, event.ydata)
        self.select_segment(None if segment == self.selected_segment else segment)

    def _chosen_hematocrit(self) -> float:
        """The spin box's hematocrit; the store's unrounded value while it shows that one."""
        value = self.hematocrit.value()
        unchanged = abs(value - self._default_hematocrit) < HEMATOCRIT_STEP / 2
        return self._default_hematocrit if unchanged else value

    def _set_running(self, running: bool) -> None:
        self.cancel_button.setEnabled(running and not self._cancel.is_set())
        self.compute_button.setEnabled(not running and self._store is not None)
        self.hematocrit.setEnabled(not running)
        self.flow_model.setEnabled(not running)
        self.dose_ratio.setEnabled(not running)
        self.rest_button.setEnabled(not running and self._store is not None)
        if self._aif_layer is not None:
            self._aif_layer.editable = not running
        if running:
            self.automatic_aif_button.setEnabled(False)

    def _show_progress(self, step: str, done: float, total: int) -> None:
        show_step_progress(self.progress_bar, self.status, step, done, total,
                           PROGRESS_UNITS[step], self._cancel.is_set())
        if step == "aha":
            self.cancel_button.setEnabled(False)  # the flow map is written: finish the report

    def _on_done(self, summaries: dict[str, str]) -> None:
        from napari.utils.notifications import show_info

        self._shown_store = None  # show the new results even for the same store
        self._attach()
        if self._store == self._run_store:
            s = (self.current_frame() or (0, 0))[0]
            self.go_to(s, self._reference_frames[s])
        summary = summaries["aha"]
        self.status.setText(summary)
        show_info(f"{self._run_store.name}: {summary}")

    def _on_error(self, exc: Exception) -> None:
        if not isinstance(exc, Cancelled):
            self._shown_store = None  # the flow step may have written before the aha step failed
            self._attach()
        show_step_error(self.status, exc)

    def _on_finished(self) -> None:
        self.worker = None
        self._set_running(False)
        self._show_aif()
        self.finished.emit()

    def hideEvent(self, event) -> None:  # noqa: N802 - Qt override
        self._save_aif_roi()  # the dock was closed or hidden
        super().hideEvent(event)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _roi_text(mask: np.ndarray | None) -> str:
    """Where a manual AIF mask (S, Y, X) has pixels, and which slice the flow step uses."""
    if mask is None:
        return "(empty)"
    counts = (np.asarray(mask) > 0).sum(axis=(1, 2))
    drawn = np.flatnonzero(counts)
    if drawn.size == 0:
        return "(empty)"
    first = int(drawn[0])
    text = f"(slice {first + 1}, {int(counts[first])} px)"
    if drawn.size > 1:
        text += f"; pixels on slice(s) {', '.join(str(s + 1) for s in drawn[1:])} are not used"
    return text
