"""Seeded training of the U-Net on phantoms generated on the fly.

Each training study is a phantom drawn with wider randomisation than the
phantom's defaults (pixel spacing 1.1-2.8 mm, small hearts, strong coil
shading, short series, late or early bolus, saturated blood, low SNR), most
of them from the scanner-like family (:mod:`~napari_perfroi.phantom_scanner`), its
true motion blurred by registration-like errors. Every slice gives
``ACQUISITIONS_PER_SLICE`` samples, most re-acquired by
:func:`~.randomise.randomise_series` (timing, intensity curve, resolution,
noise): the model input on the fixed grid and the reference frame's true
labels, cropped around the heart with a random offset. Each step deforms,
turns, scales and mirrors the batch and jitters its feature intensities, so
the model cannot lean on the phantom's exact intensities or shapes. A GPU
(``device="auto"``) only speeds this up; on the CPU training is seeded and
reproducible. Validation uses other seeds; training stops early when the
validation Dice stops improving.

Training and validation seeds start at ``TRAIN_SEED_BASE`` and
``VALIDATION_SEED_BASE``; benchmarks and tests use seeds below 100000.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
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
from .model import N_CLASSES

TRAIN_SEED_BASE = 100_000
VALIDATION_SEED_BASE = 200_000
STORED_CROP = 160  # grid pixels kept around the heart per sample (240 mm)
TRAIN_CROP = 112  # random crop seen per step (168 mm)
HEART_OFFSET_PX = 32  # random offset of the heart within the stored crop
MOTION_ERROR_PX = 0.3  # SD of simulated registration error per frame
MOTION_OUTLIER_RATE, MOTION_OUTLIER_PX = 0.05, 2.0
WIDTHS = (16, 32, 64, 128, 128)
SCANNER_LIKE_FRACTION = 0.6  # studies drawn from the scanner-like phantom family
ACQUISITIONS_PER_SLICE = 2  # randomised acquisitions of each rendered slice
RANDOMISED_FRACTION = 0.75  # of those, the ones randomised (the rest as rendered)


@dataclass
class TrainingConfig:
    train_studies: int = 900
    validation_studies: int = 60
    max_epochs: int = 40
    patience: int = 6
    batch_size: int = 16
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    workers: int = 2
    threads: int = 2
    device: str = "auto"  # a GPU where there is one, else the CPU


def training_overrides(rng: np.random.Generator) -> dict:
    """Phantom parameter overrides that widen the randomisation beyond the defaults."""
    overrides = {}
    if rng.random() < 0.5:  # resolution and matrix of other scanners and protocols
        spacing = rng.uniform(1.1, 2.8)
        fov_mm = rng.uniform(260.0, 420.0, size=2)
        overrides["pixel_spacing_mm"] = round(float(spacing), 4)
        overrides["matrix"] = tuple(int(np.clip(8 * round(f / spacing / 8), 96, 288)) for f in fov_mm)
    if rng.random() < 0.3:  # small hearts
        overrides["lv_radius_mm"] = float(rng.uniform(15.0, 24.0))
        overrides["wall_thickness_mm"] = float(rng.uniform(4.0, 8.0))
    if rng.random() < 0.3:  # strong surface-coil shading
        overrides["coil_shading"] = float(rng.uniform(0.8, 1.0))
        overrides["coil_width_mm"] = float(rng.uniform(50.0, 90.0))
    if rng.random() < 0.2:  # short series: the bolus comes early, or it would be missed
        overrides["n_dynamics"] = int(rng.integers(18, 50))
        overrides["baseline_s"] = float(rng.uniform(0.5, 4.0))
    elif rng.random() < 0.2:  # bolus early or late in the series
        overrides["baseline_s"] = float(rng.uniform(0.5, 22.0))
    if rng.random() < 0.2:  # proton-density frames first
        overrides["n_pd_frames"] = int(rng.integers(1, 4))
    if rng.random() < 0.2:  # strongly saturated blood pools
        overrides["lv_peak_mmol"] = float(rng.uniform(8.0, 14.0))
    if rng.random() < 0.15:  # very noisy
        overrides["snr"] = float(rng.uniform(2.0, 4.0))
    return overrides


def study_samples(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(inputs float16 (C, n, n), labels uint8 (n, n)): ``ACQUISITIONS_PER_SLICE`` per slice
    of the phantom of ``seed``, each a scanner-like randomisation of the rendered series."""
    import torch

    from ..phantom import generate_phantom
    from ..phantom_scanner import scanner_like_phantom
    from .features import Grid, slice_inputs
    from .randomise import randomise_series

    torch.set_num_threads(1)
    rng = np.random.default_rng([seed, 1])
    if rng.random() < SCANNER_LIKE_FRACTION:
        phantom = scanner_like_phantom(seed, rng)
    else:
        phantom = generate_phantom(seed, **training_overrides(rng))
    times = np.asarray(phantom.attrs["frame_times_s"])
    reference = phantom.attrs["reference_frame"]
    motion = phantom.truth["motion"] + _registration_error(rng, phantom.truth["motion"].shape)
    grid = Grid.for_image(phantom.image.shape[2:], phantom.attrs["pixel_spacing_mm"])
    samples = []
    for s in range(phantom.image.shape[0]):
        labels = labels_on_grid(grid, phantom.truth["labels"][s, reference[s]])
        rows, cols = np.nonzero((labels == LV_BLOOD) | (labels == MYOCARDIUM))
        if rows.size == 0:
            continue
        for _ in range(ACQUISITIONS_PER_SLICE):
            frames, shifts, slice_times = phantom.image[s], motion[s], times[s]
            if rng.random() < RANDOMISED_FRACTION:
                frames, slice_times, shifts = randomise_series(frames, slice_times, shifts, rng)
            inputs = slice_inputs(frames, shifts, slice_times, grid).numpy()
            offset = rng.integers(-HEART_OFFSET_PX, HEART_OFFSET_PX + 1, size=2)
            corner = (np.array([rows.mean(), cols.mean()]).round().astype(int) + offset
                      - STORED_CROP // 2)
            samples.append((crop(inputs, corner, STORED_CROP).astype(np.float16),
                            crop(labels, corner, STORED_CROP)))
    return samples


def _registration_error(rng, shape) -> np.ndarray:
    error = rng.normal(0.0, MOTION_ERROR_PX, shape)
    outliers = rng.random(shape[:-1]) < MOTION_OUTLIER_RATE
    error[outliers] += rng.normal(0.0, MOTION_OUTLIER_PX, (int(outliers.sum()), shape[-1]))
    return error.astype(np.float32)


def labels_on_grid(grid, labels: np.ndarray, shifts=None) -> np.ndarray:
    """Image labels (Y, X), or (F, Y, X) of frames moved by ``shifts`` (F, 2) (row, col) ->
    grid labels of the reference geometry: the class with the largest mean share after
    bilinear one-hot resampling (partial volume)."""
    import torch

    frames = np.asarray(labels).reshape(-1, *np.shape(labels)[-2:])
    shifts = np.zeros((len(frames), 2)) if shifts is None else np.reshape(shifts, (-1, 2))
    total = 0
    for frame, shift in zip(frames, shifts):
        one_hot = (frame[None] == np.arange(N_CLASSES)[:, None, None]).astype(np.float32)
        total = total + grid.from_image(torch.from_numpy(one_hot), np.tile(shift, (N_CLASSES, 1)))
    return total.argmax(dim=0).numpy().astype(np.uint8)


def crop(array: np.ndarray, corner, size: int) -> np.ndarray:
    """``array[..., r:r+size, c:c+size]`` with zeros where the window leaves the array."""
    out = np.zeros((*array.shape[:-2], size, size), dtype=array.dtype)
    r0, c0 = corner
    src_r = slice(max(r0, 0), min(r0 + size, array.shape[-2]))
    src_c = slice(max(c0, 0), min(c0 + size, array.shape[-1]))
    out[..., src_r.start - r0 : src_r.stop - r0, src_c.start - c0 : src_c.stop - c0] = array[
        ..., src_r, src_c
    ]
    return out


def generate_samples(seeds, workers: int, log: Callable[[str], None]):
    """Stacked (inputs, labels) of the studies of ``seeds``, generated in ``workers`` processes."""
    inputs, labels = [], []
    started = time.perf_counter()
    with _one_thread_per_worker(), get_context("spawn").Pool(workers) as pool:
        for done, samples in enumerate(pool.imap(study_samples, seeds, chunksize=2), start=1):
            for x, y in samples:
                inputs.append(x)
                labels.append(y)
            if done % 50 == 0 or done == len(seeds):
                log(f"generated {done}/{len(seeds)} studies ({time.perf_counter() - started:.0f} s)")
    return np.stack(inputs), np.stack(labels)


@contextlib.contextmanager
def _one_thread_per_worker():
    """Spawned workers inherit the environment: one BLAS/OpenMP thread each, so that
    ``workers`` processes do not each start a thread per core."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, "1"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def augment(inputs, labels, rng, device: str = "cpu"):
    """A randomly cropped, turned, scaled, mirrored and elastically deformed batch, with
    feature intensities jittered: torch (float32 inputs, int64 labels) on ``device``.

    Every random draw is seeded from the numpy ``rng``, so CPU training is reproducible.
    Channels past the model's own (fine-tuning's extra masks) are moved, not jittered.
    """
    import torch
    import torch.nn.functional as F

    from .features import N_CHANNELS

    start = rng.integers(0, STORED_CROP - TRAIN_CROP + 1, size=2)
    window = (slice(start[0], start[0] + TRAIN_CROP), slice(start[1], start[1] + TRAIN_CROP))
    x = torch.as_tensor(np.ascontiguousarray(inputs[(..., *window)]), device=device).float()
    y = torch.as_tensor(np.ascontiguousarray(labels[(..., *window)]), device=device)
    n = len(x)
    generator = torch.Generator(device).manual_seed(int(rng.integers(2**62)))
    lookup = _deformation_lookup(n, rng, generator, device)
    x = F.grid_sample(x, lookup, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y[:, None].float(), lookup, mode="nearest", padding_mode="zeros",
                      align_corners=False)[:, 0].long()
    gain = torch.as_tensor(rng.uniform(0.8, 1.25, (n, 2, 1, 1)), dtype=torch.float32,
                           device=device)
    noise_sd = torch.as_tensor(rng.uniform(0.0, 0.05, (n, 1, 1, 1)), dtype=torch.float32,
                               device=device)
    features = x[:, :N_CHANNELS]
    inside = (features != 0).any(dim=1, keepdim=True)
    scaled = torch.cat([features[:, :1] * gain[:, :1],  # pre-contrast
                        features[:, 1:-1] * gain[:, 1:],  # enhancement
                        features[:, -1:]], dim=1)  # time to peak
    noise = torch.randn(scaled.shape, generator=generator, device=device) * noise_sd
    return torch.cat([(scaled + noise) * inside, x[:, N_CHANNELS:]], dim=1), y


def _deformation_lookup(n: int, rng, generator, device, size: int = TRAIN_CROP):
    """grid_sample coordinates (n, size, size, 2): a random rotation, scale 0.85-1.2,
    mirror and a smooth elastic displacement of up to a few pixels."""
    import torch
    import torch.nn.functional as F

    angle = rng.uniform(0.0, 2 * np.pi, n)
    scale = np.exp(rng.uniform(np.log(0.85), np.log(1.2), n))
    mirror = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    affine = np.zeros((n, 2, 3))
    affine[:, 0, 0], affine[:, 0, 1] = cos * mirror, -sin
    affine[:, 1, 0], affine[:, 1, 1] = sin * mirror, cos
    affine = torch.as_tensor(affine, dtype=torch.float32, device=device)
    grid = F.affine_grid(affine, (n, 1, size, size), align_corners=False)
    strength = torch.as_tensor(rng.uniform(0.0, 0.03, (n, 1, 1, 1)), dtype=torch.float32,
                               device=device)
    coarse = torch.randn((n, 2, 5, 5), generator=generator, device=device) * strength
    elastic = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return grid + elastic.permute(0, 2, 3, 1)


def segmentation_loss(logits, target):
    """Cross-entropy plus the soft-Dice loss of the foreground classes (torch tensors)."""
    import torch
    import torch.nn.functional as F

    logits = logits.float()
    probabilities = torch.softmax(logits, dim=1)
    one_hot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    overlap = (probabilities * one_hot).sum(dim=(0, 2, 3))
    total = probabilities.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3))
    soft_dice = (2 * overlap + 1.0) / (total + 1.0)
    return F.cross_entropy(logits, target) + (1 - soft_dice[1:]).mean()


def validate_dice(network, inputs, labels, batch_size, device: str = "cpu") -> list[float]:
    """Dice per class of the network's predictions on validation samples."""
    import torch

    from .metrics import dice_per_class  # scipy: not at import, the CLI imports this module

    network.eval()
    predicted = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            x = torch.from_numpy(inputs[start : start + batch_size].astype(np.float32))
            predicted.append(network(x.to(device)).argmax(dim=1).cpu().numpy())
    network.train()
    return dice_per_class(np.concatenate(predicted), labels)


def train(
    out_dir: str | Path,
    config: TrainingConfig = TrainingConfig(),
    log: Callable[[str], None] = print,
) -> dict:
    """Train from scratch and write ``out_dir/unet.safetensors`` + ``unet.json``; return the metadata."""
    import torch

    from .features import GRID_MM, N_CHANNELS, PEAK_OFFSETS_S
    from .model import build_network, pick_device, save_model

    if config.train_studies < 1 or config.validation_studies < 1:
        raise InputError("training needs at least one training and one validation study")
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    train_seeds = [TRAIN_SEED_BASE + i for i in range(config.train_studies)]
    validation_seeds = [VALIDATION_SEED_BASE + i for i in range(config.validation_studies)]
    train_x, train_y = generate_samples(train_seeds, config.workers, log)
    val_x, val_y = generate_samples(validation_seeds, config.workers, log)
    generation_s = time.perf_counter() - started
    log(f"{len(train_x)} training and {len(val_x)} validation slices")

    architecture = {"name": "unet2d", "in_channels": N_CHANNELS, "n_classes": N_CLASSES,
                    "widths": list(WIDTHS)}
    device = pick_device(config.device)
    # bfloat16 on the CPU is several times slower than float32 without AMX / AVX512-BF16
    on_gpu = device.startswith("cuda")
    network = build_network(architecture).to(device)
    optimiser = torch.optim.AdamW(
        network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    steps_per_epoch = max(1, len(train_x) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.learning_rate, total_steps=config.max_epochs * steps_per_epoch,
        pct_start=0.05,
    )
    best = {"score": -1.0, "epoch": 0, "dice": None, "state": None}
    history = []
    for epoch in range(1, config.max_epochs + 1):
        epoch_started = time.perf_counter()
        order = rng.permutation(len(train_x))
        losses = []
        for step in range(steps_per_epoch):
            batch = np.sort(order[step * config.batch_size : (step + 1) * config.batch_size])
            x, y = augment(train_x[batch], train_y[batch], rng, device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu):
                logits = network(x)
            loss = segmentation_loss(logits, y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
        dice = validate_dice(network, val_x, val_y, config.batch_size, device)
        score = float(np.nanmean(dice))
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "validation_dice": dice})
        log(
            f"epoch {epoch:3d}  loss {np.mean(losses):.4f}  validation Dice LV {dice[0]:.3f} "
            f"myo {dice[1]:.3f} RV {dice[2]:.3f}  ({time.perf_counter() - epoch_started:.0f} s)"
        )
        if score > best["score"]:
            best = {"score": score, "epoch": epoch, "dice": dice,
                    "state": {k: v.clone() for k, v in network.state_dict().items()}}
        elif epoch - best["epoch"] >= config.patience:
            log(f"early stop: no improvement for {config.patience} epochs")
            break
    network.load_state_dict(best["state"])
    metadata = {
        "architecture": architecture,
        "inputs": {"grid_mm": GRID_MM, "peak_offsets_s": list(PEAK_OFFSETS_S),
                   "channels": "pre-contrast, enhancement at peak offsets, peak enhancement, "
                               "time to peak"},
        "classes": ["background", "LV blood pool", "LV myocardium", "RV blood pool"],
        "training": {
            **dataclasses.asdict(config),
            "train_seeds": [train_seeds[0], train_seeds[-1]],
            "validation_seeds": [validation_seeds[0], validation_seeds[-1]],
            "train_slices": len(train_x),
            "validation_slices": len(val_x),
            "stored_crop": STORED_CROP,
            "train_crop": TRAIN_CROP,
            "augmentation": "phantom overrides in training_overrides(); "
                            f"{SCANNER_LIKE_FRACTION:.0%} of studies scanner-like "
                            "(phantom_scanner.py, held-out settings never drawn); "
                            f"{ACQUISITIONS_PER_SLICE} acquisitions per slice, "
                            f"{RANDOMISED_FRACTION:.0%} randomised (randomise.py: timing, "
                            "frames dropped/duplicated, gain/offset, gamma, bias field, blur, "
                            "k-space truncation, noise, integer storage); motion error "
                            f"{MOTION_ERROR_PX} px SD + {MOTION_OUTLIER_RATE:.0%} outliers; "
                            "per step: random crop, rotation, scale 0.85-1.2, mirror, elastic "
                            "deformation, feature gain 0.8-1.25 and noise",
            "loss": "cross-entropy + soft Dice (classes 1-3)",
            "optimiser": "AdamW, one-cycle learning rate"
                         + (", bfloat16 autocast" if on_gpu else ", float32"),
            "device": device,
            "epochs_run": len(history),
            "best_epoch": best["epoch"],
            "history": history,
            "generation_s": round(generation_s, 1),
            "total_s": round(time.perf_counter() - started, 1),
        },
        "validation_dice": dict(zip(["lv_blood_pool", "myocardium", "rv_blood_pool"], best["dice"])),
        "package_version": __version__,
        "torch_version": torch.__version__,
        "platform": platform.platform(),
    }
    return save_model(network, Path(out_dir) / "unet.safetensors", metadata)
