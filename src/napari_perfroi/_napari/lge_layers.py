"""The LGE study's layers, placed in the viewer's world of its perfusion study.

The perfusion layers count slices on their first axis and millimetres in-plane
(row x row spacing, col x col spacing from each slice's first pixel). Each LGE
slice shows on the perfusion slice at its position (its ``perfusion_slice``),
on every frame; LGE slices without one (``None``) are not shown, and where two
LGE slices share a perfusion slice the one nearer its plane is shown.

An LGE slice has its own pixel spacing, matrix and in-plane position, so the
layers hold a canvas of shape (perfusion slices, 1, rows, cols): every shown
LGE slice is copied in at a whole-pixel offset, and one affine transform maps a
canvas pixel to the perfusion world, computed from both stacks'
``image_position_patient``, ``image_orientation_patient`` and
``pixel_spacing_mm`` (rotated or flipped in-plane axes included). The first
shown slice lies exactly where the patient geometry puts it; the others are
within half an LGE pixel per axis (exact when, as usual, both stacks are
stepped along the same direction). Without patient geometry (or with LGE slices at
right angles to the perfusion slices) each LGE slice is centred on the perfusion image,
at its own pixel spacing, and the dock says so.

Canvas pixels outside the shown LGE slices are NaN in the image (transparent)
and 0 in the labels; what is painted there is no LGE pixel and is not kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .layers import (
    AXIS_LABELS,
    CONTRAST_PERCENTILES,
    LABEL_COLORS,
    ROLE_KEY,
    STORE_KEY,
    LayerData,
    on_every_frame,
)

LGE_IMAGE_LAYER = "LGE"
LGE_LABELS_LAYER = "LGE labels"
SCAR_LAYER = "scar"
LGE_LAYERS = (LGE_IMAGE_LAYER, LGE_LABELS_LAYER, SCAR_LAYER)  # bottom to top
# 0 none, 1 scar, 2 microvascular obstruction (lge.store NO_SCAR, SCAR, MVO)
SCAR_COLORS = {None: "transparent", 0: "transparent", 1: "orange", 2: "deepskyblue"}


@dataclass(frozen=True)
class LgePlacement:
    """Where the LGE slices show in the world of their perfusion study."""

    shown_on: tuple[int | None, ...]  # per LGE slice: the perfusion slice it shows on, or None
    offsets: np.ndarray  # (S_lge, 2) int: canvas (row, col) of each LGE slice's first pixel
    canvas_shape: tuple[int, int, int]  # (perfusion slices, rows, cols)
    affine: np.ndarray  # (3, 3): canvas (row, col, 1) -> perfusion world (y mm, x mm, 1)
    note: str  # how the slices were placed, in words

    def shown_slices(self) -> list[int]:
        """The LGE slices on show, in order."""
        return [k for k, j in enumerate(self.shown_on) if j is not None]

    def world_point(self, k: int, row: float, col: float) -> tuple[int, float, float]:
        """(perfusion slice, y mm, x mm) where pixel (row, col) of LGE slice ``k`` shows."""
        canvas = self.affine @ (row + self.offsets[k, 0], col + self.offsets[k, 1], 1.0)
        return self.shown_on[k], float(canvas[0]), float(canvas[1])


# ---------------------------------------------------------------- placement
def lge_placement(perfusion_attrs: dict[str, Any], perfusion_shape, lge_attrs: dict[str, Any],
                  lge_shape) -> LgePlacement:
    """The placement of an LGE stack (attrs, shape (S, Y, X)) in its perfusion study's
    world (attrs, shape (S, T, Y, X))."""
    n_perfusion, _, perfusion_rows, perfusion_cols = perfusion_shape
    n_lge, rows, cols = lge_shape
    geometry = _patient_geometry(perfusion_attrs, lge_attrs, n_lge)
    shown_on = _one_per_perfusion_slice(perfusion_attrs, lge_attrs, lge_shape, geometry)
    shown = [k for k, j in enumerate(shown_on) if j is not None]
    if geometry is None:
        row_mm, col_mm = _spacing(lge_attrs["pixel_spacing_mm"])
        linear = np.diag([row_mm, col_mm])
        perfusion_centre = (np.array([perfusion_rows, perfusion_cols]) - 1) / 2 * _spacing(
            perfusion_attrs["pixel_spacing_mm"])
        translation = perfusion_centre - linear @ ((np.array([rows, cols]) - 1) / 2)
        offsets = np.zeros((n_lge, 2), dtype=int)
        how = ("no patient geometry" if _lacks_geometry(perfusion_attrs, lge_attrs)
               else "LGE slices at right angles to the perfusion slices")
        how += ": each LGE slice is centred on the perfusion image"
    else:
        linear, starts = geometry  # starts: (S_lge, 2) world of each slice's first pixel
        reference = shown[0] if shown else 0
        # In LGE pixels, how far each slice's first pixel lies from the reference slice's.
        relative = np.linalg.solve(linear, (starts - starts[reference]).T).T
        offsets = np.rint(relative).astype(int)
        if shown:
            offsets -= offsets[shown].min(axis=0)
        translation = starts[reference] - linear @ offsets[reference]
        how = "placed by patient position"
    offsets[[k for k in range(n_lge) if k not in shown]] = 0
    extent = offsets[shown].max(axis=0, initial=0) + (rows, cols)
    affine = np.eye(3)
    affine[:2, :2], affine[:2, 2] = linear, translation
    return LgePlacement(tuple(shown_on), offsets, (n_perfusion, int(extent[0]), int(extent[1])),
                        affine, f"{_shown_text(shown_on, lge_attrs['perfusion_slice'])}; {how}")


def _spacing(pixel_spacing_mm) -> np.ndarray:
    return np.asarray(pixel_spacing_mm, dtype=float)[:2]


def _patient_geometry(perfusion_attrs, lge_attrs, n_lge):
    """(linear (2, 2), starts (S_lge, 2)): LGE pixel (row, col) of slice k -> perfusion world
    ``linear @ (row, col) + starts[k]`` on its perfusion slice; None without geometry."""
    if _lacks_geometry(perfusion_attrs, lge_attrs):
        return None
    p_cosines = np.asarray(perfusion_attrs["image_orientation_patient"], dtype=float)
    l_cosines = np.asarray(lge_attrs["image_orientation_patient"], dtype=float)
    p_across, p_down = p_cosines[:3], p_cosines[3:]  # along a row (col index), along a column
    l_across, l_down = l_cosines[:3], l_cosines[3:]
    row_mm, col_mm = _spacing(lge_attrs["pixel_spacing_mm"])
    linear = np.array([[row_mm * (l_down @ p_down), col_mm * (l_across @ p_down)],
                       [row_mm * (l_down @ p_across), col_mm * (l_across @ p_across)]])
    if abs(np.linalg.det(linear)) < 1e-6 * row_mm * col_mm:
        return None  # slices at right angles to the perfusion's: no in-plane placement
    p_positions = np.asarray(perfusion_attrs["image_position_patient"], dtype=float)
    l_positions = np.asarray(lge_attrs["image_position_patient"], dtype=float)[:n_lge]
    starts = np.zeros((n_lge, 2))
    for k, j in enumerate(lge_attrs["perfusion_slice"]):
        offset = l_positions[k] - p_positions[0 if j is None else j]
        starts[k] = offset @ p_down, offset @ p_across
    return linear, starts


def _lacks_geometry(perfusion_attrs, lge_attrs) -> bool:
    keys = ("image_orientation_patient", "image_position_patient")
    return any(perfusion_attrs.get(key) is None or lge_attrs.get(key) is None for key in keys)


def _one_per_perfusion_slice(perfusion_attrs, lge_attrs, lge_shape, geometry) -> list:
    """Each LGE slice's perfusion slice; of two on one perfusion slice, the nearer only."""
    mapping = list(lge_attrs["perfusion_slice"])
    distance = _distance_to_perfusion_plane(perfusion_attrs, lge_attrs, lge_shape, geometry)
    for j in {j for j in mapping if j is not None}:
        sharing = [k for k, m in enumerate(mapping) if m == j]
        nearest = min(sharing, key=lambda k: distance[k])
        for k in sharing:
            if k != nearest:
                mapping[k] = None
    return mapping


def _distance_to_perfusion_plane(perfusion_attrs, lge_attrs, lge_shape, geometry) -> list:
    """Per LGE slice, the distance (mm) of its image centre to its perfusion slice's plane
    (without patient geometry: of its slice position to the perfusion slice's)."""
    mapping = lge_attrs["perfusion_slice"]
    if geometry is None:
        mine = np.asarray(lge_attrs["slice_positions_mm"], dtype=float)
        theirs = np.asarray(perfusion_attrs["slice_positions_mm"], dtype=float)
        return [np.inf if j is None else abs(mine[k] - theirs[j]) for k, j in enumerate(mapping)]
    p_cosines = np.asarray(perfusion_attrs["image_orientation_patient"], dtype=float)
    normal = np.cross(p_cosines[:3], p_cosines[3:])
    l_cosines = np.asarray(lge_attrs["image_orientation_patient"], dtype=float)
    _, rows, cols = lge_shape
    row_mm, col_mm = _spacing(lge_attrs["pixel_spacing_mm"])
    positions = np.asarray(lge_attrs["image_position_patient"], dtype=float)
    p_positions = np.asarray(perfusion_attrs["image_position_patient"], dtype=float)
    distances = []
    for k, j in enumerate(mapping):
        centre = (positions[k] + (cols - 1) / 2 * col_mm * l_cosines[:3]
                  + (rows - 1) / 2 * row_mm * l_cosines[3:])
        distances.append(np.inf if j is None else abs((centre - p_positions[j]) @ normal))
    return distances


def _shown_text(shown_on, perfusion_slice) -> str:
    """Which LGE slices show on which perfusion slices, and why the others do not."""
    shown = [(k, j) for k, j in enumerate(shown_on) if j is not None]
    if not shown:
        return "no LGE slice lies at a perfusion slice: none shown"
    parts = [f"LGE slice{_plural(shown)} {_numbers(k for k, _ in shown)} on perfusion "
             f"slice{_plural(shown)} {_numbers(j for _, j in shown)}"]
    away = [k for k, j in enumerate(perfusion_slice) if j is None]
    if away:
        parts.append(f"LGE slice{_plural(away)} {_numbers(away)} not shown: no perfusion "
                     "slice at that position")
    farther = [k for k, (j, m) in enumerate(zip(shown_on, perfusion_slice))
               if j is None and m is not None]
    if farther:
        parts.append(f"LGE slice{_plural(farther)} {_numbers(farther)} not shown: another "
                     "LGE slice is nearer the same perfusion slice")
    return "; ".join(parts)


def _plural(items) -> str:
    return "s" if len(items) > 1 else ""


def _numbers(indices) -> str:
    return ", ".join(str(i + 1) for i in indices)


# ---------------------------------------------------------------- canvas <-> LGE slices
def to_canvas(placement: LgePlacement, per_slice: np.ndarray, fill) -> np.ndarray:
    """An LGE (S_lge, Y, X) array on the canvas (S_perfusion, 1, rows, cols), ``fill``
    where no LGE slice is shown."""
    per_slice = np.asarray(per_slice)
    canvas = np.full((placement.canvas_shape[0], 1, *placement.canvas_shape[1:]), fill,
                     dtype=per_slice.dtype)
    rows, cols = per_slice.shape[1:]
    for k in placement.shown_slices():
        row, col = placement.offsets[k]
        canvas[placement.shown_on[k], 0, row:row + rows, col:col + cols] = per_slice[k]
    return canvas


def from_canvas(placement: LgePlacement, canvas: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """``stored`` (S_lge, Y, X) with each shown LGE slice taken from the canvas."""
    result = np.array(stored, copy=True)
    rows, cols = result.shape[1:]
    for k in placement.shown_slices():
        row, col = placement.offsets[k]
        result[k] = np.asarray(canvas[placement.shown_on[k], 0, row:row + rows, col:col + cols])
    return result


# ---------------------------------------------------------------- layer data
def _common(store, name: str, placement: LgePlacement, n_times: int) -> dict[str, Any]:
    scale, translate = on_every_frame((1.0, 1.0, 1.0, 1.0), n_times)
    affine = np.eye(5)
    affine[2:4, 2:4], affine[2:4, 4] = placement.affine[:2, :2], placement.affine[:2, 2]
    return {
        "name": name,
        "scale": scale,
        "translate": translate,
        "affine": affine,
        "axis_labels": AXIS_LABELS,
        "metadata": {STORE_KEY: str(store), ROLE_KEY: name},
    }


def lge_image_layer(store, lge, placement: LgePlacement, n_times: int) -> LayerData:
    """The LGE image (float32, PSIR signed), transparent outside the LGE slices."""
    image = lge.read("image").astype(np.float32)
    low, high = (float(v) for v in np.nanpercentile(image, CONTRAST_PERCENTILES))
    kwargs = _common(store, LGE_IMAGE_LAYER, placement, n_times)
    kwargs.update(contrast_limits=(low, high if high > low else low + 1.0), colormap="gray",
                  multiscale=False)
    return to_canvas(placement, image, np.nan), kwargs, "image"


def lge_labels_layer(store, lge, placement: LgePlacement, n_times: int) -> LayerData:
    """The LGE study's LV / myocardium / RV labels (view only, hidden until asked for)."""
    kwargs = _common(store, LGE_LABELS_LAYER, placement, n_times)
    kwargs.update(colormap=dict(LABEL_COLORS), opacity=0.4, visible=False)
    return to_canvas(placement, lge.read("labels"), 0), kwargs, "labels"


def scar_layer(store, lge, placement: LgePlacement, n_times: int) -> LayerData:
    """The scar (1) and microvascular obstruction (2), to paint; empty before any scar."""
    scar = lge.read("scar") if lge.has("scar") else np.zeros(lge.shape, dtype=np.uint8)
    kwargs = _common(store, SCAR_LAYER, placement, n_times)
    kwargs.update(colormap=dict(SCAR_COLORS), opacity=0.6)
    return to_canvas(placement, scar, 0), kwargs, "labels"
