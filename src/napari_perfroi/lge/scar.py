"""Scar on LGE images: thresholds, clean-up, per-segment extent and viability verdicts.

Every image argument is a short-axis stack (S, Y, X) in the scanner's units, with
zero at no signal (PSIR: the signed values); NaN pixels are never scar and never
enter a statistic. ``myocardium`` is the LV myocardium mask of the same shape; a
scar mask is bool, or labels 0 none, 1 scar, 2 MVO (MVO is scar). One slice goes
in as ``image[None]``.

Scar is found per slice, in the myocardium only, by one of two rules:

- n-SD (:func:`threshold_nsd`): brighter than the mean of remote (normal, nulled)
  myocardium plus ``n_sd`` of its standard deviations;
- FWHM (:func:`threshold_fwhm`): at least half the maximum of the hyperenhanced
  region.

:func:`clean_scar` then drops specks and counts dark microvascular obstruction
(MVO) cores as scar; :func:`segment_scar` gives each AHA segment its scar share and
transmurality, :func:`scar_class` its viability class, and :func:`territory_verdicts`
sets the scar beside the perfusion defect (:func:`perfusion_abnormal`) per coronary
territory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import ndimage

from ..aha import TERRITORIES, angle_deg
from ..report import has_absolute_mbf, relative_upslope_percent

SCAR_NONE, SCAR_NON_TRANSMURAL, SCAR_TRANSMURAL = "none", "<50 %", ">=50 %"
SCAR_CLASSES = (SCAR_NONE, SCAR_NON_TRANSMURAL, SCAR_TRANSMURAL)
NORMAL, ISCHAEMIA, INFARCT, PERI_INFARCT_ISCHAEMIA = (
    "normal", "ischaemia", "infarct", "infarct with peri-infarct ischaemia")
VERDICTS = (NORMAL, ISCHAEMIA, INFARCT, PERI_INFARCT_ISCHAEMIA)
# The verdict of a territory without perfusion, or without LGE, in all of its segments.
NOT_ASSESSED = "not assessed"

MIN_SCAR_PERCENT = 2.0  # a segment with less scar (% of its myocardium) has none
TRANSMURAL_FRACTION = 0.5  # transmurality from which a scar is ">=50 %" (viability unlikely)
MIN_SCAR_AREA_MM2 = 10.0  # smaller connected scar is a speck (noise, partial volume)
ISCHAEMIC_MBF = 1.5  # stress MBF (mL/min/g) below which a segment is abnormal
# Without absolute MBF a segment is abnormal when its relative upslope is below this
# fraction of the study's normal level: the median of the upper half of its segments.
ABNORMAL_UPSLOPE_FRACTION = 0.75
MIN_REFERENCE_SEGMENTS = 4  # fewer imaged segments set no normal level

MIN_REMOTE_PIXELS = 10  # fewer remote pixels on a slice give no statistics of their own
REMOTE_WINDOW_DEG = 60.0  # angular window of the automatic remote region (one AHA sector)
_REMOTE_WINDOW_STEP_DEG = 15.0
# The FWHM rule's hyperenhanced region: the largest connected region this many remote
# SDs above the remote mean, of at least _MIN_CORE_PIXELS; its robust maximum is its
# _ROBUST_MAX_PERCENTILE (one hot pixel does not set the threshold).
FWHM_CORE_SD = 5.0
_MIN_CORE_PIXELS = 5
_ROBUST_MAX_PERCENTILE = 95.0
# Transmurality rays: every _RAY_STEP_DEG from the LV centre, sampled every _RAY_SAMPLE_PX.
_RAY_STEP_DEG = 1.0
_RAY_SAMPLE_PX = 0.25
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _stacks(
    image: np.ndarray | None, myocardium: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray]:
    """``image`` as float and ``myocardium`` as bool, both (S, Y, X) of one shape."""
    myocardium = np.asarray(myocardium, dtype=bool)
    if myocardium.ndim != 3:
        raise ValueError(f"myocardium must be (S, Y, X), got shape {myocardium.shape}")
    if image is None:
        return None, myocardium
    image = np.asarray(image, dtype=float)
    if image.shape != myocardium.shape:
        raise ValueError(f"image {image.shape} and myocardium {myocardium.shape} differ in shape")
    return image, myocardium


def _lv_centre(myocardium_slice: np.ndarray) -> tuple[float, float] | None:
    """Centroid (row, col) of the myocardium with the cavity it encloses; None if empty."""
    rows, cols = np.nonzero(ndimage.binary_fill_holes(myocardium_slice))
    if rows.size == 0:
        return None
    return float(rows.mean()), float(cols.mean())


def remote_myocardium(
    image: np.ndarray, myocardium: np.ndarray, aha: np.ndarray | None = None
) -> np.ndarray:
    """The automatic remote (normal) myocardium: per slice, the region of lowest median.

    With ``aha`` (segment 1-16 per pixel, as :func:`napari_perfroi.aha.segment_geometry`
    gives) the region is the slice's AHA segment of lowest median intensity; without,
    the 60-degree angular window (about the LV centre, windows every 15 degrees) of
    lowest median. Regions with fewer than :data:`MIN_REMOTE_PIXELS` finite pixels are
    not candidates; a slice without candidates has no remote pixels. Returns a bool
    (S, Y, X) mask inside ``myocardium``.
    """
    image, myocardium = _stacks(image, myocardium)
    aha = None if aha is None else np.asarray(aha)
    if aha is not None and aha.shape != myocardium.shape:
        raise ValueError(f"aha {np.shape(aha)} and myocardium {myocardium.shape} differ in shape")
    remote = np.zeros(myocardium.shape, dtype=bool)
    for s, (values, mask) in enumerate(zip(image, myocardium)):
        usable = mask & np.isfinite(values)
        if aha is not None:
            candidates = [usable & (aha[s] == segment) for segment in range(1, 17)]
        else:
            candidates = _angular_windows(usable)
        candidates = [c for c in candidates if c.sum() >= MIN_REMOTE_PIXELS]
        if candidates:
            remote[s] = min(candidates, key=lambda c: np.median(values[c]))
    return remote


def _angular_windows(mask: np.ndarray) -> list[np.ndarray]:
    """``mask`` cut into overlapping angular windows about its LV centre."""
    centre = _lv_centre(mask)
    if centre is None:
        return []
    rows, cols = np.nonzero(mask)
    theta = angle_deg(rows, cols, centre)
    windows = []
    for middle in np.arange(0.0, 360.0, _REMOTE_WINDOW_STEP_DEG):
        off = np.abs(np.mod(theta - middle + 180.0, 360.0) - 180.0)
        window = np.zeros(mask.shape, dtype=bool)
        inside = off < REMOTE_WINDOW_DEG / 2
        window[rows[inside], cols[inside]] = True
        windows.append(window)
    return windows


def _remote_statistics(image: np.ndarray, remote: np.ndarray) -> list[tuple[float, float] | None]:
    """(mean, SD) of the finite remote pixels of each slice; a slice with fewer than
    :data:`MIN_REMOTE_PIXELS` takes those of the whole stack's remote pixels, and
    None when the stack has too few as well."""
    finite = np.isfinite(image)
    pooled = image[remote & finite]
    fallback = None
    if pooled.size >= MIN_REMOTE_PIXELS:
        fallback = (float(pooled.mean()), float(pooled.std()))
    statistics = []
    for values, chosen in zip(image, remote & finite):
        samples = values[chosen]
        statistics.append((float(samples.mean()), float(samples.std()))
                          if samples.size >= MIN_REMOTE_PIXELS else fallback)
    return statistics


def threshold_nsd(
    image: np.ndarray, myocardium: np.ndarray, n_sd: float = 5.0,
    remote: np.ndarray | None = None,
) -> np.ndarray:
    """Scar by the n-SD rule: myocardium brighter than mean + ``n_sd`` x SD of remote.

    The remote statistics (population SD) are taken per slice from ``remote``
    (a bool mask, e.g. drawn by hand; default :func:`remote_myocardium`); a slice
    with too few remote pixels uses the whole stack's. Returns a bool (S, Y, X) mask.
    """
    image, myocardium = _stacks(image, myocardium)
    remote = (remote_myocardium(image, myocardium) if remote is None
              else np.asarray(remote, dtype=bool))
    if remote.shape != myocardium.shape:
        raise ValueError(f"remote {remote.shape} and myocardium {myocardium.shape} differ in shape")
    scar = np.zeros(myocardium.shape, dtype=bool)
    for s, statistics in enumerate(_remote_statistics(image, remote)):
        if statistics is not None:
            mean, sd = statistics
            scar[s] = myocardium[s] & (image[s] > mean + n_sd * sd)
    return scar


def threshold_fwhm(
    image: np.ndarray, myocardium: np.ndarray, remote: np.ndarray | None = None
) -> np.ndarray:
    """Scar by the full-width-at-half-maximum rule, per slice.

    The hyperenhanced region is the largest 8-connected region of myocardium more
    than :data:`FWHM_CORE_SD` remote SDs above the remote mean (``remote`` as in
    :func:`threshold_nsd`); its robust maximum is its 95th percentile, and scar is
    every myocardium pixel at least half of it. A slice whose hyperenhanced region
    has fewer than 5 pixels has no scar. Returns a bool (S, Y, X) mask.
    """
    image, myocardium = _stacks(image, myocardium)
    core = threshold_nsd(image, myocardium, FWHM_CORE_SD, remote)
    scar = np.zeros(myocardium.shape, dtype=bool)
    for s, slice_core in enumerate(core):
        labelled, count = ndimage.label(slice_core, _EIGHT_CONNECTED)
        if count == 0:
            continue
        sizes = np.bincount(labelled.ravel())[1:]
        if sizes.max() < _MIN_CORE_PIXELS:
            continue
        largest = labelled == 1 + int(np.argmax(sizes))
        robust_max = float(np.percentile(image[s][largest], _ROBUST_MAX_PERCENTILE))
        scar[s] = myocardium[s] & (image[s] >= 0.5 * robust_max)
    return scar


def _pixel_area_mm2(spacing_mm) -> float:
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (2,))
    return float(spacing[0] * spacing[1])


def clean_scar(
    scar: np.ndarray, myocardium: np.ndarray, spacing_mm,
    min_area_mm2: float = MIN_SCAR_AREA_MM2,
) -> np.ndarray:
    """``scar`` kept inside the myocardium, without specks, with its MVO cores.

    Per slice: 8-connected scar regions smaller than ``min_area_mm2`` are dropped;
    then each region of non-scar myocardium that borders scar but not the outside
    of the heart (it is enclosed by scar, or by scar and the LV cavity, as a
    subendocardial dark MVO core is) becomes scar. Remote myocardium between two
    transmural scars reaches the epicardium and stays. ``spacing_mm`` is the pixel
    spacing (one value or (row, col)). Returns a bool (S, Y, X) mask.
    """
    _, myocardium = _stacks(None, myocardium)
    scar = np.asarray(scar, dtype=bool)
    if scar.shape != myocardium.shape:
        raise ValueError(f"scar {scar.shape} and myocardium {myocardium.shape} differ in shape")
    min_pixels = min_area_mm2 / _pixel_area_mm2(spacing_mm)
    cleaned = np.zeros(scar.shape, dtype=bool)
    for s, (found, mask) in enumerate(zip(scar, myocardium)):
        found = found & mask
        labelled, count = ndimage.label(found, _EIGHT_CONNECTED)
        if count == 0:
            continue
        sizes = np.bincount(labelled.ravel())
        found = (sizes >= min_pixels)[labelled] & found
        # Non-scar myocardium regions next to scar and not next to the outside of the heart.
        rest, _ = ndimage.label(mask & ~found, _EIGHT_CONNECTED)
        outside = ~ndimage.binary_fill_holes(mask)
        near_scar = np.unique(rest[ndimage.binary_dilation(found, _EIGHT_CONNECTED)])
        near_outside = np.unique(rest[ndimage.binary_dilation(outside, _EIGHT_CONNECTED)])
        enclosed = np.setdiff1d(near_scar, np.append(near_outside, 0))
        found |= np.isin(rest, enclosed)
        cleaned[s] = found
    return cleaned


def _ray_samples(centre: tuple[float, float], reach: float):
    """Sample coordinates (rows, cols), each (rays, samples), and the ray angles (degrees)."""
    theta = np.arange(0.0, 360.0, _RAY_STEP_DEG)
    radii = np.arange(0.0, reach, _RAY_SAMPLE_PX)
    rows = centre[0] - np.outer(np.sin(np.radians(theta)), radii)
    cols = centre[1] + np.outer(np.cos(np.radians(theta)), radii)
    return rows, cols, theta


def _slice_rays(
    myocardium: np.ndarray, scar: np.ndarray, aha: np.ndarray, centre: tuple[float, float],
    spacing: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per ray of one slice: its segment (0: none), wall thickness (mm) and scar extent (mm)."""
    rows, cols = np.nonzero(myocardium)
    reach = float(np.hypot(rows - centre[0], cols - centre[1]).max()) + 2.0
    ray_rows, ray_cols, theta = _ray_samples(centre, reach)
    coordinates = [ray_rows, ray_cols]
    on_wall = ndimage.map_coordinates(myocardium.astype(np.float32), coordinates, order=1) >= 0.5
    on_scar = on_wall & (ndimage.map_coordinates((scar & myocardium).astype(np.float32),
                                                 coordinates, order=1) >= 0.5)
    segments = np.where(on_wall, ndimage.map_coordinates(aha, coordinates, order=0), 0)
    counts = np.stack([(segments == k).sum(axis=1) for k in range(17)], axis=1)
    counts[:, 0] = 0
    ray_segment = np.where(counts.any(axis=1), counts.argmax(axis=1), 0)
    # Length of one sample step along each ray, in mm.
    step_mm = _RAY_SAMPLE_PX * np.hypot(np.sin(np.radians(theta)) * spacing[0],
                                        np.cos(np.radians(theta)) * spacing[1])
    return ray_segment, on_wall.sum(axis=1) * step_mm, on_scar.sum(axis=1) * step_mm


def segment_scar(
    myocardium: np.ndarray, scar: np.ndarray, aha: np.ndarray,
    centres=None, spacing_mm=1.0,
) -> list[dict[str, Any]]:
    """Scar per AHA segment 1-16.

    Each row: ``segment``; ``pixels`` (myocardium pixels in it, 0 when not imaged)
    and ``scar_pixels``; ``scar_percent``, scar pixels / myocardium pixels x 100;
    ``transmurality`` (0-1), the mean over the rays from the LV centre through the
    segment (one per degree on each slice) of the scar's radial extent along the ray
    divided by the wall's; ``wall_thickness_mm``, the mean wall extent along those
    rays; ``scar_class`` (:func:`scar_class`). Values are None for a segment not
    imaged. ``centres`` is the LV centre (row, col) per slice, e.g.
    ``AhaGeometry.centre``; None (or a NaN centre) takes the centroid of the
    myocardium and the cavity it encloses. ``spacing_mm`` is the pixel spacing (one
    value or (row, col)).
    """
    _, myocardium = _stacks(None, myocardium)
    scar = np.asarray(scar, dtype=bool)
    aha = np.asarray(aha)
    if scar.shape != myocardium.shape or aha.shape != myocardium.shape:
        raise ValueError(f"myocardium {myocardium.shape}, scar {scar.shape} and aha {aha.shape} "
                         "differ in shape")
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (2,))
    ray_segments, walls, extents = [], [], []
    for s, mask in enumerate(myocardium):
        mask = mask & (aha[s] > 0)
        if not mask.any():  # e.g. an LV blood pool without myocardium: a centre but no wall
            continue
        centre = None if centres is None else centres[s]
        if centre is None or not all(math.isfinite(float(v)) for v in centre):
            centre = _lv_centre(mask)
        if centre is None:
            continue
        segment, wall, extent = _slice_rays(mask, scar[s], aha[s], centre, spacing)
        ray_segments.append(segment)
        walls.append(wall)
        extents.append(extent)
    ray_segment = np.concatenate(ray_segments) if ray_segments else np.zeros(0, dtype=int)
    wall = np.concatenate(walls) if walls else np.zeros(0)
    extent = np.concatenate(extents) if extents else np.zeros(0)
    rows = []
    for segment in range(1, 17):
        inside = myocardium & (aha == segment)
        pixels = int(inside.sum())
        scar_pixels = int((inside & scar).sum())
        rays = (ray_segment == segment) & (wall > 0)
        if pixels == 0:
            rows.append({"segment": segment, "pixels": 0, "scar_pixels": 0, "scar_percent": None,
                         "transmurality": None, "wall_thickness_mm": None, "scar_class": None})
            continue
        percent = 100.0 * scar_pixels / pixels
        transmurality = float(np.mean(extent[rays] / wall[rays])) if rays.any() else None
        rows.append({
            "segment": segment, "pixels": pixels, "scar_pixels": scar_pixels,
            "scar_percent": percent, "transmurality": transmurality,
            "wall_thickness_mm": float(np.mean(wall[rays])) if rays.any() else None,
            "scar_class": scar_class(percent, transmurality),
        })
    return rows


def scar_class(scar_percent: float, transmurality: float | None) -> str:
    """A segment's viability class (:data:`SCAR_CLASSES`).

    "none" when scar covers less than :data:`MIN_SCAR_PERCENT` of the segment's
    myocardium; otherwise ">=50 %" when the transmurality reaches 0.5 (function
    unlikely to recover after revascularisation), else "<50 %". Without a
    transmurality (no ray crossed the segment) the scar's share of the segment,
    ``scar_percent`` / 100, stands in for it.
    """
    if not scar_percent >= MIN_SCAR_PERCENT:  # NaN counts as no scar
        return SCAR_NONE
    extent = scar_percent / 100.0 if transmurality is None else transmurality
    return SCAR_TRANSMURAL if extent >= TRANSMURAL_FRACTION else SCAR_NON_TRANSMURAL


def perfusion_abnormal(report: Mapping[str, Any]) -> dict[int, bool | None]:
    """Which AHA segments (1-16) have a perfusion defect in a stress flow report.

    With absolute MBF (:func:`napari_perfroi.report.has_absolute_mbf`) a segment is
    abnormal when its stress MBF is below :data:`ISCHAEMIC_MBF` (1.5 mL/min/g).
    Without, when its relative upslope is below :data:`ABNORMAL_UPSLOPE_FRACTION` of
    the study's normal level, the median of the upper half of its imaged segments
    (this finds regional defects; a defect of the whole LV has no normal level to
    stand out from). None where a segment has no value, and everywhere when fewer
    than :data:`MIN_REFERENCE_SEGMENTS` segments have a relative upslope.
    """
    if has_absolute_mbf(report):
        values = list(report["segment_mbf"])
        threshold = ISCHAEMIC_MBF
    else:
        values = relative_upslope_percent(report)
        imaged = np.array([v for v in values if v is not None and math.isfinite(v)])
        if imaged.size < MIN_REFERENCE_SEGMENTS:
            return {segment: None for segment in range(1, 17)}
        normal_level = float(np.median(imaged[imaged >= np.median(imaged)]))
        threshold = ABNORMAL_UPSLOPE_FRACTION * normal_level
    return {segment: None if value is None or not math.isfinite(value) else bool(value < threshold)
            for segment, value in zip(range(1, 17), values)}


def territory_verdicts(
    abnormal: Mapping[int, bool | None], scar_classes: Mapping[int, str | None]
) -> dict[str, str]:
    """The verdict (:data:`VERDICTS`) of each coronary territory (lad, rca, lcx).

    ``abnormal`` maps a segment to its perfusion defect (:func:`perfusion_abnormal`),
    ``scar_classes`` to its scar class (:func:`scar_class`); None or a missing key:
    not imaged. In each territory, scarred segments are those of class "<50 %" or
    ">=50 %" and defect segments those abnormal:

    - no scar and no defect: "normal";
    - a defect but no scar: "ischaemia";
    - scar, and every defect segment scarred (or no defect): "infarct";
    - scar, and a defect segment without scar (class "none" or no LGE there):
      "infarct with peri-infarct ischaemia".

    A territory needs a segment with known perfusion and one with a known scar
    class; without, it is :data:`NOT_ASSESSED`.
    """
    verdicts = {}
    for territory, segments in TERRITORIES.items():
        classes = {s: scar_classes.get(s) for s in segments}
        defects = {s: abnormal.get(s) for s in segments}
        if all(c is None for c in classes.values()) or all(d is None for d in defects.values()):
            verdicts[territory] = NOT_ASSESSED
            continue
        scarred = {s for s, c in classes.items() if c in (SCAR_NON_TRANSMURAL, SCAR_TRANSMURAL)}
        defect = {s for s, d in defects.items() if d}
        if not scarred:
            verdicts[territory] = ISCHAEMIA if defect else NORMAL
        else:
            verdicts[territory] = PERI_INFARCT_ISCHAEMIA if defect - scarred else INFARCT
    return verdicts
