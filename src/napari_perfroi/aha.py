"""AHA 16-segment geometry on short-axis images.

Conventions (ARCHITECTURE.md, "Conventions"): angles are degrees in [0, 360)
about the LV centre, 0 towards +col (image right), increasing
counter-clockwise as displayed: ``theta = atan2(-(r - r0), c - c0)``.

Sectors are anchored on the septal bisector, the bisector of the arc between
the two RV insertion points that faces the RV. Basal (1-6) and mid (7-12)
slices have six 60-degree sectors with the 2|3 (8|9) boundary on the
bisector; apical slices (13-16) have four 90-degree sectors with 14 centred
on it. Numbering runs from the anterior insertion through the septum to the
inferior insertion, which is counter-clockwise as displayed in a standard
view (anterior up, RV on the left) and clockwise in a mirrored one.
"""

from __future__ import annotations

import numpy as np

TERRITORIES = {
    "lad": (1, 2, 7, 8, 13, 14),
    "rca": (3, 4, 9, 10, 15),
    "lcx": (5, 6, 11, 12, 16),
}
LEVEL_SEGMENTS = {
    "basal": (1, 2, 3, 4, 5, 6),
    "mid": (7, 8, 9, 10, 11, 12),
    "apical": (13, 14, 15, 16),
}


def _wrap_deg(angle):
    """Angle(s) in [0, 360); float rounding never yields 360 itself."""
    wrapped = np.mod(angle, 360.0)
    wrapped = np.where(wrapped >= 360.0, 0.0, wrapped)
    return float(wrapped) if np.ndim(wrapped) == 0 else wrapped


def _signed_difference_deg(to_deg, from_deg):
    """Shortest signed turn from ``from_deg`` to ``to_deg``, in [-180, 180)."""
    return np.mod(np.asarray(to_deg, dtype=float) - from_deg + 180.0, 360.0) - 180.0


def angle_deg(rows, cols, centre) -> np.ndarray:
    """Angle of pixel(s) (rows, cols) about ``centre`` = (row, col), degrees in [0, 360)."""
    r0, c0 = centre
    rows = np.asarray(rows, dtype=float)
    cols = np.asarray(cols, dtype=float)
    return _wrap_deg(np.degrees(np.arctan2(-(rows - r0), cols - c0)))


def septal_bisector_deg(anterior_insertion_deg: float, inferior_insertion_deg: float) -> float:
    """Bisector of the septal arc between the two RV insertion points.

    The RV wraps the septum over less than half of the LV circumference
    (insertion points are typically 90-150 degrees apart), so the septal arc
    is the shorter of the two arcs joining the insertion points; its
    bisector faces the RV. Points exactly 180 degrees apart are ambiguous and
    resolved as in a standard view: counter-clockwise from the anterior one.
    """
    turn = float(_signed_difference_deg(inferior_insertion_deg, anterior_insertion_deg))
    if turn == -180.0:
        turn = 180.0
    return _wrap_deg(anterior_insertion_deg + turn / 2.0)


def numbering_direction(anterior_insertion_deg: float, septal_deg: float) -> int:
    """+1 if segment numbers run counter-clockwise as displayed, -1 if clockwise.

    Numbering runs from the anterior insertion towards the septal bisector,
    so the direction is the sense of that (shorter than 180 degree) turn.
    """
    return 1 if _signed_difference_deg(septal_deg, anterior_insertion_deg) >= 0 else -1


def segment_of_angle(theta_deg, septal_deg: float, level: str, direction: int = 1) -> np.ndarray:
    """AHA segment (uint8) of each angle ``theta_deg`` on a slice of ``level``.

    ``direction`` is :func:`numbering_direction` (+1: counter-clockwise as displayed).
    """
    if level not in LEVEL_SEGMENTS:
        raise ValueError(f"unknown slice level {level!r}: expected basal, mid or apical")
    # Angle from the bisector, measured in the numbering direction.
    from_septum = _wrap_deg(direction * (np.asarray(theta_deg, dtype=float) - septal_deg))
    if level == "apical":
        quadrant = np.minimum(np.floor(_wrap_deg(from_septum + 45.0) / 90.0), 3).astype(int)
        return (13 + (quadrant + 1) % 4).astype(np.uint8)  # 14 centred on the bisector
    sextant = np.minimum(np.floor(from_septum / 60.0), 5).astype(int)
    first = LEVEL_SEGMENTS[level][0]
    return (first + (sextant + 2) % 6).astype(np.uint8)  # 3 (9) starts at the bisector


def sector_labels(
    myocardium_mask: np.ndarray,
    centre: tuple[float, float],
    septal_deg: float,
    level: str,
    *,
    anterior_deg: float | None = None,
) -> np.ndarray:
    """AHA segment 1-16 on the myocardium pixels of one slice, 0 elsewhere (uint8, Y x X).

    ``centre`` is the LV centre (row, col), ``septal_deg`` the septal bisector
    (:func:`septal_bisector_deg`), ``anterior_deg`` the anterior RV insertion
    angle, which sets the numbering direction (None: counter-clockwise as
    displayed, the standard view).
    """
    mask = np.asarray(myocardium_mask, dtype=bool)
    direction = 1 if anterior_deg is None else numbering_direction(anterior_deg, septal_deg)
    rows, cols = np.nonzero(mask)
    labels = np.zeros(mask.shape, dtype=np.uint8)
    theta = angle_deg(rows, cols, centre)
    labels[rows, cols] = segment_of_angle(theta, septal_deg, level, direction)
    return labels
