"""Semi-quantitative first-pass indices against analytic gamma-variate bolus curves."""

import dataclasses
import time

import numpy as np
import pytest
from scipy.special import gamma, gammainc

from napari_perfroi.flow import bolus_foot
from napari_perfroi.semiquant import MIN_FRAMES, run_slopes, semiquantitative_indices

LV = dict(arrival_s=8.0, alpha=3.0, tau_s=1.2, peak=400.0)
TISSUE = dict(arrival_s=9.0, alpha=3.0, tau_s=2.5, peak=40.0)
LV_BASE, TISSUE_BASE = 100.0, 50.0
NOISE_FRACTION = 0.03  # of the tissue peak enhancement
# (shortest, longest frame interval [s], frames): jittered R-R at rest-like rate; fast frames.
TIMINGS = {"jittered 0.8-1.2 s": (0.8, 1.2, 60), "fast 0.5 s": (0.45, 0.55, 90)}


def gamma_variate(t, arrival_s, alpha, tau_s, peak):
    """Gamma-variate bolus with its maximum ``peak`` at ``arrival_s + alpha tau_s``."""
    x = np.clip((np.asarray(t, float) - arrival_s) / tau_s, 0.0, None)
    return peak * (x / alpha) ** alpha * np.exp(alpha - x)


def gamma_max_slope(arrival_s, alpha, tau_s, peak):
    """The analytic maximum derivative, at the inflection ``x = alpha - sqrt(alpha)``."""
    x = alpha - np.sqrt(alpha)
    return peak / tau_s * (x / alpha) ** alpha * np.exp(alpha - x) * (alpha / x - 1.0)


def gamma_peak_time(arrival_s, alpha, tau_s, peak):
    return arrival_s + alpha * tau_s


def gamma_integral(lo_s, hi_s, arrival_s, alpha, tau_s, peak):
    """The analytic integral of :func:`gamma_variate` from ``lo_s`` to ``hi_s``."""
    x_lo, x_hi = np.clip((np.array([lo_s, hi_s]) - arrival_s) / tau_s, 0.0, None)
    scale = peak * tau_s * np.exp(alpha) * alpha**-alpha * gamma(alpha + 1.0)
    return scale * (gammainc(alpha + 1.0, x_hi) - gammainc(alpha + 1.0, x_lo))


def frame_times(seed, shortest, longest, n):
    rng = np.random.default_rng(seed)
    return np.concatenate([[0.0], np.cumsum(rng.uniform(shortest, longest, n - 1))])


def series(seed=0, timing="jittered 0.8-1.2 s"):
    """Frame times, the LV curve, one tissue curve and the baseline frames."""
    t = frame_times(seed, *TIMINGS[timing])
    lv = LV_BASE + gamma_variate(t, **LV)
    tissue = TISSUE_BASE + gamma_variate(t, **TISSUE)
    return t, lv, tissue, t < LV["arrival_s"]


def on_fine_grid(function, times, step=0.01):
    """A causal response of the LV enhancement on a fine grid, sampled at ``times``."""
    fine = np.arange(0.0, times[-1] + step, step)
    return np.interp(times, fine, function(fine, gamma_variate(fine, **LV), step))


def convolved(kernel):
    """``LV enhancement * kernel(t)`` (the convolution), for :func:`on_fine_grid`."""
    return lambda fine, lv, step: np.convolve(lv, kernel(fine))[: fine.size] * step


# ----------------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("timing", TIMINGS)
@pytest.mark.parametrize("seed", range(3))
def test_noise_free_gamma_variate(timing, seed):
    t, lv, tissue, base = series(seed, timing)
    frame = np.median(np.diff(t))
    r = semiquantitative_indices(tissue[None], lv, t, base)
    foot_s, end_s = r.first_pass_s
    assert foot_s == t[bolus_foot(lv, np.ones(t.size, bool))[0]]
    assert r.upslope[0] == pytest.approx(gamma_max_slope(**TISSUE), rel=0.08)
    assert r.lv_upslope < gamma_max_slope(**LV)  # a fitted run is a secant: never steeper
    expected_ttp = gamma_peak_time(**TISSUE) - foot_s
    assert abs(r.time_to_peak_s[0] - expected_ttp) < 0.2 * frame
    assert r.peak_enhancement[0] == pytest.approx(TISSUE["peak"], rel=0.03)
    assert r.relative_peak[0] == pytest.approx(TISSUE["peak"] / TISSUE_BASE, rel=0.03)
    assert r.first_pass_auc[0] == pytest.approx(gamma_integral(foot_s, end_s, **TISSUE), rel=0.02)
    assert r.relative_upslope[0] == pytest.approx(r.upslope[0] / r.lv_upslope, rel=1e-12)


@pytest.mark.parametrize("timing", TIMINGS)
def test_noisy_upslope_is_accurate_and_tighter_than_frame_differences(timing):
    t, lv, tissue, base = series(1, timing)
    rng = np.random.default_rng(7)
    noisy = tissue + rng.normal(0.0, NOISE_FRACTION * TISSUE["peak"], (200, t.size))
    lv_noisy = lv + rng.normal(0.0, 0.01 * LV["peak"], t.size)
    r = semiquantitative_indices(noisy, lv_noisy, t, base)
    truth = gamma_max_slope(**TISSUE)

    foot = int(np.searchsorted(t, r.first_pass_s[0]))
    differences = np.diff(noisy, axis=1) / np.diff(t)
    peaks = foot + np.argmax(noisy[:, foot:], axis=1)
    raw = np.array([d[foot:p + 1].max() for d, p in zip(differences, peaks)])

    assert np.median(r.upslope) == pytest.approx(truth, rel=0.15)
    assert abs(np.median(r.upslope) - truth) < abs(np.median(raw) - truth)
    assert np.std(r.upslope) < 0.75 * np.std(raw)


@pytest.mark.parametrize("timing", TIMINGS)
def test_noisy_peak_and_time_to_peak_beat_the_raw_maximum(timing):
    t, lv, tissue, base = series(1, timing)
    rng = np.random.default_rng(7)
    noisy = tissue + rng.normal(0.0, NOISE_FRACTION * TISSUE["peak"], (200, t.size))
    r = semiquantitative_indices(noisy, lv, t, base)
    foot_s = r.first_pass_s[0]
    foot = int(np.searchsorted(t, foot_s))
    raw_peak = np.max(noisy[:, foot:], axis=1) - noisy[:, base].mean(axis=1)
    expected_ttp = gamma_peak_time(**TISSUE) - foot_s
    raw_ttp_error = np.abs(t[foot + np.argmax(noisy[:, foot:], axis=1)] - foot_s - expected_ttp)
    ttp_error = np.abs(r.time_to_peak_s - expected_ttp)

    assert np.median(r.peak_enhancement) == pytest.approx(TISSUE["peak"], rel=0.02)
    assert np.std(r.peak_enhancement) < 0.9 * np.std(raw_peak)
    assert np.median(ttp_error) < np.median(np.diff(t))
    assert np.mean(ttp_error) < 0.7 * np.mean(raw_ttp_error)


def test_first_pass_ends_at_the_lv_trough_before_recirculation():
    t, _, tissue, base = series(2)
    lv_shape = {**LV, "tau_s": 2.0}  # a slower bolus leaves room for a trough before the cap
    recirculation = dict(arrival_s=20.0, alpha=3.0, tau_s=1.0, peak=100.0)
    lv = LV_BASE + gamma_variate(t, **lv_shape) + gamma_variate(t, **recirculation)
    fine = np.arange(gamma_peak_time(**lv_shape), gamma_peak_time(**recirculation), 0.01)
    total = gamma_variate(fine, **lv_shape) + gamma_variate(fine, **recirculation)
    trough_s = fine[np.argmin(total)]

    r = semiquantitative_indices(tissue[None], lv, t, base)
    foot_s, end_s = r.first_pass_s
    cap_s = foot_s + 2.5 * (t[np.argmax(lv)] - foot_s)
    assert trough_s < cap_s - 2.0  # the trough, not the cap, ends this first pass
    assert abs(end_s - trough_s) <= np.max(np.diff(t))


def test_first_pass_without_recirculation_ends_at_the_cap():
    t, lv, tissue, base = series(0)
    r = semiquantitative_indices(tissue[None], lv, t, base)
    foot_s, end_s = r.first_pass_s
    cap_s = foot_s + 2.5 * (t[np.argmax(lv)] - foot_s)
    assert end_s == t[t <= cap_s][-1]


# ----------------------------------------------------------------------------- relative upslope
def test_relative_upslope_of_scaled_delayed_and_dispersed_lv_copies():
    t, lv, _, base = series(0)
    lv_enhancement = gamma_variate(t, **LV)
    delayed = TISSUE_BASE + 0.1 * gamma_variate(t, **{**LV, "arrival_s": LV["arrival_s"] + 2.0})
    dispersion_s = 3.0
    dispersed = TISSUE_BASE + 0.1 * on_fine_grid(
        convolved(lambda s: np.exp(-s / dispersion_s) / dispersion_s), t)
    curves = np.stack([delayed, 2.0 * delayed, dispersed])
    r = semiquantitative_indices(curves, LV_BASE + lv_enhancement, t, base)

    assert r.relative_upslope[0] == pytest.approx(0.1, rel=0.15)
    assert r.relative_upslope[1] == pytest.approx(2.0 * r.relative_upslope[0], rel=1e-9)
    assert r.relative_peak[1] == pytest.approx(r.relative_peak[0], rel=1e-9)
    assert r.time_to_peak_s[1] == pytest.approx(r.time_to_peak_s[0], rel=1e-9)
    assert r.relative_upslope[2] < 0.7 * r.relative_upslope[0]


def test_relative_upslope_follows_flow_in_a_convolution_model():
    t, lv, _, base = series(0)
    volume = 0.15  # distribution volume (fraction)

    def tissue_of(flow_per_s):
        kernel = lambda s: flow_per_s * np.exp(-flow_per_s / volume * s)  # noqa: E731
        return TISSUE_BASE + on_fine_grid(convolved(kernel), t)

    r = semiquantitative_indices(np.stack([tissue_of(0.05), tissue_of(0.025)]), lv, t, base)
    ratio = r.relative_upslope[1] / r.relative_upslope[0]
    assert 0.45 < ratio < 0.75  # above 0.5: the lower flow also washes out more slowly
    assert np.all(r.relative_upslope < 1.0)


# ----------------------------------------------------------------------------- robustness
def test_upslope_ignores_rises_outside_the_first_pass_upstroke():
    t, lv, tissue, base = series(0)
    glitch = tissue.copy()
    glitch[2:4] += [30.0, 60.0]  # a steep step in the baseline, before the foot
    late = tissue + np.where(t > 40.0, 100.0 * (t - 40.0), 0.0)  # a steep rise well after the peak
    r = semiquantitative_indices(np.stack([tissue, glitch, late]), lv, t, base)
    np.testing.assert_allclose(r.upslope[1:], r.upslope[0], rtol=1e-9)


def test_a_missing_upslope_frame_changes_little():
    t, lv, tissue, base = series(0)
    gap = tissue.copy()
    gap[np.argmin(np.abs(t - 12.0))] = np.nan
    r = semiquantitative_indices(np.stack([tissue, gap]), lv, t, base)
    for name in ("upslope", "peak_enhancement", "time_to_peak_s", "first_pass_auc"):
        values = getattr(r, name)
        assert np.isfinite(values).all()
        assert values[1] == pytest.approx(values[0], rel=0.1), name


def test_curves_without_finite_baseline_read_nan_and_leave_others_alone():
    t, lv, tissue, base = series(0)
    empty = np.full(t.size, np.nan)
    no_baseline = tissue.copy()
    no_baseline[base] = np.nan
    alone = semiquantitative_indices(tissue[None], lv, t, base)
    r = semiquantitative_indices(np.stack([tissue, empty, no_baseline]), lv, t, base)
    for name in ("upslope", "relative_upslope", "peak_enhancement", "relative_peak",
                 "time_to_peak_s", "first_pass_auc"):
        values = getattr(r, name)
        assert np.isnan(values[1:]).all(), name
        assert values[0] == pytest.approx(getattr(alone, name)[0], rel=1e-12), name


def test_missing_lv_frames():
    t, lv, tissue, base = series(0)
    gap = lv.copy()
    gap[np.argmin(np.abs(t - 20.0))] = np.nan
    clean = semiquantitative_indices(tissue[None], lv, t, base)
    r = semiquantitative_indices(tissue[None], gap, t, base)
    assert r.first_pass_s == clean.first_pass_s
    assert r.relative_upslope[0] == pytest.approx(clean.relative_upslope[0], rel=1e-9)
    with pytest.raises(ValueError, match="LV blood-pool curve has no finite baseline"):
        semiquantitative_indices(tissue[None], np.full(t.size, np.nan), t, base)


def test_flat_curves():
    t, lv, _, base = series(0)
    flat = np.stack([np.full(t.size, TISSUE_BASE), np.zeros(t.size), np.full(t.size, -5.0)])
    r = semiquantitative_indices(flat, lv, t, base)
    np.testing.assert_allclose(r.upslope, 0.0, atol=1e-12)
    np.testing.assert_allclose(r.peak_enhancement, 0.0, atol=1e-12)
    np.testing.assert_allclose(r.first_pass_auc, 0.0, atol=1e-12)
    assert r.relative_peak[0] == 0.0
    assert np.isnan(r.relative_peak[1:]).all()  # baseline <= 0
    assert np.isfinite(r.time_to_peak_s).all()
    flat_lv = semiquantitative_indices(flat, np.full(t.size, LV_BASE), t, base)
    assert flat_lv.lv_upslope == 0.0
    assert np.isnan(flat_lv.relative_upslope).all()


def test_short_series_and_bad_inputs_raise():
    t, lv, tissue, base = series(0)
    short = MIN_FRAMES - 1
    with pytest.raises(ValueError, match=f"at least {MIN_FRAMES} frames"):
        semiquantitative_indices(tissue[None, :short], lv[:short], t[:short], base[:short])
    window = slice(4, 4 + MIN_FRAMES)  # the least that works: straddling the LV foot
    r = semiquantitative_indices(tissue[None, window], lv[window], t[window], base[window])
    assert np.isfinite(r.upslope).all()
    with pytest.raises(ValueError, match="shapes do not match"):
        semiquantitative_indices(tissue[None], lv[:-1], t, base)
    with pytest.raises(ValueError, match="strictly increasing"):
        semiquantitative_indices(tissue[None], lv, t[::-1], base)


def test_no_baseline_frames_uses_the_first_two():
    t, lv, tissue, _ = series(0)
    curves = tissue[None] + np.linspace(0.0, 5.0, t.size)  # a drifting baseline tells them apart
    none = semiquantitative_indices(curves, lv, t, np.zeros(t.size, bool))
    first_two = semiquantitative_indices(curves, lv, t, np.arange(t.size) < 2)
    first_five = semiquantitative_indices(curves, lv, t, np.arange(t.size) < 5)
    assert none.peak_enhancement[0] == first_two.peak_enhancement[0]
    assert none.peak_enhancement[0] != first_five.peak_enhancement[0]


def test_single_curve():
    t, lv, tissue, base = series(0)
    one = semiquantitative_indices(tissue, lv, t, base)
    two_d = semiquantitative_indices(tissue[None], lv, t, base)
    for field in dataclasses.fields(one):
        value = getattr(one, field.name)
        assert np.shape(value) == (() if field.name == "lv_upslope" else (2,) if
                                   field.name == "first_pass_s" else (1,))
        assert np.array_equal(value, getattr(two_d, field.name))


# ----------------------------------------------------------------------------- vectorisation
def test_run_slopes_are_least_squares_lines():
    t = frame_times(3, 0.8, 1.2, 12)
    rng = np.random.default_rng(3)
    curves = np.vstack([2.0 + 0.7 * t, rng.normal(size=(4, t.size))])
    slopes = run_slopes(curves, t, 3)
    np.testing.assert_allclose(slopes[0], 0.7, rtol=1e-12)
    for i in range(t.size - 2):
        fitted = [np.polyfit(t[i:i + 3], c[i:i + 3], 1)[0] for c in curves[1:]]
        np.testing.assert_allclose(slopes[1:, i], fitted, rtol=1e-9)


def test_batch_equals_single_curve_calls():
    t, lv, _, base = series(4)
    rng = np.random.default_rng(4)
    curves = np.stack([
        TISSUE_BASE * rng.uniform(0.5, 2.0) + gamma_variate(
            t, arrival_s=rng.uniform(8.0, 11.0), alpha=rng.uniform(2.0, 4.0),
            tau_s=rng.uniform(1.5, 4.0), peak=rng.uniform(5.0, 60.0))
        + rng.normal(0.0, 1.0, t.size)
        for _ in range(40)])
    curves[3, 12] = np.nan
    curves[5] = TISSUE_BASE
    curves[7] = np.nan
    batch = semiquantitative_indices(curves, lv, t, base)
    for i, curve in enumerate(curves):
        single = semiquantitative_indices(curve[None], lv, t, base)
        for name in ("upslope", "relative_upslope", "peak_enhancement", "relative_peak",
                     "time_to_peak_s", "first_pass_auc"):
            np.testing.assert_allclose(getattr(batch, name)[i], getattr(single, name)[0],
                                       rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=name)


def test_speed_2000_curves_by_60_frames():
    t, lv, tissue, base = series(0)
    curves = tissue + np.random.default_rng(0).normal(0.0, 1.2, (2000, t.size))
    elapsed = []
    for _ in range(5):
        start = time.perf_counter()
        semiquantitative_indices(curves, lv, t, base)
        elapsed.append(time.perf_counter() - start)
    assert min(elapsed) < 0.05
