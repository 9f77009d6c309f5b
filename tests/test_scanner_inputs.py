"""Scanner inputs the phantom's own export does not produce, from DICOM import to the report.

Each series is a one-slice phantom exported as DICOM and edited with pydicom
the way scanners write it: TriggerTime as the only time (cumulative or reset
every beat), no proton-density frames, float pixel values, an odd matrix, the
heart at the edge of the field of view.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pydicom
import pytest
from dicom_factory import (
    drop_acquisition_times,
    edit_series,
    export_phantom,
    files,
    make_study,
    single_slice_phantom,
    to_float_pixel_data,
)

from napari_perfroi import aha
from napari_perfroi.cli import main
from napari_perfroi.dicom import import_dicom
from napari_perfroi.dicom_export import export_dicom
from napari_perfroi.pipeline import STEPS, run_step
from napari_perfroi.study import LV_BLOOD, MYOCARDIUM, RV_BLOOD, Study

FIRST_TRIGGER_MS = 187.5  # delay of the first readout after the first R wave


def analyze(study: Study) -> dict[str, str]:
    """Every analysis step in order; their one-line summaries."""
    return {name: run_step(study, name) for name in STEPS}


def assert_analysed(study: Study) -> None:
    """Labels with an LV on every frame, a circle on every frame, a finite MBF map
    on the reference-frame myocardium and AHA segments there."""
    n_slices, n_frames = study.shape[:2]
    labels = study.read("labels")
    assert labels.shape == study.shape
    assert np.isin(labels, (LV_BLOOD, MYOCARDIUM)).any(axis=(2, 3)).all()
    roi = study.read("roi")
    assert roi.shape == (n_slices, n_frames, 3) and np.isfinite(roi).all()
    assert (roi[..., 2] > 0).all()
    mbf = study.read("mbf")
    assert mbf.shape == (n_slices, *study.shape[2:])
    myocardium = np.isfinite(mbf)
    assert myocardium.sum() > 50
    assert 0.0 < np.median(mbf[myocardium]) < 10.0
    assert (study.read("aha")[myocardium] > 0).all()


# ---------------------------------------------------------------- 1.5 T single slice
def test_single_slice_of_79_frames_timed_by_trigger_time_from_import_to_report(
    tmp_path, capsys
):
    """One basal slice, 79 beats, 1.4 mm pixels, single bolus, no PD frames, no AIF
    series, 256 x 256, frames timed by a cumulative TriggerTime only (a user's 1.5 T
    series)."""
    phantom = single_slice_phantom(1, n_dynamics=79, matrix=(256, 256), pixel_spacing_mm=1.4)
    src = tmp_path / "dicom"
    image = export_phantom(phantom, src)

    def trigger_time_only(ds):
        drop_acquisition_times(ds)
        ds.TriggerTime = float(ds.TriggerTime) + FIRST_TRIGGER_MS

    edit_series(src, trigger_time_only)
    assert not any("AcquisitionTime" in pydicom.dcmread(p) for p in files(src))
    store, out = tmp_path / "s.zarr", tmp_path / "report"
    assert main(["import", str(src), str(store)]) == 0
    assert main(["analyze", str(store)]) == 0
    assert main(["report", str(store), "--out", str(out)]) == 0
    assert capsys.readouterr().err.count("warning") == 0

    study = Study.open(store)
    np.testing.assert_array_equal(study.read("image"), image)
    triggers_s = sorted(float(pydicom.dcmread(p).TriggerTime) / 1000 for p in files(src))
    np.testing.assert_allclose(study.frame_times_s[0], np.subtract(triggers_s, triggers_s[0]),
                               atol=1e-6, rtol=0)
    np.testing.assert_allclose(study.frame_times_s, phantom.attrs["frame_times_s"], atol=1e-6)
    assert study.attrs["source"]["time_source"] == "TriggerTime"
    assert study.attrs["slice_levels"] == ["basal"]
    assert study.attrs["pixel_spacing_mm"] == [1.4, 1.4]
    assert_analysed(study)

    report = json.loads((out / "report.json").read_text())
    assert report["aif_source"] == "auto" and len(report["aif"]) == 79
    basal = report["segment_mbf"][:6]
    assert all(value is not None and 0.0 < value < 10.0 for value in basal)
    assert report["segment_mbf"][6:] == [None] * 10
    assert any("missing slices: no mid or apical slice" in flag for flag in report["qa"])
    with open(out / "segments.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["mbf"] != "" for row in rows] == [True] * 6 + [False] * 10
    assert (out / "bullseye.png").stat().st_size > 0 and (out / "curves.png").stat().st_size > 0


# ---------------------------------------------------------------- TriggerTime reset every beat
@pytest.fixture
def per_beat_trigger(tmp_path):
    """Two slices of 12 frames whose TriggerTime is the delay after each R wave:
    nearly the same in every frame (jitter of a few ms), in no particular order."""
    image, attrs = make_study(n_slices=2, n_frames=12, rows=16, cols=12)
    export_dicom(image, attrs, tmp_path / "dicom")
    rng = np.random.default_rng(3)

    def per_beat_delay(ds):
        drop_acquisition_times(ds)
        readout = 160.0 * (float(ds.SliceLocation) != 0.0)  # the second slice is read later
        ds.TriggerTime = round(FIRST_TRIGGER_MS + readout + rng.uniform(-4, 4), 3)

    edit_series(tmp_path / "dicom", per_beat_delay)
    return image, tmp_path / "dicom"


def test_per_beat_trigger_time_with_nominal_interval_gives_nominal_times_and_a_warning(
    tmp_path, per_beat_trigger
):
    image, src = per_beat_trigger
    edit_series(src, lambda ds: setattr(ds, "NominalInterval", 850))
    warnings = []
    study = import_dicom(src, tmp_path / "s.zarr", warn=warnings.append)
    np.testing.assert_array_equal(study.read("image"), image)
    np.testing.assert_allclose(study.frame_times_s, np.tile(0.85 * np.arange(12), (2, 1)),
                               atol=1e-9)
    assert study.attrs["source"]["time_source"] == "InstanceNumber x nominal interval"
    assert len(warnings) == 1
    assert "TriggerTime spans only" in warnings[0] and "delay after each R wave" in warnings[0]
    assert "0.85 s apart" in warnings[0]


def test_per_beat_trigger_time_without_interval_is_one_line_naming_the_tags(
    tmp_path, capsys, per_beat_trigger
):
    _, src = per_beat_trigger
    store = tmp_path / "s.zarr"
    assert main(["import", str(src), str(store)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0]
    assert lines[0].startswith(f"perfroi import: error: {src}: cannot order frames in time")
    for tag in ("AcquisitionTime", "TriggerTime spans only", "NominalInterval"):
        assert tag in lines[0]
    assert not store.exists()


# ---------------------------------------------------------------- float images
def test_non_integer_rescale_slope_keeps_float_values_through_the_analysis(tmp_path):
    slope, intercept = 0.37, -12.5
    src = tmp_path / "dicom"
    image = export_phantom(single_slice_phantom(2, n_dynamics=40), src)

    def rescaled(ds):  # the same real values, stored as (value - intercept) / slope
        real = ds.pixel_array.astype(float)
        ds.PixelData = np.rint((real - intercept) / slope).astype("<u2").tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = str(slope), str(intercept)

    edit_series(src, rescaled)
    study = import_dicom(src, tmp_path / "s.zarr")
    stored = np.rint((image - intercept) / slope)
    got = study.read("image")
    assert got.dtype == np.float32 and got.shape == image.shape
    np.testing.assert_array_equal(got, (stored * slope + intercept).astype(np.float32))
    assert np.abs(got - image).max() <= slope / 2 + 1e-3
    analyze(study)
    assert_analysed(study)


def test_float_pixel_data_is_imported_as_float32_values(tmp_path):
    src = tmp_path / "dicom"
    image = export_phantom(single_slice_phantom(2, n_dynamics=8, matrix=(40, 48)), src)

    def float_values(ds):
        ds.RescaleSlope, ds.RescaleIntercept = "0.25", "-3.5"
        to_float_pixel_data(ds)

    edit_series(src, float_values)
    assert "FloatPixelData" in pydicom.dcmread(files(src)[0])
    study = import_dicom(src, tmp_path / "s.zarr")
    got = study.read("image")
    assert got.dtype == np.float32 and got.shape == image.shape
    np.testing.assert_array_equal(got, (image * 0.25 - 3.5).astype(np.float32))
    assert study.attrs["source"]["n_skipped_files"] == 0


# ---------------------------------------------------------------- matrix and field of view
def test_odd_non_square_matrix_is_kept_and_analysed(tmp_path):
    src = tmp_path / "dicom"
    phantom = single_slice_phantom(3, n_dynamics=40, matrix=(255, 217), pixel_spacing_mm=1.5)
    image = export_phantom(phantom, src)
    study = import_dicom(src, tmp_path / "s.zarr")
    assert study.shape == (1, 40, 255, 217)
    np.testing.assert_array_equal(study.read("image"), image)
    analyze(study)
    assert_analysed(study)


def heart_box(phantom) -> tuple[int, int, int, int]:
    """Rows and columns (first, last) that the LV covers on any frame."""
    lv = np.isin(phantom.truth["labels"][0], (LV_BLOOD, MYOCARDIUM)).any(axis=0)
    rows, cols = np.nonzero(lv)
    return rows.min(), rows.max(), cols.min(), cols.max()


def test_heart_in_a_corner_of_the_field_of_view_is_analysed(tmp_path):
    """The phantom's heart off centre, and the image cut two pixels beyond the LV on
    the top and left, so the heart sits in the corner in every frame."""
    phantom = single_slice_phantom(1, n_dynamics=40, heart_offset=(0.95, -0.95))
    top, _, left, _ = heart_box(phantom)
    rows, cols = phantom.params.matrix
    row, col = max(top - 2, 0), max(left - 2, 0)
    src = tmp_path / "dicom"
    image = export_phantom(phantom, src, crop=(row, col, rows - row, cols - col))
    study = import_dicom(src, tmp_path / "s.zarr")
    np.testing.assert_array_equal(study.read("image"), image)
    summaries = analyze(study)
    assert_analysed(study)
    assert "LV found on all 1 slice(s)" in summaries["segment"]
    ref = study.attrs["reference_frame"][0]
    centre_row, centre_col, radius = study.read("roi")[0, ref]
    assert min(centre_row, centre_col) < 1.5 * radius  # the circle is at the corner
    assert not any("image edge" in flag for flag in study.attrs["report"]["qa"])


def test_heart_cut_by_the_edge_of_the_field_of_view_is_flagged(tmp_path):
    """The image ends 8 pixels inside the LV on the bottom and the right."""
    phantom = single_slice_phantom(1, n_dynamics=40)
    _, bottom, _, right = heart_box(phantom)
    src = tmp_path / "dicom"
    image = export_phantom(phantom, src, crop=(0, 0, bottom - 7, right - 7))
    store = tmp_path / "s.zarr"
    assert main(["import", str(src), str(store)]) == 0
    assert main(["analyze", str(store)]) == 0
    study = Study.open(store)
    assert study.shape[2:] == image.shape[2:]
    assert np.isfinite(study.read("roi")).all()
    assert np.isfinite(study.read("mbf")).sum() > 20
    flag = ("slice 1 (basal): the LV reaches the image edge, part of the myocardium may lie "
            "outside the field of view and its segments be incomplete")
    assert flag in study.attrs["report"]["qa"]


def test_lv_at_the_image_edge_is_a_geometry_message():
    labels = np.zeros((60, 80), np.uint8)
    rows, cols = np.mgrid[:60, :80]
    distance = np.hypot(rows - 30, cols - 40)
    labels[(distance < 27) & (cols < 30)] = RV_BLOOD  # a crescent on the septal side
    labels[distance < 20] = MYOCARDIUM
    labels[distance < 12] = LV_BLOOD
    whole = aha.segment_geometry(labels[None], ["mid"], None, 1.5)
    cut = aha.segment_geometry(labels[None, :, :50], ["mid"], None, 1.5)
    assert not any("image edge" in message for message in whole.messages)
    assert any(message.startswith("slice 1 (mid): the LV reaches the image edge")
               for message in cut.messages)
