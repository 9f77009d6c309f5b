"""A study's results as DICOM objects for PACS and viewers (OHIF, 3D Slicer, Horos).

:func:`export_results` writes into one folder (built aside and renamed into place):

``labels/tNNN.dcm``
    Segmentation (binary) of the labels: segments LV blood pool, LV myocardium
    and RV blood pool, one instance per dynamic (a segmentation frame is one
    plane: the frames of a slice share their position, so the dynamics cannot
    share an instance); every frame references the image it was drawn on.
``aha.dcm``
    Segmentation of the AHA segments 1-16 on each slice's reference frame.
``<map>.dcm``
    Parametric map (float pixels) of each map present (``mbf``, ``mbf_fit_error``,
    the two-compartment and semi-quantitative maps) on each slice's reference
    frame, with a real-world value mapping in its unit (:data:`MAP_UNITS`).
    Pixels without a value (NaN in the store) hold :data:`NO_VALUE`, declared as
    Float Pixel Padding Value.
``report.dcm``
    Encapsulated PDF: the flow report on one page.
``images/``
    Only for a study not imported from DICOM: the MR series the results refer to.
``lge/``
    When the store holds an analysed LGE study: its segmentations (myocardium and
    scar, AHA segments) on the LGE images, see :mod:`napari_perfroi.lge.dicom_export`.

A study whose images came from several series (one per slice) gets one object per
series, ``-N`` added to its name. Every object is in the study of the images; see
:mod:`napari_perfroi.dicom_sources` for the patient identification.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .label_edits import edited_frames
from .study import (LV_BLOOD, MYOCARDIUM, RV_BLOOD, SEMIQUANTITATIVE_MAPS,
                    TWO_COMPARTMENT_MAPS, replace_dir)

NO_VALUE = -1.0  # stored where a map has no value (NaN in the store)
MANUFACTURER = "napari-perfroi"
DEVICE_SERIAL_NUMBER = "0"  # software, not a device
LABEL_SEGMENTS = {  # label value: (segment label, SNOMED CT property type, display colour)
    LV_BLOOD: ("LV blood pool", "LeftVentricle", (255, 0, 0)),
    MYOCARDIUM: ("LV myocardium", "LeftVentricleMyocardium", (255, 255, 0)),
    RV_BLOOD: ("RV blood pool", "RightVentricle", (65, 105, 225)),
}
# Map: (UCUM unit, its meaning, what the map is); annotations in braces are UCUM's
# arbitrary units (the signal is in the scanner's units).
MAP_UNITS = {
    "mbf": ("mL/min/g", "milliliter per minute per gram", "myocardial blood flow"),
    "mbf_fit_error": ("1", "no units", "relative residual of the MBF fit"),
    "ps": ("mL/min/g", "milliliter per minute per gram", "permeability-surface area product"),
    "vp": ("mL/mL", "milliliter per milliliter", "plasma volume fraction"),
    "ve": ("mL/mL", "milliliter per milliliter", "interstitial volume fraction"),
    "upslope": ("{signal}/s", "signal units per second", "maximum upslope"),
    "relative_upslope": ("{ratio}", "ratio", "upslope relative to the LV blood pool's"),
    "peak_enhancement": ("{signal}", "signal units", "first-pass peak enhancement"),
    "relative_peak": ("{ratio}", "ratio", "peak enhancement relative to baseline"),
    "time_to_peak_s": ("s", "second", "time to peak from the LV foot"),
    "first_pass_auc": ("{signal}.s", "signal units times second", "first-pass area under curve"),
}
MAPS = ("mbf", "mbf_fit_error", *TWO_COMPARTMENT_MAPS, *SEMIQUANTITATIVE_MAPS)
MBF_WINDOW = (0.0, 6.0)  # mL/min/g, the bullseye's scale
SERIES_NUMBERS = {"labels": 901, "aha": 902, "report": 903, "lge": 930, "lge_aha": 931,
                  **{name: 910 + i for i, name in enumerate(MAPS)}}
_STAGING_PREFIX = ".staging-"


def export_results(study, out_dir: str | os.PathLike, source: str | os.PathLike | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   lge_source: str | os.PathLike | None = None) -> list[Path]:
    """Write the study's results as DICOM into ``out_dir`` (see the module docstring).

    ``source`` is the original DICOM folder or zip, for the patient identification;
    ``lge_source`` likewise for the LGE stack.
    ``out_dir`` must be absent, empty or an earlier export (only ``.dcm`` files),
    which is replaced whole. ``progress(done, total)`` counts the labels' dynamics.
    Returns the files written.
    """
    from .dicom_sources import source_images
    from .lge.dicom_export import lge_results

    out_dir = Path(out_dir)
    check_output_folder(out_dir)
    sources = source_images(study, source)
    lge = lge_results(study, sources, lge_source)  # before the labels: refusals come first
    results = []
    if study.has("labels"):
        results += [(f"labels/{name}", seg) for name, seg in labels_segmentations(
            study, study.read("labels"), sources, progress=progress)]
    if study.has("aha"):
        results += _aha_segmentations(study, sources)
    results += _parametric_maps(study, sources)
    pdf = _report_pdf(study)
    if pdf is not None:
        reference = sources.reference_datasets(study.attrs["reference_frame"])
        results.append(("report.dcm", encapsulated_pdf(pdf, reference)))
    results += lge
    if not results:
        raise InputError(f"{study.path}: no results to export yet (labels, maps or report); "
                         f"run `perfroi analyze {study.path}` first")
    images = [(f"images/{ds.SOPInstanceUID}.dcm", ds) for ds in sources.series]
    return write_objects(images + results, out_dir)


def check_output_folder(out_dir: Path) -> None:
    """Refuse a folder that holds anything but an earlier export (``.dcm`` files)."""
    if out_dir.exists() and (not out_dir.is_dir() or any(
            p.is_file() and p.suffix != ".dcm" for p in out_dir.rglob("*"))):
        raise InputError(f"{out_dir}: exists and is not a DICOM export; choose another folder")


def write_objects(objects: list[tuple[str, Any]], out_dir: Path) -> list[Path]:
    """Save ``(relative path, dataset)`` pairs into ``out_dir``, replacing it whole."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f"{_STAGING_PREFIX}{out_dir.name}-{uuid.uuid4().hex[:8]}")
    try:
        for name, ds in objects:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(staging / name, enforce_file_format=True)
        replace_dir(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out_dir / name for name, _ in objects]


# ---------------------------------------------------------------- segmentations
def labels_segmentations(study, labels: np.ndarray, sources, edited: np.ndarray | None = None,
                         progress: Callable[[int, int], None] | None = None,
                         ) -> list[tuple[str, Any]]:
    """One Segmentation of ``labels`` (S, T, Y, X) per dynamic (and source series), named
    ``tNNN.dcm``; algorithm type SEMIAUTOMATIC where a frame was ``edited``
    (default: the store's edited frames), AUTOMATIC otherwise."""
    import highdicom as hd

    edited = edited_frames(study) if edited is None else edited
    n_frames = labels.shape[1]
    groups = sources.series_slices()
    series_uid = hd.UID()
    descriptions = {kind: _label_descriptions(study, kind)
                    for kind in ("AUTOMATIC", "SEMIAUTOMATIC")}
    objects = []
    for g, slices in enumerate(groups):
        for t in range(n_frames):
            kind = "SEMIAUTOMATIC" if edited[slices, t].any() else "AUTOMATIC"
            seg = _segmentation(
                [sources.datasets[s][t] for s in slices], labels[slices, t],
                descriptions[kind], series_uid, "labels",
                instance=g * n_frames + t + 1, content_label="LABELS",
                description="LV blood pool, LV myocardium, RV blood pool",
            )
            objects.append((f"{_suffixed(f't{t + 1:03d}', g, groups)}.dcm", seg))
            if progress is not None:
                progress(len(objects), len(groups) * n_frames)
    return objects


def _aha_segmentations(study, sources) -> list[tuple[str, Any]]:
    import highdicom as hd

    aha = study.read("aha")
    reference = sources.reference_datasets(study.attrs["reference_frame"])
    groups = sources.series_slices()
    series_uid = hd.UID()
    return [
        (f"{_suffixed('aha', g, groups)}.dcm",
         _segmentation([reference[s] for s in slices], aha[slices], _aha_descriptions(),
                       series_uid, "aha", instance=g + 1, content_label="AHA",
                       description="AHA 16-segment model on the reference frames"))
        for g, slices in enumerate(groups)
    ]


def _segmentation(datasets, pixels, descriptions, series_uid, role: str, *, instance: int,
                  content_label: str, description: str):
    import highdicom as hd

    from . import __version__

    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=pixels, segmentation_type="BINARY",
        segment_descriptions=descriptions, series_instance_uid=series_uid,
        series_number=SERIES_NUMBERS[role], sop_instance_uid=hd.UID(), instance_number=instance,
        manufacturer=MANUFACTURER, manufacturer_model_name=MANUFACTURER,
        software_versions=__version__, device_serial_number=DEVICE_SERIAL_NUMBER,
        omit_empty_frames=False, content_label=content_label, content_description=description,
        series_description=f"perfroi {description}"[:64],
    )
    seg.BodyPartExamined = "HEART"
    return seg


def _label_descriptions(study, kind: str):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from . import __version__

    model = study.attrs["steps"].get("segment", {}).get("parameters", {}).get("model")
    algorithm = hd.AlgorithmIdentificationSequence(
        name="napari-perfroi U-Net", family=codes.cid7162.ArtificialIntelligence,
        version=__version__, parameters=None if model is None else {"model": str(model)},
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=value, segment_label=label,
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=getattr(codes.SCT, code), algorithm_type=kind,
            algorithm_identification=algorithm, anatomic_regions=[codes.SCT.Heart],
            display_color=hd.color.CIELabColor.from_rgb(*colour),
        )
        for value, (label, code, colour) in LABEL_SEGMENTS.items()
    ]


def _aha_descriptions():
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from . import __version__
    from .report import SEGMENT_NAMES

    algorithm = hd.AlgorithmIdentificationSequence(
        name="napari-perfroi AHA sectors", family=codes.cid7162.MorphologicalOperations,
        version=__version__,
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=segment, segment_label=f"AHA segment {segment} {name}",
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=aha_segment_code(segment), algorithm_type="AUTOMATIC",
            algorithm_identification=algorithm, anatomic_regions=[codes.SCT.Heart],
        )
        for segment, name in SEGMENT_NAMES.items()
    ]


def aha_segment_code(segment: int):
    """The SNOMED CT code of AHA segment 1-16, e.g. "left ventricle basal anterior segment"."""
    from pydicom.sr.codedict import codes

    from .report import SEGMENT_NAMES

    words = "".join(word.capitalize() for word in SEGMENT_NAMES[segment].split())
    return getattr(codes.SCT, f"LeftVentricle{words}Segment")


# ---------------------------------------------------------------- parametric maps
def _parametric_maps(study, sources) -> list[tuple[str, Any]]:
    reference = sources.reference_datasets(study.attrs["reference_frame"])
    groups = sources.series_slices()
    objects = []
    for name in MAPS:
        if not study.has(name):
            continue
        values = study.read(name)
        for g, slices in enumerate(groups):
            if np.isfinite(values[slices]).any():  # a map without a value is left out
                objects.append((f"{_suffixed(name, g, groups)}.dcm",
                                parametric_map(name, values[slices],
                                               [reference[s] for s in slices], instance=g + 1)))
    return objects


def parametric_map(name: str, values: np.ndarray, datasets, *, instance: int = 1):
    """A Parametric Map of ``values`` (float32, one plane per dataset, NaN: no value)."""
    import highdicom as hd

    from . import __version__

    code, meaning, what = MAP_UNITS[name]
    finite = np.isfinite(values)
    low, high = float(values[finite].min()), float(values[finite].max())
    window = MBF_WINDOW if name == "mbf" else (low, high if high > low else low + 1.0)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=name[:16], lut_explanation=f"{what} ({meaning})"[:64],
        unit=hd.sr.CodedConcept(code, "UCUM", meaning), value_range=(low, high),
        slope=1, intercept=0,
    )
    pm = hd.pm.ParametricMap(
        source_images=datasets,
        pixel_array=np.where(finite, values, NO_VALUE).astype(np.float32),
        series_instance_uid=hd.UID(), series_number=SERIES_NUMBERS[name],
        sop_instance_uid=hd.UID(), instance_number=instance, manufacturer=MANUFACTURER,
        manufacturer_model_name=MANUFACTURER, software_versions=__version__,
        device_serial_number=DEVICE_SERIAL_NUMBER, contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(  # exact: maps span less than 1
            window_center=(window[0] + window[1]) / 2, window_width=window[1] - window[0],
            voi_lut_function="LINEAR_EXACT")],
        content_label=name.upper()[:16], content_description=what,
        series_description=f"perfroi {what} ({code})"[:64],
    )
    pm.BodyPartExamined = "HEART"
    pm.FloatPixelPaddingValue = NO_VALUE
    pm.FloatPixelPaddingRangeLimit = NO_VALUE
    return pm


# ---------------------------------------------------------------- report
def _report_pdf(study) -> bytes | None:
    """The flow report as a one-page PDF; None without a flow report."""
    from .report import report_pdf_bytes
    from .study import StoreError

    try:
        return report_pdf_bytes(study)
    except StoreError:
        return None


def encapsulated_pdf(pdf: bytes, datasets):
    """An Encapsulated PDF Storage object of ``pdf`` in the study of ``datasets`` (the
    images it reports on, referenced as its sources)."""
    import datetime as dt

    import highdicom as hd
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian

    from . import __version__
    from .dicom_sources import EMPTY_IDENTITY, IDENTITY_KEYWORDS

    first = datasets[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = hd.UID()
    for keyword in (*EMPTY_IDENTITY, *IDENTITY_KEYWORDS):
        if keyword in first:
            ds[keyword] = first[keyword]
    ds.StudyInstanceUID = first.StudyInstanceUID
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = hd.UID()
    ds.SeriesNumber = SERIES_NUMBERS["report"]
    ds.SeriesDescription = "perfroi myocardial perfusion report"
    ds.Manufacturer = MANUFACTURER
    ds.SoftwareVersions = __version__
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    now = dt.datetime.now()
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.AcquisitionDateTime = ""
    ds.BurnedInAnnotation = "NO"  # the page names the study store, no patient
    ds.DocumentTitle = "Myocardial perfusion report"
    ds.ConceptNameCodeSequence = []
    ds.SourceInstanceSequence = [_reference(image) for image in datasets]
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf + b"\0" * (len(pdf) % 2)  # even length, as DICOM needs
    return ds


def _reference(image):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = image.SOPClassUID
    item.ReferencedSOPInstanceUID = image.SOPInstanceUID
    return item


def _suffixed(name: str, group: int, groups: list) -> str:
    """``name``, with ``-N`` for source series N when the images span several."""
    return name if len(groups) == 1 else f"{name}-{group + 1}"
