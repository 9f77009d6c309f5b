"""Fine-tuning for a new site: accuracy before and after, on studies it never saw.

The new site is a phantom setting outside the shipped model's training
range: a long saturation delay (less blood-myocardium contrast), hard
k-space truncation at 40 % phase resolution (ringing), strong parallel-imaging
noise and texture, thick epicardial fat and coarse trabeculation. Annotated
studies of that site go through the motion and segment steps; the scripted
annotator then paints the reference frame's labels of the first N slice
series right (saves the true labels as label edits) and accepts the true
circles (true circle + the roi step's margin) on every frame.
The shipped model is fine-tuned on those series (CPU, 2 threads, timed) and,
like the shipped one, scored on OTHER studies of the new site with their
estimated motion: Dice per class against the true labels of every frame,
circle IoU of the roi step's proposals against the true circles, and the
number of studies whose myocardium Dice rose. A table of old-site (default
phantom) studies shows what the adaptation costs there.

    python benchmarks/bench_finetune.py [--series 5,10,20] [--test-seeds 7000-7019]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import seed_range
from napari_perfroi import roi as R
from napari_perfroi.label_edits import save_label_edits
from napari_perfroi.motion import estimate_motion, max_shift_px
from napari_perfroi.phantom import generate_phantom, write_phantom
from napari_perfroi.pipeline import run_step
from napari_perfroi.segment.finetune import FinetuneConfig, finetune
from napari_perfroi.segment.infer import segment_series
from napari_perfroi.segment.metrics import per_frame_scores
from napari_perfroi.segment.model import SHIPPED_WEIGHTS, file_sha256, load_model

NEW_SITE = {"phase_resolution": 0.4, "kspace_taper": 0.0, "saturation_time_s": 0.3,
            "epicardial_fat_mm": 7.0, "trabeculation_mm": 2.5, "texture": 0.15, "g_factor": 2.0}
ANNOTATED_SEED_BASE = 6000
CLASSES = ("LV blood pool", "myocardium", "RV blood pool")


def annotated_stores(folder: Path, n_series: int) -> list[str]:
    """New-site stores whose first ``n_series`` slice series were corrected and accepted."""
    stores, left, seed = [], n_series, ANNOTATED_SEED_BASE
    while left > 0:
        path = folder / f"site-{seed}.zarr"
        study = write_phantom(path, seed, **NEW_SITE)
        run_step(study, "motion")
        run_step(study, "segment")
        n_slices = study.shape[0]
        accepted = list(range(min(left, n_slices)))
        labels, truth = study.read("labels"), study.read("truth/labels")
        reference = study.attrs["reference_frame"]
        for s in accepted:  # the annotator paints the reference frame right
            labels[s, reference[s]] = truth[s, reference[s]]
        save_label_edits(study, labels)
        margin_px = R.DEFAULT_MARGIN_MM / R.mean_spacing(study.pixel_spacing_mm)
        study.write("roi", study.read("truth/roi") + np.array([0, 0, margin_px], dtype=np.float32))
        states = np.full(study.shape[:2], R.PROPOSED, dtype=np.uint8)
        states[accepted] = R.ACCEPTED
        study.write("roi_state", states)
        stores.append(str(path))
        left -= len(accepted)
        seed += 1
    return stores


class UnseenStudy:
    """An unseen phantom with its estimated motion and true circles."""

    def __init__(self, seed: int, **overrides):
        self.phantom = generate_phantom(seed, **overrides)
        self.spacing = self.phantom.attrs["pixel_spacing_mm"]
        search = max_shift_px(self.spacing)
        self.motion = np.stack([estimate_motion(s, max_shift_px=search).shifts
                                for s in self.phantom.image])
        margin_px = R.DEFAULT_MARGIN_MM / R.mean_spacing(self.spacing)
        self.circles = self.phantom.truth["roi"] + np.array([0, 0, margin_px], dtype=np.float32)

    def scores(self, model) -> tuple[dict[str, np.ndarray], np.ndarray]:
        times = np.asarray(self.phantom.attrs["frame_times_s"])
        labels = segment_series(model, self.phantom.image, self.motion, times, self.spacing).labels
        proposed = R.propose(labels, self.motion, self.spacing)
        iou = np.nan_to_num(R.circle_iou(proposed, self.circles))
        return per_frame_scores(labels, self.phantom.truth["labels"], self.spacing), iou.ravel()


def evaluate(model, studies: list[UnseenStudy]) -> tuple[list[float], np.ndarray]:
    """([LV, myo, RV Dice, mean circle IoU, frames with IoU >= 0.85] over ``studies``,
    mean myocardium Dice per study)."""
    results = [study.scores(model) for study in studies]
    dice = [np.nanmean(np.concatenate([r[0][name] for r in results])) for name in CLASSES]
    iou = np.concatenate([r[1] for r in results])
    per_study = np.array([np.nanmean(r[0]["myocardium"]) for r in results])
    return [*dice, float(iou.mean()), float((iou >= 0.85).mean())], per_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", default="5,10,20",
                        help="accepted series per run (default 5,10,20)")
    parser.add_argument("--test-seeds", default="7000-7019",
                        help="unseen new-site seeds to score on (default 7000-7019)")
    parser.add_argument("--old-site-seeds", default="1000-1004",
                        help="unseen default-phantom seeds (default 1000-1004)")
    args = parser.parse_args()
    counts = [int(n) for n in args.series.split(",")]
    torch.set_num_threads(2)
    shipped_sha = file_sha256(SHIPPED_WEIGHTS)
    started = time.perf_counter()
    new_site = [UnseenStudy(seed, **NEW_SITE) for seed in seed_range(args.test_seeds)]
    old_site = [UnseenStudy(seed) for seed in seed_range(args.old_site_seeds)]
    print(f"new site {NEW_SITE}; {len(new_site)} unseen test studies "
          f"(seeds {args.test_seeds}), annotated seeds from {ANNOTATED_SEED_BASE}", flush=True)

    rows = {"shipped model": (None, None, load_model(device="cpu"))}
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            folder = Path(tmp) / f"n{n}"
            folder.mkdir()
            stores = annotated_stores(folder, n)
            prefix = f"  [{n}]"
            t0 = time.perf_counter()
            path, metadata = finetune(stores, folder / f"site-{n}.safetensors",
                                      config=FinetuneConfig(),
                                      log=lambda line: print(prefix, line, flush=True))
            train_s = time.perf_counter() - t0
            recipe = metadata["finetuning"]
            rows[f"fine-tuned, N={n}"] = (train_s, recipe, load_model(path, device="cpu"))

        header = (f"{'':20s}{'LV pool':>9s}{'myo':>9s}{'RV':>9s}{'circle IoU':>12s}"
                  f"{'IoU>=0.85':>11s}{'myo up':>8s}{'train s':>9s}{'epochs':>8s}")
        tables = ((f"New site, {len(new_site)} unseen studies", new_site),
                  (f"Old site (default phantom), {len(old_site)} unseen studies", old_site))
        for title, studies in tables:
            print(f"\n{title}: mean Dice over all frames, roi proposals vs true circles")
            print(header)
            shipped_per_study = None
            for label, (train_s, recipe, model) in rows.items():
                values, per_study = evaluate(model, studies)
                line = f"{label:20s}" + "".join(f"{v:9.3f}" for v in values[:3])
                line += f"{values[3]:12.3f}{values[4]:11.1%}"
                if shipped_per_study is None:
                    shipped_per_study = per_study
                    line += f"{'':8s}"
                else:
                    line += f"{int((per_study > shipped_per_study).sum()):>4d}/{len(studies):<3d}"
                if train_s is not None:
                    line += f"{train_s:9.1f}{recipe['best_epoch']:4d}/{recipe['epochs_run']:<3d}"
                print(line, flush=True)
    assert file_sha256(SHIPPED_WEIGHTS) == shipped_sha, "the shipped weights changed"
    print(f"\nmyo up: studies whose mean myocardium Dice beats the shipped model's; train s: CPU "
          f"wall time of fine-tuning, {torch.get_num_threads()} threads, incl. preparing the "
          f"series; epochs: best/run. Shipped weights unchanged. "
          f"Total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
