"""Accuracy of the AHA sector geometry (the "aha" step) on phantoms with known truth.

Per seed, the reference-frame labels of every slice go through
``aha.segment_geometry``: the phantom's true labels, or with --predicted
those of the motion and segment steps run on a phantom store. Reported:

- insertion angle error: detected vs true RV insertion angles, degrees,
  paired the best way round; "label centroid" is what segment_geometry
  does, "true centre" (true labels only) runs the detector about the
  phantom's true LV centre, as the truth is defined;
- assignment errors: slices whose anterior / inferior labels are swapped;
- sector agreement: fraction of myocardium pixels (labelled myocardium in
  both the labels used and the truth) with the true segment;
  all on the phantom's reference frame of each slice, where the truth is defined;
- fallbacks: slices that took another slice's insertion points.

    python benchmarks/bench_aha.py [--seeds 1000-1019] [--predicted]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import seed_range
from napari_perfroi import aha
from napari_perfroi.phantom import generate_phantom, write_phantom
from napari_perfroi.pipeline import run_step
from napari_perfroi.study import MYOCARDIUM, Study

MEDIAN_TARGET_DEG = 5.0


def at_reference(labels: np.ndarray, reference: list[int]) -> np.ndarray:
    """(S, Y, X) labels of each slice's reference frame from (S, T, Y, X) ones."""
    return np.stack([labels[k, t] for k, t in enumerate(reference)])


def truth_case(seed: int) -> dict:
    phantom = generate_phantom(seed)
    reference = phantom.attrs["reference_frame"]
    truth_labels = at_reference(phantom.truth["labels"], reference)
    return {
        "labels": truth_labels,
        "truth_labels": truth_labels,
        "levels": phantom.attrs["slice_levels"],
        "spacing": phantom.attrs["pixel_spacing_mm"],
        "orientation": phantom.extra["image_orientation_patient"],
        "truth": phantom.extra["truth"],
        "aha": phantom.truth["aha"],
    }


def predicted_case(seed: int, workdir: Path) -> dict:
    study = write_phantom(workdir / f"phantom-{seed}.zarr", seed)
    reference = study.attrs["reference_frame"]  # the truth's; the motion step picks its own
    study = Study.open(study.path, writable=True)
    run_step(study, "motion")
    run_step(study, "segment")
    attrs = study.attrs
    return {
        "labels": at_reference(study.read("labels"), reference),
        "truth_labels": at_reference(study.read("truth/labels"), reference),
        "levels": attrs["slice_levels"],
        "spacing": attrs["pixel_spacing_mm"],
        "orientation": attrs.get("image_orientation_patient"),
        "truth": attrs["truth"],
        "aha": study.read("truth/aha"),
    }


def paired_errors(found: tuple[float, float], truth: tuple[float, float]) -> tuple[list, bool]:
    """Absolute errors of the better pairing, and whether that pairing swaps the two."""

    def error(a, b):
        return abs(float(np.mod(a - b + 180.0, 360.0) - 180.0))

    kept = [error(found[0], truth[0]), error(found[1], truth[1])]
    swapped = [error(found[0], truth[1]), error(found[1], truth[0])]
    return (swapped, True) if sum(swapped) < sum(kept) else (kept, False)


def evaluate(case: dict) -> dict:
    started = time.perf_counter()
    geometry = aha.segment_geometry(case["labels"], case["levels"], case["orientation"],
                                    case["spacing"])
    seconds = time.perf_counter() - started
    true_centre_errors, centroid_errors, swaps = [], [], 0
    for k, truth in enumerate(case["truth"]["rv_insertion_deg"]):
        if case["labels"] is case["truth_labels"]:
            centre = case["truth"]["lv_centre_px"][k]
            found = aha.rv_insertion_points_deg(case["labels"][k], centre, case["spacing"])
            if found is not None:
                true_centre_errors += paired_errors(found, truth)[0]
        errors, swapped = paired_errors(geometry.rv_insertion_deg[k], truth)
        centroid_errors += errors
        swaps += swapped
    both = (case["labels"] == MYOCARDIUM) & (case["truth_labels"] == MYOCARDIUM)
    return {
        "true_centre": true_centre_errors,
        "centroid": centroid_errors,
        "swaps": swaps,
        "slices": len(case["levels"]),
        "agree": int(np.sum(geometry.aha[both] == case["aha"][both])),
        "pixels": int(both.sum()),
        "messages": geometry.messages,
        "seconds": seconds,
    }


def describe(name: str, errors: list[float]) -> str:
    e = np.asarray(errors)
    return (f"  {name:15s} median {np.median(e):5.2f}, 95th percentile "
            f"{np.percentile(e, 95):5.2f}, max {e.max():5.2f} deg ({e.size} points)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1000-1019", help="phantom seeds (default 1000-1019)")
    parser.add_argument("--predicted", action="store_true",
                        help="labels from the motion and segment steps instead of the truth")
    args = parser.parse_args()
    seeds = seed_range(args.seeds)
    source = "predicted" if args.predicted else "true"
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            case = predicted_case(seed, Path(tmp)) if args.predicted else truth_case(seed)
            result = evaluate(case)
            results.append(result)
            worst = max(result["centroid"])
            print(f"  seed {seed}: worst insertion error {worst:5.2f} deg, sector agreement "
                  f"{result['agree'] / max(result['pixels'], 1):.3f}, {result['swaps']} swapped"
                  + "".join(f"; {m}" for m in result["messages"]), flush=True)

    def pooled(name):
        return [x for r in results for x in r[name]]

    slices = sum(r["slices"] for r in results)
    print(f"\nAHA geometry on {source} labels, seeds {seeds[0]}-{seeds[-1]}, {slices} slices")
    print("Insertion angle error:")
    print(describe("label centroid", pooled("centroid")))
    if not args.predicted:
        print(describe("true centre", pooled("true_centre")))
    median = float(np.median(pooled("centroid")))
    print(f"  median target <= {MEDIAN_TARGET_DEG:.0f} deg: "
          f"{'met' if median <= MEDIAN_TARGET_DEG else 'MISSED'}")
    print(f"Assignment errors (anterior / inferior swapped): "
          f"{sum(r['swaps'] for r in results)} of {slices} slices")
    print(f"Fallbacks (another slice's insertion points): "
          f"{sum(len(r['messages']) for r in results)} slices")
    agreement = sum(r["agree"] for r in results) / max(sum(r["pixels"] for r in results), 1)
    per_study = [r["agree"] / max(r["pixels"], 1) for r in results]
    print(f"Sector agreement with the truth: {agreement:.4f} of myocardium pixels "
          f"(worst study {min(per_study):.4f})")
    print(f"segment_geometry: {1000 * np.mean([r['seconds'] for r in results]):.0f} ms per study")


if __name__ == "__main__":
    main()
