"""Write a study as one scanner-like MR DICOM series (classic MR Image Storage).

All slices are interleaved in one series, InstanceNumber follows acquisition
order across slices, and the file names are random hex (from the seed) that
say nothing about slice or time, so an importer has to use the headers, as it
must with real scanner exports. UIDs are derived from the seed, so the same
study and seed give the same files; :func:`series_datasets` builds the same
datasets in memory (the DICOM results of a study not imported from DICOM refer
to them).

Times: AcquisitionTime (with AcquisitionDate) is the series start plus the
frame time, to the microsecond; TriggerTime carries the same time in ms
(cumulative, as some vendors write it). The importer measures times from the
study's earliest frame, so a study whose first frame is at 0 s comes back with
the same frame times.

Geometry: ImageOrientationPatient and ImagePositionPatient come from the
attributes when present (they must agree with ``slice_positions_mm`` and the
base -> apex order); otherwise a short-axis-like orientation is used (image
right towards the patient's left, image down posterior, apex towards the
patient's left, anterior, inferior) and each slice's position is placed along
its normal.

A separate AIF image (dual-sequence acquisition) becomes a second series of
the same study (SeriesNumber 2, description + " AIF"): one slice with its own
PixelSpacing, the main orientation, and its first pixel centred at
``origin_px`` of slice ``slice`` (see :func:`~napari_perfroi.study.check_aif_series`).
A known saturation time is written as InversionTime (ms), where several
vendors put the saturation-recovery delay.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .dicom import APEX_DIRECTION_LPS, slice_normal
from .errors import InputError

SERIES_START = _dt.datetime(2024, 1, 1, 10, 0, 0)
PATIENT_NAME = "PHANTOM^PERFUSION"
PATIENT_ID = "PHANTOM"
_FILE_NAME_HEX_DIGITS = 8
_POSITION_TOLERANCE_MM = 1e-6  # the importer keeps positions to 1e-6 mm
# Short-axis-like orientation: rows towards patient left (+ superior), columns
# posterior; its normal row x col = (-1, 1, 1)/sqrt(3) points base-ward.
_DEFAULT_ROW = np.array([1.0, 0.0, 1.0]) / np.sqrt(2.0)
_DEFAULT_COL = np.array([1.0, 2.0, -1.0]) / np.sqrt(6.0)


def export_study(
    study, folder: str | os.PathLike, *, seed: int = 0, series_description: str = "stress perfusion"
) -> list[Path]:
    """Export an open :class:`~napari_perfroi.study.Study` (see :func:`export_dicom`)."""
    return export_dicom(
        study.read("image"), study.attrs, folder, seed=seed, series_description=series_description,
        aif_image=study.read("aif_image") if study.has("aif_image") else None,
    )


def export_dicom(
    image: np.ndarray,
    attrs: Mapping[str, Any],
    folder: str | os.PathLike,
    *,
    seed: int = 0,
    series_description: str = "stress perfusion",
    aif_image: np.ndarray | None = None,
) -> list[Path]:
    """Write ``image`` (uint16, S, T, Y, X) with the store ``attrs`` as one DICOM series.

    ``attrs`` needs ``pixel_spacing_mm``, ``slice_thickness_mm``,
    ``frame_times_s`` and ``slice_positions_mm``; ``image_orientation_patient``,
    ``image_position_patient`` and ``saturation_time_s`` are used when present.
    ``aif_image`` (uint16, T, Ya, Xa), with ``attrs["aif_series"]``, is written
    as a second series. ``folder`` must be absent or empty. Returns the files
    written, in acquisition order (main series, then AIF series).
    """
    datasets = series_datasets(image, attrs, seed=seed, series_description=series_description,
                               aif_image=aif_image)
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise InputError(f"{folder}: folder is not empty")
    folder.mkdir(parents=True, exist_ok=True)
    names = _random_names(np.random.default_rng(seed), len(datasets))
    return [_save(ds, folder / name) for (_, ds), name in zip(datasets, names)]


def series_datasets(
    image: np.ndarray,
    attrs: Mapping[str, Any],
    *,
    seed: int = 0,
    series_description: str = "stress perfusion",
    aif_image: np.ndarray | None = None,
) -> list[tuple[tuple[int, int] | None, Any]]:
    """The datasets :func:`export_dicom` writes, in memory and in acquisition order: one
    ``((slice, frame), dataset)`` per frame of ``image``, then ``(None, dataset)`` per
    frame of ``aif_image``."""
    image = np.asarray(image)
    if image.ndim != 4 or image.dtype != np.uint16:
        raise ValueError(f"image must be uint16 (S, T, Y, X), got {image.dtype} {image.shape}")
    n_slices, n_frames = image.shape[:2]
    times = np.asarray(attrs["frame_times_s"], dtype=float)
    if times.shape != (n_slices, n_frames):
        raise ValueError(f"frame_times_s must be {n_slices}x{n_frames}, got {times.shape}")
    orientation, positions = _geometry(attrs, image.shape)
    aif = None if aif_image is None else _aif_frames(aif_image, attrs, orientation, positions)
    uids = _UidSource(seed, image)
    series = {
        "study_uid": uids.make("study"),
        "series_uid": uids.make("series"),
        "frame_of_reference_uid": uids.make("frame-of-reference"),
        "description": series_description,
        "number": 1,
        "pixel_spacing_mm": attrs["pixel_spacing_mm"],
        "saturation_time_s": attrs.get("saturation_time_s"),
    }
    acquisition_order = sorted(
        ((s, t) for s in range(n_slices) for t in range(n_frames)),
        key=lambda st: (times[st], st[0]),
    )
    datasets = []
    for instance, (s, t) in enumerate(acquisition_order, start=1):
        ds = _frame_dataset(
            image[s, t], attrs, series,
            sop_uid=uids.make(f"instance-{s}-{t}"),
            instance=instance,
            time_s=float(times[s, t]),
            orientation=orientation,
            position=positions[s],
            slice_location=float(attrs["slice_positions_mm"][s]),
        )
        datasets.append(((s, t), ds))
    if aif is not None:
        aif_series = {
            **series,
            "series_uid": uids.make("aif-series"),
            "description": f"{series_description} AIF",
            "number": 2,
            "pixel_spacing_mm": aif["pixel_spacing_mm"],
            "saturation_time_s": aif["saturation_time_s"],
        }
        for instance, (pixels, time_s) in enumerate(aif["frames"], start=1):
            ds = _frame_dataset(
                pixels, attrs, aif_series,
                sop_uid=uids.make(f"aif-instance-{instance}"),
                instance=instance,
                time_s=time_s,
                orientation=orientation,
                position=aif["position"],
                slice_location=aif["slice_location"],
            )
            datasets.append((None, ds))
    return datasets


def study_uids(image: np.ndarray, *, seed: int = 0) -> dict[str, str]:
    """StudyInstanceUID and FrameOfReferenceUID that :func:`export_dicom` gives ``image``
    exported with ``seed``: other series of the same patient and scan share them."""
    uids = _UidSource(seed, np.asarray(image))
    return {"study": uids.make("study"), "frame_of_reference": uids.make("frame-of-reference")}


def _save(ds, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _aif_frames(
    aif_image: np.ndarray, attrs: Mapping[str, Any], orientation: np.ndarray, positions: np.ndarray
) -> dict[str, Any]:
    """Frames (pixels, time), spacing, saturation time and geometry of the AIF series."""
    aif_image = np.asarray(aif_image)
    if aif_image.ndim != 3 or aif_image.dtype != np.uint16:
        raise ValueError(
            f"aif_image must be uint16 (T, Y, X), got {aif_image.dtype} {aif_image.shape}"
        )
    info = attrs.get("aif_series")
    if info is None:
        raise ValueError("aif_image needs attrs['aif_series']")
    times = [float(t) for t in info["frame_times_s"]]
    if len(times) != len(aif_image):
        raise ValueError(f"aif_series frame_times_s must have {len(aif_image)} times")
    s = int(info["slice"])
    if not 0 <= s < len(positions):
        raise ValueError(f"aif_series slice {s} is not a slice of the image")
    row_spacing, col_spacing = attrs["pixel_spacing_mm"]
    origin_row, origin_col = info["origin_px"]
    position = (
        positions[s]
        + origin_col * col_spacing * orientation[:3]
        + origin_row * row_spacing * orientation[3:]
    )
    return {
        "frames": list(zip(aif_image, times)),
        "pixel_spacing_mm": info["pixel_spacing_mm"],
        "saturation_time_s": info["saturation_time_s"],
        "position": position,
        "slice_location": float(attrs["slice_positions_mm"][s]),
    }


def _geometry(attrs: Mapping[str, Any], shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Orientation [6] and one ImagePositionPatient per slice, consistent with the attrs."""
    locations = np.asarray(attrs["slice_positions_mm"], dtype=float)
    orientation = attrs.get("image_orientation_patient")
    positions = attrs.get("image_position_patient")
    if orientation is None or positions is None:
        orientation, positions = _default_geometry(locations, attrs, shape)
    orientation = np.asarray(orientation, dtype=float)
    positions = np.asarray(positions, dtype=float)
    normal = slice_normal(orientation)
    if not np.allclose(positions @ normal, locations, atol=_POSITION_TOLERANCE_MM):
        raise ValueError("image_position_patient does not match slice_positions_mm")
    apex_sign = 1.0 if np.dot(normal, APEX_DIRECTION_LPS) >= 0 else -1.0
    apex_ward = apex_sign * np.diff(locations)
    if np.any(apex_ward <= 0):
        raise ValueError("slices are not ordered base -> apex for image_orientation_patient")
    return orientation, positions


def _default_geometry(locations, attrs, shape) -> tuple[np.ndarray, np.ndarray]:
    row, col = _DEFAULT_ROW, _DEFAULT_COL
    if len(locations) > 1 and locations[-1] > locations[0]:
        row = -row  # flip the normal so that increasing positions go apex-ward
    normal = np.cross(row, col)
    row_spacing, col_spacing = attrs["pixel_spacing_mm"]
    n_rows, n_cols = shape[2:]
    centre_offset = -(n_cols / 2) * col_spacing * row - (n_rows / 2) * row_spacing * col
    positions = [centre_offset + location * normal for location in locations]
    return np.concatenate([row, col]), np.asarray(positions)


def _random_names(rng: np.random.Generator, count: int) -> list[str]:
    names: set[str] = set()
    while len(names) < count:
        names.add(f"{int(rng.integers(16**_FILE_NAME_HEX_DIGITS)):0{_FILE_NAME_HEX_DIGITS}x}")
    ordered = sorted(names)
    rng.shuffle(ordered)
    return ordered


class _UidSource:
    """Deterministic UIDs: the same image, seed and role give the same UID.

    The image content is part of the entropy so that two different studies
    exported with the same seed never share UIDs.
    """

    def __init__(self, seed: int, image: np.ndarray) -> None:
        self.entropy = ["napari-perfroi", str(seed), hashlib.sha256(image.tobytes()).hexdigest()]

    def make(self, role: str):
        from pydicom.uid import generate_uid

        return generate_uid(entropy_srcs=[*self.entropy, role])


def _frame_dataset(
    pixels: np.ndarray,
    attrs: Mapping[str, Any],
    series: dict[str, Any],
    *,
    sop_uid,
    instance: int,
    time_s: float,
    orientation: np.ndarray,
    position: np.ndarray,
    slice_location: float,
):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

    acquired = SERIES_START + _dt.timedelta(microseconds=round(time_s * 1e6))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.Modality = "MR"
    ds.Manufacturer = "napari-perfroi"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = series["study_uid"]
    ds.SeriesInstanceUID = series["series_uid"]
    ds.FrameOfReferenceUID = series["frame_of_reference_uid"]
    ds.PositionReferenceIndicator = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber = series["number"]
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = instance
    ds.SeriesDescription = series["description"]
    ds.StudyDate = ds.SeriesDate = _da(SERIES_START)
    ds.AcquisitionDate = ds.ContentDate = _da(acquired)
    ds.StudyTime = ds.SeriesTime = _tm(SERIES_START)
    ds.AcquisitionTime = ds.ContentTime = _tm(acquired)
    ds.TriggerTime = f"{round(time_s * 1e6) / 1e3:.3f}"  # ms, to the microsecond
    ds.ScanningSequence = "GR"
    if series["saturation_time_s"] is not None:
        ds.InversionTime = decimal_string(round(series["saturation_time_s"] * 1000.0, 6))  # ms
        ds.ScanningSequence = ["GR", "IR"]  # the standard allows InversionTime only with IR
    ds.SequenceVariant = "SP"
    ds.ScanOptions = "CG"  # cardiac gating: TriggerTime is written
    ds.RepetitionTime = ""
    ds.EchoTime = ""
    ds.EchoTrainLength = ""
    ds.MRAcquisitionType = "2D"
    ds.BodyPartExamined = "HEART"
    ds.PatientPosition = "HFS"
    ds.SliceThickness = decimal_string(attrs["slice_thickness_mm"])
    ds.PixelSpacing = [decimal_string(v) for v in series["pixel_spacing_mm"]]
    ds.ImageOrientationPatient = [decimal_string(v) for v in orientation]
    ds.ImagePositionPatient = [decimal_string(v) for v in position]
    ds.SliceLocation = decimal_string(slice_location)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = "1"
    ds.RescaleIntercept = "0"
    ds.RescaleType = "US"
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    return ds


def decimal_string(value: float) -> str:
    """A decimal string (at most 16 characters) that reads back as ``value`` when it can."""
    from pydicom.valuerep import format_number_as_ds

    text = repr(float(value))
    return text if len(text) <= 16 else format_number_as_ds(float(value))


def _da(moment: _dt.datetime) -> str:
    return moment.strftime("%Y%m%d")


def _tm(moment: _dt.datetime) -> str:
    return moment.strftime("%H%M%S.%f")
