"""Fine-tune a segmentation model on the accepted series of study stores.

A series is one slice whose circles are accepted on every frame. Its sample
is the model input of that slice (as in training) with two targets on the
grid: labels in the reference geometry, and the reference frame's accepted
circle as weak supervision (no LV blood pool or myocardium outside it). The
labels are the annotator's where frames of the slice were edited (each
edited frame moved back by its motion, the class with the largest mean share
per grid pixel), else the stored labels of the reference frame. A held-out part of the series picks
the best epoch (early stopping); the result is a user model beside, never
over, the shipped one.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputError
from ..label_edits import edited_frames
from ..roi import ACCEPTED
from ..study import LV_BLOOD, MYOCARDIUM
from .train import STORED_CROP, augment, crop, labels_on_grid, segmentation_loss

OUTSIDE_WEIGHT = 1.0  # weight of the circle term in the loss


@dataclass
class FinetuneConfig:
    """Settings of a fine-tuning run (recorded in the user model's metadata)."""

    max_epochs: int = 20
    patience: int = 5
    steps_per_epoch: int = 20
    batch_size: int = 8
    learning_rate: float = 2e-4
    weight_decay: float = 1e-4
    held_out_fraction: float = 0.2
    seed: int = 0
    threads: int = 2


@dataclass
class Series:
    """One accepted series: its store, slice, grid inputs and targets."""

    store: str
    slice_index: int
    inputs: np.ndarray  # float16 (C, STORED_CROP, STORED_CROP)
    labels: np.ndarray  # uint8 (STORED_CROP, STORED_CROP)
    outside: np.ndarray  # uint8, 1 outside the accepted circle
    labels_frames: list[int]  # the frames whose labels make the target
    edited: bool  # whether those labels are the annotator's


def user_models_dir() -> Path:
    """The per-user folder for fine-tuned models (XDG data dir, or the platform's)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "napari-perfroi" / "models"


def user_models() -> list[Path]:
    """The fine-tuned models in ``user_models_dir()``, newest first."""
    folder = user_models_dir()
    found = folder.glob("*.safetensors") if folder.is_dir() else []
    return sorted(found, key=lambda path: path.stat().st_mtime, reverse=True)


def default_output(name: str | None = None) -> Path:
    """``user_models_dir()/NAME.safetensors``; NAME defaults to ``finetuned-<date-time>``."""
    return user_models_dir() / f"{name or time.strftime('finetuned-%Y%m%d-%H%M%S')}.safetensors"


def check_output(out: str | Path) -> Path:
    """``out`` as a path to write, refusing the shipped weights and other suffixes."""
    from .model import SHIPPED_WEIGHTS

    path = Path(out).expanduser()
    if path.suffix != ".safetensors":
        raise InputError(f"{path}: the output must be a .safetensors file")
    if path.resolve() == SHIPPED_WEIGHTS.resolve():
        raise InputError(f"{path}: refusing to overwrite the shipped model; choose another --out")
    return path


def accepted_slices(study) -> list[int]:
    """Slices of ``study`` whose circles are accepted on every frame."""
    if not study.has("roi_state"):
        return []
    states = study.read("roi_state")
    return [s for s in range(states.shape[0]) if (states[s] == ACCEPTED).all()]


def study_series(study) -> list[Series]:
    """The accepted series of an open study, as grid samples."""
    import torch

    from .features import Grid, slice_inputs

    slices = accepted_slices(study)
    if not slices:
        return []
    for name, step in (("labels", "segment"), ("motion", "motion"), ("roi", "roi")):
        if not study.has(name):
            raise InputError(f"{study.path}: accepted series but no '{name}' (run the {step} step)")
    grid = Grid.for_image(study.shape[2:], study.pixel_spacing_mm)
    motion, roi, times = study.read("motion"), study.read("roi"), study.frame_times_s
    reference = study.attrs["reference_frame"]
    rows, cols = grid.image_coordinates()
    edited = edited_frames(study)
    found = []
    for s in slices:
        image = np.asarray(study.image[s])
        frames = np.flatnonzero(edited[s]) if edited[s].any() else np.array([reference[s]])
        stored = np.asarray(study.zarr_array("labels")[s])[frames]
        with torch.inference_mode():
            inputs = slice_inputs(image, motion[s], times[s], grid).numpy()
        labels = labels_on_grid(grid, stored, motion[s, frames] - motion[s, reference[s]])
        r, c, radius = roi[s, reference[s]]
        outside = (np.hypot(rows[:, None] - r, cols[None, :] - c) > radius).astype(np.uint8)
        heart = np.nonzero((labels == LV_BLOOD) | (labels == MYOCARDIUM))
        centre = np.array([heart[0].mean(), heart[1].mean()]) if heart[0].size else np.array([r, c])
        corner = centre.round().astype(int) - STORED_CROP // 2
        found.append(Series(
            store=str(study.path), slice_index=s,
            inputs=crop(inputs, corner, STORED_CROP).astype(np.float16),
            labels=crop(labels, corner, STORED_CROP),
            outside=crop(outside, corner, STORED_CROP),
            labels_frames=frames.tolist(), edited=bool(edited[s].any()),
        ))
    return found


def _outside_loss(logits, outside):
    """Mean LV blood pool + myocardium probability outside the accepted circle."""
    import torch

    probabilities = torch.softmax(logits.float(), dim=1)
    heart = probabilities[:, LV_BLOOD] + probabilities[:, MYOCARDIUM]
    return (heart * outside).sum() / outside.sum().clamp(min=1.0)


def _stack(series: list[Series]) -> tuple[np.ndarray, np.ndarray]:
    """(inputs + outside mask as the last channel, labels) of ``series``."""
    inputs = np.stack([np.concatenate([x.inputs, x.outside[None].astype(np.float16)])
                       for x in series])
    return inputs, np.stack([x.labels for x in series])


def finetune(
    stores: list[str | Path],
    out: str | Path | None = None,
    base: str | Path | None = None,
    config: FinetuneConfig = FinetuneConfig(),
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Path, dict]:
    """Fine-tune ``base`` (default: shipped) on the stores' accepted series; save at ``out``.

    ``progress(done, total)`` is called per training step and may raise
    (e.g. :class:`~napari_perfroi.progress.Cancelled`): nothing is written
    then. Returns the weights path and the saved metadata.
    """
    import torch

    from ..study import Study
    from .model import build_network, load_model, save_model
    from .train import validate_dice

    out = check_output(out if out is not None else default_output())
    started = time.perf_counter()
    series = []
    for store in stores:
        series += study_series(Study.open(store))
    if not series:
        raise InputError(f"no accepted series in {', '.join(str(s) for s in stores)} "
                         "(a series needs accepted circles on every frame)")
    if len(series) < 2:
        raise InputError("fine-tuning needs at least 2 accepted series (one is held out)")
    base_model = load_model(base, device="cpu")
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(series))
    n_held = min(len(series) - 1, max(1, round(config.held_out_fraction * len(series))))
    held_out = [series[i] for i in sorted(order[:n_held])]
    training = [series[i] for i in sorted(order[n_held:])]
    train_x, train_y = _stack(training)
    val_x, val_y = _stack(held_out)
    val_x = val_x[:, :-1]
    log(f"{len(training)} training and {len(held_out)} held-out series, "
        f"{sum(item.edited for item in series)} with label edits")

    network = build_network(base_model.metadata["architecture"])
    network.load_state_dict(base_model.network.state_dict())
    network.to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(network.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    total_steps = config.max_epochs * config.steps_per_epoch
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, total_steps)
    base_dice = validate_dice(network, val_x, val_y, config.batch_size)
    history = [{"epoch": 0, "loss": None, "validation_dice": base_dice}]
    log(f"base model held-out Dice LV {base_dice[0]:.3f} myo {base_dice[1]:.3f} "
        f"RV {base_dice[2]:.3f}")
    best = {"score": -1.0, "epoch": 0, "dice": base_dice, "state": None}
    network.train()
    done = 0
    for epoch in range(1, config.max_epochs + 1):
        losses = []
        for _ in range(config.steps_per_epoch):
            batch = np.sort(rng.choice(len(train_x), min(config.batch_size, len(train_x)),
                                       replace=False))
            x, y = augment(train_x[batch], train_y[batch], rng)
            x, outside = x[:, :-1], x[:, -1]
            logits = network(x.contiguous(memory_format=torch.channels_last))
            loss = segmentation_loss(logits, y)
            loss = loss + OUTSIDE_WEIGHT * _outside_loss(logits, outside)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
            done += 1
            if progress is not None:
                progress(done, total_steps)
        dice = validate_dice(network, val_x, val_y, config.batch_size)
        score = float(np.nanmean(dice))
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "validation_dice": dice})
        log(f"epoch {epoch:3d}  loss {np.mean(losses):.4f}  held-out Dice LV {dice[0]:.3f} "
            f"myo {dice[1]:.3f} RV {dice[2]:.3f}")
        if score > best["score"]:
            best = {"score": score, "epoch": epoch, "dice": dice,
                    "state": {k: v.clone() for k, v in network.state_dict().items()}}
        elif epoch - best["epoch"] >= config.patience:
            log(f"early stop: no improvement for {config.patience} epochs")
            break
    if progress is not None:
        progress(total_steps, total_steps)
    network.load_state_dict(best["state"])
    names = ["lv_blood_pool", "myocardium", "rv_blood_pool"]
    stores_seen: dict[str, dict[str, list[int]]] = {}
    for role, group in (("train_slices", training), ("held_out_slices", held_out)):
        for item in group:
            seen = stores_seen.setdefault(
                item.store, {"train_slices": [], "held_out_slices": [], "edited_slices": []})
            seen[role].append(item.slice_index)
            if item.edited:
                seen["edited_slices"].append(item.slice_index)
    metadata = {
        **{k: base_model.metadata[k] for k in ("architecture", "inputs", "classes")},
        "name": out.stem,
        "base_model": {"path": str(base_model.weights_path), "sha256": base_model.sha256},
        "finetuning": {
            **dataclasses.asdict(config),
            "stores": [{"path": path, **seen} for path, seen in stores_seen.items()],
            "train_series": len(training),
            "held_out_series": len(held_out),
            "series_with_label_edits": sum(item.edited for item in series),
            "targets": "the annotator's labels (the edited frames moved back to the reference "
                       "geometry, majority share) or else the stored labels of the reference "
                       "frame; LV blood pool and myocardium penalised outside the accepted circle",
            "loss": f"cross-entropy + soft Dice (classes 1-3) + {OUTSIDE_WEIGHT:g} x mean LV+myo "
                    "probability outside the circle",
            "optimiser": "AdamW, cosine learning rate",
            "epochs_run": len(history) - 1,
            "best_epoch": best["epoch"],
            "history": history,
            "total_s": round(time.perf_counter() - started, 1),
        },
        "validation_dice": dict(zip(names, best["dice"])),
        "base_validation_dice": dict(zip(names, base_dice)),
        "package_version": __version__,
        "torch_version": torch.__version__,
        "platform": platform.platform(),
    }
    return out, save_model(network, out, metadata)
