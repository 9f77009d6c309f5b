"""Fermi-constrained deconvolution against an independent 2CXM forward model (solve_ivp)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from napari_perfroi.perfusion import MODEL_NAME, fermi_flow, fermi_flow_reference

HCT = 0.45
RHO = 1.05


def gamma_variate(t, alpha, time_to_peak):
    beta = time_to_peak / alpha
    x = np.clip(t, 0.0, None) / beta
    return np.where(t > 0, x**alpha * np.exp(-x) / (beta * math.gamma(alpha + 1.0)), 0.0)


def blood_aif(t, foot=6.0, peak_mm=5.0):
    """LV blood concentration [mM]: gamma-variate first pass + recirculation + equilibrium."""
    since = np.asarray(t, float) - foot
    first = gamma_variate(since, 3.0, 6.0)
    curve = first + 0.25 * gamma_variate(since - 14.0, 2.5, 8.0)
    # The plateau scales with the first-pass peak (a constant, so that any time points
    # give the same curve: the ODE solver calls this one time at a time).
    first_peak = float(gamma_variate(6.0, 3.0, 6.0))
    curve = curve + 0.08 * first_peak * (1.0 - np.exp(-np.clip(since, 0.0, None) / 14.0))
    ref = np.linspace(0.0, 40.0, 4001)
    refc = gamma_variate(ref, 3.0, 6.0)
    refc = refc + 0.25 * gamma_variate(ref - 14.0, 2.5, 8.0) + 0.08 * refc.max() * (1 - np.exp(-ref / 14.0))
    return curve * peak_mm / refc.max()


def tcxm_tissue(times, mbf, ps=1.5, vp=0.05, ve=0.2, delay=0.0):
    """Tissue concentration at ``times`` from solve_ivp on the 2CXM equations.

    ``mbf``/``ps`` in mL/min/g (blood flow), arrays of equal length; one stacked ODE system.
    """
    mbf = np.atleast_1d(np.asarray(mbf, float))
    n = mbf.size
    ps = np.broadcast_to(np.asarray(ps, float), (n,)) * RHO / 60.0
    vp = np.broadcast_to(np.asarray(vp, float), (n,))
    ve = np.broadcast_to(np.asarray(ve, float), (n,))
    delay = np.broadcast_to(np.asarray(delay, float), (n,))
    fp = mbf * RHO / 60.0 * (1.0 - HCT)

    def rhs(t, y):
        cp, ce = y[:n], y[n:]
        ca = blood_aif(t - delay) / (1.0 - HCT)
        dcp = (fp * (ca - cp) - ps * (cp - ce)) / vp
        dce = ps * (cp - ce) / ve
        return np.concatenate([dcp, dce])

    sol = solve_ivp(rhs, (0.0, float(times[-1])), np.zeros(2 * n), t_eval=times, max_step=0.1, rtol=1e-7, atol=1e-10)
    assert sol.success
    return (vp[:, None] * sol.y[:n] + ve[:, None] * sol.y[n:])


FLOWS = np.array([0.5, 1.0, 2.0, 3.0, 4.5])


@pytest.fixture(scope="module")
def clean_case():
    times = np.arange(0.0, 60.0, 1.0)
    delays = np.array([0.0, 1.5, 3.0])
    # PS 1.5 mL/min/g, vp 0.05, ve 0.2 (defaults of tcxm_tissue).
    mbf, dl = (a.ravel() for a in np.meshgrid(FLOWS, delays, indexing="ij"))
    tissue = tcxm_tissue(times, mbf, delay=dl)
    return times, blood_aif(times), tissue, mbf, dl


def fermi_tissue(times, mbf, delay, k=0.3, tau0=5.0):
    """Tissue curves from the Fermi model itself, convolved on a 0.01 s grid (independent code)."""
    tf = np.arange(0.0, times[-1] + 0.01, 0.01)
    ca = blood_aif(tf) / (1.0 - HCT)
    out = []
    for f, d in zip(mbf, delay):
        fp = f * RHO / 60.0 * (1.0 - HCT)
        r = fp * (1 + np.exp(-k * tau0)) / (1 + np.exp(k * (tf - tau0 - d))) * (tf >= d)
        out.append(np.interp(times, tf, np.convolve(ca, r)[: tf.size] * 0.01))
    return np.array(out)


def test_recovers_fermi_generated_curves():
    times = np.arange(0.0, 60.0, 1.0)
    mbf = np.repeat(FLOWS, 2)
    dl = np.tile([0.4, 2.6], FLOWS.size)
    fit = fermi_flow(fermi_tissue(times, mbf, dl), blood_aif(times), times, hematocrit=HCT)
    # Measured +2 % (AIF known only at 1 s frames, 0.25 s convolution grid).
    assert np.all(np.abs(fit.mbf / mbf - 1.0) < 0.04), fit.mbf / mbf
    assert np.all(np.abs(fit.delay_s - dl) < 0.3)
    assert np.all(fit.fit_error < 0.01)


def test_2cxm_bias_is_honest(clean_case):
    """Fermi vs 2CXM (PS 1.5, vp 0.05, ve 0.2, 60 s at 1 s/frame).

    Measured bias (delays 0, 1.5, 3 s): -12 to -13 % at 0.5, -23 to -24 % at 1,
    -37 to -39 % at 2, -46 to -49 % at 3, -55 to -59 % at 4.5 mL/min/g (Fermi
    cannot follow the 2CXM's fast vascular drop plus slow extraction tail; it
    fits an extraction-weighted flow). Asserted: the measured envelope (+-3
    points), monotonic in true flow, small residuals.
    """
    times, aif, tissue, mbf, dl = clean_case
    fit = fermi_flow(tissue, aif, times, hematocrit=HCT)
    assert fit.model == MODEL_NAME and fit.flow == "blood"
    assert fit.mbf.shape == mbf.shape and fit.fitted.shape == tissue.shape
    rel = (fit.mbf / mbf - 1.0).reshape(FLOWS.size, -1)
    expected = np.array([-0.128, -0.235, -0.38, -0.475, -0.57])[:, None]
    assert np.all(np.abs(rel - expected) < 0.03), rel
    assert np.all(np.diff(fit.mbf.reshape(FLOWS.size, -1), axis=0) > 0)
    assert np.all(np.abs(fit.delay_s - dl) < 1.5), fit.delay_s - dl
    assert np.all(fit.fit_error < 0.08), fit.fit_error  # measured max 0.064 (4.5 mL/min/g)


def test_plasma_flow_and_plasma_aif(clean_case):
    times, aif, tissue, mbf, _ = clean_case
    blood = fermi_flow(tissue, aif, times, hematocrit=HCT)
    plasma = fermi_flow(tissue, aif, times, hematocrit=HCT, flow="plasma")
    np.testing.assert_allclose(plasma.mbf, blood.mbf * (1 - HCT), rtol=1e-3)
    same = fermi_flow(tissue, aif / (1 - HCT), times, hematocrit=HCT, aif_is_plasma=True)
    np.testing.assert_allclose(same.mbf, blood.mbf, rtol=1e-6)


def test_matches_reference(clean_case):
    times, aif, tissue, mbf, _ = clean_case
    sel = slice(None, None, 2)
    fast = fermi_flow(tissue[sel], aif, times, hematocrit=HCT)
    ref = fermi_flow_reference(tissue[sel], aif, times, hematocrit=HCT)
    np.testing.assert_allclose(fast.mbf, ref.mbf, rtol=0.03)
    assert np.all(fast.fit_error <= ref.fit_error * 1.05 + 1e-4)


@pytest.mark.parametrize("interval", [0.5, 1.0])
def test_frame_intervals_and_nonuniform(interval):
    rng = np.random.default_rng(3)
    if interval == 1.0:  # non-uniform (e.g. RR-triggered) frame times
        times = np.cumsum(np.r_[0.0, rng.uniform(0.6, 1.2, 59)])
    else:
        times = np.arange(0.0, 50.0, interval)
    mbf = np.array([0.8, 2.5, 4.0])
    dl = np.array([2.0, 0.5, 1.0])
    fit = fermi_flow(fermi_tissue(times, mbf, dl), blood_aif(times), times, hematocrit=HCT)
    assert np.all(np.abs(fit.mbf / mbf - 1.0) < 0.05), fit.mbf / mbf
    assert np.all(np.abs(fit.delay_s - dl) < 0.4)
    # 2CXM at PS 2 (near-unity extraction at low flow): same envelope as the main case.
    tissue = tcxm_tissue(times, mbf, ps=2.0, delay=dl)
    rel = fermi_flow(tissue, blood_aif(times), times, hematocrit=HCT).mbf / mbf - 1.0
    assert np.all((rel < 0.0) & (rel > -0.5)), rel


def test_noisy(clean_case):
    times, aif, tissue, mbf, _ = clean_case
    rng = np.random.default_rng(0)
    sigma = 0.02 * tissue.max()
    noisy = tissue[None] + rng.normal(0.0, sigma, (8,) + tissue.shape)
    fit = fermi_flow(noisy, aif, times, hematocrit=HCT)
    assert fit.mbf.shape == (8, mbf.size)
    assert np.all(np.isfinite(fit.mbf))
    clean = fermi_flow(tissue, aif, times, hematocrit=HCT).mbf
    median_rel = np.median(fit.mbf / clean, axis=0) - 1.0
    assert np.all(np.abs(median_rel) < 0.1), median_rel


def test_shapes_and_invalid_curves(clean_case):
    times, aif, tissue, mbf, _ = clean_case
    block = tissue[:6].reshape(2, 3, -1).copy()
    block[0, 1] = 0.0
    block[1, 2, 5] = np.nan
    fit = fermi_flow(block, aif, times, hematocrit=HCT)
    assert fit.mbf.shape == (2, 3) and fit.delay_s.shape == (2, 3) and fit.fitted.shape == block.shape
    assert np.isnan(fit.mbf[0, 1]) and np.isnan(fit.mbf[1, 2])
    good = np.isfinite(fit.mbf)
    assert good.sum() == 4
    single = fermi_flow(tissue[0], aif, times, hematocrit=HCT)
    assert single.mbf.shape == ()
    np.testing.assert_allclose(single.mbf, fit.mbf[0, 0], rtol=1e-6)
    none = fermi_flow(np.zeros((2, times.size)), aif, times)
    assert np.all(np.isnan(none.mbf))


def test_mismatched_lengths(clean_case):
    times, aif, tissue, _, _ = clean_case
    with pytest.raises(ValueError, match="length mismatch"):
        fermi_flow(tissue[:, :-1], aif, times)
    with pytest.raises(ValueError, match="length mismatch"):
        fermi_flow(tissue, aif[:-1], times)
    with pytest.raises(ValueError, match="length mismatch"):
        fermi_flow_reference(tissue, aif, times[:-1])


def test_jacobian_matches_finite_differences():
    """The batched fit's analytic Jacobian (float32 parts) against central differences."""
    from napari_perfroi.perfusion import _jacobian, _unit_model, prepare_problem

    rng = np.random.default_rng(1)
    times = np.cumsum(np.r_[0.0, rng.uniform(0.5, 0.7, 69)])
    pb = prepare_problem(np.ones((1, times.size)), blood_aif(times), times, HCT)
    n = 40
    # Delays inside grid cells: the cell-averaged step has kinks at the cell edges.
    td = (rng.integers(1, 16, n) + rng.uniform(0.1, 0.9, n) - 0.5) * pb.dt
    theta = np.stack([np.log(rng.uniform(0.005, 0.05, n)), np.log(rng.uniform(0.05, 3.0, n)),
                      rng.uniform(0.0, 20.0, n), td], axis=1)
    C, basis = _jacobian(pb, theta, _unit_model(pb, theta))
    jac = C @ basis

    def model(th):
        return np.exp(th[:, :1]) * _unit_model(pb, th)

    for i in range(4):
        d = np.zeros(4)
        d[i] = 1e-6
        fd = (model(theta + d) - model(theta - d)) / 2e-6
        err = np.abs(jac[:, i] - fd).max(axis=1) / np.abs(fd).max(axis=1)
        assert err.max() < 1e-3, (i, err.max())  # measured max 4e-5 (log k column)


def test_noisy_pixels_match_reference():
    """Low-SNR pixel curves (noise SD 20-60 % of the peak, 0.5-0.7 s frames): batched LM
    against the per-curve scipy fit. Measured over seeds: median |difference| < 0.05 %,
    at most 2 of 48 curves apart by > 5 % (flat cost valleys), fit errors at most 0.02 %
    above the reference's."""
    rng = np.random.default_rng(0)
    times = np.cumsum(np.r_[0.0, rng.uniform(0.5, 0.7, 69)])
    mbf = rng.uniform(0.5, 4.5, 48)
    dl = rng.uniform(0.0, 3.0, 48)
    fermi = fermi_tissue(times, mbf[:24], dl[:24])
    clean = np.vstack([fermi, tcxm_tissue(times, mbf[24:], delay=dl[24:])])
    sd = rng.uniform(0.2, 0.6, mbf.size) * clean.max(axis=1)
    noisy = clean + rng.normal(0.0, 1.0, clean.shape) * sd[:, None]
    fast = fermi_flow(noisy, blood_aif(times), times, hematocrit=HCT)
    ref = fermi_flow_reference(noisy, blood_aif(times), times, hematocrit=HCT)
    assert np.all(np.isfinite(fast.mbf))
    rel = np.abs(fast.mbf / ref.mbf - 1.0)
    assert np.median(rel) < 0.005, np.median(rel)
    assert np.sum(rel > 0.05) <= 4, rel
    assert np.all(fast.fit_error <= ref.fit_error * 1.001), fast.fit_error / ref.fit_error
