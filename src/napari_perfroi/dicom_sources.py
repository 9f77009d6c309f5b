"""The DICOM images a study's results refer to: one header per frame [S][T].

A study imported from DICOM keeps the UIDs of its images (the ``source_instances``
attribute, see :mod:`napari_perfroi.dicom`); its headers are rebuilt from them and
the store's geometry. The patient and study identification (name, ID, birth date,
accession number, ...) is not in the store, which stays patient-free: it is copied
from the original series when that is given (``source``), and left empty otherwise.

A study not imported from DICOM (a phantom) gets the series
:mod:`napari_perfroi.dicom_export` writes for it, built in memory with seed 0: its
UIDs are derived from the image, so the same study always has the same series, and
the results are written with that series so that a viewer can show them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError

SOURCE_INSTANCES = "source_instances"
EXPORT_SEED = 0  # the seed of the series a study not imported from DICOM is given
DICOM_IMPORTER = "napari_perfroi.dicom"  # the ``source`` importer of an imported study
# Patient and study identification copied from the original series (Patient, Patient
# Study and General Study modules); the type 2 ones are written empty when unknown.
IDENTITY_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "PatientAge", "PatientSize", "PatientWeight", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription",
)
EMPTY_IDENTITY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                  "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")


@dataclass
class SourceImages:
    """Headers of a study's images and, for a study not imported from DICOM, the
    series to write beside its results."""

    references: dict[str, Any]  # the source_instances attribute
    datasets: list[list[Any]]  # [S][T] pydicom datasets (no pixel data needed)
    series: list[Any] = field(default_factory=list)  # datasets to write as images

    def series_slices(self) -> list[list[int]]:
        """The slices of each source series (one series for most studies)."""
        uids = self.references["series_instance_uid"]
        return [[s for s, other in enumerate(uids) if other == uid] for uid in dict.fromkeys(uids)]

    def reference_datasets(self, reference_frame: list[int]) -> list[Any]:
        """The header of each slice's reference frame (the geometry of the maps)."""
        return [frames[t] for frames, t in zip(self.datasets, reference_frame)]


def source_images(study, source: str | os.PathLike | None = None) -> SourceImages:
    """The images of ``study``; ``source`` (its original DICOM folder or zip) gives the
    patient and study identification. Raises :class:`InputError` when the results
    cannot reference the images (no patient geometry, enhanced multi-frame files) or
    ``source`` holds another series."""
    attrs = study.attrs
    references = attrs.get(SOURCE_INSTANCES)
    if references is None:
        exported = _exported_series(study)
        if source is not None:
            raise InputError(f"{study.path}: not imported from DICOM, so it has no original "
                             f"series to take {source} for")
        return exported
    _check_referable(study, attrs, references)
    identity = {} if source is None else _identity(study, references, source)
    n_slices, n_frames = study.shape[:2]
    datasets = [[image_header(attrs, references, identity, s,
                              references["sop_instance_uid"][s][t], study.shape[2:])
                 for t in range(n_frames)] for s in range(n_slices)]
    return SourceImages(references, datasets)


def study_references(study) -> dict[str, Any]:
    """The ``source_instances`` of a study, derived as for :func:`source_images` when it
    was not imported from DICOM."""
    references = study.attrs.get(SOURCE_INSTANCES)
    return references if references is not None else _exported_series(study).references


def _check_referable(study, attrs: dict[str, Any], references: dict[str, Any]) -> None:
    if attrs.get("image_orientation_patient") is None:
        raise InputError(f"{study.path}: the DICOM series had no ImageOrientationPatient/"
                         "ImagePositionPatient, so results cannot be placed on its images")
    if references.get("frame_of_reference_uid") is None:
        raise InputError(f"{study.path}: the DICOM series has no single FrameOfReferenceUID, "
                         "so results cannot be placed on its images")
    if references.get("frame_number") is not None:
        raise InputError(f"{study.path}: the images are enhanced multi-frame files; results "
                         "can only reference single-frame images")


def _exported_series(study) -> SourceImages:
    """The series dicom_export writes for a study not imported from DICOM."""
    from .dicom_export import series_datasets

    if study.attrs["source"].get("importer") == DICOM_IMPORTER:
        raise InputError(f"{study.path}: imported from DICOM without the UIDs of its images "
                         "(an earlier version); import it again to export or import DICOM "
                         "results")
    image = study.read("image")
    if image.dtype != np.uint16:
        raise InputError(f"{study.path}: not imported from DICOM and its image is {image.dtype}, "
                         "so no MR series can be written for its results (uint16 needed)")
    aif_image = study.read("aif_image") if study.has("aif_image") else None
    written = series_datasets(image, study.attrs, seed=EXPORT_SEED, aif_image=aif_image)
    frames = dict(written)
    n_slices, n_frames = image.shape[:2]
    grid = [[frames[s, t] for t in range(n_frames)] for s in range(n_slices)]
    first = grid[0][0]
    references = {
        "study_instance_uid": first.StudyInstanceUID,
        "frame_of_reference_uid": first.FrameOfReferenceUID,
        "series_instance_uid": [frames_of_slice[0].SeriesInstanceUID for frames_of_slice in grid],
        "sop_class_uid": [frames_of_slice[0].SOPClassUID for frames_of_slice in grid],
        "sop_instance_uid": [[ds.SOPInstanceUID for ds in frames_of_slice]
                             for frames_of_slice in grid],
        "frame_number": None,
    }
    return SourceImages(references, grid, [ds for _, ds in written])


def _identity(study, references: dict[str, Any], source) -> dict[str, Any]:
    """Patient and study identification from the original series at ``source``."""
    from .dicom import read_header, scan_series

    series = scan_series(source, warn=lambda _: None)
    theirs = series.source_instances
    if theirs["sop_instance_uid"] != references["sop_instance_uid"]:
        raise InputError(
            f"{source}: holds series {', '.join(dict.fromkeys(theirs['series_instance_uid']))}, "
            f"not the images of {study.path} (series "
            f"{', '.join(dict.fromkeys(references['series_instance_uid']))})"
        )
    header = read_header(series.frames[0][0])
    return {keyword: header[keyword] for keyword in IDENTITY_KEYWORDS if keyword in header}


def image_header(attrs, references, identity, s: int, sop_instance_uid: str,
                 rows_cols: tuple[int, int]):
    """A header-only MR dataset of image ``sop_instance_uid`` of slice ``s``: geometry from
    the store ``attrs`` (perfusion or LGE), UIDs from ``references`` (per slice), patient
    and study identification from ``identity`` (empty when unknown)."""
    from pydicom.dataset import Dataset

    from .dicom_export import decimal_string

    ds = Dataset()
    for keyword in EMPTY_IDENTITY:
        setattr(ds, keyword, "")
    for element in identity.values():
        ds[element.tag] = element
    ds.SOPClassUID = references["sop_class_uid"][s]
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyInstanceUID = references["study_instance_uid"]
    ds.SeriesInstanceUID = references["series_instance_uid"][s]
    ds.FrameOfReferenceUID = references["frame_of_reference_uid"]
    ds.Modality = "MR"
    ds.Rows, ds.Columns = rows_cols
    ds.PixelSpacing = [decimal_string(v) for v in attrs["pixel_spacing_mm"]]
    ds.SliceThickness = decimal_string(attrs["slice_thickness_mm"])
    ds.ImageOrientationPatient = [decimal_string(v) for v in attrs["image_orientation_patient"]]
    ds.ImagePositionPatient = [decimal_string(v) for v in attrs["image_position_patient"][s]]
    return ds
