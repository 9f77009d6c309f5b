"""Model inputs: one slice's series -> bolus-aligned images on a fixed physical grid.

Every series, whatever its pixel spacing, matrix, frame rate or contrast
timing, becomes the same kind of input:

- the frames are motion-corrected (sampled at ``p + motion[t]``, as frame t
  shows the reference frame shifted by ``motion[t]``) and resampled onto a
  grid of ``GRID_MM`` pixels in one bilinear lookup;
- proton-density frames are left out; the pre-contrast image is the mean of
  the frames before the bolus reaches the heart;
- enhancement (frame minus pre-contrast) is sampled at fixed times relative
  to the peak of the bolus in the heart, so RV, LV and myocardium enhance in
  the same channels in every study, and scaled by its robust maximum (the
  surface-coil gain and the scanner's units cancel);
- peak enhancement and time to peak complete the picture.

The same code prepares training data and inference inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..motion import proton_density_frames

GRID_MM = 1.5
SIZE_MULTIPLE = 16  # the U-Net pools four times
PEAK_OFFSETS_S = (-8.0, -5.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 18.0, 25.0)
N_CHANNELS = len(PEAK_OFFSETS_S) + 3  # + pre-contrast, peak enhancement, time to peak
HEART_FRACTION = 0.005  # pixels with the largest temporal change that time the bolus
ARRIVAL_FRACTION = 0.1  # of the peak rise: the bolus has reached the heart
TIME_TO_PEAK_SCALE_S = 10.0
VALUE_RANGE = (-2.0, 4.0)


@dataclass(frozen=True)
class Grid:
    """A ``GRID_MM`` grid centred on an image of ``image_shape`` and ``spacing_mm``."""

    image_shape: tuple[int, int]
    spacing_mm: tuple[float, float]
    shape: tuple[int, int]

    @classmethod
    def for_image(cls, image_shape, spacing_mm) -> Grid:
        shape = tuple(
            max(1, math.ceil(n * s / GRID_MM / SIZE_MULTIPLE)) * SIZE_MULTIPLE
            for n, s in zip(image_shape, spacing_mm)
        )
        return cls(tuple(int(n) for n in image_shape), tuple(float(s) for s in spacing_mm), shape)

    def _offset_mm(self, axis: int) -> float:
        return (self.image_shape[axis] * self.spacing_mm[axis] - self.shape[axis] * GRID_MM) / 2

    def image_coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """Image (row, col) of every grid point, as two 1-D arrays."""
        return tuple(
            ((np.arange(self.shape[a]) + 0.5) * GRID_MM + self._offset_mm(a)) / self.spacing_mm[a]
            - 0.5
            for a in range(2)
        )

    def grid_coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """Grid (row, col) of every image pixel, as two 1-D arrays."""
        return tuple(
            ((np.arange(self.image_shape[a]) + 0.5) * self.spacing_mm[a] - self._offset_mm(a))
            / GRID_MM
            - 0.5
            for a in range(2)
        )

    def from_image(self, frames: torch.Tensor, shifts: np.ndarray) -> torch.Tensor:
        """(T, Y, X) image frames -> (T, h, w) grid frames sampled at ``p + shifts[t]``."""
        rows, cols = self.image_coordinates()
        lookup = _lookup(rows, cols, shifts, self.image_shape)
        return F.grid_sample(
            frames[:, None], lookup, mode="bilinear", padding_mode="zeros", align_corners=False
        )[:, 0]

    def to_image(self, maps: torch.Tensor, shifts: np.ndarray) -> torch.Tensor:
        """(C, h, w) grid maps -> (T, C, Y, X): frame t sees them shifted by ``shifts[t]``."""
        rows, cols = self.grid_coordinates()
        # Pixel p of frame t shows the reference point p - shift.
        shifts_on_grid = -np.asarray(shifts, dtype=np.float64) * (
            np.asarray(self.spacing_mm) / GRID_MM
        )
        lookup = _lookup(rows, cols, shifts_on_grid, self.shape)
        return F.grid_sample(
            maps[None].expand(len(lookup), -1, -1, -1),
            lookup,
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        )


def _lookup(rows, cols, shifts, source_shape) -> torch.Tensor:
    """grid_sample coordinates (T, len(rows), len(cols), 2) for points (rows, cols) + shifts[t]."""
    shifts = torch.as_tensor(np.asarray(shifts, dtype=np.float32).reshape(-1, 2))
    r = torch.as_tensor(rows, dtype=torch.float32)[None, :, None] + shifts[:, 0, None, None]
    c = torch.as_tensor(cols, dtype=torch.float32)[None, None, :] + shifts[:, 1, None, None]
    y = (2 * r + 1) / source_shape[0] - 1
    x = (2 * c + 1) / source_shape[1] - 1
    return torch.stack(torch.broadcast_tensors(x, y), dim=-1)


def slice_inputs(
    frames: np.ndarray, shifts: np.ndarray, times_s: np.ndarray, grid: Grid
) -> torch.Tensor:
    """The model input (N_CHANNELS, h, w) float32 of one slice's series (T, Y, X)."""
    frames = np.nan_to_num(np.asarray(frames, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    times_s = np.asarray(times_s, dtype=np.float64)
    keep = ~proton_density_frames(frames)
    moved = grid.from_image(torch.from_numpy(frames[keep]), np.asarray(shifts)[keep])
    times_s = times_s[keep]
    inside = grid.from_image(torch.ones((1, *grid.image_shape)), np.zeros((1, 2)))[0] > 0.5

    peak, arrival = _bolus_timing(moved, inside)
    pre_contrast = moved[: max(arrival, 1)].mean(dim=0)
    enhancement = moved - pre_contrast
    peak_enhancement, peak_index = enhancement.max(dim=0)
    enhancement_scale = _robust_max(peak_enhancement, inside)
    channels = [pre_contrast / _robust_max(pre_contrast, inside)]
    peak_time = times_s[peak]
    for offset in PEAK_OFFSETS_S:
        channels.append(_at_time(enhancement, times_s, peak_time + offset) / enhancement_scale)
    channels.append(peak_enhancement / enhancement_scale)
    time_to_peak = torch.as_tensor(times_s - peak_time, dtype=torch.float32)[peak_index]
    channels.append(time_to_peak / TIME_TO_PEAK_SCALE_S)
    inputs = torch.stack(channels).clamp(*VALUE_RANGE)
    return torch.where(inside, inputs, torch.zeros(()))


def _bolus_timing(moved: torch.Tensor, inside: torch.Tensor) -> tuple[int, int]:
    """(peak frame, arrival frame) of the mean curve of the most-changing pixels."""
    centred = moved - moved.mean(dim=0)
    change = (centred * centred).mean(dim=0)  # the variance; as a ranking, the same as the SD
    change = torch.where(inside, change, torch.zeros(()))
    n_heart = max(20, int(HEART_FRACTION * int(inside.sum())))
    heart = torch.topk(change.flatten(), min(n_heart, change.numel())).indices
    curve = moved.flatten(1)[:, heart].mean(dim=1).numpy()
    if len(curve) >= 3:  # a 1-2-1 filter against single noisy frames
        curve = np.convolve(np.pad(curve, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
    peak = int(np.argmax(curve))
    base = curve[: peak + 1].min()
    risen = curve[: peak + 1] > base + ARRIVAL_FRACTION * (curve[peak] - base)
    arrival = int(np.argmax(risen)) if risen.any() else 0
    return peak, arrival


def _robust_max(image: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    values = image[inside]
    if values.numel() == 0:
        return torch.ones(())
    values = values[:: max(1, values.numel() // 100_000)]
    rank = int(round(0.995 * (values.numel() - 1))) + 1
    top = torch.kthvalue(values, rank).values  # the 99.5th percentile; faster than quantile
    return top if top > 1e-6 else torch.ones(())


def _at_time(series: torch.Tensor, times_s: np.ndarray, when_s: float) -> torch.Tensor:
    """Linear interpolation of (T, h, w) at ``when_s``, clamped to the first and last frame."""
    if len(times_s) == 1 or when_s <= times_s[0]:
        return series[0]
    if when_s >= times_s[-1]:
        return series[-1]
    after = int(np.searchsorted(times_s, when_s))
    before = after - 1
    span = times_s[after] - times_s[before]
    weight = float((when_s - times_s[before]) / span) if span > 0 else 0.0
    return torch.lerp(series[before], series[after], weight)
