"""Myocardial blood flow with the two-compartment exchange model (2CXM), fitted per curve.

The model (Sourbron & Buckley, Phys Med Biol 2011; the tissue model of scanner-inline
quantification), plasma ``Cp`` and interstitium ``Ce``::

    vp dCp/dt = Fp (Ca - Cp) - PS (Cp - Ce),    ve dCe/dt = PS (Cp - Ce),
    C = vp Cp + ve Ce

with plasma flow ``Fp``, permeability-surface area product ``PS`` (both 1/s) and the
plasma and interstitial volume fractions ``vp``, ``ve``. Its impulse response is a
sum of two exponentials that starts at ``Fp``, delayed by ``tau_d``::

    R(t) = Fp (w exp(-alpha x) + (1 - w) exp(-beta x)) u(x),   x = t - tau_d
    alpha, beta = roots of  z^2 - ((Fp + PS) / vp + PS / ve) z + Fp PS / (vp ve)
    w = (Fp / vp - beta) / (alpha - beta)

``Ca`` is the plasma input; units, the convolution grid, frame times and the delay
step are those of :mod:`~napari_perfroi.perfusion` (shared setup and batched
Levenberg-Marquardt). The fit runs on ``(log Fp, log PS, log vp, log ve, tau_d)``
within physiological bounds. The model is homogeneous (scaling Fp, PS, vp and ve
together scales R), so the initial guess is the best of a grid of response shapes
with the scale solved linearly. ``two_compartment_flow_reference`` fits the same
model one curve at a time with ``scipy.optimize.least_squares``.
"""

from __future__ import annotations

import numpy as np

from .perfusion import TISSUE_DENSITY_G_ML, ConvolutionProblem, FlowFit, batched_lm, prepare_problem

__all__ = ["two_compartment_flow", "two_compartment_flow_reference", "MODEL_NAME",
           "PS_BOUNDS", "VP_BOUNDS", "VE_BOUNDS"]

MODEL_NAME = "two-compartment exchange model (2CXM) with delay"
PS_BOUNDS = (0.3, 4.0)  # mL/min/g
VP_BOUNDS = (0.02, 0.15)  # plasma volume fraction
VE_BOUNDS = (0.1, 0.5)  # interstitial volume fraction
# Initial shapes per unit Fp: vp / Fp and ve / Fp [s], PS / Fp.
_VP_PER_FP_S = (0.8, 2.0, 5.0, 12.0)
_VE_PER_FP_S = (3.0, 9.0, 25.0, 60.0)
_PS_PER_FP = (0.3, 1.0, 3.0, 8.0)
# Weak log-normal priors (median, SD of the log) for what a noisy curve sampled once per
# heartbeat barely determines: without them PS, vp and ve trade off against Fp and pixel
# maps scatter by a factor of two at stress. Their weight scales with each curve's noise.
FLOW_PRIOR = (2.0, 1.0)  # blood flow, mL/min/g
PS_PRIOR = (1.5, 0.7)  # mL/min/g
VP_PRIOR = (0.05, 0.5)
VE_PRIOR = (0.2, 0.5)
_LOG_STEP = 1e-6  # central differences of the rates in log parameters


def _rates(fp, ps, vp, ve):
    """``(w, alpha, beta)`` of the impulse response (arrays like the inputs)."""
    plasma = (fp + ps) / vp
    interstitium = ps / ve
    root = np.sqrt((plasma - interstitium) ** 2 + 4.0 * ps * ps / (vp * ve))
    alpha = 0.5 * (plasma + interstitium + root)
    beta = fp * ps / (vp * ve) / alpha  # the product of the roots, stable when beta << alpha
    return (fp / vp - beta) / (alpha - beta), alpha, beta


def _exponentials(pb: ConvolutionProblem, alpha, beta, td, dtype=np.float32):
    """``exp(-rate x) u(x)`` for both rates on the grid, x = s - td, with the
    cell-averaged delay step: (n, 2, Tf) and x (n, Tf). Float32 is as precise as the
    fit needs and twice as fast."""
    x = pb.s.astype(dtype)[None, :] - td.astype(dtype)[:, None]
    rates = np.stack([alpha, beta], axis=1).astype(dtype)
    exps = np.maximum(x, -pb.dt)[:, None, :] * -rates[:, :, None]
    np.exp(exps, out=exps)
    ramp = slice(0, pb.n_ramp)  # the step is 1 after these grid points
    exps[:, :, ramp] *= np.clip((x[:, None, ramp] + 0.5 * pb.dt) / pb.dt, 0.0, 1.0)
    return exps, x


def _unit_model(pb: ConvolutionProblem, theta: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Model per unit Fp at the frame times (n, T) for ``theta`` (n, 5)."""
    w, alpha, beta = _rates(*np.exp(theta[:, :4].T))
    exps, _ = _exponentials(pb, alpha, beta, theta[:, 4], dtype)
    weights = np.stack([w, 1.0 - w], axis=1).astype(dtype)
    return np.einsum("nk,nkt->nt", weights, exps) @ (pb.MT32 if dtype == np.float32 else pb.MT)


def _rate_derivatives(theta: np.ndarray) -> np.ndarray:
    """d(w, alpha, beta) / d(log Fp, log PS, log vp, log ve): (n, 4, 3), central differences."""
    out = np.empty((theta.shape[0], 4, 3))
    for i in range(4):
        up, down = theta[:, :4].copy(), theta[:, :4].copy()
        up[:, i] += _LOG_STEP
        down[:, i] -= _LOG_STEP
        out[:, i] = (np.stack(_rates(*np.exp(up.T)), 1)
                     - np.stack(_rates(*np.exp(down.T)), 1)) / (2 * _LOG_STEP)
    return out


def _jacobian(pb: ConvolutionProblem, theta: np.ndarray):
    """``(C, basis)`` with d model / d theta = ``C @ basis``: (n, 5, 5) and (n, 5, T).

    Basis rows: the two exponentials, the two exponentials times x (through M), and
    the column of M of the grid cell where the delay step ramps up.
    """
    fp = np.exp(theta[:, 0])
    w, alpha, beta = _rates(*np.exp(theta[:, :4].T))
    td = theta[:, 4]
    exps, x = _exponentials(pb, alpha, beta, td)
    n = theta.shape[0]
    rows = np.concatenate([exps, exps * x[:, None]], axis=1)
    basis = (rows.reshape(4 * n, -1) @ pb.MT32).reshape(n, 4, -1)
    pos = td / pb.dt + 0.5
    m = np.floor(pos).astype(int)
    ramp = (pos > m) & (m >= 0) & (m < pb.s.size)
    m = np.clip(m, 0, pb.s.size - 1)
    basis = np.concatenate([basis, pb.MT[m][:, None]], axis=1)
    xm = pb.s[m] - td
    at_ramp = ramp * (w * np.exp(-alpha * xm) + (1.0 - w) * np.exp(-beta * xm)) / pb.dt
    # d model / d (Fp, w, alpha, beta, tau_d), as combinations of the basis rows.
    direct = np.zeros((n, 5, 5))
    direct[:, 0, 0], direct[:, 0, 1] = w, 1.0 - w
    direct[:, 1, 0], direct[:, 1, 1] = fp, -fp
    direct[:, 2, 2] = -fp * w
    direct[:, 3, 3] = -fp * (1.0 - w)
    direct[:, 4, 0], direct[:, 4, 1] = fp * w * alpha, fp * (1.0 - w) * beta
    direct[:, 4, 4] = -fp * at_ramp
    # Chain rule: d(Fp, w, alpha, beta, tau_d) / d theta.
    chain = np.zeros((n, 5, 5))
    chain[:, 0, 0] = fp
    chain[:, :4, 1:4] = _rate_derivatives(theta)
    chain[:, 4, 4] = 1.0
    return chain @ direct, basis


def _bounds(pb: ConvolutionProblem):
    per_s = TISSUE_DENSITY_G_ML / 60.0
    lo = np.array([np.log(pb.f_bounds[0]), np.log(PS_BOUNDS[0] * per_s), np.log(VP_BOUNDS[0]),
                   np.log(VE_BOUNDS[0]), pb.d_bounds[0]])
    hi = np.array([np.log(pb.f_bounds[1]), np.log(PS_BOUNDS[1] * per_s), np.log(VP_BOUNDS[1]),
                   np.log(VE_BOUNDS[1]), pb.d_bounds[1]])
    return lo, hi


def _prior(pb: ConvolutionProblem):
    """``(mean, weight)`` for :func:`batched_lm`: weight = curve noise SD / prior SD."""
    per_s = TISSUE_DENSITY_G_ML / 60.0
    flow_per_s = FLOW_PRIOR[0] * (1.0 - pb.hematocrit) * per_s
    mean = np.array([np.log(flow_per_s), np.log(PS_PRIOR[0] * per_s), np.log(VP_PRIOR[0]),
                     np.log(VE_PRIOR[0]), 0.0])
    inverse_sd = np.array([1 / FLOW_PRIOR[1], 1 / PS_PRIOR[1], 1 / VP_PRIOR[1], 1 / VE_PRIOR[1],
                           0.0])
    return mean, noise_sd(pb.curves)[:, None] * inverse_sd


def noise_sd(curves: np.ndarray) -> np.ndarray:
    """Robust noise SD of each curve (n, T): the median absolute second difference
    (blind to the curve's slope), scaled to an SD for white noise."""
    return 1.4826 * np.median(np.abs(np.diff(curves, n=2, axis=1)), axis=1) / np.sqrt(6.0)


def _grid_init(pb: ConvolutionProblem) -> np.ndarray:
    """Initial ``theta`` (n, 5): the best grid shape per curve, its scale solved linearly."""
    lo, hi = pb.d_bounds
    delays = np.linspace(lo, hi, max(2, int(np.ceil((hi - lo) / 0.5)) + 1))
    td, vp, ve, ps = (a.ravel() for a in np.meshgrid(delays, _VP_PER_FP_S, _VE_PER_FP_S,
                                                     _PS_PER_FP, indexing="ij"))
    shapes = np.stack([np.zeros_like(td), np.log(ps), np.log(vp), np.log(ve), td], axis=1)
    B = _unit_model(pb, shapes)  # per unit Fp = 1/s
    bb = np.einsum("gt,gt->g", B, B)
    cb = pb.curves @ B.T
    scale = np.clip(cb / np.where(bb > 0, bb, np.inf), *pb.f_bounds)
    best = np.argmin(-2.0 * scale * cb + scale**2 * bb, axis=1)
    theta = shapes[best]
    theta[:, :4] += np.log(scale[np.arange(len(best)), best])[:, None]
    return theta


def _finish(pb: ConvolutionProblem, theta: np.ndarray) -> FlowFit:
    n_all = pb.valid.size
    names = ("mbf", "ps", "vp", "ve", "delay", "err")
    out = {name: np.full(n_all, np.nan) for name in names}
    fitted = np.full((n_all, pb.n_times), np.nan)
    if pb.curves.shape[0]:
        fit = np.exp(theta[:, :1]) * _unit_model(pb, theta)
        err = np.linalg.norm(pb.curves - fit, axis=1) / np.linalg.norm(pb.curves, axis=1)
        ok = np.all(np.isfinite(theta), axis=1) & np.isfinite(err)
        v = np.flatnonzero(pb.valid)
        per_g = 60.0 / TISSUE_DENSITY_G_ML
        values = {"mbf": np.exp(theta[:, 0]) * pb.to_mbf, "ps": np.exp(theta[:, 1]) * per_g,
                  "vp": np.exp(theta[:, 2]), "ve": np.exp(theta[:, 3]), "delay": theta[:, 4]}
        for name, value in values.items():
            out[name][v] = np.where(ok, value, np.nan)
        out["err"][v] = err
        fitted[v] = fit
    shape = pb.shape
    return FlowFit(
        mbf=out["mbf"].reshape(shape),
        delay_s=out["delay"].reshape(shape),
        fit_error=out["err"].reshape(shape),
        fitted=fitted.reshape(shape + (pb.n_times,)),
        model=MODEL_NAME,
        flow=pb.flow,
        ps=out["ps"].reshape(shape),
        vp=out["vp"].reshape(shape),
        ve=out["ve"].reshape(shape),
    )


def two_compartment_flow(tissue, aif, times_s, *, max_iter: int = 150, **options) -> FlowFit:
    """2CXM fit of many tissue curves at once (batched LM); ``options`` as
    :func:`~napari_perfroi.perfusion.fermi_flow` (``hematocrit``, ``aif_is_plasma``,
    ``flow``, ``dt_s``, ``flow_bounds``, ``delay_bounds_s``).

    ``FlowFit.mbf`` is the flow (blood, or plasma with ``flow="plasma"``) in mL/min/g;
    ``ps`` is PS in mL/min/g, ``vp`` and ``ve`` volume fractions. Curves with
    non-finite values or all zeros give NaN.
    """
    pb = prepare_problem(tissue, aif, times_s, **options)
    if pb.curves.shape[0] == 0:
        return _finish(pb, np.empty((0, 5)))
    lo, hi = _bounds(pb)
    theta, _ = batched_lm(pb.curves, _grid_init(pb), lo, hi, lambda th: _unit_model(pb, th),
                          lambda th, _unit: _jacobian(pb, th), max_iter=max_iter,
                          prior=_prior(pb))
    return _finish(pb, theta)


def two_compartment_flow_reference(tissue, aif, times_s, **options) -> FlowFit:
    """The same model, priors and start, fitted one curve at a time with
    ``scipy.optimize.least_squares`` (bounded trust-region reflective, finite-difference
    Jacobian). Slow; a reference for tests and benchmarks."""
    from scipy.optimize import least_squares

    pb = prepare_problem(tissue, aif, times_s, **options)
    if pb.curves.shape[0] == 0:
        return _finish(pb, np.empty((0, 5)))
    lo, hi = _bounds(pb)
    start = np.clip(_grid_init(pb), lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo))
    prior_mean, prior_weight = _prior(pb)
    theta = np.empty_like(start)
    for i, curve in enumerate(pb.curves):
        def residual(th, curve=curve, weight=prior_weight[i]):
            # float64: finite differences of the float32 model would be noise
            misfit = np.exp(th[0]) * _unit_model(pb, th[None], np.float64)[0] - curve
            return np.concatenate([misfit, weight * (th - prior_mean)])

        theta[i] = least_squares(residual, start[i], bounds=(lo, hi), method="trf",
                                 x_scale="jac").x
    return _finish(pb, theta)
