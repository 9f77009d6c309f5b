"""A saturated AIF: detect it and, where the data allow, correct it.

At the first-pass peak the LV blood signal of a single-bolus acquisition is
near full recovery: readout pulses, imperfect saturation and T2* make the
signal rise more slowly than the ideal saturation-recovery equation the
conversion assumes, so the converted AIF comes out low with a flat top and
flow comes out high.

Detection (any of): a gamma variate through the unsaturated frames (upslope
and first downslope below half the measured peak) peaks well above the
measured peak, or the curve stays near its peak for longer than it took to
rise (a flat top); where the signal at the peak is well into recovery, an
effective saturation time clearly longer than the nominal one makes the
bolus far more gamma-variate-like; the peak is lower than a first pass
reaches.

Correction, two independent estimates:

- model-based desaturation: the saturation-recovery equation with a fitted
  *effective* saturation time, the one whose converted first pass is best
  described by a gamma variate (every frame is corrected, not just the top);
- peak restoration: the gamma variate through the unsaturated frames.

The corrected AIF is the model-based one. The unsaturated frames, themselves
a little saturated, give a lower bound of the peak. The correction is
trusted when its first pass is a good gamma variate that is no longer
flat-topped, it at most multiplies the peak by :data:`MAX_CORRECTION`, the
lower bound does not exceed it (by more than :data:`PEAK_AGREEMENT`), and the
measured peak is not so low that every informative frame is saturated.
Otherwise absolute flow is not available for the study.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

UNSATURATED_FRACTION = 0.5  # frames below this fraction of the measured peak are trusted
MIN_UPSLOPE_FRAMES = 2  # unsaturated frames after the foot needed to restore the peak
FIRST_PASS_END_FRACTION = 0.3  # the first pass ends when the downslope falls below this
FLAT_TOP_EXCESS = 1.2  # gamma peak / measured peak above this: a flat top
TOP_LEVEL = 0.9
MAX_TOP_WIDTH_RATIO = 1.0  # time above TOP_LEVEL over the rise time, above this: a flat top
FULL_RECOVERY = 0.95  # recovered fraction of the equilibrium signal at the peak
SATURATION_PRONE_RECOVERY = 0.5  # from this recovered fraction on, readout saturation matters
PEAK_AGREEMENT = 0.3  # the unsaturated-frame peak may exceed the model's by this fraction
# A full-dose first pass peaks at 3-10 mmol/L in blood; read below this, even the
# upslope frames that carry the peak's information are saturated.
MIN_CORRECTABLE_PEAK_MMOL = 2.0
MAX_CORRECTION = 2.5  # a trusted correction at most multiplies the peak by this
MODEL_IMPROVEMENT = 0.7  # the desaturated fit's residual over the nominal one, at most
EFFECTIVE_TS_TOLERANCE = 1.2  # effective / nominal saturation time up to this: nominal
MAX_GAMMA_RESIDUAL = 0.08  # RMS residual / peak of an acceptable gamma-variate fit
# Candidate effective saturation times, over the nominal one (or in s with the linear
# model). Saturation only lowers the measured peak, so the effective time, which raises
# the converted peak as it grows, is never shorter than the nominal one.
EFFECTIVE_TS_GRID = np.geomspace(1.0, 4.0, 30)
LINEAR_EFFECTIVE_TS_S = np.geomspace(0.005, 0.4, 30)


@dataclass
class GammaFit:
    """A gamma variate ``peak * x**alpha * exp(alpha (1 - x))``, ``x = (t - onset) / (peak_time
    - onset)``, fitted to a curve; ``residual`` is the RMS misfit over the fitted frames
    divided by the peak."""

    onset_s: float
    peak_time_s: float
    peak: float
    alpha: float
    residual: float


@dataclass
class SaturationResult:
    """What was found about the AIF's saturation and what was done about it (concentrations
    are blood mmol/L, at the AIF's own kept frames)."""

    saturated: bool
    reasons: list[str]
    measured_peak: float
    gamma_peak: float | None  # the peak restored from the unsaturated frames
    model_peak: float | None  # the peak of the model-based desaturation
    effective_saturation_time_s: float | None
    corrected: np.ndarray | None  # the desaturated curve, when trusted
    trusted: bool  # absolute flow can be computed with this AIF
    verdict: str  # one line for the report

    def as_report(self) -> dict:
        def rounded(value):
            return None if value is None else round(float(value), 4)

        return {
            "saturated": self.saturated,
            "reasons": self.reasons,
            "measured_peak_blood_mmol": rounded(self.measured_peak),
            "gamma_peak_blood_mmol": rounded(self.gamma_peak),
            "model_peak_blood_mmol": rounded(self.model_peak),
            "effective_saturation_time_s": rounded(self.effective_saturation_time_s),
            "corrected": self.corrected is not None,
            "trusted": self.trusted,
            "verdict": self.verdict,
        }


def gamma_variate(times_s, onset_s: float, peak_time_s: float, peak: float,
                  alpha: float) -> np.ndarray:
    x = np.clip((np.asarray(times_s, float) - onset_s) / (peak_time_s - onset_s), 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = peak * np.exp(alpha * (np.log(x) + 1.0 - x))
    return np.where(x > 0, values, 0.0)


def fit_gamma_variate(times_s: np.ndarray, values: np.ndarray, onset_s: float,
                      peak_bounds: tuple[float, float],
                      peak_time_bounds: tuple[float, float]) -> GammaFit | None:
    """Least-squares gamma variate through ``values`` at ``times_s``; the onset may move by
    up to 2 s about ``onset_s``. None when too few points."""
    from scipy.optimize import least_squares

    if values.size < 4:
        return None
    lo_tp, hi_tp = peak_time_bounds
    lo_p, hi_p = peak_bounds
    lo_tp = max(lo_tp, onset_s + 0.5)
    hi_tp = max(hi_tp, lo_tp + 0.1)
    lower = [onset_s - 2.0, lo_tp, lo_p, 0.5]
    upper = [min(onset_s + 2.0, lo_tp - 0.05), hi_tp, max(hi_p, lo_p * 1.001), 12.0]
    start = np.clip([onset_s, 0.5 * (lo_tp + hi_tp), 0.5 * (lo_p + hi_p), 3.0], lower, upper)

    def misfit(params):
        return gamma_variate(times_s, *params) - values

    solution = least_squares(misfit, start, bounds=(lower, upper), method="trf", x_scale="jac")
    onset, peak_time, peak, alpha = solution.x
    residual = float(np.sqrt(np.mean(solution.fun**2)) / peak)
    return GammaFit(float(onset), float(peak_time), float(peak), float(alpha), residual)


def first_pass_end(curve: np.ndarray, peak: int) -> int:
    """Index of the last first-pass frame after ``peak``: the first one below
    ``FIRST_PASS_END_FRACTION`` of the peak, or the last one before the curve (3-frame mean)
    rises again with the recirculation, or the last frame."""
    after = curve[peak:]
    below = np.flatnonzero(after < FIRST_PASS_END_FRACTION * curve[peak])
    smooth = np.convolve(after, np.ones(3) / 3.0, mode="valid")
    rising = np.flatnonzero((np.diff(smooth) > 0) & (smooth[1:] < 0.9 * curve[peak]))
    ends = [curve.size - 1 - peak]
    if below.size:
        ends.append(int(below[0]))
    if rising.size:
        ends.append(int(rising[0]) + 1)
    return peak + min(ends)


def top_width_ratio(times_s: np.ndarray, curve: np.ndarray, foot: int) -> float:
    """Time the first pass of ``curve`` stays above ``TOP_LEVEL`` of its peak over its rise
    time from ``foot``. A gamma variate (alpha >= 1.5) gives at most about 0.8; a clipped
    top gives more."""
    peak = int(np.argmax(curve))
    end = first_pass_end(curve, peak)
    top = np.flatnonzero(curve[foot : end + 1] >= TOP_LEVEL * curve[peak]) + foot
    rise = float(times_s[peak] - times_s[foot])
    return float(times_s[top[-1]] - times_s[top[0]]) / rise if rise > 0 else 0.0


def restore_peak(times_s: np.ndarray, curve: np.ndarray, foot: int) -> GammaFit | None:
    """The gamma variate through the frames of ``curve`` below ``UNSATURATED_FRACTION`` of its
    peak on the upslope (from ``foot``) and the first downslope. None without enough of them
    on both sides of the peak (``MIN_UPSLOPE_FRAMES`` after the foot, one after the peak)."""
    peak = int(np.argmax(curve))
    end = first_pass_end(curve, peak)
    threshold = UNSATURATED_FRACTION * curve[peak]
    frames = np.arange(max(foot - 1, 0), end + 1)
    trusted = frames[curve[frames] < threshold]
    up = trusted[trusted < peak]
    down = trusted[trusted > peak]
    # With one upslope frame the peak's height and time trade off freely.
    if (up > foot).sum() < MIN_UPSLOPE_FRAMES or down.size < 1 or trusted.size < 4:
        return None
    return fit_gamma_variate(
        times_s[trusted], curve[trusted], float(times_s[foot]),
        peak_bounds=(float(curve[peak]), 6.0 * float(curve[peak])),
        peak_time_bounds=(float(times_s[up[-1]]), float(times_s[down[0]])),
    )


def _first_pass_fit(times_s: np.ndarray, curve: np.ndarray, foot: int) -> GammaFit | None:
    """The gamma variate through every frame of the first pass of ``curve``."""
    peak = int(np.argmax(curve))
    frames = np.arange(max(foot - 1, 0), first_pass_end(curve, peak) + 1)
    if peak == 0 or not np.isfinite(curve[frames]).all():
        return None
    lo = int(frames[0])
    return fit_gamma_variate(
        times_s[frames], curve[frames], float(times_s[foot]),
        peak_bounds=(0.8 * float(curve[peak]), 1.5 * float(curve[peak])),
        peak_time_bounds=(float(times_s[max(peak - 1, lo)]),
                          float(times_s[min(peak + 1, curve.size - 1)])),
    )


def desaturate(times_s: np.ndarray, convert: Callable[[float | None], np.ndarray],
               saturation_time_s: float | None, foot: int) -> tuple[float, np.ndarray,
                                                                   GammaFit] | None:
    """Model-based desaturation: the effective saturation time whose conversion
    (``convert(ts)`` gives the blood concentration at the kept frames) makes the first pass
    most gamma-variate-like, with that curve and its fit. None if no candidate fits."""
    candidates = (EFFECTIVE_TS_GRID * saturation_time_s if saturation_time_s is not None
                  else LINEAR_EFFECTIVE_TS_S)
    best = None
    for ts in candidates:
        curve = convert(float(ts))
        fit = _first_pass_fit(times_s, curve, foot) if np.isfinite(curve).all() else None
        if fit is not None and (best is None or fit.residual < best[2].residual):
            best = (float(ts), curve, fit)
    return best


def check_and_correct(times_s: np.ndarray, measured: np.ndarray, foot: int,
                      convert: Callable[[float | None], np.ndarray],
                      saturation_time_s: float | None, peak_recovery: float | None,
                      ) -> SaturationResult:
    """Detect saturation of the blood curve ``measured`` (nominal conversion, kept frames) and
    correct it where the correction can be trusted. ``peak_recovery``: the fraction of the
    equilibrium signal reached at the peak (None for the linear model)."""
    peak = float(np.max(measured))
    restored = restore_peak(times_s, measured, foot)
    gamma_peak = None if restored is None else restored.peak
    model = desaturate(times_s, convert, saturation_time_s, foot)
    nominal_fit = _first_pass_fit(times_s, measured, foot)
    reasons = []
    if gamma_peak is not None and gamma_peak > FLAT_TOP_EXCESS * peak:
        reasons.append(f"flat top: a gamma variate through the unsaturated frames peaks "
                       f"{gamma_peak / peak - 1:.0%} above the measured peak")
    width = top_width_ratio(times_s, measured, foot)
    if width > MAX_TOP_WIDTH_RATIO:
        reasons.append(f"flat top: above {TOP_LEVEL:.0%} of its peak for {width:.1f} times "
                       "its rise time")
    # The shape alone is weak evidence (real boluses are not exact gamma variates): it counts
    # only where the nominal signal model puts the peak well into recovery.
    prone = peak_recovery is not None and peak_recovery >= SATURATION_PRONE_RECOVERY
    if prone and model is not None and nominal_fit is not None and _model_says_saturated(
            model, nominal_fit, saturation_time_s):
        reasons.append(f"the bolus is a gamma variate with an effective saturation time of "
                       f"{model[0] * 1000:.0f} ms, not the nominal "
                       + ("(linear model)" if saturation_time_s is None
                          else f"{saturation_time_s * 1000:.0f} ms"))
    if peak < MIN_CORRECTABLE_PEAK_MMOL:
        reasons.append(f"a blood peak of {peak:.1f} mmol/L is lower than a first pass reaches")
    saturated = bool(reasons)
    if peak_recovery is not None and peak_recovery > FULL_RECOVERY:
        reasons.append(f"the blood signal at the peak is {peak_recovery:.0%} of full recovery: "
                       "noise there is amplified")
    model_ts = None if model is None else model[0]
    model_peak = None if model is None else float(np.max(model[1]))
    if not saturated:
        return SaturationResult(False, reasons, peak, gamma_peak, model_peak, model_ts, None,
                                True, "AIF not saturated")
    problem = _untrusted_because(times_s, foot, peak, gamma_peak, model, saturation_time_s)
    if problem is None:
        verdict = (f"AIF saturated, corrected: blood peak {peak:.1f} -> {model_peak:.1f} mmol/L "
                   f"(effective saturation time {model_ts * 1000:.0f} ms"
                   + (f"; unsaturated frames alone give at least {gamma_peak:.1f})"
                      if gamma_peak is not None else ")"))
        return SaturationResult(True, reasons, peak, gamma_peak, model_peak, model_ts,
                                model[1], True, verdict)
    return SaturationResult(True, reasons, peak, gamma_peak, model_peak, model_ts, None, False,
                            f"AIF saturated and not correctable ({problem}): absolute MBF is "
                            "not available for this study; semi-quantitative indices are "
                            "reported instead")


def _model_says_saturated(model, nominal_fit: GammaFit, saturation_time_s: float | None) -> bool:
    """The desaturation model fits the first pass clearly better than the nominal conversion,
    with an effective saturation time clearly off the nominal one."""
    effective, _, fit = model
    better = fit.residual < MODEL_IMPROVEMENT * nominal_fit.residual
    return better and effective > EFFECTIVE_TS_TOLERANCE * saturation_time_s


def _untrusted_because(times_s: np.ndarray, foot: int, peak: float, gamma_peak: float | None,
                       model, saturation_time_s: float | None) -> str | None:
    """Why the model-based correction cannot be trusted, or None."""
    if model is None:
        return "no effective saturation time fits the bolus"
    if peak < MIN_CORRECTABLE_PEAK_MMOL:
        return (f"a measured blood peak of {peak:.1f} mmol/L is saturated beyond recovery "
                f"(at least {MIN_CORRECTABLE_PEAK_MMOL:.1f} needed)")
    effective, curve, fit = model
    grid = (EFFECTIVE_TS_GRID * saturation_time_s if saturation_time_s is not None
            else LINEAR_EFFECTIVE_TS_S)
    model_peak = float(np.max(curve))
    if fit.residual > MAX_GAMMA_RESIDUAL:
        return f"the corrected bolus is not a gamma variate (residual {fit.residual:.0%})"
    if effective == grid[-1]:
        return "the effective saturation time is at the end of its range"
    if model_peak > MAX_CORRECTION * peak:
        return (f"the correction would multiply the peak by {model_peak / peak:.1f}, "
                f"more than {MAX_CORRECTION:.1f}")
    corrected_width = top_width_ratio(times_s, curve, foot)
    if corrected_width > MAX_TOP_WIDTH_RATIO:
        return (f"the corrected bolus is still flat-topped ({corrected_width:.1f} times its "
                "rise time above 90 % of its peak)")
    if gamma_peak is not None and gamma_peak > (1.0 + PEAK_AGREEMENT) * model_peak:
        return (f"the unsaturated frames alone give a higher peak ({gamma_peak:.1f} mmol/L) "
                f"than the model ({model_peak:.1f})")
    return None
