"""LGE results as DICOM: a phantom's LGE (its series written beside the results) and an
LGE imported from DICOM beside the embedded sample (its original instances referenced),
read back with highdicom and pydicom, checked with dciodvfy."""

from __future__ import annotations

import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_validator import validator_errors

from napari_perfroi.cli import main
from napari_perfroi.demo import REPOSITORY_SAMPLE, SAMPLE_DEFECT, SAMPLE_SEED
from napari_perfroi.dicom import import_dicom
from napari_perfroi.dicom_export import PATIENT_NAME
from napari_perfroi.dicom_results import export_results
from napari_perfroi.errors import InputError
from napari_perfroi.lge.dicom_export import stored_values
from napari_perfroi.lge.dicom_import import import_lge_dicom
from napari_perfroi.lge.phantom import generate_lge_phantom, write_lge_dicom, write_lge_phantom
from napari_perfroi.lge.pipeline import run_lge_steps
from napari_perfroi.lge.store import MVO, LgeStudy
from napari_perfroi.phantom import write_phantom
from napari_perfroi.study import MYOCARDIUM, Study

SEED = 5
SCAR_STEPS = ["lge-aha", "lge-scar"]
SCAR_SEGMENTS = {"LV myocardium": 1, "Myocardial scar": 2, "Microvascular obstruction": 3}


def source_uids(seg) -> list[str]:
    """The SOP instance UID each frame of a segmentation was derived from."""
    return [frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            for frame in seg.PerFrameFunctionalGroupsSequence]


def names(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.dcm"))


def copy_of(path: Path, to: Path) -> Study:
    shutil.copytree(path, to)
    return Study.open(to, writable=True)


# ---------------------------------------------------------------- a phantom's LGE
@pytest.fixture(scope="module")
def perfusion_only(tmp_path_factory) -> Path:
    """A phantom with its true labels as labels, no LGE (do not modify: copy it)."""
    path = tmp_path_factory.mktemp("perfusion") / "p.zarr"
    study = write_phantom(path, seed=SEED, defect="lad", n_dynamics=8)
    study.write("labels", study.read("truth/labels"))
    return path


@pytest.fixture(scope="module")
def phantom_store(perfusion_only, tmp_path_factory) -> Study:
    """With a PSIR LGE holding MVO: true LGE labels, scar by n-SD, one slice's scar then
    replaced by hand with the true scar (MVO included)."""
    study = copy_of(perfusion_only, tmp_path_factory.mktemp("lge") / "p.zarr")
    lge = write_lge_phantom(study, "lad", lge_kind="psir", scar_pattern="transmural",
                            transmurality=0.9, has_mvo=True)
    lge.write("labels", lge.read("truth/labels"))
    run_lge_steps(study, SCAR_STEPS, method="nsd")
    truth = lge.read("truth/scar")
    edited = int(np.argmax((truth == MVO).sum(axis=(1, 2))))
    scar = lge.read("scar")
    scar[edited] = truth[edited]
    lge.write("scar", scar)
    lge.write("scar_edited", (np.arange(lge.shape[0]) == edited).astype(np.uint8))
    return study


@pytest.fixture(scope="module")
def phantom_export(phantom_store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "dicom"
    assert main(["export-dicom", str(phantom_store.path), "--out", str(out)]) == 0
    return out


def lge_images(out: Path) -> dict[str, pydicom.Dataset]:
    return {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, (out / "lge/images").iterdir())}


def test_a_phantom_lge_is_exported_with_its_series_beside_the_perfusion_results(
        phantom_store, phantom_export):
    lge = LgeStudy.open(phantom_store)
    written = names(phantom_export)
    assert [n for n in written if n.startswith("lge/") and "/images/" not in n] == [
        "lge/aha.dcm", "lge/scar.dcm"]
    assert sum(n.startswith("lge/images/") for n in written) == lge.shape[0]
    assert sum(n.startswith("labels/") for n in written) == phantom_store.shape[1]
    # the LGE series is in the study and frame of reference of the perfusion series
    images = lge_images(phantom_export)
    perfusion = pydicom.dcmread(next((phantom_export / "images").iterdir()))
    assert {(ds.StudyInstanceUID, ds.FrameOfReferenceUID, ds.SeriesInstanceUID, ds.SeriesNumber)
            for ds in images.values()} == {(perfusion.StudyInstanceUID,
                                            perfusion.FrameOfReferenceUID,
                                            next(iter(images.values())).SeriesInstanceUID, 20)}
    by_slice = sorted(images.values(), key=lambda ds: ds.InstanceNumber)
    stack = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                      for ds in by_slice])
    np.testing.assert_array_equal(stack, lge.read("image"))  # PSIR: signed values, exactly
    np.testing.assert_allclose([[float(v) for v in ds.ImagePositionPatient] for ds in by_slice],
                               lge.attrs["image_position_patient"], atol=1e-6)
    assert {str(ds.PatientName) for ds in images.values()} == {str(perfusion.PatientName)}


def test_the_scar_segmentation_is_the_stores_scar_slice_by_slice(phantom_store, phantom_export):
    lge = LgeStudy.open(phantom_store)
    seg = hd.seg.segread(phantom_export / "lge/scar.dcm")
    images = lge_images(phantom_export)
    uids = [ds.SOPInstanceUID for ds in sorted(images.values(), key=lambda ds: ds.InstanceNumber)]
    assert set(source_uids(seg)) == set(uids)  # every frame references a written LGE image
    assert seg.StudyInstanceUID == images[uids[0]].StudyInstanceUID
    segments = {s.SegmentLabel: s for s in seg.SegmentSequence}
    assert {label: s.SegmentNumber for label, s in segments.items()} == SCAR_SEGMENTS
    codes = {label: (s.SegmentedPropertyCategoryCodeSequence[0].CodeValue,
                     s.SegmentedPropertyTypeCodeSequence[0].CodeValue, s.SegmentAlgorithmType)
             for label, s in segments.items()}
    assert codes == {"LV myocardium": ("91723000", "49848007", "MANUAL"),  # labels drawn
                     "Myocardial scar": ("85756007", "12402003", "SEMIAUTOMATIC"),
                     "Microvascular obstruction": ("49755003", "6574001", "SEMIAUTOMATIC")}
    algorithm = segments["Myocardial scar"].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "napari-perfroi LGE scar (n-SD over remote myocardium)"
    assert "n_sd=5.0" in algorithm.AlgorithmParameters
    scar, labels = lge.read("scar"), lge.read("labels")
    assert (scar == MVO).any() and (scar == 1).any()
    pixels = seg.get_pixels_by_source_instance(uids)  # (S, Y, X, segment)
    for s in range(lge.shape[0]):
        np.testing.assert_array_equal(pixels[s, ..., 0], labels[s] == MYOCARDIUM)
        np.testing.assert_array_equal(pixels[s, ..., 1], scar[s] > 0)
        np.testing.assert_array_equal(pixels[s, ..., 2], scar[s] == MVO)


def test_the_lge_aha_segmentation_is_the_stores_sectors(phantom_store, phantom_export):
    seg = hd.seg.segread(phantom_export / "lge/aha.dcm")
    uids = [ds.SOPInstanceUID for ds in sorted(lge_images(phantom_export).values(),
                                               key=lambda ds: ds.InstanceNumber)]
    assert len(seg.SegmentSequence) == 16 and seg.ContentLabel == "LGE_AHA"
    pixels = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    np.testing.assert_array_equal(pixels, LgeStudy.open(phantom_store).read("aha"))


def test_the_same_lge_gets_the_same_series_again(phantom_store, phantom_export, tmp_path):
    again = export_results(phantom_store, tmp_path / "again")
    assert sorted(p.name for p in again if "lge/images" in p.as_posix()) == sorted(
        p.name for p in (phantom_export / "lge/images").iterdir())


@pytest.mark.parametrize("lge", ["none", "not analysed"])
def test_a_store_without_lge_results_exports_as_before(perfusion_only, phantom_export,
                                                       tmp_path, lge):
    study = copy_of(perfusion_only, tmp_path / "p.zarr")
    if lge == "not analysed":
        write_lge_phantom(study, "lad")  # the LGE image and its truth only
    out = tmp_path / "dicom"
    export_results(study, out)
    assert not (out / "lge").exists()
    assert names(out) == [n for n in names(phantom_export) if not n.startswith("lge/")]


# ---------------------------------------------------------------- an LGE imported from DICOM
@pytest.fixture(scope="module")
def sample_lge():
    """The LGE phantom of the sample's patient (PSIR)."""
    return generate_lge_phantom(SAMPLE_SEED, SAMPLE_DEFECT, lge_kind="psir")


@pytest.fixture(scope="module")
def lge_folder(sample_lge, tmp_path_factory) -> Path:
    """Its DICOM files."""
    return write_lge_dicom(sample_lge, tmp_path_factory.mktemp("lge_dicom") / "lge")


@pytest.fixture(scope="module")
def sample_store(sample_lge, lge_folder, tmp_path_factory) -> Study:
    """The embedded sample imported, its LGE imported beside it, labelled with the
    phantom's truth, with sectors and scar by n-SD."""
    path = tmp_path_factory.mktemp("sample") / "s.zarr"
    study = import_dicom(REPOSITORY_SAMPLE, path, warn=lambda _: None)
    lge = import_lge_dicom(lge_folder, path, warn=lambda _: None)
    lge.write("labels", sample_lge.labels)
    run_lge_steps(study, SCAR_STEPS, method="nsd")
    return study


def original_uids(folder: Path) -> list[str]:
    """SOP instance UIDs of the LGE files, base to apex (the order they were written)."""
    return [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
            for p in sorted(folder.iterdir())]


@pytest.mark.parametrize("options, patient", [
    (["--lge-source", "LGE"], PATIENT_NAME),  # from the LGE files
    (["--source", str(REPOSITORY_SAMPLE)], PATIENT_NAME),  # from the perfusion: one study
    ([], ""),  # none given: left empty
])
def test_an_imported_lge_references_its_original_instances(
        sample_store, lge_folder, tmp_path, options, patient):
    out = tmp_path / "dicom"
    options = [str(lge_folder) if option == "LGE" else option for option in options]
    assert main(["export-dicom", str(sample_store.path), "--out", str(out), *options]) == 0
    assert names(out) == ["lge/aha.dcm", "lge/scar.dcm"]  # no images: they are the originals
    uids = original_uids(lge_folder)
    header = pydicom.dcmread(next(lge_folder.iterdir()), stop_before_pixels=True)
    lge = LgeStudy.open(sample_store)
    for name in ("scar.dcm", "aha.dcm"):
        seg = hd.seg.segread(out / "lge" / name)
        assert set(source_uids(seg)) == set(uids)
        assert (seg.StudyInstanceUID, seg.FrameOfReferenceUID,
                seg.ReferencedSeriesSequence[0].SeriesInstanceUID) == (
            header.StudyInstanceUID, header.FrameOfReferenceUID, header.SeriesInstanceUID)
        assert str(seg.PatientName) == patient
    seg = hd.seg.segread(out / "lge/scar.dcm")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["LV myocardium", "Myocardial scar"]
    pixels = seg.get_pixels_by_source_instance(uids)
    np.testing.assert_array_equal(pixels[..., 1], lge.read("scar") > 0)
    assert pixels[..., 1].any()


def test_lge_source_of_other_images_or_without_an_imported_lge_is_refused(
        sample_store, phantom_store, perfusion_only, lge_folder, tmp_path, capsys):
    out = tmp_path / "dicom"
    with pytest.raises(InputError, match=f"{REPOSITORY_SAMPLE}: holds series .*, not the LGE "
                                         "images of"):
        export_results(sample_store, out, lge_source=REPOSITORY_SAMPLE)
    with pytest.raises(InputError, match="lge: not imported from DICOM, so it has no original"):
        export_results(phantom_store, out, lge_source=lge_folder)
    assert main(["export-dicom", str(perfusion_only), "--out", str(out),
                 "--lge-source", str(lge_folder)]) == 2
    assert capsys.readouterr().err.strip() == (  # refused before any dynamic is exported
        f"perfroi export-dicom: error: {perfusion_only}: has no LGE study to take {lge_folder} for")
    assert not out.exists()


def test_every_lge_output_passes_the_dicom_validator(phantom_export, sample_store, tmp_path):
    imported = tmp_path / "imported"
    export_results(sample_store, imported)
    files = sorted([*(phantom_export / "lge").rglob("*.dcm"), *imported.rglob("*.dcm")])
    problems = validator_errors(files)
    assert len(files) == 7 and problems == {}


@pytest.mark.parametrize("image, exact", [
    (np.array([[[-4096.0, 0.0, 61439.0]]], np.float32), True),  # PSIR: signed whole numbers
    (np.array([[[0, 7, 65535]]], np.uint16), True),
    (np.array([[[-1.5, 0.25, 2.0]]], np.float32), False),
])
def test_stored_values_give_the_image_back(image, exact):
    stored, slope, intercept = stored_values(image)
    assert stored.dtype == np.uint16
    back = stored * slope + intercept
    tolerance = 0.0 if exact else (image.max() - image.min()) / 65535
    np.testing.assert_allclose(back, image, rtol=0, atol=tolerance)
