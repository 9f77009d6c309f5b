"""The "Perfusion" dock widget in a real viewer: compute, layers, bullseye, cancel, manual AIF."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from napari.layers import Image, Labels, Points, Vectors
from qtpy.QtCore import QPoint, Qt

from napari_perfroi._napari import layers as L
from napari_perfroi._napari.perfusion_widget import PerfusionWidget
from napari_perfroi._napari.step_worker import BAR_STEPS_PER_UNIT
from napari_perfroi.pipeline import run_step
from napari_perfroi.report import TERRITORY_NAMES, bullseye_wedge, flow_report
from napari_perfroi.study import LV_BLOOD, MYOCARDIUM, Study

from worker_runs import run_responsively

pytestmark = pytest.mark.napari

PLUGIN = "napari-perfroi"
RUN_TIMEOUT_MS = 120_000  # flow + aha of the short phantom on a busy 2-core CPU
HIGHLIGHT = (0.0, 229 / 255, 1.0)  # the bullseye's outline of the chosen segment


@pytest.fixture(scope="module")
def computed_template(analysed_template, tmp_path_factory) -> Path:
    """The analysed phantom after the flow and aha steps, run without napari (do not modify)."""
    path = tmp_path_factory.mktemp("computed") / "p.zarr"
    shutil.copytree(analysed_template, path)
    study = Study.open(path, writable=True)
    for step in ("flow", "aha"):
        run_step(study, step)
    return path


@pytest.fixture
def computed_store(computed_template, tmp_path) -> Path:
    """A fresh copy of a store that already has its MBF map and flow report."""
    path = tmp_path / "p.zarr"
    shutil.copytree(computed_template, path)
    return path


def _open(make_napari_viewer, path: Path):
    viewer = make_napari_viewer()
    viewer.open(path, plugin=PLUGIN)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Perfusion")
    assert isinstance(widget, PerfusionWidget)
    return viewer, widget


def _compute(qtbot, widget: PerfusionWidget) -> None:
    with qtbot.waitSignal(widget.finished, timeout=RUN_TIMEOUT_MS):
        widget.compute()


def _reference_labels(study: Study) -> np.ndarray:
    labels = study.zarr_array("labels")
    return np.stack([labels[s, t] for s, t in enumerate(study.attrs["reference_frame"])])


def _click_bullseye(qtbot, widget: PerfusionWidget, segment: int) -> None:
    """Click the middle of ``segment`` in the bullseye with the mouse."""
    inner, outer, start, end = bullseye_wedge(segment)
    radius, angle = (inner + outer) / 2 if inner else outer / 2, math.radians((start + end) / 2)
    canvas = widget.canvas
    canvas.draw()
    x, y = widget.bullseye_axes.transData.transform((radius * math.cos(angle),
                                                     radius * math.sin(angle)))
    ratio = canvas.device_pixel_ratio
    position = QPoint(round(x / ratio), round(canvas.figure.bbox.height / ratio - y / ratio))
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=position)


def test_compute_writes_the_maps_and_shows_them(make_napari_viewer, qtbot, analysed_store):
    viewer, widget = _open(make_napari_viewer, analysed_store)
    assert widget.compute_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert "no flow report yet: press Compute" in widget.summary.text()
    assert L.MBF_LAYER not in [layer.name for layer in viewer.layers]

    shown = run_responsively(qtbot, widget, widget.compute, widget.compute_button, RUN_TIMEOUT_MS)

    study = Study.open(analysed_store)
    n_slices, n_times = study.shape[:2]
    assert n_slices * BAR_STEPS_PER_UNIT in shown  # per-slice progress of the flow step
    mbf, aha = study.read("mbf"), study.read("aha")
    myocardium = _reference_labels(study) == MYOCARDIUM
    assert np.array_equal(aha > 0, myocardium)
    fitted = np.isfinite(mbf)
    assert not np.any(fitted & ~myocardium)  # NaN outside the myocardium
    assert fitted.sum() >= 0.98 * myocardium.sum()  # NaN inside only where a fit failed
    assert 0.5 <= np.nanmedian(mbf) <= 6.0
    # most pixels fit inside the fit's bounds (0.05-10; 17 % at the upper one on this
    # 24-frame phantom, where blood spills into the thin wall)
    at_bounds = (mbf[fitted] <= 0.051) | (mbf[fitted] >= 9.99)
    assert at_bounds.mean() < 0.3

    image = viewer.layers[L.IMAGE_LAYER]
    mbf_layer = viewer.layers[L.MBF_LAYER]
    assert isinstance(mbf_layer, Image)
    assert mbf_layer.data.shape == image.data.shape
    # the map on every frame, moved with its motion (as is on the reference frames)
    motion = study.read("motion")
    for s, t in enumerate(study.attrs["reference_frame"]):
        np.testing.assert_array_equal(np.asarray(mbf_layer.data[s, t]), mbf[s])
    s, t = np.unravel_index(np.argmax(np.abs(motion).sum(axis=-1)), motion.shape[:2])
    moved = np.asarray(mbf_layer.data[s, t])
    np.testing.assert_allclose(moved, L.moved_map(mbf[s], motion[s, t], labels=False))
    assert np.isfinite(moved).sum() == pytest.approx(np.isfinite(mbf[s]).sum(), rel=0.1)
    np.testing.assert_allclose(mbf_layer.scale, image.scale)
    assert tuple(mbf_layer.contrast_limits) == L.MBF_RANGE_ML_MIN_G
    assert mbf_layer.colorbar.visible

    aha_layer = viewer.layers[L.AHA_LAYER]
    assert isinstance(aha_layer, Labels)
    assert aha_layer.data.shape == image.data.shape
    for s, t in enumerate(study.attrs["reference_frame"]):
        np.testing.assert_array_equal(np.asarray(aha_layer.data[s, t]), aha[s])
    assert set(np.unique(np.asarray(aha_layer.data[:, 0]))) == set(range(17))
    numbers = viewer.layers[L.AHA_NUMBERS_LAYER]
    assert isinstance(numbers, Points)
    assert set(numbers.features["segment"]) == set(range(1, 17))
    for (s, t, row, col), segment in zip(numbers.data, numbers.features["segment"]):
        if t == study.attrs["reference_frame"][int(s)]:  # each number sits on its segment
            assert aha[int(s), int(row), int(col)] == segment
    assert list(numbers.text.values) == [str(n) for n in numbers.features["segment"]]
    boundaries = viewer.layers[L.AHA_BOUNDARIES_LAYER]
    assert isinstance(boundaries, Vectors)
    assert len(boundaries.data) >= 12 * n_times  # every boundary on every frame

    aif = viewer.layers[L.AIF_ROI_LAYER]
    assert isinstance(aif, Labels)
    assert aif.data.shape == (n_slices, 1, *study.shape[2:])
    np.testing.assert_array_equal(aif.data[:, 0], study.read("aif_mask"))
    for t in (0, n_times - 1):  # the one frame of the AIF ROI stands for every frame
        world = image.data_to_world([0, t, 0, 0])
        assert round(float(aif.world_to_data(world)[1])) == 0

    s = widget.current_frame()[0]
    assert widget.current_frame() == (s, study.attrs["reference_frame"][s])
    report = flow_report(study)
    assert widget.report == report
    assert f"global MBF {report['global_mbf']:.2f}" in widget.summary.text()
    lowest = TERRITORY_NAMES[report["lowest_territory"]]
    assert f"lowest territory <b>{lowest}</b>" in widget.summary.text()
    assert "hematocrit" in widget.summary.text() and "QA" in widget.summary.text()
    assert widget.aif_label.text().startswith("AIF: ")
    assert "global MBF" in widget.status.text()
    assert widget.bullseye_axes is not None and widget.curves_axes is not None
    assert widget.compute_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_model_list_runs_the_two_compartment_fit(make_napari_viewer, qtbot, computed_store):
    viewer, widget = _open(make_napari_viewer, computed_store)
    assert widget.flow_model.currentData() == "fermi"  # the model of the results on show
    widget.flow_model.setCurrentIndex(widget.flow_model.findData("2cxm"))
    _compute(qtbot, widget)
    study = Study.open(computed_store)
    assert study.attrs["report"]["flow_model"] == "2cxm"
    for array, (name, _) in L.PARAMETER_MAP_LAYERS.items():
        layer = viewer.layers[name]
        assert isinstance(layer, Image) and not layer.visible  # there when asked for
        for s, t in enumerate(study.attrs["reference_frame"]):
            np.testing.assert_array_equal(np.asarray(layer.data[s, t]), study.read(array)[s])
    assert "2CXM" in widget.summary.text()
    names = [layer.name for layer in viewer.layers]
    assert names.index("PS") < names.index(L.MBF_LAYER) < names.index(L.AIF_ROI_LAYER)

    widget.flow_model.setCurrentIndex(widget.flow_model.findData("fermi"))
    _compute(qtbot, widget)
    assert not any(name in viewer.layers for name, _ in L.PARAMETER_MAP_LAYERS.values())
    assert "Fermi" in widget.summary.text()


def test_reopened_store_shows_its_report_without_computing(make_napari_viewer, computed_store):
    flow_time = Study.open(computed_store).attrs["steps"]["flow"]["time"]
    viewer, widget = _open(make_napari_viewer, computed_store)

    study = Study.open(computed_store)
    assert widget.worker is None
    assert widget.report == flow_report(study)
    assert study.attrs["steps"]["flow"]["time"] == flow_time
    assert "global MBF" in widget.summary.text()
    hematocrit = study.attrs["report"]["hematocrit"]
    assert widget.hematocrit.value() == pytest.approx(hematocrit, abs=0.005)
    names = [layer.name for layer in viewer.layers]
    for name in (L.MBF_LAYER, L.AHA_LAYER, L.AHA_BOUNDARIES_LAYER, L.AHA_NUMBERS_LAYER,
                 L.AIF_ROI_LAYER):
        assert names.count(name) == 1  # the reader's layers were taken over, not duplicated
    assert viewer.layers[L.MBF_LAYER].colorbar.visible

    # The overlays follow the motion of the frame on screen.
    motion = study.read("motion")
    s = 1
    t = int(np.argmax(np.abs(motion[s]).sum(axis=1)))
    widget.go_to(s, t)
    aif = viewer.layers[L.AIF_ROI_LAYER]
    np.testing.assert_allclose(aif.translate[-2:], motion[s, t] * aif.scale[-2:])
    mbf = viewer.layers[L.MBF_LAYER]
    np.testing.assert_allclose(np.asarray(mbf.data[s, t]),
                               L.moved_map(study.read("mbf")[s], motion[s, t], labels=False))
    assert not np.any(mbf.translate)  # its data are moved, not the layer


def test_bullseye_click_highlights_the_segment(make_napari_viewer, qtbot, computed_store):
    viewer, widget = _open(make_napari_viewer, computed_store)
    report = widget.report
    segment = 3
    curve = report["segment_curves"][segment - 1]

    with qtbot.waitSignal(widget.segment_selected):
        _click_bullseye(qtbot, widget, segment)

    assert widget.selected_segment == segment
    aha_layer = viewer.layers[L.AHA_LAYER]
    assert aha_layer.selected_label == segment and aha_layer.show_selected_label
    s = curve["slice"]
    assert widget.current_frame() == (s, Study.open(computed_store).attrs["reference_frame"][s])
    assert widget.segment_label.text().startswith(f"segment {segment} basal inferoseptal")
    outlines = [patch for patch in widget.bullseye_axes.patches
                if not patch.get_fill() and patch.get_edgecolor()[:3] == pytest.approx(HIGHLIGHT)]
    assert len(outlines) == 1
    plotted = [list(line.get_ydata()) for line in widget.curves_axes.get_lines()]
    assert plotted == [curve["tissue"], curve["fitted"]]  # that segment only, with its fit
    assert f"segment {segment}" in widget.curves_axes.get_title()

    with qtbot.waitSignal(widget.segment_selected):
        _click_bullseye(qtbot, widget, segment)  # a second click clears the highlight
    assert widget.selected_segment is None
    assert aha_layer.selected_label == 0
    assert widget.segment_label.text() == ""


def test_cancel_writes_nothing(make_napari_viewer, qtbot, analysed_store):
    viewer, widget = _open(make_napari_viewer, analysed_store)
    with qtbot.waitSignal(widget.finished, timeout=RUN_TIMEOUT_MS):
        widget.compute()
        widget.cancel()
        assert not widget.cancel_button.isEnabled()

    study = Study.open(analysed_store)
    for array in ("mbf", "mbf_fit_error", "aha", "aif_mask"):
        assert not study.has(array)
    assert not {"flow", "aha"} & set(study.attrs["steps"])
    assert "report" not in study.attrs
    assert widget.status.text() == "cancelled: nothing was written"
    assert L.MBF_LAYER not in [layer.name for layer in viewer.layers]
    assert widget.compute_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_manual_aif_roi_painted_on_a_moved_frame_is_used(
    make_napari_viewer, qtbot, analysed_store
):
    viewer, widget = _open(make_napari_viewer, analysed_store)
    study = Study.open(analysed_store)
    motion = study.read("motion")
    s = 1
    t = int(np.argmax(np.abs(motion[s]).sum(axis=1)))  # the frame that moved most
    assert t != study.attrs["reference_frame"][s] and np.abs(motion[s, t]).max() >= 1.0
    widget.go_to(s, t)
    centre = np.argwhere(study.zarr_array("labels")[s, t] == LV_BLOOD).mean(axis=0)

    # Paint where the mouse would, on the LV blood pool as it lies in this frame.
    aif = viewer.layers[L.AIF_ROI_LAYER]
    assert not aif.data.any()
    aif.brush_size = 5
    world = viewer.layers[L.IMAGE_LAYER].data_to_world([s, t, *centre])
    aif.paint(aif.world_to_data(world), 1)

    qtbot.waitUntil(lambda: Study.open(analysed_store).attrs.get("aif_roi") == "manual")
    study = Study.open(analysed_store)
    mask = study.read("aif_mask")
    assert mask[s].sum() > 0 and mask.sum() == mask[s].sum()
    # Stored in the reference-frame geometry: moved back by the frame's motion.
    np.testing.assert_allclose(np.argwhere(mask[s]).mean(axis=0), centre - motion[s, t], atol=1.0)
    assert widget.aif_label.text().startswith(f"AIF: manual ROI (slice {s + 1}")
    assert widget.aif_label.text().endswith("press Compute to use it")

    _compute(qtbot, widget)

    study = Study.open(analysed_store)
    assert study.attrs["report"]["aif_source"] == "manual"
    assert study.attrs["report"]["aif_slice"] == s
    np.testing.assert_array_equal(study.read("aif_mask"), mask)
    assert widget.aif_label.text() == f"AIF: manual ROI (slice {s + 1})"
    np.testing.assert_array_equal(viewer.layers[L.AIF_ROI_LAYER].data[:, 0], mask)

    assert widget.automatic_aif_button.isEnabled()
    widget.automatic_aif_button.click()
    assert Study.open(analysed_store).attrs["aif_roi"] == "auto"
    assert widget.aif_label.text().endswith("press Compute for the automatic AIF")
    assert not widget.automatic_aif_button.isEnabled()


def test_compute_segments_a_study_without_labels_first(make_napari_viewer, qtbot,
                                                      phantom_store):
    """As ``perfroi analyze`` does, Compute runs the missing motion and segment steps."""
    viewer, widget = _open(make_napari_viewer, phantom_store)
    assert "press Compute (it segments the study first)" in widget.summary.text()
    assert widget.compute_button.isEnabled()
    steps = []
    widget._progressed.connect(lambda step, done, total: steps.append(step))
    _compute(qtbot, widget)
    assert {"motion", "segment", "flow", "aha"} <= set(steps)
    study = Study.open(phantom_store)
    assert study.has("labels") and study.has("mbf") and widget.report is not None
    assert L.MBF_LAYER in [layer.name for layer in viewer.layers]


def test_input_error_is_one_status_line(make_napari_viewer, qtbot, computed_store):
    """A dual-bolus dose ratio for a study with one bolus: one status line, nothing new."""
    viewer, widget = _open(make_napari_viewer, computed_store)
    flow_time = Study.open(computed_store).attrs["steps"]["flow"]["time"]
    widget.dose_ratio.setValue(10.0)

    _compute(qtbot, widget)

    assert "does not show two boluses" in widget.status.text()
    assert len(widget.status.text().splitlines()) == 1
    assert Study.open(computed_store).attrs["steps"]["flow"]["time"] == flow_time
    assert widget.compute_button.isEnabled()


def test_saturated_aif_shows_relative_upslope_instead_of_flow(make_napari_viewer, qtbot, tmp_path):
    """A single-bolus study whose AIF is saturated beyond correction: Compute reports no
    absolute MBF, and the bullseye and the segment line show the relative upslope."""
    from napari_perfroi.phantom import write_phantom

    study = write_phantom(tmp_path / "saturated.zarr", 21, "lad", acquisition="single-bolus",
                          readout="scanner", readout_pulses=15, r2star_per_mm_s=60.0,
                          echo_time_s=0.002, n_dynamics=40)
    study.write("labels", study.read("truth/labels"))
    study.write("motion", study.read("truth/motion"))
    viewer, widget = _open(make_napari_viewer, study.path)
    assert widget.dose_ratio.value() == 0.0 and widget.dose_ratio.text() == "single"
    _compute(qtbot, widget)
    report = widget.report
    assert not report["absolute_mbf"] and report["segment_mbf"] == [None] * 16
    assert "absolute MBF is not available" in widget.summary.text()
    for array, (name, _) in L.INDEX_MAP_LAYERS.items():
        layer = viewer.layers[name]
        assert isinstance(layer, Image) and not layer.visible
        saved = Study.open(study.path)
        for s, t in enumerate(saved.attrs["reference_frame"]):
            np.testing.assert_array_equal(np.asarray(layer.data[s, t]), saved.read(array)[s])
    _click_bullseye(qtbot, widget, 3)
    assert widget.selected_segment == 3
    assert "relative upslope" in widget.segment_label.text()


def test_rest_study_pairs_both_bullseyes_and_the_reserve(make_napari_viewer, qtbot, computed_store,
                                                        tmp_path):
    """The same heart at rest, analysed: pairing shows its bullseye beside the stress one and
    the reserve per territory; a Compute keeps the pair; the stress store itself is refused."""
    from napari_perfroi.phantom import write_phantom
    from napari_perfroi.reserve import MPR

    rest = write_phantom(tmp_path / "rest.zarr", 11, state="rest", n_dynamics=30)
    rest.write("labels", rest.read("truth/labels"))
    rest.write("motion", rest.read("truth/motion"))
    for step in ("flow", "aha"):
        run_step(rest, step)
    viewer, widget = _open(make_napari_viewer, computed_store)
    assert widget.rest_button.isEnabled() and widget.rest_axes is None

    widget.pair_rest(computed_store)
    assert widget.rest_pair is None and "the rest study is the stress study" in widget.status.text()

    widget.pair_rest(rest.path)
    pair = widget.rest_pair
    assert pair is not None and pair.reserve.index == MPR
    assert widget.rest_axes is not None and widget.rest_axes.get_title().startswith("rest")
    assert "MPR (MBF ratio): global" in widget.summary.text()
    assert pair.reserve.overall.reserve > 1.0  # stress flow above rest flow

    _compute(qtbot, widget)
    assert widget.rest_pair is not None and widget.rest_axes is not None


def test_store_opened_after_the_dock_shows_each_result_layer_once(make_napari_viewer, qtbot,
                                                                  computed_store):
    """The dock is open before the store: it takes over the reader's result layers instead
    of adding its own beside them (no "MBF [1]")."""
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Perfusion")
    viewer.open(computed_store, plugin=PLUGIN)
    qtbot.waitUntil(lambda: widget.report is not None, timeout=5000)
    names = [layer.name for layer in viewer.layers]
    assert not [name for name in names if name.endswith("]")], names
    for name in (L.MBF_LAYER, L.AHA_LAYER, L.AIF_ROI_LAYER):
        assert names.count(name) == 1
    assert viewer.layers[L.MBF_LAYER].visible


def test_closing_the_dock_stops_the_aha_step_without_reporting_to_it(analysed_store):
    """The dock is closed once the flow map is written: the aha step stops before it writes
    and nothing is reported to the gone widget any more (emitting on a deleted widget
    crashed the viewer on exit)."""
    import threading

    from napari_perfroi._napari.perfusion_widget import run_perfusion
    from napari_perfroi.progress import Cancelled

    cancel, closed = threading.Event(), threading.Event()
    reported = []

    def on_progress(step, done, total):
        reported.append(step)
        if step == "flow" and done == total:
            closed.set()  # what the dock's teardown does

    with pytest.raises(Cancelled):
        run_perfusion(analysed_store, 0.45, cancel, closed, on_progress)
    assert "aha" not in reported
    study = Study.open(analysed_store)
    assert study.has("mbf") and not study.has("aha")


def test_all_docks_fit_a_1280_by_800_screen(make_napari_viewer, qtbot, computed_store):
    """Segment, ROI review and Perfusion open together: their contents scroll, so the
    window does not grow past a 1280 x 800 screen."""
    viewer = make_napari_viewer(show=True)
    viewer.open(computed_store, plugin=PLUGIN)
    for name in ("Segment", "ROI review", "Perfusion"):
        viewer.window.add_plugin_dock_widget(PLUGIN, name)
    window = viewer.window._qt_window
    window.resize(1280, 800)
    qtbot.wait(100)
    minimum = window.minimumSizeHint().expandedTo(window.minimumSize())
    assert minimum.height() <= 800 and minimum.width() <= 1280, minimum
    assert window.height() <= 800


def test_the_map_is_not_hidden_under_the_labels(make_napari_viewer, computed_store):
    """Opened with its results, the store shows the MBF map above the labels, whether the
    reader alone or the Perfusion dock laid the layers out."""
    viewer = make_napari_viewer()
    viewer.open(computed_store, plugin=PLUGIN)
    names = [layer.name for layer in viewer.layers]
    assert names.index(L.LABELS_LAYER) < names.index(L.MBF_LAYER)
    viewer.layers.move(names.index(L.LABELS_LAYER), len(names))  # the user moved it on top
    viewer.window.add_plugin_dock_widget(PLUGIN, "Perfusion")
    names = [layer.name for layer in viewer.layers]
    assert names.index(L.LABELS_LAYER) < names.index(L.MBF_LAYER) < names.index(L.AIF_ROI_LAYER)
    assert viewer.layers[L.MBF_LAYER].visible


def test_another_study_clears_the_last_runs_status(make_napari_viewer, qtbot, computed_store,
                                                    tmp_path):
    """The status line and progress bar of a run do not stay when another study is shown."""
    viewer, widget = _open(make_napari_viewer, computed_store)
    _compute(qtbot, widget)
    assert widget.status.text() and widget.progress_bar.value() > 0
    other = tmp_path / "other.zarr"
    shutil.copytree(computed_store, other)
    viewer.layers.clear()
    viewer.open(other, plugin=PLUGIN)
    qtbot.waitUntil(lambda: widget.report is not None, timeout=5000)
    assert widget.status.text() == "" and widget.progress_bar.value() <= 0


def test_a_dicom_folder_shows_no_empty_figure(make_napari_viewer):
    from napari_perfroi.demo import REPOSITORY_SAMPLE

    viewer = make_napari_viewer()
    viewer.open(REPOSITORY_SAMPLE, plugin=PLUGIN)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Perfusion")
    assert "DICOM folder" in widget.study_label.text()
    assert not widget.compute_button.isEnabled()
    assert not widget.canvas.isVisibleTo(widget)  # no empty white figure
    assert widget.hematocrit.value() == pytest.approx(0.45)


def test_slice_levels_are_chosen_in_the_dock(make_napari_viewer, qtbot, computed_store):
    """Each slice has a level list; a change is stored and the next Compute uses it; levels
    out of base-to-apex order are refused in the status line."""
    viewer, widget = _open(make_napari_viewer, computed_store)
    assert [box.currentText() for box in widget.level_boxes] == ["basal", "mid", "apical"]
    widget.set_slice_levels(["apical", "mid", "mid"])
    assert "must run from base to apex" in widget.status.text()
    assert Study.open(computed_store).attrs["slice_levels"] == ["basal", "mid", "apical"]
    widget.set_slice_levels(["mid", "mid", "apical"])
    assert Study.open(computed_store).attrs["slice_levels"] == ["mid", "mid", "apical"]
    assert "press Compute" in widget.status.text()
    _compute(qtbot, widget)
    report = Study.open(computed_store).attrs["report"]
    assert all(value is None for value in report["segment_mbf"][:6])  # no basal ring now
