"""Fermi flow against dcmri's 2CX forward model, and dcmri against a solve_ivp 2CXM."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from napari_perfroi.perfusion import TISSUE_DENSITY_G_ML, fermi_flow

dcmri = pytest.importorskip("dcmri")

HCT = 0.45
RHO = TISSUE_DENSITY_G_ML
TIMES = np.arange(0.0, 60.0, 1.0)
FLOWS = np.array([0.5, 1.0, 2.0, 3.0, 4.5])  # blood flow, mL/min/g
DELAYS = np.array([0.0, 1.5, 3.0])


def _gamma_variate(t: np.ndarray, alpha: float, time_to_peak: float) -> np.ndarray:
    beta = time_to_peak / alpha
    x = np.clip(t, 0.0, None) / beta
    return np.where(t > 0, x**alpha * np.exp(-x) / (beta * math.gamma(alpha + 1.0)), 0.0)


def _aif_shape(t) -> np.ndarray:
    since = np.asarray(t, float) - 6.0
    plateau = 0.08 * _gamma_variate(np.array([6.0]), 3.0, 6.0)[0]  # 8 % of the first-pass peak
    return (
        _gamma_variate(since, 3.0, 6.0)
        + 0.25 * _gamma_variate(since - 14.0, 2.5, 8.0)
        + plateau * (1.0 - np.exp(-np.clip(since, 0.0, None) / 14.0))
    )


_AIF_SCALE = 5.0 / _aif_shape(np.linspace(0.0, 60.0, 60001)).max()


def blood_aif(t) -> np.ndarray:
    """LV blood concentration [mM], peak 5 mM, foot at 6 s; depends on each time point only."""
    return _AIF_SCALE * _aif_shape(t)


def dcmri_2cx(mbf, ps, vp, ve, delay) -> np.ndarray:
    """Tissue [mM] at TIMES from ``dcmri.conc_tissue`` on a 0.02 s grid.

    Units: ``ca`` in M (blood), ``Fb``/``PS`` in mL/s/mL = mL/min/g * rho / 60,
    ``vb = vp / (1 - H)``, ``vi = ve``.
    """
    grid = np.arange(0.0, TIMES[-1] + 0.02, 0.02)
    out = []
    for f, p, b, e, d in np.broadcast(mbf, ps, vp, ve, delay):
        conc = dcmri.conc_tissue(
            blood_aif(grid - d) * 1e-3, t=grid, kinetics="2CX", H=HCT, vb=b / (1.0 - HCT), vi=e,
            Fb=f * RHO / 60.0, PS=p * RHO / 60.0,
        )
        out.append(np.interp(TIMES, grid, conc * 1e3))
    return np.array(out)


def ivp_2cxm(mbf, ps, vp, ve, delay) -> np.ndarray:
    """Tissue [mM] at TIMES from ``solve_ivp`` on the 2CXM equations (mL/min/g inputs)."""
    mbf, ps, vp, ve, delay = (
        np.asarray(a, float) for a in np.broadcast_arrays(mbf, ps, vp, ve, delay)
    )
    n = mbf.size
    fp = mbf * RHO / 60.0 * (1.0 - HCT)
    ps = ps * RHO / 60.0

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        cp, ce = y[:n], y[n:]
        exchange = ps * (cp - ce)
        ca = blood_aif(t - delay) / (1.0 - HCT)
        return np.concatenate([(fp * (ca - cp) - exchange) / vp, exchange / ve])

    sol = solve_ivp(
        rhs, (0.0, TIMES[-1]), np.zeros(2 * n), t_eval=TIMES, max_step=0.1, rtol=1e-7, atol=1e-10
    )
    assert sol.success
    return vp[:, None] * sol.y[:n] + ve[:, None] * sol.y[n:]


def test_dcmri_2cx_matches_solve_ivp_2cxm():
    """Same parameters through both forward models: measured max |diff| 2.4e-6 of peak.

    A unit slip (density, haematocrit, s vs min) would move the curves by several percent.
    """
    mbf, delay = (a.ravel() for a in np.meshgrid(FLOWS, DELAYS, indexing="ij"))
    for ps, vp, ve in [(1.5, 0.05, 0.2), (1.0, 0.07, 0.15), (2.5, 0.03, 0.3)]:
        a = dcmri_2cx(mbf, ps, vp, ve, delay)
        b = ivp_2cxm(mbf, ps, vp, ve, delay)
        assert np.all(np.abs(a - b).max(axis=1) < 1e-4 * b.max(axis=1))


def test_fermi_bias_on_dcmri_2cx():
    """Fermi flow on noise-free dcmri 2CX curves (PS 1.5 mL/min/g, vp 0.05, ve 0.2, 1 s frames).

    Measured relative error over delays 0 / 1.5 / 3 s: -12.3 / -13.2 / -13.1 % at 0.5,
    -22.6 / -24.2 / -24.1 % at 1, -36.7 / -39.2 / -39.0 % at 2, -46.0 / -49.0 / -48.9 % at 3,
    -55.5 / -58.8 / -58.7 % at 4.5 mL/min/g: Fermi cannot follow the 2CXM's fast vascular
    phase plus slow extraction tail. Asserted: the measured range widened by 2 points on
    each side, estimates increasing with true flow, residual below 0.08 (measured 0.072).
    """
    mbf, delay = (a.ravel() for a in np.meshgrid(FLOWS, DELAYS, indexing="ij"))
    tissue = dcmri_2cx(mbf, 1.5, 0.05, 0.2, delay)
    fit = fermi_flow(tissue, blood_aif(TIMES), TIMES, hematocrit=HCT)
    rel = (fit.mbf / mbf - 1.0).reshape(FLOWS.size, DELAYS.size)
    low = np.array([-0.132, -0.242, -0.392, -0.490, -0.588])[:, None] - 0.02
    high = np.array([-0.123, -0.226, -0.367, -0.460, -0.555])[:, None] + 0.02
    assert np.all((rel > low) & (rel < high)), np.round(rel, 3)
    assert np.all(np.diff(fit.mbf.reshape(FLOWS.size, DELAYS.size), axis=0) > 0)
    assert np.all(fit.fit_error < 0.08), fit.fit_error
