"""napari writers: the "LV ROI" Shapes layer as a CSV of circles (one row per frame),
and the "labels" layer as DICOM Segmentations.

The circles are read back from the layer's shapes (whatever napari tools did
to them), their review state from ``features["state"]``; the study the layer
belongs to (``metadata[STORE_KEY]``) gives the frame times and pixel spacing.
The rows are those of :func:`napari_perfroi.roi_export.write_roi_csv`.

The labels, as painted, are written as one Segmentation per dynamic, ``tNNN.dcm``
(see :mod:`napari_perfroi.dicom_results`), into a folder named after the chosen
file without ``.dcm`` (with ``images/``, the MR series, for a study not imported
from DICOM); frames that differ from the stored labels count as edited.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..roi import EDITED, NONE
from ..study import ROI_STATES, Study
from .layers import LABELS_LAYER, ROI_LAYER, STORE_KEY, shape_circle

STATE_CODES = {name: code for code, name in ROI_STATES.items()}
# A shape without a known state was drawn by hand.
UNKNOWN_STATE = EDITED


def layer_circles(data, shape_types, state_names, n_slices: int, n_times: int):
    """Circles (S, T, 3) and states (S, T) of a layer's shapes, one shape per frame.

    Raises :class:`InputError` for a shape off the study's frames or two
    shapes on one frame: no circle is dropped silently.
    """
    roi = np.full((n_slices, n_times, 3), np.nan, dtype=np.float32)
    states = np.full((n_slices, n_times), NONE, dtype=np.uint8)
    shape_types = list(shape_types) if shape_types is not None else ["ellipse"] * len(data)
    state_names = list(state_names) if state_names is not None else [None] * len(data)
    seen: dict[tuple[int, int], int] = {}
    for index, vertices in enumerate(data):
        found = shape_circle(vertices, shape_types[index])
        if found is None or not (0 <= found[0] < n_slices and 0 <= found[1] < n_times):
            raise InputError(f"shape {index} is not on one frame of the study "
                             f"({n_slices} slices x {n_times} frames)")
        s, t, circle = found
        if (s, t) in seen:
            raise InputError(f"shapes {seen[s, t]} and {index} are both on slice {s} frame {t}: "
                             "keep one circle per frame")
        seen[s, t] = index
        roi[s, t] = circle
        states[s, t] = STATE_CODES.get(state_names[index], UNKNOWN_STATE)
    return roi, states


def write_roi_layer(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer for a Shapes layer to ``*.csv``; the paths written."""
    from ..roi_export import write_roi_csv

    study = _layer_study(meta, ROI_LAYER, "perfroi circles")
    n_slices, n_times = study.shape[:2]
    features = meta.get("features")
    state_names = None
    if features is not None and "state" in features:
        state_names = list(features["state"])
    roi, states = layer_circles(data, meta.get("shape_type"), state_names, n_slices, n_times)
    return [str(write_roi_csv(path, study, roi, states))]


def write_labels_layer(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer for a Labels layer to ``*.dcm``; the paths written."""
    from ..dicom_results import check_output_folder, labels_segmentations, write_objects
    from ..dicom_sources import source_images
    from ..label_edits import edited_frames

    study = _layer_study(meta, LABELS_LAYER, "DICOM Segmentations")
    labels = np.asarray(data)
    if labels.shape != study.shape:
        raise InputError(f"'{meta.get('name')}' has shape {labels.shape}, the study "
                         f"{study.shape}: only the study's own labels can be saved as DICOM")
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 3:
        raise InputError(f"'{meta.get('name')}' holds values outside 0-3 (background, LV blood "
                         "pool, myocardium, RV blood pool)")
    labels = labels.astype(np.uint8)
    painted = (labels != study.read("labels")).any(axis=(2, 3)) if study.has("labels") else True
    folder = Path(path).with_suffix("")
    check_output_folder(folder)
    sources = source_images(study)
    images = [(f"images/{ds.SOPInstanceUID}.dcm", ds) for ds in sources.series]
    segmentations = labels_segmentations(study, labels, sources, edited_frames(study) | painted)
    return [str(written) for written in write_objects(images + segmentations, folder)]


def _layer_study(meta: dict, layer: str, what: str) -> Study:
    """The study a layer belongs to (``metadata[STORE_KEY]``); InputError if none."""
    store = (meta.get("metadata") or {}).get(STORE_KEY)
    if not store:
        raise InputError(
            f"'{meta.get('name', 'layer')}' does not belong to a study store: only the "
            f"'{layer}' layer of a study opened from a store (*.zarr) can be saved as {what}"
        )
    return Study.open(store)
