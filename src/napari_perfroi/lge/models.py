"""LGE segmentation: myocardium, then scar inside it, with small U-Nets on single slices.

Every slice, whatever its pixel spacing, matrix, scanner units or kind
(magnitude or PSIR), becomes the same kind of input: its intensities are
mapped so that the 1st percentile is 0 and the 99.5th is 1 (clamped to
``VALUE_RANGE``), then it is resampled onto the ``GRID_MM`` grid of the
perfusion model (:class:`~napari_perfroi.segment.features.Grid`).

- **Myocardium**: a U-Net labels the grid (0 background, 1 LV blood pool,
  2 LV myocardium, 3 RV blood pool), as is and turned by 180 degrees; the
  mean of the two probability maps, made plausible by
  :func:`~napari_perfroi.segment.postprocess.plausible_labels`, is resampled
  to the image.
- **Scar**: a U-Net sees the image and the myocardium mask and gives a scar
  logit per pixel. Three models differ only in how they were trained
  (:mod:`.train`): ``pixel`` on true scar masks, ``slice`` on one "has scar"
  bit per slice, ``stack`` on one bit per study. The scar probability is the
  sigmoid inside the myocardium; :func:`detect_scar` thresholds it (the
  threshold stored with each model) and refines the mask
  (:func:`refine_scar`).

torch is imported inside the functions that need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..segment.model import LoadedModel, load_model
from ..study import LV_BLOOD, MYOCARDIUM

KINDS = ("myocardium", "pixel", "slice", "stack")
SCAR_SUPERVISIONS = KINDS[1:]
WEIGHTS_DIR = Path(__file__).parent / "weights"
PERCENTILES = (1.0, 99.5)  # mapped to 0 and 1
VALUE_RANGE = (-0.5, 2.0)
VIEWS = ((), (-2, -1))  # as is, and turned by 180 degrees
MIN_SCAR_AREA_MM2 = 15.0  # smaller scar components are dropped as noise


@dataclass
class LgeSegmentation:
    labels: np.ndarray  # uint8 (S, Y, X): 0 background, 1 LV blood, 2 myocardium, 3 RV blood
    lv_found: list[bool]  # per slice; False -> that slice's labels are empty
    confidence: np.ndarray  # float32 (S,): lower of LV cavity and myocardium soft Dice; 0 if no LV
    device: str


def weights_path(kind: str) -> Path:
    """The shipped weights of ``kind`` (one of ``KINDS``)."""
    if kind not in KINDS:
        raise InputError(f"unknown LGE model {kind!r} (expected one of {', '.join(KINDS)})")
    return WEIGHTS_DIR / f"lge_{kind}.safetensors"


def load_lge_model(kind_or_path: str | Path = "myocardium", device: str = "auto") -> LoadedModel:
    """The shipped model of a kind (``KINDS``) or the weights at a path; safetensors only,
    checked against the sha256 in the metadata beside them."""
    path = weights_path(kind_or_path) if kind_or_path in KINDS else Path(kind_or_path)
    return load_model(path, device)


def normalised(image: np.ndarray) -> np.ndarray:
    """A (Y, X) slice with its 1st percentile at 0 and its 99.5th at 1, clamped, float32."""
    image = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = np.percentile(image, PERCENTILES)
    scale = high - low if high - low > 1e-6 else 1.0
    return np.clip((image - low) / scale, *VALUE_RANGE).astype(np.float32)


def slice_inputs(image: np.ndarray, grid, myocardium: np.ndarray | None = None):
    """The model input on ``grid``, a float32 torch tensor: (1, h, w), the normalised slice;
    or with a myocardium mask (scar models) (2, h, w), the normalised slice minus its median
    over the myocardium (enhancement over mostly remote myocardium), and the mask."""
    import torch

    values = normalised(image)
    channels = [torch.from_numpy(values)]
    if myocardium is not None:
        myocardium = np.asarray(myocardium, dtype=bool)
        if myocardium.any():
            channels[0] -= float(np.median(values[myocardium]))
        channels.append(torch.from_numpy(myocardium.astype(np.float32)))
    on_grid = grid.from_image(torch.stack(channels), np.zeros((len(channels), 2)))
    if myocardium is not None:
        on_grid[1] = (on_grid[1] >= 0.5).float()
    return on_grid


def segment_lge(image: np.ndarray, spacing_mm, model: LoadedModel | None = None,
                progress=None, tta: bool = True) -> LgeSegmentation:
    """Labels (S, Y, X) of an LGE stack (S, Y, X) with pixel spacing (row, col) in mm.

    ``progress(done, total)`` is called per slice; it may raise to cancel.
    """
    import torch

    from ..segment.features import GRID_MM
    from ..segment.postprocess import plausible_labels

    image, grid = _stack_and_grid(image, spacing_mm)
    model = model or load_lge_model("myocardium")
    views = VIEWS if tta else VIEWS[:1]
    labels = np.zeros(image.shape, dtype=np.uint8)
    confidence = np.zeros(len(image), dtype=np.float32)
    lv_found = []
    with torch.inference_mode():
        for s in range(len(image)):
            probabilities = _mean_probabilities(model, slice_inputs(image[s], grid), views,
                                                torch.softmax)
            cleaned = plausible_labels(probabilities.argmax(dim=0).numpy().astype(np.uint8),
                                       GRID_MM)
            lv_found.append(bool(cleaned.any()))
            if lv_found[-1]:
                allowed = _near_cleaned(torch.from_numpy(cleaned), probabilities.shape[0])
                on_image = grid.to_image(probabilities * allowed, np.zeros((1, 2)))[0]
                labels[s] = on_image.argmax(dim=0).numpy().astype(np.uint8)
                confidence[s] = _soft_dice(on_image, labels[s])
            if progress is not None:
                progress(s + 1, len(image))
    return LgeSegmentation(labels=labels, lv_found=lv_found, confidence=confidence,
                           device=model.device)


def scar_probability(image: np.ndarray, myocardium: np.ndarray, spacing_mm,
                     supervision: str = "slice", model: LoadedModel | None = None,
                     progress=None) -> np.ndarray:
    """Scar probability (S, Y, X) float32 of an LGE stack, 0 outside ``myocardium``
    (S, Y, X), a mask: nonzero is myocardium (pass ``labels == MYOCARDIUM``)."""
    import torch

    image, grid = _stack_and_grid(image, spacing_mm)
    myocardium = _myocardium_mask(myocardium, image.shape)
    model = model or load_lge_model(_supervision(supervision))
    probability = np.zeros(image.shape, dtype=np.float32)
    with torch.inference_mode():
        for s in range(len(image)):
            if myocardium[s].any():
                inputs = slice_inputs(image[s], grid, myocardium[s])
                logits = _mean_probabilities(model, inputs, VIEWS, lambda x, dim: x)
                on_image = grid.to_image(torch.sigmoid(logits), np.zeros((1, 2)))[0, 0]
                probability[s] = np.where(myocardium[s], on_image.numpy(), 0.0)
            if progress is not None:
                progress(s + 1, len(image))
    return probability


def detect_scar(image: np.ndarray, myocardium: np.ndarray, spacing_mm,
                supervision: str = "slice", model: LoadedModel | None = None,
                threshold: float | None = None, progress=None) -> np.ndarray:
    """Scar mask (S, Y, X) bool: :func:`scar_probability` above the model's threshold (or
    ``threshold``), refined by :func:`refine_scar`."""
    model = model or load_lge_model(_supervision(supervision))
    if threshold is None:
        threshold = float(model.metadata.get("threshold", 0.5))
    probability = scar_probability(image, myocardium, spacing_mm, model=model, progress=progress)
    return refine_scar(probability > threshold, myocardium, spacing_mm)


def refine_scar(candidate: np.ndarray, myocardium: np.ndarray, spacing_mm,
                min_area_mm2: float = MIN_SCAR_AREA_MM2) -> np.ndarray:
    """Scar (S, Y, X) bool: the candidate inside the myocardium, with dark cores enclosed by
    scar and the LV cavity (microvascular obstruction) added and components smaller than
    ``min_area_mm2`` dropped."""
    scar = np.array(candidate, dtype=bool).reshape(-1, *np.shape(candidate)[-2:])
    myocardium = _myocardium_mask(myocardium, scar.shape)
    scar &= myocardium
    min_pixels = min_area_mm2 / float(np.prod(_spacing(spacing_mm)))
    for s in range(len(scar)):
        if not scar[s].any():
            continue
        cavity = ndimage.binary_fill_holes(myocardium[s]) & ~myocardium[s]
        scar[s] |= ndimage.binary_fill_holes(scar[s] | cavity) & myocardium[s]
        components, n = ndimage.label(scar[s])
        sizes = np.bincount(components.ravel(), minlength=n + 1)
        scar[s] = (sizes >= min_pixels)[components] & (components > 0)
    return scar


def _mean_probabilities(model: LoadedModel, inputs, views, activation):
    """(C, h, w) mean over ``views`` of the network's activated output."""
    import torch

    batch = torch.stack([inputs.flip(axes) for axes in views])
    output = model.network(batch.to(model.device, memory_format=torch.channels_last))
    return torch.stack([activation(output[i].float().cpu(), dim=0).flip(axes)
                        for i, axes in enumerate(views)]).mean(dim=0)


def _near_cleaned(cleaned, n_classes):
    """(C, h, w): each class allowed only within a grid pixel of where it survived cleaning,
    so boundaries still fall between grid points when resampled to the image."""
    import torch.nn.functional as F

    one_hot = F.one_hot(cleaned.long(), n_classes).permute(2, 0, 1).float()
    allowed = F.max_pool2d(one_hot[None], 3, stride=1, padding=1)[0]
    allowed[0] = 1.0
    return allowed


def _soft_dice(probabilities, labels: np.ndarray) -> float:
    """The lower of the LV cavity's and the myocardium's soft Dice (probabilities (C, Y, X))."""
    scores = []
    for k in (LV_BLOOD, MYOCARDIUM):
        p = probabilities[k].numpy()
        mask = labels == k
        total = p.sum() + mask.sum()
        scores.append(2 * float(p[mask].sum()) / total if total > 0 else 0.0)
    return min(scores)


def _stack_and_grid(image, spacing_mm):
    from ..segment.features import Grid

    image = np.asarray(image)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or min(image.shape) < 1:
        raise InputError(f"LGE image must be (S, Y, X), got shape {image.shape}")
    return image, Grid.for_image(image.shape[1:], _spacing(spacing_mm))


def _spacing(spacing_mm) -> tuple[float, float]:
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (2,))
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"pixel spacing must be two positive numbers (mm), got {spacing_mm!r}")
    return float(spacing[0]), float(spacing[1])


def _myocardium_mask(myocardium, shape) -> np.ndarray:
    mask = np.asarray(myocardium) != 0
    if mask.ndim == 2:
        mask = mask[None]
    if mask.shape != tuple(shape):
        raise InputError(f"myocardium mask shape {mask.shape} does not match the image "
                         f"{tuple(shape)}")
    return mask


def _supervision(supervision: str) -> str:
    if supervision not in SCAR_SUPERVISIONS:
        raise InputError(f"unknown scar supervision {supervision!r} "
                         f"(expected one of {', '.join(SCAR_SUPERVISIONS)})")
    return supervision
