"""A scripted annotator reviews the proposed LV circles of unseen phantom studies.

Per study: the motion step, the shipped segmentation model and the roi step
propose a circle per frame (as `perfroi analyze --steps motion,segment,roi`
does). Per slice series the annotator starts from the proposals and, while
some frame's circle has IoU < 0.85 with the true circle (the phantom's
circle around LV cavity + myocardium, plus the same margin) and fewer than
10 actions were taken, sets the worst frame to its true circle (1 action)
and propagates it (1 action). Manual annotation takes one action per frame.

    python benchmarks/bench_annotation.py [--seeds 1000-1009]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _common import seed_range
from napari_perfroi import roi as R
from napari_perfroi.motion import estimate_motion, max_shift_px
from napari_perfroi.phantom import generate_phantom
from napari_perfroi.segment.infer import segment_series
from napari_perfroi.segment.model import load_model

IOU_GOAL = 0.85
MAX_ACTIONS = 10


def proposals(model, phantom):
    spacing = phantom.attrs["pixel_spacing_mm"]
    search = max_shift_px(spacing)
    motion = np.stack([estimate_motion(s, max_shift_px=search).shifts for s in phantom.image])
    labels = segment_series(model, phantom.image, motion,
                            np.asarray(phantom.attrs["frame_times_s"]), spacing).labels
    return R.propose(labels, motion, spacing), motion


def review_series(roi, states, motion, truth, s, propagate_times):
    """Correct slice ``s`` in place; return the number of actions."""
    actions = 0
    while actions < MAX_ACTIONS:
        ious = np.nan_to_num(R.circle_iou(roi[s], truth[s]), nan=0.0)
        if ious.min() >= IOU_GOAL:
            break
        worst = int(np.argmin(ious))
        roi[s, worst] = truth[s, worst]
        states[s, worst] = R.EDITED
        started = time.perf_counter()
        R.propagate(roi, states, motion, s, worst)
        propagate_times.append(time.perf_counter() - started)
        actions += 2
    return actions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1000-1009", help="unseen phantom seeds (default 1000-1009)")
    args = parser.parse_args()
    seeds = seed_range(args.seeds)
    torch.set_num_threads(2)
    model = load_model(device="cpu")

    actions, proposal_iou, final_iou, frames, propagate_times = [], [], [], [], []
    for seed in seeds:
        phantom = generate_phantom(seed)
        roi, motion = proposals(model, phantom)
        states = np.where(np.isfinite(roi[..., 2]), R.PROPOSED, R.NONE).astype(np.uint8)
        margin_px = R.DEFAULT_MARGIN_MM / R.mean_spacing(phantom.attrs["pixel_spacing_mm"])
        truth = phantom.truth["roi"] + np.array([0.0, 0.0, margin_px], dtype=np.float32)
        proposal_iou.append(np.nan_to_num(R.circle_iou(roi, truth)))
        per_series = [review_series(roi, states, motion, truth, s, propagate_times)
                      for s in range(roi.shape[0])]
        final_iou.append(np.nan_to_num(R.circle_iou(roi, truth)))
        actions += per_series
        frames += [roi.shape[1]] * roi.shape[0]
        print(f"  seed {seed}: actions per series {per_series}, "
              f"proposal IoU {proposal_iou[-1].mean():.3f} -> {final_iou[-1].mean():.3f}", flush=True)

    actions, frames = np.array(actions), np.array(frames)
    proposal_iou, final_iou = np.concatenate(proposal_iou, axis=None), np.concatenate(final_iou, axis=None)
    times_ms = 1000 * np.array(propagate_times) if propagate_times else np.zeros(1)
    n_series = len(actions)
    print(f"\n{len(seeds)} unseen studies, {n_series} slice series, {int(frames.sum())} frames")
    print(f"{'actions per series, mean':42s}{actions.mean():8.2f}   (target <= 2)")
    print(f"{'actions per series, max':42s}{actions.max():8d}")
    print(f"{'series needing no correction':42s}{(actions == 0).sum():5d}/{n_series}")
    print(f"{'frames with IoU >= 0.85, proposals':42s}{(proposal_iou >= IOU_GOAL).mean():8.1%}")
    print(f"{'frames with IoU >= 0.85, after review':42s}{(final_iou >= IOU_GOAL).mean():8.1%}")
    print(f"{'mean IoU, proposals -> after review':42s}{proposal_iou.mean():8.3f} -> {final_iou.mean():.3f}")
    print(f"{'Propagate wall time, median / max (ms)':42s}{np.median(times_ms):8.3f} / {times_ms.max():.3f}"
          f"   ({len(propagate_times)} propagations, series of {frames.min()}-{frames.max()} frames;"
          " target <= 50 ms)")
    manual = frames.sum()
    ours = actions.sum() + n_series  # + one "Accept series" per series
    print(f"{'manual actions (one per frame)':42s}{manual:8d}")
    print(f"{'our actions incl. one Accept per series':42s}{ours:8d}   -> {manual / ours:.1f}x fewer")


if __name__ == "__main__":
    main()
