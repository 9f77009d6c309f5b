"""Fine-tuning the slice-level scar model on the fibrosis labels written per slice."""

from __future__ import annotations

import json

import pytest

from napari_perfroi.cli import main
from napari_perfroi.lge.models import load_lge_model, weights_path
from napari_perfroi.lge.phantom import write_lge_phantom
from napari_perfroi.phantom import write_phantom
from napari_perfroi.segment.model import file_sha256


@pytest.fixture(scope="module")
def labelled_stores(tmp_path_factory):
    """Phantom stores whose LGE slices carry the fibrosis labels a reader would set."""
    root = tmp_path_factory.mktemp("finetune")
    stores = []
    for seed, scar in ((3, "lad"), (5, "none"), (6, "rca")):
        study = write_phantom(root / f"s{seed}.zarr", seed=seed, n_dynamics=12)
        lge = write_lge_phantom(study, scar, lge_kind="psir")
        lge.write("labels", lge.read("truth/labels"))
        lge.update_attrs(slice_has_scar=list(lge.attrs["truth"]["slice_has_scar"]))
        stores.append(study.path)
    return stores


def test_finetune_writes_a_model_that_the_scar_step_uses(labelled_stores, tmp_path, capsys):
    shipped = file_sha256(weights_path("slice"))
    out = tmp_path / "site.safetensors"
    assert main(["train-lge", "--kind", "slice", "--finetune", *map(str, labelled_stores),
                 "--out", str(out), "--epochs", "2"]) == 0
    assert "held-out weak loss" in capsys.readouterr().out
    model = load_lge_model(out, device="cpu")
    recipe = model.metadata["finetuning"]
    assert recipe["train_slices"] + recipe["held_out_slices"] == 9
    assert recipe["base_sha256"] == load_lge_model("slice").metadata["sha256"]
    assert 0.0 < model.metadata["threshold"] < 1.0
    assert file_sha256(weights_path("slice")) == shipped  # the shipped model is untouched

    store = labelled_stores[0]
    assert main(["lge-analyze", str(store), "--steps", "lge-scar,viability",
                 "--scar-weights", str(out)]) == 0
    capsys.readouterr()
    steps = json.loads((store / "lge" / "zarr.json").read_text())["attributes"]["perfroi_lge"][
        "steps"]
    assert steps["lge-scar"]["parameters"]["model"] == out.name


def test_finetune_needs_labels_with_both_answers(labelled_stores, tmp_path, capsys):
    from napari_perfroi.lge.store import LgeStudy

    bare = write_phantom(tmp_path / "bare.zarr", seed=8, n_dynamics=12)
    lge = write_lge_phantom(bare, "none")
    lge.write("labels", lge.read("truth/labels"))
    assert main(["train-lge", "--kind", "slice", "--finetune", str(bare.path), "--out",
                 str(tmp_path / "x.safetensors")]) == 2
    assert "no LGE slice has a fibrosis label" in capsys.readouterr().err
    LgeStudy.open(bare, writable=True).update_attrs(slice_has_scar=[False, False, False])
    assert main(["train-lge", "--kind", "slice", "--finetune", str(bare.path), "--out",
                 str(tmp_path / "x.safetensors")]) == 2
    assert "with and without fibrosis" in capsys.readouterr().err
    assert main(["train-lge", "--kind", "pixel", "--finetune", str(labelled_stores[0]),
                 "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "--kind slice" in capsys.readouterr().err
    assert main(["lge-analyze", str(labelled_stores[1]), "--steps", "lge-scar",
                 "--scar-method", "nsd", "--scar-weights", str(tmp_path / "x.safetensors")]) == 2
    assert "not the nsd rule" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
