"""The "Segment" dock widget in a real viewer: run, progress, cancel, errors, no store."""

from __future__ import annotations


import numpy as np
import pytest
from napari.layers import Labels

from napari_perfroi._napari import layers as L
from napari_perfroi._napari.segment_widget import SegmentWidget
from napari_perfroi._napari.step_worker import BAR_STEPS_PER_UNIT
from napari_perfroi.pipeline import run_step
from napari_perfroi.segment.metrics import dice_per_class
from napari_perfroi.study import Study

from worker_runs import run_responsively

pytestmark = pytest.mark.napari

PLUGIN = "napari-perfroi"
RUN_TIMEOUT_MS = 300_000  # motion + segment of a phantom on a busy 2-core CPU


@pytest.fixture
def phantom_path(phantom_store):
    """A fresh copy of a short phantom store (no motion, no labels)."""
    return phantom_store


def _layer_names(viewer):
    return [layer.name for layer in viewer.layers]


def test_segment_writes_labels_and_shows_them(make_napari_viewer, qtbot, phantom_path):
    viewer = make_napari_viewer()
    viewer.open(phantom_path, plugin=PLUGIN)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    assert isinstance(widget, SegmentWidget)
    assert widget.study_label.text() == "study: p.zarr"
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()

    active = viewer.layers.selection.active
    shown = run_responsively(qtbot, widget, widget.run, widget.run_button, RUN_TIMEOUT_MS)
    n_slices = Study.open(phantom_path).shape[0]
    assert n_slices * BAR_STEPS_PER_UNIT in shown  # per-slice progress reached the bar
    # and a slice under way moves it too
    assert any(value % BAR_STEPS_PER_UNIT for value in shown)
    study = Study.open(phantom_path)
    assert study.has("labels")
    labels = study.read("labels")
    assert labels.shape == study.shape
    assert {"motion", "segment"} <= set(study.attrs["steps"])
    layer = viewer.layers[L.LABELS_LAYER]
    assert isinstance(layer, Labels)
    np.testing.assert_array_equal(np.asarray(layer.data), labels)
    np.testing.assert_array_equal(np.asarray(viewer.layers[L.UNCERTAINTY_LAYER].data[:, 0]),
                                  study.read("label_uncertainty"))
    assert layer.metadata[L.STORE_KEY] == str(phantom_path)
    # The layer the user had stays active: the new labels do not take over its keys.
    assert viewer.layers.selection.active is active is not layer
    assert widget.status.text() == "LV found on all 3 slice(s)"
    lv, myocardium, rv = dice_per_class(labels, study.read("truth/labels"))
    assert lv >= 0.85 and myocardium >= 0.7 and rv >= 0.7, (lv, myocardium, rv)
    assert widget.device_label.text() in {"device: cpu", "device: cuda", "device: mps"}
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_cancel_writes_nothing(make_napari_viewer, qtbot, phantom_path):
    viewer = make_napari_viewer()
    viewer.open(phantom_path, plugin=PLUGIN)
    widget = SegmentWidget(viewer)

    with qtbot.waitSignal(widget.finished, timeout=RUN_TIMEOUT_MS):
        widget.run()
        widget.cancel()
        assert not widget.cancel_button.isEnabled()

    study = Study.open(phantom_path)
    assert not study.has("labels")
    assert "segment" not in study.attrs["steps"]
    assert "cancelled" in widget.status.text()
    assert L.LABELS_LAYER not in _layer_names(viewer)
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_existing_labels_layer_is_updated_in_place(make_napari_viewer, qtbot, phantom_path):
    study = Study.open(phantom_path, writable=True)
    run_step(study, "motion")
    motion_time = study.attrs["steps"]["motion"]["time"]
    study.write("labels", np.zeros(study.shape, dtype=np.uint8))
    viewer = make_napari_viewer()
    viewer.open(phantom_path, plugin=PLUGIN)
    before = viewer.layers[L.LABELS_LAYER]
    widget = SegmentWidget(viewer)
    with qtbot.waitSignal(widget.finished, timeout=RUN_TIMEOUT_MS):
        widget.run()

    study = Study.open(phantom_path)
    assert study.attrs["steps"]["motion"]["time"] == motion_time  # motion was not re-run
    assert "segment" in study.attrs["steps"]
    assert _layer_names(viewer).count(L.LABELS_LAYER) == 1
    assert viewer.layers[L.LABELS_LAYER] is before
    np.testing.assert_array_equal(np.asarray(before.data), study.read("labels"))
    assert "slice(s)" in widget.status.text()  # the step's one-line summary


def test_store_broken_after_opening_is_one_status_line(make_napari_viewer, qtbot, store_path):
    viewer = make_napari_viewer()
    viewer.open(store_path, plugin=PLUGIN)
    Study.open(store_path, writable=True).update_attrs(format_version=99)
    widget = SegmentWidget(viewer)
    with qtbot.waitSignal(widget.finished, timeout=RUN_TIMEOUT_MS):
        widget.run()

    assert "unknown format_version 99" in widget.status.text()
    assert len(widget.status.text().splitlines()) == 1
    assert L.LABELS_LAYER not in _layer_names(viewer)
    assert widget.run_button.isEnabled()


def test_no_store_disables_segment(make_napari_viewer, store_path):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    assert not widget.run_button.isEnabled()
    assert "open a study store" in widget.study_label.text()

    viewer.add_image(np.zeros((2, 3, 8, 8), dtype=np.uint16), name=L.IMAGE_LAYER)
    assert not widget.run_button.isEnabled() and not widget.import_button.isEnabled()
    assert "open a study store (*.zarr)" in widget.study_label.text()
    widget.run()  # does nothing
    assert widget.worker is None

    viewer.layers.clear()
    viewer.add_image(
        np.zeros((2, 3, 8, 8), dtype=np.uint16), name=L.IMAGE_LAYER,
        metadata={L.DICOM_KEY: "/scans/series1"},
    )
    assert not widget.run_button.isEnabled() and widget.import_button.isEnabled()
    assert "DICOM folder" in widget.study_label.text()
    assert "press Import DICOM…" in widget.study_label.text()

    viewer.layers.clear()
    viewer.open(store_path, plugin=PLUGIN)  # a store opened later enables the button
    assert widget.run_button.isEnabled()
    assert widget.study_label.text() == f"study: {store_path.name}"


def test_opening_a_store_shows_its_uncertain_slices_and_a_clean_one_clears_them(
    make_napari_viewer, tmp_path, phantom_path
):
    from scipy import ndimage

    from napari_perfroi.phantom import generate_phantom

    phantom = generate_phantom(27, n_dynamics=24, aif_series=False)
    blurred = ndimage.gaussian_filter(phantom.image.astype(np.float32), (0, 0, 3, 3))
    uncertain = Study.create(tmp_path / "blurred.zarr", blurred, **phantom.attrs)
    for step in ("motion", "segment"):
        run_step(uncertain, step)
    flagged = uncertain.attrs["steps"]["segment"]["parameters"]["uncertain_slices"]
    assert flagged, "a strongly blurred series should leave the model unsure"
    clean = Study.open(phantom_path, writable=True)
    for step in ("motion", "segment"):
        run_step(clean, step)

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    viewer.open(uncertain.path, plugin=PLUGIN)
    assert widget.status.text() == "; ".join(
        f"segmentation uncertain on slice {s + 1}: check the labels" for s in flagged)
    uncertainty = viewer.layers[L.UNCERTAINTY_LAYER]
    assert not uncertainty.visible
    unsure = float(np.asarray(uncertainty.data[flagged[0], 0]).mean())
    viewer.layers.clear()
    viewer.open(phantom_path, plugin=PLUGIN)
    assert widget.study_label.text() == "study: p.zarr"
    assert widget.status.text() == ""
    sure = float(np.asarray(viewer.layers[L.UNCERTAINTY_LAYER].data[flagged[0], 0]).mean())
    assert sure < unsure


def test_import_dicom_makes_a_store_and_shows_it(make_napari_viewer, qtbot, tmp_path):
    """A DICOM folder opened for viewing becomes a study store from the dock, in a worker
    with progress, and the store replaces the folder's layer."""
    from napari_perfroi.demo import REPOSITORY_SAMPLE

    viewer = make_napari_viewer()
    viewer.open(REPOSITORY_SAMPLE, plugin=PLUGIN)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    assert widget.import_button.isEnabled() and not widget.run_button.isEnabled()
    steps = []
    widget._progressed.connect(lambda step, done, total: steps.append((step, done, total)))
    with qtbot.waitSignal(widget.finished, timeout=RUN_TIMEOUT_MS):
        widget.import_dicom(tmp_path / "sample")
    dest = tmp_path / "sample.zarr"
    assert Study.open(dest).shape[:2] == (3, 60)
    assert steps and steps[-1][0] == "import" and steps[-1][1] == steps[-1][2]
    image = viewer.layers[L.IMAGE_LAYER]
    assert image.metadata[L.STORE_KEY] == str(dest) and L.DICOM_KEY not in image.metadata
    assert widget.study_label.text() == "study: sample.zarr" and widget.run_button.isEnabled()
    assert widget.status.text() == "imported into sample.zarr"
