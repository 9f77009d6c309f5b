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

The "aha" analysis step finds the RV insertion points on each slice's
reference-frame labels (:func:`rv_insertion_points_deg`), tells the anterior
one from the inferior one with the patient orientation
(:func:`anterior_display_deg`, :func:`order_insertions`), draws the sectors
(:func:`segment_geometry`) and summarises a parameter map per segment
(:func:`segment_statistics`, :func:`territory_means`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import InputError
from .segment.postprocess import largest_component
from .study import LV_BLOOD, MYOCARDIUM, RV_BLOOD

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


# RV insertion detection: rays from the LV centre, 0.5 degrees apart, sampled every
# quarter pixel, find the arc of the LV epicardium that the RV blood pool touches.
_RAY_STEP_DEG = 0.5
_RAY_SAMPLE_PX = 0.25
_CONTACT_GAP_MM = 3.0  # RV blood this close outside the epicardium touches it
_BRIDGED_BREAK_DEG = 10.0  # shorter breaks in the touching arc are noise
_MIN_CONTACT_DEG = 20.0  # a shorter touching arc is no RV
# The RV blood pool ends where its free wall meets the epicardium; the
# insertion point (the free wall's mid-line) lies about half a wall beyond.
_INSERTION_BEYOND_POOL_MM = 1.5
_MIN_IN_PLANE = 0.1  # shortest projection of the anterior direction that still sets it


def _mean_spacing_mm(spacing_mm) -> float:
    return float(np.mean(np.atleast_1d(np.asarray(spacing_mm, dtype=float))))


def _longest_circular_run(flags: np.ndarray, max_break: int) -> tuple[int, int] | None:
    """(first, last) index of the longest circular run of True, breaks of up to
    ``max_break`` False entries bridged; None if nothing is True or the run closes."""
    covered = np.flatnonzero(flags)
    if covered.size == 0:
        return None
    n = flags.size
    breaks = np.diff(np.append(covered, covered[0] + n)) - 1  # False entries after each
    real = np.flatnonzero(breaks > max_break)
    if real.size == 0:
        return None
    starts = covered[(real + 1) % covered.size]  # a run starts after each real break
    ends = covered[np.roll(real, -1)]  # and ends before the next one
    lengths = np.mod(ends - starts, n) + 1
    best = int(np.argmax(lengths))
    return int(starts[best]), int(ends[best])


def rv_insertion_points_deg(
    labels: np.ndarray, centre: tuple[float, float], spacing_mm
) -> tuple[float, float] | None:
    """The two RV insertion angles on one (Y, X) label image, about ``centre`` (row, col).

    The insertion points are the ends of the arc of the LV epicardium that
    the RV blood pool wraps, moved out by about half an RV free wall. They
    come in counter-clockwise order as displayed: the RV arc runs
    counter-clockwise from the first to the second. ``spacing_mm`` is the
    pixel spacing (one value or (row, col)). None when no RV blood pool
    touches the LV over at least 20 degrees.
    """
    labels = np.asarray(labels)
    lv = largest_component(np.isin(labels, (LV_BLOOD, MYOCARDIUM)))
    rv = labels == RV_BLOOD
    if not lv.any() or not rv.any():
        return None
    spacing = _mean_spacing_mm(spacing_mm)
    r0, c0 = centre
    gap_samples = int(np.ceil(_CONTACT_GAP_MM / spacing / _RAY_SAMPLE_PX))
    lv_rows, lv_cols = np.nonzero(lv)
    reach = float(np.hypot(lv_rows - r0, lv_cols - c0).max())
    radii = np.arange(0.0, reach + 2.0 + (gap_samples + 1) * _RAY_SAMPLE_PX, _RAY_SAMPLE_PX)
    theta = np.arange(0.0, 360.0, _RAY_STEP_DEG)
    rows = r0 - np.outer(np.sin(np.radians(theta)), radii)
    cols = c0 + np.outer(np.cos(np.radians(theta)), radii)
    on_lv = ndimage.map_coordinates(lv.astype(np.float32), [rows, cols], order=1) >= 0.5
    on_rv = ndimage.map_coordinates(rv.astype(np.float32), [rows, cols], order=1) >= 0.5
    has_lv = on_lv.any(axis=1)
    epicardium = radii.size - 1 - np.argmax(on_lv[:, ::-1], axis=1)  # outermost LV sample
    beyond = np.arange(radii.size) - epicardium[:, None]
    touching = has_lv & (on_rv & (beyond > 0) & (beyond <= gap_samples)).any(axis=1)
    run = _longest_circular_run(touching, round(_BRIDGED_BREAK_DEG / _RAY_STEP_DEG))
    if run is None:
        return None
    first, last = run
    if (np.mod(last - first, theta.size) + 1) * _RAY_STEP_DEG < _MIN_CONTACT_DEG:
        return None

    def beyond_pool_deg(ray: int) -> float:
        radius_mm = max(radii[epicardium[ray]], 1.0) * spacing
        return float(np.degrees(_INSERTION_BEYOND_POOL_MM / radius_mm))

    half_step = _RAY_STEP_DEG / 2.0
    return (
        _wrap_deg(theta[first] - half_step - beyond_pool_deg(first)),
        _wrap_deg(theta[last] + half_step + beyond_pool_deg(last)),
    )


def anterior_display_deg(image_orientation_patient: Sequence[float] | None) -> float | None:
    """Display angle of the patient-anterior direction projected into the image plane.

    ``image_orientation_patient`` is DICOM ImageOrientationPatient: the
    patient (LPS) directions of increasing column (image right), then of
    increasing row (image down). None when it is None or the plane is
    nearly perpendicular to the anterior direction.
    """
    if image_orientation_patient is None:
        return None
    cosines = np.asarray(image_orientation_patient, dtype=float).reshape(2, 3)
    anterior = np.array([0.0, -1.0, 0.0])
    right, up = cosines[0] @ anterior, -(cosines[1] @ anterior)
    if np.hypot(right, up) < _MIN_IN_PLANE:
        return None
    return _wrap_deg(np.degrees(np.arctan2(up, right)))


def order_insertions(
    a_deg: float, b_deg: float, anterior_deg: float | None
) -> tuple[float, float]:
    """(anterior, inferior) insertion: the anterior one is nearer ``anterior_deg``
    (image up, 90 degrees, when None); a tie keeps ``a_deg`` first."""
    towards = 90.0 if anterior_deg is None else anterior_deg
    a_off = abs(float(_signed_difference_deg(a_deg, towards)))
    b_off = abs(float(_signed_difference_deg(b_deg, towards)))
    return (float(b_deg), float(a_deg)) if b_off < a_off else (float(a_deg), float(b_deg))


def _arc_bisector_deg(start_deg: float, end_deg: float) -> float:
    """Bisector of the counter-clockwise arc from ``start_deg`` to ``end_deg``."""
    return _wrap_deg(start_deg + np.mod(end_deg - start_deg, 360.0) / 2.0)


@dataclass
class AhaGeometry:
    """Sector geometry of a study's slices (the "aha" step's result).

    ``centre`` (row, col) px is the centroid of the LV blood pool and
    myocardium (NaN on a slice without LV); ``rv_insertion_deg`` is
    (anterior, inferior) per slice; ``septal_deg`` the bisector of the arc
    between them that faces the RV; ``aha`` (S, Y, X) uint8 the segment
    1-16 of each myocardium pixel, 0 elsewhere; ``messages`` one line per
    fallback taken.
    """

    centre: list[tuple[float, float]]
    rv_insertion_deg: list[tuple[float, float]]
    septal_deg: list[float]
    anterior_deg: float | None
    aha: np.ndarray
    messages: list[str]


def _lv_centre(labels: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(np.isin(labels, (LV_BLOOD, MYOCARDIUM)))
    if rows.size == 0:
        return (float("nan"), float("nan"))
    return (float(rows.mean()), float(cols.mean()))


def _lv_reaches_image_edge(labels: np.ndarray) -> bool:
    """Whether LV blood pool or myocardium lies in the outermost rows or columns."""
    lv = np.isin(labels, (LV_BLOOD, MYOCARDIUM))
    return bool(lv[[0, -1]].any() or lv[:, [0, -1]].any())


def segment_geometry(
    labels_ref: np.ndarray,
    levels: Sequence[str],
    image_orientation_patient: Sequence[float] | None,
    spacing_mm,
) -> AhaGeometry:
    """AHA sectors of every slice from its reference-frame labels (S, Y, X).

    A slice without RV insertion points takes those of the nearest slice
    that has them (the more basal one on a tie) and says so in ``messages``,
    as it does of a slice whose LV reaches the image edge (the heart is cut
    by the field of view).
    Raises InputError when no slice has them.
    """
    labels_ref = np.asarray(labels_ref)
    if labels_ref.ndim != 3 or len(levels) != labels_ref.shape[0]:
        raise ValueError(
            f"labels_ref {labels_ref.shape} needs (S, Y, X) with one level per slice, "
            f"got {len(levels)} levels"
        )
    anterior = anterior_display_deg(image_orientation_patient)
    centres = [_lv_centre(slice_labels) for slice_labels in labels_ref]
    found = [
        None if np.isnan(centre[0]) else rv_insertion_points_deg(slice_labels, centre, spacing_mm)
        for slice_labels, centre in zip(labels_ref, centres, strict=True)
    ]
    have = [k for k, points in enumerate(found) if points is not None]
    if not have:
        raise InputError(
            "no slice shows RV blood pool next to the LV myocardium: "
            "cannot place the RV insertion points for the AHA segments"
        )
    messages = []
    insertions, septal = [], []
    aha_map = np.zeros(labels_ref.shape, dtype=np.uint8)
    for k, level in enumerate(levels):
        source = min(have, key=lambda j: (abs(j - k), j))
        arc_start, arc_end = found[source]
        insertions.append(order_insertions(arc_start, arc_end, anterior))
        septal.append(_arc_bisector_deg(arc_start, arc_end))
        if np.isnan(centres[k][0]):
            messages.append(f"slice {k + 1} ({level}): no LV, no segments")
            continue
        if source != k:
            messages.append(
                f"slice {k + 1} ({level}): no RV insertion found, took slice {source + 1}'s"
            )
        if _lv_reaches_image_edge(labels_ref[k]):
            messages.append(
                f"slice {k + 1} ({level}): the LV reaches the image edge, part of the "
                "myocardium may lie outside the field of view and its segments be incomplete"
            )
        aha_map[k] = sector_labels(
            labels_ref[k] == MYOCARDIUM, centres[k], septal[k], level,
            anterior_deg=insertions[k][0],
        )
    return AhaGeometry(centres, insertions, septal, anterior, aha_map, messages)


def segment_statistics(values: np.ndarray, aha: np.ndarray) -> list[dict]:
    """Per segment 1-16: mean, median, population SD and pixel count of the finite
    ``values`` inside it (same shape as ``aha``); None and 0 pixels where absent."""
    values = np.asarray(values, dtype=float)
    aha = np.asarray(aha)
    if values.shape != aha.shape:
        raise ValueError(f"values {values.shape} and aha {aha.shape} differ in shape")
    inside = np.isfinite(values) & (aha > 0)
    segments, samples = aha[inside], values[inside]
    statistics = []
    for segment in range(1, 17):
        chosen = samples[segments == segment]
        present = chosen.size > 0
        statistics.append({
            "segment": segment,
            "mean": float(chosen.mean()) if present else None,
            "median": float(np.median(chosen)) if present else None,
            "sd": float(chosen.std()) if present else None,
            "pixels": int(chosen.size),
        })
    return statistics


def territory_means(segment_values: Mapping[int, float | None]) -> dict[str, float | None]:
    """Mean of each coronary territory's imaged segments (segment number -> value;
    missing, None or NaN: not imaged); None for a territory with none imaged."""
    means = {}
    for territory, segments in TERRITORIES.items():
        imaged = [segment_values.get(s) for s in segments]
        imaged = [float(v) for v in imaged if v is not None and np.isfinite(v)]
        means[territory] = float(np.mean(imaged)) if imaged else None
    return means


def lowest_territory(segment_values: Mapping[int, float | None]) -> str | None:
    """The territory with the lowest :func:`territory_means`; None if none is imaged."""
    imaged = {t: m for t, m in territory_means(segment_values).items() if m is not None}
    return min(imaged, key=imaged.get) if imaged else None
