"""A DICOM Segmentation of a study's images -> its ``labels``, as edited frames.

The segmentation (one file, or the Segmentation files of a folder, e.g. the
``labels/`` of an export) must reference the study's own images: every referenced instance one of
its frames, with the same matrix, pixel spacing, orientation and slice positions.
Each segment becomes a label value by its SNOMED CT property type (the codes the
export writes) or, failing that, by its label (e.g. "LV myocardium", "RV blood
pool"); a segment that is none of the three is refused, as are overlapping
segments. The frames the segmentation references replace the study's labels
(frames it omits read as background); those that differ from the stored labels
(all of them when the study had none) are marked edited, so the segment step
keeps them. Nothing is written unless every file passes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .label_edits import EDITED_LABELS, edited_frames
from .study import BACKGROUND, LV_BLOOD, MYOCARDIUM, RV_BLOOD

# The SNOMED CT property types the export writes.
LABEL_CODES = {"87878005": LV_BLOOD, "49848007": MYOCARDIUM, "53085002": RV_BLOOD}
LABEL_NAMES = {LV_BLOOD: "LV blood pool", MYOCARDIUM: "LV myocardium", RV_BLOOD: "RV blood pool"}
_POSITION_TOLERANCE_MM = 1e-3
_DIRECTION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ImportedLabels:
    """What an import changed: frames the segmentation covers, frames newly edited."""

    frames: int
    edited: int


def import_segmentation(path: str | os.PathLike, study) -> ImportedLabels:
    """Import the segmentation at ``path`` (a file, or the Segmentation files of a
    folder) into the writable ``study``; :class:`InputError` (one line) when it does not
    fit."""
    from .dicom_sources import study_references

    references = study_references(study)
    where = {uid: (s, t) for s, uids in enumerate(references["sop_instance_uid"])
             for t, uid in enumerate(uids)}
    had_labels = study.has("labels")
    stored = study.read("labels") if had_labels else np.zeros(study.shape, dtype=np.uint8)
    labels = stored.copy()
    covered = np.zeros(study.shape[:2], dtype=bool)
    for file in _segmentation_files(Path(path)):
        seg = _read(file)
        frames = _check_fits(file, seg, study, references, where)
        values = _label_values(file, seg)
        try:
            pixels = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=[uid for uid, _ in frames],
                segment_numbers=list(values), assert_missing_frames_are_empty=True,
            )
        except (ValueError, RuntimeError) as exc:  # e.g. frames without their source image
            raise InputError(f"{file}: frames cannot be matched to the images they segment "
                             f"({' '.join(str(exc).split())}); nothing imported") from None
        for (_, (s, t)), masks in zip(frames, pixels):
            labels[s, t] = _combine(file, masks, list(values.values()))
            covered[s, t] = True
    changed = covered & ((labels != stored).any(axis=(2, 3)) | (not had_labels))
    before = edited_frames(study)
    study.write("labels", labels)  # before the marks: a mark never refers to unsaved labels
    study.write(EDITED_LABELS, (before | changed).astype(np.uint8))
    return ImportedLabels(int(covered.sum()), int((changed & ~before).sum()))


def _segmentation_files(path: Path) -> list[Path]:
    """``path`` itself, or the Segmentation files in the folder ``path`` (others ignored)."""
    if path.is_dir():
        files = [p for p in sorted(path.iterdir()) if p.is_file() and _is_segmentation(p)]
        if not files:
            raise InputError(f"{path}: no DICOM Segmentation files in this folder")
        return files
    if not path.is_file():
        raise InputError(f"{path}: no such file or folder")
    return [path]


def _is_segmentation(path: Path) -> bool:
    import highdicom as hd
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError):
        return False
    return header.get("SOPClassUID") in hd.seg.SOP_CLASS_UIDS


def _read(file: Path):
    import highdicom as hd
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(file)
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise InputError(f"{file}: not a DICOM file ({' '.join(str(exc).split())})") from None
    if dataset.get("SOPClassUID") not in hd.seg.SOP_CLASS_UIDS:
        name = getattr(dataset.get("SOPClassUID"), "name", "no SOP class")
        raise InputError(f"{file}: not a DICOM Segmentation ({name})")
    return hd.seg.Segmentation.from_dataset(dataset, copy=False)


def _check_fits(file: Path, seg, study, references, where) -> list[tuple[str, tuple[int, int]]]:
    """(referenced SOP instance UID, (slice, frame)) of the study for each image the
    segmentation references; refuses a segmentation of other images."""
    ours = ", ".join(dict.fromkeys(references["series_instance_uid"]))
    referenced = [(series, sop) for _, series, sop in seg.get_source_image_uids()]
    theirs = ", ".join(dict.fromkeys(series for series, _ in referenced)) or "none"

    def refuse(why: str) -> InputError:
        return InputError(f"{file}: segmentation of series {theirs} does not fit the study's "
                          f"series {ours} ({why}); nothing imported")

    if not referenced or any(series not in references["series_instance_uid"]
                             for series, _ in referenced):
        raise refuse("another series")
    missing = [sop for _, sop in referenced if sop not in where]
    if missing:
        raise refuse(f"{len(missing)} referenced image(s) are not in the study, e.g. {missing[0]}")
    attrs = study.attrs
    if (seg.Rows, seg.Columns) != study.shape[2:]:
        raise refuse(f"{seg.Rows}x{seg.Columns} pixels, the study's are "
                     f"{study.shape[2]}x{study.shape[3]}")
    for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        problem = _frame_problem(seg, frame, index, attrs, where)
        if problem:
            raise refuse(problem)
    return [(sop, where[sop]) for _, sop in referenced]


def _frame_problem(seg, frame, index: int, attrs, where) -> str:
    """Why frame ``index`` of the segmentation lies elsewhere than its source ("" if not)."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    spacing = _macro("PixelMeasuresSequence", frame, shared).PixelSpacing
    if not np.allclose([float(v) for v in spacing], attrs["pixel_spacing_mm"],
                       atol=_POSITION_TOLERANCE_MM):
        return f"pixel spacing {list(spacing)} mm, the study's is {attrs['pixel_spacing_mm']}"
    orientation = [float(v) for v in
                   _macro("PlaneOrientationSequence", frame, shared).ImageOrientationPatient]
    if attrs.get("image_orientation_patient") is not None and not np.allclose(
            orientation, attrs["image_orientation_patient"], atol=_DIRECTION_TOLERANCE):
        return f"orientation {orientation}, the study's is {attrs['image_orientation_patient']}"
    sources = [item.ReferencedSOPInstanceUID
               for derivation in frame.get("DerivationImageSequence", [])
               for item in derivation.get("SourceImageSequence", [])]
    position = [float(v) for v in
                _macro("PlanePositionSequence", frame, shared).ImagePositionPatient]
    expected = attrs.get("image_position_patient")
    for sop in sources:
        s = where[sop][0]
        if expected is not None and not np.allclose(position, expected[s],
                                                    atol=_POSITION_TOLERANCE_MM):
            return f"frame {index + 1} lies at {position} mm, slice {s} at {expected[s]} mm"
    return ""


def _macro(sequence: str, frame, shared):
    """First item of functional group ``sequence``: per-frame first, then shared."""
    for group in (frame, shared):
        if group.get(sequence):
            return group.get(sequence)[0]
    raise KeyError(sequence)


def _label_values(file: Path, seg) -> dict[int, int]:
    """Segment number -> label value, by SNOMED CT code, else by segment label."""
    values = {}
    for segment in seg.SegmentSequence:
        number, label = int(segment.SegmentNumber), str(segment.get("SegmentLabel", ""))
        code = segment.SegmentedPropertyTypeCodeSequence[0].CodeValue
        value = LABEL_CODES.get(code) or _value_from_text(label)
        if value is None:
            raise InputError(f"{file}: segment {number} '{label}' is none of "
                             f"{', '.join(LABEL_NAMES.values())}; nothing imported")
        values[number] = value
    return values


def _value_from_text(label: str) -> int | None:
    text = label.lower()
    if "myocard" in text:
        return MYOCARDIUM
    if "right ventric" in text or text.startswith("rv"):
        return RV_BLOOD
    if "left ventric" in text or text.startswith("lv"):
        return LV_BLOOD
    return None


def _combine(file: Path, masks: np.ndarray, values: list[int]) -> np.ndarray:
    """One frame's segment masks (Y, X, segments) as label values; refuses overlaps."""
    masks = masks.astype(bool)
    overlap = int((masks.sum(axis=-1) > 1).sum())
    if overlap:
        raise InputError(f"{file}: segments overlap in {overlap} pixel(s); labels need one "
                         "value per pixel; nothing imported")
    labels = np.full(masks.shape[:2], BACKGROUND, dtype=np.uint8)
    for index, value in enumerate(values):
        labels[masks[..., index]] = value
    return labels
