"""Open a large study store in napari: time to the first frame on screen, and peak memory.

Usage: python benchmarks/bench_open.py [--repeat N]

The store (12 slices x 600 dynamics x 384 x 384 uint16, 2.1 GB of frames: a
long whole-heart multi-slice acquisition) is built once under
``benchmarks/_work/`` and reused. Each measurement runs in a fresh process
with a real napari window (under ``xvfb-run`` when there is no display):
the clock starts at ``viewer.open(store)`` and stops when the first frame has
been drawn. The first study opened in a napari session also pays one-time
imports (dask, zarr) and napari's own first-layer set-up; the next study of a
collection (a hard-linked twin of the store) shows the steady cost.
Targets: <= 1 s and <= 500 MB peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from _common import measure_in_fresh_process

WORK = Path(__file__).resolve().parent / "_work"
SHAPE = (12, 600, 384, 384)  # (S, T, Y, X)
TARGET_SECONDS = 1.0
TARGET_RSS_MB = 500.0


# ---------------------------------------------------------------- the store
def store_path() -> Path:
    return WORK / ("bench-" + "x".join(map(str, SHAPE)) + ".zarr")


def synthetic_series(shape=SHAPE, seed: int = 0) -> np.ndarray:
    """Perfusion-like frames: a bright disc that enhances and washes out, plus noise."""
    n_slices, n_times, n_rows, n_cols = shape
    rng = np.random.default_rng(seed)
    rows, cols = np.ogrid[:n_rows, :n_cols]
    radius_sq = (rows - n_rows / 2) ** 2 + (cols - n_cols / 2) ** 2
    disc = (radius_sq < (n_rows / 8) ** 2).astype(np.float32)
    times = np.arange(n_times, dtype=np.float32)
    enhancement = 1500 * (times / 20) ** 2 * np.exp(-times / 10)  # gamma-variate bolus
    image = np.empty(shape, dtype=np.uint16)
    for s in range(n_slices):
        for t in range(n_times):
            noise = rng.normal(200, 40, size=(n_rows, n_cols)).astype(np.float32)
            image[s, t] = np.clip(noise + enhancement[t] * disc, 0, 65535)
    return image


def build_store(path: Path) -> None:
    from napari_perfroi.study import Study

    n_slices, n_times = SHAPE[:2]
    print(f"building {path} ({np.prod(SHAPE) * 2 / 1e9:.2f} GB of frames) ...", flush=True)
    start = time.perf_counter()
    Study.create(
        path,
        synthetic_series(),
        pixel_spacing_mm=(1.8, 1.8),
        slice_thickness_mm=8.0,
        frame_times_s=np.tile(np.arange(n_times) * 0.8, (n_slices, 1)),
        slice_positions_mm=np.arange(n_slices) * 10.0,
        source={"importer": "benchmark", "description": "synthetic perfusion-like series"},
        overwrite=True,
    )
    print(f"built in {time.perf_counter() - start:.0f} s", flush=True)


def ensure_store() -> Path:
    from napari_perfroi.study import StoreError, Study

    path = store_path()
    try:
        Study.open(path)
    except StoreError:
        WORK.mkdir(parents=True, exist_ok=True)
        build_store(path)
    return path


# ---------------------------------------------------------------- one measurement
def next_study_path(path: Path) -> Path:
    """A second study with the same frames (hard links), as the next one of a collection."""
    twin = path.with_name(path.name.replace("bench-", "bench-next-"))
    if not twin.exists():
        shutil.copytree(path, twin, copy_function=os.link)
    return twin


def open_and_draw(viewer, path: Path) -> float:
    """Seconds from ``viewer.open(path)`` until its first frame is drawn."""
    start = time.perf_counter()
    viewer.open(path, plugin="napari-perfroi")
    frame = viewer.screenshot(canvas_only=True, flash=False)  # renders the canvas now
    seconds = time.perf_counter() - start
    if frame[..., :3].max() == 0:
        raise RuntimeError(f"{path.name}: the first frame rendered black")
    return seconds


def measure(path: Path, next_path: Path) -> dict[str, float]:
    """In this (fresh) process: start napari, open the store, then the next study."""
    import napari
    import psutil

    viewer = napari.Viewer(show=True)
    napari.qt.get_qapp().processEvents()
    rss_before = psutil.Process().memory_info().rss

    first = open_and_draw(viewer, path)
    viewer.layers.clear()
    following = open_and_draw(viewer, next_path)

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    viewer.close()
    return {
        "first_open_s": first,
        "next_open_s": following,
        "rss_before_open_mb": rss_before / 2**20,
        "peak_rss_mb": peak_mb,
    }


def run_fresh(path: Path, next_path: Path) -> dict[str, float]:
    return measure_in_fresh_process(__file__, str(path), str(next_path))


# ---------------------------------------------------------------- report
def print_table(path: Path, runs: list[dict[str, float]]) -> None:
    baseline = statistics.median(r["rss_before_open_mb"] for r in runs)
    size_gb = sum(f.stat().st_size for f in (path / "0").rglob("*") if f.is_file()) / 1e9
    print(f"\nstore {path.name}: shape {SHAPE} uint16, "
          f"{np.prod(SHAPE) * 2 / 1e9:.2f} GB of frames ({size_gb:.2f} GB on disk)")
    print(f"{'measure':<44}{'median':>9}{'worst':>9}{'target':>9}  ok")
    rows = [
        ("open -> first frame, first study (s)", "first_open_s", TARGET_SECONDS),
        ("open -> first frame, next study (s)", "next_open_s", TARGET_SECONDS),
        ("peak RSS of the napari process (MiB)", "peak_rss_mb", TARGET_RSS_MB),
    ]
    for label, key, target in rows:
        values = [r[key] for r in runs]
        median, worst = statistics.median(values), max(values)
        print(f"{label:<44}{median:>9.3f}{worst:>9.3f}{target:>9.1f}  "
              f"{'yes' if worst <= target else 'NO'}")
    print(f"(napari alone, before opening: {baseline:.0f} MiB RSS; "
          f"{len(runs)} fresh napari processes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes to measure")
    parser.add_argument("--measure", type=Path, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    path = ensure_store()
    next_path = next_study_path(path)
    runs = [run_fresh(path, next_path) for _ in range(args.repeat)]
    print_table(path, runs)


if __name__ == "__main__":
    main()
