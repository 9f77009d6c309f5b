"""LGE DICOM -> the LGE study of an existing perfusion study store.

SRC is a folder, a ``.zip`` or one (enhanced multi-frame) file, read with the
perfusion importer's machinery (:mod:`napari_perfroi.dicom`): the same search
for files, header and pixel reading, refusal of damaged or absurd files,
geometry checks, base -> apex order, rescale and one-line errors.

Series
    When some series are PSIR -- an ImageType value containing "PSIR", or a
    SeriesDescription containing "PSIR" but not "MAG" -- and others are not,
    the PSIR series are imported and the others (the magnitude images of the
    same slices) left out, with a warning and a note in ``source``. The stack
    is ``psir`` when it is labelled so or its RescaleIntercept is negative
    (signed values), ``magnitude`` otherwise.

Single phase
    Exactly one image per slice position (positions within 0.1 x
    SliceThickness are one, as for perfusion); a cine or any series with
    several images at one position is refused as not a single-phase LGE
    stack.

Same patient, same planes
    Refused, in one line naming a file, when the stack's StudyInstanceUID and
    FrameOfReferenceUID both differ from the perfusion study's (its
    ``source_instances``; a store not imported from DICOM has none, and this
    check is skipped); when its slice normal is more than
    :data:`MAX_TILT_DEG` from the perfusion slices' (another orientation); or
    when no LGE slice lies within half a perfusion slice thickness of a
    perfusion slice. A slice's distance to a perfusion slice is that of its
    image centre to the perfusion plane.

Placement
    ``perfusion_slice``: for each LGE slice, the nearest perfusion slice within
    half its thickness, else None. ``slice_levels``: the level of the nearest
    perfusion slice (for a slice between two, the nearer one).

Pixel values are stored as the perfusion import stores them: uint16 when
unsigned with slope 1 and intercept 0, float32 real values otherwise (PSIR
values signed). Nothing is written until every check has passed; the LGE group
is then swapped in whole, and the perfusion study is never modified.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..dicom import (
    SLICE_TOLERANCE,
    DicomError,
    DicomSeries,
    FrameRef,
    _warn_stderr,
    build_series,
    scan_frames,
    slice_normal,
)
from ..study import StoreError, Study
from .store import LgeStudy, refuse_existing_lge

MAX_TILT_DEG = 10.0  # largest angle between LGE and perfusion slice normals
_NAMED = 3  # files named in one message


def import_lge_dicom(
    src: str | os.PathLike,
    store: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    warn: Callable[[str], None] = _warn_stderr,
) -> LgeStudy:
    """Import the LGE stack at ``src`` as the LGE study of the perfusion store ``store``.

    ``progress(done, total)`` is called after each slice is read. Raises
    :class:`~napari_perfroi.errors.InputError` (one line) on refusal, with
    nothing written.
    """
    src, store = Path(src), Path(store)
    perfusion = Study.open(store)  # read-only: checking writes nothing
    refuse_existing_lge(perfusion, overwrite=overwrite)
    planes = _perfusion_planes(perfusion)
    frames, skipped = scan_frames(src, warn=warn)
    frames, kind, left_out = _choose_series(src, frames, warn)
    _check_placeable(src, frames)
    _check_single_phase(src, frames)
    series = build_series(src, frames, skipped, warn=warn)
    first = series.frames[0][0]
    _check_same_study(first, series.source_instances, perfusion)
    mapping, levels = _place(src, first, series, perfusion, planes)
    image = np.empty((series.shape[0], *series.shape[2:]), dtype=series.dtype)
    for s in range(series.shape[0]):
        image[s] = series.read_frame(s, 0)
        if progress is not None:
            progress(s + 1, series.shape[0])
    inversion_s = series.saturation_time_s  # InversionTime shared by every image, if any
    attrs = {
        "pixel_spacing_mm": list(series.pixel_spacing_mm),
        "slice_thickness_mm": series.slice_thickness_mm,
        "slice_positions_mm": series.slice_positions_mm,
        "image_orientation_patient": series.image_orientation_patient,
        "image_position_patient": series.image_position_patient,
        "inversion_time_ms": None if inversion_s is None else round(inversion_s * 1000.0, 6),
        "lge_kind": kind,
        "slice_levels": levels,
        "perfusion_slice": mapping,
        "source": _source(series, frames, left_out),
    }
    return LgeStudy.create(store, image, attrs, overwrite=overwrite)


def _perfusion_planes(perfusion: Study) -> tuple[np.ndarray, np.ndarray]:
    """Unit normal and one point (ImagePositionPatient) of each perfusion slice plane."""
    attrs = perfusion.attrs
    orientation = attrs.get("image_orientation_patient")
    positions = attrs.get("image_position_patient")
    if orientation is None or positions is None:
        raise StoreError(
            f"{perfusion.path}: the perfusion study has no patient geometry "
            "(image_orientation_patient), so LGE slices cannot be placed in it"
        )
    return slice_normal(orientation), np.asarray(positions, dtype=float)


def _is_psir(file) -> bool:
    description = file.description.upper()
    return (any("PSIR" in value for value in file.image_type)
            or ("PSIR" in description and "MAG" not in description))


def _choose_series(src: Path, frames: list, warn: Callable[[str], None]):
    """(frames kept, ``lge_kind``, labels of the series left out)."""
    file_of_series = {f.file.series_uid: f.file for f in frames}
    psir = {uid for uid, file in file_of_series.items() if _is_psir(file)}
    left_out = []
    if psir and len(psir) < len(file_of_series):
        left_out = sorted(file.series_label for uid, file in file_of_series.items()
                          if uid not in psir)
        frames = [f for f in frames if f.file.series_uid in psir]
        kept = sorted(file_of_series[uid].series_label for uid in psir)
        warn(f"{src}: magnitude and PSIR images: importing the PSIR {', '.join(kept)}, "
             f"leaving out {', '.join(left_out)}")
    signed = any(f.intercept < 0 for f in frames)
    return frames, ("psir" if psir or signed else "magnitude"), left_out


def _check_placeable(src: Path, frames: list) -> None:
    lacking = [f.name for f in frames if f.position is None or f.orientation is None]
    if lacking:
        raise DicomError(
            f"{src}: {lacking[0]}: no ImagePositionPatient/ImageOrientationPatient, so the LGE "
            "slices cannot be placed in the perfusion study"
        )


def _check_single_phase(src: Path, frames: list) -> None:
    """One image per slice position (positions grouped as the perfusion import does)."""
    normal = slice_normal(frames[0].orientation)
    tolerance = SLICE_TOLERANCE * (frames[0].thickness or 0.0)
    located = sorted(((float(np.dot(f.position, normal)), f) for f in frames),
                     key=lambda item: item[0])
    groups = [[located[0]]]
    for item in located[1:]:
        if item[0] - groups[-1][-1][0] > tolerance:
            groups.append([])
        groups[-1].append(item)
    crowded = max(groups, key=len)
    if len(crowded) > 1:
        names = list(dict.fromkeys(f.name for _, f in crowded))
        shown = ", ".join(names[:_NAMED]) + (f" and {len(names) - _NAMED} more"
                                             if len(names) > _NAMED else "")
        raise DicomError(
            f"{src}: not a single-phase LGE stack: {len(crowded)} images at slice position "
            f"{round(crowded[0][0], 3) + 0.0:g} mm ({shown}); one image per slice position "
            "expected"
        )


def _check_same_study(first: FrameRef, instances: dict[str, Any], perfusion: Study) -> None:
    recorded = perfusion.attrs.get("source_instances")
    if not recorded:
        return  # a study not imported from DICOM: no UIDs to compare
    same_study = instances["study_instance_uid"] == recorded.get("study_instance_uid")
    frame_of_reference = instances["frame_of_reference_uid"]
    same_frame = (frame_of_reference is not None
                  and frame_of_reference == recorded.get("frame_of_reference_uid"))
    if not (same_study or same_frame):
        raise DicomError(
            f"{first}: another patient or study: neither its StudyInstanceUID nor its "
            f"FrameOfReferenceUID is the perfusion study's ({perfusion.path})"
        )


def _place(
    src: Path, first: FrameRef, series: DicomSeries, perfusion: Study, planes
) -> tuple[list[int | None], list[str]]:
    """(``perfusion_slice``, ``slice_levels``) of the LGE slices; refuses another
    orientation and a stack with no slice at a perfusion slice."""
    normal, plane_points = planes
    orientation = np.asarray(series.image_orientation_patient)
    tilt = np.degrees(np.arccos(min(1.0, abs(float(slice_normal(orientation) @ normal)))))
    if tilt > MAX_TILT_DEG:
        raise DicomError(
            f"{first}: another orientation: its slices are {tilt:.1f} degrees from the "
            f"perfusion slices ({MAX_TILT_DEG:g} at most)"
        )
    n_rows, n_cols = series.shape[2:]
    row_spacing, col_spacing = series.pixel_spacing_mm
    centres = (np.asarray(series.image_position_patient)
               + (n_cols - 1) / 2 * col_spacing * orientation[:3]
               + (n_rows - 1) / 2 * row_spacing * orientation[3:])
    distance = np.abs((centres[:, None, :] - plane_points[None, :, :]) @ normal)  # (S_lge, S)
    nearest = np.argmin(distance, axis=1)
    nearest_mm = distance[np.arange(len(nearest)), nearest]
    half_thickness = perfusion.attrs["slice_thickness_mm"] / 2.0
    if not np.any(nearest_mm <= half_thickness):
        raise DicomError(
            f"{src}: no LGE slice lies within half a slice thickness ({half_thickness:g} mm) "
            f"of a perfusion slice (the nearest is {nearest_mm.min():.1f} mm away)"
        )
    levels = perfusion.attrs["slice_levels"]
    mapping = [int(j) if d <= half_thickness else None for j, d in zip(nearest, nearest_mm)]
    return mapping, [levels[j] for j in nearest]


def _source(series: DicomSeries, frames: list, left_out: list[str]) -> dict[str, Any]:
    """Patient-free description of the stack, with the UIDs of its images (per slice)."""
    instances = series.source_instances
    frame_number = instances["frame_number"]
    return {
        **series.source,
        "importer": "napari_perfroi.lge.dicom_import",
        "series_description": sorted({f.file.description for f in frames}),
        "left_out_series": left_out,
        "study_instance_uid": instances["study_instance_uid"],
        "frame_of_reference_uid": instances["frame_of_reference_uid"],
        "series_instance_uid": instances["series_instance_uid"],
        "sop_class_uid": instances["sop_class_uid"],
        "sop_instance_uid": [uids[0] for uids in instances["sop_instance_uid"]],
        "frame_number": None if frame_number is None else [n[0] for n in frame_number],
    }
