"""LGE studies in the study store, and their DICOM import beside the embedded sample study."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import classic_dataset, write_datasets, zip_shuffled
from pydicom.uid import generate_uid

from napari_perfroi.demo import SAMPLE_DEFECT, SAMPLE_SEED
from napari_perfroi.dicom import import_dicom, slice_normal
from napari_perfroi.errors import InputError
from napari_perfroi.lge.dicom_import import import_lge_dicom
from napari_perfroi.lge.phantom import generate_lge_phantom, write_lge_dicom
from napari_perfroi.lge.store import LgeStudy, has_lge
from napari_perfroi.study import StoreError, Study

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
MAGNITUDE = ("ORIGINAL", "PRIMARY", "M", "ND")


@pytest.fixture(scope="module")
def perfusion_template(tmp_path_factory) -> Path:
    """The embedded sample imported once (do not modify: copy it)."""
    path = tmp_path_factory.mktemp("perfusion") / "study.zarr"
    import_dicom(SAMPLE, path, warn=lambda _: None)
    return path


@pytest.fixture
def store(perfusion_template, tmp_path) -> Path:
    path = tmp_path / "study.zarr"
    shutil.copytree(perfusion_template, path)
    return path


def lge_series(
    attrs: dict,
    placements: list[tuple[int, float]],
    *,
    phases: int = 1,
    tilt_deg: float = 4.0,
    shape: tuple[int, int] = (24, 20),
    spacing: tuple[float, float] = (1.5, 1.25),
    study_uid: str | None = None,
    frame_uid: str | None = None,
    description: str = "LGE",
    image_type: tuple[str, ...] = MAGNITUDE,
    series_number: int = 9,
    intercept: float = 0.0,
    seed: int = 0,
):
    """Datasets of an LGE series placed in the perfusion study of store ``attrs``, and its
    stored pixels (S, phases, Y, X) in the order of ``placements``.

    Slice k is centred at the centre of perfusion slice ``placements[k][0]`` moved
    ``placements[k][1]`` mm apex-ward along the perfusion normal; its planes are tilted
    ``tilt_deg`` about the perfusion rows.
    """
    rng = np.random.default_rng(seed)
    instances = attrs["source_instances"]
    orientation = np.asarray(attrs["image_orientation_patient"])
    row, col = orientation[:3], orientation[3:]
    normal = slice_normal(orientation)
    locations = attrs["slice_positions_mm"]
    apex_ward = normal * np.sign(locations[-1] - locations[0])
    n_rows, n_cols = 160, 144  # the sample's matrix
    p_row, p_col = attrs["pixel_spacing_mm"]
    centres = (np.asarray(attrs["image_position_patient"])
               + (n_cols - 1) / 2 * p_col * row + (n_rows - 1) / 2 * p_row * col)
    angle = np.radians(tilt_deg)
    lge_col = np.cos(angle) * col + np.sin(angle) * normal
    lge_orientation = np.round(np.concatenate([row, lge_col]), 6)
    rows, cols = shape
    series_uid = generate_uid()
    pixels = rng.integers(0, 4000, (len(placements), phases, rows, cols)).astype(np.uint16)
    datasets = []
    for k, (j, offset_mm) in enumerate(placements):
        centre = centres[j] + offset_mm * apex_ward
        position = (centre - (cols - 1) / 2 * spacing[1] * lge_orientation[:3]
                    - (rows - 1) / 2 * spacing[0] * lge_orientation[3:])
        for phase in range(phases):
            ds = classic_dataset(
                pixels[k, phase], study_uid=study_uid or instances["study_instance_uid"],
                series_uid=series_uid, instance=k * phases + phase + 1,
                position=np.round(position, 4).tolist(), orientation=lge_orientation.tolist(),
                acquisition_time=f"11{k:02d}00.000000", trigger_ms=400.0 + 40.0 * phase,
                spacing=spacing, thickness=8.0,
            )
            ds.FrameOfReferenceUID = frame_uid or instances["frame_of_reference_uid"]
            ds.SeriesNumber = series_number
            ds.SeriesDescription = description
            ds.ImageType = list(image_type)
            ds.InversionTime = "300"
            ds.RescaleSlope, ds.RescaleIntercept = "1", f"{intercept:g}"
            datasets.append(ds)
    return datasets, pixels


def write_series(folder: Path, *series) -> Path:
    return write_datasets(folder, [ds for datasets in series for ds in datasets])


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file and folder under ``folder`` with its bytes."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else b"")
            for p in sorted(folder.rglob("*"))}


def quiet(_message: str) -> None:
    pass


def test_round_trip(store, tmp_path):
    attrs = Study.open(store).attrs
    arrays_before = Study.open(store).arrays()
    # at perfusion slice 0; between 0 and 1 (7.6 mm from 0, 5.0 mm from 1: neither within
    # half the 9.32 mm thickness); near 1; near 2; beyond the apical slice
    placements = [(0, 0.0), (0, 7.6), (1, -1.0), (2, 2.0), (2, 7.0)]
    datasets, pixels = lge_series(attrs, placements)
    order = np.random.default_rng(1).permutation(len(datasets))
    src = write_datasets(tmp_path / "lge", [datasets[i] for i in order])
    done = []

    lge = import_lge_dicom(src, store, progress=lambda d, n: done.append((d, n)), warn=quiet)

    assert done == [(k, 5) for k in range(1, 6)]
    assert has_lge(store)
    lge = LgeStudy.open(store)
    image = lge.read("image")
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image, pixels[:, 0])  # base -> apex, as placed
    got = lge.attrs
    assert got["lge_kind"] == "magnitude"
    assert got["perfusion_slice"] == [0, None, 1, 2, None]
    assert got["slice_levels"] == ["basal", "mid", "mid", "apical", "apical"]
    assert got["pixel_spacing_mm"] == [1.5, 1.25]
    assert got["slice_thickness_mm"] == 8.0
    assert got["inversion_time_ms"] == pytest.approx(300.0)
    assert got["slice_has_scar"] == [None] * 5
    assert got["steps"] == {}
    written = [[float(v) for v in datasets[k].ImagePositionPatient] for k in range(5)]
    np.testing.assert_allclose(got["image_position_patient"], written, atol=1e-9)
    np.testing.assert_allclose(got["image_orientation_patient"],
                               [float(v) for v in datasets[0].ImageOrientationPatient])
    normal = slice_normal(got["image_orientation_patient"])
    np.testing.assert_allclose(got["slice_positions_mm"], np.asarray(written) @ normal, atol=1e-6)
    # the planes are 4 degrees off the perfusion slices
    tilt = np.degrees(np.arccos(normal @ slice_normal(attrs["image_orientation_patient"])))
    assert tilt == pytest.approx(4.0, abs=1e-3)
    source = got["source"]
    assert source["n_files"] == 5
    assert source["study_instance_uid"] == attrs["source_instances"]["study_instance_uid"]
    assert source["sop_instance_uid"] == [str(datasets[k].SOPInstanceUID) for k in range(5)]
    assert source["series_description"] == ["LGE"]
    # the perfusion study is untouched and still valid, and does not list the LGE arrays
    assert Study.open(store).arrays() == arrays_before
    assert Study.open(store).attrs == attrs


def test_zip_gives_the_same_study(store, tmp_path):
    attrs = Study.open(store).attrs
    datasets, pixels = lge_series(attrs, [(0, 0.0), (1, 0.0), (2, 0.0)], seed=3)
    archive = zip_shuffled(write_series(tmp_path / "lge", datasets), tmp_path / "lge.zip")

    lge = import_lge_dicom(archive, store, warn=quiet)

    np.testing.assert_array_equal(lge.read("image"), pixels[:, 0])
    assert lge.attrs["perfusion_slice"] == [0, 1, 2]
    assert lge.attrs["slice_levels"] == ["basal", "mid", "apical"]


def test_psir_preferred_over_magnitude_of_the_same_slices(store, tmp_path):
    attrs = Study.open(store).attrs
    placements = [(0, 0.0), (1, 0.0), (2, 0.0)]
    magnitude, _ = lge_series(attrs, placements, description="LGE PSIR MAG", seed=4)
    psir, stored = lge_series(attrs, placements, description="LGE", series_number=10,
                              image_type=("DERIVED", "PRIMARY", "PSIR"), intercept=-2048, seed=5)
    warnings = []

    lge = import_lge_dicom(write_series(tmp_path / "lge", magnitude, psir), store,
                           warn=warnings.append)

    image = lge.read("image")
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, stored[:, 0].astype(np.float32) - 2048.0)
    assert image.min() < 0 < image.max()
    assert lge.attrs["lge_kind"] == "psir"
    assert lge.attrs["source"]["left_out_series"] == ["series 9 'LGE PSIR MAG'"]
    assert lge.attrs["source"]["n_files"] == 3
    assert len(warnings) == 1 and "PSIR series 10 'LGE'" in warnings[0]


def test_phantom_of_the_sample_patient_psir_and_magnitude(store, tmp_path):
    """The LGE phantom of the sample's seed is the sample's patient: both of its series
    written, the PSIR one is imported, at the three perfusion slices."""
    psir = generate_lge_phantom(SAMPLE_SEED, SAMPLE_DEFECT, lge_kind="psir")
    write_lge_dicom(psir, tmp_path / "lge" / "psir")
    write_lge_dicom(generate_lge_phantom(SAMPLE_SEED, SAMPLE_DEFECT, lge_kind="magnitude"),
                    tmp_path / "lge" / "magnitude")
    warnings = []

    lge = import_lge_dicom(tmp_path / "lge", store, warn=warnings.append)

    np.testing.assert_array_equal(lge.read("image"),
                                  psir.image + np.float32(psir.attrs["rescale_intercept"]))
    attrs = lge.attrs
    assert attrs["lge_kind"] == "psir"
    assert attrs["perfusion_slice"] == [0, 1, 2]
    assert attrs["slice_levels"] == ["basal", "mid", "apical"]
    assert attrs["inversion_time_ms"] == pytest.approx(psir.attrs["inversion_time_ms"])
    np.testing.assert_allclose(attrs["slice_positions_mm"], psir.attrs["slice_positions_mm"],
                               atol=1e-6)
    assert attrs["source"]["left_out_series"] == ["series 20 'LGE MAG SAX'"]
    assert len(warnings) == 1


def test_phantom_of_another_patient_is_refused(store, tmp_path):
    src = write_lge_dicom(generate_lge_phantom(SAMPLE_SEED + 1), tmp_path / "lge")
    before = snapshot(store)

    with pytest.raises(InputError, match="another patient or study"):
        import_lge_dicom(src, store, warn=quiet)

    assert snapshot(store) == before


def test_signed_values_make_a_psir_stack(store, tmp_path):
    attrs = Study.open(store).attrs
    datasets, stored = lge_series(attrs, [(1, 0.0)], intercept=-2048)

    lge = import_lge_dicom(write_series(tmp_path / "lge", datasets), store, warn=quiet)

    assert lge.attrs["lge_kind"] == "psir"
    np.testing.assert_array_equal(lge.read("image"), stored[:, 0] - 2048.0)
    assert lge.attrs["perfusion_slice"] == [1]


def other_study(attrs):
    return lge_series(attrs, [(0, 0.0), (1, 0.0)], study_uid=generate_uid(),
                      frame_uid=generate_uid())


def other_orientation(attrs):
    return lge_series(attrs, [(0, 0.0), (1, 0.0)], tilt_deg=30.0)


def between_slices(attrs):
    return lge_series(attrs, [(0, 6.32), (1, 6.32)])  # 6.32 mm from two slices 9.32 thick


def cine(attrs):
    return lge_series(attrs, [(0, 0.0), (1, 0.0), (2, 0.0)], phases=4)


@pytest.mark.parametrize("make, message", [
    (other_study, "another patient or study"),
    (other_orientation, r"another orientation: its slices are 30\.0 degrees"),
    (between_slices, r"no LGE slice lies within half a slice thickness \(4\.66 mm\)"),
    (cine, "not a single-phase LGE stack: 4 images at slice position"),
])
def test_refusals_write_nothing(store, tmp_path, make, message):
    datasets, _ = make(Study.open(store).attrs)
    src = write_series(tmp_path / "lge", datasets)
    before = snapshot(store)

    with pytest.raises(InputError, match=message) as refused:
        import_lge_dicom(src, store, warn=quiet)

    text = str(refused.value)
    assert "\n" not in text and text.startswith(str(src))
    assert snapshot(store) == before  # no lge group, no staging folder: byte for byte
    assert not has_lge(store)


@pytest.mark.parametrize("same", ["study", "frame of reference"])
def test_one_shared_uid_is_the_same_patient(store, tmp_path, same):
    attrs = Study.open(store).attrs
    new = {"study_uid": generate_uid(), "frame_uid": generate_uid()}
    new.pop("study_uid" if same == "study" else "frame_uid")
    datasets, _ = lge_series(attrs, [(1, 0.0)], **new)

    lge = import_lge_dicom(write_series(tmp_path / "lge", datasets), store, warn=quiet)

    assert lge.attrs["perfusion_slice"] == [1]


def test_overwrite_refused_then_allowed(store, tmp_path):
    attrs = Study.open(store).attrs
    first, _ = lge_series(attrs, [(0, 0.0), (1, 0.0)], seed=6)
    second, pixels = lge_series(attrs, [(1, 0.0), (2, 0.0)], seed=7)
    import_lge_dicom(write_series(tmp_path / "first", first), store, warn=quiet)
    src = write_series(tmp_path / "second", second)
    before = snapshot(store)

    with pytest.raises(StoreError, match="already has an LGE study"):
        import_lge_dicom(src, store, warn=quiet)
    assert snapshot(store) == before

    lge = import_lge_dicom(src, store, overwrite=True, warn=quiet)
    np.testing.assert_array_equal(lge.read("image"), pixels[:, 0])
    assert lge.attrs["perfusion_slice"] == [1, 2]
    assert not any(p.name.startswith(".") for p in store.iterdir())  # no staging left


# ---------------------------------------------------------------- the store itself
def make_lge(store: Path, n_slices=3, shape=(10, 12)) -> tuple[LgeStudy, np.ndarray]:
    image = np.random.default_rng(0).normal(0, 500, (n_slices, *shape)).astype(np.float32)
    attrs = {
        "pixel_spacing_mm": [1.4, 1.4],
        "slice_thickness_mm": 8.0,
        "slice_positions_mm": [10.0 * s for s in range(n_slices)],
        "image_orientation_patient": [1, 0, 0, 0, 1, 0],
        "image_position_patient": [[0, 0, 10.0 * s] for s in range(n_slices)],
        "inversion_time_ms": None,
        "lge_kind": "psir",
        "slice_levels": ["basal", "mid", "apical"][:n_slices],
        "perfusion_slice": [0, None, 2][:n_slices],
        "source": {"importer": "test"},
    }
    return LgeStudy.create(store, image, attrs), image


def test_store_arrays_checked_written_and_removed(store):
    lge, image = make_lge(store)
    shape = lge.shape
    assert shape == (3, 10, 12)
    with pytest.raises(StoreError, match="never modified"):
        lge.write("image", np.zeros_like(image))
    with pytest.raises(StoreError, match=r"'labels' must be uint8 \(3, 10, 12\)"):
        lge.write("labels", np.zeros((3, 10, 12), np.int32))
    with pytest.raises(StoreError, match=r"'scar_edited' must be uint8 \(3,\)"):
        lge.write("scar_edited", np.zeros((3, 1), np.uint8))
    with pytest.raises(StoreError, match="'scar' holds the value 3; at most 2"):
        lge.write("scar", np.full(shape, 3, np.uint8))
    scar = np.zeros(shape, np.uint8)
    scar[1, 4:6, 5:8] = 1
    scar[1, 5, 6] = 2  # microvascular obstruction inside the scar
    probability = np.linspace(0, 1, scar.size, dtype=np.float32).reshape(shape)
    lge.write("scar", scar)
    lge.write("scar_probability", probability)
    lge.write("labels_edited", np.array([0, 1, 0], np.uint8))
    np.testing.assert_array_equal(lge.read("scar"), scar)
    np.testing.assert_array_equal(lge.read("scar_probability"), probability)
    lge.write("scar", np.zeros(shape, np.uint8))  # replaced whole
    np.testing.assert_array_equal(lge.read("scar"), 0)
    assert lge.arrays() == ["image", "labels_edited", "scar", "scar_probability"]
    lge.remove("scar_probability")
    assert not lge.has("scar_probability") and lge.has("scar")
    np.testing.assert_array_equal(LgeStudy.open(store).read("image"), image)
    assert sorted(p.name for p in lge.path.iterdir()) == ["image", "labels_edited", "scar",
                                                          "zarr.json"]
    with pytest.raises(StoreError, match="opened read-only"):
        LgeStudy.open(store).write("aha", np.zeros(shape, np.uint8))
    Study.open(store)  # the perfusion study still validates with the LGE arrays beside it


def test_store_attrs_weak_labels_and_steps(store):
    lge, _ = make_lge(store)
    lge.update_attrs(slice_has_scar=[True, None, False])
    lge.record_step("scar", {"method": "fwhm"}, "0.1.0")
    attrs = LgeStudy.open(store).attrs
    assert attrs["slice_has_scar"] == [True, None, False]
    assert attrs["steps"]["scar"]["parameters"] == {"method": "fwhm"}
    for bad in ([True, False], [1, 0, None], ["yes", None, None]):
        with pytest.raises(StoreError, match="slice_has_scar must be 3 of true, false or None"):
            lge.update_attrs(slice_has_scar=bad)
    with pytest.raises(StoreError, match=r"perfusion_slice must give .* \(0-2\) or None"):
        lge.update_attrs(perfusion_slice=[0, 3, None])
    assert LgeStudy.open(store).attrs["slice_has_scar"] == [True, None, False]


def test_store_without_lge_and_create_refusals(store, tmp_path):
    with pytest.raises(StoreError, match=r"study\.zarr: has no LGE study$"):
        LgeStudy.open(store)
    with pytest.raises(StoreError, match="not a study store"):
        LgeStudy.open(tmp_path / "nowhere.zarr")
    with pytest.raises(StoreError, match="opened read-only"):
        LgeStudy.create(Study.open(store), np.zeros((1, 4, 4), np.uint16), {})
    with pytest.raises(StoreError, match="LGE study lacks attribute"):
        LgeStudy.create(store, np.zeros((1, 4, 4), np.uint16), {"lge_kind": "psir"})
    assert not any(p.name == "lge" or p.name.startswith(".") for p in store.iterdir())


def test_killed_write_leaves_the_old_array_and_debris_that_blocks_nothing(store):
    lge, _ = make_lge(store)
    old = np.zeros(lge.shape, np.uint8)
    old[0, 2:4, 2:4] = 1
    lge.write("scar", old)
    # A process killed while writing: the new array is complete in its staging folder, the
    # swap never happens (SIGKILL: no clean-up runs).
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from napari_perfroi.lge import store as lge_store
        def killed(*_):
            os.kill(os.getpid(), signal.SIGKILL)
        lge_store.replace_dir = killed
        lge = lge_store.LgeStudy.open({str(store)!r}, writable=True)
        lge.write("scar", np.ones(lge.shape, np.uint8))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == -9, result.stderr.decode()
    debris = [p.name for p in lge.path.iterdir() if p.name.startswith(".staging-")]
    assert len(debris) == 1
    np.testing.assert_array_equal(LgeStudy.open(store).read("scar"), old)
    assert LgeStudy.open(store).arrays() == ["image", "scar"]
    new = np.full(lge.shape, 2, np.uint8)
    lge.write("scar", new)
    np.testing.assert_array_equal(LgeStudy.open(store).read("scar"), new)
    Study.open(store)
