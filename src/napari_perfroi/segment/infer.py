"""Segment every frame of a study: U-Net on the reference geometry, carried by the motion.

Test-time augmentation: the network sees the slice's input as it is and
turned by 180 degrees (one batch of two); the mean of the two probability
maps gives the labels. A frame's confidence is the product
of two agreements, each the lower of the LV cavity's and the myocardium's:
the soft Dice of the frame's labels against the mean probabilities (it falls
where the network hesitates at a boundary) and the mean Dice of each pass's
labels against the consensus (it falls where the two views disagree).
Frames whose labels an annotator edited count as 1. Per pixel, the
uncertainty is one minus the largest mean class probability (0 sure, up to
0.75 when all four classes are equally likely), in the reference frame's
geometry, so an annotator sees where to look. A slice whose median
frame confidence is below ``UNCERTAIN_BELOW`` is flagged for review.
``tta=False`` runs one pass, and the confidence is the soft Dice alone.
Two passes, not four: the network pass dominates the step's time, so each
extra view adds about one pass per slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import __version__
from ..errors import InputError
from ..label_edits import edited_frames
from ..progress import within
from ..study import LV_BLOOD, MYOCARDIUM
from .model import LoadedModel, load_model
from .postprocess import plausible_labels

FRAMES_PER_BLOCK = 16  # frames resampled back at once (bounds the memory)
VIEWS = ((), (-2, -1))  # test-time augmentation: as is, and turned by 180 degrees
UNCERTAIN_BELOW = 0.85  # median frame confidence under which a slice is flagged


@dataclass
class Segmentation:
    labels: np.ndarray  # uint8 (S, T, Y, X)
    lv_found: list[bool]  # per slice; False -> that slice's labels are empty
    device: str
    confidence: np.ndarray  # float32 (S, T) in [0, 1]; 0 where no LV was found
    uncertainty: np.ndarray  # float32 (S, Y, X) per pixel, reference frame geometry
    kept_frames: int = 0  # frames whose edited labels were kept

    def uncertain_slices(self) -> list[int]:
        """Slices (0-based) with an LV whose median frame confidence is below the threshold."""
        return [s for s, found in enumerate(self.lv_found)
                if found and float(np.median(self.confidence[s])) < UNCERTAIN_BELOW]

    def message(self) -> str:
        """A one-line summary naming slices where no LV was found, uncertain slices and
        kept edits (slices counted from 1)."""
        missing = [str(s + 1) for s, found in enumerate(self.lv_found) if not found]
        if not missing:
            line = f"LV found on all {len(self.lv_found)} slice(s)"
        else:
            line = f"no LV found on slice(s) {', '.join(missing)}: their labels are empty"
        for text in uncertainty_flags(self.uncertain_slices()):
            line += f"; {text}"
        if self.kept_frames:
            line += f"; kept the edited labels of {self.kept_frames} frame(s)"
        return line


def uncertainty_flags(uncertain_slices) -> list[str]:
    """The QA flag of each uncertain slice (0-based indices in, counted from 1 out)."""
    return [f"segmentation uncertain on slice {s + 1}: check the labels" for s in uncertain_slices]


def segment_series(
    model: LoadedModel,
    series: np.ndarray,
    motion: np.ndarray,
    frame_times_s: np.ndarray,
    pixel_spacing_mm,
    progress=None,
    tta: bool = True,
) -> Segmentation:
    """Labels (S, T, Y, X) of a series (S, T, Y, X) with its motion (S, T, 2) and times (S, T),
    and a confidence per frame (module docstring).

    ``progress(done, total)`` is called per slice and within one (fractional
    ``done``); it may raise to cancel.
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
    confidence = np.zeros((n_slices, n_frames), dtype=np.float32)
    uncertainty = np.zeros((n_slices, *series.shape[2:]), dtype=np.float32)
    views = VIEWS if tta else VIEWS[:1]
    lv_found = []
    with torch.inference_mode():
        for s in range(n_slices):
            part = within(progress, s, n_slices)
            inputs = slice_inputs(series[s], motion[s], times[s], grid)
            if part is not None:
                part(1 / 3)
            batch = torch.stack([inputs.flip(axes) for axes in views])
            logits = model.network(batch.to(model.device, memory_format=torch.channels_last))
            if part is not None:
                part(2 / 3)
            passes = torch.stack([
                torch.softmax(logits[i].float().cpu(), dim=0).flip(axes)
                for i, axes in enumerate(views)
            ])
            probabilities = passes.mean(dim=0)
            most_likely, consensus = probabilities.max(dim=0)
            uncertainty[s] = grid.to_image((1.0 - most_likely)[None], np.zeros((1, 2)))[0, 0]
            cleaned = plausible_labels(consensus.numpy().astype(np.uint8), GRID_MM)
            lv_found.append(bool(cleaned.any()))
            if lv_found[-1]:
                allowed = _allowed_classes(torch.from_numpy(cleaned), probabilities.shape[0])
                confidence[s] = _carry_to_frames(
                    grid, probabilities * allowed, motion[s], out=labels[s]
                ) * _agreement(passes.argmax(dim=1), consensus)
            if progress is not None:
                progress(s + 1, n_slices)
    return Segmentation(labels=labels, lv_found=lv_found, device=model.device,
                        confidence=confidence, uncertainty=uncertainty)


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


def _carry_to_frames(grid, probabilities, shifts, out) -> np.ndarray:
    """Write each frame's labels into ``out`` (T, Y, X); return the frames' confidence (T,)."""
    confidence = np.empty(len(shifts), dtype=np.float32)
    for start in range(0, len(shifts), FRAMES_PER_BLOCK):
        block = slice(start, start + FRAMES_PER_BLOCK)
        moved = grid.to_image(probabilities, shifts[block])
        out[block] = _most_probable(moved)
        confidence[block] = _soft_dice(moved, out[block])
    return confidence


def _agreement(pass_labels, consensus) -> float:
    """Mean over passes of the lower of the LV cavity's and myocardium's Dice between the
    pass's labels (P, h, w) and the consensus (h, w)."""
    from .metrics import dice

    scores = [np.nan_to_num(dice((labels == k).numpy(), (consensus == k).numpy()), nan=1.0)
              for labels in pass_labels for k in (LV_BLOOD, MYOCARDIUM)]
    return float(np.mean(np.reshape(scores, (-1, 2)).min(axis=1)))


def _soft_dice(probabilities, labels) -> np.ndarray:
    """(T,) the lower of the LV cavity's and the myocardium's soft Dice between the
    probabilities (T, C, Y, X) and the labels (T, Y, X)."""
    import torch

    labels = torch.from_numpy(labels)
    scores = []
    for k in (LV_BLOOD, MYOCARDIUM):
        p, mask = probabilities[:, k], (labels == k).float()
        overlap = (p * mask).sum(dim=(1, 2))
        scores.append(2 * overlap / (p.sum(dim=(1, 2)) + mask.sum(dim=(1, 2))).clamp(min=1e-6))
    return torch.minimum(*scores).numpy()


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
        result.confidence[kept] = 1.0
    result.kept_frames = int(kept.sum())
    study.write("labels", result.labels)
    study.write("label_confidence", result.confidence)
    study.write("label_uncertainty", result.uncertainty)
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
            "test_time_augmentation": "mean of 2 passes: as is, turned 180 degrees",
            "uncertain_below": UNCERTAIN_BELOW,
            "slice_confidence": [round(float(np.median(c)), 4) for c in result.confidence],
            "uncertain_slices": result.uncertain_slices(),
        },
        __version__,
    )
    return result
