"""Small study stores built for the napari tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_perfroi.study import Study

SHAPE = (3, 40, 48, 56)  # (S, T, Y, X): enough frames that reading them all would show
PIXEL_SPACING_MM = (1.5, 1.8)
SLICE_POSITIONS_MM = (0.0, 10.0, 20.0)
# Frames with an LV circle and their review state (2 edited, 4 accepted).
ROI_FRAMES = {
    (0, 3): ((20.0, 25.0, 8.0), 2),
    (1, 17): ((22.5, 30.0, 6.5), 4),
    (2, 39): ((24.0, 28.0, 5.0), 4),
}


def _image(shape=SHAPE) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(50, 1500, size=shape, dtype=np.uint16)


def create_store(path: Path, shape=SHAPE) -> Study:
    n_slices, n_times = shape[:2]
    return Study.create(
        path,
        _image(shape),
        pixel_spacing_mm=PIXEL_SPACING_MM,
        slice_thickness_mm=8.0,
        frame_times_s=np.tile(np.arange(n_times, dtype=float), (n_slices, 1)),
        slice_positions_mm=SLICE_POSITIONS_MM[:n_slices],
        source={"importer": "test"},
    )


def add_derived_arrays(study: Study) -> None:
    """Write labels, roi (+ state), mbf, aha and truth/labels as the steps would."""
    rng = np.random.default_rng(2)
    study = Study.open(study.path, writable=True)
    n_slices, n_times, n_rows, n_cols = study.shape
    labels = rng.integers(0, 4, size=study.shape, dtype=np.uint8)
    roi = np.full((n_slices, n_times, 3), np.nan, dtype=np.float32)
    roi_state = np.zeros((n_slices, n_times), dtype=np.uint8)
    for (s, t), (circle, state) in ROI_FRAMES.items():
        roi[s, t] = circle
        roi_state[s, t] = state
    mbf = np.full((n_slices, n_rows, n_cols), np.nan, dtype=np.float32)
    mbf[:, 10:30, 10:30] = rng.uniform(0.5, 4.0, size=(n_slices, 20, 20))
    aha = np.zeros((n_slices, n_rows, n_cols), dtype=np.uint8)
    aha[:, 10:30, 10:30] = rng.integers(1, 17, size=(n_slices, 20, 20))
    study.write("labels", labels)
    study.write("roi", roi)
    study.write("roi_state", roi_state)
    study.write("mbf", mbf)
    study.write("aha", aha)
    study.write("truth/labels", labels[::-1].copy())
