"""Study stores are OME-Zarr 0.5 images that NGFF readers open without this plugin.

Format 2 layout: the root group is the image (array ``0``, time-first), the
segmentation a label image under ``labels/``, ``mbf`` an image group of its own.
Format 1 stores (every array at the root, slice-first) are read as they are and
migrated when opened for writing.
"""

import hashlib
import json
import logging
import os
import threading

import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from ome_zarr_models.v05.image import Image
from ome_zarr_models.v05.image_label import ImageLabel

from napari_perfroi.phantom import write_phantom
from napari_perfroi.study import FORMAT_VERSION, StoreError, Study

SEED = 7


def expected_scale(attrs):
    """(t, slice, y, x) steps: mean frame interval, median slice gap, pixel spacing."""
    frame_times = np.asarray(attrs["frame_times_s"], dtype=float)
    gaps = np.abs(np.diff(attrs["slice_positions_mm"]))
    return (float(np.diff(frame_times, axis=1).mean()), float(np.median(gaps)),
            *attrs["pixel_spacing_mm"])


def nodes_by_name(path):
    return {node.metadata.get("name"): node for node in Reader(parse_url(str(path)))()}


def axes(node):
    return [(a["name"], a["type"], a.get("unit")) for a in node.metadata["axes"]]


def scale(node):
    (transforms,) = node.metadata["coordinateTransformations"]
    (transform,) = [t for t in transforms if t["type"] == "scale"]
    return transform["scale"]


@pytest.fixture(scope="module")
def phantom_store(tmp_path_factory):
    """A phantom study with the labels and MBF steps' arrays (its truth, written as them)."""
    path = tmp_path_factory.mktemp("ome") / "phantom.zarr"
    study = write_phantom(path, SEED, n_dynamics=12)
    study.write("labels", study.read("truth/labels"))
    study.write("mbf", study.read("truth/mbf").astype(np.float32))
    return path


def test_ome_zarr_py_reads_image_labels_and_mbf(phantom_store):
    study = Study.open(phantom_store)
    attrs = study.attrs
    n_slices, n_frames = study.shape[:2]
    assert n_slices > 1 and n_frames == 12
    t_step, slice_mm, row_mm, col_mm = expected_scale(attrs)
    assert slice_mm > 0 and t_step > 0

    nodes = nodes_by_name(phantom_store)
    image = nodes["image"]
    assert axes(image) == [("t", "time", "second"), ("slice", "space", "millimeter"),
                           ("y", "space", "millimeter"), ("x", "space", "millimeter")]
    assert scale(image) == pytest.approx([t_step, slice_mm, row_mm, col_mm], rel=1e-6)
    (data,) = image.data
    assert data.shape == (n_frames, n_slices) + study.shape[2:]
    # time-first on disk, the same frames as the plugin's slice-first view
    np.testing.assert_array_equal(data[5, 1].compute(), study.image[1, 5].compute())
    np.testing.assert_array_equal(data.compute(), study.read("image").transpose(1, 0, 2, 3))

    labels = nodes["segmentation"]
    assert axes(labels) == axes(image) and scale(labels) == scale(image)
    np.testing.assert_array_equal(labels.data[0].compute(),
                                  study.read("labels").transpose(1, 0, 2, 3))
    assert set(labels.metadata["properties"]) == {0, 1, 2, 3}
    assert labels.metadata["properties"][2]["name"] == "LV myocardium"

    mbf = nodes_by_name(phantom_store / "mbf")["mbf"]
    assert axes(mbf) == [("slice", "space", "millimeter"), ("y", "space", "millimeter"),
                         ("x", "space", "millimeter")]
    assert scale(mbf) == pytest.approx([slice_mm, row_mm, col_mm], rel=1e-6)
    np.testing.assert_array_equal(mbf.data[0].compute(), study.read("mbf"))


def test_ome_zarr_models_validates_the_metadata(phantom_store):
    image = Image.from_zarr(zarr.open_group(phantom_store, mode="r"))
    assert image.labels.label_paths == ["segmentation"]
    label = ImageLabel.from_zarr(zarr.open_group(phantom_store / "labels" / "segmentation",
                                                 mode="r"))
    assert {c.label_value for c in label.ome_attributes.image_label.colors} == {0, 1, 2, 3}
    mbf = Image.from_zarr(zarr.open_group(phantom_store / "mbf", mode="r"))
    assert [a.name for a in mbf.ome_attributes.multiscales[0].axes] == ["slice", "y", "x"]
    # a store without labels or mbf yet is a valid image too
    Image.from_zarr(zarr.open_group(_fresh_study(phantom_store.parent / "bare.zarr").path,
                                    mode="r"))


def test_one_slice_uses_the_thickness_and_geometry_changes_refresh_the_scales(tmp_path):
    study = _fresh_study(tmp_path / "one.zarr", n_slices=1)
    study.write("labels", np.zeros(study.shape, np.uint8))
    assert scale(nodes_by_name(study.path)["image"]) == [0.75, 8.0, 1.5, 1.6]
    study.update_attrs(pixel_spacing_mm=[1.25, 1.25])
    nodes = nodes_by_name(study.path)
    assert scale(nodes["image"]) == scale(nodes["segmentation"]) == [0.75, 8.0, 1.25, 1.25]


def _fresh_study(path, n_slices=3, n_frames=4, shape=(10, 12)):
    image = np.random.default_rng(1).integers(0, 900, (n_slices, n_frames) + shape, np.uint16)
    return Study.create(
        path, image, pixel_spacing_mm=(1.5, 1.6), slice_thickness_mm=8.0,
        frame_times_s=np.tile(np.arange(n_frames) * 0.75, (n_slices, 1)),
        slice_positions_mm=np.arange(n_slices) * -10.0, source={"importer": "test"},
    )


# ---------------------------------------------------------------- format 1 stores
def write_format1_store(path, n_slices=3, n_frames=6, shape=(20, 24)):
    """A store exactly as napari-perfroi 0.1 wrote format 1 (Study.create, then
    Study.write of derived and truth arrays): every array at the root, slice-first."""
    rng = np.random.default_rng(3)
    s, t = n_slices, n_frames
    arrays = {
        "image": rng.integers(0, 4000, (s, t) + shape, dtype=np.uint16),
        "labels": rng.integers(0, 4, (s, t) + shape, dtype=np.uint8),
        "roi": rng.random((s, t, 3), dtype=np.float32),
        "mbf": rng.random((s,) + shape, dtype=np.float32),
        "truth/labels": rng.integers(0, 4, (s, t) + shape, dtype=np.uint8),
    }
    arrays["mbf"][0, 0, 0] = np.nan
    attrs = {
        "format_version": 1, "pixel_spacing_mm": [1.8, 1.8], "slice_thickness_mm": 8.0,
        "frame_times_s": (np.arange(t) * 0.9 + np.arange(s)[:, None] * 0.3).tolist(),
        "slice_levels": ["basal", "mid", "apical"], "slice_positions_mm": [0.0, 10.0, 20.0],
        "reference_frame": [0, 0, 0], "hematocrit": 0.45, "source": {"importer": "test"},
        "steps": {},
    }
    root = zarr.open_group(path, mode="w", zarr_format=3)
    root.attrs["perfroi"] = attrs
    root.create_array("image", shape=arrays["image"].shape, dtype=np.uint16,
                      chunks=(1, 1) + shape, fill_value=0)[...] = arrays["image"]
    for name, data in arrays.items():
        if name == "image":
            continue
        if "/" in name:
            zarr.open_group(path / name.split("/")[0], mode="a", zarr_format=3)
        zarr.create_array(
            zarr.storage.LocalStore(path / name), shape=data.shape, dtype=data.dtype,
            chunks=data.shape, fill_value=np.nan if data.dtype.kind == "f" else 0,
            zarr_format=3,
        )[...] = data
    return arrays


def snapshot(folder):
    """Every file and directory under ``folder`` with its content hash and mtime."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            item = os.path.join(root, name)
            content = b"" if name in dirs else open(item, "rb").read()
            found[os.path.relpath(item, folder)] = (hashlib.sha256(content).hexdigest(),
                                                    os.stat(item).st_mtime_ns)
    return found


def chunk_hashes(folder):
    return {os.path.relpath(os.path.join(root, f), folder): hashlib.sha256(
        open(os.path.join(root, f), "rb").read()).hexdigest()
        for root, _, files in os.walk(folder) for f in files if f != "zarr.json"}


def test_format1_store_opens_read_only_without_writing(tmp_path, caplog):
    path = tmp_path / "old.zarr"
    arrays = write_format1_store(path)
    before = snapshot(tmp_path)
    with caplog.at_level(logging.INFO):
        study = Study.open(path)
        assert study.attrs["format_version"] == 1
        assert study.shape == arrays["image"].shape
        assert study.arrays() == ["image", "labels", "mbf", "roi", "truth/labels"]
        for name, data in arrays.items():
            np.testing.assert_array_equal(study.read(name), data)
        np.testing.assert_array_equal(study.image[2, 4].compute(), arrays["image"][2, 4])
        np.testing.assert_array_equal(study.zarr_array("labels")[:, [1, 3]],
                                      arrays["labels"][:, [1, 3]])
    assert snapshot(tmp_path) == before
    assert not caplog.records
    with pytest.raises(StoreError, match="read-only"):
        study.write("roi", arrays["roi"])


def test_writable_open_migrates_format1_once_and_says_so(tmp_path, caplog):
    path = tmp_path / "old.zarr"
    arrays = write_format1_store(path)
    old_chunks = chunk_hashes(path)
    with caplog.at_level(logging.INFO, logger="napari_perfroi"):
        study = Study.open(path, writable=True)
    assert [r.getMessage() for r in caplog.records] == [f"migrated {path} from format 1 to 2"]
    assert study.attrs["format_version"] == FORMAT_VERSION == 2
    # the same data under the same public names, chunk files renamed byte for byte
    assert study.arrays() == ["image", "labels", "mbf", "roi", "truth/labels"]
    for name, data in arrays.items():
        np.testing.assert_array_equal(study.read(name), data)
    new_chunks = chunk_hashes(path)
    assert new_chunks["0/c/4/2/0/0"] == old_chunks["image/c/2/4/0/0"]
    assert new_chunks["labels/segmentation/0/c/0/0/0/0"] == old_chunks["labels/c/0/0/0/0"]
    assert new_chunks["mbf/0/c/0/0/0"] == old_chunks["mbf/c/0/0/0"]
    assert sorted(new_chunks.values()) == sorted(old_chunks.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.zarr"]  # no staging left
    Image.from_zarr(zarr.open_group(path, mode="r"))
    Image.from_zarr(zarr.open_group(path / "mbf", mode="r"))
    nodes = nodes_by_name(path)
    assert scale(nodes["image"]) == pytest.approx([0.9, 10.0, 1.8, 1.8])
    np.testing.assert_array_equal(nodes["segmentation"].data[0].compute(),
                                  arrays["labels"].transpose(1, 0, 2, 3))
    # once only
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="napari_perfroi"):
        Study.open(path, writable=True).write("roi", arrays["roi"] * 2)
    assert not caplog.records
    assert json.loads((path / "zarr.json").read_text())["attributes"]["perfroi"][
        "format_version"] == 2


def test_arrays_opened_before_a_migration_keep_reading(tmp_path):
    """A viewer shows a format 1 store (lazily) while a step, opening it for writing,
    migrates it: the frames it reads next are still the right ones."""
    path = tmp_path / "old.zarr"
    arrays = write_format1_store(path)
    shown = Study.open(path)
    image, labels = shown.image, shown.zarr_array("labels")
    Study.open(path, writable=True)
    assert not (path / "image").exists()
    np.testing.assert_array_equal(image[1, 5].compute(), arrays["image"][1, 5])
    np.testing.assert_array_equal(image.compute(), arrays["image"])
    np.testing.assert_array_equal(labels[2, 3], arrays["labels"][2, 3])
    assert shown.has("labels") and shown.shape == arrays["image"].shape


def test_two_writers_opening_a_format1_store_migrate_it_once(tmp_path, caplog):
    path = tmp_path / "old.zarr"
    arrays = write_format1_store(path)
    start = threading.Barrier(2)
    failures = []

    def open_for_writing():
        start.wait()
        try:
            Study.open(path, writable=True)
        except Exception as exc:  # noqa: BLE001 - any failure is a finding
            failures.append(repr(exc))

    with caplog.at_level(logging.INFO, logger="napari_perfroi"):
        threads = [threading.Thread(target=open_for_writing) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
    assert [r.getMessage() for r in caplog.records] == [f"migrated {path} from format 1 to 2"]
    study = Study.open(path)
    for name, data in arrays.items():
        np.testing.assert_array_equal(study.read(name), data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.zarr"]
