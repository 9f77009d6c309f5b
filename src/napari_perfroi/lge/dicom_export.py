"""The LGE study's results as DICOM: the ``lge/`` folder of a results export.

:func:`lge_results` adds to :func:`napari_perfroi.dicom_results.export_results`,
when the store holds an LGE study with labels or scar:

``lge/scar.dcm``
    Segmentation (binary) of the LGE stack, one instance: segments LV myocardium,
    scar (the scar array's scar and MVO) and, when the scar holds any,
    microvascular obstruction; every frame references the LGE image of its slice.
``lge/aha.dcm``
    Segmentation of the AHA segments 1-16 on the LGE slices (when placed).
``lge/images/``
    Only for an LGE study not imported from DICOM (a phantom): the LGE MR series
    the results refer to, written from the store in the study and frame of
    reference of the perfusion images. Its UIDs are derived from the image, so
    the same study always gets the same series.

An LGE stack imported from several series (one per slice) gets one object per
series, ``-N`` added to its name. The patient and study identification comes from
the original LGE files (``lge_source``) when given, else from the perfusion images
when both are one study (empty otherwise).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from ..dicom_results import LABEL_SEGMENTS, _aha_descriptions, _segmentation, _suffixed
from ..dicom_sources import (IDENTITY_KEYWORDS, SourceImages, _check_referable,
                             image_header)
from ..errors import InputError
from ..study import MYOCARDIUM
from .store import MVO, LgeStudy, has_lge

LGE_FOLDER = "lge"
DICOM_IMPORTER = "napari_perfroi.lge.dicom_import"  # the ``source`` importer of an imported stack
LGE_SERIES_NUMBER = 20  # of the LGE series written for a stack not imported from DICOM
_UINT16_RANGE = 65535


def lge_results(study, perfusion: SourceImages,
                lge_source: str | os.PathLike | None = None) -> list[tuple[str, Any]]:
    """``(relative path, dataset)`` of the LGE objects of ``study`` (see the module
    docstring); none when the store has no LGE study or nothing derived from it yet.

    ``perfusion`` is the perfusion images (:func:`~napari_perfroi.dicom_sources.source_images`);
    ``lge_source`` the original LGE DICOM folder or zip, for the identification.
    """
    import highdicom as hd

    if not has_lge(study):
        if lge_source is not None:
            raise InputError(f"{study.path}: has no LGE study to take {lge_source} for")
        return []
    lge = LgeStudy.open(study)
    if not (lge.has("labels") or lge.has("scar")):
        return []
    sources = lge_source_images(lge, perfusion, lge_source)
    groups = sources.series_slices()
    headers = sources.reference_datasets([0] * lge.shape[0])
    pixels, descriptions = _scar_segments(lge)
    objects = []
    series_uid = hd.UID()
    for g, slices in enumerate(groups):
        objects.append((f"{LGE_FOLDER}/{_suffixed('scar', g, groups)}.dcm", _segmentation(
            [headers[s] for s in slices], pixels[slices], descriptions, series_uid, "lge",
            instance=g + 1, content_label="LGE", description="LGE myocardium and scar")))
    if lge.has("aha"):
        aha = lge.read("aha")
        series_uid = hd.UID()
        objects += [(f"{LGE_FOLDER}/{_suffixed('aha', g, groups)}.dcm", _segmentation(
            [headers[s] for s in slices], aha[slices], _aha_descriptions(), series_uid,
            "lge_aha", instance=g + 1, content_label="LGE_AHA",
            description="AHA 16-segment model on the LGE images"))
            for g, slices in enumerate(groups)]
    images = [(f"{LGE_FOLDER}/images/{ds.SOPInstanceUID}.dcm", ds) for ds in sources.series]
    return images + objects


def lge_source_images(lge: LgeStudy, perfusion: SourceImages,
                      lge_source: str | os.PathLike | None = None) -> SourceImages:
    """The LGE images, one header per slice (``datasets[s][0]``): the original instances
    of a stack imported from DICOM, else the series written for it (``series``).
    Raises :class:`InputError` when they cannot be referenced or ``lge_source`` holds
    other images."""
    attrs = lge.attrs
    source = attrs["source"]
    if source.get("importer") != DICOM_IMPORTER:
        if lge_source is not None:
            raise InputError(f"{lge.path}: not imported from DICOM, so it has no original "
                             f"LGE series to take {lge_source} for")
        return _written_series(lge, attrs, perfusion)
    _check_referable(lge, attrs, source)
    if lge_source is not None:
        identity = _identity(lge, source, lge_source)
    elif source["study_instance_uid"] == perfusion.references["study_instance_uid"]:
        identity = _identity_of(perfusion.datasets[0][0])
    else:
        identity = {}
    headers = [[image_header(attrs, source, identity, s, uid, lge.shape[1:])]
               for s, uid in enumerate(source["sop_instance_uid"])]
    return SourceImages(source, headers)


# ---------------------------------------------------------------- segments
def _scar_segments(lge: LgeStudy):
    """Pixels (S, Y, X, segments) and descriptions of the myocardium, scar and MVO
    segments present."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    masks, descriptions = [], []

    def add(mask, label, category, kind, step, array, colour):
        algorithm_type, algorithm = _algorithm(lge, step, array)
        masks.append(mask)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=len(masks), segment_label=label,
            segmented_property_category=category, segmented_property_type=kind,
            algorithm_type=algorithm_type, algorithm_identification=algorithm,
            anatomic_regions=[codes.SCT.Heart],
            display_color=hd.color.CIELabColor.from_rgb(*colour)))

    if lge.has("labels"):
        label, code, colour = LABEL_SEGMENTS[MYOCARDIUM]
        add(lge.read("labels") == MYOCARDIUM, label, codes.SCT.AnatomicalStructure,
            getattr(codes.SCT, code), "lge-segment", "labels", colour)
    if lge.has("scar"):
        scar = lge.read("scar")
        # LGE shows replacement fibrosis, whatever its cause (infarct or not): "Scar tissue"
        # is that tissue and a segmentation property type (CID 7191); "Myocardial
        # infarction" is a diagnosis, not a region one can draw.
        add(scar > 0, "Myocardial scar", codes.SCT.Tissue, codes.SCT.ScarTissue, "lge-scar",
            "scar", (255, 0, 255))
        if (scar == MVO).any():
            # Microvascular obstruction is the infarct's necrotic core that contrast does
            # not reach; "Necrosis" is the lesion segmentation type (CID 7159) for it.
            add(scar == MVO, "Microvascular obstruction",
                codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Necrosis, "lge-scar",
                "scar", (0, 255, 255))
    return np.stack(masks, axis=-1), descriptions


def _algorithm(lge: LgeStudy, step: str, array: str):
    """(algorithm type, identification) of ``array``: MANUAL when ``step`` never made it
    (drawn by hand), SEMIAUTOMATIC when a slice was edited since, AUTOMATIC otherwise."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from .. import __version__
    from .pipeline import SCAR_METHODS

    run = lge.attrs["steps"].get(step)
    if run is None:
        return "MANUAL", None
    parameters = run["parameters"]
    if step == "lge-segment":
        name, family = "napari-perfroi LGE U-Net", codes.cid7162.ArtificialIntelligence
        chosen = {"model": parameters["model"]}
    else:
        method = parameters["method"]
        name = f"napari-perfroi LGE scar ({SCAR_METHODS[method]})"
        thresholding = method in ("nsd", "fwhm")  # of the remote myocardium's intensities
        family = (codes.cid7162.HistogramAnalysis if thresholding
                  else codes.cid7162.ArtificialIntelligence)
        chosen = {key: str(parameters[key]) for key in ("method", "n_sd", "model")
                  if key in parameters}
    edited = lge.has(f"{array}_edited") and bool(lge.read(f"{array}_edited").any())
    algorithm = hd.AlgorithmIdentificationSequence(
        name=name[:64], family=family, version=__version__, parameters=chosen)
    return ("SEMIAUTOMATIC" if edited else "AUTOMATIC"), algorithm


# ---------------------------------------------------------------- images
def _identity(lge: LgeStudy, source: dict[str, Any], lge_source) -> dict[str, Any]:
    """Patient and study identification from the original LGE files at ``lge_source``,
    which must hold every image of the stack (and may hold others, e.g. the magnitude
    series left out of a PSIR import)."""
    from ..dicom import read_header, scan_frames

    frames, _ = scan_frames(lge_source, warn=lambda _: None)
    by_uid = {frame.file.sop_uid: frame for frame in frames}
    if any(uid not in by_uid for uid in source["sop_instance_uid"]):
        theirs = dict.fromkeys(frame.file.series_uid for frame in frames)
        raise InputError(
            f"{lge_source}: holds series {', '.join(theirs)}, not the LGE images of "
            f"{lge.study_path} (series {', '.join(dict.fromkeys(source['series_instance_uid']))})"
        )
    return _identity_of(read_header(by_uid[source["sop_instance_uid"][0]].ref))


def _identity_of(header) -> dict[str, Any]:
    return {keyword: header[keyword] for keyword in IDENTITY_KEYWORDS if keyword in header}


def _written_series(lge: LgeStudy, attrs: dict[str, Any], perfusion: SourceImages):
    """The LGE series written for a stack not imported from DICOM, in the study, frame of
    reference and identification of the perfusion images."""
    from pydicom.uid import generate_uid

    from ..dicom_export import _frame_dataset, decimal_string
    from .phantom import _BREATH_HOLD_S, _LGE_START_S

    if attrs["image_orientation_patient"] is None:
        raise InputError(f"{lge.path}: the LGE study has no patient geometry "
                         "(image_orientation_patient), so results cannot be placed on its images")
    image = lge.read("image")
    stored, slope, intercept = stored_values(image)
    perfusion_image = perfusion.datasets[0][0]
    entropy = ["napari-perfroi", "lge", perfusion_image.StudyInstanceUID,
               hashlib.sha256(image.tobytes()).hexdigest()]
    psir = attrs["lge_kind"] == "psir"
    inversion_ms = attrs["inversion_time_ms"]
    series = {
        "study_uid": perfusion_image.StudyInstanceUID,
        "series_uid": generate_uid(entropy_srcs=[*entropy, "series"]),
        "frame_of_reference_uid": perfusion_image.FrameOfReferenceUID,
        "description": "LGE PSIR SAX" if psir else "LGE MAG SAX",
        "number": LGE_SERIES_NUMBER,
        "pixel_spacing_mm": attrs["pixel_spacing_mm"],
        "saturation_time_s": None if inversion_ms is None else inversion_ms / 1000.0,
    }
    identity = _identity_of(perfusion_image)
    datasets = []
    for s, pixels in enumerate(stored):
        ds = _frame_dataset(
            pixels, attrs, series, sop_uid=generate_uid(entropy_srcs=[*entropy, f"image-{s}"]),
            instance=s + 1, time_s=_LGE_START_S + _BREATH_HOLD_S * s,  # a breath hold a slice
            orientation=np.asarray(attrs["image_orientation_patient"], dtype=float),
            position=np.asarray(attrs["image_position_patient"][s], dtype=float),
            slice_location=float(attrs["slice_positions_mm"][s]),
        )
        for element in identity.values():
            ds[element.tag] = element
        ds.ImageType = (["DERIVED", "PRIMARY", "PSIR", "ND"] if psir
                        else ["ORIGINAL", "PRIMARY", "M", "ND"])
        ds.SequenceVariant = ["SP", "MP"]
        ds.RescaleSlope, ds.RescaleIntercept = decimal_string(slope), decimal_string(intercept)
        datasets.append(ds)
    references = {
        "study_instance_uid": series["study_uid"],
        "frame_of_reference_uid": series["frame_of_reference_uid"],
        "series_instance_uid": [ds.SeriesInstanceUID for ds in datasets],
        "sop_class_uid": [ds.SOPClassUID for ds in datasets],
        "sop_instance_uid": [ds.SOPInstanceUID for ds in datasets],
        "frame_number": None,
    }
    return SourceImages(references, [[ds] for ds in datasets], datasets)


def stored_values(image: np.ndarray) -> tuple[np.ndarray, float, float]:
    """uint16 pixels, RescaleSlope and RescaleIntercept that give ``image`` back: exactly
    for uint16 and for whole numbers spanning at most 65535 (PSIR: signed values, a
    negative intercept), else to 1/65535 of the image's range."""
    if image.dtype == np.uint16:
        return image, 1.0, 0.0
    values = image.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    intercept = min(0.0, np.floor(low))
    if np.array_equal(values, np.round(values)) and high - intercept <= _UINT16_RANGE:
        return (values - intercept).astype(np.uint16), 1.0, intercept
    slope = (high - low) / _UINT16_RANGE if high > low else 1.0
    return np.round((values - low) / slope).astype(np.uint16), slope, low
