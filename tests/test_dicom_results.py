"""DICOM results: segmentations, parametric maps and the PDF report of a study imported
from the embedded sample, read back with highdicom and pydicom, checked with dciodvfy;
segmentations imported back into the labels."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_validator import validator_errors

from napari_perfroi.aha import sector_labels
from napari_perfroi.batch import BatchJob, process_study
from napari_perfroi.cli import main
from napari_perfroi.demo import REPOSITORY_SAMPLE
from napari_perfroi.dicom import import_dicom
from napari_perfroi.dicom_export import PATIENT_NAME, export_study
from napari_perfroi.dicom_results import NO_VALUE, export_results
from napari_perfroi.dicom_seg_import import import_segmentation
from napari_perfroi.errors import InputError
from napari_perfroi.label_edits import EDITED_LABELS
from napari_perfroi.study import LV_BLOOD, MYOCARDIUM, RV_BLOOD, Study

EDITED = (1, 7)  # (slice, frame) marked edited in the sample store
LEVELS = ("basal", "mid", "apical")


def synthetic_labels(shape) -> np.ndarray:
    """LV blood pool, myocardial ring and RV per frame, moving a little with time."""
    n_slices, n_frames, n_rows, n_cols = shape
    rows, cols = np.mgrid[:n_rows, :n_cols]
    labels = np.zeros(shape, dtype=np.uint8)
    for s, t in np.ndindex(n_slices, n_frames):
        r0, c0 = 80 + t % 4, 70 + s - t % 3
        radius = np.hypot(rows - r0, cols - c0)
        labels[s, t][radius < 16 - 2 * s] = MYOCARDIUM
        labels[s, t][radius < 10 - 2 * s] = LV_BLOOD
        labels[s, t][np.hypot(rows - r0, cols - c0 + 26) < 9] = RV_BLOOD
    return labels


def synthetic_report() -> dict:
    times = [0.0, 1.0, 2.0, 3.0, 4.0]
    aif = [0.0, 2.0, 6.0, 3.0, 1.5]
    curves = [{"slice": (segment - 1) // 6 if segment < 13 else 2, "times_s": times,
               "tissue": [0.02 * segment * a for a in aif],
               "fitted": [0.019 * segment * a for a in aif], "fit_error": 0.01}
              for segment in range(1, 17)]
    stats = [{"segment": segment, "mean": 2.0, "median": 2.0, "sd": 0.1, "pixels": 40}
             for segment in range(1, 17)]
    return {"model": "Fermi-constrained deconvolution", "flow": "blood", "hematocrit": 0.45,
            "units": "mL/min/g", "aif": aif, "aif_times_s": times, "aif_source": "auto",
            "aif_slice": 0, "segment_mbf": [1.5 + 0.1 * s for s in range(16)],
            "segment_stats": stats, "segment_curves": curves, "global_mbf": 2.2,
            "territory_mbf": {"lad": 1.9, "rca": 2.3, "lcx": 2.5}, "qa": []}


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory) -> Study:
    """The embedded sample imported, with labels, MBF and AHA maps and a flow report."""
    study = import_dicom(REPOSITORY_SAMPLE, tmp_path_factory.mktemp("sample") / "s.zarr")
    labels = synthetic_labels(study.shape)
    reference = [labels[s, t] for s, t in enumerate(study.attrs["reference_frame"])]
    ring = np.stack([frame == MYOCARDIUM for frame in reference])
    rng = np.random.default_rng(3)
    mbf = np.where(ring, rng.uniform(0.3, 5.0, ring.shape), np.nan).astype(np.float32)
    aha = np.stack([sector_labels(ring[s], tuple(np.argwhere(ring[s]).mean(axis=0)), 180.0,
                                  LEVELS[s]) for s in range(3)])
    edited = np.zeros(study.shape[:2], dtype=np.uint8)
    edited[EDITED] = 1
    for name, values in (("labels", labels), (EDITED_LABELS, edited), ("mbf", mbf),
                         ("time_to_peak_s", np.where(ring, 7.5, np.nan).astype(np.float32)),
                         ("aha", aha)):
        study.write(name, values)
    study.update_attrs(report=synthetic_report())
    return study


@pytest.fixture(scope="module")
def exported(sample_store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "dicom"
    assert main(["export-dicom", str(sample_store.path), "--out", str(out),
                 "--source", str(REPOSITORY_SAMPLE)]) == 0
    return out


def copy_of(study: Study, path: Path) -> Study:
    shutil.copytree(study.path, path)
    return Study.open(path, writable=True)


def tree_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def source_uids(seg) -> list[str]:
    """The SOP instance UID each frame of a segmentation or map was derived from."""
    return [frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            for frame in seg.PerFrameFunctionalGroupsSequence]


def test_export_writes_each_result_once(exported):
    names = sorted(p.relative_to(exported).as_posix() for p in exported.rglob("*.dcm"))
    assert names == sorted(["aha.dcm", "mbf.dcm", "time_to_peak_s.dcm", "report.dcm",
                            *(f"labels/t{t:03d}.dcm" for t in range(1, 61))])


def test_labels_round_trip_through_the_segmentations_exactly(sample_store, exported, tmp_path):
    study = copy_of(sample_store, tmp_path / "s.zarr")
    study.remove("labels")
    study.remove(EDITED_LABELS)
    imported = import_segmentation(exported / "labels", study)
    np.testing.assert_array_equal(study.read("labels"), sample_store.read("labels"))
    assert imported.frames == imported.edited == 3 * 60  # a study without labels: all edited
    assert study.read(EDITED_LABELS).all()


def test_reimporting_the_same_labels_marks_nothing_new(sample_store, exported, tmp_path):
    study = copy_of(sample_store, tmp_path / "s.zarr")
    painted = study.read("labels")
    painted[2, 30] = 0  # to be restored by the import
    study.write("labels", painted)
    imported = import_segmentation(exported / "labels" / "t031.dcm", study)
    assert (imported.frames, imported.edited) == (3, 1)
    np.testing.assert_array_equal(study.read("labels"), sample_store.read("labels"))
    edited = study.read(EDITED_LABELS).astype(bool)
    assert edited[2, 30] and edited[EDITED] and edited.sum() == 2


def test_segmentations_reference_the_imported_instances(sample_store, exported):
    files = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p
             for p in REPOSITORY_SAMPLE.iterdir() if p.name != "README.md"}
    references = sample_store.attrs["source_instances"]
    t = 7
    seg = hd.seg.segread(exported / "labels" / f"t{t + 1:03d}.dcm")
    uids = [references["sop_instance_uid"][s][t] for s in range(3)]
    assert all(uid in files for uid in uids)
    # each slice's frames (one per segment) come from that slice's image at dynamic t
    assert sorted(set(source_uids(seg))) == sorted(uids)
    for uid in uids:
        header = pydicom.dcmread(files[uid], stop_before_pixels=True)
        assert (header.SeriesInstanceUID, header.FrameOfReferenceUID) == (
            seg.ReferencedSeriesSequence[0].SeriesInstanceUID, seg.FrameOfReferenceUID)
        assert seg.StudyInstanceUID == header.StudyInstanceUID
    assert str(seg.PatientName) == PATIENT_NAME  # from --source
    labels = [(s.SegmentLabel, s.SegmentedPropertyTypeCodeSequence[0].CodeValue,
               s.SegmentAlgorithmType) for s in seg.SegmentSequence]
    assert labels == [("LV blood pool", "87878005", "SEMIAUTOMATIC"),
                      ("LV myocardium", "49848007", "SEMIAUTOMATIC"),
                      ("RV blood pool", "53085002", "SEMIAUTOMATIC")]  # frame (1, 7) edited
    automatic = hd.seg.segread(exported / "labels" / "t001.dcm")
    assert {s.SegmentAlgorithmType for s in automatic.SegmentSequence} == {"AUTOMATIC"}
    pixels = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    np.testing.assert_array_equal(pixels, sample_store.read("labels")[:, t])


def test_mbf_map_reads_back_within_float32_precision(sample_store, exported):
    pm = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(exported / "mbf.dcm"))
    mbf = sample_store.read("mbf")
    reference = sample_store.attrs["reference_frame"]
    uids = [sample_store.attrs["source_instances"]["sop_instance_uid"][s][t]
            for s, t in enumerate(reference)]
    assert source_uids(pm) == uids
    stored = pm.pixel_array
    assert stored.dtype == np.float32
    finite = np.isfinite(mbf)
    np.testing.assert_array_equal(stored[finite], mbf[finite])
    assert np.all(stored[~finite] == NO_VALUE) and pm.FloatPixelPaddingValue == NO_VALUE
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    unit = mapping.MeasurementUnitsCodeSequence[0]
    assert (unit.CodeValue, unit.CodingSchemeDesignator) == ("mL/min/g", "UCUM")
    assert (mapping.RealWorldValueSlope, mapping.RealWorldValueIntercept) == (1.0, 0.0)
    assert mapping.DoubleFloatRealWorldValueLastValueMapped == pytest.approx(np.nanmax(mbf))
    ttp = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(exported / "time_to_peak_s.dcm"))
    ttp_unit = ttp.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert ttp_unit.MeasurementUnitsCodeSequence[0].CodeValue == "s"


def test_aha_segmentation_names_the_sixteen_segments(sample_store, exported):
    seg = hd.seg.segread(exported / "aha.dcm")
    names = [s.SegmentLabel for s in seg.SegmentSequence]
    assert len(names) == 16
    assert names[0] == "AHA segment 1 basal anterior"
    assert names[13] == "AHA segment 14 apical septal"
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "264850008"
    uids = [sample_store.attrs["source_instances"]["sop_instance_uid"][s][t]
            for s, t in enumerate(sample_store.attrs["reference_frame"])]
    pixels = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    np.testing.assert_array_equal(pixels, sample_store.read("aha"))


def test_report_is_an_encapsulated_pdf_in_the_study(sample_store, exported):
    ds = pydicom.dcmread(exported / "report.dcm")
    assert ds.SOPClassUID == pydicom.uid.EncapsulatedPDFStorage
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    document = bytes(ds.EncapsulatedDocument)[: ds.EncapsulatedDocumentLength]
    assert document.startswith(b"%PDF") and document.rstrip().endswith(b"%%EOF")
    assert ds.StudyInstanceUID == sample_store.attrs["source_instances"]["study_instance_uid"]


def test_every_output_passes_the_dicom_validator(exported, phantom_export):
    files = sorted([*exported.rglob("*.dcm"), *phantom_export.rglob("*.dcm")])
    problems = validator_errors(files)
    assert len(files) > 100 and problems == {}


def mismatched(exported: Path, tmp_path: Path, change) -> Path:
    ds = pydicom.dcmread(exported / "labels" / "t005.dcm")
    change(ds)
    path = tmp_path / "other.dcm"
    ds.save_as(path)
    return path


def another_series(ds) -> None:
    ds.ReferencedSeriesSequence[0].SeriesInstanceUID = "1.2.3.4"


def another_geometry(ds) -> None:
    ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing = [1.0, 1.0]


@pytest.mark.parametrize("change, why", [(another_series, "another series"),
                                         (another_geometry, "pixel spacing")])
def test_a_segmentation_of_other_images_is_refused_and_nothing_written(
        sample_store, exported, tmp_path, capsys, change, why):
    study = copy_of(sample_store, tmp_path / "s.zarr")
    before = tree_hash(study.path)
    path = mismatched(exported, tmp_path, change)
    assert main(["import-seg", str(path), str(study.path)]) == 2
    message = capsys.readouterr().err.strip()
    ours = sample_store.attrs["source_instances"]["series_instance_uid"][0]
    theirs = "1.2.3.4" if change is another_series else ours
    assert message.count("\n") == 0 and why in message and "nothing imported" in message
    assert f"segmentation of series {theirs}" in message and f"study's series {ours}" in message
    assert tree_hash(study.path) == before


def test_import_seg_refuses_other_objects_in_one_line(sample_store, exported, tmp_path):
    study = copy_of(sample_store, tmp_path / "s.zarr")
    with pytest.raises(InputError, match="not a DICOM Segmentation \\(Parametric Map Storage\\)"):
        import_segmentation(exported / "mbf.dcm", study)
    with pytest.raises(InputError, match="segment 1 'AHA segment 1 basal anterior' is none of"):
        import_segmentation(exported / "aha.dcm", study)


def test_export_names_a_source_of_other_images(sample_store, tmp_path, phantom_template):
    other = export_study(Study.open(phantom_template), tmp_path / "other")[0].parent
    with pytest.raises(InputError, match=f"{other}: holds series .*, not the images of"):
        export_results(sample_store, tmp_path / "out", source=other)
    assert not (tmp_path / "out").exists()


def test_a_study_imported_without_the_uids_asks_for_a_new_import(sample_store, tmp_path):
    study = copy_of(sample_store, tmp_path / "s.zarr")
    study.update_attrs(source_instances=None)  # as imported by an earlier version
    with pytest.raises(InputError, match="without the UIDs of its images .* import it again"):
        export_results(study, tmp_path / "out")


def test_export_replaces_only_an_earlier_export(sample_store, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match="is not a DICOM export"):
        export_results(sample_store, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


@pytest.fixture(scope="module")
def phantom_export(phantom_template, tmp_path_factory) -> Path:
    """A phantom (not from DICOM) with its truth labels as labels, exported."""
    study = copy_of(Study.open(phantom_template), tmp_path_factory.mktemp("ph") / "p.zarr")
    study.write("labels", study.read("truth/labels"))
    out = tmp_path_factory.mktemp("phantom_export") / "dicom"
    export_results(study, out)
    return out


def test_a_phantom_is_exported_with_its_series_and_imports_back(
        phantom_template, phantom_export, tmp_path):
    images = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
              for p in (phantom_export / "images").iterdir()}
    seg = hd.seg.segread(phantom_export / "labels" / "t010.dcm")
    assert set(source_uids(seg)) <= images
    study = copy_of(Study.open(phantom_template), tmp_path / "p.zarr")
    import_segmentation(phantom_export / "labels", study)
    np.testing.assert_array_equal(study.read("labels"), study.read("truth/labels"))


def test_batch_exports_the_results_identified_from_the_dicom_source(tmp_path, monkeypatch):
    def fake_steps(study, step, **_):  # the results of every step, quickly
        if step == "aha":
            labels = synthetic_labels(study.shape)
            study.write("labels", labels)
            study.write("mbf", np.where(labels[:, 0] == MYOCARDIUM, 2.0, np.nan)
                        .astype(np.float32))
            study.write("aha", np.where(labels[:, 0] == MYOCARDIUM, 1, 0).astype(np.uint8))
            study.update_attrs(report=synthetic_report())
            study.record_step("aha", {}, "test")

    monkeypatch.setattr("napari_perfroi.pipeline.run_step", fake_steps)
    monkeypatch.setattr("napari_perfroi.batch._limit_threads", lambda: None)
    job = BatchJob("sample", REPOSITORY_SAMPLE.absolute())
    record = process_study(job, str(tmp_path), export_dicom=True)
    assert record.status == "done", record.error
    folder = tmp_path / "reports" / "sample" / "dicom"
    assert sorted(p.name for p in folder.iterdir()) == ["aha.dcm", "labels", "mbf.dcm",
                                                         "report.dcm"]
    assert str(pydicom.dcmread(folder / "mbf.dcm").PatientName) == PATIENT_NAME
    again = process_study(job, str(tmp_path), export_dicom=True)
    assert again.status == "skipped"
