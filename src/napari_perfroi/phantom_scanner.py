"""The scanner-like phantom family: the teaching phantom made to look like many scanners.

The teaching phantom (:func:`~napari_perfroi.phantom.generate_phantom`) stays
as it is; this family, used for training and for the hard benchmark, draws
from a generator:

- wider anatomy and acquisition through phantom overrides: trabeculation up
  to 3.5 mm and papillary muscles up to 7 mm (partial volume at the
  endocardium), epicardial fat up to 8 mm, through-plane motion (the ring
  changes size by up to 12 %), pixel spacing and odd matrices, 40-90 frames
  at heart rates of 50-130/min, slow injections and poor boluses, low
  blood-myocardium contrast before the bolus (blood T1 near the
  myocardium's), low SNR, the heart near the edge of the field of view,
  single slices;
- scanner effects rendered onto the image, using the true labels where the
  effect follows anatomy: the dark-rim artefact (a 1-2 px band on the blood
  side of the endocardium that darkens with the LV blood enhancement),
  blood-pool inflow and flow voids, a parallel-imaging g-factor map (noise
  raised in bands along the phase-encoding axis), wrap-around along the phase
  axis, motion blur along each frame's motion, and the vendor's intensity
  scale (integer range, gain, offset).

Held-out settings (``held_out=True``) are never drawn for training, so a
benchmark can measure generalisation: ``HELD_OUT_SETTINGS`` names them.

The truth keeps the teaching phantom's conventions: trabeculae, papillary
muscles and the dark rim are LV blood pool.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .phantom import Phantom, generate_phantom
from .study import LV_BLOOD, MYOCARDIUM, RV_BLOOD

TRAINING_SPACING_MM = (1.2, 2.8)
HELD_OUT_SPACING_MM = (2.8, 3.0)
HELD_OUT_SETTINGS = (
    "EPI-like N/2 ghost along the phase axis (training: none)",
    f"pixel spacing {HELD_OUT_SPACING_MM[0]}-{HELD_OUT_SPACING_MM[1]} mm (training: "
    f"{TRAINING_SPACING_MM[0]}-{TRAINING_SPACING_MM[1]} mm)",
    "an intensity offset of 30-150 % of the peak signal (training: at most 20 %)",
)


def scanner_like_phantom(
    seed: int, rng: np.random.Generator, held_out: bool = False, defect: str | None = None,
    **overrides,
) -> Phantom:
    """The phantom of ``seed`` drawn from the scanner-like family with ``rng``; explicit
    ``overrides`` win over the family's draws."""
    phantom = generate_phantom(seed, defect, **{**scanner_like_overrides(rng, held_out),
                                                **overrides})
    phantom.image = render_scanner_effects(phantom, rng, held_out)
    return phantom


def scanner_like_overrides(rng: np.random.Generator, held_out: bool = False) -> dict:
    """Phantom overrides of the family (module docstring)."""
    u = rng.uniform
    spacing = u(*(HELD_OUT_SPACING_MM if held_out else TRAINING_SPACING_MM))
    fov_mm = u(280.0, 420.0), u(230.0, 400.0)
    matrix = tuple(int(round(f / spacing)) for f in fov_mm)
    if rng.random() < 0.5:  # scanners reconstruct multiples of 8 or 16 more often than not
        matrix = tuple(max(64, 8 * round(n / 8)) for n in matrix)
    rr_s = 60.0 / u(50.0, 130.0)
    overrides = {
        "pixel_spacing_mm": round(float(spacing), 4),
        "matrix": matrix,
        "rr_interval_s": rr_s,
        "n_dynamics": int(rng.integers(40, 91)),
        "trabeculation_mm": u(0.5, 3.5),
        "papillary_radius_mm": u(3.0, 7.0),
        "epicardial_fat_mm": u(0.0, 8.0),
        "through_plane_scale": u(0.0, 0.12),
        "heart_offset": (u(-1.5, 1.5), u(-1.5, 1.5)),
        "snr": float(np.exp(u(np.log(2.5), np.log(20.0)))),
        "g_factor": u(0.0, 1.5),
        "phase_resolution": u(0.45, 1.0),
    }
    bolus = rng.random()
    if bolus < 0.25:  # slow, long injection
        overrides.update(lv_time_to_peak_s=u(8.0, 14.0), bolus_alpha=u(1.2, 2.5))
    elif bolus < 0.45:  # poor bolus: low, dispersed
        overrides.update(lv_peak_mmol=u(1.2, 2.5), lv_time_to_peak_s=u(6.0, 11.0))
    if rng.random() < 0.3:  # low blood-myocardium contrast before the bolus
        myocardium_t1 = u(0.98, 1.12)
        overrides["t1_s"] = {
            "blood": myocardium_t1 * u(1.0, 1.15), "myocardium": myocardium_t1,
            "fat": u(0.25, 0.4), "muscle": u(0.85, 1.3), "lung": u(1.0, 1.4),
            "liver": u(0.5, 0.85), "marrow": u(0.4, 0.9), "mediastinum": u(0.35, 0.8),
        }
    if rng.random() < 0.25:
        overrides.update(n_slices=1, acquisition_order=(0,))
    return overrides


def render_scanner_effects(
    phantom: Phantom, rng: np.random.Generator, held_out: bool = False
) -> np.ndarray:
    """The phantom's image (S, T, Y, X) with the family's scanner effects, uint16."""
    labels = phantom.truth["labels"]
    phase_axis = phantom.params.phase_axis
    image = phantom.image.astype(np.float32)
    enhancement = _lv_enhancement(image, labels)
    if rng.random() < 0.6:
        image = _dark_rim(image, labels, enhancement, rng)
    if rng.random() < 0.5:
        image = _inflow_and_voids(image, labels, rng)
    if rng.random() < 0.4:
        image = _motion_blur(image, phantom.truth["motion"], rng.uniform(0.3, 1.0))
    if held_out:  # EPI-like: a faint N/2 ghost along the phase axis
        shift = image.shape[2 + phase_axis] // 2
        image = image + rng.uniform(0.04, 0.12) * np.roll(image, shift, axis=2 + phase_axis)
    if rng.random() < 0.3:
        image = _wrap(image, phase_axis, rng.uniform(0.05, 0.15))
    if rng.random() < 0.5:
        image = _g_factor_noise(image, labels, phase_axis, rng)
    return _vendor_scale(image, rng, held_out)


def _lv_enhancement(image, labels) -> np.ndarray:
    """(S, T) LV blood enhancement over its pre-contrast level, 0 at baseline, 1 at peak."""
    lv = labels == LV_BLOOD
    mean = (image * lv).sum(axis=(2, 3)) / np.maximum(lv.sum(axis=(2, 3)), 1)
    baseline = np.percentile(mean, 10, axis=1, keepdims=True)
    rise = np.maximum(mean - baseline, 0.0)
    return rise / np.maximum(rise.max(axis=1, keepdims=True), 1e-6)


def _dark_rim(image, labels, enhancement, rng) -> np.ndarray:
    """Darken a 1-2 px band of blood next to the myocardium, with the LV enhancement."""
    width = rng.uniform(1.0, 2.2)
    depth = rng.uniform(0.15, 0.45)
    out = image.copy()
    for s, t in np.ndindex(labels.shape[:2]):
        lv = labels[s, t] == LV_BLOOD
        distance = ndimage.distance_transform_edt(lv)
        band = np.clip(1.0 - (distance - 0.5) / width, 0.0, 1.0) * lv
        out[s, t] *= 1.0 - depth * enhancement[s, t] * band
    return out


def _inflow_and_voids(image, labels, rng) -> np.ndarray:
    """Smooth inflow brightening and small dark flow voids in the blood pools, per frame."""
    blood = (labels == LV_BLOOD) | (labels == RV_BLOOD)
    amplitude = rng.uniform(0.05, 0.25)
    field = ndimage.gaussian_filter(rng.standard_normal(image.shape).astype(np.float32),
                                    (0, 1.5, 4, 4))
    field /= max(float(field.std()), 1e-6)
    voids = ndimage.gaussian_filter((rng.random(image.shape) < 0.002).astype(np.float32),
                                    (0, 0, 1.2, 1.2))
    voids = np.clip(voids / max(float(voids.max()), 1e-6), 0.0, 1.0)
    gain = 1.0 + amplitude * field - rng.uniform(0.3, 0.8) * voids
    return np.where(blood, image * np.clip(gain, 0.2, 2.0), image)


def _motion_blur(image, motion, amount) -> np.ndarray:
    """Each frame averaged with itself moved along half its motion from the last frame."""
    out = image.copy()
    step = np.diff(motion, axis=1, prepend=motion[:, :1]) * amount
    for s, t in np.ndindex(image.shape[:2]):
        if np.hypot(*step[s, t]) > 0.2:
            moved = [ndimage.shift(image[s, t], k * step[s, t], order=1, mode="nearest")
                     for k in (-0.5, 0.5)]
            out[s, t] = (image[s, t] + moved[0] + moved[1]) / 3.0
    return out


def _wrap(image, phase_axis, fraction) -> np.ndarray:
    """Fold-over along the phase axis: each edge band also shows the opposite edge's."""
    axis = 2 + phase_axis
    n = image.shape[axis]
    width = max(1, int(fraction * n))
    out = image.copy()
    head = [slice(None)] * image.ndim
    tail = [slice(None)] * image.ndim
    head[axis], tail[axis] = slice(0, width), slice(n - width, n)
    out[tuple(head)] += image[tuple(tail)]
    out[tuple(tail)] += image[tuple(head)]
    return out


def _g_factor_noise(image, labels, phase_axis, rng) -> np.ndarray:
    """Rician noise whose SD follows a g-factor map: bands along the phase axis (R = 2-3)."""
    myocardium = labels == MYOCARDIUM
    level = float(np.median(image[myocardium])) if myocardium.any() else float(image.mean())
    acceleration = int(rng.integers(2, 4))
    n = image.shape[2 + phase_axis]
    position = np.arange(n) / n
    g = 1.0 + rng.uniform(0.3, 1.5) * np.abs(np.sin(np.pi * acceleration * position)) ** 2
    shape = [1, 1, 1, 1]
    shape[2 + phase_axis] = n
    sd = level * rng.uniform(0.03, 0.12) * g.reshape(shape).astype(np.float32)
    noise = rng.standard_normal((2, *image.shape), dtype=np.float32)
    return np.hypot(image + sd * noise[0], sd * noise[1])


def _vendor_scale(image, rng, held_out) -> np.ndarray:
    """Stored integers: a vendor's gain (peak 150-20000) and offset, clipped to its range."""
    peak = float(np.percentile(image, 99.9)) or 1.0
    target_peak = float(np.exp(rng.uniform(np.log(150.0), np.log(20_000.0))))
    gain = target_peak / peak
    offset = target_peak * (rng.uniform(0.3, 1.5) if held_out else rng.uniform(0.0, 0.05))
    top = 4095.0 if target_peak < 3500.0 and rng.random() < 0.5 else 65535.0  # 12-bit
    return np.clip(np.rint(image * gain + offset), 0.0, top).astype(np.uint16)
