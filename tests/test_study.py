import json
import threading

import numpy as np
import pytest
import zarr

from napari_perfroi.study import FORMAT_VERSION, StoreError, Study, slice_levels_for


def make_study(path, n_slices=3, n_frames=5, shape=(12, 16), **kwargs):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, (n_slices, n_frames) + shape, dtype=np.uint16)
    study = Study.create(
        path,
        image,
        pixel_spacing_mm=(2.0, 2.1),
        slice_thickness_mm=8.0,
        frame_times_s=np.tile(np.arange(n_frames) * 0.8, (n_slices, 1)),
        slice_positions_mm=np.arange(n_slices) * 10.0,
        source={"importer": "test"},
        **kwargs,
    )
    return study, image


def rewrite_attrs(path, **changes):
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["perfroi"].update(changes)
    (path / "zarr.json").write_text(json.dumps(meta))


def test_round_trip(tmp_path):
    path = tmp_path / "s.zarr"
    _, image = make_study(path)
    study = Study.open(path)
    assert study.shape == image.shape
    np.testing.assert_array_equal(study.image.compute(), image)
    assert study.image.chunks == ((1,) * 3, (1,) * 5, (12,), (16,))
    attrs = study.attrs
    assert attrs["format_version"] == FORMAT_VERSION
    assert attrs["slice_levels"] == ["basal", "mid", "apical"]
    assert attrs["pixel_spacing_mm"] == [2.0, 2.1]
    assert attrs["reference_frame"] == [0, 0, 0]
    assert study.arrays() == ["image"]
    assert study.name == "s"


def test_slice_levels_by_thirds():
    assert slice_levels_for(1) == ["basal"]
    assert slice_levels_for(3) == ["basal", "mid", "apical"]
    assert slice_levels_for(4) == ["basal", "basal", "mid", "apical"]
    assert slice_levels_for(6) == ["basal"] * 2 + ["mid"] * 2 + ["apical"] * 2


def test_create_refuses_existing_and_bad_input_leaves_nothing(tmp_path):
    path = tmp_path / "s.zarr"
    make_study(path)
    with pytest.raises(StoreError, match="already exists"):
        make_study(path)
    bad = tmp_path / "bad.zarr"
    with pytest.raises(StoreError, match="frame_times_s"):
        Study.create(
            bad, np.zeros((2, 3, 4, 4), np.uint16), pixel_spacing_mm=(1, 1),
            slice_thickness_mm=8, frame_times_s=[[0, 1, 2]], slice_positions_mm=[0, 1],
            source={},
        )
    with pytest.raises(StoreError, match="slice level"):
        make_study(bad, slice_levels=["basal", "middle", "apical"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


def test_overwrite_never_replaces_a_folder_that_is_not_a_store(tmp_path):
    precious = tmp_path / "results"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(StoreError, match="not a study store; refusing"):
        make_study(precious, overwrite=True)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_overwrite_replaces(tmp_path):
    path = tmp_path / "s.zarr"
    make_study(path)
    study, image = make_study(path, n_frames=7, overwrite=True)
    assert Study.open(path).shape[1] == 7


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: rewrite_attrs(p, format_version=3), "unknown format_version 3"),
        (lambda p: rewrite_attrs(p, format_version="1"), "unknown format_version '1'"),
        (lambda p: _drop_attr(p, "pixel_spacing_mm"), "missing required attribute pixel_spacing_mm"),
        (lambda p: _drop_attr(p, "frame_times_s"), "missing required attribute frame_times_s"),
        (lambda p: rewrite_attrs(p, frame_times_s=[[0.0]]), "frame_times_s does not match"),
        (lambda p: (p / "zarr.json").write_text("{not json"), "unreadable zarr.json"),
        (lambda p: __import__("shutil").rmtree(p / "0"), "required array 'image' is missing"),
        (lambda p: (p / "0" / "zarr.json").write_text("{bad"), "malformed store"),
        (lambda p: rewrite_attrs(p, slice_levels=None), "malformed store"),
        (lambda p: _add_wrong_labels(p), r"'labels' must be uint8 \(3, 5, 12, 16\)"),
    ],
)
def test_validation_errors_name_the_store(tmp_path, damage, message):
    path = tmp_path / "s.zarr"
    make_study(path)
    damage(path)
    with pytest.raises(StoreError, match=message) as info:
        Study.open(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def _add_wrong_labels(path):
    zarr.create_array(path / "labels", shape=(3, 5, 12, 15), dtype="uint8", zarr_format=3)


def _drop_attr(path, key):
    meta = json.loads((path / "zarr.json").read_text())
    del meta["attributes"]["perfroi"][key]
    (path / "zarr.json").write_text(json.dumps(meta))


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="not a study store"):
        Study.open(tmp_path)
    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    with pytest.raises(StoreError, match="not a perfroi study store"):
        Study.open(tmp_path / "plain.zarr")


def test_image_is_lazy_one_chunk_per_frame(tmp_path, monkeypatch):
    path = tmp_path / "s.zarr"
    make_study(path)
    chunk_reads = []
    original_read = zarr.storage._local._get

    def counting_read(file_path, *args, **kwargs):
        if "/0/c/" in file_path.as_posix():
            chunk_reads.append(file_path.relative_to(path).as_posix())
        return original_read(file_path, *args, **kwargs)

    monkeypatch.setattr(zarr.storage._local, "_get", counting_read)
    study = Study.open(path)
    image = study.image
    frame = image[1, 2]
    assert chunk_reads == []
    frame.compute()
    assert chunk_reads == ["0/c/2/1/0/0"]  # format 2 keeps the image time-first on disk


def test_image_is_never_modified(tmp_path):
    path = tmp_path / "s.zarr"
    _, image = make_study(path)
    study = Study.open(path, writable=True)
    with pytest.raises(StoreError, match="never modified"):
        study.write("image", np.zeros_like(image))
    with pytest.raises(Exception):
        study.zarr_array("image")[0, 0] = 0
    np.testing.assert_array_equal(Study.open(path).image.compute(), image)


def test_read_only_study_refuses_writes(tmp_path):
    path = tmp_path / "s.zarr"
    make_study(path)
    with pytest.raises(StoreError, match="read-only"):
        Study.open(path).write("roi_state", np.zeros((3, 5), np.uint8))


def test_derived_arrays_checked_and_replaced(tmp_path):
    path = tmp_path / "s.zarr"
    make_study(path)
    study = Study.open(path, writable=True)
    with pytest.raises(StoreError, match="'labels' must be uint8"):
        study.write("labels", np.zeros((3, 5, 12, 16), np.int32))
    with pytest.raises(StoreError, match=r"'roi' must be float32 \(3, 5, 3\)"):
        study.write("roi", np.zeros((3, 4, 3), np.float32))
    roi = np.full((3, 5, 3), np.nan, np.float32)
    roi[1, 2] = (5.5, 6.5, 3.0)
    study.write("roi", roi)
    np.testing.assert_array_equal(study.read("roi"), roi)
    study.write("roi", np.zeros_like(roi))
    np.testing.assert_array_equal(study.read("roi"), 0)
    study.write("truth/labels", np.ones((3, 5, 12, 16), np.uint8))
    assert study.arrays() == ["image", "roi", "truth/labels"]
    # no staging or retired copies are left beside the live arrays
    assert sorted(p.name for p in path.iterdir()) == ["0", "roi", "truth", "zarr.json"]


def test_readers_never_see_a_partial_array(tmp_path):
    """A reader polling while a writer replaces the array sees old or new, never a mix."""
    path = tmp_path / "s.zarr"
    make_study(path, n_frames=20, shape=(64, 64))
    study = Study.open(path, writable=True)
    shape = study.shape
    study.write("labels", np.zeros(shape, np.uint8))
    seen = set()
    failures = []
    done = threading.Event()

    def reader():
        while not done.is_set():
            try:
                values = np.unique(Study.open(path).read("labels"))
            except Exception as exc:  # noqa: BLE001 - any failure is a finding
                failures.append(repr(exc))
                continue
            seen.add(tuple(values.tolist()))

    thread = threading.Thread(target=reader)
    thread.start()
    for value in range(1, 15):
        study.write("labels", np.full(shape, value, np.uint8))
    done.set()
    thread.join()
    assert failures == []
    assert all(len(values) == 1 for values in seen), seen
    assert len(seen) > 1


def test_attrs_update_and_steps(tmp_path):
    path = tmp_path / "s.zarr"
    make_study(path)
    study = Study.open(path, writable=True)
    study.update_attrs(hematocrit=0.42)
    study.record_step("motion", {"reference": "auto"}, "0.1.0")
    attrs = Study.open(path).attrs
    assert attrs["hematocrit"] == 0.42
    assert attrs["steps"]["motion"]["parameters"] == {"reference": "auto"}
    assert attrs["steps"]["motion"]["version"] == "0.1.0"
    # zarr itself still reads the group and its attributes
    assert zarr.open_group(path, mode="r").attrs["perfroi"]["hematocrit"] == 0.42
