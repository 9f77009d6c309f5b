"""Segmentation accuracy and speed of the shipped model on phantoms it never saw.

Accuracy: for each unseen seed the phantom is generated, its motion is
estimated (the motion step, not the truth), and every frame is segmented and
compared with the true labels of that frame: Dice per class (mean over
frames that have the class in the truth or the prediction) and the
myocardium's Hausdorff distance (mm). A second table repeats this on the
hard cases the model must handle (fine matrices, small hearts, strong coil
shading, proton-density frames, saturated blood, single slices). A third,
"scanner-like", uses the scanner-like phantom family with its held-out
settings (never drawn in training, ``phantom_scanner.HELD_OUT_SETTINGS``):
Dice, Hausdorff, the LV circle's centre and radius error (mm, the circle of
the predicted labels against the circle of the true labels, every frame),
and how well the uncertainty flag finds bad slices (myocardium Dice below
``BAD_SLICE_DICE``): precision and recall.

Speed: the segment step on a 3-slice x 60-frame study store whose motion is
already estimated, with model loading (checksum, weights) and the store read
and write included, median of repeats; the one-off torch import and the
motion step are printed separately.

    python benchmarks/bench_segmentation.py [--seeds 1000-1019] [--cases 5] [--scanner 20]
        [--model WEIGHTS]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import seed_range
from napari_perfroi.motion import estimate_motion, max_shift_px
from napari_perfroi.phantom import generate_phantom, write_phantom
from napari_perfroi.phantom_scanner import HELD_OUT_SETTINGS, scanner_like_phantom
from napari_perfroi.pipeline import run_step
from napari_perfroi.roi import DEFAULT_MARGIN_MM, circle_of_frame
from napari_perfroi.segment.infer import segment_series
from napari_perfroi.segment.metrics import per_frame_scores
from napari_perfroi.segment.model import _load, load_model
from napari_perfroi.study import Study

TARGETS = {"LV blood pool": 0.93, "myocardium": 0.88, "RV blood pool": 0.85}
HARD_CASES = {
    "256x256 at 1.4 mm": {"pixel_spacing_mm": 1.4, "matrix": (256, 256)},
    "small heart": {"lv_radius_mm": 17.0, "wall_thickness_mm": 5.0},
    "strong coil shading": {"coil_shading": 1.0, "coil_width_mm": 55.0},
    "3 proton-density frames": {"n_pd_frames": 3},
    "saturated blood pool": {"lv_peak_mmol": 12.0},
    "single slice": {"n_slices": 1, "acquisition_order": (0,)},
}
HARD_CASE_SEED_BASE = 2000
SCANNER_LIKE_SEED_BASE = 5000
BAD_SLICE_DICE = 0.8


def segment_phantom(model, seed: int, phantom=None, **overrides):
    """(segmentation, phantom) of the phantom of ``seed`` (or the one given), with the
    motion step's motion."""
    phantom = phantom or generate_phantom(seed, **overrides)
    spacing = phantom.attrs["pixel_spacing_mm"]
    search = max_shift_px(spacing)
    motion = np.stack([estimate_motion(s, max_shift_px=search).shifts for s in phantom.image])
    result = segment_series(
        model, phantom.image, motion, np.asarray(phantom.attrs["frame_times_s"]), spacing
    )
    return result, phantom


def evaluate(model, seed: int, **overrides) -> dict[str, np.ndarray]:
    result, phantom = segment_phantom(model, seed, **overrides)
    return per_frame_scores(result.labels, phantom.truth["labels"],
                            phantom.attrs["pixel_spacing_mm"])


def circle_errors_mm(predicted: np.ndarray, truth: np.ndarray, spacing) -> np.ndarray:
    """(frames, 2) centre and absolute radius error (mm) of the LV circles of two label
    series (S, T, Y, X); NaN where either has no LV."""
    pixel_mm = float(np.mean(spacing))
    errors = []
    for p, t in zip(predicted.reshape(-1, *predicted.shape[-2:]),
                    truth.reshape(-1, *truth.shape[-2:])):
        a = circle_of_frame(p, spacing, DEFAULT_MARGIN_MM)
        b = circle_of_frame(t, spacing, DEFAULT_MARGIN_MM)
        errors.append([np.hypot(*(a[:2] - b[:2])) * pixel_mm, abs(a[2] - b[2]) * pixel_mm])
    return np.asarray(errors)


def scanner_like(model, n_studies: int) -> None:
    """The scanner-like table: held-out settings of the realistic phantom family."""
    scores, circles, flagged, bad = [], [], [], []
    for k in range(n_studies):
        seed = SCANNER_LIKE_SEED_BASE + k
        phantom = scanner_like_phantom(seed, np.random.default_rng([seed, 2]), held_out=True)
        result, phantom = segment_phantom(model, seed, phantom)
        truth, spacing = phantom.truth["labels"], phantom.attrs["pixel_spacing_mm"]
        scores.append(per_frame_scores(result.labels, truth, spacing))
        circles.append(circle_errors_mm(result.labels, truth, spacing))
        uncertain = set(result.uncertain_slices())
        for s in range(len(truth)):
            myocardium = per_frame_scores(result.labels[s], truth[s], spacing)["myocardium"]
            flagged.append(s in uncertain)
            bad.append(not np.nanmedian(myocardium) >= BAD_SLICE_DICE)
        print(f"  seed {seed}: Dice " + ", ".join(
            f"{np.nanmean(scores[-1][n]):.3f}" for n in TARGETS), flush=True)
    print(f"\nScanner-like phantoms, held-out settings, {n_studies} studies "
          f"(seeds from {SCANNER_LIKE_SEED_BASE}): " + "; ".join(HELD_OUT_SETTINGS))
    print_table({f"{n_studies} studies": pooled(scores)})
    centre, radius = np.concatenate(circles).T
    print(f"  LV circle centre error: median {np.nanmedian(centre):.2f} mm, "
          f"95th percentile {np.nanpercentile(centre, 95):.2f} mm; radius error median "
          f"{np.nanmedian(radius):.2f} mm; frames without a circle {np.isnan(centre).mean():.1%}")
    flagged, bad = np.asarray(flagged), np.asarray(bad)
    hits = int((flagged & bad).sum())
    precision = hits / flagged.sum() if flagged.any() else float("nan")
    recall = hits / bad.sum() if bad.any() else float("nan")
    print(f"  uncertainty flag: {int(flagged.sum())} of {len(flagged)} slices flagged, "
          f"{int(bad.sum())} bad (myocardium Dice < {BAD_SLICE_DICE}); precision {precision:.2f}, "
          f"recall {recall:.2f}")


def pooled(scores: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([s[name] for s in scores]) for name in scores[0]}


def print_table(rows: dict[str, dict[str, np.ndarray]]) -> None:
    header = f"{'':26s}{'LV pool':>9s}{'myo':>9s}{'RV':>9s}{'myo HD mm':>12s}{'worst myo':>11s}"
    print(header)
    for label, scores in rows.items():
        means = [np.nanmean(scores[name]) for name in TARGETS]
        hd = np.nanmedian(scores["myocardium Hausdorff mm"])
        worst = np.nanmin(scores["myocardium"])
        print(f"{label:26s}" + "".join(f"{m:9.3f}" for m in means) + f"{hd:12.2f}{worst:11.3f}")


def time_segment_step(repeats: int = 5) -> tuple[float, float]:
    """(median seconds of the segment step incl. model load, seconds of the motion step)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "timing.zarr"
        write_phantom(path, seed=3000, n_dynamics=60, n_pd_frames=0)
        study = Study.open(path, writable=True)
        assert study.shape[:2] == (3, 60), study.shape
        started = time.perf_counter()
        run_step(study, "motion")
        motion_s = time.perf_counter() - started
        times = []
        for _ in range(repeats):
            _load.cache_clear()  # load the weights from disk every time
            started = time.perf_counter()
            run_step(study, "segment")
            times.append(time.perf_counter() - started)
    return float(np.median(times)), motion_s


def torch_import_s() -> float:
    code = "import time; t = time.perf_counter(); import torch; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout)


def accuracy(model, seeds: list[int], n_cases: int) -> None:
    per_seed = {}
    for seed in seeds:
        per_seed[seed] = evaluate(model, seed)
        means = ", ".join(f"{np.nanmean(per_seed[seed][n]):.3f}" for n in TARGETS)
        print(f"  seed {seed}: Dice {means}", flush=True)
    overall = pooled(list(per_seed.values()))
    print(f"\nUnseen phantoms, seeds {seeds[0]}-{seeds[-1]}: mean Dice over all frames")
    print_table({f"{len(seeds)} seeds": overall})
    for name, target in TARGETS.items():
        value = np.nanmean(overall[name])
        print(f"  {name}: {value:.3f} (target >= {target:.2f}: {'met' if value >= target else 'MISSED'})")

    rows = {}
    for i, (case, overrides) in enumerate(HARD_CASES.items()):
        base = HARD_CASE_SEED_BASE + 100 * i
        rows[case] = pooled([evaluate(model, base + k, **overrides) for k in range(n_cases)])
        print(f"  {case} done", flush=True)
    print(f"\nHard cases, {n_cases} seeds each (seeds from {HARD_CASE_SEED_BASE})")
    print_table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1000-1019", help="unseen phantom seeds (default 1000-1019)")
    parser.add_argument("--cases", type=int, default=5, help="seeds per hard case (default 5)")
    parser.add_argument("--scanner", type=int, default=20,
                        help="scanner-like studies with held-out settings (default 20)")
    parser.add_argument("--model", default=None, help="weights to measure (default: shipped)")
    parser.add_argument("--speed-only", action="store_true", help="only the speed figures")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.model, device="cpu")
    print(f"model {model.weights_path.name} sha256 {model.sha256[:12]}…, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    if not args.speed_only:
        accuracy(model, seed_range(args.seeds), args.cases)
        scanner_like(model, args.scanner)
    segment_s, motion_s = time_segment_step()
    print("\nSpeed, 3 slices x 60 frames, CPU, 2 threads")
    print(f"  segment step incl. model load, store read and write: {segment_s:.3f} s (target <= 0.5 s)")
    print(f"  motion step (run before, once): {motion_s:.2f} s")
    print(f"  torch import (once per process): {torch_import_s():.2f} s")


if __name__ == "__main__":
    main()
