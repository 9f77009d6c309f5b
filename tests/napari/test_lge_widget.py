"""The "LGE viability" dock in a real viewer on phantom stores with an LGE study: layers
placed at the perfusion position, Find scar, Cancel, fibrosis labels, scar edits saved
(by the button and on close), the LGE DICOM import, and two studies in one viewer."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from napari.layers import Image, Labels
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QMessageBox

from napari_perfroi._napari import layers as L
from napari_perfroi._napari import lge_layers as G
from napari_perfroi._napari.lge_widget import LgeWidget, run_find_scar, run_import_lge
from napari_perfroi._napari.step_worker import BAR_STEPS_PER_UNIT
from napari_perfroi.lge.models import weights_path
from napari_perfroi.lge.phantom import generate_lge_phantom, write_lge_dicom, write_lge_phantom
from napari_perfroi.lge.pipeline import DEFAULT_SCAR_METHOD, run_lge_steps, viability_line
from napari_perfroi.lge.store import LgeStudy, has_lge
from napari_perfroi.pipeline import run_step
from napari_perfroi.progress import Cancelled
from napari_perfroi.report import TERRITORY_NAMES
from napari_perfroi.study import LV_BLOOD, MYOCARDIUM, Study

from worker_runs import run_responsively

pytestmark = pytest.mark.napari

PLUGIN = "napari-perfroi"
DOCK = "LGE viability"
RUN_TIMEOUT_MS = 60_000
# A scar the n-SD rule finds on the phantom: transmural in the LAD territory.
LGE_SCAR = {"scar": "lad", "scar_pattern": "transmural", "transmurality": 0.8}


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def lge_template(analysed_template, tmp_path_factory) -> Path:
    """The analysed phantom with its flow report and an LGE study whose labels are the
    truth's (do not modify: copy it)."""
    path = tmp_path_factory.mktemp("lge") / "p.zarr"
    shutil.copytree(analysed_template, path)
    study = Study.open(path, writable=True)
    for step in ("flow", "aha"):
        run_step(study, step)
    lge = write_lge_phantom(study, **LGE_SCAR)
    lge.write("labels", lge.read("truth/labels"))
    return path


@pytest.fixture
def lge_store(lge_template, tmp_path) -> Path:
    path = tmp_path / "p.zarr"
    shutil.copytree(lge_template, path)
    return path


def _open(make_napari_viewer, path: Path, show: bool = False):
    viewer = make_napari_viewer(show=show)
    viewer.open(path, plugin=PLUGIN)
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, DOCK)
    assert isinstance(widget, LgeWidget)
    return viewer, dock, widget


def _find_scar(qtbot, widget: LgeWidget, method: str = "nsd") -> None:
    widget.method.setCurrentIndex(widget.method.findData(method))
    with qtbot.waitSignal(widget.finished, timeout=RUN_TIMEOUT_MS):
        widget.find_scar()


def _placement(path: Path) -> G.LgePlacement:
    study, lge = Study.open(path), LgeStudy.open(path)
    return G.lge_placement(study.attrs, study.shape, lge.attrs, lge.shape)


def _paint_scar(layer, placement: G.LgePlacement, lge: LgeStudy, k: int) -> np.ndarray:
    """Paint scar (1) with a 3-pixel brush on a myocardium pixel of LGE slice ``k`` that has
    none; the expected LGE scar."""
    stored = lge.read("scar")
    rows, cols = np.nonzero((lge.read("labels")[k] == MYOCARDIUM) & (stored[k] == 0))
    row, col = rows[len(rows) // 2], cols[len(rows) // 2]
    layer.brush_size = 3
    layer.selected_label = 1
    before = np.array(layer.data, copy=True)
    layer.paint((placement.shown_on[k], 0, row + placement.offsets[k, 0],
                 col + placement.offsets[k, 1]), 1)
    assert np.count_nonzero(layer.data != before) > 0
    return G.from_canvas(placement, layer.data, stored)


# ---------------------------------------------------------------- placement (no viewer)
def _perfusion_attrs() -> dict:
    return {"image_orientation_patient": [1, 0, 0, 0, 1, 0],
            "image_position_patient": [[-40.0, -50.0, 10.0 * j] for j in range(3)],
            "pixel_spacing_mm": [2.0, 2.0], "slice_positions_mm": [0.0, 10.0, 20.0]}


def _patient_point(attrs, k, row, col) -> np.ndarray:
    cosines = np.asarray(attrs["image_orientation_patient"], dtype=float)
    row_mm, col_mm = attrs["pixel_spacing_mm"]
    return (np.asarray(attrs["image_position_patient"][k]) + col * col_mm * cosines[:3]
            + row * row_mm * cosines[3:])


def _perfusion_world(attrs, j, point) -> np.ndarray:
    """(y, x) mm of a patient point in the perfusion world of slice ``j``."""
    cosines = np.asarray(attrs["image_orientation_patient"], dtype=float)
    offset = point - np.asarray(attrs["image_position_patient"][j])
    return np.array([offset @ cosines[3:], offset @ cosines[:3]])


def test_placement_follows_the_patient_geometry_of_a_turned_lge_stack():
    """LGE rows along the perfusion x axis, columns against its y axis, other spacing and
    matrix, slices shifted in-plane by fractions of a pixel; two LGE slices at perfusion
    slice 2 (the nearer shown) and one between slices (not shown)."""
    perfusion = _perfusion_attrs()
    lge = {"image_orientation_patient": [0, -1, 0, 1, 0, 0],
           "image_position_patient": [[-30.0 + 0.3 * k, 60.0 - 0.7 * k, z]
                                      for k, z in enumerate((0.5, 5.0, 11.0, 9.5))],
           "pixel_spacing_mm": [1.5, 1.25], "slice_positions_mm": [0.5, 5.0, 11.0, 9.5],
           "perfusion_slice": [0, None, 1, 1]}
    placement = G.lge_placement(perfusion, (3, 10, 50, 60), lge, (4, 40, 30))
    assert placement.shown_on == (0, None, None, 1)  # slice 4 is 0.5 mm from slice 2's plane
    assert placement.shown_slices() == [0, 3]
    assert placement.note.startswith(
        "LGE slices 1, 4 on perfusion slices 1, 2; LGE slice 2 not shown: no perfusion slice "
        "at that position; LGE slice 3 not shown: another LGE slice is nearer the same "
        "perfusion slice; placed by patient position")
    for k in placement.shown_slices():
        for row, col in ((0, 0), (39, 29), (12.0, 7.0)):
            j, y, x = placement.world_point(k, row, col)
            expected = _perfusion_world(perfusion, j, _patient_point(lge, k, row, col))
            # the first shown slice exactly; the others within half an LGE pixel per axis
            tolerance = 1e-9 if k == 0 else 0.5 * max(lge["pixel_spacing_mm"]) + 1e-9
            np.testing.assert_allclose([y, x], expected, atol=tolerance)

    image = np.arange(4 * 40 * 30, dtype=np.float32).reshape(4, 40, 30)
    canvas = G.to_canvas(placement, image, np.nan)
    assert canvas.shape == (3, 1, *placement.canvas_shape[1:])
    assert np.isnan(canvas[2]).all()  # no LGE slice at perfusion slice 3
    stored = np.zeros_like(image)
    back = G.from_canvas(placement, canvas, stored)
    np.testing.assert_array_equal(back[[0, 3]], image[[0, 3]])
    np.testing.assert_array_equal(back[[1, 2]], 0)  # slices not shown keep what is stored


def test_without_patient_geometry_each_lge_slice_is_centred():
    perfusion = {"pixel_spacing_mm": [2.0, 2.0], "slice_positions_mm": [0.0, 10.0]}
    lge = {"pixel_spacing_mm": [1.0, 1.0], "slice_positions_mm": [0.0, 10.0],
           "perfusion_slice": [0, 1]}
    placement = G.lge_placement(perfusion, (2, 5, 41, 51), lge, (2, 61, 81))
    assert "no patient geometry" in placement.note
    for k in (0, 1):
        assert placement.world_point(k, 30, 40) == (k, pytest.approx(40.0), pytest.approx(50.0))


# ---------------------------------------------------------------- the dock
def test_lge_layers_show_at_the_perfusion_position(make_napari_viewer, lge_store):
    viewer, _, widget = _open(make_napari_viewer, lge_store)
    active = viewer.layers.selection.active
    study, lge = Study.open(lge_store), LgeStudy.open(lge_store)
    image = L.find_layer(viewer, L.IMAGE_LAYER, lge_store)
    layers = {role: L.find_layer(viewer, role, lge_store) for role in G.LGE_LAYERS}
    assert isinstance(layers[G.LGE_IMAGE_LAYER], Image)
    assert isinstance(layers[G.SCAR_LAYER], Labels) and layers[G.SCAR_LAYER].editable
    assert isinstance(layers[G.LGE_LABELS_LAYER], Labels)
    assert not layers[G.LGE_LABELS_LAYER].visible
    for role, layer in layers.items():
        assert layer.metadata[L.STORE_KEY] == str(lge_store)
        assert layer.metadata[L.ROLE_KEY] == role
    assert viewer.layers.selection.active is active  # the user's layer stays active
    assert "study: p.zarr" in widget.study_label.text()
    assert "LGE slices 1, 2, 3 on perfusion slices 1, 2, 3" in widget.lge_label.text()
    assert "no scar yet" in widget.summary.text()

    lge_layer, placement = layers[G.LGE_IMAGE_LAYER], _placement(lge_store)
    pixels, lge_attrs, attrs = lge.read("image"), lge.attrs, study.attrs
    n_times = study.shape[1]
    spacing = np.asarray(attrs["pixel_spacing_mm"])
    for k in range(lge.shape[0]):
        # A known LGE pixel: the LV blood pool's centroid of the truth labels.
        row, col = np.rint(np.argwhere(lge.read("truth/labels")[k] == LV_BLOOD).mean(axis=0))
        canvas = (k, 0, row + placement.offsets[k, 0], col + placement.offsets[k, 1])
        assert lge_layer.data[tuple(int(v) for v in canvas)] == pixels[k, int(row), int(col)]
        y, x = _perfusion_world(attrs, k, _patient_point(lge_attrs, k, row, col))
        for t in (0, n_times - 1):  # the one LGE frame shows on every perfusion frame
            world = np.asarray(lge_layer.data_to_world((*canvas[:1], 0, *canvas[2:])))
            perfusion_world = np.asarray(image.data_to_world((k, t, y / spacing[0],
                                                              x / spacing[1])))
            assert round(float(lge_layer.world_to_data((k, t, *world[2:]))[1])) == 0
            assert np.linalg.norm(world[2:] - perfusion_world[2:]) <= max(
                lge_attrs["pixel_spacing_mm"])
            assert world[0] == perfusion_world[0]
        # and the heart of both images meets: the true LV centre of the perfusion phantom
        lv = np.argwhere(lge.read("truth/labels")[k] == LV_BLOOD).mean(axis=0)
        world = np.asarray(lge_layer.data_to_world((k, 0, *(lv + placement.offsets[k]))))
        np.testing.assert_allclose(world[2:], np.asarray(attrs["truth"]["lv_centre_px"][k])
                                   * spacing, atol=spacing.max())
    # transparent (NaN) where no LGE pixel is, so the perfusion shows beside it
    assert np.isnan(lge_layer.data).sum() == lge_layer.data.size - pixels.size


def test_find_scar_writes_the_scar_and_the_viability_and_shows_them(
        make_napari_viewer, qtbot, lge_store):
    viewer, _, widget = _open(make_napari_viewer, lge_store)
    widget.method.setCurrentIndex(widget.method.findData("fwhm"))
    assert not widget.n_sd.isVisibleTo(widget)
    widget.method.setCurrentIndex(widget.method.findData("nsd"))
    assert widget.n_sd.isVisibleTo(widget)
    widget.n_sd.setValue(4.0)
    shown = run_responsively(qtbot, widget, widget.find_scar, widget.find_button,
                             RUN_TIMEOUT_MS)

    lge = LgeStudy.open(lge_store)
    steps = lge.attrs["steps"]
    assert {"lge-aha", "lge-scar", "viability"} <= set(steps)  # aha made first: it lacked it
    assert steps["lge-scar"]["parameters"]["method"] == "nsd"
    assert steps["lge-scar"]["parameters"]["n_sd"] == 4.0
    assert BAR_STEPS_PER_UNIT in shown
    scar, truth = lge.read("scar") > 0, lge.read("truth/scar") > 0
    assert (scar & truth).sum() >= 0.7 * truth.sum()  # the rule finds the phantom's scar
    document = lge.attrs["viability"]
    assert widget.document == document
    assert document["territories"]["lad"] != "not assessed"
    assert viability_line(document) in widget.summary.text()
    assert viability_line(document) == widget.status.text()
    verdicts = {text.get_text() for text in widget.bullseye_axes.texts}
    for territory, name in TERRITORY_NAMES.items():
        assert f"{name}: {document['territories'][territory]}" in verdicts
    assert not widget.canvas.isHidden()
    layer = L.find_layer(viewer, G.SCAR_LAYER, lge_store)
    placement = _placement(lge_store)
    np.testing.assert_array_equal(G.from_canvas(placement, layer.data, np.zeros_like(scar)),
                                  lge.read("scar"))
    assert layer.editable and widget.find_button.isEnabled()
    assert not widget.cancel_button.isEnabled()
    assert isinstance(L.find_layer(viewer, G.LGE_LABELS_LAYER, lge_store), Labels)


def test_cancel_stops_the_step_under_way_and_says_what_was_kept(make_napari_viewer, qtbot,
                                                                lge_store):
    viewer, _, widget = _open(make_napari_viewer, lge_store)
    widget.method.setCurrentIndex(widget.method.findData("nsd"))

    def cancel_at_scar(step, done, total):  # in the worker thread, as it reports
        if step == "lge-scar":
            widget._cancel.set()  # what Cancel sets

    widget._progressed.connect(cancel_at_scar, Qt.ConnectionType.DirectConnection)
    with qtbot.waitSignal(widget.finished, timeout=RUN_TIMEOUT_MS):
        widget.find_scar()
    lge = LgeStudy.open(lge_store)
    assert lge.has("aha") and not lge.has("scar")  # the sectors step was done before
    assert widget.status.text() == ("cancelled: lge-scar wrote nothing; lge-aha done before "
                                    "it kept")
    widget._progressed.disconnect(cancel_at_scar)

    before = lge.attrs
    with qtbot.waitSignal(widget.finished, timeout=RUN_TIMEOUT_MS):
        widget.find_scar()  # lge-scar first now
        widget.cancel()
        assert not widget.cancel_button.isEnabled()
    lge = LgeStudy.open(lge_store)
    assert not lge.has("scar") and lge.attrs == before
    assert widget.status.text() == "cancelled: nothing was written"
    assert widget.find_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert L.find_layer(viewer, G.SCAR_LAYER, lge_store).editable


def test_a_run_stops_before_the_step_under_way_writes(lge_store):
    """Cancel as the scar step starts writes no scar; a dock closed once the sectors step
    is done stops the run before the scar step and hears nothing more; the sectors stay."""
    cancel, closed = threading.Event(), threading.Event()
    reported = []

    def cancel_at_scar(step, done, total):
        reported.append(step)
        if step == "lge-scar":
            cancel.set()

    run_lge_steps(Study.open(lge_store), ["lge-aha"])
    with pytest.raises(Cancelled):
        run_find_scar(lge_store, "nsd", 5.0, cancel, closed, cancel_at_scar)
    lge = LgeStudy.open(lge_store)
    assert reported == ["lge-scar"] and not lge.has("scar") and "lge-scar" not in lge.attrs["steps"]

    cancel.clear()
    LgeStudy.open(lge_store, writable=True).remove("aha")
    reported.clear()

    def close_once_aha_is_done(step, done, total):
        reported.append(step)
        if done == total:
            closed.set()  # what the dock's teardown does

    with pytest.raises(Cancelled):
        run_find_scar(lge_store, "nsd", 5.0, cancel, closed, close_once_aha_is_done)
    lge = LgeStudy.open(lge_store)
    assert set(reported) == {"lge-aha"} and lge.has("aha") and not lge.has("scar")


def test_fibrosis_choice_writes_slice_has_scar(make_napari_viewer, qtbot, lge_store):
    viewer, _, widget = _open(make_napari_viewer, lge_store)
    assert len(widget.fibrosis_boxes) == 3
    assert [box.currentText() for box in widget.fibrosis_boxes] == ["unknown"] * 3
    widget.fibrosis_boxes[1].setCurrentIndex(widget.fibrosis_boxes[1].findText("yes"))
    assert LgeStudy.open(lge_store).attrs["slice_has_scar"] == [None, True, None]
    widget.set_fibrosis(2, False)
    widget.set_fibrosis(1, None)
    assert LgeStudy.open(lge_store).attrs["slice_has_scar"] == [None, None, False]
    assert widget.status.text() == "LGE slice 2: fibrosis unknown"

    again = LgeWidget(viewer)  # a dock opened later shows what the study holds
    assert [box.currentText() for box in again.fibrosis_boxes] == ["unknown", "unknown", "no"]


def test_painted_scar_is_saved_with_flags_and_kept_by_the_next_run(
        make_napari_viewer, qtbot, lge_store):
    viewer, _, widget = _open(make_napari_viewer, lge_store)
    _find_scar(qtbot, widget)
    lge = LgeStudy.open(lge_store)
    burden = lge.attrs["viability"]["global_scar_percent"]
    layer = L.find_layer(viewer, G.SCAR_LAYER, lge_store)
    expected = _paint_scar(layer, _placement(lge_store), lge, 2)
    assert widget.save_label.text() == "unsaved scar edits"

    qtbot.mouseClick(widget.save_button, Qt.MouseButton.LeftButton)
    lge = LgeStudy.open(lge_store)
    np.testing.assert_array_equal(lge.read("scar"), expected)
    np.testing.assert_array_equal(lge.read("scar_edited"), [0, 0, 1])
    assert lge.attrs["viability"]["global_scar_percent"] > burden  # measured again
    assert widget.status.text().startswith("scar edits saved: LGE slice 3 marked edited; ")
    assert "scar edited by hand on LGE slice(s) 3" in widget.summary.text()

    _find_scar(qtbot, widget, "fwhm")  # another method: slice 3 is kept as painted
    lge = LgeStudy.open(lge_store)
    np.testing.assert_array_equal(lge.read("scar")[2], expected[2])
    assert lge.attrs["steps"]["lge-scar"]["parameters"]["kept_edited_slices"] == [2]
    placement = _placement(lge_store)
    np.testing.assert_array_equal(G.from_canvas(placement, layer.data, expected),
                                  lge.read("scar"))

    stored = lge.read("scar")
    layer.paint((0, 0, 50, 60), 3)  # not a scar label: refused in one line, nothing written
    assert widget.save_scar_edits() is None
    assert "scar labels are 0 (none), 1 (scar) or 2" in widget.status.text()
    assert "\n" not in widget.status.text()
    np.testing.assert_array_equal(LgeStudy.open(lge_store).read("scar"), stored)


def test_unsaved_scar_is_saved_when_the_viewer_closes(make_napari_viewer, qtbot, lge_store):
    viewer, _, widget = _open(make_napari_viewer, lge_store)
    _find_scar(qtbot, widget)
    lge = LgeStudy.open(lge_store)
    burden = lge.attrs["viability"]["global_scar_percent"]
    expected = _paint_scar(L.find_layer(viewer, G.SCAR_LAYER, lge_store),
                           _placement(lge_store), lge, 0)
    viewer.close()  # at once, no Save pressed
    lge = LgeStudy.open(lge_store)
    np.testing.assert_array_equal(lge.read("scar"), expected)
    np.testing.assert_array_equal(lge.read("scar_edited"), [1, 0, 0])
    assert lge.attrs["viability"]["global_scar_percent"] > burden  # measured again


def test_unsaved_scar_is_saved_when_the_widget_is_destroyed(make_napari_viewer, qtbot,
                                                             lge_store):
    viewer = make_napari_viewer()
    viewer.open(lge_store, plugin=PLUGIN)
    run_lge_steps(Study.open(lge_store), ["lge-aha", "lge-scar", "viability"], method="nsd")
    widget = LgeWidget(viewer)
    expected = _paint_scar(L.find_layer(viewer, G.SCAR_LAYER, lge_store),
                           _placement(lge_store), LgeStudy.open(lge_store), 1)
    with qtbot.waitSignal(widget.destroyed, timeout=5000):
        widget.deleteLater()
    np.testing.assert_array_equal(LgeStudy.open(lge_store).read("scar"), expected)


# ---------------------------------------------------------------- the LGE DICOM import
@pytest.fixture
def lge_dicom(phantom_store, tmp_path) -> Path:
    """The phantom store's LGE stack written as DICOM (same patient and planes)."""
    truth = Study.open(phantom_store).attrs["truth"]
    phantom = generate_lge_phantom(truth["seed"], truth["defect"], n_dynamics=24)
    return write_lge_dicom(phantom, tmp_path / "lge_dicom")


def test_open_lge_imports_a_dicom_folder_and_asks_before_replacing(
        make_napari_viewer, qtbot, phantom_store, lge_dicom, tmp_path, monkeypatch):
    viewer, _, widget = _open(make_napari_viewer, phantom_store)
    assert "no LGE study: press Open LGE" in widget.lge_label.text()
    assert not widget.find_button.isEnabled() and widget.open_button.isEnabled()
    monkeypatch.setattr("napari_perfroi._napari.lge_widget.QFileDialog.getExistingDirectory",
                        lambda *args, **kwargs: str(lge_dicom))
    with qtbot.waitSignal(widget.finished, timeout=RUN_TIMEOUT_MS):
        widget.open_folder_action.trigger()
    lge = LgeStudy.open(phantom_store)
    assert lge.shape[0] == 3 and lge.attrs["perfusion_slice"] == [0, 1, 2]
    assert widget.status.text() == "LGE imported: 3 slice(s)"
    layer = L.find_layer(viewer, G.LGE_IMAGE_LAYER, phantom_store)
    placement = _placement(phantom_store)
    np.testing.assert_array_equal(G.from_canvas(placement, layer.data,
                                                np.zeros(lge.shape, np.float32)),
                                  lge.read("image").astype(np.float32))
    assert L.find_layer(viewer, G.SCAR_LAYER, phantom_store) is not None
    assert widget.find_button.isEnabled()

    asked = []

    def answer(reply):
        def question(*args, **kwargs):
            asked.append(args[2])
            return reply
        return question

    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.No))
    created = (lge.path / "zarr.json").stat().st_mtime_ns
    widget.open_lge(lge_dicom)
    assert widget.worker is None and len(asked) == 1 and "already has an LGE study" in asked[0]
    assert (lge.path / "zarr.json").stat().st_mtime_ns == created

    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Yes))
    with qtbot.waitSignal(widget.finished, timeout=RUN_TIMEOUT_MS):
        widget.open_lge(lge_dicom)
    assert (lge.path / "zarr.json").stat().st_mtime_ns != created and len(asked) == 2

    empty = tmp_path / "empty"
    empty.mkdir()
    with qtbot.waitSignal(widget.finished, timeout=RUN_TIMEOUT_MS):
        widget.open_lge(empty)
    assert str(empty) in widget.status.text() and "\n" not in widget.status.text()
    assert LgeStudy.open(phantom_store).shape[0] == 3  # the LGE study is still there


def test_a_cancelled_import_writes_nothing(phantom_store, lge_dicom):
    cancel, closed = threading.Event(), threading.Event()
    with pytest.raises(Cancelled):
        run_import_lge(lge_dicom, phantom_store, False, cancel, closed,
                       lambda *progress: cancel.set())
    assert not has_lge(phantom_store)
    store, warnings = run_import_lge(lge_dicom, phantom_store, False, threading.Event(),
                                     closed, lambda *progress: None)
    assert store == phantom_store and warnings == [] and has_lge(phantom_store)


# ---------------------------------------------------------------- two studies, screen
def test_the_dock_follows_the_study_of_the_selected_layer(make_napari_viewer, qtbot,
                                                          lge_template, tmp_path):
    first, second = tmp_path / "first.zarr", tmp_path / "second.zarr"
    for path in (first, second):
        shutil.copytree(lge_template, path)
    viewer = make_napari_viewer()
    viewer.open(first, plugin=PLUGIN)
    viewer.open(second, plugin=PLUGIN)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, DOCK)
    viewer.layers.selection.active = L.find_layer(viewer, L.IMAGE_LAYER, second)
    qtbot.waitUntil(lambda: widget._shown_store == second, timeout=5000)
    assert "second.zarr" in widget.study_label.text()
    second_scar = L.find_layer(viewer, G.SCAR_LAYER, second)
    _find_scar(qtbot, widget)
    assert LgeStudy.open(second).has("scar") and not LgeStudy.open(first).has("scar")

    viewer.layers.selection.active = L.find_layer(viewer, L.IMAGE_LAYER, first)
    qtbot.waitUntil(lambda: widget._shown_store == first, timeout=5000)
    assert "no scar yet" in widget.summary.text()
    first_scar = L.find_layer(viewer, G.SCAR_LAYER, first)
    assert first_scar.name != second_scar.name  # napari renamed the later one
    assert not np.any(first_scar.data)
    assert np.any(second_scar.data)
    for role in G.LGE_LAYERS:  # one layer of each role per study
        assert sum(L.layer_role(layer) == role for layer in viewer.layers) == 2


def test_the_docks_fit_a_1280_by_800_screen_and_closing_the_dock_saves_the_scar(
        make_napari_viewer, qtbot, lge_store):
    run_lge_steps(Study.open(lge_store), ["lge-aha", "lge-scar", "viability"], method="nsd")
    viewer = make_napari_viewer(show=True)
    viewer.open(lge_store, plugin=PLUGIN)
    for name in ("Segment", "ROI review", "Perfusion"):
        viewer.window.add_plugin_dock_widget(PLUGIN, name)
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, DOCK)
    window = viewer.window._qt_window
    window.resize(1280, 800)
    qtbot.waitUntil(widget.isVisible, timeout=5000)
    assert widget.canvas.isVisible()  # the bullseye of the viability in the store
    minimum = window.minimumSizeHint().expandedTo(window.minimumSize())
    assert minimum.height() <= 800 and minimum.width() <= 1280, minimum
    assert window.height() <= 800

    expected = _paint_scar(L.find_layer(viewer, G.SCAR_LAYER, lge_store),
                           _placement(lge_store), LgeStudy.open(lge_store), 1)
    dock.close()
    np.testing.assert_array_equal(LgeStudy.open(lge_store).read("scar"), expected)


@pytest.mark.skipif(
    not (weights_path("myocardium").is_file() and weights_path(DEFAULT_SCAR_METHOD).is_file()),
    reason="the LGE model weights are not installed")
def test_find_scar_runs_the_default_pipeline(make_napari_viewer, qtbot, lge_store):
    """Without labels, Find scar segments the LGE with the shipped model first, then finds
    the scar with the default method."""
    LgeStudy.open(lge_store, writable=True).remove("labels")
    viewer, _, widget = _open(make_napari_viewer, lge_store)
    assert widget.method.currentData() == DEFAULT_SCAR_METHOD
    with qtbot.waitSignal(widget.finished, timeout=RUN_TIMEOUT_MS * 5):
        widget.find_scar()
    lge = LgeStudy.open(lge_store)
    assert list(lge.attrs["steps"]) == ["lge-segment", "lge-aha", "lge-scar", "viability"]
    truth = lge.read("truth/labels") == MYOCARDIUM
    found = lge.read("labels") == MYOCARDIUM
    assert 2 * (truth & found).sum() / (truth.sum() + found.sum()) > 0.6
    assert lge.has("scar_probability") and "viability" in lge.attrs
    assert viability_line(lge.attrs["viability"]) in widget.summary.text()
    assert isinstance(L.find_layer(viewer, G.LGE_LABELS_LAYER, lge_store), Labels)
