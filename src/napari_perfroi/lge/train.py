"""Seeded training of the LGE models on LGE phantoms generated on the fly.

Four kinds, one small U-Net each, all on the inputs of :mod:`.models`:

- ``myocardium``: 4 classes, cross-entropy + soft Dice on the true labels;
- ``pixel``: scar logit per pixel, binary cross-entropy + soft Dice on the
  true scar masks (microvascular obstruction counts as scar), inside the
  myocardium;
- ``slice``: the same network, but trained only with one "has scar" bit per
  slice (multiple-instance learning): the slice's score is the mean of the
  top ``TOP_FRACTION["slice"]`` of its myocardium logits, and the mean of the
  lowest ``BOTTOM_FRACTION`` must say "no scar" (scar rarely covers half of a
  slice's myocardium), which keeps remote myocardium negative in scarred
  slices too. The bit is what a reader would mark: at least
  ``MIN_SCAR_AREA_MM2`` of scar in the slice;
- ``stack``: as ``slice``, pooled over all slices of a study, with one bit
  per study (any slice marked).

Scar models see the true myocardium mask, dilated or eroded by a grid pixel
in a third of the samples each, since at inference it is predicted. The
weakly supervised models pick the epoch by their weak loss on validation
studies and their threshold by the weak labels alone: the one whose
"any scar left after :func:`~.models.refine_scar`" decision agrees best
with the validation bits (balanced accuracy; ties go to the threshold
nearest 0.5). The pixel model uses 0.5.

Each study is an LGE phantom (PSIR or magnitude, as drawn) with wider
randomisation than its defaults (``training_overrides``: inversion time far
from the null, so blood is brighter or darker than scar, pixel spacing,
noise, ghosting, a mis-nulled region, small hearts); each slice is acquired
``ACQUISITIONS_PER_SLICE`` time(s), most re-acquired by
:func:`~napari_perfroi.segment.randomise.randomise_series` (gain, offset,
gamma, bias field, blur, k-space truncation, Rician noise, integer storage).
Each step crops, turns, scales, mirrors and elastically deforms the batch
and jitters its contrast and noise. Training is seeded and reproducible on
the CPU. Training seeds start at ``TRAIN_SEED_BASE``, validation seeds at
``VALIDATION_SEED_BASE``; benchmarks and tests use seeds below 100000.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputError
from ..study import LV_BLOOD, MYOCARDIUM
from .models import (KINDS, MIN_SCAR_AREA_MM2, PERCENTILES, VALUE_RANGE, refine_scar,
                     weights_path)

TRAIN_SEED_BASE = 300_000
VALIDATION_SEED_BASE = 400_000
WIDTHS = {"myocardium": (8, 16, 32, 64, 64), "scar": (8, 16, 32, 64)}
STORED_CROP = {"myocardium": 128, "scar": 80}  # grid pixels kept per sample (1.5 mm each)
TRAIN_CROP = {"myocardium": 96, "scar": 64}  # random window seen per step
HEART_OFFSET_PX = {"myocardium": 16, "scar": 6}  # random offset of the heart in the stored crop
ACQUISITIONS_PER_SLICE = 1
RANDOMISED_FRACTION = 0.75  # of the acquisitions, those re-acquired by randomise_series
TOP_FRACTION = {"slice": 0.03, "stack": 0.01}  # of the myocardium pixels pooled as the score
BOTTOM_FRACTION = 0.5  # of the myocardium pixels whose mean must say "no scar"
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.1, 0.91, 0.05))
PIXEL_THRESHOLD = 0.5
# Acquisition settings outside the training draws, for benchmarks of generalisation.
HELD_OUT = {"TI 150 ms": {"inversion_time_ms": 150.0}, "TI 600 ms": {"inversion_time_ms": 600.0},
            "1.0 mm pixels": {"pixel_spacing_mm": 1.0, "matrix": (320, 320)},
            "SNR 5": {"snr": 5.0}}


@dataclass
class LgeTrainingConfig:
    kind: str = "myocardium"
    n_studies: int = 300
    validation_studies: int = 30
    epochs: int = 12
    batch_size: int = 16  # slices per step (stack: whole studies up to about this many slices)
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    workers: int = 2  # processes generating phantoms; 0 generates in this process
    threads: int = 2
    device: str = "cpu"


@dataclass
class Samples:
    inputs: np.ndarray  # float16 (N, C, n, n): normalised image (+ myocardium mask)
    labels: np.ndarray  # uint8 (N, n, n): true labels on the grid
    scar: np.ndarray  # uint8 (N, n, n): 1 scar (MVO included) on the grid
    has_scar: np.ndarray  # bool (N,): the slice's weak label (``_visible_scar``)
    study: np.ndarray  # int (N,): which study (acquisition of a phantom) the slice belongs to

    def __len__(self) -> int:
        return len(self.inputs)


def _family(kind: str) -> str:
    return "myocardium" if kind == "myocardium" else "scar"


def training_overrides(rng: np.random.Generator) -> dict:
    """LGE phantom overrides that widen the randomisation beyond the defaults (``HELD_OUT``
    settings are never drawn)."""
    overrides = {}
    if rng.random() < 0.35:  # far from the myocardial null: blood brighter or darker than scar
        overrides["inversion_time_ms"] = round(float(rng.uniform(200.0, 480.0)), 1)
    if rng.random() < 0.3:  # resolution and matrix of other scanners and protocols
        spacing = rng.uniform(1.1, 2.3)
        fov_mm = rng.uniform(280.0, 400.0, size=2)
        overrides["pixel_spacing_mm"] = round(float(spacing), 4)
        overrides["matrix"] = tuple(int(np.clip(8 * round(f / spacing / 8), 96, 320))
                                    for f in fov_mm)
    if rng.random() < 0.2:
        overrides["snr"] = float(rng.uniform(6.0, 10.0))
    if rng.random() < 0.2:
        overrides["ghost_amplitude"] = float(rng.uniform(0.05, 0.12))
    if rng.random() < 0.2:  # a badly mis-nulled region
        overrides["inversion_inhomogeneity"] = float(rng.uniform(0.1, 0.2))
    if rng.random() < 0.25:  # small hearts
        overrides["lv_radius_mm"] = float(rng.uniform(15.0, 24.0))
        overrides["wall_thickness_mm"] = float(rng.uniform(4.0, 8.0))
    return overrides


def study_samples(seed: int, kind: str) -> list[tuple]:
    """(inputs, labels, scar, has_scar, acquisition) of every slice of the phantom of ``seed``,
    ``ACQUISITIONS_PER_SLICE`` times, cropped around the heart with a random offset."""
    import torch

    from ..segment.features import Grid
    from ..segment.randomise import randomise_series
    from ..segment.train import crop, labels_on_grid
    from .models import slice_inputs
    from .phantom import generate_lge_phantom

    torch.set_num_threads(1)
    family = _family(kind)
    rng = np.random.default_rng([seed, 2])
    phantom = generate_lge_phantom(seed, **training_overrides(rng))
    grid = Grid.for_image(phantom.image.shape[1:], phantom.attrs["pixel_spacing_mm"])
    samples = []
    for acquisition in range(ACQUISITIONS_PER_SLICE):
        for s in range(len(phantom.image)):
            labels = labels_on_grid(grid, phantom.labels[s])
            heart = (labels == MYOCARDIUM if family == "scar"
                     else np.isin(labels, (LV_BLOOD, MYOCARDIUM)))
            if not heart.any():
                continue
            image = phantom.image[s]
            if rng.random() < RANDOMISED_FRACTION:  # a series of one frame, re-acquired
                image = randomise_series(image[None], np.zeros(1), np.zeros((1, 2)), rng)[0][0]
            myocardium = phantom.labels[s] == MYOCARDIUM if family == "scar" else None
            inputs = slice_inputs(image, grid, myocardium).numpy()
            scar = grid.from_image(torch.from_numpy((phantom.scar[s] > 0).astype(np.float32))[None],
                                   np.zeros((1, 2)))[0].numpy() >= 0.5
            rows, cols = np.nonzero(heart)
            offset = rng.integers(-HEART_OFFSET_PX[family], HEART_OFFSET_PX[family] + 1, size=2)
            corner = (np.array([rows.mean(), cols.mean()]).round().astype(int) + offset
                      - STORED_CROP[family] // 2)
            samples.append((crop(inputs, corner, STORED_CROP[family]).astype(np.float16),
                            crop(labels, corner, STORED_CROP[family]),
                            crop(scar.astype(np.uint8), corner, STORED_CROP[family]),
                            _visible_scar(phantom.scar[s], phantom.attrs["pixel_spacing_mm"]),
                            acquisition))
    return samples


def _visible_scar(scar: np.ndarray, spacing_mm) -> bool:
    """The weak label of a slice: at least ``MIN_SCAR_AREA_MM2`` of scar, as a reader would
    mark it (specks at the tapering ends of an arc are not)."""
    return bool((scar > 0).sum() * float(np.prod(spacing_mm)) >= MIN_SCAR_AREA_MM2)


def generate_samples(seeds, kind: str, workers: int, log: Callable[[str], None]) -> Samples:
    """The samples of the studies of ``seeds``, generated in ``workers`` processes."""
    from ..segment.train import _one_thread_per_worker

    make = functools.partial(study_samples, kind=kind)
    rows, started = [], time.perf_counter()

    def collect(results):
        for done, samples in enumerate(results, start=1):
            study = done * ACQUISITIONS_PER_SLICE
            rows.extend((*sample[:4], study + sample[4]) for sample in samples)
            if done % 50 == 0 or done == len(seeds):
                log(f"generated {done}/{len(seeds)} studies "
                    f"({time.perf_counter() - started:.0f} s)")

    if workers < 1:
        collect(map(make, seeds))
    else:
        with _one_thread_per_worker(), get_context("spawn").Pool(workers) as pool:
            collect(pool.imap(make, seeds, chunksize=2))
    if not rows:
        raise InputError("the training phantoms gave no slice with a heart")
    inputs, labels, scar, has_scar, study = zip(*rows)
    return Samples(np.stack(inputs), np.stack(labels), np.stack(scar), np.array(has_scar),
                   np.unique(study, return_inverse=True)[1])


def batches(samples: Samples, kind: str, batch_size: int, rng) -> list[np.ndarray]:
    """Sample indices of each step of an epoch: single slices in random order, or for
    ``stack`` whole studies packed up to ``batch_size`` slices."""
    if kind != "stack":
        order = rng.permutation(len(samples))
        return [np.sort(order[i : i + batch_size])
                for i in range(0, max(1, len(order) - batch_size + 1), batch_size)]
    studies = [np.flatnonzero(samples.study == k) for k in rng.permutation(samples.study.max() + 1)]
    packed, current = [], []
    for members in studies:
        current.extend(members)
        if len(current) >= batch_size:
            packed.append(np.array(current))
            current = []
    return packed or [np.array(current)]


def augment(inputs, labels, scar, kind: str, rng, device: str = "cpu"):
    """A randomly cropped, turned, scaled, mirrored and elastically deformed batch with its
    contrast and noise jittered (scar kinds: the myocardium mask dilated or eroded by a
    pixel in a third of the samples each): torch (inputs float32, labels int64, scar float32)."""
    import torch
    import torch.nn.functional as F

    from ..segment.train import _deformation_lookup

    family = _family(kind)
    size = TRAIN_CROP[family]
    start = rng.integers(0, STORED_CROP[family] - size + 1, size=2)
    window = (..., slice(start[0], start[0] + size), slice(start[1], start[1] + size))
    x = torch.as_tensor(np.ascontiguousarray(inputs[window]), device=device).float()
    targets = torch.stack([torch.as_tensor(np.ascontiguousarray(labels[window])),
                           torch.as_tensor(np.ascontiguousarray(scar[window]))], dim=1)
    n = len(x)
    generator = torch.Generator(device).manual_seed(int(rng.integers(2**62)))
    lookup = _deformation_lookup(n, rng, generator, device, size=size)
    x = F.grid_sample(x, lookup, mode="bilinear", padding_mode="zeros", align_corners=False)
    targets = F.grid_sample(targets.to(device).float(), lookup, mode="nearest",
                            padding_mode="zeros", align_corners=False).long()

    def uniform(low, high):
        return torch.as_tensor(rng.uniform(low, high, (n, 1, 1, 1)), dtype=torch.float32,
                               device=device)

    image = x[:, :1] * torch.exp(uniform(np.log(0.8), np.log(1.25))) + uniform(-0.1, 0.1)
    noise = torch.randn(image.shape, generator=generator, device=device)
    image = image + noise * uniform(0.0, 0.05)
    if family == "myocardium":
        return image, targets[:, 0], targets[:, 1].float()
    mask = (x[:, 1:2] >= 0.5).float()
    dilated = F.max_pool2d(mask, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-mask, 3, stride=1, padding=1)
    choice = torch.as_tensor(rng.integers(0, 3, (n, 1, 1, 1)), device=device)
    mask = torch.where(choice == 1, dilated, torch.where(choice == 2, eroded, mask))
    return torch.cat([image, mask], dim=1), targets[:, 0], targets[:, 1].float()


def pixel_loss(logits, scar, myocardium):
    """Binary cross-entropy + soft Dice of the scar inside the myocardium (torch tensors)."""
    import torch.nn.functional as F

    inside = myocardium > 0.5
    values, target = logits[:, 0][inside], scar[inside]
    if values.numel() == 0:
        return logits.sum() * 0.0
    probability = values.sigmoid()
    soft_dice = (2 * (probability * target).sum() + 1.0) / (probability.sum() + target.sum() + 1.0)
    return F.binary_cross_entropy_with_logits(values, target) + 1 - soft_dice


def pooled_scores(logits, myocardium, groups, top_fraction: float):
    """(top, bottom) pooled logits of each group (a list of batch indices): the mean of the top
    ``top_fraction`` and of the lowest ``BOTTOM_FRACTION`` of the group's myocardium logits."""
    import torch

    tops, bottoms = [], []
    for members in groups:
        values = logits[members, 0][myocardium[members, 0] > 0.5]
        if values.numel() == 0:
            values = logits[members, 0].flatten()
        ranked = torch.sort(values, descending=True).values
        tops.append(ranked[: max(1, int(round(top_fraction * len(ranked))))].mean())
        bottoms.append(ranked[-max(1, int(round(BOTTOM_FRACTION * len(ranked)))):].mean())
    return torch.stack(tops), torch.stack(bottoms)


def weak_loss(logits, myocardium, groups, labels, top_fraction: float):
    """Multiple-instance loss: the pooled top score predicts the group's bit, the pooled
    bottom says "no scar"."""
    import torch
    import torch.nn.functional as F

    top, bottom = pooled_scores(logits, myocardium, groups, top_fraction)
    target = torch.as_tensor(labels, dtype=torch.float32, device=top.device)
    return (F.binary_cross_entropy_with_logits(top, target)
            + F.binary_cross_entropy_with_logits(bottom, torch.zeros_like(bottom)))


def _groups_and_labels(samples: Samples, index: np.ndarray, kind: str):
    """Batch-local groups and their weak labels: one per slice, or one per study (stack)."""
    if kind != "stack":
        return [[i] for i in range(len(index))], samples.has_scar[index]
    studies = samples.study[index]
    groups = [np.flatnonzero(studies == k).tolist() for k in np.unique(studies)]
    return groups, np.array([samples.has_scar[index][g].any() for g in groups])


def _step_loss(network, x, labels, scar, samples, index, kind):
    from ..segment.train import segmentation_loss

    logits = network(x)
    if kind == "myocardium":
        return segmentation_loss(logits, labels)
    if kind == "pixel":
        return pixel_loss(logits, scar, x[:, 1])
    groups, weak = _groups_and_labels(samples, index, kind)
    return weak_loss(logits, x[:, 1:2], groups, weak, TOP_FRACTION[kind])


def _predict(network, samples: Samples, batch_size: int, device: str) -> np.ndarray:
    """Network outputs (N, C, n, n) float32 on the validation samples."""
    import torch

    network.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            x = torch.from_numpy(samples.inputs[start : start + batch_size].astype(np.float32))
            outputs.append(network(x.to(device)).float().cpu().numpy())
    network.train()
    return np.concatenate(outputs)


def validate(network, samples: Samples, kind: str, batch_size: int, device: str) -> dict:
    """Validation scores; ``score`` (higher is better) picks the epoch. Weakly supervised
    kinds are scored by their weak loss only."""
    import torch

    from ..segment.metrics import dice, dice_per_class

    outputs = _predict(network, samples, batch_size, device)
    if kind == "myocardium":
        predicted = outputs.argmax(axis=1)
        scores = dice_per_class(predicted, samples.labels)
        scar = samples.scar > 0
        covered = float((predicted[scar] == MYOCARDIUM).mean()) if scar.any() else 1.0
        return {"dice": dict(zip(["lv_blood_pool", "myocardium", "rv_blood_pool"], scores)),
                "scar_labelled_myocardium": covered,  # for information: not in the score
                "score": float(np.nanmean(scores))}
    myocardium = samples.inputs[:, 1] >= 0.5
    if kind == "pixel":
        predicted = (outputs[:, 0] > 0) & myocardium  # probability above 0.5
        score = dice(predicted, (samples.scar > 0) & myocardium)
        return {"scar_dice": score, "score": float(np.nan_to_num(score))}
    groups, weak = _groups_and_labels(samples, np.arange(len(samples)), kind)
    loss = float(weak_loss(torch.from_numpy(outputs), torch.from_numpy(myocardium[:, None]),
                           groups, weak, TOP_FRACTION[kind]))
    return {"weak_loss": loss, "score": -loss}


def choose_threshold(probability: np.ndarray, samples: Samples, kind: str) -> tuple[float, float]:
    """(threshold, balanced accuracy) whose "any refined scar" decision per slice (stack: per
    study) agrees best with the weak labels of the validation samples."""
    from ..segment.features import GRID_MM

    myocardium = samples.inputs[:, 1] >= 0.5
    groups, weak = _groups_and_labels(samples, np.arange(len(samples)), kind)
    best = (PIXEL_THRESHOLD, -1.0)
    for threshold in THRESHOLDS:
        found = refine_scar(probability > threshold, myocardium, GRID_MM).any(axis=(1, 2))
        decided = np.array([found[g].any() for g in groups])
        accuracy = _balanced_accuracy(decided, weak)
        if accuracy > best[1] + 1e-9 or (
            abs(accuracy - best[1]) <= 1e-9 and abs(threshold - 0.5) < abs(best[0] - 0.5)
        ):
            best = (float(threshold), accuracy)
    return best


def _balanced_accuracy(decided: np.ndarray, truth: np.ndarray) -> float:
    rates = [np.mean(decided[truth == value] == value) for value in (True, False)
             if (truth == value).any()]
    return float(np.mean(rates))


def scar_report(probability: np.ndarray, samples: Samples, kind: str, threshold: float) -> dict:
    """At ``threshold``: scar Dice against the true masks (for information, never used to
    pick anything for weakly supervised kinds) and the balanced accuracy of the decisions."""
    from ..segment.features import GRID_MM
    from ..segment.metrics import dice

    myocardium = samples.inputs[:, 1] >= 0.5
    predicted = refine_scar(probability > threshold, myocardium, GRID_MM)
    found = predicted.any(axis=(1, 2))
    report = {"scar_dice": dice(predicted, (samples.scar > 0) & myocardium),
              "slice_balanced_accuracy": _balanced_accuracy(found, samples.has_scar)}
    groups, weak = _groups_and_labels(samples, np.arange(len(samples)), "stack")
    report["stack_balanced_accuracy"] = _balanced_accuracy(
        np.array([found[g].any() for g in groups]), weak)
    return report


def train_lge(kind: str, out: str | Path, *, n_studies: int = 300, validation_studies: int = 30,
              epochs: int = 12, seed: int = 0, workers: int = 2, threads: int = 2,
              device: str = "cpu", log: Callable[[str], None] = print) -> dict:
    """Train the ``kind`` model from scratch; write ``out/lge_KIND.safetensors`` and its
    ``.json``; return the metadata."""
    config = LgeTrainingConfig(kind=kind, n_studies=n_studies,
                               validation_studies=validation_studies, epochs=epochs, seed=seed,
                               workers=workers, threads=threads, device=device)
    return train(Path(out), config, log)


def train(out_dir: Path, config: LgeTrainingConfig, log: Callable[[str], None] = print) -> dict:
    """Train from a config (see :func:`train_lge`)."""
    import torch

    from ..segment.features import GRID_MM
    from ..segment.model import N_CLASSES, build_network, pick_device, save_model

    kind, family = config.kind, _family(config.kind)
    if kind not in KINDS:
        raise InputError(f"unknown LGE model kind {kind!r} (expected one of {', '.join(KINDS)})")
    if config.n_studies < 1 or config.validation_studies < 1 or config.epochs < 1:
        raise InputError("LGE training needs at least one training and one validation study "
                         "and one epoch")
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    train_seeds = [TRAIN_SEED_BASE + i for i in range(config.n_studies)]
    validation_seeds = [VALIDATION_SEED_BASE + i for i in range(config.validation_studies)]
    training = generate_samples(train_seeds, kind, config.workers, log)
    validation = generate_samples(validation_seeds, kind, config.workers, log)
    generation_s = time.perf_counter() - started
    log(f"{len(training)} training and {len(validation)} validation slices")

    architecture = {"name": "unet2d", "in_channels": 1 if family == "myocardium" else 2,
                    "n_classes": N_CLASSES if family == "myocardium" else 1,
                    "widths": list(WIDTHS[family])}
    device = pick_device(config.device)
    network = build_network(architecture).to(device)
    optimiser = torch.optim.AdamW(network.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    steps_per_epoch = len(batches(training, kind, config.batch_size, np.random.default_rng(0)))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.learning_rate, total_steps=config.epochs * steps_per_epoch,
        pct_start=0.1)
    best = {"score": -np.inf, "epoch": 0, "state": None, "validation": None}
    history = []
    for epoch in range(1, config.epochs + 1):
        epoch_started = time.perf_counter()
        losses = []
        for index in batches(training, kind, config.batch_size, rng)[:steps_per_epoch]:
            x, labels, scar = augment(training.inputs[index], training.labels[index],
                                      training.scar[index], kind, rng, device)
            loss = _step_loss(network, x, labels, scar, training, index, kind)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
        scores = validate(network, validation, kind, config.batch_size, device)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), **scores})
        log(f"epoch {epoch:3d}  loss {np.mean(losses):.4f}  validation "
            + "  ".join(f"{k} {_rounded(v)}" for k, v in scores.items() if k != "score")
            + f"  ({time.perf_counter() - epoch_started:.0f} s)")
        if scores["score"] > best["score"]:
            best = {"score": scores["score"], "epoch": epoch, "validation": scores,
                    "state": {k: v.clone() for k, v in network.state_dict().items()}}
    network.load_state_dict(best["state"])

    metadata = {
        "name": f"lge_{kind}",
        "kind": kind,
        "architecture": architecture,
        "inputs": {"grid_mm": GRID_MM, "percentiles": list(PERCENTILES),
                   "value_range": list(VALUE_RANGE),
                   "channels": "normalised LGE slice" if family == "myocardium"
                   else "normalised LGE slice minus its myocardium median, myocardium mask"},
    }
    if family == "myocardium":
        metadata["classes"] = ["background", "LV blood pool", "LV myocardium", "RV blood pool"]
        metadata["validation_dice"] = best["validation"]["dice"]
        metadata["validation_scar_labelled_myocardium"] = best["validation"][
            "scar_labelled_myocardium"]
    else:
        logits = _predict(network, validation, config.batch_size, device)[:, 0]
        probability = 1 / (1 + np.exp(-logits))
        if kind == "pixel":
            threshold, rule = PIXEL_THRESHOLD, "fixed at 0.5 (trained on pixel masks)"
        else:
            threshold, accuracy = choose_threshold(probability, validation, kind)
            rule = (f"best balanced accuracy ({accuracy:.3f}) of the {kind}-level 'any refined "
                    f"scar' decision against the weak labels of the validation studies")
        metadata["output"] = ("scar logit per pixel (sigmoid: probability), used inside the "
                              "myocardium")
        metadata["threshold"] = threshold
        metadata["threshold_choice"] = rule
        metadata["validation"] = {**best["validation"],
                                  **scar_report(probability, validation, kind, threshold)}
        metadata["validation"].pop("score")
    metadata["training"] = {
        **dataclasses.asdict(config),
        "command": training_command(config),
        "train_seeds": [train_seeds[0], train_seeds[-1]],
        "validation_seeds": [validation_seeds[0], validation_seeds[-1]],
        "train_slices": len(training),
        "validation_slices": len(validation),
        "train_slices_with_scar": int(training.has_scar.sum()),
        "stored_crop": STORED_CROP[family],
        "train_crop": TRAIN_CROP[family],
        "supervision": {"myocardium": "true labels",
                        "pixel": "true scar masks (MVO as scar)",
                        "slice": f"one bit per slice; top {TOP_FRACTION.get('slice')} / bottom "
                                 f"{BOTTOM_FRACTION} pooling of the myocardium logits",
                        "stack": f"one bit per study; top {TOP_FRACTION.get('stack')} / bottom "
                                 f"{BOTTOM_FRACTION} pooling over all slices"}[kind],
        "augmentation": "phantom overrides in training_overrides(); "
                        f"{ACQUISITIONS_PER_SLICE} acquisitions per slice, "
                        f"{RANDOMISED_FRACTION:.0%} re-acquired by randomise_series; per step: "
                        "random crop, rotation, scale 0.85-1.2, mirror, elastic deformation, "
                        "gain 0.8-1.25, offset +-0.1, noise 0-0.05"
                        + ("" if family == "myocardium"
                           else ", myocardium mask dilated / eroded by 1 px (1/3 each)"),
        "device": device,
        "best_epoch": best["epoch"],
        "history": history,
        "generation_s": round(generation_s, 1),
        "total_s": round(time.perf_counter() - started, 1),
    }
    metadata.update(package_version=__version__, torch_version=torch.__version__,
                    platform=platform.platform())
    return save_model(network, Path(out_dir) / weights_path(kind).name, metadata)


def _rounded(value):
    if isinstance(value, dict):
        return "/".join(f"{v:.3f}" for v in value.values())
    return f"{value:.4f}"


def training_command(config: LgeTrainingConfig) -> str:
    """The command line that repeats a training run (``DIR`` for the output folder)."""
    return (f"perfroi train-lge --kind {config.kind} --out DIR --studies {config.n_studies} "
            f"--validation-studies {config.validation_studies} --epochs {config.epochs} "
            f"--seed {config.seed} --workers {config.workers} --threads {config.threads} "
            f"--device {config.device}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``perfroi train-lge``."""
    defaults = LgeTrainingConfig()
    parser.add_argument("--kind", required=True, choices=KINDS,
                        help="myocardium segmentation, or scar trained with pixel masks, "
                             "one bit per slice or one bit per study")
    parser.add_argument("--out", required=True,
                        help="folder for lge_KIND.safetensors and lge_KIND.json")
    parser.add_argument("--studies", type=int, default=defaults.n_studies,
                        help=f"phantom studies to train on (default {defaults.n_studies})")
    parser.add_argument("--validation-studies", type=int, default=defaults.validation_studies,
                        help="phantom studies that pick the epoch and the threshold "
                             f"(default {defaults.validation_studies})")
    parser.add_argument("--epochs", type=int, default=defaults.epochs,
                        help=f"epochs (default {defaults.epochs})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="training seed (default 0)")
    parser.add_argument("--workers", type=int, default=defaults.workers,
                        help=f"processes generating phantoms (default {defaults.workers})")
    parser.add_argument("--threads", type=int, default=defaults.threads,
                        help=f"torch threads for training (default {defaults.threads})")
    parser.add_argument("--device", default=defaults.device,
                        help="cpu (default, reproducible), auto, cuda, mps")


def run_command(args: argparse.Namespace) -> None:
    """Run ``perfroi train-lge`` with the options of :func:`add_arguments`."""
    metadata = train_lge(args.kind, args.out, n_studies=args.studies,
                         validation_studies=args.validation_studies, epochs=args.epochs,
                         seed=args.seed, workers=args.workers, threads=args.threads,
                         device=args.device,
                         log=lambda line: print(line, flush=True))
    print(f"wrote {Path(args.out) / metadata['weights']} (sha256 {metadata['sha256']})")
