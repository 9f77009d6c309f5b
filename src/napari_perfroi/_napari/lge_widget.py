"""The "LGE viability" dock widget: the LGE study beside the perfusion study, its scar, and
the viability of each coronary territory.

"Open LGE…" imports an LGE DICOM stack (a folder, a zip or one file) into the study store
on show; "Find scar" runs the LGE steps of :mod:`napari_perfroi.lge.pipeline` (the
myocardium labels and AHA sectors first when the LGE study lacks them). Both run in a
napari thread worker with a progress bar and Cancel. Cancel stops the step under way
before it writes; the steps done before it keep their results (each whole), and the
status line names them.

The LGE shows as layers ("LGE", the paintable "scar", the hidden "LGE labels") on the
perfusion slice at each LGE slice's position, on every frame (:mod:`.lge_layers`). The
panel shows the combined bullseye (perfusion colour, scar hatching and the verdict of
each territory), the viability QA, and per LGE slice whether it shows fibrosis: the weak
labels the slice-level scar model learns from, written as soon as they are chosen.

"Save scar edits" writes the painted scar: the slices it changed are marked edited, so
the next Find scar keeps them, and the viability is measured again. Edits not saved yet
are written before any run, when another study is shown, when the dock is hidden or
closed, when the "scar" layer is removed (closing the viewer removes every layer first)
and when the widget is destroyed.
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QWidget,
)

from ..errors import InputError
from ..lge.pipeline import DEFAULT_N_SD, DEFAULT_SCAR_METHOD, SCAR_METHODS, viability_line
from ..lge.store import MVO, LgeStudy, has_lge
from ..progress import Cancelled
from ..study import Study
from .layers import STORE_KEY, find_layer
from .lge_layers import (
    LGE_LABELS_LAYER,
    LgePlacement,
    from_canvas,
    lge_image_layer,
    lge_labels_layer,
    lge_placement,
    scar_layer,
    to_canvas,
)
from .perfusion_widget import _narrow
from .scroll import scrolling_layout
from .segment_widget import find_store
from .step_worker import (
    clear_step_progress,
    request_cancel,
    show_step_error,
    show_step_progress,
    step_worker,
)

FIND_STEPS = ["lge-scar", "viability"]  # plus the steps whose output the LGE study lacks
# Steps that report progress before they write: a cancel stops them under way. The others
# are quick; the viability always follows the scar it measures.
STOPPABLE_STEPS = ("lge-segment", "lge-scar")
THRESHOLD_METHODS = ("nsd", "fwhm")  # the others are models with weights of their own
FIBROSIS_CHOICES = (("unknown", None), ("yes", True), ("no", False))  # slice_has_scar
FIBROSIS_COLUMNS = 2  # (label, list) pairs per row: the dock stays narrow
N_SD_RANGE = (1.0, 10.0)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- worker functions
def run_import_lge(source: Path, store: Path, overwrite: bool, cancel: threading.Event,
                   closed: threading.Event,
                   on_progress: Callable[[str, float, int], None]) -> tuple[Path, list[str]]:
    """Import the LGE DICOM ``source`` into the study ``store`` (worker thread); the store
    and the importer's warnings. ``cancel`` or ``closed`` stops it before it writes."""
    from ..lge.dicom_import import import_lge_dicom

    warnings: list[str] = []

    def progress(done: int, total: int) -> None:
        if cancel.is_set() or closed.is_set():
            raise Cancelled
        on_progress("import", done, total)

    import_lge_dicom(source, store, overwrite=overwrite, progress=progress, warn=warnings.append)
    return store, warnings


def run_find_scar(path: Path, method: str, n_sd: float, cancel: threading.Event,
                  closed: threading.Event,
                  on_progress: Callable[[str, float, int], None]) -> dict[str, str]:
    """Run the lge-scar and viability steps (after those making missing inputs) on the LGE
    study of the store at ``path``; {step: summary}.

    Runs in the worker thread and reports through ``on_progress(step, done,
    total)``, never once the dock is ``closed``. ``cancel`` (or ``closed``) stops
    the run before the next step and within :data:`STOPPABLE_STEPS`, before
    they write (:class:`Cancelled`); the steps done keep their results. Once the
    scar is written the viability step always follows, so that the viability
    on record measures the scar in the store.
    """
    from ..lge.pipeline import run_lge_steps, steps_to_run

    study = Study.open(path)
    summaries: dict[str, str] = {}
    for name in steps_to_run(LgeStudy.open(study), FIND_STEPS):
        stoppable = name in STOPPABLE_STEPS

        def progress(step: str, done: float, total: int, stoppable: bool = stoppable) -> None:
            if stoppable and (cancel.is_set() or closed.is_set()):
                raise Cancelled
            if not closed.is_set():
                on_progress(step, done, total)

        if not closed.is_set():
            on_progress(name, 0, 1)  # the step starts: the dock knows the steps done before it
        if name != "viability" and (cancel.is_set() or closed.is_set()):
            raise Cancelled
        summaries.update(run_lge_steps(study, [name], progress, method=method, n_sd=n_sd))
    return summaries


def refresh_viability(store: Path) -> str | None:
    """Measure the viability again (the viability step) when the LGE study has its labels,
    sectors and scar; its one-line summary, None when it lacks them."""
    from ..lge.pipeline import run_lge_steps

    lge = LgeStudy.open(store)
    if not all(lge.has(name) for name in ("labels", "aha", "scar")):
        return None
    return run_lge_steps(Study.open(store), ["viability"])["viability"]


def scar_edits_text(slices: list[int], viability: str | None) -> str:
    """The status line after scar edits were saved."""
    text = (f"scar edits saved: LGE slice{'s' if len(slices) > 1 else ''} "
            f"{', '.join(str(k + 1) for k in slices)} marked edited")
    return text + (f"; {viability}" if viability else "")


# ---------------------------------------------------------------- scar edits
class ScarEdits:
    """The painted "scar" layer of one store and what of it is saved (its baseline)."""

    def __init__(self, store: Path, layer, placement: LgePlacement, lge_shape):
        self.store = store
        self.layer = layer
        self.placement = placement
        self.lge_shape = tuple(lge_shape)
        self.baseline = np.array(layer.data, copy=True)  # the canvas as the store has it

    def pending(self) -> bool:
        """Whether pixels were painted since the layer was loaded or saved."""
        return bool(np.any(np.asarray(self.layer.data) != self.baseline))

    def save(self) -> list[int]:
        """Write the pixels painted since the last load or save into the LGE study; the
        LGE slices they changed, marked edited. Raises :class:`InputError`."""
        canvas = np.asarray(self.layer.data)
        painted = canvas != self.baseline
        if not painted.any():
            return []
        lge = LgeStudy.open(self.store, writable=True)
        if lge.shape != self.lge_shape:
            raise InputError(f"{lge.path}: the LGE study changed since it was shown: "
                             "scar edits not saved")
        if int(canvas[painted].max()) > MVO:
            raise InputError(f"{lge.path}: scar labels are 0 (none), 1 (scar) or 2 "
                             f"(microvascular obstruction), painted {int(canvas[painted].max())}")
        stored = lge.read("scar") if lge.has("scar") else np.zeros(lge.shape, dtype=np.uint8)
        merged = to_canvas(self.placement, stored, 0)
        merged[painted] = canvas[painted]  # what a run wrote meanwhile stays elsewhere
        scar = from_canvas(self.placement, merged, stored)
        changed = (scar != stored).any(axis=(1, 2))
        if changed.any():
            flags = (lge.read("scar_edited") > 0 if lge.has("scar_edited")
                     else np.zeros(lge.shape[0], dtype=bool))
            lge.write("scar", scar)  # before the flags: a flag never points at unsaved scar
            lge.write("scar_edited", (flags | changed).astype(np.uint8))
        self.baseline = canvas.copy()
        return [int(k) for k in np.flatnonzero(changed)]


def _fibrosis_index(has_scar: bool | None) -> int:
    return next(i for i, (_, value) in enumerate(FIBROSIS_CHOICES) if value is has_scar)


class _Hooks:
    """What the widget must undo and save when it goes, held apart from the widget:
    ``destroyed`` fires once the Qt side of the widget is gone."""

    def __init__(self):
        self.closed = threading.Event()  # the widget is gone: a run reports nothing more
        self.connections: list[tuple[Any, Any]] = []  # (napari emitter, callback)
        self.edits: ScarEdits | None = None

    def save_edits(self) -> tuple[list[int], str | None]:
        """Save pending scar edits and measure the viability again; the LGE slices changed
        and the viability line (raises InputError)."""
        if self.edits is None:
            return [], None
        changed = self.edits.save()
        return changed, refresh_viability(self.edits.store) if changed else None

    def teardown(self, *_) -> None:
        self.closed.set()
        for emitter, callback in self.connections:
            emitter.disconnect(callback)
        self.connections.clear()
        try:
            self.save_edits()
        except Exception as exc:  # noqa: BLE001 - the widget is gone: say it in the log
            log.error("could not save the scar edits of %s: %s", self.edits.store, exc)


# ---------------------------------------------------------------- the dock
class LgeWidget(QWidget):
    """Dock widget: import the LGE of the study in the viewer, find its scar, and show the
    viability of each coronary territory."""

    finished = Signal()  # an import or Find scar ended: done, cancelled or failed
    _progressed = Signal(str, float, int)  # step, done, total (emitted from the worker)

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None  # the running thread worker, None when idle
        self.document: dict[str, Any] | None = None  # the viability on show
        self._store: Path | None = None  # the store of the perfusion layer
        self._shown_store: Path | None = None  # the store whose LGE is on show
        self._lge_shown = False  # the store on show has an LGE study
        self._run_store: Path | None = None
        self._run_method: str | None = None
        self._run_steps: list[str] = []  # the steps a run reported, in order
        self._locked_layer = None  # the scar layer not editable while a run goes on
        self._cancel = threading.Event()
        self._hooks = _Hooks()

        self.study_label = QLabel()
        self.study_label.setWordWrap(True)
        self.lge_label = QLabel()
        self.lge_label.setWordWrap(True)
        self.open_button = QPushButton("Open LGE…")
        self.open_button.setToolTip(
            "Import an LGE DICOM stack (a folder, a zip or one file) into this study store; "
            "each slice shows on the perfusion slice at its position")
        menu = QMenu(self.open_button)
        self.open_folder_action = menu.addAction("DICOM folder…")
        self.open_file_action = menu.addAction("DICOM zip or file…")
        self.open_button.setMenu(menu)
        self.method = _narrow(QComboBox())
        self._list_methods()
        self.n_sd = QDoubleSpinBox()
        self.n_sd.setRange(*N_SD_RANGE)
        self.n_sd.setSingleStep(0.5)
        self.n_sd.setDecimals(1)
        self.n_sd.setValue(DEFAULT_N_SD)
        self.n_sd.setToolTip("Scar: brighter than the remote myocardium's mean by this many SD")
        self.n_sd_label = QLabel("n-SD")
        self.find_button = QPushButton("Find scar")
        self.find_button.setToolTip(
            "Find the scar with the chosen method (the LGE myocardium and AHA sectors first "
            "if missing); slices with saved scar edits are kept; then the viability")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.fibrosis_group = QGroupBox("Fibrosis per LGE slice, base to apex")
        self.fibrosis_group.setToolTip(
            "Does the slice show fibrosis? Written at once: the labels the slice-level scar "
            "model learns from")
        self.fibrosis_grid = QGridLayout(self.fibrosis_group)
        self.fibrosis_boxes: list[QComboBox] = []
        self.save_button = QPushButton("Save scar edits")
        self.save_button.setToolTip(
            "Write the painted 'scar' layer (1 scar, 2 microvascular obstruction) into the "
            "study; the changed slices are kept by Find scar; then the viability")
        self.save_label = QLabel()
        self.save_label.setWordWrap(True)
        self.canvas = FigureCanvasQTAgg(Figure(figsize=(4.0, 5.2), layout="constrained"))
        self.canvas.setMinimumHeight(380)
        self.canvas.setVisible(False)  # until there is a viability to draw
        self.bullseye_axes = None

        method_row = QHBoxLayout()
        method_row.addWidget(QLabel("scar"))
        method_row.addWidget(self.method, stretch=1)
        method_row.addWidget(self.n_sd_label)
        method_row.addWidget(self.n_sd)
        buttons = QHBoxLayout()
        buttons.addWidget(self.find_button)
        buttons.addWidget(self.cancel_button)
        save_row = QHBoxLayout()
        save_row.addWidget(self.save_button)
        save_row.addWidget(self.save_label, stretch=1)
        layout = scrolling_layout(self)
        layout.addWidget(self.study_label)
        layout.addWidget(self.open_button)
        layout.addWidget(self.lge_label)
        layout.addLayout(method_row)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addWidget(self.summary)
        layout.addWidget(self.fibrosis_group)
        layout.addLayout(save_row)
        layout.addWidget(self.canvas)
        layout.addStretch()

        self.open_folder_action.triggered.connect(self._choose_folder)
        self.open_file_action.triggered.connect(self._choose_file)
        self.method.currentIndexChanged.connect(self._method_chosen)
        self.find_button.clicked.connect(self.find_scar)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button.clicked.connect(self.save_scar_edits)
        self._progressed.connect(self._show_progress)
        self._attach_timer = QTimer(self)  # after the reader added all of a store's layers
        self._attach_timer.setSingleShot(True)
        self._attach_timer.setInterval(0)
        self._attach_timer.timeout.connect(self._attach)
        self._connect(self.viewer.layers.events.inserted, self._schedule_attach)
        self._connect(self.viewer.layers.events.removed, self._on_layer_removed)
        self._connect(self.viewer.layers.selection.events.active, self._schedule_attach)
        # Not self: the slot runs when the widget is gone.
        self.destroyed.connect(partial(_Hooks.teardown, self._hooks))
        self._method_chosen()
        self._attach()

    # ---------------------------------------------------------------- actions
    def open_lge(self, source: Path) -> None:
        """Import the LGE DICOM at ``source`` into the study store on show (worker thread),
        asking first when it already has an LGE study."""
        self._attach()
        if self._store is None or self.worker is not None:
            return
        overwrite = has_lge(self._store)
        if overwrite and not self._confirm_replace(Path(source)):
            return
        if not self._save_pending("before the import"):
            return
        self._start(step_worker(
            run_import_lge, Path(source), self._store, overwrite, self._cancel,
            self._hooks.closed, self._progressed.emit, on_done=self._on_imported,
            on_error=self._on_error, on_finished=self._on_finished))

    def find_scar(self) -> None:
        """Save the scar edits, then run the LGE steps with the chosen method (worker thread)."""
        self._attach()
        if self._store is None or self.worker is not None or not has_lge(self._store):
            return
        if not self._save_pending("before Find scar"):
            return  # edits that cannot be saved are not run over
        self._run_method = self.method.currentData()
        self._start(step_worker(
            run_find_scar, self._store, self._run_method, self.n_sd.value(), self._cancel,
            self._hooks.closed, self._progressed.emit, on_done=self._on_found,
            on_error=self._on_error, on_finished=self._on_finished))

    def cancel(self) -> None:
        """Stop the run before it writes; nothing new is written."""
        if self.worker is not None:
            request_cancel(self._cancel, self.cancel_button, self.status)

    def save_scar_edits(self) -> list[int] | None:
        """Write the painted scar into the study and measure the viability again; the LGE
        slices newly changed (None when they could not be saved)."""
        if self.worker is not None or self._hooks.edits is None:
            return None
        try:
            changed, viability = self._hooks.save_edits()
        except InputError as exc:
            self.save_label.setText("<b>not saved</b>")
            self.status.setText(str(exc))
            return None
        self.save_label.setText("scar edits saved" if changed else "no scar edits to save")
        if changed:
            self.status.setText(scar_edits_text(changed, viability))
            self._show_results(LgeStudy.open(self._shown_store))
        return changed

    def set_fibrosis(self, k: int, has_scar: bool | None) -> None:
        """Choose whether LGE slice ``k`` shows fibrosis (None: unknown); written at once."""
        self.fibrosis_boxes[k].setCurrentIndex(_fibrosis_index(has_scar))

    # ---------------------------------------------------------------- store -> layers and panel
    def _schedule_attach(self, event=None) -> None:
        self._attach_timer.start()

    def _on_layer_removed(self, event) -> None:
        """The scar layer is going (or the viewer closes): save its edits first."""
        edits = self._hooks.edits
        if edits is not None and event.value is edits.layer:
            self._save_pending("as the scar layer was removed")
            self._hooks.edits = None
        self._schedule_attach()

    def _attach(self, event=None) -> None:
        """Find the store of the perfusion layer and show its LGE if it is a new one."""
        self._store, note = find_store(self.viewer, self._shown_store)
        self.study_label.setText(note)
        if self._store != self._shown_store:
            self._load(self._store)
        self._set_running(self.worker is not None)

    def _load(self, path: Path | None) -> None:
        """Show the LGE study of the store at ``path``: layers, panel; saves the edits of
        the study shown before."""
        self._save_pending("before showing another study")
        if self.worker is None and self._shown_store is not None and path != self._shown_store:
            clear_step_progress(self.progress_bar, self.status)  # the last study's run
        self._shown_store, self._hooks.edits, self.document = path, None, None
        self._lge_shown = False
        lge, note = None, "" if path is None else "no LGE study: press Open LGE… to import one"
        if path is not None and has_lge(path):
            try:
                study, lge = Study.open(path), LgeStudy.open(path)
            except InputError as exc:
                note = str(exc)
        if lge is None:
            self.lge_label.setText(note)
            self._show_fibrosis(None)
            self.summary.setText("")
            self.save_label.setText("")
            self._draw()
            return
        self._lge_shown = True
        placement = self._show_layers(path, study, lge)
        self._show_lge(lge, placement)
        self._show_fibrosis(lge)
        self._show_recorded_method(lge)
        self._show_results(lge)
        self.save_label.setText("")

    def _show_layers(self, path: Path, study: Study, lge: LgeStudy) -> LgePlacement:
        """Add the LGE layers of the store at ``path`` or update those there; the scar
        layer of the store on show is the one whose edits are saved."""
        from napari.layers import Image, Labels

        placement = lge_placement(study.attrs, study.shape, lge.attrs, lge.shape)
        n_times = study.shape[1]
        self._put_layer(Image, *lge_image_layer(path, lge, placement, n_times))
        if lge.has("labels"):
            labels = self._put_layer(Labels, *lge_labels_layer(path, lge, placement, n_times))
            labels.editable = False  # shown for reference; its edits would not be saved
        elif find_layer(self.viewer, LGE_LABELS_LAYER, path) is not None:  # a replaced study's
            self.viewer.layers.remove(find_layer(self.viewer, LGE_LABELS_LAYER, path))
        scar = self._put_layer(Labels, *scar_layer(path, lge, placement, n_times))
        scar.selected_label = 1
        if path == self._shown_store:
            scar.editable = self.worker is None
            self._hooks.edits = ScarEdits(path, scar, placement, lge.shape)
            if not any(emitter is scar.events.paint for emitter, _ in self._hooks.connections):
                self._connect(scar.events.paint, self._on_painted)
        return placement

    def _put_layer(self, kind: type, data: Any, kwargs: dict[str, Any], layer_type: str):
        """The layer of ``kwargs``'s store and name showing ``data``: updated in place, or
        added (without making it the active layer)."""
        layer = find_layer(self.viewer, kwargs["name"], kwargs["metadata"][STORE_KEY])
        if isinstance(layer, kind):
            layer.data = data
            for name in ("scale", "translate", "affine"):
                setattr(layer, name, kwargs[name])
            if "contrast_limits" in kwargs:
                layer.contrast_limits = kwargs["contrast_limits"]
            layer.metadata.update(kwargs["metadata"])
            return layer
        active = self.viewer.layers.selection.active
        layer = getattr(self.viewer, f"add_{layer_type}")(data, **kwargs)
        if active is not None:
            self.viewer.layers.selection.active = active
        return layer

    def _show_lge(self, lge: LgeStudy, placement: LgePlacement) -> None:
        attrs = lge.attrs
        ti = attrs["inversion_time_ms"]
        spacing = " x ".join(f"{v:.2f}" for v in attrs["pixel_spacing_mm"])
        self.lge_label.setText(
            f"LGE: {lge.shape[0]} slice(s) {attrs['lge_kind']}"
            + (f", TI {ti:.0f} ms" if ti is not None else "")
            + f", {spacing} mm pixels. {placement.note}")

    def _show_fibrosis(self, lge: LgeStudy | None) -> None:
        """One list per LGE slice: fibrosis yes / no / unknown."""
        while self.fibrosis_grid.count():
            self.fibrosis_grid.takeAt(0).widget().deleteLater()
        self.fibrosis_boxes = []
        self.fibrosis_group.setVisible(lge is not None)
        if lge is None:
            return
        attrs = lge.attrs
        for k, (level, has_scar) in enumerate(zip(attrs["slice_levels"],
                                                  attrs["slice_has_scar"])):
            box = _narrow(QComboBox())
            box.addItems([text for text, _ in FIBROSIS_CHOICES])
            box.setCurrentIndex(_fibrosis_index(has_scar))
            box.setToolTip(f"LGE slice {k + 1} ({level}): does it show fibrosis?")
            box.currentIndexChanged.connect(partial(self._fibrosis_chosen, k))
            row, column = divmod(k, FIBROSIS_COLUMNS)
            label = QLabel(str(k + 1))
            label.setToolTip(box.toolTip())
            self.fibrosis_grid.addWidget(label, row, 2 * column)
            self.fibrosis_grid.addWidget(box, row, 2 * column + 1)
            self.fibrosis_boxes.append(box)

    def _fibrosis_chosen(self, k: int, _index: int = 0) -> None:
        if self._shown_store is None or self.worker is not None:
            return
        choices = [FIBROSIS_CHOICES[box.currentIndex()][1] for box in self.fibrosis_boxes]
        try:
            LgeStudy.open(self._shown_store, writable=True).update_attrs(slice_has_scar=choices)
        except InputError as exc:
            self.status.setText(str(exc))
            return
        self.status.setText(f"LGE slice {k + 1}: fibrosis {self.fibrosis_boxes[k].currentText()}")

    def _show_recorded_method(self, lge: LgeStudy) -> None:
        """Choose the method (and n-SD) that found the scar on show."""
        parameters = lge.attrs["steps"].get("lge-scar", {}).get("parameters", {})
        index = self.method.findData(parameters.get("method"))
        if index >= 0 and self.method.model().item(index).isEnabled():
            self.method.setCurrentIndex(index)
        if parameters.get("n_sd") is not None:
            self.n_sd.setValue(float(parameters["n_sd"]))

    def _show_results(self, lge: LgeStudy) -> None:
        """The viability line, the scar method and the QA; the bullseye."""
        self.document = lge.attrs.get("viability")
        document = self.document
        if document is None:
            self.summary.setText("no scar yet: press Find scar" if not lge.has("scar")
                                 else "no viability yet: press Find scar")
        else:
            method = document.get("scar_method_description") or "-"
            lines = [f"<b>{html.escape(viability_line(document))}</b>",
                     html.escape(f"scar: {method} · perfusion: {document['perfusion_measure']}")]
            edited = np.flatnonzero(lge.read("scar_edited")) if lge.has("scar_edited") else []
            if len(edited):
                lines.append(html.escape("scar edited by hand on LGE slice(s) "
                                         + ", ".join(str(k + 1) for k in edited)))
            flags = document.get("qa") or []
            lines.append("QA: none" if not flags else "QA:<br>" + "<br>".join(
                f"&#9888; {html.escape(flag)}" for flag in flags))
            self.summary.setText("<br>".join(lines))
        self._draw()

    def _draw(self) -> None:
        """The combined bullseye of the viability on show (hidden without one)."""
        from ..lge.bullseye import draw_combined_bullseye

        figure = self.canvas.figure
        figure.clear()
        self.bullseye_axes = None
        document = self.document
        if document is not None:
            rows = {row["segment"]: row for row in document["segments"]}
            perfusion = [rows.get(s, {}).get("perfusion") for s in range(1, 17)]
            classes = {s: row["scar_class"] for s, row in rows.items()}
            self.bullseye_axes = figure.subplots()
            draw_combined_bullseye(self.bullseye_axes, perfusion, classes,
                                   document["territories"], absolute=document["absolute_mbf"])
        self.canvas.setVisible(document is not None)  # no empty white figure
        self.canvas.draw_idle()

    # ---------------------------------------------------------------- slots (GUI thread)
    def _connect(self, emitter, callback) -> None:
        emitter.connect(callback)
        self._hooks.connections.append((emitter, callback))

    def _list_methods(self) -> None:
        """The scar methods; a model whose weights are not installed is listed, greyed."""
        from ..lge.models import weights_path

        for key, description in SCAR_METHODS.items():
            self.method.addItem(description, key)
            if key not in THRESHOLD_METHODS and not weights_path(key).is_file():
                index = self.method.count() - 1
                self.method.model().item(index).setEnabled(False)
                self.method.setItemData(index, f"{weights_path(key).name} is not installed",
                                        Qt.ItemDataRole.ToolTipRole)
        default = self.method.findData(DEFAULT_SCAR_METHOD)
        if not self.method.model().item(default).isEnabled():
            default = self.method.findData("nsd")
        self.method.setCurrentIndex(default)

    def _method_chosen(self, _index: int = 0) -> None:
        nsd = self.method.currentData() == "nsd"
        self.n_sd.setVisible(nsd)
        self.n_sd_label.setVisible(nsd)

    def _choose_folder(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "LGE DICOM folder")
        if chosen:
            self.open_lge(Path(chosen))

    def _choose_file(self) -> None:
        chosen, _ = QFileDialog.getOpenFileName(self, "LGE DICOM zip or file", "",
                                                "DICOM zip or file (*.zip *.dcm *)")
        if chosen:
            self.open_lge(Path(chosen))

    def _confirm_replace(self, source: Path) -> bool:
        answer = QMessageBox.question(
            self, "Replace the LGE study?",
            f"{self._store.name} already has an LGE study. Replace it with {source.name}? "
            "Its scar, scar edits and viability go with it.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def _save_pending(self, when: str) -> bool:
        """Save pending scar edits (``when`` says why now); False if they could not be."""
        edits = self._hooks.edits
        if edits is None or not edits.pending():
            return True
        try:
            changed, viability = self._hooks.save_edits()
        except InputError as exc:
            self.save_label.setText("<b>not saved</b>")
            self.status.setText(str(exc))
            return False
        if changed:
            self.save_label.setText(f"scar edits saved {when}")
            self.status.setText(scar_edits_text(changed, viability))
        return True

    def _on_painted(self, event=None) -> None:
        self.save_label.setText("unsaved scar edits")

    def _start(self, worker) -> None:
        self._cancel.clear()
        self._run_steps = []
        self._run_store = self._store  # the layer may go while the run goes on
        self.worker = worker
        self._locked_layer = self._hooks.edits.layer if self._hooks.edits else None
        self._set_running(True)
        clear_step_progress(self.progress_bar, self.status)  # not the last run's
        self.status.setText("starting…")
        self.worker.start()

    def _set_running(self, running: bool) -> None:
        edits = self._hooks.edits
        self.cancel_button.setEnabled(running and not self._cancel.is_set())
        self.open_button.setEnabled(not running and self._store is not None)
        self.find_button.setEnabled(not running and self._lge_shown)
        self.save_button.setEnabled(not running and edits is not None)
        self.method.setEnabled(not running)
        self.n_sd.setEnabled(not running)
        for box in self.fibrosis_boxes:
            box.setEnabled(not running)
        for layer in (self._locked_layer, edits.layer if edits is not None else None):
            if layer is not None:
                layer.editable = not running

    def _show_progress(self, step: str, done: float, total: int) -> None:
        if step not in self._run_steps:
            self._run_steps.append(step)
        models = self._run_method not in THRESHOLD_METHODS
        unit = ("slices" if step in ("import", "lge-segment")
                or (step == "lge-scar" and models) else "steps")
        show_step_progress(self.progress_bar, self.status, step, done, total, unit,
                           self._cancel.is_set())
        if step == "viability":
            self.cancel_button.setEnabled(False)  # the scar is written: the viability follows

    def _reload(self) -> None:
        """Show the run's store again (its layers even when another study is on show)."""
        if self._run_store == self._shown_store:
            self._load(self._run_store)
            self._set_running(self.worker is not None)
        elif has_lge(self._run_store):
            try:
                self._show_layers(self._run_store, Study.open(self._run_store),
                                  LgeStudy.open(self._run_store))
            except InputError as exc:
                self.status.setText(str(exc))

    def _on_imported(self, result: tuple[Path, list[str]]) -> None:
        from napari.utils.notifications import show_info

        store, warnings = result
        self._reload()
        summary = f"LGE imported: {LgeStudy.open(store).shape[0]} slice(s)"
        self.status.setText("; ".join([summary, *warnings]))
        show_info(f"{store.name}: {summary}")

    def _on_found(self, summaries: dict[str, str]) -> None:
        from napari.utils.notifications import show_info

        self._reload()
        summary = summaries.get("viability", "done")
        self.status.setText(summary)
        show_info(f"{self._run_store.name}: {summary}")

    def _on_error(self, exc: Exception) -> None:
        done = self._run_steps[:-1]  # the steps before the one stopped or failed wrote
        if done or not isinstance(exc, Cancelled):
            self._reload()
        show_step_error(self.status, exc)
        if isinstance(exc, Cancelled) and done:
            self.status.setText(f"cancelled: {self._run_steps[-1]} wrote nothing; "
                                f"{', '.join(done)} done before it kept")

    def _on_finished(self) -> None:
        self.worker = None
        self._set_running(False)
        self._locked_layer = None
        self.finished.emit()

    def hideEvent(self, event) -> None:  # noqa: N802 - Qt override
        if self.worker is None:
            self._save_pending("as the dock was hidden")
        super().hideEvent(event)
