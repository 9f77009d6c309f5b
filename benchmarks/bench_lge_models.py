"""Accuracy and speed of the shipped LGE models on phantoms they never saw.

For each unseen seed the LGE phantom is generated and segmented
(``segment_lge``): Dice of the LV blood pool, myocardium and RV over the
stack. Each scar model (pixel, slice and stack supervision) then runs on the
*predicted* myocardium and, apart, on the true one (its own error without the
segmentation's): scar Dice over the stack in studies with scar (MVO counts
as scar; the mean over studies, and pooled over all their pixels), slice
detection (any scar found against a visible scar: at least
``MIN_SCAR_AREA_MM2``) as sensitivity and specificity, and the share of
myocardium called scar in studies without scar. Rows: all seeds; magnitude
and PSIR apart; and the acquisition settings never drawn in training
(``train.HELD_OUT``: very short and long inversion times, 1.0 mm pixels,
SNR 5), each on its own seeds.

    python benchmarks/bench_lge_models.py [--seeds 1000-1039] [--cases 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _common import seed_range
from napari_perfroi.lge.models import MIN_SCAR_AREA_MM2, SCAR_SUPERVISIONS, detect_scar, \
    load_lge_model, segment_lge
from napari_perfroi.lge.phantom import generate_lge_phantom
from napari_perfroi.lge.train import HELD_OUT
from napari_perfroi.segment.metrics import dice, dice_per_class
from napari_perfroi.study import MYOCARDIUM

HELD_OUT_SEED_BASE = 3000


def evaluate(models: dict, seed: int, **overrides) -> dict:
    """Scores of one phantom: label Dice, and per supervision and myocardium (predicted,
    true) the scar overlap, slice decisions and the false scar share."""
    phantom = generate_lge_phantom(seed, **overrides)
    spacing = phantom.attrs["pixel_spacing_mm"]
    started = time.perf_counter()
    segmentation = segment_lge(phantom.image, spacing, model=models["myocardium"])
    seconds = time.perf_counter() - started
    truth_scar = phantom.scar > 0
    visible = truth_scar.sum(axis=(1, 2)) * float(np.prod(spacing)) >= MIN_SCAR_AREA_MM2
    result = {"kind": phantom.attrs["lge_kind"], "seconds": seconds,
              "labels": dice_per_class(segmentation.labels, phantom.labels), "visible": visible}
    masks = {"predicted": segmentation.labels == MYOCARDIUM, "true": phantom.labels == MYOCARDIUM}
    for supervision in SCAR_SUPERVISIONS:
        for source, myocardium in masks.items():
            found = detect_scar(phantom.image, myocardium, spacing, model=models[supervision])
            result[supervision, source] = {
                "dice": dice(found, truth_scar) if truth_scar.any() else np.nan,
                "overlap": int((found & truth_scar).sum()),
                "total": int(found.sum() + truth_scar.sum()) if truth_scar.any() else 0,
                "slices": found.any(axis=(1, 2)),
                "false_share": np.nan if truth_scar.any()
                else found.sum() / max(1, int(myocardium.sum())),
            }
    return result


def scar_columns(results: list[dict], supervision: str, source: str) -> str:
    scores = [r[supervision, source] for r in results]
    visible = np.concatenate([r["visible"] for r in results])
    found = np.concatenate([s["slices"] for s in scores])
    total = sum(s["total"] for s in scores)
    pooled = 2 * sum(s["overlap"] for s in scores) / total if total else np.nan
    sensitivity = found[visible].mean() if visible.any() else np.nan
    specificity = (~found[~visible]).mean() if (~visible).any() else np.nan
    return (f"{np.nanmean([s['dice'] for s in scores]):7.3f}{pooled:7.3f}{sensitivity:6.2f}"
            f"{specificity:6.2f}{np.nanmean([s['false_share'] for s in scores]):7.3f}")


def print_tables(rows: dict[str, list[dict]]) -> None:
    print("\nLabel Dice over each stack (mean over studies)")
    print(f"{'':24s}{'n':>4s}{'LV':>7s}{'myo':>7s}{'RV':>7s}")
    for name, results in rows.items():
        means = np.nanmean([r["labels"] for r in results], axis=0)
        print(f"{name:24s}{len(results):4d}" + "".join(f"{v:7.3f}" for v in means))
    columns = f"{'Dice':>7s}{'pooled':>7s}{'sens':>6s}{'spec':>6s}{'false':>7s}"
    for supervision in SCAR_SUPERVISIONS:
        print(f"\nScar, {supervision} supervision: on the predicted | on the true myocardium. "
              "Dice: mean over studies with scar; pooled: over all their pixels; slice "
              "sensitivity and specificity; false: share of the myocardium called scar in "
              "studies without scar")
        print(f"{'':24s}{'n':>4s}{columns} |{columns}")
        for name, results in rows.items():
            print(f"{name:24s}{len(results):4d}{scar_columns(results, supervision, 'predicted')}"
                  f" |{scar_columns(results, supervision, 'true')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1000-1039", help="unseen seeds (default 1000-1039)")
    parser.add_argument("--cases", type=int, default=10,
                        help="seeds per held-out setting (default 10)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    models = {kind: load_lge_model(kind, device="cpu")
              for kind in ("myocardium", *SCAR_SUPERVISIONS)}
    for kind, model in models.items():
        print(f"{kind}: {model.weights_path.name} sha256 {model.sha256[:12]}…, threshold "
              f"{model.metadata.get('threshold', '-')}")
    unseen = [evaluate(models, seed) for seed in seed_range(args.seeds)]
    rows = {f"seeds {args.seeds}": unseen}
    for kind in ("magnitude", "psir"):
        rows[f"  {kind}"] = [r for r in unseen if r["kind"] == kind]
    for i, (name, overrides) in enumerate(HELD_OUT.items()):
        base = HELD_OUT_SEED_BASE + 100 * i
        rows[f"held out: {name}"] = [evaluate(models, base + k, **overrides)
                                     for k in range(args.cases)]
        print(f"  {name} done", flush=True)
    print_tables(rows)
    seconds = [r["seconds"] for r in unseen]
    print(f"\nsegment_lge: median {np.median(seconds):.2f} s per stack (2 threads, CPU, "
          "incl. test-time augmentation)")


if __name__ == "__main__":
    main()
