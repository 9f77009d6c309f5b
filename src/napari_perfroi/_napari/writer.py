"""napari writer: the "LV ROI" Shapes layer as a CSV of circles (one row per frame).

The circles are read back from the layer's shapes (whatever napari tools did
to them), their review state from ``features["state"]``; the study the layer
belongs to (``metadata[STORE_KEY]``) gives the frame times and pixel spacing.
The rows are those of :func:`napari_perfroi.roi_export.write_roi_csv`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..roi import EDITED, NONE
from ..study import ROI_STATES, Study
from .layers import ROI_LAYER, STORE_KEY, shape_circle

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

    name = meta.get("name", "layer")
    store = (meta.get("metadata") or {}).get(STORE_KEY)
    if not store:
        raise InputError(
            f"'{name}' does not belong to a study store: only the '{ROI_LAYER}' layer of a "
            "study opened from a store (*.zarr) can be saved as perfroi circles"
        )
    study = Study.open(store)
    n_slices, n_times = study.shape[:2]
    features = meta.get("features")
    state_names = None
    if features is not None and "state" in features:
        state_names = list(features["state"])
    roi, states = layer_circles(data, meta.get("shape_type"), state_names, n_slices, n_times)
    return [str(write_roi_csv(path, study, roi, states))]
