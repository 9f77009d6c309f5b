"""Scanner-like randomisation of one slice's raw series, for training.

The phantom renders one kind of scanner; real series differ in ways the
model must not learn to depend on. Each call draws, from ``rng``, a new
acquisition of the same anatomy:

- timing: the series starts later or ends earlier (bolus early or late,
  other frame counts), frames are dropped or duplicated, and the recorded
  frame times carry jitter;
- intensity: a vendor gain and offset, a monotonic gamma curve, a smooth
  multiplicative bias field, integer storage;
- resolution: Gaussian blur and k-space truncation along one axis (Gibbs
  ringing);
- noise: extra Rician noise.

Geometry is untouched: the reference frame's labels and the per-frame
shifts still describe every frame that is kept.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MIN_FRAMES = 12  # fewer frames than this cannot show a first pass


def randomise_series(
    frames: np.ndarray, times_s: np.ndarray, shifts: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames (T', Y, X) float32, times (T',), shifts (T', 2)) of a randomised acquisition."""
    keep = _kept_frames(len(frames), rng)
    frames = np.asarray(frames, dtype=np.float32)[keep]
    times_s = np.asarray(times_s, dtype=np.float64)[keep]
    shifts = np.asarray(shifts, dtype=np.float32)[keep]
    if rng.random() < 0.3 and len(times_s) > 1:  # jitter in the recorded frame intervals
        intervals = np.maximum(np.diff(times_s) * rng.normal(1.0, 0.1, len(times_s) - 1), 0.05)
        times_s = times_s[0] + np.concatenate([[0.0], np.cumsum(intervals)])
    scale = float(np.percentile(frames, 99.5)) or 1.0
    frames = frames / scale
    if rng.random() < 0.5:
        frames = _bias_field(frames.shape[1:], rng) * frames
    if rng.random() < 0.5:  # a monotonic display / signal curve
        frames = np.maximum(frames, 0.0) ** rng.uniform(0.6, 1.6)
    if rng.random() < 0.3:
        sigma = rng.uniform(0.3, 1.2)
        frames = ndimage.gaussian_filter(frames, (0.0, sigma, sigma), mode="nearest")
    if rng.random() < 0.3:
        frames = _truncate_kspace(frames, axis=1 + int(rng.integers(2)), kept=rng.uniform(0.4, 0.8))
    if rng.random() < 0.4:  # Rician: magnitude of complex Gaussian noise
        sd = rng.uniform(0.01, 0.08)
        noise = rng.normal(0.0, sd, (2, *frames.shape)).astype(np.float32)
        frames = np.hypot(frames + noise[0], noise[1])
    gain = float(np.exp(rng.uniform(np.log(50.0), np.log(20_000.0))))
    offset = gain * rng.uniform(0.0, 0.2) if rng.random() < 0.2 else 0.0
    frames = np.rint(np.clip(frames * gain + offset, 0.0, 65535.0)).astype(np.float32)
    return frames, times_s, shifts


def _kept_frames(n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the frames an acquisition keeps: a window, minus drops, plus duplicates."""
    index = np.arange(n_frames)
    if rng.random() < 0.4 and n_frames > MIN_FRAMES:
        length = int(rng.integers(MIN_FRAMES, n_frames + 1))
        start = int(rng.integers(0, n_frames - length + 1))
        index = index[start : start + length]
    if rng.random() < 0.3 and len(index) > MIN_FRAMES:
        n_drop = int(rng.integers(1, max(2, (len(index) - MIN_FRAMES) // 4 + 1)))
        index = np.delete(index, rng.choice(len(index), n_drop, replace=False))
    if rng.random() < 0.2:
        copies = np.ones(len(index), dtype=int)
        copies[rng.choice(len(index), min(3, len(index)), replace=False)] = 2
        index = np.repeat(index, copies)
    return index


def _bias_field(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A smooth positive field: exp of a random low-order polynomial, mean about 1."""
    rows, cols = (np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape)
    r, c = np.meshgrid(rows, cols, indexing="ij")
    terms = np.stack([r, c, r * c, r**2, c**2])
    log_field = np.tensordot(rng.normal(0.0, rng.uniform(0.1, 0.5), 5), terms, axes=1)
    return np.exp(log_field - log_field.mean()).astype(np.float32)


def _truncate_kspace(frames: np.ndarray, axis: int, kept: float) -> np.ndarray:
    """Magnitude after zeroing the outer k-space lines along ``axis`` (ringing, blur)."""
    n = frames.shape[axis]
    frequency = np.abs(np.fft.fftfreq(n))
    window = (frequency <= 0.5 * kept).astype(np.float32)
    spectrum = np.fft.fft(frames, axis=axis)
    spectrum *= window.reshape([-1 if a == axis else 1 for a in range(frames.ndim)])
    return np.abs(np.fft.ifft(spectrum, axis=axis)).astype(np.float32)
