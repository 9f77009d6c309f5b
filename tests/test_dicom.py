"""DICOM import (scan, group, order, read), lazy reading, and export."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from dicom_factory import (
    AXIAL,
    classic_dataset,
    copy_shuffled,
    drop_acquisition_times,
    edit_series,
    enhanced_from_real,
    files,
    make_dual_study,
    make_study,
    write_datasets,
    zip_shuffled,
)
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from napari_perfroi import dicom
from napari_perfroi.dicom import DicomError, import_dicom, scan_series
from napari_perfroi.dicom_export import PATIENT_NAME, export_dicom, export_study
from napari_perfroi.study import StoreError, Study


@pytest.fixture
def study():
    return make_study()


@pytest.fixture
def exported(tmp_path, study):
    image, attrs = study
    export_dicom(image, attrs, tmp_path / "export", seed=1)
    return tmp_path / "export"


def assert_reproduces(store: Study, image, attrs):
    assert store.read("image").dtype == np.uint16
    np.testing.assert_array_equal(store.read("image"), image)
    np.testing.assert_allclose(store.frame_times_s, attrs["frame_times_s"], atol=1e-5, rtol=0)
    got = store.attrs
    assert got["pixel_spacing_mm"] == attrs["pixel_spacing_mm"]
    assert got["slice_thickness_mm"] == attrs["slice_thickness_mm"]
    assert got["slice_positions_mm"] == attrs["slice_positions_mm"]
    assert got["slice_levels"] == ["basal", "mid", "apical"][: len(image)]


def import_error(src, dest, **kwargs) -> str:
    """Import that must fail: returns the one-line message; no store is left."""
    with pytest.raises(DicomError) as info:
        import_dicom(src, dest, warn=lambda message: None, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert not dest.exists()
    assert not list(dest.parent.glob(f".staging-{dest.name}*"))
    return message


# ---------------------------------------------------------------- round trips
def test_export_then_import_of_shuffled_files_reproduces_the_study(tmp_path, study, exported):
    image, attrs = study
    shuffled = copy_shuffled(exported, tmp_path / "shuffled", seed=5)
    (shuffled / "README").write_text("exported by a test\n")
    (shuffled / "d0" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(200))
    warnings = []
    store = import_dicom(shuffled, tmp_path / "s.zarr", warn=warnings.append)
    assert_reproduces(store, image, attrs)
    assert warnings == []
    source = store.attrs["source"]
    assert source["n_files"] == 15 and source["n_skipped_files"] == 0
    assert source["time_source"] == "AcquisitionDate/AcquisitionTime"
    assert len(store.attrs["image_position_patient"]) == 3
    assert len(store.attrs["image_orientation_patient"]) == 6


def test_import_from_a_shuffled_zip_reproduces_the_study(tmp_path, study, exported):
    image, attrs = study
    archive = zip_shuffled(exported, tmp_path / "series.zip", seed=2)
    assert_reproduces(import_dicom(archive, tmp_path / "s.zarr"), image, attrs)


def test_zip_import_opens_the_archive_once_to_scan_and_once_to_read(
    tmp_path, monkeypatch, study, exported
):
    image, attrs = study
    archive = zip_shuffled(exported, tmp_path / "dcm.zip")
    opened = []
    zip_file = dicom.zipfile.ZipFile
    monkeypatch.setattr(
        dicom.zipfile, "ZipFile", lambda *args, **kw: opened.append(args) or zip_file(*args, **kw)
    )
    assert_reproduces(import_dicom(archive, tmp_path / "s.zarr"), image, attrs)
    assert len(opened) == 2


def test_export_study_round_trip_with_given_geometry(tmp_path, study):
    image, attrs = study
    first = import_dicom(
        export_dicom(image, attrs, tmp_path / "a")[0].parent, tmp_path / "a.zarr"
    )
    export_study(first, tmp_path / "b", seed=9)  # now with the store's IOP / IPP
    second = import_dicom(tmp_path / "b", tmp_path / "b.zarr")
    assert_reproduces(second, image, attrs)
    assert second.attrs["image_position_patient"] == first.attrs["image_position_patient"]


def test_export_places_slices_apex_ward_for_increasing_positions(tmp_path, study):
    image, attrs = study
    attrs = {**attrs, "slice_positions_mm": [5.0, 13.0, 21.0]}
    export_dicom(image, attrs, tmp_path / "dcm")
    assert_reproduces(import_dicom(tmp_path / "dcm", tmp_path / "s.zarr"), image, attrs)


def test_export_rejects_positions_that_contradict_the_geometry(tmp_path, study):
    image, attrs = study
    geometry = {"image_orientation_patient": AXIAL,
                "image_position_patient": [[0, 0, 0], [0, 0, 10], [0, 0, 20]]}
    with pytest.raises(ValueError, match="does not match slice_positions_mm"):
        export_dicom(image, {**attrs, **geometry}, tmp_path / "a")
    with pytest.raises(ValueError, match="not ordered base -> apex"):  # upwards is base-ward
        export_dicom(image, {**attrs, **geometry, "slice_positions_mm": [0, 10, 20]},
                     tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_exported_files_look_like_one_interleaved_scanner_series(tmp_path, study, exported):
    image, attrs = study
    datasets = [pydicom.dcmread(p) for p in files(exported)]
    assert len(datasets) == 15
    assert {str(ds.SeriesInstanceUID) for ds in datasets} == {str(datasets[0].SeriesInstanceUID)}
    assert len({ds.SOPInstanceUID for ds in datasets}) == 15
    ds = datasets[0]
    assert ds.SOPClassUID == pydicom.uid.MRImageStorage
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert str(ds.PatientName) == PATIENT_NAME and ds.BitsStored == 16
    assert (ds.RescaleSlope, ds.RescaleIntercept) == (1, 0)
    by_instance = sorted(datasets, key=lambda d: d.InstanceNumber)
    slice_of = {loc: s for s, loc in enumerate(attrs["slice_positions_mm"])}
    slices = [slice_of[float(d.SliceLocation)] for d in by_instance]
    assert slices[:3] == [0, 1, 2]  # interleaved: acquisition order across slices
    acquired = [d.AcquisitionTime for d in by_instance]
    assert acquired == sorted(acquired)
    # same seed, same files; names say nothing about order
    export_dicom(image, attrs, tmp_path / "again", seed=1)
    assert [p.name for p in files(tmp_path / "again")] == [p.name for p in files(exported)]
    assert [p.name for p in files(exported)] != [
        p.name for p in sorted(files(exported), key=lambda p: pydicom.dcmread(p).InstanceNumber)
    ]


def test_one_series_per_slice(tmp_path, study, exported):
    image, attrs = study
    series_uids = {loc: generate_uid() for loc in attrs["slice_positions_mm"]}

    def one_series_per_slice(ds):
        location = float(ds.SliceLocation)
        ds.SeriesInstanceUID = series_uids[location]
        ds.SeriesNumber = 10 + attrs["slice_positions_mm"].index(location)

    edit_series(exported, one_series_per_slice)
    store = import_dicom(exported, tmp_path / "s.zarr")
    assert_reproduces(store, image, attrs)
    assert len(store.attrs["source"]["series"]) == 3


# ---------------------------------------------------------------- separate AIF series
@pytest.fixture
def dual(tmp_path):
    return make_dual_study(tmp_path)


@pytest.fixture
def dual_exported(tmp_path, dual):
    export_study(dual[0], tmp_path / "dual", seed=4)
    return tmp_path / "dual"


def assert_reproduces_dual(store: Study, dual):
    _, image, attrs, aif_image, aif_series = dual
    assert_reproduces(store, image, attrs)
    assert store.attrs["saturation_time_s"] == 0.1005
    assert store.read("aif_image").dtype == np.uint16
    np.testing.assert_array_equal(store.read("aif_image"), aif_image)
    got = dict(store.attrs["aif_series"])
    np.testing.assert_allclose(
        got.pop("frame_times_s"), aif_series["frame_times_s"], atol=1e-5, rtol=0
    )
    assert got == {k: v for k, v in aif_series.items() if k != "frame_times_s"}


def aif_files(folder) -> list:
    return [p for p in files(folder) if "AIF" in pydicom.dcmread(p).SeriesDescription]


def test_store_with_an_aif_image_round_trips_through_dicom(tmp_path, dual, dual_exported):
    shuffled = copy_shuffled(dual_exported, tmp_path / "shuffled", seed=3)
    calls = []
    store = import_dicom(shuffled, tmp_path / "s.zarr",
                         progress=lambda done, total: calls.append((done, total)))
    assert_reproduces_dual(store, dual)
    assert calls == [(done, 20) for done in range(1, 21)]  # 15 main frames, 5 AIF frames
    source = store.attrs["source"]
    assert source["aif_series"] == "series 2 'stress perfusion AIF'"
    assert source["n_files"] == 20 and len(source["series"]) == 2
    # again from the imported store, whose geometry now comes from the headers
    export_study(store, tmp_path / "again", seed=5)
    assert_reproduces_dual(import_dicom(tmp_path / "again", tmp_path / "again.zarr"), dual)


def test_aif_image_is_exported_as_a_second_series_of_the_study(dual_exported):
    datasets = [pydicom.dcmread(p) for p in files(dual_exported)]
    main = [ds for ds in datasets if ds.SeriesNumber == 1]
    aif = [ds for ds in datasets if ds.SeriesNumber == 2]
    assert (len(main), len(aif)) == (15, 5)
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert main[0].SeriesInstanceUID != aif[0].SeriesInstanceUID
    assert len({ds.SeriesInstanceUID for ds in aif}) == 1
    assert aif[0].SeriesDescription == main[0].SeriesDescription + " AIF"
    assert (aif[0].Rows, aif[0].Columns) == (4, 3) and aif[0].PixelSpacing == [3.5, 3.0]
    assert aif[0].ImageOrientationPatient == main[0].ImageOrientationPatient
    assert sorted(ds.InstanceNumber for ds in aif) == [1, 2, 3, 4, 5]
    assert {ds.InversionTime for ds in main} == {100.5}
    assert {ds.InversionTime for ds in aif} == {27.5}


def test_aif_series_from_a_shuffled_zip(tmp_path, dual, dual_exported):
    archive = zip_shuffled(dual_exported, tmp_path / "dual.zip", seed=6)
    assert_reproduces_dual(import_dicom(archive, tmp_path / "s.zarr"), dual)


def test_coarse_single_slice_series_is_the_aif_series_without_aif_in_its_name(
    tmp_path, dual, dual_exported
):
    for path in aif_files(dual_exported):
        ds = pydicom.dcmread(path)
        ds.SeriesDescription = "perf lowres"
        ds.save_as(path, enforce_file_format=True)
    store = import_dicom(dual_exported, tmp_path / "s.zarr")
    assert_reproduces_dual(store, dual)
    assert store.attrs["source"]["aif_series"] == "series 2 'perf lowres'"


def test_saturation_time_that_differs_within_a_series_is_unknown(tmp_path, dual_exported):
    main = files(dual_exported)[0]
    if main in aif_files(dual_exported):
        main = files(dual_exported)[1]
    ds = pydicom.dcmread(main)
    ds.InversionTime = 90.0
    ds.save_as(main, enforce_file_format=True)
    aif = aif_files(dual_exported)[0]
    ds = pydicom.dcmread(aif)
    del ds.InversionTime
    ds.save_as(aif, enforce_file_format=True)
    store = import_dicom(dual_exported, tmp_path / "s.zarr")
    assert "saturation_time_s" not in store.attrs
    assert store.attrs["aif_series"]["saturation_time_s"] is None


def second_aif_series(folder):
    """Copy the AIF series as a third series of the same study."""
    series_uid = generate_uid()
    for index, path in enumerate(aif_files(folder)):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.SeriesNumber = series_uid, 3
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / f"copy{index}", enforce_file_format=True)


def set_aif_orientation(folder):
    for path in aif_files(folder):
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = AXIAL
        ds.save_as(path, enforce_file_format=True)


def drop_aif_acquisition_times(folder):
    for path in aif_files(folder):
        ds = pydicom.dcmread(path)
        drop_acquisition_times(ds)
        ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize(
    "spoil, expected",
    [
        (second_aif_series, "2 AIF-like series (series 2 'stress perfusion AIF', "
                            "series 3 'stress perfusion AIF'); keep one AIF series"),
        (lambda folder: aif_files(folder)[0].unlink(),
         "AIF series series 2 'stress perfusion AIF' has 4 dynamics but the main series has 5"),
        (set_aif_orientation, "AIF series series 2 'stress perfusion AIF' has "
                              "ImageOrientationPatient [1, 0, 0, 0, 1, 0] but the main series has"),
        (drop_aif_acquisition_times, "AIF series series 2 'stress perfusion AIF' is timed by "
                                     "TriggerTime but the main series by AcquisitionDate/"
                                     "AcquisitionTime; no common clock"),
    ],
    ids=["two AIF series", "fewer dynamics", "orientation", "clock"],
)
def test_unusable_aif_series_is_named(tmp_path, dual_exported, spoil, expected):
    spoil(dual_exported)
    message = import_error(dual_exported, tmp_path / "s.zarr")
    assert message.startswith(f"{dual_exported}: ") and expected in message


def test_single_series_import_has_no_aif_series(tmp_path, study, exported):
    image, attrs = study
    edit_series(exported, lambda ds: setattr(ds, "SeriesDescription", "perfusion with AIF"))
    assert scan_series(exported).aif is None
    store = import_dicom(exported, tmp_path / "s.zarr")
    assert_reproduces(store, image, attrs)
    assert not store.has("aif_image")
    for key in ("aif_series", "saturation_time_s"):
        assert key not in store.attrs
    assert "aif_series" not in store.attrs["source"]


# ---------------------------------------------------------------- time order
def test_trigger_time_orders_frames_when_acquisition_time_is_missing(tmp_path, study, exported):
    image, attrs = study
    edit_series(exported, drop_acquisition_times)
    store = import_dicom(exported, tmp_path / "s.zarr")
    assert_reproduces(store, image, attrs)
    assert store.attrs["source"]["time_source"] == "TriggerTime"


def test_trigger_time_orders_frames_when_acquisition_time_repeats(tmp_path, study, exported):
    image, attrs = study

    def series_start_everywhere(ds):  # as some Philips exports do
        ds.AcquisitionTime = "100000.000000"

    edit_series(exported, series_start_everywhere)
    store = import_dicom(exported, tmp_path / "s.zarr")
    assert_reproduces(store, image, attrs)
    assert store.attrs["source"]["time_source"] == "TriggerTime"


def test_trigger_time_that_disagrees_with_instance_numbers_is_an_error(tmp_path, exported):
    def scrambled_clock(ds):  # spans seconds like a clock, in another order than the instances
        drop_acquisition_times(ds)
        ds.TriggerTime = 800 * ((ds.InstanceNumber * 7) % 15)

    edit_series(exported, scrambled_clock)
    message = import_error(exported, tmp_path / "s.zarr")
    assert "TriggerTime and InstanceNumber" in message and str(exported) in message


def test_instance_number_with_nominal_interval_as_last_resort(tmp_path, study, exported):
    image, attrs = study

    def no_times(ds):
        drop_acquisition_times(ds)
        del ds.TriggerTime
        ds.NominalInterval = 850

    edit_series(exported, no_times)
    store = import_dicom(exported, tmp_path / "s.zarr")
    np.testing.assert_array_equal(store.read("image"), image)
    expected = np.tile(0.85 * np.arange(5), (3, 1))
    np.testing.assert_allclose(store.frame_times_s, expected, atol=1e-9)
    assert store.attrs["source"]["time_source"] == "InstanceNumber x nominal interval"


def test_acquisition_date_carries_a_series_across_midnight(tmp_path):
    study_uid, series_uid = generate_uid(), generate_uid()
    clock = [("20240101", "235959.500000"), ("20240102", "000000.400000"),
             ("20240102", "000001.300000")]
    datasets = [
        classic_dataset(np.full((4, 4), t, np.uint16), study_uid=study_uid,
                        series_uid=series_uid, instance=t + 1, position=(0, 0, 0),
                        acquisition_date=date, acquisition_time=time)
        for t, (date, time) in enumerate(clock)
    ]
    series = scan_series(write_datasets(tmp_path / "dcm", datasets))
    assert series.frame_times_s == [[0.0, 0.9, 1.8]]
    assert [series.read_frame(0, t)[0, 0] for t in range(3)] == [0, 1, 2]


def test_acquisition_time_without_date_crossing_midnight(tmp_path):
    study_uid, series_uid = generate_uid(), generate_uid()
    clock = ["235958.000000", "235959.000000", "000000.500000"]
    datasets = [
        classic_dataset(np.full((4, 4), t, np.uint16), study_uid=study_uid,
                        series_uid=series_uid, instance=t + 1, position=(0, 0, 0),
                        acquisition_date=None, acquisition_time=time)
        for t, time in enumerate(clock)
    ]
    series = scan_series(write_datasets(tmp_path / "dcm", datasets))
    assert series.frame_times_s == [[0.0, 1.0, 2.5]]
    assert series.source["time_source"] == "AcquisitionTime"


# ---------------------------------------------------------------- values
def test_rescale_slope_and_intercept_give_float32_real_values(tmp_path, study, exported):
    image, attrs = study

    def rescale(ds):
        ds.RescaleSlope = "0.5"
        ds.RescaleIntercept = "-100"

    edit_series(exported, rescale)
    store = import_dicom(exported, tmp_path / "s.zarr")
    stored = store.read("image")
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, (image * 0.5 - 100).astype(np.float32))


ENHANCED_FILES = [
    "emri_small.dcm",
    "emri_small_big_endian.dcm",
    "emri_small_RLE.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
]


def decodable(name: str) -> bool:
    from pydicom.pixels import get_decoder

    syntax = pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True).file_meta
    return get_decoder(syntax.TransferSyntaxUID).is_available


@pytest.mark.parametrize("name", ENHANCED_FILES)
def test_real_enhanced_mr_file_frames_at_one_position_become_the_frames_of_one_slice(
    tmp_path, name
):
    if not decodable(name):
        pytest.skip(f"no decoder for {name} installed")
    reference = pydicom.dcmread(get_testdata_file(name)).pixel_array
    assert reference.shape == (10, 64, 64)
    times = [0.9 * t for t in range(10)][::-1]  # frame order in the file is not time order
    path = enhanced_from_real(name, tmp_path / "x.dcm", positions_z=[0.0] * 10, times_s=times)
    series = scan_series(path)
    assert series.shape == (1, 10, 64, 64) and series.dtype == np.uint16
    assert series.pixel_spacing_mm == (1.25, 1.25) and series.slice_thickness_mm == 6.0
    np.testing.assert_allclose(series.frame_times_s[0], sorted(times), atol=1e-9)
    for t in range(10):
        np.testing.assert_array_equal(series.read_frame(0, t), reference[9 - t])
    assert series.source["sop_class"] == ["Enhanced MR Image Storage"]


@pytest.mark.parametrize("name", ["emri_small.dcm", "emri_small_RLE.dcm"])
def test_real_enhanced_mr_file_frames_at_two_positions_become_two_slices(tmp_path, name):
    reference = pydicom.dcmread(get_testdata_file(name)).pixel_array.astype(np.float64)
    path = enhanced_from_real(
        name, tmp_path / "x.dcm",
        positions_z=[0.0, -20.0] * 5,  # apex at lower z: frames 1, 3, ... are apical
        times_s=[0.5 * t for t in range(10)],
        rescale=(2.0, -7.0),
    )
    store = import_dicom(path, tmp_path / "s.zarr")
    image = store.read("image")
    assert image.shape == (2, 5, 64, 64) and image.dtype == np.float32
    np.testing.assert_array_equal(image[0], reference[0::2] * 2 - 7)
    np.testing.assert_array_equal(image[1], reference[1::2] * 2 - 7)
    assert store.attrs["slice_positions_mm"] == [0.0, -20.0]
    np.testing.assert_allclose(store.frame_times_s, [[0, 1, 2, 3, 4], [0.5, 1.5, 2.5, 3.5, 4.5]])


def test_real_enhanced_mr_file_without_geometry_names_the_missing_tags(tmp_path):
    message = import_error(get_testdata_file("emri_small.dcm"), tmp_path / "s.zarr")
    assert "emri_small.dcm: missing PixelSpacing, SliceThickness" in message
    assert "ImagePositionPatient" in message and "SliceLocation" in message


def test_real_enhanced_mr_file_without_decoder_is_named(tmp_path):
    name = "emri_small_jpeg_ls_lossless.dcm"
    if decodable(name):
        pytest.skip("a JPEG-LS decoder is installed")
    path = enhanced_from_real(name, tmp_path / "x.dcm", positions_z=[0.0] * 10,
                              times_s=[float(t) for t in range(10)])
    message = import_error(path, tmp_path / "s.zarr")
    assert "x.dcm (no decoder for JPEG-LS Lossless" in message


# ---------------------------------------------------------------- slice order
def stack_of_three(tmp_path, orientation, positions, study_uid=None):
    """Three slices (pixel value = index into ``positions``) of two frames each."""
    study_uid, series_uid = study_uid or generate_uid(), generate_uid()
    datasets = [
        classic_dataset(np.full((4, 4), index, np.uint16), study_uid=study_uid,
                        series_uid=series_uid, instance=2 * index + t + 1,
                        position=position, orientation=orientation,
                        acquisition_time=f"1000{10 * t + index:02d}.000000")
        for index, position in enumerate(positions) for t in range(2)
    ]
    return write_datasets(tmp_path / "dcm", datasets)


@pytest.mark.parametrize("orientation", [AXIAL, [1.0, 0.0, 0.0, 0.0, -1.0, 0.0]])
def test_slices_go_from_base_to_apex_whatever_the_sign_of_the_normal(tmp_path, orientation):
    # the apex is inferior: the slice at z = 20 is basal, z = 0 apical
    folder = stack_of_three(tmp_path, orientation, [(0, 0, 10), (0, 0, 0), (0, 0, 20)])
    series = scan_series(folder)
    assert [series.read_frame(s, 0)[0, 0] for s in range(3)] == [2, 0, 1]
    assert [p[2] for p in series.image_position_patient] == [20, 10, 0]
    assert series.slice_levels == ["basal", "mid", "apical"]


def test_oblique_short_axis_slices_go_towards_left_anterior_inferior(tmp_path):
    row = np.array([1.0, 0.0, 1.0]) / np.sqrt(2)
    col = np.array([1.0, 2.0, -1.0]) / np.sqrt(6)
    apex = np.array([1.0, -1.0, -1.0]) / np.sqrt(3)  # LPS: left, anterior, inferior
    positions = [tuple(np.round(k * 8 * apex, 4)) for k in (2, 0, 1)]
    folder = stack_of_three(tmp_path, list(np.round(np.r_[row, col], 8)), positions)
    series = scan_series(folder)
    assert [series.read_frame(s, 0)[0, 0] for s in range(3)] == [1, 2, 0]


def test_slice_location_only_orders_by_increasing_location_with_a_warning(tmp_path, study,
                                                                          exported):
    image, attrs = study

    def no_patient_geometry(ds):
        del ds.ImagePositionPatient, ds.ImageOrientationPatient

    edit_series(exported, no_patient_geometry)
    warnings = []
    series = scan_series(exported, warn=warnings.append)
    assert series.slice_positions_mm == [-20.0, -10.0, 0.0]
    assert series.image_orientation_patient is None
    np.testing.assert_array_equal(series.read_frame(0, 0), image[2, 0])
    assert len(warnings) == 1 and "SliceLocation" in warnings[0]


# ---------------------------------------------------------------- lazy reading
def test_dask_array_reads_no_pixels_until_computed(monkeypatch, study, exported):
    image, _ = study
    reads = []
    read_pixels = dicom._read_pixels
    monkeypatch.setattr(
        dicom, "_read_pixels", lambda ref, *args: reads.append(ref) or read_pixels(ref, *args)
    )
    series = scan_series(exported)
    lazy = series.to_dask()
    frame = lazy[2, 3]
    assert reads == []
    assert lazy.shape == image.shape and lazy.chunksize == (1, 1, 8, 6)
    np.testing.assert_array_equal(frame.compute(), image[2, 3])
    assert len(reads) == 1
    np.testing.assert_array_equal(lazy.compute(), image)


def test_scan_reads_headers_only(monkeypatch, exported):
    monkeypatch.setattr(dicom, "_read_pixels", lambda *args: pytest.fail("pixels read"))
    assert scan_series(exported).shape == (3, 5, 8, 6)


def test_import_reports_progress(tmp_path, exported):
    calls = []
    import_dicom(exported, tmp_path / "s.zarr", progress=lambda done, total: calls.append(done))
    assert calls == list(range(1, 16))


# ---------------------------------------------------------------- bad input
def test_missing_source(tmp_path):
    assert "no such file or folder" in import_error(tmp_path / "nope", tmp_path / "s.zarr")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "empty: folder is empty" in import_error(tmp_path / "empty", tmp_path / "s.zarr")


def test_folder_without_dicom_files(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "README").write_text("hello")
    (folder / ".DS_Store").write_bytes(bytes(300))
    message = import_error(folder, tmp_path / "s.zarr")
    assert "no DICOM files (2 file(s) looked at)" in message


def test_mixed_studies_name_the_study_uids(tmp_path, exported):
    path = files(exported)[4]
    ds = pydicom.dcmread(path)
    other_study = generate_uid()
    ds.StudyInstanceUID = other_study
    ds.save_as(path, enforce_file_format=True)
    message = import_error(exported, tmp_path / "s.zarr")
    assert "2 studies" in message and f"{other_study} (1 file(s), e.g. {path.name})" in message


def test_overlapping_series_are_named(tmp_path, study, exported):
    image, attrs = study
    export_dicom(image, attrs, tmp_path / "moco", seed=2, series_description="perf MOCO")
    edit_series(tmp_path / "moco", lambda ds: setattr(ds, "SeriesNumber", 2))
    study_uid = pydicom.dcmread(files(exported)[0]).StudyInstanceUID
    edit_series(tmp_path / "moco", lambda ds: setattr(ds, "StudyInstanceUID", study_uid))
    shutil.copytree(tmp_path / "moco", exported / "moco")
    message = import_error(exported, tmp_path / "s.zarr")
    assert "2 series overlap" in message
    assert "series 1 'stress perfusion'" in message and "series 2 'perf MOCO'" in message


def replace_pixels(path, rows, cols):
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = rows, cols
    ds.PixelData = np.zeros((rows, cols), "<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_inconsistent_matrix_sizes_name_the_files(tmp_path, exported):
    bad = files(exported)[7]
    replace_pixels(bad, 16, 16)
    message = import_error(exported, tmp_path / "s.zarr")
    assert "inconsistent matrix size" in message and f"{bad.name} (series 1" in message
    assert "is 16x16" in message


@pytest.mark.parametrize(
    "keyword, value, expected",
    [
        ("PixelSpacing", [1.5, 1.5], "inconsistent PixelSpacing"),
        ("ImageOrientationPatient", [0, 1, 0, 0, 0, -1], "inconsistent ImageOrientationPatient"),
    ],
)
def test_inconsistent_geometry_names_the_files(tmp_path, exported, keyword, value, expected):
    bad = files(exported)[3]
    ds = pydicom.dcmread(bad)
    setattr(ds, keyword, value)
    ds.save_as(bad, enforce_file_format=True)
    message = import_error(exported, tmp_path / "s.zarr")
    assert expected in message and bad.name in message


def test_duplicate_sop_instance(tmp_path, exported):
    original = files(exported)[0]
    shutil.copyfile(original, exported / "copy.dcm")
    message = import_error(exported, tmp_path / "s.zarr")
    assert "duplicate instance" in message
    assert original.name in message and "copy.dcm" in message


def test_two_images_at_the_same_position_and_time(tmp_path, exported):
    original = files(exported)[0]
    ds = pydicom.dcmread(original)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(exported / "again.dcm", enforce_file_format=True)
    message = import_error(exported, tmp_path / "s.zarr")
    assert "two images at the same position and time" in message
    assert original.name in message and "again.dcm" in message


def test_missing_time_tags_are_named(tmp_path, exported):
    def no_times(ds):
        drop_acquisition_times(ds)
        del ds.TriggerTime

    edit_series(exported, no_times)
    message = import_error(exported, tmp_path / "s.zarr")
    assert "cannot order frames in time" in message
    for tag in ("AcquisitionTime", "TriggerTime", "NominalInterval"):
        assert tag in message


def test_missing_position_tags_are_named(tmp_path, exported):
    def no_position(ds):
        del ds.ImagePositionPatient, ds.SliceLocation

    edit_series(exported, no_position)
    message = import_error(exported, tmp_path / "s.zarr")
    assert "missing ImagePositionPatient/ImageOrientationPatient (or SliceLocation)" in message


def test_slices_with_different_frame_counts(tmp_path, exported):
    files(exported)[6].unlink()
    message = import_error(exported, tmp_path / "s.zarr")
    assert "slices have different frame counts" in message
    assert ": 4" in message and ": 5" in message


def truncate(path, end):
    """Keep bytes [:end] (a negative ``end`` cuts that many bytes off the end)."""
    path.write_bytes(path.read_bytes()[:end])


def test_truncated_frame_is_skipped_and_named_when_it_breaks_the_series(tmp_path, exported):
    bad = files(exported)[2]
    truncate(bad, -10)
    message = import_error(exported, tmp_path / "s.zarr")
    assert "slices have different frame counts" in message
    assert f"skipped 1 unreadable file(s): {bad.name} (truncated pixel data)" in message


def test_unreadable_extra_files_are_skipped_with_a_warning(tmp_path, study, exported):
    image, attrs = study
    # an extra copy of one frame (new instance) with its pixel data cut short
    ds = pydicom.dcmread(files(exported)[0])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(exported / "cut_pixels.dcm", enforce_file_format=True)
    truncate(exported / "cut_pixels.dcm", -20)
    # a header cut short, garbage after the DICM marker, a real truncated JPEG 2000 file
    shutil.copyfile(files(exported)[1], exported / "cut_header.dcm")
    truncate(exported / "cut_header.dcm", 400)
    (exported / "garbage.dcm").write_bytes(bytes(128) + b"DICM" + b"\xff" * 50)
    shutil.copyfile(get_testdata_file("emri_small_jpeg_2k_lossless_too_short.dcm"),
                    exported / "too_short.dcm")
    warnings = []
    store = import_dicom(exported, tmp_path / "s.zarr", warn=warnings.append)
    assert_reproduces(store, image, attrs)
    assert store.attrs["source"]["n_skipped_files"] == 4
    assert len(warnings) == 1 and "skipped 4 unreadable file(s)" in warnings[0]
    assert "cut_pixels.dcm (truncated pixel data)" in warnings[0]
    assert "cut_header.dcm (truncated header)" in warnings[0]


def test_existing_destination_is_left_alone(tmp_path, exported):
    dest = tmp_path / "s.zarr"
    dest.mkdir()
    (dest / "keep").write_text("x")
    with pytest.raises(StoreError, match="already exists"):
        import_dicom(exported, dest)
    assert (dest / "keep").read_text() == "x"
