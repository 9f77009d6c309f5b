"""Fine-tuning the slice-level scar model on a site's own weak labels.

The supervision is what the LGE dock's *fibrosis* choice writes for a slice
(``slice_has_scar``: true or false; unknown slices are left out), exactly the
one bit per slice the shipped model was trained with; the myocardium is the
store's LGE labels. A quarter of the labelled slices (at least one with and one
without scar) is held out: it picks the epoch, by the weak loss, and the
threshold, by the balanced accuracy of the "any scar" decision, as training
does. The result is a new model file; the shipped one is never changed.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputError
from ..study import MYOCARDIUM
from .store import LgeStudy, has_lge
from .train import (STORED_CROP, TOP_FRACTION, Samples, augment, batches, choose_threshold,
                    weak_loss)

KIND = "slice"
HELD_OUT_FRACTION = 0.25
MIN_LABELLED = 4  # slices with a weak label, both answers among them


def store_samples(stores: list[Path]) -> Samples:
    """The labelled slices of the stores' LGE studies as training samples (cropped around
    the myocardium on the models' grid). InputError when a store has no analysed LGE."""
    from ..segment.features import Grid
    from ..segment.train import crop, labels_on_grid
    from .models import slice_inputs
    from .pipeline import lge_image

    rows = []
    size = STORED_CROP["scar"]
    for number, store in enumerate(stores):
        if not has_lge(store):
            raise InputError(f"{store}: no LGE study to learn from")
        lge = LgeStudy.open(store)
        if not lge.has("labels"):
            raise InputError(f"{store}: its LGE study has no labels yet (perfroi lge-analyze)")
        image, labels = lge_image(lge), lge.read("labels")
        grid = Grid.for_image(image.shape[1:], lge.pixel_spacing_mm)
        for s, answer in enumerate(lge.attrs["slice_has_scar"]):
            myocardium = labels[s] == MYOCARDIUM
            if answer is None or not myocardium.any():
                continue
            inputs = slice_inputs(image[s], grid, myocardium).numpy()
            on_grid = labels_on_grid(grid, labels[s])
            where = np.argwhere(inputs[1] >= 0.5).mean(axis=0).round().astype(int)
            corner = where - size // 2
            rows.append((crop(inputs, corner, size).astype(np.float16), crop(on_grid, corner, size),
                         np.zeros((size, size), np.uint8), bool(answer), number))
    if not rows:
        raise InputError("no LGE slice has a fibrosis label (yes or no) to learn from")
    inputs, labels, scar, has_scar, study = zip(*rows)
    return Samples(np.stack(inputs), np.stack(labels), np.stack(scar), np.array(has_scar),
                   np.array(study))


def finetune_scar(stores: list[Path], out: Path, *, base: str | Path = KIND, epochs: int = 10,
                  learning_rate: float = 1e-3, seed: int = 0,
                  log: Callable[[str], None] = print) -> dict:
    """Fine-tune the slice-level scar model ``base`` (shipped, or a file) on the stores'
    weak labels; write ``out`` (.safetensors, with its .json) and return the metadata."""
    import torch

    from ..segment.model import save_model
    from .models import load_lge_model

    out = Path(out)
    if out.suffix != ".safetensors":
        raise InputError(f"{out}: the fine-tuned model is written as a .safetensors file")
    samples = store_samples([Path(store) for store in stores])
    answers = samples.has_scar
    if len(samples) < MIN_LABELLED or answers.all() or not answers.any():
        raise InputError(f"fine-tuning needs at least {MIN_LABELLED} slices marked, with and "
                         f"without fibrosis; the stores have {int(answers.sum())} with and "
                         f"{int((~answers).sum())} without")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    training, held_out = _split(samples, rng)
    loaded = load_lge_model(base, device="cpu")
    if loaded.metadata.get("kind") not in (KIND, None) or (
            loaded.metadata["architecture"]["in_channels"] != 2):
        raise InputError(f"{loaded.weights_path}: not a slice-level scar model")
    network = copy.deepcopy(loaded.network)  # the loaded model is shared (cached)
    network.train()
    optimiser = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=1e-4)
    before = _held_out_loss(network, held_out)
    best = (before, 0, {k: v.clone() for k, v in network.state_dict().items()})
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        network.train()
        for index in batches(training, KIND, 8, rng):
            x, _, _ = augment(training.inputs[index], training.labels[index],
                              training.scar[index], KIND, rng)
            loss = weak_loss(network(x), x[:, 1:2], [[i] for i in range(len(index))],
                             training.has_scar[index], TOP_FRACTION[KIND])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        score = _held_out_loss(network, held_out)
        log(f"epoch {epoch:3d}  held-out weak loss {score:.4f}")
        if score < best[0]:
            best = (score, epoch, {k: v.clone() for k, v in network.state_dict().items()})
    network.load_state_dict(best[2])
    network.eval()
    threshold, accuracy = choose_threshold(_probability(network, held_out), held_out, KIND)
    metadata = {
        **{key: loaded.metadata[key] for key in ("name", "kind", "architecture", "inputs",
                                                  "output") if key in loaded.metadata},
        "threshold": threshold,
        "threshold_choice": f"best balanced accuracy ({accuracy:.3f}) of the slice-level 'any "
                            "scar' decision against the held-out weak labels",
        "finetuning": {
            "base": str(loaded.weights_path), "base_sha256": loaded.metadata["sha256"],
            "stores": [str(store) for store in stores], "epochs": epochs,
            "best_epoch": best[1], "learning_rate": learning_rate, "seed": seed,
            "train_slices": len(training), "held_out_slices": len(held_out),
            "held_out_weak_loss": {"before": round(before, 4), "after": round(best[0], 4)},
            "seconds": round(time.perf_counter() - started, 1), "version": __version__,
        },
    }
    return save_model(network, out, metadata)


def _split(samples: Samples, rng) -> tuple[Samples, Samples]:
    """Training and held-out slices; the held-out ones hold both answers."""
    held = []
    for answer in (True, False):
        members = rng.permutation(np.flatnonzero(samples.has_scar == answer))
        held.extend(members[: max(1, int(round(HELD_OUT_FRACTION * len(members))))])
    held_mask = np.isin(np.arange(len(samples)), held)

    def part(mask):
        return Samples(samples.inputs[mask], samples.labels[mask], samples.scar[mask],
                       samples.has_scar[mask], samples.study[mask])

    return part(~held_mask), part(held_mask)


def _probability(network, samples: Samples) -> np.ndarray:
    import torch

    with torch.inference_mode():
        logits = network(torch.from_numpy(samples.inputs.astype(np.float32)))[:, 0]
    return torch.sigmoid(logits).numpy()


def _held_out_loss(network, samples: Samples) -> float:
    import torch

    network.eval()
    with torch.inference_mode():
        x = torch.from_numpy(samples.inputs.astype(np.float32))
        loss = weak_loss(network(x), x[:, 1:2], [[i] for i in range(len(samples))],
                         samples.has_scar, TOP_FRACTION[KIND])
    return float(loss)
