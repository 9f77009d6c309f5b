"""Semi-quantitative first-pass perfusion indices: upslope, peak, time to peak and area.

These need no unsaturated arterial input. The relative upslope divides a tissue
curve's maximum upslope by that of the LV blood pool of the same series; its
stress / rest ratio is the myocardial perfusion reserve index (MPRI). All indices
are computed on the baseline-subtracted signal (the enhancement), in the signal's
own units, with the exact (possibly uneven) frame times in seconds.

The first pass is set by the LV blood-pool curve. Its foot is the last frame before
the LV peak still below ``FOOT_FRACTION`` of the rise (the rule of
:func:`napari_perfroi.flow.bolus_foot`). It ends where the LV curve, after its peak,
first reaches its minimum before recirculation, or at ``foot + FIRST_PASS_SPAN x
(peak - foot)``, whichever comes first. Tissue peaks later than the LV, so tissue
peaks are searched from the foot to ``PEAK_SEARCH_MARGIN`` first-pass lengths beyond
its end.

Maximum upslope: the least-squares slope of a straight line fitted to each run of
``w`` consecutive frames at their exact times (``w = 3``, or 5 when frames are less
than ``FAST_FRAME_S`` apart), the maximum over the runs that start at or after the
LV foot and end at most one frame after the curve's own peak. A fitted slope averages
the noise of several frames (at even spacing a 3-frame slope has half the noise of a
single frame difference, a 5-frame slope at half the frame interval under a quarter),
needs no model of the curve's shape (a gamma-variate fit is iterative and fails on
curves with recirculation or heavy noise), and is a few array operations for all
curves at once. Confining the runs to the upstroke keeps baseline glitches and
recirculation out. Like any finite difference it reads a sharp bolus (the LV at
stress, rising in 2-3 frames) somewhat below its true maximum derivative.

Peak and time to peak use a lightly smoothed curve (each frame the mean of the
curve's linear interpolant over its two neighbouring intervals: weights 1/4, 1/2, 1/4
at even spacing; applied twice for fast frames, so that it spans about the same time
as the upslope fit), refined between frames by the parabola through the three frames
around its maximum.

Missing (NaN) frames are filled by linear interpolation in time; the baseline is the
mean of the finite baseline frames. A curve with no finite baseline frame reads NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["SemiQuantitative", "semiquantitative_indices", "foot_and_peak", "lv_first_pass",
           "run_slopes", "FOOT_FRACTION", "MIN_FRAMES"]

FOOT_FRACTION = 0.05  # the LV foot: last frame before the peak below this fraction of the rise
FIRST_PASS_SPAN = 2.5  # the first pass ends at most this many foot-to-peak times after the foot
TROUGH_FRACTION = 0.5  # an LV minimum ends the first pass only below this fraction of the peak
PEAK_SEARCH_MARGIN = 0.5  # tissue peaks: searched this many first-pass lengths past its end
FAST_FRAME_S = 0.6  # below this median frame interval the upslope is fitted over more frames
SLOPE_FRAMES = 3
SLOPE_FRAMES_FAST = 5
MIN_FRAMES = 8
MIN_BASELINE_FRAMES = 2


@dataclass(frozen=True)
class SemiQuantitative:
    """Semi-quantitative indices of N tissue curves (signal units are those of the input)."""

    upslope: np.ndarray  # (N,) maximum upslope of the enhancement, signal units / s
    relative_upslope: np.ndarray  # (N,) upslope / the LV blood-pool upslope (dimensionless)
    peak_enhancement: np.ndarray  # (N,) first-pass peak minus baseline, signal units
    relative_peak: np.ndarray  # (N,) peak enhancement / baseline (NaN where baseline <= 0)
    time_to_peak_s: np.ndarray  # (N,) LV blood-pool foot to the tissue's first-pass peak, s
    first_pass_auc: np.ndarray  # (N,) area under the first-pass enhancement, signal units x s
    lv_upslope: float  # the LV blood-pool upslope used for normalisation, signal units / s
    first_pass_s: tuple[float, float]  # the first-pass window (start, end), s


def semiquantitative_indices(tissue: np.ndarray, lv_blood: np.ndarray, times_s: np.ndarray,
                             baseline: np.ndarray) -> SemiQuantitative:
    """Semi-quantitative first-pass indices of tissue signal curves.

    ``tissue`` (N, T) signal curves (a single curve (T,) reads as N = 1), ``lv_blood``
    (T,) the LV blood-pool signal of the same series and frames, ``times_s`` (T,) the
    exact, strictly increasing frame times in s, ``baseline`` (T,) bool: the
    pre-contrast frames (none: the first two frames). Raises ``ValueError`` for fewer
    than ``MIN_FRAMES`` frames, mismatched shapes or an LV curve without finite baseline.
    """
    tissue = np.atleast_2d(np.asarray(tissue, dtype=float))
    lv_blood = np.asarray(lv_blood, dtype=float)
    times = np.asarray(times_s, dtype=float)
    base = np.asarray(baseline, dtype=bool)
    _check_inputs(tissue, lv_blood, times, base)
    if not base.any():
        base = np.arange(times.size) < MIN_BASELINE_FRAMES

    curves = np.vstack([tissue, lv_blood[None]])  # the LV goes through the same estimators
    level = _finite_mean(curves[:, base])
    enhancement = fill_gaps(curves, times) - level[:, None]
    if not np.isfinite(enhancement[-1]).all():
        raise ValueError("the LV blood-pool curve has no finite baseline frame")

    foot, end = lv_first_pass(enhancement[-1], times)
    t_foot, t_end = times[foot], times[end]
    search_end = t_end + PEAK_SEARCH_MARGIN * (t_end - t_foot)
    search_stop = max(int(np.searchsorted(times, search_end, side="right")) - 1, foot)
    width = SLOPE_FRAMES_FAST if np.median(np.diff(times)) < FAST_FRAME_S else SLOPE_FRAMES
    smooth = smoothed(enhancement, times)
    if width == SLOPE_FRAMES_FAST:
        smooth = smoothed(smooth, times)
    peak, t_peak, peak_value = first_pass_peak(smooth, times, foot, search_stop)
    upslope = max_upslope(enhancement, times, foot, peak, width)
    window = enhancement[:, foot:end + 1]
    auc = np.sum(0.5 * (window[:, 1:] + window[:, :-1]) * np.diff(times[foot:end + 1]), axis=1)

    lv_upslope = float(upslope[-1])
    relative_upslope = (upslope[:-1] / lv_upslope if lv_upslope > 0
                        else np.full(tissue.shape[0], np.nan))
    with np.errstate(divide="ignore", invalid="ignore"):
        relative_peak = np.where(level[:-1] > 0, peak_value[:-1] / level[:-1], np.nan)
    return SemiQuantitative(
        upslope=upslope[:-1], relative_upslope=relative_upslope,
        peak_enhancement=peak_value[:-1], relative_peak=relative_peak,
        time_to_peak_s=t_peak[:-1] - t_foot, first_pass_auc=auc[:-1],
        lv_upslope=lv_upslope, first_pass_s=(float(t_foot), float(t_end)),
    )


def _check_inputs(tissue, lv_blood, times, base) -> None:
    n_t = times.size
    if times.ndim != 1 or lv_blood.shape != (n_t,) or base.shape != (n_t,) \
            or tissue.ndim != 2 or tissue.shape[1] != n_t:
        raise ValueError(
            f"shapes do not match: tissue {tissue.shape} must be (N, T) and lv_blood "
            f"{lv_blood.shape}, baseline {base.shape}, times_s {times.shape} all (T,)")
    if n_t < MIN_FRAMES:
        raise ValueError(f"semi-quantitative indices need at least {MIN_FRAMES} frames; "
                         f"the series has {n_t}")
    if not np.all(np.diff(times) > 0):
        raise ValueError("frame times must be finite and strictly increasing")


def _finite_mean(values: np.ndarray) -> np.ndarray:
    """Row means over the finite entries (NaN for a row with none), without warnings."""
    finite = np.isfinite(values)
    count = finite.sum(axis=1)
    total = np.where(finite, values, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def fill_gaps(curves: np.ndarray, times_s: np.ndarray) -> np.ndarray:
    """Curves (N, T) with NaN frames filled by linear interpolation in time, held at the ends.

    Rows without a finite frame stay NaN.
    """
    finite = np.isfinite(curves)
    if finite.all():
        return curves
    n_t = curves.shape[1]
    frame = np.arange(n_t)
    before = np.maximum.accumulate(np.where(finite, frame, -1), axis=1)
    after = np.minimum.accumulate(np.where(finite, frame, n_t)[:, ::-1], axis=1)[:, ::-1]
    lo = np.clip(np.where(before >= 0, before, after), 0, n_t - 1)
    hi = np.clip(np.where(after < n_t, after, before), 0, n_t - 1)
    rows = np.arange(curves.shape[0])[:, None]
    span = times_s[hi] - times_s[lo]
    weight = np.where(span > 0, (times_s - times_s[lo]) / np.where(span > 0, span, 1.0), 0.0)
    filled = curves[rows, lo] + weight * (curves[rows, hi] - curves[rows, lo])
    return np.where(finite, curves, filled)


def smoothed(curves: np.ndarray, times_s: np.ndarray) -> np.ndarray:
    """Each frame of ``curves`` (N, T) replaced by the mean of the curve's linear
    interpolant over ``[t[i-1], t[i+1]]``; the first and last frames are kept."""
    left = np.diff(times_s)[:-1]
    right = np.diff(times_s)[1:]
    out = curves.copy()
    out[:, 1:-1] = (left * (curves[:, :-2] + curves[:, 1:-1])
                    + right * (curves[:, 1:-1] + curves[:, 2:])) / (2.0 * (left + right))
    return out


def foot_and_peak(curve: np.ndarray) -> tuple[int, int]:
    """(foot, peak) frame indices of a bolus ``curve`` (T,): its maximum, and the last frame
    before it still below ``FOOT_FRACTION`` of the rise from the first frames' level."""
    peak = int(np.argmax(curve))
    start = float(np.median(curve[: max(1, min(3, peak))]))
    below = np.flatnonzero(curve[: peak + 1] < start + FOOT_FRACTION * (curve[peak] - start))
    return (int(below[-1]) if below.size else 0), peak


def lv_first_pass(lv_enhancement: np.ndarray, times_s: np.ndarray) -> tuple[int, int]:
    """(foot, end) frame indices of the first pass of a baseline-subtracted LV curve (T,).

    The foot is :func:`foot_and_peak`'s. The end is the first local
    minimum of the smoothed curve after the peak that lies below ``TROUGH_FRACTION`` of
    the peak (so noise on the down-slope does not end it), or the last frame within
    ``FIRST_PASS_SPAN`` foot-to-peak times of the foot, whichever comes first.
    """
    foot, peak = foot_and_peak(lv_enhancement)
    cap_s = times_s[foot] + FIRST_PASS_SPAN * (times_s[peak] - times_s[foot])
    cap = int(np.clip(np.searchsorted(times_s, cap_s, side="right") - 1, peak, times_s.size - 1))
    smooth = smoothed(lv_enhancement[None], times_s)[0]
    after = np.arange(peak + 1, cap)
    trough = after[(smooth[after] <= smooth[after + 1])
                   & (smooth[after] < TROUGH_FRACTION * lv_enhancement[peak])]
    return foot, int(trough[0]) if trough.size else cap


def first_pass_peak(smooth: np.ndarray, times_s: np.ndarray, start: int, stop: int):
    """Each smoothed curve's (N, T) maximum over frames ``start..stop``: its frame (N,),
    and its time (N,) [s] and value (N,) refined by the parabola through that frame and
    its neighbours (kept within them)."""
    n_t = times_s.size
    frame = start + np.argmax(smooth[:, start:stop + 1], axis=1)
    mid = np.clip(frame, 1, n_t - 2)
    rows = np.arange(smooth.shape[0])
    t0, t1, t2 = times_s[mid - 1], times_s[mid], times_s[mid + 1]
    y0, y1, y2 = smooth[rows, mid - 1], smooth[rows, mid], smooth[rows, mid + 1]
    # Newton form p(t) = y0 + d1 (t - t0) + a (t - t0)(t - t1).
    d1 = (y1 - y0) / (t1 - t0)
    a = ((y2 - y1) / (t2 - t1) - d1) / (t2 - t0)
    concave = (a < 0) & (mid == frame)
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = np.clip(0.5 * (t0 + t1) - d1 / (2.0 * a), t0, t2)
    t_peak = np.where(concave, vertex, times_s[frame])
    value = np.where(concave, y0 + d1 * (t_peak - t0) + a * (t_peak - t0) * (t_peak - t1),
                     smooth[rows, frame])
    return frame, np.where(np.isnan(value), np.nan, t_peak), value


def run_slopes(curves: np.ndarray, times_s: np.ndarray, width: int) -> np.ndarray:
    """(N, T - width + 1) least-squares slopes [signal units / s] of straight lines fitted
    to each run of ``width`` consecutive frames of ``curves`` (N, T) at their exact times
    (column i: frames i .. i + width - 1)."""
    runs = sliding_window_view(times_s, width)
    centred = runs - runs.mean(axis=1, keepdims=True)
    weights = centred / np.sum(centred**2, axis=1, keepdims=True)
    n_runs = runs.shape[0]
    # A few shifted multiply-adds: cheaper than a mostly-zero matrix product.
    slopes = curves[:, :n_runs] * weights[:, 0]
    for j in range(1, width):
        slopes += curves[:, j:j + n_runs] * weights[:, j]
    return slopes


def max_upslope(enhancement: np.ndarray, times_s: np.ndarray, start: int, peaks: np.ndarray,
                width: int) -> np.ndarray:
    """Maximum fitted slope (N,) [signal units / s] of curves (N, T) over runs of ``width``
    frames that start at or after frame ``start`` and end at most one frame after each
    curve's peak (at least the first run from ``start`` counts)."""
    slopes = run_slopes(enhancement, times_s, width)
    run = np.arange(slopes.shape[1])
    first = min(start, run[-1])
    last = np.maximum(peaks + 2 - width, first)
    allowed = (run >= first) & (run <= last[:, None])
    return np.max(np.where(allowed, slopes, -np.inf), axis=1)
