"""The annotator's label corrections: saved into the store, kept by the segment step.

``labels_edited`` (S, T) marks the frames whose ``labels`` an annotator
painted; running the segment step again keeps those frames, and fine-tuning
learns from them.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

EDITED_LABELS = "labels_edited"


def edited_frames(study) -> np.ndarray:
    """(S, T) bool: frames whose labels the annotator edited."""
    if not study.has(EDITED_LABELS):
        return np.zeros(study.shape[:2], dtype=bool)
    return study.read(EDITED_LABELS).astype(bool)


def save_label_edits(study, labels) -> int:
    """Write ``labels`` (S, T, Y, X) into a writable study, marking the frames that differ
    from the stored labels as edited; the number of newly edited frames.

    The labels are written before the marks, so a mark never refers to unsaved labels.
    """
    labels = np.asarray(labels)
    if labels.shape != study.shape:
        raise InputError(f"{study.path}: labels of shape {labels.shape} do not fit the study "
                         f"{study.shape}")
    if not study.has("labels"):
        raise InputError(f"{study.path}: no labels to edit (run the segment step)")
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 3:
        raise InputError(f"{study.path}: labels must be 0-3 (background, LV blood pool, "
                         "myocardium, RV blood pool)")
    stored = study.read("labels")
    changed = (labels.astype(np.uint8) != stored).any(axis=(2, 3))
    before = edited_frames(study)
    if not changed.any():
        return 0
    study.write("labels", labels.astype(np.uint8))
    study.write(EDITED_LABELS, (before | changed).astype(np.uint8))
    return int((changed & ~before).sum())
