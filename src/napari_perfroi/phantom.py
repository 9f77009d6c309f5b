"""Seeded synthetic stress perfusion study with known flow and full ground truth.

Each seed draws a :class:`PhantomParams` (geometry, acquisition, contrast
kinetics, signal, noise, motion) and renders short-axis slices ordered
base -> apex, one frame per heartbeat. Anatomy is defined analytically in a
heart-fixed "canonical" frame (mm, origin at the slice's LV centre, u towards
the lateral wall, v towards the patient's anterior) and evaluated at every
frame's sub-pixel shifted coordinates with partial volume at edges, so moving
tissue is rendered, never interpolated.

Signal per tissue is a saturation-recovery model of the gadolinium
concentration (``readout`` "ideal"), or a scanner's FLASH readout after the
saturation delay with the T2* loss of blood, which saturates the LV blood
signal at the bolus peak ("scanner", see ``_flash_readout``); the LV blood
concentration is a gamma-variate first pass plus recirculation, the
myocardium follows a Fermi residue or a two-compartment exchange model
(2CXM) driven by a known blood flow per AHA segment. Complex Gaussian noise
is added before k-space truncation, and the magnitude is stored (Rician noise).

Acquisitions (``acquisition``): "dual-sequence" (default) adds a separate
low-resolution AIF series with a short saturation time; "single-bolus" has
none; "dual-bolus" has none but injects a dilute pre-bolus (1 /
``prebolus_dose_ratio`` of the dose, ``prebolus_lead_s`` before the main
bolus) in the same series, which gains the frames to hold it. ``state``
"stress" (default) or "rest" images the same patient (heart, body, geometry)
with rest flows and a slower heart.

Conventions of the generated study and its truth:

- ``frame_times_s`` are seconds from the study's first frame (the first
  readout of the first beat), so the slices keep their offsets within a beat.
- The first ``n_pd_frames`` frames (0 in about half the seeds, else 1-3) are
  proton-density frames: bright, little tissue contrast, before the bolus.
- The reference frame of a slice is its frame of peak mean myocardial
  enhancement; there ``motion`` is (0, 0) and ``mbf``/``aha`` are defined.
- ``motion[s, t]`` = (row, col) px: frame t shows the reference frame's
  content shifted by it (a point at p in the reference frame is at p + motion).
- Labels: papillary muscles are LV blood pool (1); the RV free wall and
  epicardial fat are background.
- MBF is blood flow (mL/min/g) in the imaged state; the AIF truth is plasma
  concentration on the frame times of slice 0 (the basal slice), both boluses
  of a dual-bolus study included; ``main_bolus_foot_s`` is the main bolus's
  LV foot on the ``frame_times_s`` clock.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage
from scipy.signal import fftconvolve

from . import __version__, aha
from .dicom import APEX_DIRECTION_LPS, slice_normal
from .errors import InputError
from .perfusion import TISSUE_DENSITY_G_ML
from .roi import ACCEPTED, circle_of_frame
from .study import MYOCARDIUM, Study, slice_levels_for

DEFECTS = ("lad", "rca", "lcx")
SIGNAL_MODELS = ("saturation_recovery", "linear")
TISSUE_MODELS = ("fermi", "2cxm")
ACQUISITIONS = ("dual-sequence", "single-bolus", "dual-bolus")
STATES = ("stress", "rest")
READOUTS = ("ideal", "scanner")
REST_RR_MAX_S = 1.3
_CURVE_DT_S = 0.05


@dataclass(frozen=True)
class PhantomParams:
    """Every randomised quantity of one phantom: lengths mm, times s, angles deg.

    Canonical angles are about the LV centre in the heart frame (0 lateral,
    90 anterior, 180 septal); "display" angles follow the product convention.
    Fine-grained randomness (per-beat R-R, per-breath depth, noise, small
    shape details) comes from ``detail_seed`` so that overriding a field
    leaves every other draw unchanged.
    """

    defect: str  # "lad" | "rca" | "lcx" | "none"
    segment_mbf: tuple[float, ...]  # true stress blood flow per AHA segment 1-16, mL/min/g
    # acquisition
    n_slices: int
    n_dynamics: int  # saturation-recovery frames
    n_pd_frames: int  # proton-density frames acquired before them
    matrix: tuple[int, int]  # (rows, cols)
    pixel_spacing_mm: float
    slice_thickness_mm: float
    slice_gap_mm: float
    rr_interval_s: float  # mean R-R at stress (imaged_rr_interval_s: in the imaged state)
    rr_jitter: float  # SD of beat-to-beat R-R variation, fraction of R-R
    rr_trend: float  # relative R-R change from first to last beat
    missed_trigger_rate: float  # chance per frame that one extra beat passes
    slice_readout_s: float  # time between successive slice readouts in a beat
    acquisition_order: tuple[int, ...]  # readout slot of each slice (base -> apex)
    phase_axis: int  # image axis of phase encoding (0 rows, 1 cols)
    phase_resolution: float  # fraction of k-space acquired along phase_axis
    kspace_taper: float  # 0 hard truncation (ringing) .. 1 smooth window
    # patient geometry
    long_axis_lps: tuple[float, float, float]  # unit vector base -> apex
    heart_position_lps: tuple[float, float, float]  # basal LV centre, mm
    rotation_deg: float  # display angle of the patient-anterior direction minus 90
    mirrored: bool  # image is the mirror of the standard (apex-viewed) display
    heart_offset: tuple[float, float]  # LV centre offset from image centre, fraction of 15 % FOV
    long_axis_drift_mm: tuple[float, float]  # LV centre shift per slice step (canonical u, v)
    # heart
    lv_radius_mm: float  # basal epicardial radius
    lv_taper: float  # relative radius loss from base to apex
    wall_thickness_mm: float  # basal mean wall thickness
    wall_variation: tuple[float, float, float, float]  # 1st, 2nd harmonic: amplitude, phase
    lv_ellipticity: tuple[float, float]  # epicardial 2nd harmonic: amplitude, phase
    trabeculation_mm: float
    papillary_radius_mm: float
    papillary_angles_deg: tuple[float, float]  # canonical: anterolateral, posteromedial
    rv_depth_mm: float  # basal RV cavity depth from the septum along the bisector
    rv_half_angle_deg: float  # half the angle between the insertion points, mid slice
    rv_centre_deg: float  # canonical direction of the septal bisector
    rv_width: float  # RV ellipse half-width over the half-chord between the insertions
    rv_tilt_deg: float  # turn of the RV ellipse axes off the bisector (asymmetry)
    rv_wall_mm: float
    epicardial_fat_mm: float
    groove_fat_mm: float  # extra fat at the interventricular grooves
    # body (canonical mm relative to the basal LV centre)
    body_semi_axes_mm: tuple[float, float]
    body_centre_mm: tuple[float, float]
    body_tilt_deg: float
    subcutaneous_fat_mm: float
    chest_wall_mm: float
    body_wall_shift: tuple[float, float]  # anterior shift of the fat and muscle inner edges,
    # fraction of their thickness (uneven layers; posterior muscle thicker)
    lung_vessels: int  # enhancing pulmonary vessels in cross-section per slice
    mediastinum_centre_mm: tuple[float, float]
    mediastinum_semi_axes_mm: tuple[float, float]
    liver_centre_mm: tuple[float, float]  # on the basal slice
    liver_semi_axes_mm: tuple[float, float]
    liver_rise: float  # fraction of the basal liver distance gained at the apex
    aorta_centre_mm: tuple[float, float]
    aorta_radius_mm: float
    spine_centre_mm: tuple[float, float]
    spine_semi_axes_mm: tuple[float, float]
    # signal
    signal_model: str  # "saturation_recovery" | "linear"
    t1_s: dict[str, float]  # pre-contrast T1 per tissue
    proton_density: dict[str, float]
    saturation_time_s: float
    relaxivity_per_mm_s: float  # r1, 1/(mmol/L * s)
    pd_frame_gain: float  # PD-frame myocardium over pre-contrast SR myocardium
    intensity_peak: float  # stored value of the LV blood pool at its peak (noise-free)
    snr: float  # pre-contrast myocardium signal over noise SD
    g_factor: float  # extra noise at the image centre (parallel imaging)
    texture: float  # SD of a smooth multiplicative intensity texture
    coil_shading: float  # 0 uniform .. 1 raw surface-coil sensitivity
    coil_angles_deg: tuple[float, ...]  # coil positions around the body (canonical)
    coil_width_mm: float
    # contrast kinetics
    hematocrit: float
    baseline_s: float  # first SR frame to the LV bolus foot
    rv_lead_s: float  # RV bolus foot before the LV foot
    lv_peak_mmol: float  # peak LV blood concentration
    bolus_alpha: float  # gamma-variate shape
    lv_time_to_peak_s: float  # LV foot to first-pass peak
    rv_sharpness: float  # RV time to peak over LV time to peak
    recirculation_fraction: float
    recirculation_delay_s: float
    recirculation_time_to_peak_s: float
    equilibrium_fraction: float  # late blood level over first-pass peak
    aorta_delay_s: float
    tissue_delay_s: float  # LV blood to myocardium arrival
    ps_ml_min_g: float  # capillary permeability-surface product
    plasma_volume: float  # vp, fraction of tissue
    interstitial_volume: float  # ve, fraction of tissue
    liver_delay_s: float
    liver_fraction: float
    liver_dispersion_s: float
    muscle_uptake: float
    lung_blood_fraction: float
    # motion
    breathing_amplitude_mm: float
    breathing_period_s: float
    breathing_irregularity: float
    breathing_shape: float  # power of the breathing waveform (large = long end-expiration)
    breathing_direction_deg: float  # in-plane turn from the projected patient S-I axis
    lateral_motion_fraction: float  # perpendicular motion (hysteresis loop)
    breath_hold_s: float  # initial breath hold (0 = breathing from the start)
    drift_mm: tuple[float, float]  # slow drift over the study, display (x, y)
    jitter_mm: float
    through_plane_scale: float  # relative in-plane size change at full inspiration
    liver_motion_factor: float
    detail_seed: int
    # myocardial tissue model ("fermi": Fermi residue, "2cxm": two-compartment exchange
    # with ps_ml_min_g, plasma_volume, interstitial_volume)
    tissue_model: str
    fermi_k_per_s: float  # Fermi residue roll-off rate
    fermi_tau0_s: float  # Fermi residue plateau before the roll-off
    # separate AIF series (dual-sequence): short saturation time, coarse pixels
    aif_saturation_time_s: float
    aif_block: int  # AIF pixel = aif_block x aif_block image pixels
    aif_snr: float  # LV blood peak signal over noise SD in the AIF series (per image pixel)
    # kind of acquisition (ACQUISITIONS): "dual-sequence" adds the separate AIF series,
    # "single-bolus" has none, "dual-bolus" injects a dilute pre-bolus in the same series
    acquisition: str
    prebolus_dose_ratio: float  # main-bolus dose over pre-bolus dose (dual-bolus)
    prebolus_lead_s: float  # pre-bolus foot to main-bolus foot (dual-bolus)
    # physiological state (STATES): the same patient at "stress" or at "rest"
    state: str
    rest_segment_mbf: tuple[float, ...]  # true rest blood flow per AHA segment 1-16, mL/min/g
    rest_rr_factor: float  # rest R-R over stress R-R (rest R-R at most REST_RR_MAX_S)
    # blood-signal readout (READOUTS, see _signal_of): "ideal" saturation recovery or
    # "scanner" (FLASH readout after the saturation delay, T2* loss of blood)
    readout: str
    readout_pulses: int  # RF pulses from the end of the saturation delay to the k-space centre
    readout_flip_deg: float
    readout_tr_s: float
    echo_time_s: float
    r2star_per_mm_s: float  # T2* relaxivity of gadolinium in blood, 1/(mmol/L * s)

    @property
    def aif_series(self) -> bool:
        """Whether a separate AIF series is acquired."""
        return self.acquisition == "dual-sequence"

    @property
    def imaged_segment_mbf(self) -> tuple[float, ...]:
        """True blood flow per AHA segment in the imaged state, mL/min/g."""
        return self.rest_segment_mbf if self.state == "rest" else self.segment_mbf

    @property
    def imaged_rr_interval_s(self) -> float:
        """Mean R-R interval in the imaged state: the heart is slower at rest."""
        if self.state != "rest":
            return self.rr_interval_s
        return max(self.rr_interval_s, min(self.rr_interval_s * self.rest_rr_factor, REST_RR_MAX_S))


@dataclass
class Phantom:
    """A generated study: ``image`` (S, T, Y, X) uint16, store attributes and truth."""

    image: np.ndarray
    attrs: dict[str, Any]  # keyword arguments of Study.create (aif_series included)
    extra: dict[str, Any]  # Study.create extra_attrs: DICOM geometry and scalar truth
    truth: dict[str, np.ndarray]  # arrays written as truth/<name>
    params: PhantomParams
    aif_image: np.ndarray | None = None  # the separate AIF series (T, Ya, Xa) uint16


# ----------------------------------------------------------------------------- sampling
def sample_params(
    rng: np.random.Generator, defect: str | None = None, **overrides
) -> PhantomParams:
    """Draw every phantom quantity from ``rng``; ``overrides`` replace fields by name.

    The draws happen in a fixed order whatever is overridden, so the same
    generator state gives the same study apart from the overridden fields.
    ``defect`` None picks a territory with the generator; "none" means no defect.
    ``aif_series=True/False`` is shorthand for a dual-sequence / single-bolus acquisition.
    """
    overrides = _acquisition_of_aif_series(overrides)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(PhantomParams)}
    if unknown:
        raise InputError(f"unknown phantom parameter {', '.join(sorted(unknown))}")
    u = rng.uniform

    drawn_defect = DEFECTS[int(rng.integers(len(DEFECTS)))]
    defect = drawn_defect if defect is None else _check_defect(defect)
    global_mbf = u(2.2, 3.6)
    normal_mbf = np.clip(global_mbf + rng.normal(0.0, 0.2, 16), 2.0, 4.0)
    ischaemic_mbf = u(0.6, 1.5, 16)
    territory = aha.TERRITORIES.get(defect, ())
    segment_mbf = [
        float(ischaemic_mbf[i] if i + 1 in territory else normal_mbf[i]) for i in range(16)
    ]

    pixel_spacing = u(1.8, 2.5)
    # Readout field of view 320-440 mm, phase field of view 65-90 % of it.
    readout_fov = u(320.0, 440.0)
    cols = int(np.clip(8 * round(readout_fov / pixel_spacing / 8), 160, 224))
    rows = int(np.clip(8 * round(cols * u(0.65, 0.9) / 8), 144, 192))
    matrix = (cols, rows) if rng.random() < 0.2 else (rows, cols)
    shorter_axis = int(matrix[1] < matrix[0])
    phase_axis = shorter_axis if rng.random() < 0.8 else 1 - shorter_axis
    order = (0, 1, 2) if rng.random() < 0.5 else tuple(int(i) for i in rng.permutation(3))
    n_pd = 0 if rng.random() < 0.5 else int(rng.integers(1, 4))

    long_axis = _perturbed_unit_vector(rng, APEX_DIRECTION_LPS, max_angle_deg=25.0)
    standard = rng.random() < 0.6
    rotation = rng.normal(0.0, 30.0) if standard else u(0.0, 360.0)

    lv_radius = u(20.0, 36.0)
    wall = u(5.5, 12.0)
    liver_axes = (u(60.0, 110.0), u(40.0, 75.0))
    liver_centre = _polar(u(200.0, 260.0), lv_radius + u(15.0, 45.0) + liver_axes[1])
    aorta_radius = u(9.0, 14.0)
    aorta_distance = lv_radius + u(10.0, 30.0) + aorta_radius
    aorta_angle = u(245.0, 295.0)
    spine_axes = (u(18.0, 25.0), u(14.0, 20.0))
    spine_distance = aorta_distance + u(15.0, 30.0) + spine_axes[1]
    spine_centre = _polar(aorta_angle - u(5.0, 25.0), spine_distance)
    # Body: the thoracic cavity reaches from the anterior chest wall past the
    # spine and clears the lateral LV wall; thick walls make a bigger body.
    anterior_chest = u(40.0, 80.0)  # LV centre to the inner chest wall, anteriorly
    lateral_room = u(10.0, 60.0)  # lateral LV epicardium to the inner chest wall
    subcut_fat, chest_wall = u(4.0, 35.0), u(8.0, 22.0)
    body_wall = subcut_fat + chest_wall
    body_u = u(-70.0, -15.0)
    posterior_reach = spine_distance + spine_axes[1] + 25.0
    body_axes = (
        max(u(140.0, 200.0) + 0.5 * body_wall, lv_radius + lateral_room + body_wall - body_u),
        max(u(95.0, 135.0) + 0.5 * body_wall, (posterior_reach + anterior_chest) / 2 + body_wall),
    )
    body_centre = (body_u, anterior_chest + body_wall - body_axes[1])
    n_coils = int(rng.integers(4, 9))
    coil_angles = tuple(
        float(u(50.0, 130.0) if i % 2 == 0 else u(230.0, 310.0)) for i in range(n_coils)
    )

    drawn = PhantomParams(
        defect=defect,
        segment_mbf=tuple(segment_mbf),
        n_slices=3,
        n_dynamics=int(rng.integers(50, 71)),
        n_pd_frames=n_pd,
        matrix=matrix,
        # Rounded as a scanner writes them, so DICOM round trips are exact.
        pixel_spacing_mm=round(float(pixel_spacing), 4),
        slice_thickness_mm=round(u(8.0, 10.0), 2),
        slice_gap_mm=round(u(2.0, 12.0), 2),
        rr_interval_s=u(0.5, 1.1),
        rr_jitter=u(0.01, 0.08),
        rr_trend=u(-0.15, 0.15),
        missed_trigger_rate=0.0 if rng.random() < 0.6 else u(0.0, 0.05),
        slice_readout_s=u(0.1, 0.2),
        acquisition_order=order,
        phase_axis=phase_axis,
        phase_resolution=u(0.55, 1.0),
        kspace_taper=u(0.0, 1.0),
        long_axis_lps=tuple(float(v) for v in long_axis),
        heart_position_lps=(u(10.0, 60.0), u(-60.0, 0.0), u(-100.0, 50.0)),
        rotation_deg=float(np.mod(rotation, 360.0)),
        mirrored=bool(rng.random() < 0.15),
        heart_offset=(u(-1.0, 1.0), u(-1.0, 1.0)),
        long_axis_drift_mm=(u(-5.0, 5.0), u(-5.0, 5.0)),
        lv_radius_mm=lv_radius,
        lv_taper=u(0.2, 0.45),
        wall_thickness_mm=wall,
        wall_variation=(u(0.0, 0.25), u(0.0, 360.0), u(0.0, 0.15), u(0.0, 360.0)),
        lv_ellipticity=(u(0.0, 0.1), u(0.0, 360.0)),
        trabeculation_mm=u(0.0, 1.2),
        papillary_radius_mm=u(2.5, 6.0),
        papillary_angles_deg=(u(20.0, 70.0), u(240.0, 300.0)),
        rv_depth_mm=lv_radius * u(0.6, 1.3),
        rv_half_angle_deg=u(45.0, 65.0),
        rv_centre_deg=u(160.0, 195.0),
        rv_width=u(1.1, 1.7),
        rv_tilt_deg=u(-15.0, 15.0),
        rv_wall_mm=u(1.5, 4.0),
        epicardial_fat_mm=u(0.0, 4.0),
        groove_fat_mm=u(0.0, 10.0),
        body_semi_axes_mm=body_axes,
        body_centre_mm=body_centre,
        body_tilt_deg=u(-25.0, 25.0),
        subcutaneous_fat_mm=subcut_fat,
        chest_wall_mm=chest_wall,
        body_wall_shift=(u(-0.6, 0.6), u(0.0, 0.7)),
        lung_vessels=int(rng.integers(0, 31)),
        mediastinum_centre_mm=(u(-45.0, -15.0), u(-5.0, 20.0)),
        mediastinum_semi_axes_mm=(u(45.0, 70.0), u(40.0, 60.0)),
        liver_centre_mm=liver_centre,
        liver_semi_axes_mm=liver_axes,
        liver_rise=u(0.1, 0.4),
        aorta_centre_mm=_polar(aorta_angle, aorta_distance),
        aorta_radius_mm=aorta_radius,
        spine_centre_mm=spine_centre,
        spine_semi_axes_mm=spine_axes,
        signal_model="saturation_recovery",
        t1_s={
            "blood": u(1.55, 1.75), "myocardium": u(0.98, 1.12), "fat": u(0.25, 0.4),
            "muscle": u(0.85, 1.3), "lung": u(1.0, 1.4), "liver": u(0.5, 0.85),
            "marrow": u(0.4, 0.9), "mediastinum": u(0.35, 0.8),
        },
        proton_density={
            "blood": u(0.9, 1.0), "myocardium": u(0.7, 0.85), "fat": u(0.75, 1.0),
            "muscle": u(0.6, 0.8), "lung": u(0.04, 0.2), "liver": u(0.6, 0.8),
            "marrow": u(0.55, 0.9), "mediastinum": u(0.5, 0.9),
        },
        saturation_time_s=u(0.05, 0.13),
        relaxivity_per_mm_s=u(3.5, 5.5),
        pd_frame_gain=u(3.0, 10.0),
        intensity_peak=_log_uniform(rng, 300.0, 3000.0),
        snr=_log_uniform(rng, 3.0, 15.0),
        g_factor=u(0.0, 1.0),
        texture=u(0.0, 0.06),
        coil_shading=u(0.0, 1.0),
        coil_angles_deg=coil_angles,
        coil_width_mm=u(60.0, 160.0),
        hematocrit=u(0.36, 0.5),
        baseline_s=u(3.0, 14.0),
        rv_lead_s=u(2.0, 5.0),
        lv_peak_mmol=u(3.0, 8.0),
        bolus_alpha=u(1.5, 4.0),
        lv_time_to_peak_s=u(3.0, 8.0),
        rv_sharpness=u(0.5, 0.8),
        recirculation_fraction=u(0.1, 0.35),
        recirculation_delay_s=u(9.0, 16.0),
        recirculation_time_to_peak_s=u(4.0, 9.0),
        equilibrium_fraction=u(0.06, 0.18),
        aorta_delay_s=u(0.5, 1.5),
        tissue_delay_s=u(0.0, 2.0),
        ps_ml_min_g=u(1.0, 2.5),
        plasma_volume=u(0.035, 0.07),
        interstitial_volume=u(0.15, 0.3),
        liver_delay_s=u(6.0, 15.0),
        liver_fraction=u(0.15, 0.35),
        liver_dispersion_s=u(8.0, 25.0),
        muscle_uptake=u(0.03, 0.12),
        lung_blood_fraction=u(0.05, 0.15),
        breathing_amplitude_mm=u(0.0, 10.0),
        breathing_period_s=u(3.0, 6.0),
        breathing_irregularity=u(0.0, 0.35),
        breathing_shape=u(1.0, 3.0),
        breathing_direction_deg=rng.normal(0.0, 20.0),
        lateral_motion_fraction=u(0.0, 0.25),
        breath_hold_s=0.0 if rng.random() < 0.6 else u(8.0, 25.0),
        drift_mm=(u(-3.0, 3.0), u(-3.0, 3.0)),
        jitter_mm=u(0.05, 0.4),
        through_plane_scale=u(0.0, 0.04),
        liver_motion_factor=u(1.0, 1.5),
        detail_seed=int(rng.integers(2**31)),
        tissue_model="fermi",
        fermi_k_per_s=u(0.06, 0.25),
        fermi_tau0_s=u(0.0, 3.0),
        aif_saturation_time_s=u(0.004, 0.01),
        aif_block=int(np.clip(round(5.0 / pixel_spacing), 2, 3)),
        aif_snr=u(40.0, 120.0),
        acquisition="dual-sequence",
        prebolus_dose_ratio=u(8.0, 12.0),
        prebolus_lead_s=u(18.0, 28.0),
        state="stress",
        rest_segment_mbf=_rest_segment_mbf(rng, territory),
        rest_rr_factor=u(1.15, 1.5),
        readout="ideal",
        readout_pulses=int(rng.integers(5, 16)),
        readout_flip_deg=u(15.0, 20.0),
        readout_tr_s=u(0.002, 0.003),
        echo_time_s=u(0.001, 0.0016),
        r2star_per_mm_s=u(10.0, 20.0),
    )
    values = {field.name: getattr(drawn, field.name) for field in dataclasses.fields(drawn)}
    values.update(overrides)
    return PhantomParams(**{name: _plain(value) for name, value in values.items()})


def _acquisition_of_aif_series(overrides: dict) -> dict:
    """``overrides`` with an ``aif_series`` bool turned into the acquisition it means."""
    if "aif_series" not in overrides:
        return overrides
    overrides = dict(overrides)
    with_series = bool(overrides.pop("aif_series"))
    acquisition = overrides.setdefault(
        "acquisition", "dual-sequence" if with_series else "single-bolus"
    )
    if (acquisition == "dual-sequence") != with_series:
        raise InputError(f"aif_series={with_series} contradicts acquisition {acquisition!r}")
    return overrides


def _rest_segment_mbf(rng, territory) -> tuple[float, ...]:
    """Rest blood flow per segment: a global 0.6-1.2 mL/min/g with a small spread; the
    defect territory keeps 85-100 % of it (rest flow is preserved in ischaemia)."""
    global_rest = rng.uniform(0.6, 1.2)
    normal = np.clip(global_rest + rng.normal(0.0, 0.05, 16), 0.5, 1.3)
    preserved = global_rest * rng.uniform(0.85, 1.0, 16)
    return tuple(float(preserved[i] if i + 1 in territory else normal[i]) for i in range(16))


def _plain(value):
    """Python numbers in place of numpy scalars, recursively (tuples stay tuples)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_defect(defect: str) -> str:
    if defect not in (*DEFECTS, "none"):
        raise InputError(f"unknown defect {defect!r}: expected lad, rca, lcx or none")
    return defect


def _log_uniform(rng, low, high):
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _polar(angle_deg, radius):
    a = math.radians(angle_deg)
    return (float(radius * math.cos(a)), float(radius * math.sin(a)))


def _perturbed_unit_vector(rng, axis, max_angle_deg):
    """``axis`` tilted by up to ``max_angle_deg`` in a random direction."""
    helper = np.array([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(axis, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    tilt = math.radians(rng.uniform(0.0, max_angle_deg))
    turn = rng.uniform(0.0, 2 * math.pi)
    v = math.cos(tilt) * axis + math.sin(tilt) * (math.cos(turn) * e1 + math.sin(turn) * e2)
    return v / np.linalg.norm(v)


# ----------------------------------------------------------------------------- generation
@dataclass
class Heart:
    """The patient of a seed before any image is rendered: what every series of the
    same seed shares (perfusion, LGE).

    ``timing`` is :func:`_timing`'s (frame times, breathing, scan generator);
    ``detail`` is the fine-grained generator positioned after the slice anatomy,
    where the perfusion rendering goes on drawing from it.
    """

    params: PhantomParams
    levels: list[str]
    orientation: _Orientation
    timing: tuple[np.ndarray, tuple[np.ndarray, np.ndarray], np.random.Generator]
    anatomies: list[_SliceAnatomy]
    detail: np.random.Generator


def heart_of_seed(seed: int, defect: str | None = None, **overrides) -> Heart:
    """The parameters, slice levels, orientation and slice anatomy of ``seed``'s patient,
    exactly as :func:`generate_phantom` draws them."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"phantom seed must be a non-negative integer, got {seed!r}")
    p = sample_params(np.random.default_rng(int(seed)), defect, **overrides)
    if p.signal_model not in SIGNAL_MODELS:
        raise InputError(f"unknown signal_model {p.signal_model!r}: expected {SIGNAL_MODELS}")
    if p.tissue_model not in TISSUE_MODELS:
        raise InputError(f"unknown tissue_model {p.tissue_model!r}: expected {TISSUE_MODELS}")
    for name, value, allowed in (
        ("acquisition", p.acquisition, ACQUISITIONS), ("state", p.state, STATES),
        ("readout", p.readout, READOUTS),
    ):
        if value not in allowed:
            raise InputError(f"unknown {name} {value!r}: expected one of {', '.join(allowed)}")
    if sorted(p.acquisition_order) != list(range(p.n_slices)):
        raise InputError("acquisition_order must give each of the n_slices slices one slot")
    detail = np.random.default_rng(p.detail_seed)

    levels = slice_levels_for(p.n_slices)
    orientation = _orientation(p)
    timing = _timing(p, orientation, detail)
    anatomies = _slice_anatomy(p, levels, detail)
    return Heart(p, levels, orientation, timing, anatomies, detail)


def generate_phantom(seed: int, defect: str | None = None, **overrides) -> Phantom:
    """Render the phantom of ``seed``; ``overrides`` replace :class:`PhantomParams` fields."""
    heart = heart_of_seed(seed, defect, **overrides)
    p, levels, orientation, slices, detail = (
        heart.params, heart.levels, heart.orientation, heart.anatomies, heart.detail
    )
    times, (shift_mm, inspiration), scan = heart.timing
    # The AIF series is read in the same beats as the first slice read out.
    aif_times = times[p.acquisition_order.index(0)]
    all_curves = _concentration_curves(p, np.vstack([times, aif_times]))
    curves = {name: c[: p.n_slices] for name, c in all_curves.items()}
    reference = _reference_frames(p, curves, levels)
    shift_mm -= shift_mm[np.arange(p.n_slices), reference][:, None]
    scale = 1.0 + p.through_plane_scale * (
        inspiration - inspiration[np.arange(p.n_slices), reference][:, None]
    )
    centres = _place_heart(p, slices, shift_mm, scale)
    ps = p.pixel_spacing_mm
    motion = np.stack([-shift_mm[..., 1], shift_mm[..., 0]], axis=-1) / ps  # (row, col) px

    signal = _tissue_signals(p, curves)
    n_s, n_t = times.shape
    image = np.empty((n_s, n_t, *p.matrix), dtype=np.uint16)
    labels = np.zeros((n_s, n_t, *p.matrix), dtype=np.uint8)
    noise_sd = signal["noise_sd"]
    for k in range(n_s):
        frames, labels[k] = _render_slice(
            p, slices[k], centres[k], motion[k], shift_mm[k], scale[k], signal, k, detail
        )
        frames = _acquire(p, frames, noise_sd, scan)
        image[k] = np.clip(np.rint(frames * signal["gain"]), 0, 65535).astype(np.uint16)

    truth = _truth_arrays(p, slices, centres, labels, reference, motion, levels)
    geometry = _dicom_geometry(p, orientation, centres)
    attrs = _store_attrs(p, seed, times, levels, reference, geometry)
    extra = _extra_attrs(p, seed, geometry, centres, slices, curves, signal)
    extra["truth"]["main_bolus_foot_s"] = round(_main_bolus_foot_s(p, times), 4)
    extra["saturation_time_s"] = p.saturation_time_s  # recorded by the scanner (nominal TS)
    extra["perfusion_state"] = p.state
    aif_image = None
    if p.aif_series:
        aif_curves = {name: c[p.n_slices :] for name, c in all_curves.items()}
        aif_image = _aif_series_image(
            p, slices[0], centres[0], motion[0], shift_mm[0], scale[0], aif_curves
        )
        attrs["aif_series"] = {
            "frame_times_s": np.round(aif_times, 4).tolist(),
            "pixel_spacing_mm": [p.pixel_spacing_mm * p.aif_block] * 2,
            "slice": 0,
            "origin_px": [(p.aif_block - 1) / 2.0] * 2,
            "saturation_time_s": p.aif_saturation_time_s,
        }
    return Phantom(image=image, attrs=attrs, extra=extra, truth=truth, params=p, aif_image=aif_image)


def _timing(p: PhantomParams, orientation: _Orientation, detail):
    """Frame times, breathing and the generator of the scan's own draws (noise).

    ``detail`` first draws the timing of the stress study without pre-bolus
    frames, whatever the state and acquisition, so the heart and body drawn
    from it next are the same patient's. A study timed otherwise (rest,
    dual-bolus) takes its timing, breathing and noise from a generator of its own.
    """
    stress = dataclasses.replace(p, state="stress", acquisition="dual-sequence")
    times = _frame_times(stress, detail)
    breathing = _breathing(stress, times, orientation, detail)
    if p.state == "stress" and _prebolus_frames(p) == 0:
        return times, breathing, detail
    scan = np.random.default_rng([p.detail_seed, 2])
    times = _frame_times(p, scan)
    return times, _breathing(p, times, orientation, scan), scan


def _aif_series_image(p, anatomy, centre, motion, shift_mm, scale, aif_curves) -> np.ndarray:
    """The separate AIF series of slice 0 (T, Y/b, X/b) uint16: short saturation time,
    b x b coarser pixels, its own noise (a generator of its own, so the main
    image does not depend on whether the AIF series is made).

    Its readout is the ideal saturation recovery whatever ``readout``: the few
    low-resolution lines reach the k-space centre right after the short
    saturation delay, and its short echo keeps the T2* loss small.
    """
    rng = np.random.default_rng(p.detail_seed + 1)
    short = dataclasses.replace(p, saturation_time_s=p.aif_saturation_time_s, readout="ideal")
    signal = _tissue_signals(short, aif_curves)
    frames, _ = _render_slice(p, anatomy, centre, motion, shift_mm, scale, signal, 0, rng)
    b = p.aif_block
    n_t, n_y, n_x = frames.shape
    frames = frames[:, : n_y // b * b, : n_x // b * b]
    coarse = frames.reshape(n_t, n_y // b, b, n_x // b, b).mean(axis=(2, 4))
    blood_peak = float(_signal_of(short, "blood", p.lv_peak_mmol))
    noise = rng.standard_normal((2, *coarse.shape)) * (blood_peak / p.aif_snr / b)
    magnitude = np.hypot(coarse + noise[0], noise[1])
    return np.clip(np.rint(magnitude * p.intensity_peak / blood_peak), 0, 65535).astype(np.uint16)


def write_phantom(
    path: str | os.PathLike,
    seed: int,
    defect: str | None = None,
    overwrite: bool = False,
    **overrides,
) -> Study:
    """Generate the phantom of ``seed`` into a new study store with truth under ``truth/``.

    ``overrides`` replace :class:`PhantomParams` fields. A failure while
    writing the truth removes the store: no half-written phantom.
    """
    phantom = generate_phantom(seed, defect, **overrides)
    study = Study.create(
        path, phantom.image, **phantom.attrs, extra_attrs=phantom.extra,
        aif_image=phantom.aif_image, overwrite=overwrite,
    )
    try:
        for name, array in phantom.truth.items():
            study.write(f"truth/{name}", array)
    except BaseException:
        shutil.rmtree(study.path, ignore_errors=True)
        raise
    return study


# ----------------------------------------------------------------------------- timing
def _frame_times(p: PhantomParams, rng) -> np.ndarray:
    """Frame times (S, T) in s from the study's first frame.

    One frame per R-R interval (every other beat when the slices do not fit
    in one), occasionally an extra beat for a missed trigger; the slices are
    read out in ``acquisition_order`` at fixed offsets after the R wave.
    """
    n_frames = p.n_pd_frames + _prebolus_frames(p) + p.n_dynamics
    steps = _beats_per_frame(p) + (rng.random(n_frames) < p.missed_trigger_rate)
    beat_of_frame = np.concatenate([[0], np.cumsum(steps[1:])])
    n_beats = int(beat_of_frame[-1]) + 1
    trend = 1.0 + p.rr_trend * np.linspace(0.0, 1.0, n_beats)
    jitter = np.clip(1.0 + p.rr_jitter * rng.standard_normal(n_beats), 0.6, 1.4)
    rr = p.imaged_rr_interval_s * trend * jitter
    r_waves = np.concatenate([[0.0], np.cumsum(rr[:-1])])
    slots = np.asarray(p.acquisition_order, dtype=float)
    times = r_waves[beat_of_frame][None, :] + slots[:, None] * p.slice_readout_s
    return times - times.min()


def _beats_per_frame(p: PhantomParams) -> int:
    """1, or 2 when the slices do not fit in one R-R interval."""
    return 2 if p.n_slices * p.slice_readout_s > 0.9 * p.imaged_rr_interval_s else 1


def _prebolus_frames(p: PhantomParams) -> int:
    """Frames added before the main bolus of a dual-bolus study to hold the pre-bolus
    (its lead time at the imaged frame rate); 0 otherwise."""
    if p.acquisition != "dual-bolus":
        return 0
    return math.ceil(p.prebolus_lead_s / (_beats_per_frame(p) * p.imaged_rr_interval_s))


def _main_bolus_foot_s(p: PhantomParams, times) -> float:
    """LV foot of the main bolus on the study clock: ``baseline_s`` after the first
    saturation-recovery frame, and the pre-bolus lead later in a dual-bolus study."""
    lead = p.prebolus_lead_s if p.acquisition == "dual-bolus" else 0.0
    return float(times[:, p.n_pd_frames].min() + p.baseline_s + lead)


# ----------------------------------------------------------------------------- contrast
def _gamma_variate(t, alpha, time_to_peak):
    """Unit-area gamma variate starting at t = 0."""
    beta = time_to_peak / alpha
    x = np.clip(t, 0.0, None) / beta
    return np.where(t > 0, x**alpha * np.exp(-x) / (beta * math.gamma(alpha + 1.0)), 0.0)


def _dispersed(curve, tau_s):
    """``curve`` on the fine grid convolved with a unit-area exponential of time constant tau."""
    kernel_t = np.arange(0.0, 6.0 * tau_s, _CURVE_DT_S)
    kernel = np.exp(-kernel_t / tau_s)
    return fftconvolve(curve, kernel / kernel.sum())[: curve.size]


def _delayed(t, curve, delay_s):
    return np.interp(t - delay_s, t, curve, left=0.0)


def _two_compartment_response(t, fp, ps, vp, ve):
    """2CXM impulse response (per unit plasma input), 1/s, on times ``t`` >= 0.

    vp dCp/dt = Fp (Ca - Cp) - PS (Cp - Ce),  ve dCe/dt = PS (Cp - Ce),
    tissue C = vp Cp + ve Ce; flows in 1/s (mL/s per mL tissue).
    """
    system = np.array([[-(fp + ps) / vp, ps / vp], [ps / ve, -ps / ve]])
    rates, vectors = np.linalg.eig(system)
    weights = np.array([vp, ve]) @ vectors * np.linalg.solve(vectors, [fp / vp, 0.0])
    return np.real(np.exp(np.outer(t, rates)) @ weights)


def _fermi_response(t, fp, k, tau0):
    """Fermi residue scaled to start at the plasma flow ``fp`` (1/s), on times ``t`` >= 0."""
    return fp * (1.0 + np.exp(-k * tau0)) / (1.0 + np.exp(k * (t - tau0)))


def _concentration_curves(p: PhantomParams, times: np.ndarray) -> dict[str, Any]:
    """Concentration (mmol/L) of every tissue at the frame times (S, T); segments (S, 16, T).

    Curves are built on a fine time grid (bolus shapes, 2CXM convolution) and
    sampled at each slice's own frame times. A dual-bolus study's pre-bolus has
    the main bolus's shape, ``prebolus_lead_s`` earlier and 1 / ``prebolus_dose_ratio``
    of its dose; every tissue sees the sum of both (the kinetics are linear).
    """
    lv_foot = _main_bolus_foot_s(p, times)
    # The grid reaches past the first-pass peak even when the series ends before it.
    end = max(times.max(), lv_foot + 3.0 * p.lv_time_to_peak_s) + 2.0
    t = np.arange(-5.0, end, _CURVE_DT_S)

    def bolus(foot, time_to_peak):
        since = t - foot
        first = _gamma_variate(since, p.bolus_alpha, time_to_peak)
        recirc = p.recirculation_fraction * _gamma_variate(
            since - p.recirculation_delay_s, 2.5, p.recirculation_time_to_peak_s
        )
        mixing = 1.0 - np.exp(-np.clip(since, 0.0, None) / p.recirculation_delay_s)
        return first + recirc + p.equilibrium_fraction * first.max() * mixing

    def injected(foot, time_to_peak):
        curve = bolus(foot, time_to_peak)
        if p.acquisition == "dual-bolus":
            curve = curve + bolus(foot - p.prebolus_lead_s, time_to_peak) / p.prebolus_dose_ratio
        return curve

    scale = p.lv_peak_mmol / bolus(lv_foot, p.lv_time_to_peak_s).max()  # of the main bolus
    lv = scale * injected(lv_foot, p.lv_time_to_peak_s)
    rv = scale * injected(lv_foot - p.rv_lead_s, p.lv_time_to_peak_s * p.rv_sharpness)
    plasma = lv / (1.0 - p.hematocrit)
    tissue_input = _delayed(t, plasma, p.tissue_delay_s)

    response_t = np.arange(0.0, t[-1] - t[0], _CURVE_DT_S)

    def myocardium(mbf):
        fp = mbf * TISSUE_DENSITY_G_ML / 60.0 * (1.0 - p.hematocrit)
        if p.tissue_model == "2cxm":
            ps = p.ps_ml_min_g * TISSUE_DENSITY_G_ML / 60.0
            h = _two_compartment_response(response_t, fp, ps, p.plasma_volume, p.interstitial_volume)
        else:
            h = _fermi_response(response_t, fp, p.fermi_k_per_s, p.fermi_tau0_s)
        # Trapezoid rule; the input is zero at the start of the grid.
        return (fftconvolve(tissue_input, h)[: t.size] - 0.5 * h[0] * tissue_input) * _CURVE_DT_S

    territory = aha.TERRITORIES.get(p.defect, ())
    remote = [m for i, m in enumerate(p.imaged_segment_mbf) if i + 1 not in territory]
    liver = _dispersed(_delayed(t, lv, p.liver_delay_s), p.liver_dispersion_s)
    fine = {
        "lv": lv,
        "rv": rv,
        "aorta": _delayed(t, lv, p.aorta_delay_s),
        "segments": np.stack([myocardium(m) for m in p.imaged_segment_mbf]),
        "rv_wall": myocardium(0.6 * float(np.mean(remote))),
        "liver": p.liver_fraction * liver,
        "muscle": p.muscle_uptake * _dispersed(plasma, 30.0),
        "lung": p.lung_blood_fraction * rv,
    }
    at_frames = {name: np.interp(times, t, c) for name, c in fine.items() if c.ndim == 1}
    at_frames["segments"] = np.stack([np.interp(times, t, c) for c in fine["segments"]], axis=1)
    at_frames["plasma"] = np.interp(times, t, plasma)
    return at_frames


def _reference_frames(p: PhantomParams, curves, levels) -> list[int]:
    """Per slice, the saturation-recovery frame of peak mean myocardial enhancement."""
    reference = []
    for k, level in enumerate(levels):
        segments = np.asarray(aha.LEVEL_SEGMENTS[level]) - 1
        myocardium = curves["segments"][k, segments, p.n_pd_frames :].mean(axis=0)
        reference.append(p.n_pd_frames + int(np.argmax(myocardium)))
    return reference


# ----------------------------------------------------------------------------- geometry
@dataclass
class _Orientation:
    """Image axes in patient space (LPS) and their display-plane counterparts.

    ``row_dir`` / ``col_dir`` are the DICOM ImageOrientationPatient direction
    cosines (along a row = increasing column, along a column = increasing row).
    Patient anterior projected into the image plane points to display angle
    ``rotation_deg + 90`` (the anterior wall and anterior RV insertion side);
    the septum lies 90 degrees further counter-clockwise, or clockwise when
    mirrored. The long axis (base -> apex) points roughly to patient
    left-anterior-inferior: ``long_axis . (+1, -1, -1) > 0`` in LPS. The
    standard display is viewed from the apex, so ``row_dir x col_dir`` is
    ``-long_axis`` there and ``+long_axis`` in a mirrored image; an importer
    orders slices by position along whichever sign of the normal has a
    positive dot product with (+1, -1, -1), which runs base -> apex.
    """

    row_dir: np.ndarray
    col_dir: np.ndarray
    long_axis: np.ndarray

    def display(self, vector_lps) -> np.ndarray:
        """In-plane display components (x right, y up) of a patient-space vector."""
        v = np.asarray(vector_lps, dtype=float)
        return np.array([v @ self.row_dir, -(v @ self.col_dir)])


def _orientation(p: PhantomParams) -> _Orientation:
    long_axis = np.asarray(p.long_axis_lps, dtype=float)
    long_axis /= np.linalg.norm(long_axis)
    anterior = np.array([0.0, -1.0, 0.0])
    anterior_in_plane = anterior - (anterior @ long_axis) * long_axis
    anterior_in_plane /= np.linalg.norm(anterior_in_plane)
    septal = np.cross(long_axis, anterior_in_plane)  # towards the RV in the standard display
    phi = math.radians(p.rotation_deg + 90.0)
    hand = -1.0 if p.mirrored else 1.0
    # Display unit vectors along +x (image right) and +y (image up) in patient space.
    right = math.cos(phi) * anterior_in_plane - hand * math.sin(phi) * septal
    up = math.sin(phi) * anterior_in_plane + hand * math.cos(phi) * septal
    return _Orientation(row_dir=right, col_dir=-up, long_axis=long_axis)


def _to_canonical(p: PhantomParams, dx, dy):
    """Heart-frame (u lateral, v anterior) components of display-plane (x right, y up) ones."""
    c, s = math.cos(math.radians(p.rotation_deg)), math.sin(math.radians(p.rotation_deg))
    u = c * dx + s * dy
    v = -s * dx + c * dy
    return (-u if p.mirrored else u), v


def _to_display(p: PhantomParams, u, v):
    """Display-plane (x right, y up) components of heart-frame (u, v) ones."""
    c, s = math.cos(math.radians(p.rotation_deg)), math.sin(math.radians(p.rotation_deg))
    u = -u if p.mirrored else u
    return c * u - s * v, s * u + c * v


def _display_angle(p: PhantomParams, canonical_deg):
    """Display angle (product convention) of a heart-frame direction."""
    turned = 180.0 - canonical_deg if p.mirrored else canonical_deg
    return np.mod(p.rotation_deg + turned, 360.0)


def _ellipse_fraction(u, v, centre, semi_axes, tilt_deg, edge_mm):
    """Fraction of each pixel inside an ellipse (linear ramp one pixel wide at the edge)."""
    c, s = math.cos(math.radians(tilt_deg)), math.sin(math.radians(tilt_deg))
    du, dv = u - centre[0], v - centre[1]
    x, y = c * du + s * dv, -s * du + c * dv
    a, b = semi_axes
    q = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    # Distance to the edge along the ray from the centre.
    edge_radius = np.where(q > 1e-6, np.hypot(x, y) / np.maximum(q, 1e-6), min(a, b))
    return np.clip(0.5 - (q - 1.0) * edge_radius / edge_mm, 0.0, 1.0)


@dataclass
class _Ellipse:
    """An ellipse in the canonical frame (mm, degrees)."""

    centre: tuple[float, float]
    semi_axes: tuple[float, float]
    tilt_deg: float

    def grown(self, margin_mm: float) -> _Ellipse:
        a, b = self.semi_axes
        return _Ellipse(self.centre, (a + margin_mm, b + margin_mm), self.tilt_deg)

    def fraction(self, u, v, edge_mm):
        return _ellipse_fraction(u, v, self.centre, self.semi_axes, self.tilt_deg, edge_mm)

    def reach_mm(self) -> float:
        """Largest distance from the origin (the LV centre) to the ellipse."""
        return math.hypot(*self.centre) + max(self.semi_axes)


@dataclass
class _SliceAnatomy:
    """Heart shape of one slice in the canonical frame (mm, degrees).

    The LV is star-shaped about its centre (radii modulated by harmonics);
    the RV cavity is the part of an ellipse on the septal side lying outside
    the LV epicardium, so it wraps the septum and meets the LV at an angle.
    """

    level: str
    depth_fraction: float  # 0 base .. 1 apex
    lv_radius: float
    wall: float
    epi_harmonics: dict[int, complex]  # relative epicardial radius modulation
    wall_harmonics: dict[int, complex]  # relative wall thickness modulation
    trabeculae: dict[int, complex]  # endocardial modulation, mm
    rv_cavity: _Ellipse
    rv_wall: float
    fat: float
    fat_harmonic: complex
    groove_fat: float
    drift_mm: tuple[float, float]  # LV centre offset from the basal slice's, canonical
    insertion_deg: tuple[float, float] = (0.0, 0.0)  # canonical (anterior, inferior)
    papillary: list[tuple[float, float, float]] = dataclasses.field(default_factory=list)

    @property
    def rv_outer(self) -> _Ellipse:
        return self.rv_cavity.grown(self.rv_wall)

    @property
    def rv_fat(self) -> _Ellipse:
        return self.rv_cavity.grown(self.rv_wall + self.fat)


def _harmonic(z_powers, coefficients):
    total = 0.0
    for order, coefficient in coefficients.items():
        total = total + (coefficient * z_powers[order]).real
    return total


def _z_powers(z, order=9):
    powers = [np.ones_like(z), z]
    for _ in range(order - 1):
        powers.append(powers[-1] * z)
    return powers


def _unit(angle_deg):
    return np.exp(1j * np.radians(angle_deg))


def _lv_boundaries(anatomy: _SliceAnatomy, z_powers):
    """Endocardial, epicardial and epicardial-fat radii (mm) along directions ``z_powers[1]``."""
    epicardium = anatomy.lv_radius * (1.0 + _harmonic(z_powers, anatomy.epi_harmonics))
    wall = anatomy.wall * (1.0 + _harmonic(z_powers, anatomy.wall_harmonics))
    endocardium = epicardium - wall + _harmonic(z_powers, anatomy.trabeculae)
    endocardium = np.minimum(endocardium, epicardium - 1.5)  # trabeculae never cut the wall
    z = z_powers[1]
    groove_width = 0.09  # ~17 degrees: exp(-(1 - cos d) / w) ~ exp(-d^2 / (2 w))
    grooves = sum(
        np.exp(((z * np.conj(_unit(angle))).real - 1.0) / groove_width)
        for angle in anatomy.insertion_deg
    )
    fat = anatomy.fat * (1.0 + 0.5 * (anatomy.fat_harmonic * z).real) + anatomy.groove_fat * grooves
    return endocardium, epicardium, epicardium + fat


def _rv_ellipse(lv_radius, depth, half_angle_deg, centre_deg, width, tilt_deg) -> _Ellipse:
    """RV cavity ellipse reaching ``depth`` beyond a circular LV of ``lv_radius`` along
    ``centre_deg`` and crossing it at ``centre_deg`` +- ``half_angle_deg`` (before the tilt)."""
    half = math.radians(half_angle_deg)
    half_chord = lv_radius * math.sin(half)
    across = width * half_chord
    # Solve for the radial semi-axis so that the ellipse passes through the insertion points.
    k = math.sqrt(1.0 - (half_chord / across) ** 2)
    along = (lv_radius + depth - lv_radius * math.cos(half)) / (1.0 + k)
    distance = lv_radius + depth - along
    return _Ellipse(_polar(centre_deg, distance), (along, across), centre_deg + tilt_deg)


def _insertion_points_deg(anatomy: _SliceAnatomy, centre_deg: float) -> tuple[float, float]:
    """Canonical angles where the mid-wall of the RV free wall meets the LV epicardium.

    Walks out from the RV direction both ways along the epicardium until it
    leaves the ellipse; returns (anterior, inferior) = (smaller, larger) angle.
    """
    step = 0.05
    offsets = np.arange(0.0, 179.0, step)
    mid_wall = anatomy.rv_cavity.grown(0.5 * anatomy.rv_wall)
    ends = []
    for sign in (-1.0, 1.0):
        angles = centre_deg + sign * offsets
        z = _unit(angles)
        epicardium = _lv_boundaries(anatomy, _z_powers(z))[1]
        points = epicardium * z
        inside = mid_wall.fraction(points.real, points.imag, 1e-6) > 0.5
        outside = np.flatnonzero(~inside)
        ends.append(angles[outside[0]] - sign * step / 2 if outside.size else angles[-1])
    return float(ends[0]), float(ends[1])


def _slice_anatomy(p: PhantomParams, levels, rng) -> list[_SliceAnatomy]:
    """Per-slice heart shape: smaller towards the apex, RV shallower and narrower,
    papillary muscles on basal and mid slices."""
    anatomies = []
    n = p.n_slices
    for k, level in enumerate(levels):
        z = k / (n - 1) if n > 1 else 0.5
        jitter = rng.normal(0.0, 1.0, 7)
        amp1, phase1, amp2, phase2 = p.wall_variation
        ell_amp, ell_phase = p.lv_ellipticity
        epi = {
            2: _phasor(ell_amp * (1 + 0.2 * jitter[0]), 2 * ell_phase),
            3: _phasor(0.02 * abs(jitter[1]), rng.uniform(0, 360)),
        }
        wall = {1: _phasor(amp1, phase1 + 10 * jitter[2]), 2: _phasor(amp2, 2 * phase2)}
        trabeculae = {
            order: _phasor(p.trabeculation_mm * rng.uniform(0.2, 1.0) / 2, rng.uniform(0, 360))
            for order in range(5, 10)
        }
        lv_radius = p.lv_radius_mm * (1.0 - p.lv_taper * z**1.6)
        rv_centre = p.rv_centre_deg + 4.0 * jitter[5]
        rv_cavity = _rv_ellipse(
            lv_radius,
            depth=p.rv_depth_mm * (1.0 - 0.55 * z) * (1 + 0.1 * jitter[3]),
            half_angle_deg=float(
                np.clip(p.rv_half_angle_deg + 6.0 - 12.0 * z + 3.0 * jitter[4], 32.0, 75.0)
            ),
            centre_deg=rv_centre,
            width=p.rv_width,
            tilt_deg=p.rv_tilt_deg,
        )
        anatomy = _SliceAnatomy(
            level=level,
            depth_fraction=z,
            lv_radius=lv_radius,
            wall=p.wall_thickness_mm * (1.0 - 0.3 * z),
            epi_harmonics=epi,
            wall_harmonics=wall,
            trabeculae=trabeculae,
            rv_cavity=rv_cavity,
            rv_wall=p.rv_wall_mm,
            fat=p.epicardial_fat_mm,
            fat_harmonic=_phasor(1.0, rng.uniform(0, 360)),
            groove_fat=p.groove_fat_mm * (1.0 + 0.2 * jitter[6]),
            drift_mm=(k * p.long_axis_drift_mm[0], k * p.long_axis_drift_mm[1]),
        )
        anatomy.insertion_deg = _insertion_points_deg(anatomy, rv_centre)
        if z < 0.75:
            radius = p.papillary_radius_mm * (0.6 + 0.4 * z / 0.75) * lv_radius / p.lv_radius_mm
            for angle in p.papillary_angles_deg:
                endocardium = _lv_boundaries(anatomy, _z_powers(np.array([_unit(angle)])))[0][0]
                anatomy.papillary.append((*_polar(angle, endocardium - 0.6 * radius), radius))
        anatomies.append(anatomy)
    return anatomies


def _phasor(amplitude, phase_deg):
    return complex(amplitude * np.exp(-1j * math.radians(phase_deg)))


def _heart_extent_mm(anatomy: _SliceAnatomy) -> float:
    """Largest distance from the LV centre to the outside of the heart (fat included)."""
    directions = _unit(np.linspace(0.0, 360.0, 720, endpoint=False))
    lv_reach = float(np.max(_lv_boundaries(anatomy, _z_powers(directions))[-1]))
    return max(lv_reach, anatomy.rv_fat.reach_mm())


def _place_heart(p: PhantomParams, anatomies, shift_mm, scale) -> np.ndarray:
    """Rest LV centre (row, col) per slice: off-centre, the heart inside the image when it fits."""
    ps = p.pixel_spacing_mm
    dims = np.asarray(p.matrix, dtype=float)
    image_centre = (dims - 1.0) / 2.0
    drift_px = np.array([_drift_px(p, k) for k in range(len(anatomies))])
    extent_px = np.array([
        (_heart_extent_mm(anatomy) * scale[k].max() + np.abs(shift_mm[k]).max()) / ps + 2.0
        for k, anatomy in enumerate(anatomies)
    ])[:, None]
    low = np.max(extent_px - drift_px, axis=0) - image_centre
    high = np.min(dims - 1.0 - extent_px - drift_px, axis=0) - image_centre
    wanted = np.asarray(p.heart_offset) * 0.15 * dims
    offset = np.where(low <= high, np.clip(wanted, low, high), (low + high) / 2.0)
    return image_centre + offset + drift_px


# ----------------------------------------------------------------------------- motion
def _breathing(p: PhantomParams, times, orientation: _Orientation, rng):
    """Respiratory displacement (S, T, 2) in display mm (x right, y up) and inspiration level.

    Irregular cycles (period and depth vary per breath) of a waveform that
    dwells at end-expiration, mostly along the in-plane projection of the
    patient's inferior direction, with a smaller lagging perpendicular
    component, a slow drift and small beat-to-beat jitter.
    """
    t_end = float(times.max()) + 1.0
    n_cycles = max(0, int((t_end - p.breath_hold_s) / (0.6 * p.breathing_period_s))) + 3
    periods = p.breathing_period_s * np.clip(
        1.0 + p.breathing_irregularity * rng.standard_normal(n_cycles), 0.6, 1.6
    )
    depths = np.clip(1.0 + p.breathing_irregularity * rng.standard_normal(n_cycles), 0.3, 1.7)
    starts = p.breath_hold_s - rng.uniform(0.0, periods[0]) + np.concatenate(
        [[0.0], np.cumsum(periods[:-1])]
    )
    held_level = rng.uniform(0.0, 1.0)
    jitter = rng.normal(0.0, p.jitter_mm, (*times.shape, 2))

    cycle = np.clip(np.searchsorted(starts, times, side="right") - 1, 0, n_cycles - 1)
    phase = (times - starts[cycle]) / periods[cycle]

    def waveform(ph):
        return depths[cycle] * ((1.0 - np.cos(2.0 * np.pi * ph)) / 2.0) ** p.breathing_shape

    holding = times < p.breath_hold_s
    level = np.where(holding, held_level, waveform(phase))
    lateral = np.where(holding, held_level, waveform(phase - 0.25))

    inferior = orientation.display([0.0, 0.0, -1.0])
    turn = math.atan2(inferior[1], inferior[0]) + math.radians(p.breathing_direction_deg)
    along = np.array([math.cos(turn), math.sin(turn)])
    across = np.array([-along[1], along[0]])
    amplitude = p.breathing_amplitude_mm
    shift = (
        amplitude * level[..., None] * along
        + amplitude * p.lateral_motion_fraction * lateral[..., None] * across
        + (times / t_end)[..., None] * np.asarray(p.drift_mm)
        + jitter
    )
    return shift, level


# ----------------------------------------------------------------------------- signal
def _signal_of(p: PhantomParams, tissue: str, concentration):
    """Noise-free signal (before gain and coil shading) of ``tissue`` at ``concentration``.

    ``readout`` "ideal": S = PD (1 - exp(-TS R1)), exactly what the flow step's
    conversion assumes. "scanner": :func:`_flash_readout` times the T2* loss of
    blood, exp(-TE r2* C).
    """
    r1 = 1.0 / p.t1_s[tissue] + p.relaxivity_per_mm_s * np.asarray(concentration)
    if p.signal_model == "linear":
        weight = p.saturation_time_s * r1
    elif p.readout == "scanner":
        weight = _flash_readout(p, r1)
        if tissue == "blood":  # in tissue (< 1 mmol/L) the T2* loss is a few percent
            weight = weight * np.exp(-p.echo_time_s * p.r2star_per_mm_s * np.asarray(concentration))
    else:
        weight = 1.0 - np.exp(-p.saturation_time_s * r1)
    return p.proton_density[tissue] * weight


def _flash_readout(p: PhantomParams, r1):
    """Mz / M0 at the k-space centre of a saturation-prepared FLASH readout.

    Mz recovers to 1 - exp(-TS R1) over the saturation delay TS, then
    ``readout_pulses`` pulses of flip a every TR drive it towards the steady
    state: Mz_n = Mz_ss + (Mz(TS) - Mz_ss) (E1 cos a)^n, Mz_ss = (1 - E1) /
    (1 - E1 cos a), E1 = exp(-TR R1). The signal is Mz_n sin a; the constant
    sin a is left to the receiver gain, so the pre-contrast scale stays near
    the ideal readout's.

    At the bolus peak blood recovers nearly fully in TS and the pulses pull
    it down towards Mz_ss, so its signal flattens; with the T2* loss, the
    conversion that assumes the ideal readout (flow.signal_to_concentration
    with the nominal TS and the true T1) reads it low. Measured over 2000
    draws of the parameters (TS 50-130 ms, 5-15 pulses of 15-20 degrees,
    TR 2-3 ms, TE 1.0-1.6 ms, r2* 10-20 /(mmol/L s)): an LV peak of 4-8 mmol/L
    is read 29-61 % low (5th-95th percentile, median 45 %, 93 % of draws within
    25-60 %), and the read first pass stays within 10 % of its maximum 1.6 times
    as long as the true one (median; 1.15 times at least): a flat top. Myocardium
    at 0.1-1 mmol/L is read 1-6 % low (5th-95th percentile, at most 10 %).
    More pulses or lower flips would push the tissue error past 10 %, as
    would an imperfect saturation, which is therefore not modelled.
    """
    e1 = np.exp(-p.readout_tr_s * r1)
    cos_flip = math.cos(math.radians(p.readout_flip_deg))
    steady = (1.0 - e1) / (1.0 - e1 * cos_flip)
    recovered = 1.0 - np.exp(-p.saturation_time_s * r1)
    return steady + (recovered - steady) * (e1 * cos_flip) ** p.readout_pulses


# Rendered layer -> (tissue relaxation properties, concentration curve; None = no uptake).
_LAYERS = {
    "lv": ("blood", "lv"),
    "rv": ("blood", "rv"),
    "aorta": ("blood", "aorta"),
    "lung_artery": ("blood", "rv"),
    "lung_vein": ("blood", "lv"),
    "rv_wall": ("myocardium", "rv_wall"),
    "liver": ("liver", "liver"),
    "muscle": ("muscle", "muscle"),
    "mediastinum": ("mediastinum", "muscle"),
    "marrow": ("marrow", "muscle"),
    "lung": ("lung", "lung"),
    "fat": ("fat", None),
}


def _tissue_signals(p: PhantomParams, curves) -> dict[str, Any]:
    """Signal of every layer (S, T) and of every myocardial segment (S, 16, T).

    Proton-density frames carry no saturation: every tissue shows its proton
    density times ``pd_level`` there (contrast has not arrived yet).
    """
    shape = curves["lv"].shape
    tables = {
        name: _signal_of(p, tissue, curves[curve] if curve else np.zeros(shape))
        for name, (tissue, curve) in _LAYERS.items()
    }
    tables["segments"] = _signal_of(p, "myocardium", curves["segments"])
    myocardium_baseline = float(_signal_of(p, "myocardium", 0.0))
    pd_level = p.pd_frame_gain * myocardium_baseline / p.proton_density["myocardium"]
    for name, (tissue, _) in _LAYERS.items():
        tables[name][:, : p.n_pd_frames] = p.proton_density[tissue] * pd_level
    tables["segments"][..., : p.n_pd_frames] = p.proton_density["myocardium"] * pd_level
    return {
        "tables": {name: table.astype(np.float32) for name, table in tables.items()},
        "noise_sd": myocardium_baseline / p.snr,
        "gain": p.intensity_peak / float(_signal_of(p, "blood", p.lv_peak_mmol)),
        "pd_level": pd_level,
    }


# ----------------------------------------------------------------------------- rendering
def _body_fractions(p: PhantomParams, anatomy: _SliceAnatomy, u, v, edge_mm, rng):
    """Static tissue fractions of the thorax around the heart, and the thoracic cavity.

    Nested ellipses: skin, the inner edge of the subcutaneous fat and the
    inner edge of the chest wall muscle, each shifted anteriorly by
    ``body_wall_shift`` so the layers are uneven; inside the cavity the spine,
    descending aorta, mediastinum and lung with pulmonary vessels.
    """
    du, dv = anatomy.drift_mm

    def at(centre):
        return (centre[0] - du, centre[1] - dv)

    a, b = p.body_semi_axes_mm
    tilt = p.body_tilt_deg
    c, s = math.cos(math.radians(tilt)), math.sin(math.radians(tilt))

    def moved_anteriorly(centre, mm):  # along the body's own short axis
        return (centre[0] - s * mm, centre[1] + c * mm)

    def ellipse(centre, axes, angle=tilt):
        return _ellipse_fraction(u, v, centre, axes, angle, edge_mm)

    fat, muscle = p.subcutaneous_fat_mm, p.chest_wall_mm
    fat_shift, muscle_shift = p.body_wall_shift
    skin_centre = at(p.body_centre_mm)
    under_fat_centre = moved_anteriorly(skin_centre, fat_shift * fat)
    cavity_centre = moved_anteriorly(under_fat_centre, muscle_shift * muscle)
    cavity_axes = (a - fat - muscle, b - fat - muscle)
    skin = ellipse(skin_centre, (a, b))
    under_fat = ellipse(under_fat_centre, (a - fat, b - fat)) * skin
    cavity = ellipse(cavity_centre, cavity_axes) * under_fat

    spine = cavity * ellipse(at(p.spine_centre_mm), p.spine_semi_axes_mm)
    aorta_disc = ellipse(at(p.aorta_centre_mm), (p.aorta_radius_mm,) * 2, 0.0)
    aorta = cavity * aorta_disc * (1.0 - spine)
    mediastinum_shape = ellipse(at(p.mediastinum_centre_mm), p.mediastinum_semi_axes_mm, 0.0)
    mediastinum = cavity * mediastinum_shape * (1.0 - spine) * (1.0 - aorta_disc)
    lung = cavity - spine - aorta - mediastinum

    # Pulmonary arteries (enhancing with the RV) and veins (with the LV) in cross-section.
    arteries, veins = np.zeros_like(u), np.zeros_like(u)
    for i in range(p.lung_vessels):
        angle, depth = rng.uniform(0.0, 2 * math.pi), math.sqrt(rng.uniform(0.0, 1.0))
        x, y = depth * cavity_axes[0] * math.cos(angle), depth * cavity_axes[1] * math.sin(angle)
        centre = (cavity_centre[0] + c * x - s * y, cavity_centre[1] + s * x + c * y)
        radius = rng.uniform(1.5, 4.0)
        vessels = arteries if i % 2 == 0 else veins
        vessels += ellipse(centre, (radius, radius), 0.0)
    lung_artery = lung * np.clip(arteries, 0.0, 1.0)
    lung_vein = (lung - lung_artery) * np.clip(veins, 0.0, 1.0)
    fractions = {
        "fat": skin - under_fat,
        "muscle": under_fat - cavity,
        "marrow": spine,
        "aorta": aorta,
        "mediastinum": mediastinum,
        "lung": lung - lung_artery - lung_vein,
        "lung_artery": lung_artery,
        "lung_vein": lung_vein,
    }
    return fractions, cavity


def _shading(p: PhantomParams, anatomy: _SliceAnatomy, u, v, rng) -> np.ndarray:
    """Static multiplicative field: surface-coil sensitivity (1 at the LV centre) and texture."""
    du, dv = anatomy.drift_mm
    a, b = p.body_semi_axes_mm
    c, s = math.cos(math.radians(p.body_tilt_deg)), math.sin(math.radians(p.body_tilt_deg))
    sensitivity_sq = np.zeros_like(u)
    at_centre_sq = 0.0
    for angle in p.coil_angles_deg:
        x = (a + 10.0) * math.cos(math.radians(angle))
        y = (b + 10.0) * math.sin(math.radians(angle))
        coil_u = p.body_centre_mm[0] - du + c * x - s * y
        coil_v = p.body_centre_mm[1] - dv + s * x + c * y
        width_sq = p.coil_width_mm**2
        sensitivity_sq += 1.0 / (1.0 + ((u - coil_u) ** 2 + (v - coil_v) ** 2) / width_sq) ** 2
        at_centre_sq += 1.0 / (1.0 + (coil_u**2 + coil_v**2) / width_sq) ** 2
    coil = np.sqrt(sensitivity_sq / at_centre_sq)
    field = (1.0 - p.coil_shading) + p.coil_shading * coil
    texture = ndimage.gaussian_filter(rng.standard_normal(u.shape), sigma=4.0)
    texture *= p.texture / max(float(texture.std()), 1e-9)
    return (np.clip(field, 0.05, None) * (1.0 + texture)).astype(np.float32)


def _heart_window(centre, reach_px, shape):
    low = np.maximum(np.floor(np.asarray(centre) - reach_px).astype(int), 0)
    high = np.minimum(np.ceil(np.asarray(centre) + reach_px).astype(int) + 1, shape)
    return slice(low[0], high[0]), slice(low[1], high[1])


def _insertion_display_deg(p: PhantomParams, anatomy: _SliceAnatomy) -> tuple[float, float]:
    anterior, inferior = anatomy.insertion_deg
    return float(_display_angle(p, anterior)), float(_display_angle(p, inferior))


@dataclass
class _HeartFractions:
    """Tissue fractions of the heart on canonical coordinates, with the geometry they
    come from: radius and LV boundaries (mm), display angle and AHA segment per pixel."""

    cavity: np.ndarray  # LV cavity, papillary muscles included
    myocardium: np.ndarray
    rv_cavity: np.ndarray
    rv_wall: np.ndarray
    fat: np.ndarray  # epicardial and groove fat
    outside: np.ndarray  # beyond the heart and its fat
    papillary: list[tuple[np.ndarray, int]]  # (fraction, segment it stands in)
    rho: np.ndarray
    endocardium: np.ndarray
    epicardium: np.ndarray
    theta: np.ndarray  # display angle, degrees
    segment: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        background = self.outside + self.rv_wall + self.fat
        stacked = np.stack([background, self.cavity, self.myocardium, self.rv_cavity])
        return np.argmax(stacked, axis=0).astype(np.uint8)


def _heart_fractions(p, anatomy, u, v) -> _HeartFractions:
    ps = p.pixel_spacing_mm
    rho = np.hypot(u, v)
    z = ((u + 1j * v) / np.maximum(rho, 1e-6)).astype(np.complex64)
    endocardium, epicardium, lv_fat = _lv_boundaries(anatomy, _z_powers(z))
    beyond_endo, beyond_epi, beyond_fat = (
        np.clip(0.5 + (rho - radius) / ps, 0.0, 1.0) for radius in (endocardium, epicardium, lv_fat)
    )
    in_rv_cavity = anatomy.rv_cavity.fraction(u, v, ps)
    in_rv_outer = anatomy.rv_outer.fraction(u, v, ps)
    cavity = 1.0 - beyond_endo
    outside = beyond_fat * (1.0 - anatomy.rv_fat.fraction(u, v, ps))

    anterior, inferior = _insertion_display_deg(p, anatomy)
    septal = aha.septal_bisector_deg(anterior, inferior)
    direction = aha.numbering_direction(anterior, septal)
    theta = _display_angle(p, np.degrees(np.angle(z)))
    papillary = []
    for pu, pv, radius in anatomy.papillary:
        inside = np.clip(0.5 + (radius - np.hypot(u - pu, v - pv)) / ps, 0.0, 1.0) * cavity
        anchor = aha.segment_of_angle(
            _display_angle(p, math.degrees(math.atan2(pv, pu))), septal, anatomy.level, direction
        )
        papillary.append((inside, int(anchor)))
    return _HeartFractions(
        cavity=cavity,
        myocardium=beyond_endo - beyond_epi,
        rv_cavity=beyond_epi * in_rv_cavity,
        rv_wall=beyond_epi * (in_rv_outer - in_rv_cavity),
        fat=1.0 - outside - (1.0 - beyond_epi) - beyond_epi * in_rv_outer,
        outside=outside,
        papillary=papillary,
        rho=rho,
        endocardium=endocardium,
        epicardium=epicardium,
        theta=theta,
        segment=aha.segment_of_angle(theta, septal, anatomy.level, direction),
    )


def _render_heart(p, anatomy, u, v, tables, k):
    """Heart signal, fraction outside the heart and labels on canonical coordinates (T, h, w)."""
    f = _heart_fractions(p, anatomy, u, v)
    frame = np.arange(u.shape[0])[:, None, None]
    segment_signal = tables["segments"][k][f.segment.astype(np.intp) - 1, frame]

    lv_signal = tables["lv"][k][:, None, None]
    heart = (
        f.cavity * lv_signal
        + f.myocardium * segment_signal
        + f.rv_cavity * tables["rv"][k][:, None, None]
        + f.rv_wall * tables["rv_wall"][k][:, None, None]
        + f.fat * tables["fat"][k][:, None, None]
    )
    for inside, anchor in f.papillary:  # perfused like the segment they stand in
        heart += inside * (tables["segments"][k][anchor - 1][:, None, None] - lv_signal)
    return heart, f.outside, f.labels


def _render_slice(p, anatomy, centre, motion, shift_mm, scale, signal, k, rng):
    """Noise-free frames (T, Y, X) of one slice with coil shading, and their labels."""
    ps = p.pixel_spacing_mm
    tables = signal["tables"]
    n_t = motion.shape[0]
    rows, cols = np.mgrid[0 : p.matrix[0], 0 : p.matrix[1]].astype(np.float32)
    u0, v0 = _to_canonical(p, (cols - centre[1]) * ps, -(rows - centre[0]) * ps)

    fractions, cavity = _body_fractions(p, anatomy, u0, v0, ps, rng)
    names = list(fractions)
    layer_signals = np.stack([tables[name][k] for name in names], axis=1)
    layer_maps = np.stack([fractions[name].ravel() for name in names]).astype(np.float32)
    frames = (layer_signals @ layer_maps).reshape(n_t, *p.matrix)

    # The liver rides on the diaphragm, further than the heart.
    liver_du, liver_dv = _to_canonical(p, *(p.liver_motion_factor * shift_mm.T))
    liver_centre = (1.0 - p.liver_rise * anatomy.depth_fraction) * np.asarray(p.liver_centre_mm)
    liver = cavity * _ellipse_fraction(
        u0 - liver_du[:, None, None].astype(np.float32),
        v0 - liver_dv[:, None, None].astype(np.float32),
        liver_centre - np.asarray(anatomy.drift_mm),
        p.liver_semi_axes_mm,
        p.body_tilt_deg,
        ps,
    )
    frames += liver * (tables["liver"][k][:, None, None] - frames)

    reach = _heart_extent_mm(anatomy) * scale.max() / ps + np.abs(motion).max() + 2.0
    window = _heart_window(centre, reach, p.matrix)
    heart_du, heart_dv = _to_canonical(p, *shift_mm.T)
    size = scale[:, None, None].astype(np.float32)
    u = (u0[window][None] - heart_du[:, None, None].astype(np.float32)) / size
    v = (v0[window][None] - heart_dv[:, None, None].astype(np.float32)) / size
    heart, outside, heart_labels = _render_heart(p, anatomy, u, v, tables, k)
    frames[:, window[0], window[1]] = frames[:, window[0], window[1]] * outside + heart
    labels = np.zeros((n_t, *p.matrix), dtype=np.uint8)
    labels[:, window[0], window[1]] = heart_labels

    frames *= _shading(p, anatomy, u0, v0, rng)
    return frames, labels


def _kspace_window(n, resolution, taper):
    """Weights of the n phase-encoding lines: a truncated, optionally cosine-tapered band."""
    frequency = np.abs(sp_fft.fftfreq(n))
    edge = 0.5 * resolution
    flat = edge * (1.0 - taper)
    ramp = np.clip((frequency - flat) / max(edge - flat, 1e-9), 0.0, 1.0)
    return np.where(frequency <= edge, 0.5 * (1.0 + np.cos(np.pi * ramp)), 0.0)


def noise_sd_map(shape, g_factor: float, window: np.ndarray, noise_sd: float) -> np.ndarray:
    """Per-pixel SD of the complex noise added before the k-space ``window``: ``noise_sd``
    after the window, raised towards the image centre by the g-factor (parallel imaging)."""
    n_rows, n_cols = shape
    rows, cols = np.mgrid[0:n_rows, 0:n_cols]
    spread = 0.25 * min(n_rows, n_cols)
    g = 1.0 + g_factor * np.exp(
        -((rows - n_rows / 2) ** 2 + (cols - n_cols / 2) ** 2) / (2 * spread**2)
    )
    return (noise_sd / math.sqrt(float(np.mean(window**2))) * g).astype(np.float32)


def _acquire(p: PhantomParams, frames, noise_sd, rng):
    """Magnitude image: complex Gaussian noise (g-factor weighted), k-space truncation."""
    n_rows, n_cols = p.matrix
    window = _kspace_window(p.matrix[p.phase_axis], p.phase_resolution, p.kspace_taper)
    sd = noise_sd_map((n_rows, n_cols), p.g_factor, window, noise_sd)
    noise = rng.standard_normal((2, *frames.shape), dtype=np.float32)
    data = (frames + sd * noise[0]) + 1j * (sd * noise[1])
    axis = 1 + p.phase_axis
    spectrum = sp_fft.fft(data, axis=axis)
    spectrum *= window.astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
    return np.abs(sp_fft.ifft(spectrum, axis=axis))


# ----------------------------------------------------------------------------- truth
def _truth_arrays(p, anatomies, centres, labels, reference, motion, levels):
    n_s, n_t = labels.shape[:2]
    roi = np.array(
        [[circle_of_frame(labels[k, t], (p.pixel_spacing_mm,) * 2, margin_mm=0.0)
          for t in range(n_t)] for k in range(n_s)],
        dtype=np.float32,
    )
    segment_map = np.zeros((n_s, *p.matrix), dtype=np.uint8)
    for k, anatomy in enumerate(anatomies):
        anterior, inferior = _insertion_display_deg(p, anatomy)
        segment_map[k] = aha.sector_labels(
            labels[k, reference[k]] == MYOCARDIUM,
            tuple(centres[k]),
            aha.septal_bisector_deg(anterior, inferior),
            levels[k],
            anterior_deg=anterior,
        )
    segment_mbf = np.concatenate([[np.nan], np.asarray(p.imaged_segment_mbf, dtype=float)])
    return {
        "labels": labels,
        "motion": motion.astype(np.float32),
        "roi": roi,
        "roi_state": np.full((n_s, n_t), ACCEPTED, dtype=np.uint8),
        "mbf": segment_mbf[segment_map].astype(np.float32),
        "aha": segment_map,
    }


def _store_attrs(p, seed, times, levels, reference, geometry):
    orientation_cosines, positions = geometry
    normal = slice_normal(orientation_cosines)
    return {
        "pixel_spacing_mm": [p.pixel_spacing_mm, p.pixel_spacing_mm],
        "slice_thickness_mm": p.slice_thickness_mm,
        "frame_times_s": np.round(times, 4).tolist(),
        # Position along the DICOM slice normal (row x column), as an importer reads it.
        "slice_positions_mm": [round(float(pos @ normal), 6) for pos in positions],
        "slice_levels": list(levels),
        "reference_frame": [int(r) for r in reference],
        "hematocrit": p.hematocrit,
        "source": {
            "importer": "phantom",
            "description": f"napari-perfroi synthetic {p.state} perfusion phantom, seed {seed}, "
            f"defect {p.defect}",
            "generator_version": __version__,
        },
    }


def _dicom_geometry(p, orientation: _Orientation, centres) -> tuple[np.ndarray, np.ndarray]:
    """ImageOrientationPatient and ImagePositionPatient rounded as a scanner writes them."""
    cosines = np.round(np.concatenate([orientation.row_dir, orientation.col_dir]), 6)
    return cosines, np.round(_image_positions(p, orientation, centres), 4)


def _image_positions(p, orientation: _Orientation, centres) -> np.ndarray:
    """ImagePositionPatient (centre of pixel (0, 0)) of every slice, LPS mm.

    Slice k lies (thickness + gap) * k further along the long axis; the rest
    LV centre of the basal slice sits at ``heart_position_lps``.
    """
    ps = p.pixel_spacing_mm
    basal_row, basal_col = centres[0]  # slice 0 has no long-axis drift
    origin = np.asarray(p.heart_position_lps) - basal_col * ps * orientation.row_dir
    origin -= basal_row * ps * orientation.col_dir
    step = p.slice_thickness_mm + p.slice_gap_mm
    return np.array([origin + k * step * orientation.long_axis for k in range(p.n_slices)])


def _drift_px(p, k):
    """Offset (row, col) px of slice k's LV centre from the basal one's (long-axis drift)."""
    x, y = _to_display(p, k * p.long_axis_drift_mm[0], k * p.long_axis_drift_mm[1])
    return np.array([-y, x]) / p.pixel_spacing_mm


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(value) else float(value)
    return value


_SCANNER_READOUT = (
    "; readout 'scanner': 1 - exp(-TS * R1) is replaced by Mz at the k-space centre after "
    "readout_pulses FLASH pulses (flip readout_flip_deg, TR readout_tr_s) following TS, and "
    "blood loses exp(-echo_time_s * r2star_per_mm_s * C) to T2*"
)


def _extra_attrs(p, seed, geometry, centres, anatomies, curves, signal):
    """DICOM geometry (:func:`_dicom_geometry`) and the scalar truth, JSON-ready
    (``extra_attrs`` of Study.create)."""
    orientation_cosines, positions = geometry
    imaged = {s for a in anatomies for s in aha.LEVEL_SEGMENTS[a.level]}
    segment_mbf = [m if i + 1 in imaged else None for i, m in enumerate(p.imaged_segment_mbf)]
    aif_slice = 0
    dual_bolus = p.acquisition == "dual-bolus"
    truth = {
        "seed": int(seed),
        "defect": p.defect,
        "state": p.state,
        "acquisition": p.acquisition,
        "prebolus_dose_ratio": p.prebolus_dose_ratio if dual_bolus else None,
        "prebolus_lead_s": p.prebolus_lead_s if dual_bolus else None,
        "segment_mbf": segment_mbf,
        "global_mbf": float(np.mean([m for m in segment_mbf if m is not None])),
        "flow": f"{p.state} myocardial blood flow in mL/min/g (tissue density 1.05 g/mL); "
        "global_mbf is the mean of the imaged segments",
        "rv_insertion_deg": [list(_insertion_display_deg(p, a)) for a in anatomies],
        "rv_insertion": "display angles about the true LV centre where the mid-wall of the "
        "RV free wall meets the LV epicardium, reference frame",
        "lv_centre_px": centres.tolist(),  # true LV centre (row, col), reference frame
        "aif_slice": aif_slice,
        "aif": curves["plasma"][aif_slice].tolist(),
        "aif_blood": curves["lv"][aif_slice].tolist(),
        "hematocrit": p.hematocrit,
        "tissue_model": (
            "Fermi residue R(t) = Fp (1 + exp(-k tau0)) / (1 + exp(k (t - tau0))), k = "
            f"{p.fermi_k_per_s:.3f} 1/s, tau0 = {p.fermi_tau0_s:.2f} s"
            if p.tissue_model == "fermi"
            else "two-compartment exchange (2CXM) with PS, vp, ve from parameters"
        )
        + "; plasma flow Fp = MBF * 1.05 / 60 * (1 - hematocrit) 1/s; input = plasma AIF "
        "delayed by tissue_delay_s; papillary muscles perfused as the segment they stand in",
        "signal_model": {
            "description": (
                "S = gain * coil * PD * (1 - exp(-TS * (1/T1 + r1 * C))) per tissue, "
                "C in mmol/L (linear model: PD * TS * (1/T1 + r1 * C)); proton-density "
                "frames S = gain * coil * PD * pd_level; voxel signal = sum of tissue "
                "fractions x signals; complex Gaussian noise (SD noise_sd per channel, "
                "stored units, times a g-factor map of 1 .. 1 + g_factor) before k-space "
                "truncation along the phase axis; magnitude stored"
            ) + (_SCANNER_READOUT if p.readout == "scanner" else ""),
            "model": p.signal_model,
            "readout": p.readout,
            "saturation_time_s": p.saturation_time_s,
            "relaxivity_per_mm_s": p.relaxivity_per_mm_s,
            "t1_s": p.t1_s,
            "proton_density": p.proton_density,
            "pd_level": signal["pd_level"],
            "n_pd_frames": p.n_pd_frames,
            "gain": signal["gain"],
            "noise_sd": signal["noise_sd"] * signal["gain"],
        },
        "labels": "0 background, 1 LV blood pool (papillary muscles included), "
        "2 LV myocardium, 3 RV blood pool",
        "motion": "frame t shows the reference frame shifted by motion[s, t] (row, col) px",
        "parameters": dataclasses.asdict(p),
    }
    return _jsonable({
        "image_orientation_patient": orientation_cosines,
        "image_position_patient": positions,
        "truth": truth,
    })
