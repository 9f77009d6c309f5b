"""Seeded LGE (late gadolinium enhancement) phantom of the perfusion phantom's patient.

``generate_lge_phantom(seed, defect)`` images the heart that
``napari_perfroi.phantom.generate_phantom(seed, defect)`` images: the same
parameters, slice anatomy, slice planes and orientation in patient space, at
end-diastole without motion. One single-phase short-axis inversion-recovery
image is rendered at each perfusion slice position, on its own (finer) pixel
grid, with the LV centre at the same fraction of the field of view.

Signal: each tissue has a post-contrast T1 drawn per study and the proton
density of the perfusion phantom's patient; after the inversion at time TI
before the readout, Mz = PD (1 - (1 + e m0) exp(-TI / T1)), with m0 = 1 -
exp(-recovery / T1) the magnetisation before the inversion and e the
inversion efficiency (1, less in a smooth region where the inversion is
imperfect: a mis-nulled region). Magnitude images store |Mz|, PSIR images
store the signed Mz plus ``PSIR_OFFSET`` (``attrs["rescale_intercept"]`` is
its negative, so ``image + rescale_intercept`` is the signed value). TI is
drawn around the myocardial null with an error. Voxel signal = sum of tissue
fractions x tissue signals (partial volume at every edge, as the perfusion
phantom renders it), times coil shading and texture; phase-encode ghosts and
complex Gaussian noise are added before k-space truncation along the phase
axis, then the magnitude (Rician noise) or the real part (PSIR) is kept.

Scar lies in the myocardium of a coronary territory: in each imaged slice,
within the AHA segments drawn for it (``scar_segments``), it spans one
contiguous arc per run of adjacent segments, from the endocardium to a
radial extent of ``transmurality`` x wall thickness that varies smoothly with
angle and tapers to nothing at the arc ends ("subendocardial" or
"transmural"), or it is "patchy": blobs of intermediate enhancement in the
wall. Large transmural scars may hold microvascular obstruction (MVO): a dark
subendocardial core (long T1, little gadolinium). The truth masks are the
pixels where more than half of the pixel is scar (MVO), so they match what is
rendered.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

from .. import aha
from .. import phantom as perfusion
from ..dicom import slice_normal
from ..errors import InputError
from ..study import MYOCARDIUM

LGE_KINDS = ("magnitude", "psir")
SCAR_PATTERNS = ("none", "subendocardial", "transmural", "patchy")
TERRITORY_NAMES = tuple(aha.TERRITORIES)
PSIR_OFFSET = 4096  # stored PSIR value of zero signal
_STREAM = 0x4C4745  # second entropy word of the LGE draws' generator
_RAY_STEP_DEG = 0.5
_RAY_SAMPLES = 48
_SIDES = ("both", "first", "second")
_LGE_START_S = 600.0  # first LGE slice after the start of the perfusion series
_BREATH_HOLD_S = 20.0


@dataclass(frozen=True)
class LgeParams:
    """Every randomised quantity of one LGE image: lengths mm, times ms, angles deg.

    ``phi`` angles run from the septal bisector in the AHA numbering direction,
    so that a segment is the same arc whatever the image orientation.
    """

    # scar
    scar_territory: str | None  # "lad" | "rca" | "lcx" | None
    scar_pattern: str  # SCAR_PATTERNS
    scar_segments: tuple[int, ...]  # AHA segments the scar is drawn in
    transmurality: float  # peak radial extent / wall thickness (patchy: blob width / wall)
    scar_taper: float  # fraction of an arc over which the extent tapers to 0 at each end
    scar_modulation: tuple[float, float]  # extent modulation along the arc: amplitude, phase
    scar_inset_deg: float  # arc ends kept this far inside the segments' edges
    scar_heterogeneity: float  # largest loss of enhancement in a smooth random pattern, 0-1
    has_mvo: bool
    mvo_depth: float  # MVO radial extent over the scar's, at the arc centre
    patchy_density: float  # blobs per 25 degrees of arc
    # relaxation
    t1_ms: dict[str, float]  # post-contrast T1 per tissue
    recovery_ms: float  # readout to the next inversion (two R-R intervals)
    inversion_time_ms: float
    inversion_inhomogeneity: float  # inversion efficiency loss at the mis-nulled region centre
    inversion_region: tuple[float, float, float]  # its centre (u, v) and width, mm
    lge_kind: str  # "magnitude" | "psir"
    # acquisition
    pixel_spacing_mm: float
    matrix: tuple[int, int]
    phase_axis: int
    phase_resolution: float
    kspace_taper: float
    snr: float  # brighter of LV blood and scar over the noise SD (LV centre)
    g_factor: float
    intensity_peak: float  # stored value of the brighter of LV blood and scar (noise-free)
    coil_shading: float
    texture: float
    ghost_amplitude: float  # phase-encode ghosts (respiratory), fraction of the image
    ghost_shift: float  # ghost offset along the phase axis, fraction of the field of view
    lge_seed: int  # fine-grained draws: arcs per slice, blobs, lung vessels, texture, noise


@dataclass
class LgePhantom:
    """A generated LGE stack with its truth (see the module docstring)."""

    image: np.ndarray  # (S, Y, X) uint16; PSIR stored with PSIR_OFFSET
    labels: np.ndarray  # (S, Y, X) uint8: 0 bg, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool
    scar: np.ndarray  # (S, Y, X) uint8: 0 none, 1 scar, 2 MVO (part of the scar)
    aha: np.ndarray  # (S, Y, X) uint8: AHA segment of each myocardium pixel, 0 elsewhere
    attrs: dict[str, Any]
    truth: dict[str, Any]
    params: LgeParams
    heart: perfusion.PhantomParams  # the perfusion phantom's parameters (same patient)


# ----------------------------------------------------------------------------- sampling
def sample_lge_params(
    seed: int, heart: perfusion.Heart, scar: str | None = None, **overrides
) -> LgeParams:
    """Draw the LGE quantities of the patient of ``seed`` (``heart``: its
    :func:`~napari_perfroi.phantom.heart_of_seed`); ``overrides`` replace fields by
    name. The draws come from a generator of their own, apart from the perfusion
    phantom's, in a fixed order whatever is overridden.

    ``scar`` None draws the scar: in the perfusion defect territory in about 45 %
    of studies (all its imaged segments or only some), in another territory in
    15 %, none otherwise; "none" or a territory name forces it.
    """
    unknown = set(overrides) - {f.name for f in dataclasses.fields(LgeParams)}
    if unknown:
        raise InputError(f"unknown LGE phantom parameter {', '.join(sorted(unknown))}")
    p = heart.params
    rng = np.random.default_rng([int(seed), _STREAM])
    u = rng.uniform

    # scar
    which, other, whole, subset_pick, pattern_pick = rng.random(5)
    drawn_extent = {"subendocardial": u(0.2, 0.5), "transmural": u(0.75, 1.0),
                    "patchy": u(0.3, 0.7)}
    mvo_pick = rng.random()
    scar_taper = u(0.12, 0.3)
    modulation = (u(0.0, 0.2), u(0.0, 360.0))
    inset = u(1.0, 6.0)
    heterogeneity = u(0.0, 0.35)
    mvo_depth = u(0.35, 0.7)
    patchy_density = u(0.6, 1.5)
    # relaxation, ms
    blood = u(250.0, 450.0)
    myocardium = max(u(400.0, 600.0), blood + 60.0)
    t1 = {
        "blood": blood,
        "myocardium": myocardium,
        "scar": min(u(200.0, 350.0), myocardium - 100.0),
        "mvo": myocardium * u(1.1, 1.5),
        "fat": u(240.0, 320.0),
        "liver": u(300.0, 500.0),
        "muscle": u(500.0, 750.0),
        "lung": u(400.0, 700.0),
        "marrow": u(250.0, 400.0),
        "mediastinum": u(280.0, 450.0),
    }
    recovery = 2.0 * _rest_rr_ms(p) * u(0.75, 0.9)  # inversions every other beat
    ti_error = float(np.clip(rng.normal(0.0, 0.1), -0.3, 0.3))
    inhomogeneity = 0.0 if rng.random() < 0.5 else u(0.02, 0.12)
    region = (u(-60.0, 60.0), u(-60.0, 60.0), u(30.0, 80.0))
    kind = LGE_KINDS[int(rng.random() < 0.5)]
    # acquisition
    spacing = round(u(1.3, 1.9), 4)
    readout_fov = u(300.0, 400.0)
    cols = int(np.clip(8 * round(readout_fov / spacing / 8), 160, 288))
    rows = int(np.clip(8 * round(cols * u(0.7, 0.95) / 8), 128, 256))
    matrix = (cols, rows) if rng.random() < 0.2 else (rows, cols)
    shorter_axis = int(matrix[1] < matrix[0])
    phase_axis = shorter_axis if rng.random() < 0.8 else 1 - shorter_axis
    ghost = 0.0 if rng.random() < 0.5 else u(0.01, 0.08)

    drawn = {
        "scar_taper": scar_taper,
        "scar_modulation": modulation,
        "scar_inset_deg": inset,
        "scar_heterogeneity": heterogeneity,
        "mvo_depth": mvo_depth,
        "patchy_density": patchy_density,
        "t1_ms": t1,
        "recovery_ms": recovery,
        "inversion_inhomogeneity": inhomogeneity,
        "inversion_region": region,
        "lge_kind": kind,
        "pixel_spacing_mm": spacing,
        "matrix": matrix,
        "phase_axis": phase_axis,
        "phase_resolution": u(0.6, 1.0),
        "kspace_taper": u(0.0, 1.0),
        "snr": perfusion._log_uniform(rng, 10.0, 60.0),
        "g_factor": u(0.0, 0.8),
        "intensity_peak": perfusion._log_uniform(rng, 300.0, 3000.0),
        "coil_shading": u(0.0, 1.0),
        "texture": u(0.0, 0.05),
        "ghost_amplitude": ghost,
        "ghost_shift": u(0.15, 0.5),
        "lge_seed": int(rng.integers(2**31)),
    }
    values = {**drawn, **overrides}
    if "t1_ms" in overrides:  # a partial dict replaces only the tissues it names
        if not isinstance(overrides["t1_ms"], dict):
            raise InputError(f"t1_ms must map tissues to T1 in ms, got {overrides['t1_ms']!r}")
        values["t1_ms"] = {**t1, **overrides["t1_ms"]}

    # Fields that depend on others are resolved after the overrides.
    territory = _scar_territory(p.defect, scar, which, other)
    if "scar_territory" in overrides:
        territory = overrides["scar_territory"]
        if scar is not None and (territory or "none") != scar:
            raise InputError(f"scar {scar!r} contradicts scar_territory {territory!r}")
    if "scar_segments" in overrides and territory is None and scar is None:
        territory = _territory_of_segments(overrides["scar_segments"])
    values["scar_territory"] = territory
    pattern = values.setdefault(
        "scar_pattern",
        "none" if territory is None
        else ("subendocardial", "transmural", "patchy")[min(2, int(pattern_pick / 0.4))],
    )
    values.setdefault("transmurality", drawn_extent.get(pattern, 0.0))
    values.setdefault(
        "scar_segments",
        () if territory is None else _drawn_segments(territory, heart.levels, whole, subset_pick),
    )
    values.setdefault(
        "has_mvo",
        pattern == "transmural" and values["transmurality"] >= 0.75 and mvo_pick < 0.4,
    )
    if "inversion_time_ms" not in values:
        tissue_t1 = values["t1_ms"]["myocardium"]
        null = _null_time_ms(tissue_t1, values["recovery_ms"])
        values["inversion_time_ms"] = round(null * (1.0 + ti_error), 1)
    params = LgeParams(**{name: perfusion._plain(value) for name, value in values.items()})
    _check_params(params)
    return params


def _scar_territory(defect: str, scar: str | None, which: float, other: float) -> str | None:
    if scar is not None:
        if scar not in (*TERRITORY_NAMES, "none"):
            raise InputError(f"unknown scar {scar!r}: expected lad, rca, lcx or none")
        return None if scar == "none" else scar
    if which < 0.45 and defect in TERRITORY_NAMES:
        return defect
    if which < 0.6:
        others = [t for t in TERRITORY_NAMES if t != defect]
        return others[int(other * len(others))]
    return None


def _territory_of_segments(segments) -> str | None:
    names = {name for name, members in aha.TERRITORIES.items() if set(segments) & set(members)}
    return names.pop() if len(names) == 1 else None


def _drawn_segments(territory: str, levels, whole: float, subset_pick: float) -> tuple[int, ...]:
    """All imaged segments of the territory (half the draws), or a contiguous part of them:
    a run of imaged levels, and at basal / mid levels one or both sides of the territory."""
    imaged_levels = [level for level in aha.LEVEL_SEGMENTS if level in levels]
    everything = _territory_part(territory, imaged_levels, "both")
    if whole < 0.5:
        return everything
    candidates = []
    for first in range(len(imaged_levels)):
        for last in range(first, len(imaged_levels)):
            for side in _SIDES:
                part = _territory_part(territory, imaged_levels[first : last + 1], side)
                if part and part != everything and part not in candidates:
                    candidates.append(part)
    if not candidates:
        return everything
    return candidates[int(subset_pick * len(candidates))]


def _territory_part(territory: str, levels, side: str) -> tuple[int, ...]:
    """Segments of ``territory`` at ``levels``; ``side`` "first" / "second": only the
    segments whose arc starts nearer to / further from the septal bisector."""
    members = aha.TERRITORIES[territory]
    chosen = []
    for level in levels:
        at_level = sorted(
            (s for s in members if s in aha.LEVEL_SEGMENTS[level]),
            key=lambda s: _segment_arc_deg(s)[0],
        )
        if side != "both" and len(at_level) > 1:
            at_level = at_level[:1] if side == "first" else at_level[1:]
        chosen.extend(at_level)
    return tuple(sorted(chosen))


def _segment_arc_deg(segment: int) -> tuple[float, float]:
    """(start, length) in phi of an AHA segment (see :func:`aha.segment_of_angle`)."""
    if segment >= 13:
        quadrant = (segment - 14) % 4
        return float(np.mod(90.0 * quadrant - 45.0, 360.0)), 90.0
    first = 1 if segment <= 6 else 7
    return 60.0 * ((segment - first - 2) % 6), 60.0


def _rest_rr_ms(p: perfusion.PhantomParams) -> float:
    """R-R interval at rest, when LGE is imaged."""
    return 1000.0 * min(p.rr_interval_s * p.rest_rr_factor, perfusion.REST_RR_MAX_S)


def _null_time_ms(t1_ms: float, recovery_ms: float) -> float:
    """Inversion time at which a tissue of T1 ``t1_ms`` has no longitudinal magnetisation."""
    m0 = 1.0 - math.exp(-recovery_ms / t1_ms)
    return t1_ms * math.log(1.0 + m0)


def _check_params(params: LgeParams) -> None:
    def bad(message):
        raise InputError(f"LGE phantom: {message}")

    if params.lge_kind not in LGE_KINDS:
        bad(f"unknown lge_kind {params.lge_kind!r}: expected magnitude or psir")
    if params.scar_pattern not in SCAR_PATTERNS:
        bad(f"unknown scar_pattern {params.scar_pattern!r}: expected {', '.join(SCAR_PATTERNS)}")
    if params.scar_territory not in (*TERRITORY_NAMES, None):
        bad(f"unknown scar_territory {params.scar_territory!r}: expected lad, rca, lcx or None")
    if (params.scar_pattern == "none") != (params.scar_territory is None):
        bad(f"scar_pattern {params.scar_pattern!r} contradicts scar territory "
            f"{params.scar_territory or 'none'}")
    members = aha.TERRITORIES.get(params.scar_territory, ())
    segments = params.scar_segments
    if any(isinstance(s, bool) or not isinstance(s, int) or s not in members for s in segments):
        bad(f"scar_segments {list(segments)} must be segments of the scar territory "
            f"{params.scar_territory or 'none'} {list(members)}")
    if params.scar_territory is not None and not segments:
        bad("a scar needs at least one segment in scar_segments")
    if params.scar_territory is not None and not 0.0 < params.transmurality <= 1.0:
        bad(f"transmurality must be in (0, 1], got {params.transmurality}")
    if params.has_mvo and params.scar_pattern not in ("subendocardial", "transmural"):
        bad("has_mvo needs a subendocardial or transmural scar")
    if not 0.0 < params.mvo_depth <= 1.0:
        bad(f"mvo_depth must be in (0, 1], got {params.mvo_depth}")
    if not 0.0 <= params.scar_heterogeneity <= 1.0:
        bad(f"scar_heterogeneity must be in [0, 1], got {params.scar_heterogeneity}")
    if not 0.0 <= params.scar_taper <= 0.5:
        bad(f"scar_taper must be in [0, 0.5], got {params.scar_taper}")
    for name in ("inversion_time_ms", "recovery_ms", "pixel_spacing_mm", "snr", "intensity_peak"):
        value = getattr(params, name)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            bad(f"{name} must be a positive number, got {value!r}")
    bad_t1 = {k: v for k, v in params.t1_ms.items() if not (isinstance(v, (int, float)) and v > 0)}
    if bad_t1 or set(params.t1_ms) != set(_TISSUE_OF_LAYER.values()) | {"scar", "mvo"}:
        bad(f"t1_ms must give a positive T1 for each tissue, got {params.t1_ms}")
    rows, cols = params.matrix
    if min(rows, cols) < 32 or max(rows, cols) > 1024:
        bad(f"matrix must be 32-1024 pixels a side, got {params.matrix}")
    if params.phase_axis not in (0, 1) or not 0.1 <= params.phase_resolution <= 1.0:
        bad("phase_axis must be 0 or 1 and phase_resolution in [0.1, 1]")


# ----------------------------------------------------------------------------- generation
def generate_lge_phantom(
    seed: int, defect: str | None = None, scar: str | None = None, **overrides
) -> LgePhantom:
    """Render the LGE stack of the patient of ``generate_phantom(seed, defect)``.

    ``scar``: None (drawn from the seed), "none" or a territory. ``overrides``
    name :class:`LgeParams` fields first; any other name must be a
    :class:`~napari_perfroi.phantom.PhantomParams` field (the heart and body,
    shared with the perfusion phantom; ``n_slices`` alone also sets a base ->
    apex ``acquisition_order``).
    """
    lge_fields = {f.name for f in dataclasses.fields(LgeParams)}
    heart_overrides = {k: v for k, v in overrides.items() if k not in lge_fields}
    if "n_slices" in heart_overrides and "acquisition_order" not in heart_overrides:
        n_slices = heart_overrides["n_slices"]
        if isinstance(n_slices, bool) or not isinstance(n_slices, int) or n_slices < 1:
            raise InputError(f"n_slices must be a positive integer, got {n_slices!r}")
        heart_overrides["acquisition_order"] = tuple(range(n_slices))
    heart = perfusion.heart_of_seed(seed, defect, **heart_overrides)
    params = sample_lge_params(
        seed, heart, scar, **{k: v for k, v in overrides.items() if k in lge_fields}
    )
    return _render(seed, heart, params)


def _render(seed: int, heart: perfusion.Heart, q: LgeParams) -> LgePhantom:
    p = heart.params
    # The perfusion rendering machinery on the LGE grid and acquisition.
    grid = dataclasses.replace(
        p, pixel_spacing_mm=q.pixel_spacing_mm, matrix=tuple(q.matrix), phase_axis=q.phase_axis,
        phase_resolution=q.phase_resolution, kspace_taper=q.kspace_taper, g_factor=q.g_factor,
        coil_shading=q.coil_shading, texture=q.texture,
    )
    n_s = p.n_slices
    still = np.zeros((n_s, 1, 2))
    centres = perfusion._place_heart(grid, heart.anatomies, still, np.ones((n_s, 1)))
    signals = _tissue_signals(p, q)
    reference = max(abs(signals["a"]["blood"] - signals["b"]["blood"]),
                    abs(signals["a"]["scar"] - signals["b"]["scar"]))
    gain = q.intensity_peak / reference
    noise_sd = reference / q.snr

    arcs_rng = np.random.default_rng([q.lge_seed, 1])
    body_rng = np.random.default_rng([q.lge_seed, 2])
    noise_rng = np.random.default_rng([q.lge_seed, 3])
    shape = (n_s, *q.matrix)
    image = np.empty(shape, dtype=np.uint16)
    labels = np.zeros(shape, dtype=np.uint8)
    scar_mask = np.zeros(shape, dtype=np.uint8)
    segments = np.zeros(shape, dtype=np.uint8)
    scar_shapes = []
    offset = PSIR_OFFSET if q.lge_kind == "psir" else 0
    for k, anatomy in enumerate(heart.anatomies):
        shape_k = _ScarShape.draw(p, q, anatomy, arcs_rng)
        scar_shapes.append(shape_k)
        signal, labels[k], scar_mask[k] = _render_slice(
            grid, q, anatomy, centres[k], shape_k, signals, body_rng
        )
        values = _acquire(grid, q, signal, noise_sd, noise_rng) * gain + offset
        image[k] = np.clip(np.rint(values), 0, 65535).astype(np.uint16)
        anterior, inferior = perfusion._insertion_display_deg(p, anatomy)
        segments[k] = aha.sector_labels(
            labels[k] == MYOCARDIUM, tuple(centres[k]),
            aha.septal_bisector_deg(anterior, inferior), anatomy.level, anterior_deg=anterior,
        )

    cosines, positions = perfusion._dicom_geometry(grid, heart.orientation, centres)
    normal = slice_normal(cosines)
    attrs = {
        "pixel_spacing_mm": [q.pixel_spacing_mm, q.pixel_spacing_mm],
        "slice_thickness_mm": p.slice_thickness_mm,
        "slice_levels": list(heart.levels),
        "slice_positions_mm": [round(float(pos @ normal), 6) for pos in positions],
        "image_position_patient": positions.tolist(),
        "image_orientation_patient": cosines.tolist(),
        "inversion_time_ms": q.inversion_time_ms,
        "lge_kind": q.lge_kind,
        "rescale_intercept": -offset,
        "seed": int(seed),
        "rv_insertion_deg": [
            list(perfusion._insertion_display_deg(p, a)) for a in heart.anatomies
        ],
        "lv_centre_px": centres.tolist(),
    }
    truth = _truth(p, q, heart, scar_shapes, labels, scar_mask, segments)
    return LgePhantom(image=image, labels=labels, scar=scar_mask, aha=segments, attrs=attrs,
                      truth=truth, params=q, heart=p)


# ----------------------------------------------------------------------------- signal
_TISSUE_OF_LAYER = {
    name: tissue for name, (tissue, _) in perfusion._LAYERS.items()
}


def _tissue_signals(p: perfusion.PhantomParams, q: LgeParams) -> dict[str, dict[str, float]]:
    """Per tissue, the two parts of Mz(TI) = a - e b (e: inversion efficiency), PD included:
    a = PD (1 - exp(-TI/T1)), b = PD m0 exp(-TI/T1)."""
    a, b = {}, {}
    for tissue, t1 in q.t1_ms.items():
        pd = p.proton_density["myocardium" if tissue in ("scar", "mvo") else tissue]
        decay = math.exp(-q.inversion_time_ms / t1)
        a[tissue] = pd * (1.0 - decay)
        b[tissue] = pd * (1.0 - math.exp(-q.recovery_ms / t1)) * decay
    return {"a": a, "b": b}


# ----------------------------------------------------------------------------- scar shape
@dataclass
class _ScarShape:
    """Scar of one slice: arcs (start phi, length, deg) and, for patchy scar, blobs.

    ``septal`` and ``direction`` turn display angles into phi (AHA numbering frame).
    """

    q: LgeParams
    septal: float
    direction: int
    arcs: list[tuple[float, float]]
    blobs: list[tuple[float, float, float, float]]  # (u, v, sigma mm, amplitude)

    @classmethod
    def draw(cls, p, q: LgeParams, anatomy, rng) -> _ScarShape:
        anterior, inferior = perfusion._insertion_display_deg(p, anatomy)
        septal = aha.septal_bisector_deg(anterior, inferior)
        direction = aha.numbering_direction(anterior, septal)
        here = [s for s in q.scar_segments if s in aha.LEVEL_SEGMENTS[anatomy.level]]
        arcs = []
        for start, length in _merged_arcs([_segment_arc_deg(s) for s in here]):
            inset = q.scar_inset_deg * rng.uniform(0.5, 1.5, 2)
            arcs.append((start + inset[0], max(length - inset.sum(), 1.0)))
        shape = cls(q, septal, direction, arcs, [])
        if q.scar_pattern == "patchy":
            shape.blobs = shape._draw_blobs(p, anatomy, rng)
        return shape

    def phi(self, display_deg):
        return np.mod(self.direction * (np.asarray(display_deg) - self.septal), 360.0)

    def canonical_deg(self, p, phi):
        display = self.septal + self.direction * np.asarray(phi)
        turned = display - p.rotation_deg
        return np.mod(180.0 - turned if p.mirrored else turned, 360.0)

    def extent(self, phi) -> tuple[np.ndarray, np.ndarray]:
        """Scar and MVO radial extent over the wall thickness at angles ``phi``."""
        q = self.q
        scar = np.zeros(np.shape(phi), dtype=np.float32)
        mvo = np.zeros_like(scar)
        amplitude, phase = q.scar_modulation
        for start, length in self.arcs:
            s = np.mod(np.asarray(phi) - start, 360.0) / length
            inside = s <= 1.0
            s = np.where(inside, s, 0.0)
            taper = _plateau(s, q.scar_taper)
            wave = 1.0 + amplitude * np.cos(2 * np.pi * s + math.radians(phase))
            scar = np.maximum(scar, inside * np.clip(q.transmurality * taper * wave, 0.0, 1.0))
            if q.has_mvo:
                core = _plateau(np.clip((s - 0.2) / 0.6, 0.0, 1.0), 0.35)  # the middle 60 %
                mvo = np.maximum(mvo, inside * q.mvo_depth * core * scar)
        return scar, mvo

    def _draw_blobs(self, p, anatomy, rng) -> list[tuple[float, float, float, float]]:
        blobs = []
        for start, length in self.arcs:
            count = max(2, int(round(self.q.patchy_density * length / 25.0)))
            phi = start + length * rng.uniform(0.1, 0.9, count)
            depth = rng.uniform(0.15, 0.85, count)
            amplitude = rng.uniform(0.55, 0.95, count)
            width = rng.uniform(0.7, 1.3, count)
            angle = np.radians(self.canonical_deg(p, phi))
            z = np.exp(1j * angle)
            endo, epi, _ = perfusion._lv_boundaries(anatomy, perfusion._z_powers(z))
            radius = endo + depth * (epi - endo)
            sigma = np.maximum(width * self.q.transmurality * (epi - endo) / 2.355, 0.8)
            for i in range(count):
                blobs.append((float(radius[i] * z[i].real), float(radius[i] * z[i].imag),
                              float(sigma[i]), float(amplitude[i])))
        return blobs

    def fractions(self, u, v, rho, endo, epi, myocardium, theta, edge_mm):
        """Scar and MVO fractions of each pixel (at most its myocardium fraction)."""
        if self.q.scar_pattern == "patchy":
            total = np.zeros_like(u)
            for bu, bv, sigma, amplitude in self.blobs:
                total += amplitude * np.exp(-((u - bu) ** 2 + (v - bv) ** 2) / (2 * sigma**2))
            return myocardium * np.clip(total, 0.0, 1.0), np.zeros_like(u)
        scar, mvo = self.extent(self.phi(theta))
        wall = epi - endo
        beyond_endo = np.clip(0.5 + (rho - endo) / edge_mm, 0.0, 1.0)

        def inner_band(extent):  # from the endocardium to extent x wall
            return np.clip(
                beyond_endo - np.clip(0.5 + (rho - endo - extent * wall) / edge_mm, 0.0, 1.0),
                0.0, None,
            )

        scar_fraction = np.minimum(inner_band(scar), myocardium)
        return scar_fraction, np.minimum(inner_band(mvo), scar_fraction)


def _plateau(s, taper):
    """1 in the middle of [0, 1], falling to 0 at both ends over ``taper`` (raised cosine)."""
    if taper <= 0:
        return np.ones_like(s)
    rise = np.clip(np.minimum(s, 1.0 - s) / taper, 0.0, 1.0)
    return np.sin(0.5 * np.pi * rise) ** 2


def _merged_arcs(arcs: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Adjacent (start, length) arcs joined into runs (a territory's arcs never wrap past
    360 degrees in phi)."""
    runs: list[list[float]] = []
    for start, length in sorted(arcs):
        if runs and abs(runs[-1][0] + runs[-1][1] - start) < 1e-6:
            runs[-1][1] += length
        else:
            runs.append([start, length])
    return [(float(start), float(length)) for start, length in runs]


# ----------------------------------------------------------------------------- rendering
def _render_slice(grid, q: LgeParams, anatomy, centre, shape: _ScarShape, signals, rng):
    """Noise-free signed signal (Y, X) with coil shading, labels and the scar mask."""
    ps = grid.pixel_spacing_mm
    rows, cols = np.mgrid[0 : grid.matrix[0], 0 : grid.matrix[1]].astype(np.float32)
    u0, v0 = perfusion._to_canonical(grid, (cols - centre[1]) * ps, -(rows - centre[0]) * ps)

    body, cavity = perfusion._body_fractions(grid, anatomy, u0, v0, ps, rng)
    liver_centre = (1.0 - grid.liver_rise * anatomy.depth_fraction) * np.asarray(
        grid.liver_centre_mm
    )
    liver = cavity * perfusion._ellipse_fraction(
        u0, v0, liver_centre - np.asarray(anatomy.drift_mm), grid.liver_semi_axes_mm,
        grid.body_tilt_deg, ps,
    )
    window = perfusion._heart_window(centre, perfusion._heart_extent_mm(anatomy) / ps + 2.0,
                                     grid.matrix)
    f = perfusion._heart_fractions(grid, anatomy, u0[window], v0[window])
    scar, mvo = shape.fractions(
        u0[window], v0[window], f.rho, f.endocardium, f.epicardium, f.myocardium, f.theta, ps
    )
    papillary = sum((inside for inside, _ in f.papillary), np.zeros_like(f.cavity))
    # Scar enhances unevenly: part of it, in a smooth random pattern, stays like myocardium.
    pattern = ndimage.gaussian_filter(rng.standard_normal(f.rho.shape), sigma=4.0 / ps)
    pattern = (pattern - pattern.min()) / max(float(np.ptp(pattern)), 1e-9)
    unenhanced = (scar - mvo) * q.scar_heterogeneity * pattern
    heart = {
        "blood": f.cavity - papillary + f.rv_cavity,
        "myocardium": f.myocardium - scar + unenhanced + papillary + f.rv_wall,
        "scar": scar - mvo - unenhanced,
        "mvo": mvo,
        "fat": f.fat,
    }

    def compose(values):
        signal = sum(fraction * values[_TISSUE_OF_LAYER[name]] for name, fraction in body.items())
        signal = signal + liver * (values["liver"] - signal)
        inner = signal[window] * f.outside
        signal[window] = inner + sum(fraction * values[t] for t, fraction in heart.items())
        return signal

    efficiency = 1.0 - q.inversion_inhomogeneity * _region(q.inversion_region, u0, v0)
    signal = compose(signals["a"]) - efficiency * compose(signals["b"])
    signal *= perfusion._shading(grid, anatomy, u0, v0, rng)

    labels = np.zeros(grid.matrix, dtype=np.uint8)
    labels[window] = f.labels
    scar_mask = np.zeros(grid.matrix, dtype=np.uint8)
    scar_mask[window] = np.where(mvo > 0.5, 2, np.where(scar > 0.5, 1, 0))
    return signal.astype(np.float32), labels, scar_mask


def _region(region, u, v):
    """Smooth bump (1 at the centre) of the mis-nulled region, canonical mm."""
    cu, cv, width = region
    return np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2.0 * width**2))


def _acquire(grid, q: LgeParams, signal, noise_sd, rng):
    """Magnitude (Rician) or PSIR real part (Gaussian) after ghosting, noise and k-space
    truncation along the phase axis."""
    n_rows, n_cols = grid.matrix
    axis = grid.phase_axis
    data = signal.astype(np.complex64)
    if q.ghost_amplitude > 0:
        shift = int(round(q.ghost_shift * grid.matrix[axis]))
        ghosts = np.roll(signal, shift, axis=axis) + np.roll(signal, -shift, axis=axis)
        data = data + (0.5 * q.ghost_amplitude * np.exp(0.7j)) * ghosts
    window = perfusion._kspace_window(grid.matrix[axis], q.phase_resolution, q.kspace_taper)
    sd = perfusion.noise_sd_map((n_rows, n_cols), q.g_factor, window, noise_sd)
    noise = rng.standard_normal((2, *signal.shape), dtype=np.float32)
    data = data + sd * (noise[0] + 1j * noise[1])
    spectrum = sp_fft.fft(data, axis=axis)
    spectrum *= window.astype(np.float32).reshape([-1 if a == axis else 1 for a in range(2)])
    image = sp_fft.ifft(spectrum, axis=axis)
    return image.real if q.lge_kind == "psir" else np.abs(image)


# ----------------------------------------------------------------------------- truth
def _truth(p, q: LgeParams, heart, shapes, labels, scar_mask, segments) -> dict[str, Any]:
    imaged = sorted({s for level in heart.levels for s in aha.LEVEL_SEGMENTS[level]})
    percent: list[float | None] = [None] * 16
    for s in imaged:
        in_segment = segments == s
        n_myocardium = int(in_segment.sum())
        if n_myocardium:
            percent[s - 1] = 100.0 * int((scar_mask[in_segment] > 0).sum()) / n_myocardium
    transmurality = _segment_transmurality(p, heart, shapes)
    has_scar = [bool((scar_mask[k] > 0).any()) for k in range(len(shapes))]
    mbf = [m if i + 1 in imaged else None for i, m in enumerate(p.segment_mbf)]
    return perfusion._jsonable({
        "scar_territory": q.scar_territory,
        "scar_pattern": q.scar_pattern,
        "transmurality": q.transmurality if q.scar_territory else 0.0,
        "scar_segments": [s for s in imaged if percent[s - 1]],
        "segment_scar_percent": percent,
        "segment_transmurality": [transmurality.get(s) for s in range(1, 17)],
        "slice_has_scar": has_scar,
        "has_mvo": bool((scar_mask == 2).any()),
        "perfusion_defect": p.defect,
        "perfusion_segment_mbf": mbf,
        "t1_ms": q.t1_ms,
        "myocardial_null_ms": _null_time_ms(q.t1_ms["myocardium"], q.recovery_ms),
        "scar_masks": "pixels more than half scar; 2 where more than half MVO (part of the scar)",
        "segment_transmurality_rule": "mean over rays from the LV centre every "
        f"{_RAY_STEP_DEG} degrees through the segment of the scar's radial extent / wall "
        "thickness (analytic shape)",
    })


def _segment_transmurality(p, heart, shapes) -> dict[int, float]:
    """Per imaged segment, the mean over its rays of the scar's radial extent / wall."""
    phi = np.arange(0.0, 360.0, _RAY_STEP_DEG) + _RAY_STEP_DEG / 2
    depth = (np.arange(_RAY_SAMPLES) + 0.5) / _RAY_SAMPLES
    totals: dict[int, list[float]] = {}
    for anatomy, shape in zip(heart.anatomies, shapes):
        display = shape.septal + shape.direction * phi
        segment = aha.segment_of_angle(display, shape.septal, anatomy.level, shape.direction)
        if shape.q.scar_pattern == "patchy":
            z = np.exp(1j * np.radians(shape.canonical_deg(p, phi)))
            endo, epi, _ = perfusion._lv_boundaries(anatomy, perfusion._z_powers(z))
            radius = endo[:, None] + depth[None, :] * (epi - endo)[:, None]
            u, v = radius * z.real[:, None], radius * z.imag[:, None]
            total = np.zeros_like(u)
            for bu, bv, sigma, amplitude in shape.blobs:
                total += amplitude * np.exp(-((u - bu) ** 2 + (v - bv) ** 2) / (2 * sigma**2))
            extent = (total > 0.5).mean(axis=1)
        else:
            extent = shape.extent(phi)[0]
        for s in np.unique(segment):
            entry = totals.setdefault(int(s), [0.0, 0])
            entry[0] += float(extent[segment == s].sum())
            entry[1] += int((segment == s).sum())
    return {s: total / count for s, (total, count) in totals.items()}


# ----------------------------------------------------------------------------- DICOM
def write_lge_dicom(phantom: LgePhantom, folder: str | os.PathLike) -> Path:
    """Write ``phantom`` as one classic MR Image Storage file per slice into ``folder``
    (absent or empty) and return it.

    PatientName, PatientID, StudyInstanceUID and FrameOfReferenceUID are those that
    :func:`~napari_perfroi.dicom_export.export_dicom` gives the perfusion phantom of
    the same seed and parameters (as :func:`~napari_perfroi.demo.write_sample_dicom`
    exports it), so both series are one patient's study. PSIR values are stored
    unsigned with a negative RescaleIntercept.
    """
    from pydicom.uid import generate_uid

    from .. import dicom_export

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise InputError(f"{folder}: folder is not empty")
    attrs = phantom.attrs
    seed = int(attrs["seed"])
    same_patient = perfusion.generate_phantom(seed, **dataclasses.asdict(phantom.heart))
    shared = dicom_export.study_uids(same_patient.image, seed=seed)
    entropy = ["napari-perfroi", "lge", str(seed),
               hashlib.sha256(phantom.image.tobytes()).hexdigest()]
    psir = attrs["lge_kind"] == "psir"
    series = {
        "study_uid": shared["study"],
        "series_uid": generate_uid(entropy_srcs=[*entropy, "series"]),
        "frame_of_reference_uid": shared["frame_of_reference"],
        "description": "LGE PSIR SAX" if psir else "LGE MAG SAX",
        "number": 20,
        "pixel_spacing_mm": attrs["pixel_spacing_mm"],
        "saturation_time_s": attrs["inversion_time_ms"] / 1000.0,  # written as InversionTime, ms
    }
    orientation = np.asarray(attrs["image_orientation_patient"], dtype=float)
    folder.mkdir(parents=True, exist_ok=True)
    for k, pixels in enumerate(phantom.image):
        ds = dicom_export._frame_dataset(
            pixels, attrs, series,
            sop_uid=generate_uid(entropy_srcs=[*entropy, f"instance-{k}"]),
            instance=k + 1,
            time_s=_LGE_START_S + _BREATH_HOLD_S * k,  # one breath hold per slice
            orientation=orientation,
            position=np.asarray(attrs["image_position_patient"][k], dtype=float),
            slice_location=float(attrs["slice_positions_mm"][k]),
        )
        ds.ImageType = ["DERIVED", "PRIMARY", "PSIR", "ND"] if psir else [
            "ORIGINAL", "PRIMARY", "M", "ND"]
        ds.SequenceVariant = ["SP", "MP"]
        ds.TriggerTime = f"{0.7 * _rest_rr_ms(phantom.heart):.3f}"  # mid-diastole, ms
        ds.RescaleIntercept = str(int(attrs["rescale_intercept"]))
        ds.save_as(folder / f"lge_{k + 1:03d}.dcm", enforce_file_format=True)
    return folder


def write_lge_phantom(study, scar: str | None = None, *, overwrite: bool = False,
                      **overrides):
    """Write the LGE phantom of a perfusion phantom store's patient as its ``lge`` group.

    The seed, defect and heart come from the store's phantom truth, so both
    describe one heart; ``scar`` and ``overrides`` (:class:`LgeParams` fields) as in
    :func:`generate_lge_phantom`. PSIR is stored signed (float32). The truth masks
    are written as ``truth/labels``, ``truth/scar`` and ``truth/aha`` and the scalar
    truth as the ``truth`` attribute. Returns the :class:`~.store.LgeStudy`.
    """
    from ..study import Study
    from .store import LgeStudy

    study = study if isinstance(study, Study) else Study.open(study, writable=True)
    truth = study.attrs.get("truth")
    if not truth or "seed" not in truth or "parameters" not in truth:
        raise InputError(f"{study.path}: not a phantom study (no phantom truth to match)")
    lge_fields = {f.name for f in dataclasses.fields(LgeParams)}
    heart = {k: v for k, v in truth["parameters"].items()
             if k not in lge_fields and k != "defect"}
    phantom = generate_lge_phantom(int(truth["seed"]), truth["defect"], scar,
                                   **heart, **overrides)
    attrs = phantom.attrs
    image = phantom.image
    if attrs["lge_kind"] == "psir":
        image = (image.astype(np.float32) + attrs["rescale_intercept"]).astype(np.float32)
    n_slices = image.shape[0]
    lge = LgeStudy.create(study, image, {
        **{key: attrs[key] for key in ("pixel_spacing_mm", "slice_thickness_mm",
                                       "slice_positions_mm", "image_orientation_patient",
                                       "image_position_patient", "inversion_time_ms",
                                       "lge_kind", "slice_levels")},
        "perfusion_slice": list(range(n_slices)),
        "source": {"importer": "phantom",
                   "description": f"napari-perfroi LGE phantom, seed {attrs['seed']}"},
        "truth": phantom.truth,
    }, overwrite=overwrite)
    for name, array in (("labels", phantom.labels), ("scar", phantom.scar), ("aha", phantom.aha)):
        lge.write(f"truth/{name}", array)
    return lge

