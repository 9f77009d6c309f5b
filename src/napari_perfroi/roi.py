"""LV-centred circles per frame: proposals from the labels, propagation, review states.

A circle is (row, col, radius) in pixels of ``image``; it encloses the LV
cavity and the myocardium plus a margin. Review states follow the store's
``roi_state`` codes. Moving a circle between frames of a slice follows the
motion: frame t shows the reference frame shifted by ``motion[t]``, so a
centre ``c_k`` on frame k is at ``c_k - motion[k] + motion[t]`` on frame t.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .study import LV_BLOOD, MYOCARDIUM, ROI_STATES

NONE, PROPOSED, EDITED, PROPAGATED, ACCEPTED = (
    next(code for code, name in ROI_STATES.items() if name == wanted)
    for wanted in ("none", "proposed", "edited", "propagated", "accepted")
)
REVIEWED = (EDITED, ACCEPTED)  # never replaced by a proposal or a propagation unless asked
DEFAULT_MARGIN_MM = 3.0


def mean_spacing(pixel_spacing_mm) -> float:
    return float(np.mean(pixel_spacing_mm))


def circle_of_frame(labels: np.ndarray, pixel_spacing_mm, margin_mm: float) -> np.ndarray:
    """(row, col, radius) px of one (Y, X) label map; NaN when it has no LV.

    Centre: centroid of LV cavity + myocardium. Radius: the largest distance
    (mm) from the centre to a myocardium pixel, plus ``margin_mm``.
    """
    rows, cols = np.nonzero(np.isin(labels, (LV_BLOOD, MYOCARDIUM)))
    myo_rows, myo_cols = np.nonzero(labels == MYOCARDIUM)
    if rows.size == 0 or myo_rows.size == 0:
        return np.full(3, np.nan, dtype=np.float32)
    row, col = rows.mean(), cols.mean()
    dy, dx = (myo_rows - row) * pixel_spacing_mm[0], (myo_cols - col) * pixel_spacing_mm[1]
    radius_mm = float(np.sqrt(dy * dy + dx * dx).max()) + margin_mm
    return np.array([row, col, radius_mm / mean_spacing(pixel_spacing_mm)], dtype=np.float32)


def circle_mask(roi: np.ndarray) -> np.ndarray:
    """Boolean (...,): the circles (..., 3) that are finite with a positive radius."""
    roi = np.asarray(roi, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.all(np.isfinite(roi), axis=-1) & (roi[..., 2] > 0)


def frames_with_circle(roi: np.ndarray) -> np.ndarray:
    """(n, 2) (slice, frame) of the frames that have a circle."""
    return np.argwhere(circle_mask(roi))


def moved_circle(circle: np.ndarray, motion: np.ndarray, source: int, targets) -> np.ndarray:
    """The circle of frame ``source`` carried to frames ``targets`` by the motion, (n, 3)."""
    targets = np.atleast_1d(np.asarray(targets))
    out = np.repeat(np.asarray(circle, dtype=np.float32)[None], len(targets), axis=0)
    out[:, :2] += motion[targets] - motion[source]
    return out


def propose_slice(labels: np.ndarray, motion: np.ndarray, pixel_spacing_mm,
                  margin_mm: float = DEFAULT_MARGIN_MM) -> np.ndarray:
    """Circles (T, 3) of one slice (T, Y, X); frames without an LV take the nearest frame's."""
    circles = np.stack([circle_of_frame(frame, pixel_spacing_mm, margin_mm) for frame in labels])
    found = np.flatnonzero(np.isfinite(circles[:, 2]))
    if found.size == 0:
        return circles
    for t in np.flatnonzero(~np.isfinite(circles[:, 2])):
        nearest = int(found[np.argmin(np.abs(found - t))])
        circles[t] = moved_circle(circles[nearest], motion, nearest, t)[0]
    return circles


def propose(labels: np.ndarray, motion: np.ndarray, pixel_spacing_mm,
            margin_mm: float = DEFAULT_MARGIN_MM, progress=None) -> np.ndarray:
    """Circles (S, T, 3) of every frame; NaN on slices with no LV at all."""
    circles = []
    for s in range(labels.shape[0]):
        circles.append(propose_slice(labels[s], motion[s], pixel_spacing_mm, margin_mm))
        if progress is not None:
            progress(s + 1, labels.shape[0])
    return np.stack(circles).astype(np.float32)


def merge_proposals(proposed: np.ndarray, roi=None, states=None) -> tuple[np.ndarray, np.ndarray]:
    """New proposals, keeping the circle and state of every edited or accepted frame."""
    new_roi = proposed.astype(np.float32).copy()
    new_states = np.where(circle_mask(proposed), PROPOSED, NONE).astype(np.uint8)
    if roi is not None and states is not None:
        keep = np.isin(states, REVIEWED)
        new_roi[keep] = roi[keep]
        new_states[keep] = states[keep]
    return new_roi, new_states


def propagate(roi: np.ndarray, states: np.ndarray, motion: np.ndarray, slice_index: int,
              frame: int, overwrite_reviewed: bool = False) -> np.ndarray:
    """Carry the circles of the reviewed frames to the other frames of a slice, in place.

    The anchors are ``frame`` and, unless ``overwrite_reviewed``, the slice's
    edited and accepted frames, which keep their circles. Each anchor's circle
    is taken back to the reference frame (minus its motion); every other frame
    gets these reference circles interpolated linearly in frame index (the
    nearest anchor's beyond the first and last), moved by its own motion. With
    one anchor this is its circle following the motion; with several, an error
    of the motion estimate that an annotator corrected on some frames is also
    corrected, smoothly, on the frames between them.
    Returns the frames that changed (now ``propagated``).
    """
    circles, motion = roi[slice_index], motion[slice_index]
    if not np.all(np.isfinite(circles[frame])):
        raise InputError(f"slice {slice_index} frame {frame} has no circle to propagate")
    anchors = np.zeros(len(circles), dtype=bool)
    anchors[frame] = True
    if not overwrite_reviewed:
        anchors |= np.isin(states[slice_index], REVIEWED) & np.all(np.isfinite(circles), axis=-1)
    anchor_frames, targets = np.flatnonzero(anchors), np.flatnonzero(~anchors)
    reference = circles[anchor_frames].astype(np.float64)
    reference[:, :2] -= motion[anchor_frames]
    moved = np.stack([np.interp(targets, anchor_frames, reference[:, k]) for k in range(3)], axis=-1)
    moved[:, :2] += motion[targets]
    circles[targets] = moved
    states[slice_index, targets] = PROPAGATED
    return targets


def circle_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of circles (..., 3) (row, col, radius); NaN if either is missing."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = np.hypot(a[..., 0] - b[..., 0], a[..., 1] - b[..., 1])
    r1, r2 = a[..., 2], b[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        # Lens area of two overlapping circles (the general case).
        c1 = np.clip((d * d + r1 * r1 - r2 * r2) / (2 * d * r1), -1, 1)
        c2 = np.clip((d * d + r2 * r2 - r1 * r1) / (2 * d * r2), -1, 1)
        lens = (r1 * r1 * np.arccos(c1) + r2 * r2 * np.arccos(c2)
                - 0.5 * np.sqrt(np.clip((-d + r1 + r2) * (d + r1 - r2) * (d - r1 + r2)
                                        * (d + r1 + r2), 0, None)))
        inside = np.pi * np.minimum(r1, r2) ** 2
        overlap = np.where(d >= r1 + r2, 0.0, np.where(d <= np.abs(r1 - r2), inside, lens))
        return overlap / (np.pi * (r1 * r1 + r2 * r2) - overlap)


def circle_from_corners(corners: np.ndarray) -> np.ndarray:
    """(row, col, radius) of an ellipse given by its bounding-box corners (4, >=2).

    Centre: mean of the corners; radius: mean half extent. Independent of the
    corners' order (napari draws them in another order than it builds them).
    """
    yx = np.asarray(corners, dtype=float)[:, -2:]
    centre = yx.mean(axis=0)
    radius = float(np.ptp(yx, axis=0).mean() / 2)
    return np.array([centre[0], centre[1], radius], dtype=np.float32)


def proposals_for_study(study, margin_mm: float | None = None, progress=None):
    """Proposals from the study's labels and motion (S, T, 3), without writing them.

    ``margin_mm`` None: the margin the roi step last used, else the default.
    """
    for name, step in (("labels", "segment"), ("motion", "motion")):
        if not study.has(name):
            raise InputError(f"{study.path}: run the {step} step before roi")
    if margin_mm is None:
        recorded = study.attrs["steps"].get("roi", {}).get("parameters", {})
        margin_mm = recorded.get("margin_mm", DEFAULT_MARGIN_MM)
    return propose(study.read("labels"), study.read("motion"), study.pixel_spacing_mm,
                   margin_mm, progress)


def read_review(study) -> tuple[np.ndarray, np.ndarray]:
    """The study's circles (S, T, 3) and states (S, T).

    Circles written without states (by an older roi step) count as proposed.
    """
    roi = study.read("roi")
    if study.has("roi_state"):
        return roi, study.read("roi_state")
    return roi, np.where(circle_mask(roi), PROPOSED, NONE).astype(np.uint8)


def save_review(study, roi: np.ndarray, states: np.ndarray) -> None:
    """Write circles, then states: a state on disk never refers to an unsaved circle."""
    study.write("roi", np.asarray(roi, dtype=np.float32))
    study.write("roi_state", np.asarray(states, dtype=np.uint8))


def propose_study(study, margin_mm: float = DEFAULT_MARGIN_MM, progress=None) -> str:
    """The roi step: write proposals, keeping reviewed frames; return a one-line summary."""
    from . import __version__

    proposed = proposals_for_study(study, margin_mm, progress)
    previous = read_review(study) if study.has("roi") else (None, None)
    roi, states = merge_proposals(proposed, *previous)
    save_review(study, roi, states)
    study.record_step("roi", {"margin_mm": margin_mm, "radius": "farthest myocardium pixel + margin",
                              "centre": "centroid of LV blood pool + myocardium"}, __version__)
    kept = int(np.isin(states, REVIEWED).sum())
    empty = [str(s) for s in range(roi.shape[0]) if not np.isfinite(roi[s, :, 2]).any()]
    summary = f"{int((states == PROPOSED).sum())} circles proposed, {kept} reviewed kept"
    return summary + (f"; no LV on slice(s) {', '.join(empty)}" if empty else "")
