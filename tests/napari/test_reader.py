"""The reader in a real napari viewer: layer names, geometry, laziness, refusals."""

from __future__ import annotations

import json
import shutil
import warnings

import dask.array as da
import numpy as np
import pytest
import zarr
from study_fixtures import PIXEL_SPACING_MM, ROI_FRAMES, SHAPE, create_store

from napari_perfroi._napari import layers as L
from napari_perfroi._napari.reader import get_reader
from napari_perfroi.roi import frames_with_circle
from napari_perfroi.study import ROI_STATES, Study

pytestmark = pytest.mark.napari

PLUGIN = "napari-perfroi"
SCALE = (1.0, 1.0, *PIXEL_SPACING_MM)  # slices and frames by index, rows and columns in mm


def _assert_study_geometry(layer, store_path):
    np.testing.assert_allclose(layer.scale, SCALE)
    assert tuple(layer.axis_labels) == L.AXIS_LABELS
    assert layer.metadata[L.STORE_KEY] == str(store_path)


def test_store_opens_as_lazy_image(make_napari_viewer, store_path, image_chunk_reads):
    viewer = make_napari_viewer()
    viewer.open(store_path, plugin=PLUGIN)
    viewer.screenshot(canvas_only=True, flash=False)  # make sure a frame was drawn

    assert [layer.name for layer in viewer.layers] == [L.IMAGE_LAYER]
    image = viewer.layers[L.IMAGE_LAYER]
    assert isinstance(image.data, da.Array)
    assert image.data.shape == SHAPE
    assert image.data.dtype == np.uint16
    _assert_study_geometry(image, store_path)
    low, high = image.contrast_limits
    assert 50 <= low < high <= 1500
    # The contrast sample plus the frame on screen, not the series (120 frames).
    n_frames = SHAPE[0] * SHAPE[1]
    assert 1 <= len(image_chunk_reads) <= L.CONTRAST_SAMPLE_FRAMES + 2 < n_frames


def test_store_with_derived_arrays_shows_them(make_napari_viewer, full_store_path):
    viewer = make_napari_viewer()
    viewer.open(full_store_path, plugin=PLUGIN)

    names = [layer.name for layer in viewer.layers]
    assert names == [  # the map above the labels, which would hide it
        L.IMAGE_LAYER, L.TRUTH_LABELS_LAYER, L.LABELS_LAYER, L.MBF_LAYER, L.AHA_LAYER, L.ROI_LAYER,
    ]
    for layer in viewer.layers:
        _assert_study_geometry(layer, full_store_path)
    for name in (L.MBF_LAYER, L.AHA_LAYER, L.TRUTH_LABELS_LAYER, L.LABELS_LAYER):
        assert viewer.layers[name].data.shape == SHAPE
    # small label maps are in memory, so they can be painted
    assert isinstance(viewer.layers[L.LABELS_LAYER].data, np.ndarray)
    assert not viewer.layers[L.TRUTH_LABELS_LAYER].visible

    mbf = viewer.layers[L.MBF_LAYER]
    assert tuple(mbf.contrast_limits) == L.MBF_RANGE_ML_MIN_G
    # one map per slice, the same on every frame
    np.testing.assert_array_equal(mbf.data[1, 0], mbf.data[1, SHAPE[1] - 1])
    aha = viewer.layers[L.AHA_LAYER]
    np.testing.assert_array_equal(aha.data[2, 5], aha.data[2, 0])


def test_large_label_arrays_stay_lazy(make_napari_viewer, full_store_path, monkeypatch):
    monkeypatch.setattr(L, "EDITABLE_LIMIT_BYTES", 0)
    viewer = make_napari_viewer()
    viewer.open(full_store_path, plugin=PLUGIN)
    for name in (L.LABELS_LAYER, L.TRUTH_LABELS_LAYER):
        assert isinstance(viewer.layers[name].data, da.Array)
        assert viewer.layers[name].data.shape == SHAPE


def test_roi_is_one_ellipse_on_each_frame_with_a_circle(make_napari_viewer, full_store_path):
    viewer = make_napari_viewer()
    viewer.open(full_store_path, plugin=PLUGIN)
    roi = viewer.layers[L.ROI_LAYER]

    assert roi.ndim == 4
    assert roi.shape_type == ["ellipse"] * len(ROI_FRAMES)
    for corners, colour, (frame, ((row, col, radius), state)) in zip(
        roi.data, roi.edge_color, sorted(ROI_FRAMES.items()), strict=True
    ):
        assert corners.shape == (4, 4)
        # constant (slice, t) columns: the ellipse shows on its own frame only
        np.testing.assert_array_equal(corners[:, :2], np.tile(frame, (4, 1)))
        np.testing.assert_allclose(corners[:, 2:].mean(axis=0), (row, col))
        np.testing.assert_allclose(np.ptp(corners[:, 2:], axis=0) / 2, (radius, radius))
        state_name = ROI_STATES[state]
        np.testing.assert_allclose(colour, _rgba(L.ROI_STATE_COLORS[state_name]))
    assert list(roi.features["state"]) == [
        ROI_STATES[state] for _, (_, state) in sorted(ROI_FRAMES.items())
    ]


def test_roi_without_states_or_circles(make_napari_viewer, store_path):
    study = Study.open(store_path, writable=True)
    roi = np.full(SHAPE[:2] + (3,), np.nan, dtype=np.float32)
    study.write("roi", roi)
    viewer = make_napari_viewer()
    viewer.open(store_path, plugin=PLUGIN)
    assert viewer.layers[L.ROI_LAYER].nshapes == 0
    assert viewer.layers[L.ROI_LAYER].ndim == 4

    roi[2, 5] = (20.0, 20.0, 4.0)
    study.write("roi", roi)  # a circle from a step that recorded no review state
    viewer.layers.clear()
    viewer.open(store_path, plugin=PLUGIN)
    circles = viewer.layers[L.ROI_LAYER]
    np.testing.assert_array_equal(circles.data[0][:, :2], np.tile((2, 5), (4, 1)))
    assert list(circles.features["state"]) == ["proposed"]


def _rgba(colour):
    from napari.utils.colormaps.standardize_color import transform_color

    return transform_color(colour)[0]


def test_roi_frames_ignore_missing_and_zero_circles():
    roi = np.full((2, 3, 3), np.nan, dtype=np.float32)
    roi[0, 1] = (5, 5, 2)
    roi[1, 2] = (5, 5, 0)  # no radius
    roi[1, 0] = (np.nan, 5, 2)  # no centre
    np.testing.assert_array_equal(frames_with_circle(roi), [[0, 1]])


def test_dicom_folder_opens_lazily_and_is_not_written(make_napari_viewer, tmp_path):
    from napari_perfroi.dicom_export import export_study

    study = create_store(tmp_path / "study.zarr", shape=(3, 6, 32, 40))
    folder = tmp_path / "series"
    export_study(study, folder)
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}

    viewer = make_napari_viewer()
    viewer.open(folder, plugin=PLUGIN)

    (image,) = viewer.layers
    assert image.name == L.IMAGE_LAYER
    assert isinstance(image.data, da.Array)
    assert image.data.shape == study.shape
    np.testing.assert_array_equal(np.asarray(image.data), study.read("image"))
    np.testing.assert_allclose(image.scale, SCALE)
    assert tuple(image.axis_labels) == L.AXIS_LABELS
    assert image.metadata[L.DICOM_KEY] == str(folder)
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before


# ---------------------------------------------------------------- refusals
def _text_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    return path


def _empty_dir(tmp_path):
    path = tmp_path / "empty"
    path.mkdir()
    return path


def _plain_zarr_group(tmp_path):
    path = tmp_path / "other.zarr"
    root = zarr.open_group(path, mode="w", zarr_format=3)
    root.create_array("data", shape=(4, 4), dtype="uint8")
    return path


def _folder_of_text(tmp_path):
    path = tmp_path / "documents"
    path.mkdir()
    (path / "a.txt").write_text("hello")
    (path / "b.dcm").write_bytes(b"not dicom at all")
    return path


@pytest.mark.parametrize(
    "make_path",
    [
        _text_file,
        _plain_zarr_group,
        lambda tmp_path: tmp_path / "missing.zarr",
        lambda tmp_path: [str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")],
    ],
    ids=["text-file", "non-study-zarr", "missing", "path-list"],
)
def test_reader_declines_what_it_cannot_read(tmp_path, make_path):
    path = make_path(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # declining quietly: these are not ours
        assert get_reader(path) is None


@pytest.mark.parametrize("make_path", [_empty_dir, _folder_of_text], ids=["empty", "text"])
def test_a_folder_without_study_or_dicom_is_declined_with_one_line(tmp_path, make_path):
    """napari alone would say only that no plugin reads it."""
    folder = make_path(tmp_path)
    with pytest.warns(UserWarning) as caught:
        assert get_reader(str(folder)) is None
    message = str(caught[0].message)
    assert len(caught) == 1 and "\n" not in message
    assert message.startswith(str(folder)) and "DICOM" in message and "study store" in message


def test_reader_warns_once_about_an_unknown_format_version(store_path):
    meta_file = store_path / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["perfroi"]["format_version"] = 99
    meta_file.write_text(json.dumps(meta))

    with pytest.warns(UserWarning, match="format_version 99") as caught:
        assert get_reader(store_path) is None
    assert len(caught) == 1


def test_reader_warns_about_a_damaged_store(store_path):
    shutil.rmtree(store_path / "0")  # the image array
    with pytest.warns(UserWarning, match="image"):
        assert get_reader(str(store_path)) is None
