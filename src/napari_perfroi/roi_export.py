"""Export reviewed circles: a CSV row per frame and LV-centred crops for downstream AI."""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

import numpy as np
from scipy import ndimage

from .errors import InputError
from .roi import frames_with_circle, mean_spacing, read_review
from .study import ROI_STATES, atomic_write_text, replace_dir

CSV_COLUMNS = ("study", "slice", "frame", "time_s", "row", "col", "radius_px", "radius_mm", "state")
DEFAULT_CROP_MM = 96.0
DEFAULT_CROP_SPACING_MM = 1.0


def write_roi_csv(path: str | os.PathLike, study, roi: np.ndarray, states: np.ndarray) -> Path:
    """One row per frame with a circle (replaced atomically); returns the path."""
    path = Path(path)
    times = study.frame_times_s
    spacing = mean_spacing(study.pixel_spacing_mm)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for s, t in frames_with_circle(roi):
        row, col, radius = (float(v) for v in roi[s, t])
        writer.writerow([
            study.name, int(s), int(t), f"{times[s, t]:.4f}", f"{row:.3f}", f"{col:.3f}",
            f"{radius:.3f}", f"{radius * spacing:.3f}", ROI_STATES.get(int(states[s, t]), "none"),
        ])
    atomic_write_text(path, text.getvalue())
    return path


def lv_crops(study, roi: np.ndarray, crop_mm: float = DEFAULT_CROP_MM,
             spacing_mm: float = DEFAULT_CROP_SPACING_MM) -> np.ndarray:
    """(S, T, n, n) float32 crops of ``crop_mm`` at ``spacing_mm`` centred on each circle.

    Bilinear resampling of the raw image; NaN for frames without a circle,
    zero outside the image.
    """
    if crop_mm <= 0 or spacing_mm <= 0:
        raise InputError(f"crop size and spacing must be positive (got {crop_mm}, {spacing_mm} mm)")
    n = int(round(crop_mm / spacing_mm))
    offsets_mm = (np.arange(n) - (n - 1) / 2) * spacing_mm
    row_step, col_step = study.pixel_spacing_mm
    image = study.zarr_array("image")
    crops = np.full((*roi.shape[:2], n, n), np.nan, dtype=np.float32)
    for s, t in frames_with_circle(roi):
        rows = roi[s, t, 0] + offsets_mm / row_step
        cols = roi[s, t, 1] + offsets_mm / col_step
        grid = np.meshgrid(rows, cols, indexing="ij")
        crops[s, t] = ndimage.map_coordinates(
            np.asarray(image[s, t], dtype=np.float32), grid, order=1, mode="constant", cval=0.0
        )
    return crops


def export_rois(study, out_dir: str | os.PathLike, crop_mm: float = DEFAULT_CROP_MM,
                spacing_mm: float = DEFAULT_CROP_SPACING_MM) -> list[Path]:
    """Write ``rois.csv`` and ``crops.zarr`` (S, T, n, n) into ``out_dir``; return both paths."""
    import zarr

    if not study.has("roi"):
        raise InputError(f"{study.path}: no circles to export (run the roi step first)")
    roi, states = read_review(study)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = write_roi_csv(out_dir / "rois.csv", study, roi, states)
    crops = lv_crops(study, roi, crop_mm, spacing_mm)
    target = out_dir / "crops.zarr"
    staging = out_dir / ".crops.zarr.partial"
    shutil.rmtree(staging, ignore_errors=True)
    array = zarr.create_array(staging, shape=crops.shape, dtype="float32",
                              chunks=(1, 1, *crops.shape[2:]), fill_value=np.nan, zarr_format=3)
    array[...] = crops
    array.attrs.update({"study": study.name, "crop_mm": crop_mm, "spacing_mm": spacing_mm,
                        "axes": "slice, frame, row, col", "centre": "the frame's LV circle"})
    replace_dir(staging, target)
    return [csv_path, target]
