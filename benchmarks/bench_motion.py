"""Accuracy and speed of motion estimation on phantoms with known motion.

Usage: python benchmarks/bench_motion.py [--seeds 1000-1019]

Errors are per frame, over all slices and frames, with estimate and truth both
expressed relative to the estimated reference frame.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import seed_range
from napari_perfroi.motion import estimate_motion, max_shift_px
from napari_perfroi.phantom import generate_phantom


def study_errors(seed: int) -> tuple[np.ndarray, float, float]:
    """Absolute per-frame shift errors (px), pixel spacing (mm) and seconds for one phantom."""
    phantom = generate_phantom(seed)
    truth = phantom.truth["motion"]
    start = time.perf_counter()
    errors = []
    for s, series in enumerate(phantom.image):
        result = estimate_motion(
            series, max_shift_px=max_shift_px(phantom.attrs["pixel_spacing_mm"])
        )
        truth_rel = truth[s] - truth[s, result.reference_frame]
        errors.append(np.linalg.norm(result.shifts - truth_rel, axis=1))
    seconds = time.perf_counter() - start
    return np.concatenate(errors), phantom.params.pixel_spacing_mm, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1000-1019", help="seed or range, e.g. 1000-1019")
    args = parser.parse_args()

    print(f"{'seed':>6} {'median px':>10} {'p95 px':>8} {'median mm':>10} {'p95 mm':>8} {'s/study':>8}")
    all_errors, all_seconds = [], []
    for seed in seed_range(args.seeds):
        errors, spacing, seconds = study_errors(seed)
        median, p95 = np.median(errors), np.percentile(errors, 95)
        print(
            f"{seed:>6} {median:>10.3f} {p95:>8.3f} {median * spacing:>10.3f} "
            f"{p95 * spacing:>8.3f} {seconds:>8.2f}"
        )
        all_errors.append(errors)
        all_seconds.append(seconds)
    pooled = np.concatenate(all_errors)
    per_seed_medians = [np.median(e) for e in all_errors]
    print(
        f"overall: median {np.median(pooled):.3f} px, p95 {np.percentile(pooled, 95):.3f} px, "
        f"worst seed median {max(per_seed_medians):.3f} px, "
        f"{np.mean(all_seconds):.2f} s per study (mean)"
    )


if __name__ == "__main__":
    main()
