"""The flow step: signal to concentration, the AIF, and the pixel-wise MBF map.

Everything here works in each slice's reference-frame geometry: a pixel
``p`` of the reference frame is read in frame ``t`` at ``p + motion[s, t]``
(bilinear), so the curves are motion-corrected without resampling the image.

Signal to concentration (saturation recovery, ``S = M (1 - exp(-TS R1))``):
``M`` comes from the pre-contrast baseline ``S0`` and an assumed native T1
(``S0 = M (1 - exp(-TS / T1))``), then ``R1 = -ln(1 - S / M) / TS`` and
``C = (R1 - 1 / T1) / r1``. Without a known saturation time the linear model
``C = (S / S0 - 1) / (T1 r1)`` is used. The relaxivity ``r1`` scales AIF and
tissue alike, so it cancels from the flow. Proton-density frames are left out.

The AIF comes, in order of preference, from a manual ROI (``aif_mask`` with
the ``aif_roi`` attribute "manual"), the separate AIF image series of a
dual-sequence acquisition, or automatically from a robust core of the LV
blood pool on the slice with the largest core. The blood AIF is converted to
plasma with the hematocrit inside :func:`~napari_perfroi.perfusion.fermi_flow`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import ndimage

from .aif_saturation import SaturationResult, check_and_correct
from .errors import InputError
from .motion import proton_density_frames
from .perfusion import MODEL_NAME as FERMI_NAME
from .perfusion import fermi_flow
from .segment.postprocess import largest_component
from .semiquant import FOOT_FRACTION, SemiQuantitative, foot_and_peak, semiquantitative_indices
from .study import (LV_BLOOD, MYOCARDIUM, SEMIQUANTITATIVE_MAPS, SLICE_LEVELS,
                    TWO_COMPARTMENT_MAPS)
from .two_compartment import MODEL_NAME as TWO_COMPARTMENT_NAME
from .two_compartment import two_compartment_flow

T1_BLOOD_S = 1.65  # native blood T1 at 1.5 T
T1_MYOCARDIUM_S = 1.05  # native myocardial T1 at 1.5 T
RELAXIVITY_PER_MM_S = 4.5  # gadolinium r1 at 1.5 T; cancels from the flow
AIF_CORE_MM = 3.0  # AIF pixels lie at least this far inside the LV blood pool
AIF_BRIGHTEST_FRACTION = 0.5  # of the core, by peak enhancement (drops papillary muscles)
MIN_BASELINE_FRAMES = 2
# The tissue models a run can choose: option value -> the name reports give it.
FLOW_MODELS = {"fermi": FERMI_NAME, "2cxm": TWO_COMPARTMENT_NAME}


@dataclass(frozen=True)
class FlowSettings:
    """Parameters of the flow step (recorded with it)."""

    hematocrit: float
    t1_blood_s: float = T1_BLOOD_S
    t1_myocardium_s: float = T1_MYOCARDIUM_S
    relaxivity_per_mm_s: float = RELAXIVITY_PER_MM_S
    flow: str = "blood"
    model: str = "fermi"  # a key of FLOW_MODELS
    dose_ratio: float | None = None  # dual bolus: main dose over pre-bolus dose


@dataclass
class Aif:
    """The arterial input: blood concentration at its own frame times."""

    blood_mmol: np.ndarray  # (T,) blood concentration, baseline 0
    times_s: np.ndarray  # (T,)
    source: str  # "manual", "aif series" or "auto"
    slice: int
    mask: np.ndarray  # (Y, X) bool, the image pixels of slice `slice` it came from
    foot_s: float
    peak_s: float
    # What was done to the measured curve: the saturation check (None for a dual-bolus AIF),
    # the curve before any correction, and how it was built.
    saturation: SaturationResult | None = None
    measured_blood_mmol: np.ndarray | None = None
    construction: str = "measured"

    @property
    def absolute(self) -> bool:
        """Whether absolute flow can be computed with this AIF."""
        return self.saturation is None or self.saturation.trusted


@dataclass
class AifPixels:
    """The signal of the pixels an AIF is taken from, before conversion."""

    curves: np.ndarray  # (N, T) motion-corrected signal
    times_s: np.ndarray  # (T,)
    keep: np.ndarray  # (T,) bool, False on proton-density frames
    saturation_time_s: float | None
    source: str
    slice: int
    mask: np.ndarray  # (Y, X) bool


@dataclass
class SliceSeries:
    """One slice's raw frames with what every curve read from it shares."""

    frames: np.ndarray  # (T, Y, X)
    times_s: np.ndarray  # (T,)
    keep: np.ndarray  # (T,) bool, False on proton-density frames
    saturation_time_s: float | None


def slice_series(study, images: np.ndarray, k: int) -> SliceSeries:
    """Slice k of ``images`` (:func:`read_images`) with its frame times and saturation time."""
    return SliceSeries(images[k], study.frame_times_s[k], ~proton_density_frames(images[k]),
                       study.attrs.get("saturation_time_s"))


# ----------------------------------------------------------------------------- conversion
def signal_to_concentration(signal, baseline, t1_s: float, saturation_time_s: float | None,
                            relaxivity_per_mm_s: float = RELAXIVITY_PER_MM_S) -> np.ndarray:
    """Concentration [mmol/L] from signal ``(..., T)`` and its pre-contrast ``baseline (...)``."""
    signal = np.asarray(signal, dtype=float)
    baseline = np.asarray(baseline, dtype=float)[..., None]
    r10 = 1.0 / t1_s
    with np.errstate(divide="ignore", invalid="ignore"):
        if saturation_time_s is None:
            r1 = r10 * signal / baseline
        else:
            ts = saturation_time_s
            relative = signal / baseline * (1.0 - np.exp(-ts * r10))
            # Beyond full recovery the signal is noise; cap just below it.
            r1 = -np.log1p(-np.clip(relative, None, 1.0 - 1e-3)) / ts
    return np.where(baseline > 0, (r1 - r10) / relaxivity_per_mm_s, np.nan)


def bolus_foot(curve: np.ndarray, keep: np.ndarray) -> tuple[int, int]:
    """(foot, peak) frame indices of a bolus ``curve`` over the frames ``keep``.

    The foot is the last kept frame before the peak still below
    ``FOOT_FRACTION`` of the rise from the first kept frames to the peak
    (:func:`~napari_perfroi.semiquant.foot_and_peak`, the rule of every bolus here).
    """
    frames = np.flatnonzero(keep)
    foot, peak = foot_and_peak(curve[frames])
    return int(frames[foot]), int(frames[peak])


def baseline_frames(times_s: np.ndarray, keep: np.ndarray, foot_s: float) -> np.ndarray:
    """Kept frames before the bolus foot (at least the first two kept frames)."""
    before = keep & (times_s < foot_s)
    if before.sum() < MIN_BASELINE_FRAMES:
        before = keep & (np.cumsum(keep) <= MIN_BASELINE_FRAMES)
    return before


# ----------------------------------------------------------------------------- sampling
def sample_moved(frames: np.ndarray, rows, cols, shifts, scale: float = 1.0,
                 origin=(0.0, 0.0)) -> np.ndarray:
    """Bilinear values (N, T) of reference pixels (rows, cols) in each frame (T, Y, X).

    A reference pixel p lies at ``p + shifts[t]`` in frame t, in image pixels; for
    another pixel grid (the AIF series), ``scale`` is image pixels per grid pixel
    and ``origin`` the grid pixel (0, 0) in image pixels.
    """
    n_t, n_y, n_x = frames.shape
    r = (np.asarray(rows, float)[:, None] + shifts[None, :, 0] - origin[0]) / scale
    c = (np.asarray(cols, float)[:, None] + shifts[None, :, 1] - origin[1]) / scale
    r = np.clip(r, 0.0, n_y - 1.0)
    c = np.clip(c, 0.0, n_x - 1.0)
    r0 = np.minimum(np.floor(r).astype(int), n_y - 2) if n_y > 1 else np.zeros(r.shape, int)
    c0 = np.minimum(np.floor(c).astype(int), n_x - 2) if n_x > 1 else np.zeros(c.shape, int)
    wr = r - r0
    wc = c - c0
    t = np.arange(n_t)[None, :]
    r1 = np.minimum(r0 + 1, n_y - 1)
    c1 = np.minimum(c0 + 1, n_x - 1)
    return ((1 - wr) * ((1 - wc) * frames[t, r0, c0] + wc * frames[t, r0, c1])
            + wr * ((1 - wc) * frames[t, r1, c0] + wc * frames[t, r1, c1]))


# ----------------------------------------------------------------------------- AIF
def lv_core(labels: np.ndarray, spacing_mm) -> np.ndarray:
    """LV blood-pool pixels at least ``AIF_CORE_MM`` from anything else (Y, X bool)."""
    blood = labels == LV_BLOOD
    if not blood.any():
        return blood
    distance = ndimage.distance_transform_edt(blood, sampling=spacing_mm)
    return largest_component(distance >= min(AIF_CORE_MM, 0.6 * distance.max()))


def _brightest(curves: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Pixels whose peak enhancement is in the top ``AIF_BRIGHTEST_FRACTION``."""
    kept = curves[:, keep]
    peak = kept.max(axis=1) - np.median(kept[:, :3], axis=1)
    return peak >= np.quantile(peak, 1.0 - AIF_BRIGHTEST_FRACTION)


def aif_from_pixels(pixels: AifPixels, settings: FlowSettings) -> Aif:
    """The AIF (blood concentration) of ``pixels`` with the native blood T1 of ``settings``:
    checked for saturation and desaturated where that can be trusted
    (:mod:`~napari_perfroi.aif_saturation`), or built from the pre-bolus of a dual-bolus
    acquisition when ``settings.dose_ratio`` is given."""
    curves, times, keep = pixels.curves, pixels.times_s, pixels.keep
    mean_curve = curves.mean(axis=0)
    if settings.dose_ratio is not None:
        return _dual_bolus_aif(pixels, mean_curve, settings)
    foot, peak = bolus_foot(mean_curve, keep)
    base = baseline_frames(times, keep, times[foot])
    signal, baseline = noise_corrected(curves, base)
    signal, baseline = signal.mean(axis=0), float(baseline.mean())

    def convert(saturation_time_s):
        return signal_to_concentration(signal, baseline, settings.t1_blood_s, saturation_time_s,
                                       settings.relaxivity_per_mm_s)

    blood = np.where(keep, convert(pixels.saturation_time_s), np.nan)
    kept = np.flatnonzero(keep)
    saturation = check_and_correct(
        times[kept], blood[kept], int(np.searchsorted(kept, foot)),
        lambda ts: convert(ts)[kept], pixels.saturation_time_s,
        _peak_recovery(signal[kept].max(), baseline, settings.t1_blood_s,
                       pixels.saturation_time_s))
    measured = blood
    if saturation.corrected is not None:
        blood = blood.copy()
        blood[kept] = saturation.corrected
    return Aif(blood, times, pixels.source, pixels.slice, pixels.mask, float(times[foot]),
               float(times[peak]), saturation, measured)


def _peak_recovery(peak_signal: float, baseline: float, t1_s: float,
                   saturation_time_s: float | None) -> float | None:
    """Fraction of the fully recovered signal reached at the peak (saturation recovery)."""
    if saturation_time_s is None or baseline <= 0:
        return None
    return float(peak_signal / baseline * (1.0 - np.exp(-saturation_time_s / t1_s)))


def _dual_bolus_aif(pixels: AifPixels, mean_curve: np.ndarray, settings: FlowSettings) -> Aif:
    """The AIF of a dual-bolus series: the dilute pre-bolus, unsaturated, as measured up to
    the main bolus; then the pre-bolus scaled by the dose ratio and moved to the main
    bolus's foot, on top of the pre-bolus's last level, for as long as the pre-bolus was
    seen alone; then the measured curve, dilute again by then."""
    times, keep = pixels.times_s, pixels.keep
    boluses = split_boluses(mean_curve, keep)
    if boluses is None:
        raise InputError("a dose ratio was given but the AIF curve does not show two boluses "
                         "(a dilute pre-bolus, then the main bolus)")
    pre_foot, main_foot = boluses
    base = baseline_frames(times, keep, times[pre_foot])
    signal, baseline = noise_corrected(pixels.curves, base)
    measured = signal_to_concentration(signal.mean(axis=0), baseline.mean(), settings.t1_blood_s,
                                       pixels.saturation_time_s, settings.relaxivity_per_mm_s)
    measured = np.where(keep, measured, np.nan)
    window = keep & (np.arange(times.size) < main_foot)
    pre_times, pre_blood = times[window], measured[window]
    tail = float(np.mean(pre_blood[-3:]))  # the pre-bolus's level under the main bolus
    shift = times[main_foot] - times[pre_foot]
    scaled = settings.dose_ratio * np.interp(times - shift, pre_times, pre_blood, left=0.0)
    # Past the scaled pre-bolus's window the main bolus is dilute enough to be read as is.
    during_main = (times >= times[main_foot]) & (times - shift <= pre_times[-1])
    blood = np.where(during_main, tail + scaled, measured)
    blood = np.where(keep, blood, np.nan)
    peak = int(np.nanargmax(blood))
    # The tissue baseline lies before the first (pre-)bolus.
    return Aif(blood, times, pixels.source, pixels.slice, pixels.mask, float(times[pre_foot]),
               float(times[peak]), None, measured,
               f"dual bolus: pre-bolus x {settings.dose_ratio:.3g}")


def first_foot(curve: np.ndarray, keep: np.ndarray, settings: FlowSettings) -> int:
    """Frame index of the first contrast arrival: the pre-bolus's foot in a dual-bolus study."""
    if settings.dose_ratio is not None:
        boluses = split_boluses(curve, keep)
        if boluses is not None:
            return boluses[0]
    return bolus_foot(curve, keep)[0]


def split_boluses(curve: np.ndarray, keep: np.ndarray) -> tuple[int, int] | None:
    """(pre-bolus foot, main-bolus foot) frame indices of a dual-bolus blood curve, or None.

    The main bolus peaks highest; its foot is the last frame before its half rise at most
    ``FOOT_FRACTION`` of its rise above the valley between the boluses. The pre-bolus is
    the part before that foot, and must rise clearly above the baseline noise.
    """
    frames = np.flatnonzero(keep)
    values = curve[frames]
    main_peak = int(np.argmax(values))
    if main_peak < 6:
        return None
    # From the main bolus's half rise (above anything the dilute pre-bolus reaches), walk
    # back while the curve (3-frame mean, against noise) still falls: the valley before it.
    smooth = np.convolve(np.pad(values, 1, mode="edge"), np.ones(3) / 3.0, mode="valid")
    start = float(np.median(values[:3]))
    valley = int(np.argmax(values > start + 0.5 * (values[main_peak] - start)))
    while valley > 0 and smooth[valley - 1] < smooth[valley]:
        valley -= 1
    rise = values[main_peak] - values[valley]
    below = np.flatnonzero(values[valley : main_peak + 1] <= values[valley] + FOOT_FRACTION * rise)
    main_foot = valley + int(below[-1])
    pre = values[:main_foot]
    if pre.size < 6:
        return None
    noise = float(np.std(np.diff(pre[:4]))) if pre.size >= 4 else 0.0
    if pre.max() - start <= max(5.0 * noise, 0.02 * rise):
        return None
    pre_foot, _ = bolus_foot(np.concatenate([pre, np.full(values.size - pre.size, pre[-1])]),
                             np.ones(values.size, bool))
    return int(frames[pre_foot]), int(frames[main_foot])


def find_aif_pixels(study, images, reference_labels: np.ndarray,
                    motion: np.ndarray) -> AifPixels:
    """The pixels the study's AIF comes from (see the module docstring for the order)."""
    attrs = study.attrs
    spacing = study.pixel_spacing_mm
    if study.has("aif_mask") and attrs.get("aif_roi") == "manual":
        masks = study.read("aif_mask").astype(bool)
        drawn = [k for k in range(masks.shape[0]) if masks[k].any()]
        if not drawn:
            raise InputError(f"{study.path}: the manual AIF ROI is empty")
        k = drawn[0]
        rows, cols = np.nonzero(masks[k])
        series = slice_series(study, images, k)
        curves = sample_moved(series.frames, rows, cols, motion[k])
        return AifPixels(curves, series.times_s, series.keep, series.saturation_time_s,
                         "manual", k, masks[k])

    cores = [lv_core(reference_labels[k], spacing) for k in range(reference_labels.shape[0])]
    if study.has("aif_image"):
        series = attrs["aif_series"]
        k = int(series["slice"])
        if cores[k].any():
            return _aif_series_pixels(study, images, series, cores[k], motion[k])
    sizes = [int(c.sum()) for c in cores]
    k = int(np.argmax(sizes))
    if sizes[k] == 0:
        raise InputError(f"{study.path}: no LV blood pool in the labels to take the AIF from")
    rows, cols = np.nonzero(cores[k])
    series = slice_series(study, images, k)
    curves = sample_moved(series.frames, rows, cols, motion[k])
    bright = _brightest(curves, series.keep)
    mask = np.zeros_like(cores[k])
    mask[rows[bright], cols[bright]] = True
    return AifPixels(curves[bright], series.times_s, series.keep, series.saturation_time_s,
                     "auto", k, mask)


def _aif_series_pixels(study, images, series, core, shifts) -> AifPixels:
    """AIF from the separate AIF series: its pixels that lie wholly in the LV core."""
    frames = study.read("aif_image").astype(float)
    image_spacing = np.asarray(study.pixel_spacing_mm, dtype=float)
    scale = np.asarray(series["pixel_spacing_mm"], dtype=float) / image_spacing
    origin = np.asarray(series["origin_px"], dtype=float)
    # Fraction of each AIF pixel's footprint inside the core, sampled on the image grid.
    n_y, n_x = core.shape
    rows, cols = np.mgrid[0:n_y, 0:n_x]
    grid_r = np.floor((rows - origin[0]) / scale[0] + 0.5).astype(int)
    grid_c = np.floor((cols - origin[1]) / scale[1] + 0.5).astype(int)
    inside = (grid_r >= 0) & (grid_r < frames.shape[1]) & (grid_c >= 0) & (grid_c < frames.shape[2])
    index = grid_r[inside] * frames.shape[2] + grid_c[inside]
    footprint = np.bincount(index, minlength=frames.shape[1] * frames.shape[2])
    in_core = np.bincount(index, weights=core[inside], minlength=footprint.size)
    whole = (footprint > 0) & (in_core >= footprint)
    if not whole.any():  # a small cavity: the AIF pixel most inside it
        whole = in_core == in_core.max()
    aif_rows, aif_cols = np.divmod(np.flatnonzero(whole), frames.shape[2])
    # AIF pixel centres in image pixels, moved with the slice's motion.
    centre_r = origin[0] + aif_rows * scale[0]
    centre_c = origin[1] + aif_cols * scale[1]
    curves = sample_moved(frames, centre_r, centre_c, shifts, scale=float(scale[0]),
                          origin=(origin[0], origin[1]))
    # Same sequence, same proton-density frames; they are hard to see in the dim AIF series.
    keep = ~proton_density_frames(images[int(series["slice"])])
    mask = np.isin(grid_r * frames.shape[2] + grid_c, np.flatnonzero(whole)) & inside & core
    times = np.asarray(series["frame_times_s"], dtype=float)
    return AifPixels(curves, times, keep, series.get("saturation_time_s"), "aif series",
                     int(series["slice"]), mask)


def blood_t1_from_pd_frames(study, images, labels, motion, settings: FlowSettings,
                            foot_s: float) -> float | None:
    """Native blood T1 [s] relative to the assumed myocardial T1, from proton-density frames.

    Per pixel, q = pre-contrast saturation-recovery signal / proton-density signal
    = (1 - exp(-TS R1)) / c, with c the same for every tissue of a slice: proton
    density and coil sensitivity cancel. The ratio of q in the LV blood core and
    in the myocardium then gives the blood T1 from the myocardial one. None when
    no slice has proton-density frames.
    """
    ts = study.attrs.get("saturation_time_s")
    r10_myocardium = 1.0 / settings.t1_myocardium_s
    estimates = []
    for k in range(labels.shape[0]):
        frames = images[k]
        pd = proton_density_frames(frames)
        core = lv_core(labels[k], study.pixel_spacing_mm)
        wall = ndimage.binary_erosion(labels[k] == MYOCARDIUM)
        if not pd.any() or core.sum() < 3 or wall.sum() < 3:
            continue
        base = baseline_frames(study.frame_times_s[k], ~pd, foot_s)
        q = {}
        for name, mask in (("blood", core), ("myocardium", wall)):
            rows, cols = np.nonzero(mask)
            curves = sample_moved(frames, rows, cols, motion[k])
            q[name] = float(np.median(curves[:, base].mean(axis=1) / curves[:, pd].mean(axis=1)))
        if ts is None:  # linear: q = TS R1 / c
            estimates.append(1.0 / (r10_myocardium * q["blood"] / q["myocardium"]))
            continue
        c = (1.0 - np.exp(-ts * r10_myocardium)) / q["myocardium"]
        recovered = c * q["blood"]
        if 0.0 < recovered < 1.0:
            estimates.append(ts / -np.log1p(-recovered))
    return float(np.median(estimates)) if estimates else None


def noise_corrected(magnitude: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signal curves (N, T) and their baselines (N,) with the Rician noise floor removed.

    Magnitude images add noise power: E[M^2] = S^2 + 2 sigma^2. In dark
    myocardium before contrast this inflates the baseline more than the
    enhanced signal and so shrinks the enhancement. sigma^2 is half the mean
    square difference of successive baseline frames (insensitive to slow
    changes), the median over the pixels (insensitive to pixels at edges).
    """
    if base.sum() < 3:
        return magnitude, magnitude[:, base].mean(axis=1)
    steps = np.diff(magnitude[:, base], axis=1)
    noise_power = 2.0 * float(np.median(np.mean(steps**2, axis=1) / 2.0))
    power = magnitude**2 - noise_power
    uncorrected = magnitude[:, base].mean(axis=1)
    # A pixel's baseline is never taken below half its measured value: where the
    # signal is buried in noise the correction would only amplify that noise.
    baseline_power = np.maximum(np.mean(magnitude[:, base] ** 2, axis=1) - noise_power,
                                (0.5 * uncorrected) ** 2)
    return np.sqrt(np.clip(power, 0.0, None)), np.sqrt(baseline_power)


# ----------------------------------------------------------------------------- tissue
def tissue_curves(series: SliceSeries, rows, cols, motion_k: np.ndarray, aif: Aif,
                  settings: FlowSettings):
    """Concentration curves (N, T') of reference pixels (rows, cols) of a slice, the kept
    frames' times (T') and the AIF resampled to them (T')."""
    times, keep = series.times_s, series.keep
    base = baseline_frames(times, keep, aif.foot_s)
    signal, baseline = noise_corrected(sample_moved(series.frames, rows, cols, motion_k), base)
    conc = signal_to_concentration(
        signal, baseline, settings.t1_myocardium_s, series.saturation_time_s,
        settings.relaxivity_per_mm_s,
    )
    valid = np.isfinite(aif.blood_mmol)
    aif_here = np.interp(times[keep], aif.times_s[valid], aif.blood_mmol[valid])
    return conc[:, keep], times[keep], aif_here


def fit_curves(curves, times, aif_here, settings: FlowSettings):
    """The fit (FlowFit) of tissue curves from :func:`tissue_curves` with the settings' model."""
    fit = two_compartment_flow if settings.model == "2cxm" else fermi_flow
    return fit(curves, aif_here, times, hematocrit=settings.hematocrit, flow=settings.flow)


def slice_indices(series: SliceSeries, rows, cols, lv_rows, lv_cols, motion_k: np.ndarray,
                  aif: Aif) -> SemiQuantitative | None:
    """Semi-quantitative indices of the signal curves of reference pixels (rows, cols) of a
    slice against its own LV blood pool (pixels lv_rows, lv_cols); None without LV pixels.

    ``rows``/``cols`` may be (N,) pixels or a list of pixel groups whose per-frame median
    curves are used (AHA segments)."""
    if len(lv_rows) == 0:
        return None
    keep = series.keep
    base = baseline_frames(series.times_s, keep, aif.foot_s)[keep]
    lv = sample_moved(series.frames, lv_rows, lv_cols, motion_k).mean(axis=0)[keep]
    if isinstance(rows, list):
        tissue = np.stack([np.median(sample_moved(series.frames, r, c, motion_k), axis=0)
                           for r, c in zip(rows, cols)])
    else:
        tissue = sample_moved(series.frames, rows, cols, motion_k)
    return semiquantitative_indices(tissue[:, keep], lv, series.times_s[keep], base)


# ----------------------------------------------------------------------------- the step
def settings_of(study, **options) -> FlowSettings:
    hematocrit = options.get("hematocrit")
    model = options.get("flow_model") or "fermi"
    if model not in FLOW_MODELS:
        raise InputError(f"unknown flow model {model!r}; available: {', '.join(FLOW_MODELS)}")
    dose_ratio = options.get("dose_ratio")
    if dose_ratio is not None and not 1.0 < float(dose_ratio) < 1000.0:
        raise InputError(f"the dual-bolus dose ratio (main over pre-bolus dose) must be above 1, "
                         f"got {dose_ratio}")
    return FlowSettings(
        hematocrit=float(study.attrs["hematocrit"] if hematocrit is None else hematocrit),
        model=model,
        dose_ratio=None if dose_ratio is None else float(dose_ratio),
        **{key: float(options[key]) for key in ("t1_blood_s", "t1_myocardium_s") if options.get(key)},
    )


def read_images(study) -> np.ndarray:
    """The whole raw image as float32 (S, T, Y, X)."""
    return study.read("image").astype(np.float32)


def reference_labels(study) -> np.ndarray:
    """Labels of each slice's reference frame (S, Y, X)."""
    if not study.has("labels"):
        raise InputError(f"{study.path}: no labels yet; run the segment step first")
    labels = study.zarr_array("labels")
    reference = study.attrs["reference_frame"]
    return np.stack([labels[k, reference[k]] for k in range(study.shape[0])])


def compute_flow(study, progress: Callable[[int, int], None] | None = None, **options) -> str:
    """The flow step: write ``mbf``, ``mbf_fit_error`` (and ``ps``, ``vp``, ``ve`` with the
    two-compartment model), ``aif_mask`` and the AIF part of the ``report`` attribute.
    Options: ``flow_model`` ("fermi" or "2cxm"), ``hematocrit``, ``t1_blood_s``,
    ``t1_myocardium_s``, ``dose_ratio`` (a dual-bolus series: main over pre-bolus dose)."""
    from . import __version__

    settings = settings_of(study, **options)
    if not 0.0 <= settings.hematocrit < 1.0:
        raise InputError(f"hematocrit must be in [0, 1), got {settings.hematocrit}")
    labels = reference_labels(study)
    spacing = study.pixel_spacing_mm
    motion = study.read("motion").astype(float)
    images = read_images(study)
    aif_pixels = find_aif_pixels(study, images, labels, motion)
    blood_t1_source = "given" if options.get("t1_blood_s") else "assumed"
    if not options.get("t1_blood_s"):
        foot = first_foot(aif_pixels.curves.mean(axis=0), aif_pixels.keep, settings)
        measured = blood_t1_from_pd_frames(study, images, labels, motion, settings,
                                           float(aif_pixels.times_s[foot]))
        if measured is not None:
            settings = replace(settings, t1_blood_s=measured)
            blood_t1_source = "from proton-density frames"
    try:
        aif = aif_from_pixels(aif_pixels, settings)
    except InputError as exc:  # name the study
        raise InputError(f"{study.path}: {exc}") from None
    n_s, _, n_y, n_x = study.shape
    mbf = np.full((n_s, n_y, n_x), np.nan, dtype=np.float32)
    fit_error = np.full_like(mbf, np.nan)
    extra = ({name: np.full_like(mbf, np.nan) for name in TWO_COMPARTMENT_MAPS}
             if settings.model == "2cxm" else {})
    indices = {name: np.full_like(mbf, np.nan) for name in SEMIQUANTITATIVE_MAPS}
    for k in range(n_s):
        rows, cols = np.nonzero(labels[k] == MYOCARDIUM)
        if rows.size:
            series = slice_series(study, images, k)
            fit = fit_curves(*tissue_curves(series, rows, cols, motion[k], aif, settings),
                             settings)
            mbf[k, rows, cols] = fit.mbf
            fit_error[k, rows, cols] = fit.fit_error
            for name, values in extra.items():
                values[k, rows, cols] = getattr(fit, name)
            semi = slice_indices(series, rows, cols, *np.nonzero(lv_core(labels[k], spacing)),
                                 motion[k], aif)
            for name, values in indices.items():
                if semi is not None:
                    values[k, rows, cols] = getattr(semi, name)
        if progress is not None:
            progress(k + 1, n_s)
    aif_mask = np.zeros((n_s, n_y, n_x), dtype=np.uint8)
    aif_mask[aif.slice] = aif.mask
    study.write("mbf", mbf)
    study.write("mbf_fit_error", fit_error)
    for name in TWO_COMPARTMENT_MAPS:  # a Fermi run leaves no maps of an earlier 2CXM run
        if name in extra:
            study.write(name, extra[name])
        else:
            study.remove(name)
    for name, values in indices.items():
        study.write(name, values)
    if aif.source != "manual":
        study.write("aif_mask", aif_mask)
        study.update_attrs(aif_roi="auto")
    plasma = aif.blood_mmol / (1.0 - settings.hematocrit)
    valid = np.isfinite(plasma)
    measured = aif.measured_blood_mmol / (1.0 - settings.hematocrit)
    # A new report: the aha step's part belonged to the previous map.
    report = dict(
        model=FLOW_MODELS[settings.model],
        flow_model=settings.model,
        flow=settings.flow,
        hematocrit=settings.hematocrit,
        units="mL/min/g",
        aif=[round(float(v), 5) for v in plasma[valid]],
        aif_times_s=[round(float(v), 4) for v in aif.times_s[valid]],
        aif_source=aif.source,
        aif_slice=aif.slice,
        aif_foot_s=aif.foot_s,
        aif_peak_s=aif.peak_s,
        aif_peak_mmol=float(np.nanmax(plasma)),
        aif_measured=[round(float(v), 5) for v in measured[valid]],
        aif_construction=aif.construction,
        aif_saturation=None if aif.saturation is None else aif.saturation.as_report(),
        absolute_mbf=aif.absolute,
        conversion=_conversion_text(study, aif, settings, blood_t1_source),
    )
    study.update_attrs(report=report)
    study.record_step("flow", asdict(settings) | {"aif_source": aif.source}, __version__)
    pixels = int(np.isfinite(mbf).sum())
    aif_text = (f"AIF: {aif.source}, slice {aif.slice + 1}, plasma peak "
                f"{report['aif_peak_mmol']:.1f} mmol/L")
    if aif.construction != "measured":
        aif_text += f" ({aif.construction})"
    if aif.saturation is not None and aif.saturation.saturated:
        aif_text += f"; {aif.saturation.verdict}"
    if not aif.absolute:
        return (f"no absolute MBF for {pixels} myocardium pixels: {aif_text}")
    return (f"MBF map of {pixels} myocardium pixels, median {np.nanmedian(mbf):.2f} mL/min/g "
            f"({settings.model}, {settings.flow} flow, hematocrit {settings.hematocrit:.2f}); "
            + aif_text)


def _conversion_text(study, aif: Aif, settings: FlowSettings, blood_t1_source: str) -> str:
    def model(ts):
        return (f"saturation recovery, TS {ts * 1000:.1f} ms" if ts is not None
                else "linear (saturation time unknown)")

    aif_ts = (study.attrs["aif_series"].get("saturation_time_s") if aif.source == "aif series"
              else study.attrs.get("saturation_time_s"))
    return (f"tissue: {model(study.attrs.get('saturation_time_s'))}, native T1 "
            f"{settings.t1_myocardium_s:.2f} s; AIF: {model(aif_ts)}, native blood T1 "
            f"{settings.t1_blood_s:.2f} s ({blood_t1_source}); baseline = frames before the AIF foot, "
            f"proton-density frames left out")


def segment_fits(study, images, motion: np.ndarray, aha_map: np.ndarray, labels: np.ndarray,
                 aif: Aif, settings: FlowSettings) -> list[dict | None]:
    """Per AHA segment 1-16: the fit of the segment's median curve (None if not imaged), with
    PS, vp and ve for the two-compartment model.

    The segment's curve is the per-frame median over its myocardium pixels that
    do not touch the blood pools or the outside (one pixel in), or over all of
    them when the wall is too thin.
    """
    results: list[dict | None] = [None] * 16
    for k in range(aha_map.shape[0]):
        present = [int(n) for n in np.unique(aha_map[k]) if n]
        if not present:
            continue
        series = slice_series(study, images, k)
        inner = ndimage.binary_erosion(labels[k] == MYOCARDIUM)
        medians, pixels = [], []
        for n in present:
            in_segment = aha_map[k] == n
            chosen = in_segment & inner if (in_segment & inner).sum() >= 3 else in_segment
            rows, cols = np.nonzero(chosen)
            pixels.append((rows, cols))
            curves, times, aif_here = tissue_curves(series, rows, cols, motion[k], aif, settings)
            # The median resists pixels mixed with blood where the labels are a pixel off.
            medians.append(np.nanmedian(curves, axis=0))
        fit = fit_curves(np.stack(medians), times, aif_here, settings)
        semi = slice_indices(series, [r for r, _ in pixels], [c for _, c in pixels],
                             *np.nonzero(lv_core(labels[k], study.pixel_spacing_mm)), motion[k],
                             aif)
        for i, n in enumerate(present):
            results[n - 1] = {
                "slice": k,
                "mbf": float(fit.mbf[i]),
                "times_s": [round(float(v), 4) for v in times],
                "tissue": [round(float(v), 5) for v in medians[i]],
                "fitted": [round(float(v), 5) for v in fit.fitted[i]],
                "fit_error": float(fit.fit_error[i]),
            }
            for name in TWO_COMPARTMENT_MAPS:
                if getattr(fit, name) is not None:  # a two-compartment fit
                    results[n - 1][name] = round(float(getattr(fit, name)[i]), 4)
            results[n - 1]["semiquant"] = None if semi is None else {
                name: _finite_or_none(getattr(semi, name)[i]) for name in SEMIQUANTITATIVE_MAPS}
    return results


def _aif_flags(report: dict, aif: Aif, has_aif_series: bool) -> list[str]:
    """QA lines about the AIF: its saturation check, or the risk it could not see."""
    saturation = report.get("aif_saturation") or {}
    if saturation.get("saturated"):
        return [saturation["verdict"]]
    if aif.source == "auto" and not has_aif_series and saturation:
        return ["AIF from the LV blood pool of the perfusion images: no saturation found, but "
                "a mild one does not show in the curve's shape and would overestimate flow"]
    return []


def _finite_or_none(value) -> float | None:
    return round(float(value), 5) if np.isfinite(value) else None


def recorded_settings(study) -> FlowSettings:
    """The settings the flow step ran with (a measured blood T1 included)."""
    recorded = dict(study.attrs["steps"]["flow"]["parameters"])
    recorded.pop("aif_source", None)
    return FlowSettings(**recorded)


def recorded_aif(study, settings: FlowSettings) -> Aif:
    """The AIF the flow step used, from the report (blood = plasma x (1 - hematocrit))."""
    report = study.attrs["report"]
    k = int(report["aif_slice"])
    return Aif(np.asarray(report["aif"], dtype=float) * (1.0 - settings.hematocrit),
               np.asarray(report["aif_times_s"], dtype=float), report["aif_source"], k,
               study.zarr_array("aif_mask")[k].astype(bool), float(report["aif_foot_s"]),
               float(report["aif_peak_s"]))


# ----------------------------------------------------------------------------- the aha step
POOR_FIT_ERROR = 0.15  # relative residual above which a segment's fit is flagged
MIN_AFTER_AIF_PEAK_S = 10.0  # a shorter series has not seen the tissue curves' first pass


def compute_segments(study, progress: Callable[[int, int], None] | None = None, **options) -> str:
    """The aha step: RV insertion, AHA sectors (``aha``), per-segment flow from each
    segment's median curve with the flow step's AIF, map statistics, and the rest of
    the ``report`` attribute."""
    from . import __version__
    from .aha import lowest_territory, segment_geometry, segment_statistics, territory_means
    from .segment.infer import uncertainty_flags

    if not study.has("mbf") or "flow" not in study.attrs["steps"]:
        raise InputError(f"{study.path}: no flow map yet; run the flow step first")
    attrs = study.attrs
    settings = recorded_settings(study)
    labels = reference_labels(study)
    geometry = segment_geometry(labels, attrs["slice_levels"],
                                attrs.get("image_orientation_patient"), study.pixel_spacing_mm)
    images = read_images(study)
    motion = study.read("motion").astype(float)
    aif = recorded_aif(study, settings)
    fits = segment_fits(study, images, motion, geometry.aha, labels, aif, settings)
    if progress is not None:
        progress(1, 1)
    absolute = bool(attrs.get("report", {}).get("absolute_mbf", True))
    # Without a trustworthy AIF there is no absolute flow to report, only the indices.
    segment_mbf = [None if f is None or not absolute else round(f["mbf"], 4) for f in fits]
    imaged = [v for v in segment_mbf if v is not None]
    segment_semiquant = [None if f is None else f["semiquant"] for f in fits]
    relative_upslope = [None if s is None else s["relative_upslope"] for s in segment_semiquant]
    # The territories are ranked by flow, or by relative upslope when there is no flow.
    by_segment = dict(enumerate(segment_mbf if absolute else relative_upslope, start=1))
    segmented = attrs["steps"].get("segment", {}).get("parameters", {})
    qa = uncertainty_flags(segmented.get("uncertain_slices", [])) + list(geometry.messages)
    qa += _aif_flags(attrs.get("report", {}), aif, study.has("aif_image"))
    qa += [f"segment {n}: poor fit (relative residual {f['fit_error']:.2f})"
           for n, f in enumerate(fits, start=1) if f is not None and f["fit_error"] > POOR_FIT_ERROR]
    after_peak = float(np.max(study.frame_times_s)) - aif.peak_s
    if after_peak < MIN_AFTER_AIF_PEAK_S:
        qa.append(f"the series ends {after_peak:.0f} s after the AIF peak: too short to fit "
                  "the first pass, flow is unreliable")
    missing = [level for level in SLICE_LEVELS if level not in attrs["slice_levels"]]
    if missing:
        qa.append(f"missing slices: no {' or '.join(missing)} slice, those segments are not "
                  "imaged")
    report = attrs.get("report", {})
    report.update(
        segment_mbf=segment_mbf,
        segment_stats=segment_statistics(study.read("mbf"), geometry.aha),
        segment_curves=[None if f is None else {k: f[k] for k in
                        ("slice", "times_s", "tissue", "fitted", "fit_error",
                         *TWO_COMPARTMENT_MAPS) if k in f} for f in fits],
        global_mbf=round(float(np.mean(imaged)), 4) if imaged else None,
        rv_insertion_deg=[[round(float(a), 2) for a in pair] for pair in geometry.rv_insertion_deg],
        territory_mbf=territory_means(dict(enumerate(segment_mbf, start=1))),
        lowest_territory=lowest_territory(by_segment),
        segment_semiquant=segment_semiquant,
        qa=qa,
    )
    study.write("aha", geometry.aha)
    study.update_attrs(report=report)
    study.record_step("aha", {"poor_fit_error": POOR_FIT_ERROR}, __version__)
    worst = report["lowest_territory"]
    if not absolute:
        return (f"{sum(f is not None for f in fits)} segments, no absolute MBF (see QA)"
                + (f", lowest territory {worst.upper()} by relative upslope" if worst else "")
                + f"; {len(qa)} QA flag(s)")
    return (f"{len(imaged)} segments, global MBF {report['global_mbf']:.2f} mL/min/g"
            + (f", lowest territory {worst.upper()}" if worst else "")
            + (f"; {len(qa)} QA flag(s)" if qa else ""))
