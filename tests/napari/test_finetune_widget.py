"""Fine-tuning from the "Segment" dock in a real viewer: the user model, its choice, cancel."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_perfroi._napari import layers as L
from napari_perfroi._napari.segment_widget import SHIPPED_MODEL, SegmentWidget
from napari_perfroi._napari.step_worker import BAR_STEPS_PER_UNIT
from napari_perfroi.label_edits import edited_frames
from napari_perfroi.segment.finetune import FinetuneConfig, user_models_dir
from napari_perfroi.segment.model import SHIPPED_WEIGHTS, file_sha256
from napari_perfroi.study import Study

from worker_runs import run_responsively

pytestmark = pytest.mark.napari

PLUGIN = "napari-perfroi"
RUN_TIMEOUT_MS = 300_000
TINY = FinetuneConfig(max_epochs=2, patience=1, steps_per_epoch=2, batch_size=2)


@pytest.fixture
def user_data(tmp_path, monkeypatch):
    """An empty user data folder, so that user models land in the test's folder."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return user_models_dir()


@pytest.fixture
def accepted_store(phantom_store):
    """The phantom with its true motion, labels and circles, accepted on every frame."""
    study = Study.open(phantom_store, writable=True)
    for name in ("motion", "labels", "roi"):
        study.write(name, study.read(f"truth/{name}"))
    study.write("roi_state", np.full(study.shape[:2], 4, dtype=np.uint8))
    return phantom_store


def _dock(viewer, store):
    viewer.open(store, plugin=PLUGIN)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    assert isinstance(widget, SegmentWidget)
    widget.finetune_config = TINY
    return widget


def test_finetune_saves_a_user_model_that_segment_then_uses(
        make_napari_viewer, qtbot, accepted_store, user_data):
    shipped = file_sha256(SHIPPED_WEIGHTS)
    viewer = make_napari_viewer()
    widget = _dock(viewer, accepted_store)
    assert widget.stores_to_finetune() == [accepted_store]
    assert widget.finetune_stores.item(0).text() == "p.zarr: 3 accepted series"
    # the full path is one hover away, and a long name wraps rather than being cut off
    assert widget.finetune_stores.item(0).toolTip() == f"{accepted_store}\n3 accepted series"
    assert widget.finetune_stores.wordWrap()
    assert widget.model_box.currentText() == SHIPPED_MODEL and widget.model() is None

    assert widget.save_label_edits() == 0 and "no new edits" in widget.status.text()
    viewer.layers[L.LABELS_LAYER].data[0, 3, :4, :4] = 3  # painted, not saved yet

    shown = run_responsively(qtbot, widget, widget.fine_tune, widget.finetune_button,
                             RUN_TIMEOUT_MS)
    assert set(zip(*np.nonzero(edited_frames(Study.open(accepted_store))))) == {(0, 3)}
    assert shown[-1] == 4 * BAR_STEPS_PER_UNIT  # 2 epochs x 2 steps
    models = list(user_data.glob("*.safetensors"))
    assert len(models) == 1 and models[0].with_suffix(".json").is_file()
    assert widget.model() == models[0].resolve()
    assert widget.model_box.currentText() == models[0].stem
    assert "fine-tuned on 2 series (1 held out" in widget.status.text()
    assert file_sha256(SHIPPED_WEIGHTS) == shipped
    saved = json.loads(models[0].with_suffix(".json").read_text())
    assert saved["finetuning"]["stores"][0]["edited_slices"] == [0]

    run_responsively(qtbot, widget, widget.run, widget.run_button, RUN_TIMEOUT_MS)
    assert "kept the edited labels of 1 frame(s)" in widget.status.text()
    assert (Study.open(accepted_store).read("labels")[0, 3, :4, :4] == 3).all()
    recorded = Study.open(accepted_store).attrs["steps"]["segment"]["parameters"]
    assert recorded["model_path"] == str(models[0].resolve())
    assert recorded["model_sha256"] == file_sha256(models[0])

    # a new dock lists the user model and picks the one that made the store's labels
    again = SegmentWidget(viewer)
    names = [again.model_box.itemText(i) for i in range(again.model_box.count())]
    assert names == [SHIPPED_MODEL, models[0].stem, "other file…"]
    assert again.model() == models[0].resolve()
    tooltip = again.model_box.itemData(1, Qt.ItemDataRole.ToolTipRole)
    assert "fine-tuned on 3 series of 1 study" in tooltip


def test_cancelled_finetune_writes_no_model(make_napari_viewer, qtbot, accepted_store,
                                            user_data):
    viewer = make_napari_viewer()
    widget = _dock(viewer, accepted_store)
    widget.finetune_config = FinetuneConfig(max_epochs=50, steps_per_epoch=50, batch_size=2)
    with qtbot.waitSignal(widget.finished, timeout=RUN_TIMEOUT_MS):
        widget.fine_tune()
        qtbot.waitUntil(lambda: widget.progress_bar.value() >= BAR_STEPS_PER_UNIT, timeout=RUN_TIMEOUT_MS)
        widget.cancel()

    assert "cancelled" in widget.status.text()
    assert not user_data.exists()
    assert widget.model() is None
    assert widget.finetune_button.isEnabled()


def test_study_without_accepted_series_is_one_status_line(
        make_napari_viewer, qtbot, phantom_store, user_data):
    viewer = make_napari_viewer()
    widget = _dock(viewer, phantom_store)
    with qtbot.waitSignal(widget.finished, timeout=RUN_TIMEOUT_MS):
        widget.fine_tune()

    assert widget.finetune_stores.item(0).text() == "p.zarr: 0 accepted series"
    assert "no accepted series" in widget.status.text()
    assert len(widget.status.text().splitlines()) == 1
    assert not user_data.exists()
    widget.finetune_stores.clear()
    widget.fine_tune()  # nothing to learn from: says so, starts nothing
    assert widget.worker is None and "add the studies" in widget.status.text()
