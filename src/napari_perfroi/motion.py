"""Per-frame rigid (translation) registration of a perfusion series.

The contrast changes from frame to frame (dark heart, then RV, LV and
myocardium enhance), so frames are not registered to one fixed frame. Each
frame is registered to its own contrast-matched target: a low-rank (SVD over
time) reconstruction of the motion-corrected series, which follows the slow
contrast change but not the frame-to-frame breathing motion. Shifts and model
are refined in rounds (estimate, undo the shifts, rebuild the model) until
they settle.

Before the bolus arrives the heart has no contrast of its own, so those frames
are first registered on the whole image, then refined on the heart window
against the median of the aligned pre-bolus frames (a sharp pre-contrast
image of the heart against the lungs).
Proton-density frames at the start of the series are too unlike the rest to
register; they take the shift of the nearest registered frame.

Convention (as the store's ``motion``): frame t shows the reference frame's
content shifted by ``shifts[t]`` (row, col) px, and ``shifts[reference] = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .progress import within

# Components beyond the temporal mean: more would also model the breathing motion.
RANK = 1
COEFFICIENT_SIGMA_FRAMES = 1.5  # temporal smoothing of the contrast model
MAX_ROUNDS = 4
CONVERGED_PX = 0.05  # stop when no shift changes more than this between rounds
MAX_SHIFT_MM = 20.0  # breathing moves the heart by up to ~2 cm between frames
WINDOW_FRACTION = 0.5  # side of the registered window, as a fraction of the image
BOLUS_ARRIVAL_FRACTION = 0.1  # of the peak enhancement in the heart window
PD_BRIGHTNESS_RATIO = 1.5  # leading frames this much brighter than the next are proton density
MAX_PD_FRAMES = 5
SMOOTH_SIGMA_PX = 1.0  # denoising before registration
PRE_BOLUS_ROUNDS = 2  # re-registrations of the pre-bolus frames to their own median


@dataclass(frozen=True)
class MotionResult:
    shifts: np.ndarray  # float32 (T, 2): (row, col) px of each frame relative to the reference
    reference_frame: int


def estimate_motion(
    series: np.ndarray,
    reference_frame: int | None = None,
    max_shift_px: float = 10.0,
    part=None,
) -> MotionResult:
    """Estimate the in-plane translation of every frame of one slice (T, Y, X).

    ``reference_frame`` defaults to the registered frame most similar to the
    series' temporal median (all structures visible). Shifts are searched
    within ``max_shift_px`` of the target. ``part(fraction)``, if given, hears
    how far the search is after each round.
    """
    frames = np.asarray(series, dtype=np.float32)
    if frames.ndim != 3:
        raise ValueError(f"series must be (T, Y, X), got shape {frames.shape}")
    n_frames = frames.shape[0]
    shifts = np.zeros((n_frames, 2), dtype=np.float64)
    registered = np.flatnonzero(~proton_density_frames(frames))
    if registered.size >= 2 and _has_structure(frames):
        frames = ndimage.gaussian_filter(frames, sigma=(0, SMOOTH_SIGMA_PX, SMOOTH_SIGMA_PX))
        window = _heart_window(frames[registered])
        whole = _whole_window(frames.shape[1:])
        before_bolus = _before_bolus(frames[registered], window)
        for done in range(MAX_ROUNDS):
            previous = shifts.copy()
            aligned = _undo_shifts(frames[registered], shifts[registered])
            # The first round's target is the plain mean: before alignment the
            # leading component would model the breathing motion itself.
            targets = _low_rank(aligned, RANK if done else 0)
            for target, t, early in zip(targets, registered, before_bolus):
                # Before the bolus the heart has no contrast of its own: use the
                # whole image (chest wall, liver, lungs) instead.
                area = whole if early else window
                shifts[t] = _shift_to_target(frames[t], target, area, max_shift_px)
            if part is not None:
                part((done + 1) / (MAX_ROUNDS + 1))  # the last share: refinement
            if np.abs(shifts - previous).max() <= CONVERGED_PX:
                break
        _refine_before_bolus(frames, shifts, registered[before_bolus], window, max_shift_px)
        _fill_unregistered(shifts, registered)
    if reference_frame is None:
        reference_frame = _most_typical_frame(_undo_shifts(frames, shifts), registered)
    if not 0 <= reference_frame < n_frames:
        raise ValueError(f"reference_frame {reference_frame} outside 0..{n_frames - 1}")
    shifts -= shifts[reference_frame]
    return MotionResult(shifts=shifts.astype(np.float32), reference_frame=int(reference_frame))


def max_shift_px(pixel_spacing_mm) -> float:
    """The shift search radius in pixels for a pixel spacing (mm, scalar or per axis)."""
    return MAX_SHIFT_MM / float(np.min(pixel_spacing_mm))


def estimate_study_motion(study, progress=None) -> list[MotionResult]:
    """Estimate motion of every slice; write ``motion`` and the ``reference_frame`` attribute."""
    from . import __version__

    n_slices = study.shape[0]
    search_px = max_shift_px(study.pixel_spacing_mm)
    results = []
    for s in range(n_slices):
        results.append(estimate_motion(np.asarray(study.image[s]), max_shift_px=search_px,
                                       part=within(progress, s, n_slices)))
        if progress is not None:
            progress(s + 1, n_slices)
    study.write("motion", np.stack([r.shifts for r in results]))
    study.update_attrs(reference_frame=[r.reference_frame for r in results])
    parameters = {
        "method": "low-rank contrast-matched phase correlation, bounded search",
        "rank": RANK,
        "coefficient_sigma_frames": COEFFICIENT_SIGMA_FRAMES,
        "max_rounds": MAX_ROUNDS,
        "converged_px": CONVERGED_PX,
        "max_shift_mm": MAX_SHIFT_MM,
        "window_fraction": WINDOW_FRACTION,
        "bolus_arrival_fraction": BOLUS_ARRIVAL_FRACTION,
        "pre_bolus_rounds": PRE_BOLUS_ROUNDS,
        "reference": "frame most similar to the temporal median",
    }
    study.record_step("motion", parameters, __version__)
    return results


def proton_density_frames(frames: np.ndarray) -> np.ndarray:
    """Boolean (T,): the leading run of frames much brighter than the frames just after it.

    Compared with the next few frames (pre-contrast), not the whole series,
    whose enhanced frames can be nearly as bright as proton-density ones.
    """
    means = frames.mean(axis=(1, 2))
    leading = np.zeros(means.size, dtype=bool)
    for n in range(1, min(MAX_PD_FRAMES, means.size - 3) + 1):
        if means[:n].min() > PD_BRIGHTNESS_RATIO * np.median(means[n : n + 3]):
            leading[:] = False
            leading[:n] = True
    return leading


def _has_structure(frames: np.ndarray) -> bool:
    return bool(frames.shape[1] > 1 and frames.shape[2] > 1 and np.ptp(frames) > 0)


def _heart_window(frames: np.ndarray) -> tuple[slice, slice, np.ndarray]:
    """A box centred on the strongest temporal signal change (the enhancing heart).

    Registering only this box keeps the static chest wall from pulling the
    estimate towards zero; a Hann taper avoids edge effects in the FFT.
    """
    n_y, n_x = frames.shape[1:]
    change = ndimage.gaussian_filter(frames.std(axis=0), sigma=max(n_y, n_x) / 20)
    centre_y, centre_x = np.unravel_index(np.argmax(change), change.shape)
    box_y = max(8, int(n_y * WINDOW_FRACTION))
    box_x = max(8, int(n_x * WINDOW_FRACTION))
    rows = _centred_slice(centre_y, box_y, n_y)
    cols = _centred_slice(centre_x, box_x, n_x)
    taper = np.outer(np.hanning(rows.stop - rows.start), np.hanning(cols.stop - cols.start))
    return rows, cols, taper.astype(np.float32)


def _whole_window(shape: tuple[int, int]) -> tuple[slice, slice, np.ndarray]:
    taper = np.outer(np.hanning(shape[0]), np.hanning(shape[1])).astype(np.float32)
    return slice(0, shape[0]), slice(0, shape[1]), taper


def _before_bolus(frames: np.ndarray, window) -> np.ndarray:
    """Boolean (T,): frames before the heart window starts to enhance."""
    rows, cols, _ = window
    signal = ndimage.median_filter(frames[:, rows, cols].mean(axis=(1, 2)), size=3, mode="nearest")
    baseline = np.median(signal[: max(3, len(signal) // 10)])
    rise = signal > baseline + BOLUS_ARRIVAL_FRACTION * (signal.max() - baseline)
    arrival = int(np.argmax(rise)) if rise.any() else 0
    return np.arange(len(frames)) < arrival


def _refine_before_bolus(frames, shifts, early, window, max_shift_px: float) -> None:
    """Re-register the pre-bolus frames on the heart window, in place.

    Registered on the whole image, these frames are pulled towards the chest
    wall, which breathes less than the heart. Once aligned, their median is a
    sharp pre-contrast image of the heart against the lungs: registering each
    of them to it on the heart window removes most of that pull.
    """
    if early.size < 3:
        return
    for _ in range(PRE_BOLUS_ROUNDS):
        template = np.median(_undo_shifts(frames[early], shifts[early]), axis=0)
        for t in early:
            shifts[t] = _shift_to_target(frames[t], template, window, max_shift_px)


def _centred_slice(centre: int, size: int, length: int) -> slice:
    size = min(size, length)
    start = int(np.clip(centre - size // 2, 0, length - size))
    return slice(start, start + size)


def _shift_to_target(
    frame: np.ndarray, target: np.ndarray, window, max_shift_px: float
) -> np.ndarray:
    """(row, col) shift of ``frame``'s content relative to ``target``'s.

    Phase correlation (whitened spectrum: insensitive to the contrast
    difference between frame and target), with the peak searched only within
    ``max_shift_px``: in noisy pre-contrast frames a far, spurious peak can
    otherwise win. Sub-pixel position by a parabola through the peak.
    """
    rows, cols, taper = window
    moving = _tapered(frame[rows, cols], taper)
    fixed = _tapered(target[rows, cols], taper)
    if not moving.any() or not fixed.any():
        return np.zeros(2)
    cross = np.fft.fft2(fixed) * np.conj(np.fft.fft2(moving))
    cross /= np.abs(cross) + 1e-6 * np.abs(cross).max()
    correlation = np.fft.fftshift(np.real(np.fft.ifft2(cross)))
    centre = np.array(correlation.shape) // 2
    radius = int(min(np.ceil(max_shift_px), *(centre - 1)))
    search = correlation[
        centre[0] - radius : centre[0] + radius + 1, centre[1] - radius : centre[1] + radius + 1
    ]
    peak = np.unravel_index(np.argmax(search), search.shape)
    # The correlation peaks where ``moving`` shifted by the offset matches ``fixed``.
    offset = np.array(peak, dtype=np.float64) - radius
    for axis in range(2):
        before, after = list(peak), list(peak)
        before[axis] -= 1
        after[axis] += 1
        if before[axis] >= 0 and after[axis] < search.shape[axis]:
            offset[axis] += _parabola_vertex(search[tuple(before)], search[peak], search[tuple(after)])
    return -offset


def _parabola_vertex(before: float, at: float, after: float) -> float:
    curvature = before - 2 * at + after
    return 0.5 * (before - after) / curvature if curvature != 0 else 0.0


def _tapered(patch: np.ndarray, taper: np.ndarray) -> np.ndarray:
    return (patch - patch.mean()) * taper


def _undo_shifts(frames: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    return np.stack(
        [
            ndimage.shift(frame, -shift, order=1, mode="nearest") if shift.any() else frame
            for frame, shift in zip(frames, shifts)
        ]
    )


def _low_rank(frames: np.ndarray, rank: int) -> np.ndarray:
    """Temporal mean plus ``rank`` components of the series (SVD over time)."""
    n_frames = frames.shape[0]
    matrix = frames.reshape(n_frames, -1)
    mean = matrix.mean(axis=0)
    if rank == 0:
        return np.broadcast_to(mean, matrix.shape).reshape(frames.shape)
    centred = matrix - mean
    # The components from the small (T, T) Gram matrix: the same as an SVD of
    # the (T, Y*X) matrix, at a fraction of the cost.
    gram = centred.astype(np.float64) @ centred.T.astype(np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    top = np.argsort(eigenvalues)[::-1][: min(rank, n_frames)]
    singular = np.sqrt(np.clip(eigenvalues[top], 0.0, None))
    u = eigenvectors[:, top]
    vt = (u.T @ centred) / np.where(singular > 0, singular, 1.0)[:, None]
    # Smoothing the temporal coefficients keeps the slow contrast change but
    # not the beat-to-beat breathing motion that the components also pick up.
    coefficients = ndimage.gaussian_filter1d(
        u * singular, sigma=COEFFICIENT_SIGMA_FRAMES, axis=0, mode="nearest"
    )
    return (mean + coefficients @ vt).reshape(frames.shape)


def _fill_unregistered(shifts: np.ndarray, registered: np.ndarray) -> None:
    """Give each unregistered frame the shift of the nearest registered frame."""
    for t in range(len(shifts)):
        nearest = registered[np.argmin(np.abs(registered - t))]
        shifts[t] = shifts[nearest]


def _most_typical_frame(aligned: np.ndarray, registered: np.ndarray) -> int:
    """The registered frame with the highest correlation to the temporal median."""
    if registered.size == 0:
        return 0
    median = np.median(aligned[registered], axis=0).ravel()
    median = median - median.mean()
    best, best_score = int(registered[0]), -np.inf
    for t in registered:
        frame = aligned[t].ravel() - aligned[t].mean()
        norm = np.linalg.norm(frame) * np.linalg.norm(median)
        score = frame @ median / norm if norm > 0 else 0.0
        if score > best_score:
            best, best_score = int(t), score
    return best
