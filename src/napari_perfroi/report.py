"""Summaries and pictures of a study store (PNG via matplotlib's Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def montage_frames(n_frames: int, n_columns: int) -> list[int]:
    """Frame indices spread evenly over the series, first and last included."""
    return sorted({int(round(i)) for i in np.linspace(0, n_frames - 1, min(n_columns, n_frames))})


# Outline colour -> the label values inside it: epicardium, endocardium, RV.
LABEL_OUTLINES = {"yellow": (1, 2), "red": (1,), "royalblue": (3,)}


def save_montage(study, path: str | Path, n_columns: int = 8) -> Path:
    """Save a grid of frames: one row per slice, columns spread over time.

    Outlines of the epicardium (yellow), endocardium (red) and RV (blue) and
    the LV circle (dashed white) are drawn when the study has them. Only the
    frames shown are read.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    n_slices, n_frames, n_rows, n_cols = study.shape
    frames = montage_frames(n_frames, n_columns)
    shown = study.image[:, frames].compute().astype(np.float32)
    labels = study.zarr_array("labels")[:, frames] if study.has("labels") else None
    circles = study.read("roi")[:, frames] if study.has("roi") else None
    low, high = np.percentile(shown, [1, 99.7])
    times = study.frame_times_s
    levels = study.attrs["slice_levels"]
    aspect = study.pixel_spacing_mm[0] / study.pixel_spacing_mm[1]
    cell = 1.6
    fig, axes = plt.subplots(
        n_slices, len(frames), squeeze=False,
        figsize=(cell * len(frames), cell * n_slices * aspect * n_rows / n_cols + 0.4),
    )
    for s in range(n_slices):
        for j, t in enumerate(frames):
            ax = axes[s, j]
            ax.imshow(shown[s, j], cmap="gray", vmin=low, vmax=high, aspect=aspect)
            if labels is not None:
                for colour, values in LABEL_OUTLINES.items():
                    inside = np.isin(labels[s, j], values)
                    if inside.any():
                        ax.contour(inside, levels=[0.5], colors=colour, linewidths=0.6)
            if circles is not None and np.all(np.isfinite(circles[s, j])):
                row, col, radius = circles[s, j]
                ax.add_patch(plt.Circle((col, row), radius, fill=False, color="white",
                                        linestyle="--", linewidth=0.6))
            ax.set_xticks([])
            ax.set_yticks([])
            if s == 0:
                ax.set_title(f"t = {times[s, t]:.1f} s", fontsize=8)
            if j == 0:
                ax.set_ylabel(levels[s], fontsize=8)
    fig.suptitle(f"{study.name}: {n_slices} slices x {n_frames} frames", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def study_summary(study) -> str:
    """A few lines describing a study store."""
    attrs = study.attrs
    n_slices, n_frames, n_rows, n_cols = study.shape
    times = np.asarray(attrs["frame_times_s"], dtype=float)
    intervals = np.diff(times, axis=1)
    source = attrs["source"]
    lines = [
        f"study      {study.path}",
        f"image      {n_slices} slices x {n_frames} frames x {n_rows} x {n_cols}"
        f" ({study.zarr_array('image').dtype})",
        f"pixels     {attrs['pixel_spacing_mm'][0]:.2f} x {attrs['pixel_spacing_mm'][1]:.2f} mm,"
        f" slice thickness {attrs['slice_thickness_mm']:.1f} mm",
        f"slices     {', '.join(attrs['slice_levels'])} (base -> apex)",
        f"timing     {times[:, -1].max():.1f} s, frame interval"
        f" {np.median(intervals):.2f} s (range {intervals.min():.2f}-{intervals.max():.2f})"
        if n_frames > 1 else "timing     single frame",
        f"source     {_describe_source(source)}",
        f"arrays     {', '.join(study.arrays())}",
    ]
    return "\n".join(lines)


def _describe_source(source: dict) -> str:
    if "description" in source:
        return source["description"]
    parts = [
        ", ".join(source.get("series", [])),
        ", ".join(source.get("manufacturer", [])),
        f"{source['n_files']} files" if "n_files" in source else "",
        f"frames ordered by {source['time_source']}" if "time_source" in source else "",
    ]
    return f"{source.get('format', source.get('importer', '?'))}: " + "; ".join(p for p in parts if p)
