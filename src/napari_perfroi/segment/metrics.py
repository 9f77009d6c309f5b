"""Segmentation accuracy: Dice per class and Hausdorff distance, per frame."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..study import LV_BLOOD, MYOCARDIUM, RV_BLOOD

CLASS_NAMES = {LV_BLOOD: "LV blood pool", MYOCARDIUM: "myocardium", RV_BLOOD: "RV blood pool"}


def dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; NaN when both are empty."""
    total = int(predicted.sum()) + int(truth.sum())
    return 2.0 * int((predicted & truth).sum()) / total if total else math.nan


def dice_per_class(predicted: np.ndarray, truth: np.ndarray,
                   classes=tuple(CLASS_NAMES)) -> list[float]:
    """Dice of each class over the whole arrays (NaN where neither has the class)."""
    return [dice(predicted == k, truth == k) for k in classes]


def hausdorff_mm(predicted: np.ndarray, truth: np.ndarray, spacing_mm) -> float:
    """Symmetric Hausdorff distance (mm) between two 2D masks; NaN if either is empty."""
    if not predicted.any() or not truth.any():
        return math.nan
    to_truth = ndimage.distance_transform_edt(~truth, sampling=spacing_mm)
    to_predicted = ndimage.distance_transform_edt(~predicted, sampling=spacing_mm)
    return float(max(to_truth[predicted].max(), to_predicted[truth].max()))


def per_frame_scores(predicted: np.ndarray, truth: np.ndarray, spacing_mm) -> dict[str, np.ndarray]:
    """Per frame of (..., Y, X) label maps: Dice of each class and myocardium Hausdorff (mm)."""
    predicted = predicted.reshape(-1, *predicted.shape[-2:])
    truth = truth.reshape(-1, *truth.shape[-2:])
    scores = {name: [] for name in CLASS_NAMES.values()}
    scores["myocardium Hausdorff mm"] = []
    for p, t in zip(predicted, truth):
        for k, name in CLASS_NAMES.items():
            scores[name].append(dice(p == k, t == k))
        scores["myocardium Hausdorff mm"].append(hausdorff_mm(p == MYOCARDIUM, t == MYOCARDIUM, spacing_mm))
    return {name: np.asarray(values) for name, values in scores.items()}
