"""Flow accuracy of the 2CXM fit, Fermi deconvolution and TSVD on 2CXM tissue curves,
and fit speed.

Usage: python benchmarks/bench_flow_models.py [--draws 200] [--seed 0] [--quick]

Tissue curves come from two independent 2CXM forward models driven by the same
analytic LV blood AIF (peak 5 mM, foot at 6 s, 60 s acquisition):

* ``dcmri``: ``dcmri.conc_tissue(ca, t, kinetics="2CX", H, vb, vi, Fb, PS)`` on a
  0.02 s grid, then sampled at the frame times. ``ca`` is the delayed BLOOD AIF in
  M, ``Fb`` and ``PS`` in mL/s/mL (= mL/min/g * rho / 60), ``vb = vp / (1 - H)``,
  ``vi = ve``.
* ``ivp``: ``scipy.integrate.solve_ivp`` on the 2CXM equations
  ``vp cp' = Fp (ca/(1-H) - cp) - PS (cp - ce)``, ``ve ce' = PS (cp - ce)``,
  ``Fp = (1 - H) Fb``.

Per draw: PS 1-2.5 mL/min/g, vp 0.03-0.07, ve 0.15-0.3, tissue delay 0-3 s, and a
frame scheme (uniform 0.5, 0.75 or 1.0 s, or non-uniform intervals 0.5-1.0 s).
Noise: Gaussian on the tissue curve, SD = level * that curve's peak (AIF noise-free).

All methods report BLOOD flow in mL/min/g (Hct 0.45, rho 1.05 g/mL):

* 2CXM: ``two_compartment_flow(tissue, blood AIF, times)``; its PS, vp and ve are
  compared with the draws' too (median relative error).
* Fermi: ``fermi_flow(tissue, blood AIF, times)`` (converts the AIF to plasma and
  plasma flow back to blood flow).
* TSVD: ``dcmri.deconv(tissue, blood AIF, dt, tol=threshold)`` (singular values
  below ``threshold * max`` discarded). With the blood AIF as input the residue
  starts at ``Fb``, so flow = max(residue) [1/s] * 60 / rho. Non-uniform curves
  are linearly resampled onto a uniform grid at their mean frame interval first.

Bias: median of ``estimate / truth - 1``; spread: its interquartile range.

Speed: each batched fit (``fermi_flow``, ``two_compartment_flow``) against its reference
fitted one curve at a time with scipy, on the same curves. The batched fit is BLAS-bound: on a busy machine compare with
``OPENBLAS_NUM_THREADS=1`` (oversubscribed BLAS threads slow it down several-fold).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import dcmri
import numpy as np
from scipy.integrate import solve_ivp

from scipy.interpolate import PchipInterpolator

from napari_perfroi.perfusion import TISSUE_DENSITY_G_ML, fermi_flow, fermi_flow_reference
from napari_perfroi.two_compartment import two_compartment_flow, two_compartment_flow_reference

HCT = 0.45
RHO = TISSUE_DENSITY_G_ML
FLOWS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.5)
NOISE = (0.0, 0.02, 0.05)
DURATION_S = 60.0
GEN_DT_S = 0.02


def _gamma_variate(t: np.ndarray, alpha: float, time_to_peak: float) -> np.ndarray:
    beta = time_to_peak / alpha
    x = np.clip(t, 0.0, None) / beta
    return np.where(t > 0, x**alpha * np.exp(-x) / (beta * math.gamma(alpha + 1.0)), 0.0)


def _aif_shape(t: np.ndarray) -> np.ndarray:
    since = np.asarray(t, float) - 6.0
    first_peak = _gamma_variate(np.array([6.0]), 3.0, 6.0)[0]  # the first pass peaks at ttp
    return (
        _gamma_variate(since, 3.0, 6.0)
        + 0.25 * _gamma_variate(since - 14.0, 2.5, 8.0)
        + 0.08 * first_peak * (1.0 - np.exp(-np.clip(since, 0.0, None) / 14.0))
    )


_AIF_SCALE = 5.0 / _aif_shape(np.linspace(0.0, DURATION_S, 60001)).max()


def blood_aif(t: np.ndarray) -> np.ndarray:
    """LV blood concentration [mM]: first pass, recirculation, equilibrium; pointwise in ``t``."""
    return _AIF_SCALE * _aif_shape(t)


@dataclass
class Draws:
    """Random 2CXM parameters (flows and PS in mL/min/g) and a frame scheme per curve."""

    mbf: np.ndarray
    ps: np.ndarray
    vp: np.ndarray
    ve: np.ndarray
    delay: np.ndarray
    scheme: np.ndarray

    def subset(self, sel: np.ndarray) -> Draws:
        return Draws(*(getattr(self, f)[sel] for f in self.__dataclass_fields__))


def frame_schemes(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Frame times [s] of the sampling schemes."""
    nonuniform = np.cumsum(np.r_[0.0, rng.uniform(0.5, 1.0, int(DURATION_S / 0.5))])
    return {
        "0.5 s": np.arange(0.0, DURATION_S, 0.5),
        "0.75 s": np.arange(0.0, DURATION_S, 0.75),
        "1.0 s": np.arange(0.0, DURATION_S, 1.0),
        "0.5-1 s": nonuniform[nonuniform < DURATION_S],
    }


def draw(rng: np.random.Generator, n_per_flow: int, n_schemes: int) -> Draws:
    """``n_per_flow`` random draws per flow level, frame schemes assigned in turn."""
    mbf = np.repeat(FLOWS, n_per_flow)
    n = mbf.size
    return Draws(
        mbf=mbf,
        ps=rng.uniform(1.0, 2.5, n),
        vp=rng.uniform(0.03, 0.07, n),
        ve=rng.uniform(0.15, 0.3, n),
        delay=rng.uniform(0.0, 3.0, n),
        scheme=np.arange(n) % n_schemes,
    )


# ----------------------------------------------------------------------------- generators
def tissue_dcmri(times: np.ndarray, d: Draws) -> np.ndarray:
    """2CXM tissue [mM] at ``times`` from ``dcmri.conc_tissue`` (units: M, mL/s/mL)."""
    grid = np.arange(0.0, times[-1] + GEN_DT_S, GEN_DT_S)
    out = np.empty((d.mbf.size, times.size))
    for i in range(d.mbf.size):
        ca_molar = blood_aif(grid - d.delay[i]) * 1e-3
        conc = dcmri.conc_tissue(
            ca_molar, t=grid, kinetics="2CX", H=HCT, vb=d.vp[i] / (1.0 - HCT), vi=d.ve[i],
            Fb=d.mbf[i] * RHO / 60.0, PS=d.ps[i] * RHO / 60.0,
        )
        out[i] = np.interp(times, grid, conc * 1e3)
    return out


def tissue_ivp(times: np.ndarray, d: Draws) -> np.ndarray:
    """2CXM tissue [mM] at ``times`` from ``solve_ivp`` (all curves as one ODE system)."""
    n = d.mbf.size
    fp = d.mbf * RHO / 60.0 * (1.0 - HCT)
    ps = d.ps * RHO / 60.0

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        cp, ce = y[:n], y[n:]
        ca = blood_aif(t - d.delay) / (1.0 - HCT)
        exchange = ps * (cp - ce)
        return np.concatenate([(fp * (ca - cp) - exchange) / d.vp, exchange / d.ve])

    sol = solve_ivp(rhs, (0.0, float(times[-1])), np.zeros(2 * n), t_eval=times,
                    max_step=0.1, rtol=1e-7, atol=1e-10)
    if not sol.success:
        raise RuntimeError(sol.message)
    return d.vp[:, None] * sol.y[:n] + d.ve[:, None] * sol.y[n:]


def tissue_fermi(times: np.ndarray, mbf: np.ndarray, k: np.ndarray, tau0: np.ndarray,
                 delay: np.ndarray, aif: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Tissue [mM] from the Fermi model itself with blood input ``aif``, on a 0.01 s grid."""
    dt = 0.01
    grid = np.arange(0.0, times[-1] + dt, dt)
    ca = aif(grid) / (1.0 - HCT)
    out = np.empty((mbf.size, times.size))
    for i in range(mbf.size):
        fp = mbf[i] * RHO / 60.0 * (1.0 - HCT)
        r = fp * (1 + np.exp(-k[i] * tau0[i])) / (1 + np.exp(k[i] * (grid - tau0[i] - delay[i])))
        r *= grid >= delay[i]
        out[i] = np.interp(times, grid, np.convolve(ca, r)[: grid.size] * dt)
    return out


# ----------------------------------------------------------------------------- estimators
def tsvd_flow(tissue: np.ndarray, times: np.ndarray, threshold: float) -> np.ndarray:
    """Blood flow [mL/min/g] = max of the TSVD residue (blood AIF input) per curve."""
    dt = float(np.diff(times).mean())
    if np.allclose(np.diff(times), dt):
        grid, curves = times, tissue
    else:
        grid = times[0] + dt * np.arange(int((times[-1] - times[0]) / dt) + 1)
        curves = np.array([np.interp(grid, times, c) for c in tissue])
    residue = dcmri.deconv(curves.T, blood_aif(grid), dt=dt, method="TSVD", tol=threshold)
    return residue.max(axis=0) * 60.0 / RHO


def relative_errors(
    tissue_by_scheme: dict[str, np.ndarray], draws: Draws, schemes: dict[str, np.ndarray],
    noise: float, threshold: float, rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Relative errors of each method's flow (and of the 2CXM fit's PS, vp, ve) for all
    draws at one noise level."""
    names = ("2CXM", "Fermi", "TSVD", "PS", "vp", "ve")
    estimates = {name: np.full(draws.mbf.size, np.nan) for name in names}
    for s, (name, times) in enumerate(schemes.items()):
        sel = np.flatnonzero(draws.scheme == s)
        clean = tissue_by_scheme[name]
        noisy = clean + rng.normal(size=clean.shape) * noise * clean.max(axis=1, keepdims=True)
        fit = two_compartment_flow(noisy, blood_aif(times), times, hematocrit=HCT)
        for key, value in (("2CXM", fit.mbf), ("PS", fit.ps), ("vp", fit.vp), ("ve", fit.ve)):
            estimates[key][sel] = value
        estimates["Fermi"][sel] = fermi_flow(noisy, blood_aif(times), times, hematocrit=HCT).mbf
        estimates["TSVD"][sel] = tsvd_flow(noisy, times, threshold)
    truth = {"2CXM": draws.mbf, "Fermi": draws.mbf, "TSVD": draws.mbf, "PS": draws.ps,
             "vp": draws.vp, "ve": draws.ve}
    return {name: estimates[name] / truth[name] - 1.0 for name in names}


def pct(rel: np.ndarray) -> tuple[float, float]:
    """Median and IQR of relative errors, in percent (NaN-aware)."""
    q1, med, q3 = np.nanpercentile(rel, [25, 50, 75])
    return 100 * med, 100 * (q3 - q1)


# ----------------------------------------------------------------------------- sections
def generator_agreement(schemes: dict[str, np.ndarray]) -> None:
    """Both forward models on one parameter set (checks the dcmri unit conversions)."""
    times = schemes["1.0 s"]
    d = Draws(*(np.array([v]) for v in (3.0, 1.5, 0.05, 0.2, 1.5, 0)))
    a, b = tissue_dcmri(times, d)[0], tissue_ivp(times, d)[0]
    print(
        "dcmri 2CX vs solve_ivp 2CXM (Fb 3, PS 1.5 mL/min/g, vp 0.05, ve 0.2, delay 1.5 s, "
        f"1 s frames): max |diff| = {np.abs(a - b).max() / b.max():.1e} of peak"
    )


def accuracy_table(schemes: dict[str, np.ndarray], draws: Draws, threshold: float,
                   rng: np.random.Generator) -> None:
    """Bias and spread of the 2CXM fit, Fermi and TSVD per generator, noise level and flow,
    and the 2CXM fit's PS, vp and ve bias."""
    generators = {"dcmri": tissue_dcmri, "ivp": tissue_ivp}
    n_per = int(np.sum(draws.mbf == FLOWS[0]))
    print(
        f"\nBlood-flow error vs 2CXM truth, {n_per} draws per flow; bias = median rel. error, "
        f"IQR of rel. error (percent). TSVD threshold {threshold:g}."
    )
    print(f"{'model':>6} {'noise':>5} {'MBF':>5} | {'2CXM bias':>9} {'IQR':>5} | "
          f"{'Fermi bias':>10} {'IQR':>5} | {'TSVD bias':>9} {'IQR':>5} | "
          f"{'PS bias':>7} {'vp bias':>7} {'ve bias':>7} | {'NaN':>3}")
    for gen_name, gen in generators.items():
        t0 = time.perf_counter()
        tissue = {
            name: gen(times, draws.subset(draws.scheme == s))
            for s, (name, times) in enumerate(schemes.items())
        }
        gen_s = time.perf_counter() - t0
        for noise in NOISE:
            rel = relative_errors(tissue, draws, schemes, noise, threshold, rng)
            for flow in FLOWS:
                at = draws.mbf == flow
                flows = " | ".join(f"{pct(rel[m][at])[0]:>+{w}.1f}% {pct(rel[m][at])[1]:>5.1f}"
                                   for m, w in (("2CXM", 8), ("Fermi", 9), ("TSVD", 8)))
                parameters = " ".join(f"{pct(rel[m][at])[0]:>+6.1f}%" for m in ("PS", "vp", "ve"))
                n_nan = int(sum(np.isnan(rel[m][at]).sum() for m in ("2CXM", "Fermi", "TSVD")))
                print(f"{gen_name:>6} {noise * 100:>4.0f}% {flow:>5.1f} | {flows} | "
                      f"{parameters} | {n_nan:>3}")
        print(f"  ({gen_name}: {draws.mbf.size} curves generated in {gen_s:.1f} s)")


def fermi_recovery(schemes: dict[str, np.ndarray], n_per_flow: int,
                   rng: np.random.Generator) -> None:
    """Fermi fit on Fermi-model curves driven by the continuous AIF, and by the AIF as the
    fitter sees it (PCHIP between frames): the second isolates the fitter's own error."""
    print(f"\nFermi fit on Fermi-generated curves (noise-free, k 0.1-0.6 /s, tau0 2-10 s, "
          f"delay 0-3 s, all frame schemes), {n_per_flow} per flow; "
          "rel. error in percent:")
    print(f"{'':>5} | {'continuous AIF':>16} | {'frame-sampled AIF':>17}")
    print(f"{'MBF':>5} | {'median':>7} {'max|.|':>8} | {'median':>7} {'max|.|':>9}")
    mbf = np.repeat(FLOWS, n_per_flow)
    k = rng.uniform(0.1, 0.6, mbf.size)
    tau0 = rng.uniform(2.0, 10.0, mbf.size)
    delay = rng.uniform(0.0, 3.0, mbf.size)
    scheme = np.arange(mbf.size) % len(schemes)
    rel = np.empty((2, mbf.size))
    for s, times in enumerate(schemes.values()):
        sel = scheme == s
        sampled = blood_aif(times)
        for i, aif in enumerate((blood_aif, PchipInterpolator(times, sampled))):
            tissue = tissue_fermi(times, mbf[sel], k[sel], tau0[sel], delay[sel], aif)
            rel[i, sel] = fermi_flow(tissue, sampled, times, hematocrit=HCT).mbf / mbf[sel] - 1.0
    for flow in FLOWS:
        c, f = 100 * rel[:, mbf == flow]
        print(f"{flow:>5.1f} | {np.median(c):>+6.2f}% {np.abs(c).max():>7.2f}% | "
              f"{np.median(f):>+6.2f}% {np.abs(f).max():>8.2f}%")


def speed(n: int, rng: np.random.Generator) -> None:
    """Each batched fit against its one-curve-at-a-time reference on the same ``n`` noisy
    curves (60 frames at 1 s); the slow references on a tenth of them."""
    times = np.arange(0.0, 60.0, 1.0)
    d = draw(rng, -(-n // len(FLOWS)), 1).subset(slice(0, n))
    tissue = tissue_dcmri(times, d)
    tissue += rng.normal(size=tissue.shape) * 0.02 * tissue.max(axis=1, keepdims=True)
    aif = blood_aif(times)
    few = slice(None, None, 10)
    print(f"\nSpeed, {n} curves x {times.size} frames (dcmri 2CX, 2 % noise):")
    for name, batched, reference in (("fermi_flow", fermi_flow, fermi_flow_reference),
                                     ("two_compartment_flow", two_compartment_flow,
                                      two_compartment_flow_reference)):
        t0 = time.perf_counter()
        fast = batched(tissue, aif, times, hematocrit=HCT)
        t1 = time.perf_counter()
        ref = reference(tissue[few], aif, times, hematocrit=HCT)
        t2 = time.perf_counter()
        per_curve = (t2 - t1) / ref.mbf.size
        rel = np.abs(fast.mbf[few] / ref.mbf - 1.0)
        print(f"  {name} (batched) {t1 - t0:.2f} s; reference {per_curve * 1e3:.1f} ms per "
              f"curve, {per_curve * n:.1f} s for all, ratio {per_curve * n / (t1 - t0):.0f}x; "
              f"|batched/reference - 1| median {np.median(rel):.1e}, "
              f"p99 {np.percentile(rel, 99):.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=200, help="random draws per flow level")
    parser.add_argument("--speed-curves", type=int, default=2000, help="curves in the speed test")
    parser.add_argument("--tsvd-threshold", type=float, default=0.1,
                        help="TSVD: relative singular-value cut-off")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="20 draws per flow, 300 speed curves")
    args = parser.parse_args()
    if args.quick:
        args.draws, args.speed_curves = 20, 300

    start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    schemes = frame_schemes(rng)
    generator_agreement(schemes)
    draws = draw(rng, args.draws, len(schemes))
    accuracy_table(schemes, draws, args.tsvd_threshold, rng)
    fermi_recovery(schemes, max(4, args.draws // 6), rng)
    speed(args.speed_curves, rng)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
