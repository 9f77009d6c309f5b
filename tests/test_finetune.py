"""Fine-tuning on accepted series: CPU-sized runs, the shipped model untouched, cancel."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest
from safetensors.torch import load_file

from napari_perfroi.cli import main
from napari_perfroi.errors import InputError
from napari_perfroi.phantom import write_phantom
from napari_perfroi.progress import Cancelled
from napari_perfroi.segment.finetune import FinetuneConfig, check_output, finetune
from napari_perfroi.segment.model import SHIPPED_WEIGHTS, file_sha256, metadata_path
from napari_perfroi.study import Study

TINY = FinetuneConfig(max_epochs=2, patience=1, steps_per_epoch=2, batch_size=2)


def _accepted_store(path, seed: int, accepted=(0, 1, 2)):
    """A short phantom with the truth motion, labels and circles, accepted on ``accepted``."""
    study = write_phantom(path, seed=seed, n_dynamics=20)
    for name in ("motion", "labels", "roi"):
        study.write(name, study.read(f"truth/{name}"))
    states = np.full(study.shape[:2], 1, dtype=np.uint8)
    states[list(accepted)] = 4
    study.write("roi_state", states)
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("finetune")
    return [str(_accepted_store(folder / "a.zarr", 31)),
            str(_accepted_store(folder / "b.zarr", 32, accepted=(1,)))]


def test_finetune_changes_weights_and_leaves_the_shipped_model(stores, tmp_path):
    shipped = file_sha256(SHIPPED_WEIGHTS), file_sha256(metadata_path(SHIPPED_WEIGHTS))
    out = tmp_path / "site.safetensors"
    calls = []
    started = time.perf_counter()
    path, metadata = finetune(stores, out, config=TINY, progress=lambda d, t: calls.append((d, t)),
                              log=lambda line: None)
    assert time.perf_counter() - started < 40
    assert path == out and out.is_file() and calls[-1] == (4, 4)
    assert (file_sha256(SHIPPED_WEIGHTS), file_sha256(metadata_path(SHIPPED_WEIGHTS))) == shipped
    before, after = load_file(str(SHIPPED_WEIGHTS)), load_file(str(out))
    assert any(not np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)
    saved = json.loads(metadata_path(out).read_text())
    assert saved["sha256"] == file_sha256(out) == metadata["sha256"]
    assert saved["base_model"]["sha256"] == shipped[0]
    recipe = saved["finetuning"]
    seen = {store["path"]: sorted(store["train_slices"] + store["held_out_slices"])
            for store in recipe["stores"]}
    assert seen == {stores[0]: [0, 1, 2], stores[1]: [1]}
    assert recipe["train_series"] + recipe["held_out_series"] == 4
    assert recipe["held_out_series"] >= 1
    assert recipe["max_epochs"] == 2 and recipe["history"][0]["epoch"] == 0


def test_segmenting_with_a_finetuned_model_records_it(stores, tmp_path, capsys):
    out = tmp_path / "mine.safetensors"
    finetune(stores, out, config=TINY, log=lambda line: None)
    target = tmp_path / "s.zarr"
    write_phantom(target, seed=33, n_dynamics=20)
    study = Study.open(target, writable=True)
    study.write("motion", study.read("truth/motion"))
    assert main(["analyze", str(target), "--steps", "segment", "--weights", str(out),
                 "--device", "cpu"]) == 0
    recorded = Study.open(target).attrs["steps"]["segment"]["parameters"]
    assert recorded["model_sha256"] == file_sha256(out)
    assert recorded["model_name"] == "mine" and recorded["model_path"] == str(out.resolve())


def test_batch_segments_with_the_chosen_model(stores, tmp_path):
    model = tmp_path / "site.safetensors"
    finetune(stores, model, config=TINY, log=lambda line: None)
    source = write_phantom(tmp_path / "in.zarr", seed=35, n_dynamics=20).path
    out = tmp_path / "batch"
    assert main(["batch", str(source), "--out", str(out), "--workers", "1",
                 "--weights", str(model)]) == 0
    recorded = Study.open(out / "studies" / "in.zarr").attrs["steps"]["segment"]["parameters"]
    assert recorded["model_path"] == str(model.resolve())
    assert recorded["model_sha256"] == file_sha256(model)


def test_store_without_accepted_series_is_a_one_line_error(tmp_path, capsys):
    store = _accepted_store(tmp_path / "none.zarr", 34, accepted=())
    out = tmp_path / "x.safetensors"
    assert main(["train", "--finetune", str(store), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no accepted series" in err
    assert not out.exists()


def test_cancel_writes_nothing(stores, tmp_path):
    out = tmp_path / "cancelled.safetensors"

    def cancel(done, total):
        raise Cancelled

    with pytest.raises(Cancelled):
        finetune(stores, out, config=TINY, progress=cancel, log=lambda line: None)
    assert list(tmp_path.iterdir()) == []


def test_the_shipped_weights_are_refused_as_output(stores, capsys):
    with pytest.raises(InputError, match="shipped"):
        check_output(SHIPPED_WEIGHTS)
    assert main(["train", "--finetune", *stores, "--out", str(SHIPPED_WEIGHTS)]) == 2
    assert "shipped" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="XDG data folder")
def test_cli_finetune_writes_a_user_model(stores, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert main(["train", "--finetune", *stores, "--epochs", "1"]) == 0
    written = list((tmp_path / "data" / "napari-perfroi" / "models").glob("*.safetensors"))
    assert len(written) == 1 and f"wrote {written[0]}" in capsys.readouterr().out
