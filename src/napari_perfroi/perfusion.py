"""Myocardial blood flow from concentration curves: Fermi-constrained deconvolution.

A plain-array API (numpy/scipy only, no napari/Qt) so curves exported from other
tools can be quantified too.

Model (Jerosch-Herold et al., Med Phys 1998), with a tissue delay ``tau_d``::

    C(t) = (Ca ⊗ R)(t)
    R(t) = F · (1 + exp(-k·tau0)) / (1 + exp(k·(t - tau0 - tau_d))) · u(t - tau_d)

``Ca`` is the PLASMA input (the LV blood AIF divided by ``1 - Hct`` unless the AIF
is already plasma). The factor ``1 + exp(-k·tau0)`` normalises the Fermi function
so that ``R(tau_d+) = F`` exactly: at the onset ``dC/dt = F · Ca``, so ``F`` is the
flow. Units:

* ``F`` [1/s] = mL plasma per s per mL tissue = plasma flow ``Fp`` (because the
  input is plasma concentration);
* blood flow ``Fb = Fp / (1 - Hct)``;
* MBF [mL/min/g] = flow [1/s] · 60 / rho, rho = 1.05 g/mL (myocardial density).

``fermi_flow`` reports blood flow by default (``flow="plasma"`` for ``Fp``).

Numerics. Frame times may be non-uniform. The AIF is interpolated (shape-preserving
cubic, PCHIP) onto a uniform fine grid (``dt_s``, default 0.25 s) starting at the first frame (the AIF
is taken as zero before it: baseline-subtracted input); the convolution is done
on that grid and the model is then linearly interpolated back to the ORIGINAL
frame times, where it is compared with the data. The delay step ``u`` is
cell-averaged on the grid, so the model is continuous in ``tau_d``.

Fit. Bounded nonlinear least squares over ``(F, k, tau0, tau_d)``:
``fermi_flow`` fits all curves at once with a batched Levenberg-Marquardt on
``(log F, log k, tau0, tau_d)`` (analytic Jacobians, steps projected onto the
bounds, per-curve damping and accept/reject; a curve stops once an accepted step
lowers its cost by less than 1e-6 relative), initialised from a coarse grid
over ``(tau_d, k, tau0)`` with ``F`` solved linearly for each grid shape.
``fermi_flow_reference`` fits the same model one curve at a time with
``scipy.optimize.least_squares`` (slow reference for tests and benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FlowFit", "fermi_flow", "fermi_flow_reference", "TISSUE_DENSITY_G_ML", "MODEL_NAME"]

TISSUE_DENSITY_G_ML = 1.05
MODEL_NAME = "Fermi-constrained deconvolution (Jerosch-Herold 1998) with delay"

# Fermi shape-parameter bounds: k [1/s], tau0 [s].
_K_BOUNDS = (0.02, 10.0)
_TAU0_BOUNDS = (0.0, 40.0)
# Initial grid (the delay grid is built from the delay bounds).
_K_GRID = (0.1, 0.25, 0.6, 1.5)
_TAU0_GRID = (0.0, 2.0, 5.0, 10.0, 20.0)


@dataclass
class FlowFit:
    """Result of a flow fit; arrays have the leading shape ``(...)`` of the input.

    mbf: flow in mL/min/g (blood flow, or plasma flow if ``flow="plasma"``); NaN
        where the curve was invalid (non-finite, all zero) or the fit failed.
    delay_s: fitted tissue delay ``tau_d`` [s] (NaN where failed).
    fit_error: relative residual ``||C - fit|| / ||C||`` at the frame times.
    fitted: ``(..., T)`` fitted curves at the input frame times.
    model: name of the model that produced the numbers.
    flow: ``"blood"`` or ``"plasma"``.
    k, tau0_s: fitted Fermi shape parameters [1/s], [s] (Fermi fits only).
    ps, vp, ve: fitted PS [mL/min/g] and plasma and interstitial volume fractions
        (two-compartment fits only).
    """

    mbf: np.ndarray
    delay_s: np.ndarray
    fit_error: np.ndarray
    fitted: np.ndarray
    model: str = MODEL_NAME
    flow: str = "blood"
    k: np.ndarray | None = None
    tau0_s: np.ndarray | None = None
    ps: np.ndarray | None = None
    vp: np.ndarray | None = None
    ve: np.ndarray | None = None


# ----------------------------------------------------------------------------- setup
@dataclass
class ConvolutionProblem:
    """Tissue curves and the discretised convolution with the input, shared by the models."""

    curves: np.ndarray  # (N, T) valid curves only
    valid: np.ndarray  # (N_all,) bool
    shape: tuple  # leading shape
    n_times: int
    s: np.ndarray  # (Tf,) response times s_m = m*dt
    dt: float
    MT: np.ndarray  # (Tf, T): response on the grid -> tissue at frame times
    MT32: np.ndarray  # MT in float32, for the parts of a fit that need no more
    n_ramp: int  # grid points that can lie before the end of the delay step
    to_mbf: float  # F [1/s] -> reported mL/min/g
    hematocrit: float
    flow: str  # "blood" or "plasma": what to_mbf reports
    f_bounds: tuple  # plasma flow bounds [1/s]
    d_bounds: tuple  # delay bounds [s]


def prepare_problem(tissue, aif, times_s, hematocrit: float = 0.45, aif_is_plasma: bool = False,
                    flow: str = "blood", *, dt_s: float = 0.25,
                    flow_bounds: tuple[float, float] = (0.05, 10.0),
                    delay_bounds_s: tuple[float, float] = (0.0, 4.0)) -> ConvolutionProblem:
    """The curves and the discretised convolution of a fit; arguments as :func:`fermi_flow`."""
    from scipy.interpolate import PchipInterpolator

    tissue = np.asarray(tissue, dtype=float)
    aif = np.asarray(aif, dtype=float)
    times = np.asarray(times_s, dtype=float)
    if aif.ndim != 1 or times.ndim != 1:
        raise ValueError(f"aif and times_s must be 1-D, got shapes {aif.shape} and {times.shape}")
    if tissue.ndim < 1:
        raise ValueError("tissue must have a last (time) axis of length T")
    if not (tissue.shape[-1] == aif.size == times.size):
        raise ValueError(
            f"length mismatch: tissue has {tissue.shape[-1]} frames, aif {aif.size}, times_s {times.size}"
        )
    if times.size < 4:
        raise ValueError("need at least 4 frames")
    if not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
        raise ValueError("times_s must be finite and strictly increasing")
    if not np.all(np.isfinite(aif)):
        raise ValueError("aif contains non-finite values")
    if not np.any(aif != 0):
        raise ValueError("aif is all zero")
    if not 0.0 <= hematocrit < 1.0:
        raise ValueError(f"hematocrit must be in [0, 1), got {hematocrit}")
    if flow not in ("blood", "plasma"):
        raise ValueError(f"flow must be 'blood' or 'plasma', got {flow!r}")
    if dt_s <= 0:
        raise ValueError("dt_s must be positive")

    plasma = aif if aif_is_plasma else aif / (1.0 - hematocrit)
    # F [1/s] is plasma flow; reported value in mL/min/g.
    to_mbf = 60.0 / TISSUE_DENSITY_G_ML / ((1.0 - hematocrit) if flow == "blood" else 1.0)

    t0 = times[0]
    n_f = int(np.ceil((times[-1] - t0) / dt_s - 1e-9)) + 1
    grid = t0 + dt_s * np.arange(n_f)
    # Shape-preserving cubic: linear interpolation of a peaked AIF sampled once per
    # heartbeat misplaces its area enough to bias a two-compartment fit by 20-75 %.
    ca = PchipInterpolator(times, plasma)(grid)
    # Lower-triangular Toeplitz: C(t_n) = dt * sum_m R~_m Ca_{n-m}.
    idx = np.arange(n_f)
    lag = idx[:, None] - idx[None, :]
    A = np.where(lag >= 0, ca[np.clip(lag, 0, None)], 0.0) * dt_s
    # Linear interpolation grid -> frame times.
    pos = (times - t0) / dt_s
    j = np.clip(np.floor(pos).astype(int), 0, n_f - 2) if n_f > 1 else np.zeros(times.size, int)
    w = pos - j
    P = np.zeros((times.size, n_f))
    P[np.arange(times.size), j] += 1.0 - w
    if n_f > 1:
        P[np.arange(times.size), j + 1] += w
    M = P @ A

    flat = tissue.reshape(-1, times.size)
    valid = np.all(np.isfinite(flat), axis=1) & (np.linalg.norm(np.nan_to_num(flat), axis=1) > 0)
    f_bounds = (flow_bounds[0] / to_mbf, flow_bounds[1] / to_mbf)
    return ConvolutionProblem(
        curves=flat[valid],
        valid=valid,
        shape=tissue.shape[:-1],
        n_times=times.size,
        s=dt_s * idx,
        dt=dt_s,
        MT=np.ascontiguousarray(M.T),
        MT32=np.ascontiguousarray(M.T, dtype=np.float32),
        n_ramp=int(np.clip(np.ceil(delay_bounds_s[1] / dt_s + 0.5) + 1, 1, n_f)),
        to_mbf=to_mbf,
        hematocrit=float(hematocrit),
        flow=flow,
        f_bounds=f_bounds,
        d_bounds=(float(delay_bounds_s[0]), float(delay_bounds_s[1])),
    )


# ----------------------------------------------------------------------------- model
def _shape(s, dt, k, tau0, td, jac=False):
    """Normalised, delayed Fermi response per unit F on the grid: (N, Tf).

    With ``jac``, also d/dk, d/dtau0, d/dtau_d.
    """
    k = k[:, None]
    tau0 = tau0[:, None]
    td = td[:, None]
    x = k * (s - tau0 - td)
    g = 0.5 * (1.0 - np.tanh(0.5 * x))  # 1 / (1 + exp(x)), overflow-safe
    e = np.exp(-k * tau0)
    nrm = 1.0 + e
    hr = (s + 0.5 * dt - td) / dt
    h = np.clip(hr, 0.0, 1.0)
    shape = nrm * g * h
    if not jac:
        return shape
    gg = g * (1.0 - g)
    inside = ((hr > 0.0) & (hr < 1.0)) / dt
    d_k = (-tau0 * e * g - nrm * gg * (s - tau0 - td)) * h
    d_tau0 = (-k * e * g + nrm * gg * k) * h
    d_td = nrm * (gg * k * h - g * inside)
    return shape, d_k, d_tau0, d_td


def _grid_init(pb: ConvolutionProblem):
    """Best (F, k, tau0, tau_d) per curve over a coarse shape grid, F solved linearly."""
    lo, hi = pb.d_bounds
    n_d = max(2, int(np.ceil((hi - lo) / 0.5)) + 1)
    dgrid = np.linspace(lo, hi, n_d)
    D, K, T0 = (a.ravel() for a in np.meshgrid(dgrid, _K_GRID, _TAU0_GRID, indexing="ij"))
    B = _shape(pb.s, pb.dt, K, T0, D) @ pb.MT  # (G, T)
    bb = np.einsum("gt,gt->g", B, B)
    cb = pb.curves @ B.T  # (N, G)
    F = np.clip(cb / np.where(bb > 0, bb, np.inf), *pb.f_bounds)
    cost = -2.0 * F * cb + F**2 * bb
    best = np.argmin(cost, axis=1)
    return F[np.arange(F.shape[0]), best], K[best], T0[best], D[best]


# ----------------------------------------------------------------------------- batched LM
def _fermi(s: np.ndarray, k: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(k (s - a)))`` on the grid, (n, Tf); ``s`` sets the dtype.

    The exponent is capped at 40 (values >= 4e-18): no overflow, and no subnormal
    numbers in float32 products (slow on some CPUs).
    """
    kd = k.astype(s.dtype)
    x = np.multiply.outer(kd, s)
    x -= (kd * a)[:, None]
    np.minimum(x, 40.0, out=x)
    np.exp(x, out=x)
    x += 1.0
    return np.reciprocal(x, out=x)


def _step_h(pb: ConvolutionProblem, td: np.ndarray, dtype) -> np.ndarray:
    """Cell-averaged delay step on the first ``pb.n_ramp`` grid points (it is 1 after them)."""
    s = pb.s[: pb.n_ramp]
    return np.clip((s + 0.5 * pb.dt - td[:, None]) / pb.dt, 0.0, 1.0).astype(dtype)


def _unit_model(pb: ConvolutionProblem, theta: np.ndarray) -> np.ndarray:
    """Model per unit F at the frame times, (n, T), for ``theta = (log F, log k, tau0, tau_d)``."""
    k, tau0, td = np.exp(theta[:, 1]), theta[:, 2], theta[:, 3]
    g = _fermi(pb.s, k, tau0 + td)
    g[:, : pb.n_ramp] *= _step_h(pb, td, g.dtype)
    B = g @ pb.MT
    B *= (1.0 + np.exp(-k * tau0))[:, None]
    return B


def _jacobian(pb: ConvolutionProblem, theta: np.ndarray, B: np.ndarray):
    """``(C, basis)`` with d model / d theta = ``C @ basis``: (n, 4, 4) and (n, 4, T).

    The basis rows are the model per unit F (``B``), ``Q = nrm g (1 - g) h`` and ``Q s``
    (through M), and the column of M of the grid cell where the delay step ramps up
    (``dh/dtau_d = -1/dt`` there). Rows 1-2 are computed in float32.
    """
    n = theta.shape[0]
    s, dt, MT = pb.s, pb.dt, pb.MT
    s32 = s.astype(np.float32)
    F, k, tau0, td = np.exp(theta[:, 0]), np.exp(theta[:, 1]), theta[:, 2], theta[:, 3]
    nrm = 1.0 + np.exp(-k * tau0)
    g = _fermi(s32, k, tau0 + td)
    W = np.empty((n, 2, s.size), np.float32)
    np.multiply(g, g, out=W[:, 0])
    np.subtract(g, W[:, 0], out=W[:, 0])
    W[:, 0, : pb.n_ramp] *= _step_h(pb, td, np.float32)
    np.multiply(W[:, 0], s32, out=W[:, 1])
    basis = np.empty((n, 4, MT.shape[1]))
    basis[:, 0] = B
    basis[:, 1:3] = (W.reshape(2 * n, -1) @ pb.MT32).reshape(n, 2, -1)
    basis[:, 1:3] *= nrm[:, None, None]
    pos = td / dt + 0.5
    m = np.floor(pos).astype(int)
    ramp = (pos > m) & (m >= 0) & (m < s.size)
    m = np.clip(m, 0, s.size - 1)
    basis[:, 3] = MT[m]
    g0 = 1.0 / (1.0 + np.exp(k * tau0))
    g_ramp = ramp * nrm / (1.0 + np.exp(k * (s[m] - tau0 - td))) / dt
    C = np.zeros((n, 4, 4))
    C[:, 0, 0] = F
    C[:, 1, 0] = -F * k * tau0 * g0
    C[:, 1, 1] = F * k * (tau0 + td)
    C[:, 1, 2] = -F * k
    C[:, 2, 0] = -F * k * g0
    C[:, 2, 1] = F * k
    C[:, 3, 1] = F * k
    C[:, 3, 3] = -F * g_ramp
    return C, basis


def batched_lm(curves, theta, lo, hi, unit_model, jacobian, max_iter: int = 60,
               ftol: float = 1e-6, prior=None):
    """Fit the parameters ``theta`` (n, p) of all curves (n, T) at once; returns
    ``(theta, cost)``.

    The model of a curve is ``exp(theta[0]) * unit_model(theta)`` (the first parameter
    is the log of a scale, the flow); ``jacobian(theta, unit)`` returns ``(C, basis)``
    with d model / d theta = ``C @ basis``. Parameters are kept within ``lo``/``hi``.
    ``prior = (mean, weight)`` (p,) and (n, p) adds ``(weight * (theta - mean))**2``
    to each curve's cost (a Gaussian prior; weight 0 leaves a parameter free).
    A curve stops when an accepted step lowers its cost by less than ``ftol``
    (relative) or its damping explodes. Jacobians are rebuilt only for curves whose
    parameters moved (a rejected step only raises the damping).
    """
    c = curves
    n_params = theta.shape[1]
    at_bound = 1e-9 * (hi - lo)
    theta = np.clip(theta, lo, hi)

    prior_mean, prior_weight = (np.zeros(n_params), np.zeros_like(theta)) if prior is None \
        else (np.asarray(prior[0], float), np.asarray(prior[1], float))
    prior_precision = prior_weight**2

    def evaluate(th, rows):
        B = unit_model(th)
        r = np.exp(th[:, :1]) * B
        r -= c[rows]
        penalty = np.einsum("np,np->n", prior_precision[rows], (th - prior_mean) ** 2)
        return B, r, np.einsum("nt,nt->n", r, r) + penalty

    B, r, cost = evaluate(theta, slice(None))
    n_all = c.shape[0]
    lam = np.full(n_all, 1e-3)
    active = np.ones(n_all, bool)
    stale = np.ones(n_all, bool)  # Jacobian out of date
    JtJ = np.zeros((n_all, n_params, n_params))
    grad = np.zeros((n_all, n_params))
    scale = np.ones((n_all, n_params))
    eye = np.eye(n_params)
    for _ in range(max_iter):
        ia = np.flatnonzero(active)
        if ia.size == 0:
            break
        iu = ia[stale[ia]]
        if iu.size:
            th = theta[iu]
            C, basis = jacobian(th, B[iu])
            gr = (C @ (basis @ r[iu][:, :, None]))[:, :, 0]
            gr += prior_precision[iu] * (th - prior_mean)
            # Active set: freeze parameters at a bound whose descent direction points outwards.
            frozen = ((th <= lo + at_bound) & (gr > 0)) | ((th >= hi - at_bound) & (gr < 0))
            gr[frozen] = 0.0
            C *= ~frozen[:, :, None]
            A = C @ (basis @ basis.transpose(0, 2, 1)) @ C.transpose(0, 2, 1)
            A += (frozen + ~frozen * prior_precision[iu])[:, :, None] * eye
            diag = np.einsum("nii->ni", A)
            JtJ[iu], grad[iu] = A, gr
            scale[iu] = diag + 1e-12 * (diag.max(axis=1, keepdims=True) + 1e-30)
            stale[iu] = False
        th = theta[ia]
        Aa = JtJ[ia]
        Aa.reshape(-1, n_params * n_params)[:, :: n_params + 1] += lam[ia, None] * scale[ia]
        try:
            step = np.linalg.solve(Aa, -grad[ia][..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = -grad[ia] / (scale[ia] * (1 + lam[ia, None]))
        new = np.clip(th + np.nan_to_num(step), lo, hi)
        new_B, new_r, new_cost = evaluate(new, ia)
        gain = cost[ia] - new_cost
        better = gain > 0
        ib, ir = ia[better], ia[~better]
        # Converged: tiny relative improvement, or damping exploded (no descent left).
        active[ib[gain[better] <= ftol * cost[ib]]] = False
        theta[ib] = new[better]
        r[ib] = new_r[better]
        B[ib] = new_B[better]
        cost[ib] = new_cost[better]
        stale[ib] = True
        lam[ib] = np.maximum(lam[ib] / 3.0, 1e-9)
        lam[ir] *= 4.0
        active[ir[lam[ir] > 1e8]] = False
    return theta, cost


def _finish(pb: ConvolutionProblem, params) -> FlowFit:
    F, k, tau0, td = params
    n_all = pb.valid.size
    out = {name: np.full(n_all, np.nan) for name in ("mbf", "delay", "err", "k", "tau0")}
    fitted = np.full((n_all, pb.n_times), np.nan)
    if pb.curves.shape[0]:
        fit = F[:, None] * (_shape(pb.s, pb.dt, k, tau0, td) @ pb.MT)
        err = np.linalg.norm(pb.curves - fit, axis=1) / np.linalg.norm(pb.curves, axis=1)
        ok = np.isfinite(F) & np.isfinite(err)
        v = np.flatnonzero(pb.valid)
        out["mbf"][v] = np.where(ok, F * pb.to_mbf, np.nan)
        out["delay"][v] = np.where(ok, td, np.nan)
        out["err"][v] = err
        out["k"][v] = np.where(ok, k, np.nan)
        out["tau0"][v] = np.where(ok, tau0, np.nan)
        fitted[v] = fit
    sh = pb.shape
    return FlowFit(
        mbf=out["mbf"].reshape(sh),
        delay_s=out["delay"].reshape(sh),
        fit_error=out["err"].reshape(sh),
        fitted=fitted.reshape(sh + (pb.n_times,)),
        model=MODEL_NAME,
        flow=pb.flow,
        k=out["k"].reshape(sh),
        tau0_s=out["tau0"].reshape(sh),
    )


# ----------------------------------------------------------------------------- public API
def fermi_flow(
    tissue,
    aif,
    times_s,
    hematocrit: float = 0.45,
    aif_is_plasma: bool = False,
    flow: str = "blood",
    *,
    dt_s: float = 0.25,
    flow_bounds: tuple[float, float] = (0.05, 10.0),
    delay_bounds_s: tuple[float, float] = (0.0, 4.0),
    max_iter: int = 60,
) -> FlowFit:
    """Fermi-constrained deconvolution of many tissue curves at once (batched LM).

    Parameters
    ----------
    tissue : (..., T) array
        Tissue concentration [mmol/L], baseline already subtracted.
    aif : (T,) array
        Arterial input [mmol/L] in LV blood (converted to plasma with
        ``1 / (1 - hematocrit)``), or plasma if ``aif_is_plasma``.
    times_s : (T,) array
        Frame times [s], strictly increasing, may be non-uniform.
    hematocrit : float
        Blood haematocrit (plasma conversion, blood-flow conversion).
    flow : ``"blood"`` (default) or ``"plasma"``
        Which flow ``FlowFit.mbf`` reports: ``Fb = Fp / (1 - Hct)`` or ``Fp``.
    dt_s : float
        Fine-grid step for the convolution.
    flow_bounds : (lo, hi)
        Bounds on the reported flow [mL/min/g].
    delay_bounds_s : (lo, hi)
        Bounds on the tissue delay ``tau_d`` [s].

    Curves with non-finite values or all zeros give NaN (no exception).
    Raises ``ValueError`` on mismatched lengths or an invalid AIF/time axis.
    """
    pb = prepare_problem(tissue, aif, times_s, hematocrit, aif_is_plasma, flow, dt_s=dt_s,
                         flow_bounds=flow_bounds, delay_bounds_s=delay_bounds_s)
    if pb.curves.shape[0] == 0:
        return _finish(pb, (np.empty(0),) * 4)
    F, k, tau0, td = _grid_init(pb)
    lo = np.array([np.log(pb.f_bounds[0]), np.log(_K_BOUNDS[0]), _TAU0_BOUNDS[0], pb.d_bounds[0]])
    hi = np.array([np.log(pb.f_bounds[1]), np.log(_K_BOUNDS[1]), _TAU0_BOUNDS[1], pb.d_bounds[1]])
    theta, _ = batched_lm(pb.curves, np.stack([np.log(F), np.log(k), tau0, td], axis=1), lo, hi,
                          lambda th: _unit_model(pb, th),
                          lambda th, unit: _jacobian(pb, th, unit), max_iter=max_iter)
    params = (np.exp(theta[:, 0]), np.exp(theta[:, 1]), theta[:, 2], theta[:, 3])
    return _finish(pb, params)


def fermi_flow_reference(tissue, aif, times_s, **options) -> FlowFit:
    """Same model and discretisation as :func:`fermi_flow` (same ``options``), fitted one
    curve at a time with ``scipy.optimize.least_squares`` (bounded, trust-region
    reflective) on ``(F, k, tau0, tau_d)``. Slow; a reference for tests and benchmarks.
    """
    from scipy.optimize import least_squares

    pb = prepare_problem(tissue, aif, times_s, **options)
    n = pb.curves.shape[0]
    if n == 0:
        return _finish(pb, (np.empty(0),) * 4)
    p0 = np.stack(_grid_init(pb), axis=1)
    lo = np.array([pb.f_bounds[0], _K_BOUNDS[0], _TAU0_BOUNDS[0], pb.d_bounds[0]])
    hi = np.array([pb.f_bounds[1], _K_BOUNDS[1], _TAU0_BOUNDS[1], pb.d_bounds[1]])
    MT = pb.MT
    out = np.empty((n, 4))
    for i in range(n):
        c = pb.curves[i]

        def resid(p, c=c):
            one = np.array([1.0])
            return p[0] * (_shape(pb.s, pb.dt, p[1] * one, p[2] * one, p[3] * one)[0] @ MT) - c

        def jac(p):
            one = np.array([1.0])
            shp, d_k, d_t0, d_td = _shape(pb.s, pb.dt, p[1] * one, p[2] * one, p[3] * one, jac=True)
            return np.stack([shp[0] @ MT, p[0] * (d_k[0] @ MT), p[0] * (d_t0[0] @ MT), p[0] * (d_td[0] @ MT)], 1)

        x0 = np.clip(p0[i], lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo))
        res = least_squares(resid, x0, jac=jac, bounds=(lo, hi), method="trf", x_scale="jac")
        out[i] = res.x
    return _finish(pb, tuple(out.T))
