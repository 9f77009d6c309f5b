"""Segment every frame of a study: U-Net on the reference geometry, carried by the motion."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import __version__
from ..errors import InputError
from ..label_edits import edited_frames
from .model import LoadedModel, load_model
from .postprocess import plausible_labels

FRAMES_PER_BLOCK = 16  # frames resampled back at once (bounds the memory)


@dataclass
class Segmentation:
    labels: np.ndarray  # uint8 (S, T, Y, X)
    lv_found: list[bool]  # per slice; False -> that slice's labels are empty
    device: str
    kept_frames: int = 0  # frames whose edited labels were kept

    def message(self) -> str:
        """A one-line summary naming slices where no LV was found and kept edits."""
        missing = [str(s) for s, found in enumerate(self.lv_found) if not found]
        if not missing:
            line = f"LV found on all {len(self.lv_found)} slice(s)"
        else:
            line = f"no LV found on slice(s) {', '.join(missing)}: their labels are empty"
        if self.kept_frames:
            line += f"; kept the edited labels of {self.kept_frames} frame(s)"
        return line


def segment_series(
    model: LoadedModel,
    series: np.ndarray,
    motion: np.ndarray,
    frame_times_s: np.ndarray,
    pixel_spacing_mm,
    progress=None,
) -> Segmentation:
    """Labels (S, T, Y, X) of a series (S, T, Y, X) with its motion (S, T, 2) and times (S, T).

    ``progress(done, total)`` is called per slice; it may raise to cancel.
    """
    import torch

    from .features import GRID_MM, Grid, slice_inputs

    series = np.asarray(series)
    if series.ndim != 4 or min(series.shape) < 1:
        raise InputError(f"series must be (S, T, Y, X), got shape {series.shape}")
    n_slices, n_frames = series.shape[:2]
    motion = np.asarray(motion, dtype=np.float32).reshape(n_slices, n_frames, 2)
    times = np.asarray(frame_times_s, dtype=np.float64).reshape(n_slices, n_frames)
    grid = Grid.for_image(series.shape[2:], pixel_spacing_mm)
    labels = np.zeros(series.shape, dtype=np.uint8)
    lv_found = []
    with torch.inference_mode():
        for s in range(n_slices):
            inputs = slice_inputs(series[s], motion[s], times[s], grid)
            batch = inputs[None].to(model.device, memory_format=torch.channels_last)
            logits = model.network(batch)[0].float().cpu()
            probabilities = torch.softmax(logits, dim=0)
            cleaned = plausible_labels(probabilities.argmax(dim=0).numpy().astype(np.uint8), GRID_MM)
            lv_found.append(bool(cleaned.any()))
            if lv_found[-1]:
                allowed = _allowed_classes(torch.from_numpy(cleaned), probabilities.shape[0])
                _carry_to_frames(grid, probabilities * allowed, motion[s], out=labels[s])
            if progress is not None:
                progress(s + 1, n_slices)
    return Segmentation(labels=labels, lv_found=lv_found, device=model.device)


def _allowed_classes(cleaned, n_classes):
    """(C, h, w) mask: each class only within a pixel of where it survived cleaning.

    Keeping the probabilities (not the hard labels) there lets the boundary
    fall between grid points when resampled to the image.
    """
    import torch
    import torch.nn.functional as F

    one_hot = F.one_hot(cleaned.long(), n_classes).permute(2, 0, 1).float()
    allowed = F.max_pool2d(one_hot[None], 3, stride=1, padding=1)[0]
    allowed[0] = 1.0
    return allowed.to(torch.float32)


def _carry_to_frames(grid, probabilities, shifts, out):
    for start in range(0, len(shifts), FRAMES_PER_BLOCK):
        block = slice(start, start + FRAMES_PER_BLOCK)
        out[block] = _most_probable(grid.to_image(probabilities, shifts[block]))


def _most_probable(probabilities):
    """argmax over the class axis of (T, C, Y, X), as uint8 numpy.

    A running comparison: torch's argmax over a non-innermost axis of a
    small dimension is an order of magnitude slower.
    """
    import torch

    best = probabilities[:, 0]
    labels = torch.zeros(best.shape, dtype=torch.uint8)
    for k in range(1, probabilities.shape[1]):
        better = probabilities[:, k] > best
        labels[better] = k
        best = torch.maximum(best, probabilities[:, k])
    return labels.numpy()


def segment_study(study, model: LoadedModel | None = None, progress=None) -> Segmentation:
    """Segment a writable study (its ``motion`` must exist); write ``labels`` and record the step."""
    if not study.has("motion"):
        raise InputError(f"{study.path}: run the motion step before segment")
    model = model or load_model()
    result = segment_series(
        model,
        study.read("image"),
        study.read("motion"),
        study.frame_times_s,
        study.pixel_spacing_mm,
        progress=progress,
    )
    kept = edited_frames(study) & study.has("labels")
    if kept.any():  # the annotator's corrections win over the model
        result.labels[kept] = study.read("labels")[kept]
    result.kept_frames = int(kept.sum())
    study.write("labels", result.labels)
    study.record_step(
        "segment",
        {
            "model": model.weights_path.name,
            "model_name": model.metadata.get("name", model.weights_path.stem),
            "model_path": str(model.weights_path),
            "model_sha256": model.sha256,
            "device": model.device,
            "lv_found": result.lv_found,
            "kept_edited_frames": result.kept_frames,
        },
        __version__,
    )
    return result
