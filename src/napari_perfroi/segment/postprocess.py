"""Keep the anatomy plausible: one LV cavity in a closed myocardial ring, RV beside it."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..study import LV_BLOOD, MYOCARDIUM, RV_BLOOD

MIN_LV_AREA_MM2 = 50.0  # a cavity smaller than ~8 mm across is not an LV
MYOCARDIUM_REACH_MM = 4.5  # myocardium must lie this close to the cavity
RV_REACH_MM = 9.0  # the RV cavity must lie this close to the myocardium (septum)


def plausible_labels(labels: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Cleaned copy of a (Y, X) label map; all background when no LV cavity is found.

    The largest LV cavity is kept; myocardium only near it; everything the
    LV and its myocardium enclose joins the cavity; cavity pixels touching
    anything but myocardium become myocardium, which closes the ring; the
    largest RV component near the myocardium is kept.
    """
    cavity = largest_component(labels == LV_BLOOD)
    if cavity.sum() * pixel_mm**2 < MIN_LV_AREA_MM2:
        return np.zeros_like(labels)
    near_cavity = _within(cavity, MYOCARDIUM_REACH_MM / pixel_mm)
    myocardium = _components_touching(labels == MYOCARDIUM, near_cavity)
    filled = ndimage.binary_fill_holes(cavity | myocardium)
    cavity = filled & ~myocardium
    cavity = largest_component(cavity)
    open_edge = cavity & ndimage.binary_dilation(~(cavity | myocardium))
    myocardium |= open_edge
    cavity &= ~open_edge

    rv = labels == RV_BLOOD
    rv &= ~(cavity | myocardium)
    rv = largest_component(rv & _within(myocardium | cavity, RV_REACH_MM / pixel_mm), keep_in=rv)

    cleaned = np.zeros_like(labels)
    cleaned[rv] = RV_BLOOD
    cleaned[myocardium] = MYOCARDIUM
    cleaned[cavity] = LV_BLOOD
    return cleaned


def largest_component(mask: np.ndarray, keep_in: np.ndarray | None = None) -> np.ndarray:
    """The largest connected component of ``mask``, grown to its whole component in ``keep_in``."""
    components, n = ndimage.label(mask)
    if n == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(components.ravel())[1:]
    largest = components == 1 + int(np.argmax(sizes))
    if keep_in is None:
        return largest
    return _components_touching(keep_in, largest)


def _components_touching(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    components, _ = ndimage.label(mask)
    touched = np.unique(components[seed & mask])
    return np.isin(components, touched[touched > 0])


def _within(mask: np.ndarray, radius_px: float) -> np.ndarray:
    if not mask.any():
        return mask.copy()
    return ndimage.distance_transform_edt(~mask) <= radius_px
