"""The "Segment" dock widget: motion + segmentation of the study shown in the viewer,
with the model to use, and fine-tuning of that model on accepted series.

Segmenting and fine-tuning run in a napari thread worker, so the viewer stays
responsive. The widget only finds the study store, starts and cancels the
run and shows the result; the analysis lives in
:mod:`napari_perfroi.pipeline` and :mod:`napari_perfroi.segment.finetune`.
Torch is imported in the worker thread, never when napari loads this module.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import InputError
from ..progress import Cancelled
from .layers import (
    DICOM_KEY,
    IMAGE_LAYER,
    LABELS_LAYER,
    STORE_KEY,
    find_layer,
    study_image_layer,
)
from .scroll import scrolling_layout
from .step_worker import (
    clear_step_progress,
    request_cancel,
    show_step_error,
    show_step_progress,
    step_worker,
)

STEPS = ["segment"]  # plus the steps whose output the store lacks (motion)
SHIPPED_MODEL = "shipped model"
OTHER_MODEL = "other file…"
IMPORT_HINT = "press Import DICOM… in the Segment dock to make a study store of it"


def find_store(viewer, current: Path | None = None) -> tuple[Path | None, str]:
    """The store the docks should show (None if none) and a note: the selected layer's
    study, else ``current`` while it is open, else the first open study."""
    layer = study_image_layer(viewer, current)
    if layer is None:
        return None, f"no '{IMAGE_LAYER}' layer: open a study store (*.zarr)"
    if STORE_KEY in layer.metadata:
        path = Path(layer.metadata[STORE_KEY])
        return path, f"study: {path.name}"
    if DICOM_KEY in layer.metadata:
        return None, f"'{layer.name}' is a DICOM folder, not a study store: {IMPORT_HINT}"
    return None, f"'{layer.name}' is not from a study store: open a study store (*.zarr)"


def held_out_change(metadata: dict) -> str:
    """"myocardium Dice A → B": a fine-tuned model's held-out Dice before and after."""
    before = metadata["base_validation_dice"]["myocardium"]
    after = metadata["validation_dice"]["myocardium"]
    return f"myocardium Dice {before:.3f} → {after:.3f}"


def model_description(path: Path | None) -> str:
    """One line on a model file: what it was fine-tuned on and its held-out Dice."""
    from ..segment.model import metadata_path

    if path is None:
        return "the model shipped with napari-perfroi"
    try:
        metadata = json.loads(metadata_path(path).read_text())
        recipe = metadata["finetuning"]
        change = held_out_change(metadata)
    except (OSError, ValueError, KeyError, TypeError):
        return str(path)
    studies = len(recipe["stores"])
    return (f"{path}\nfine-tuned on {recipe['train_series'] + recipe['held_out_series']} "
            f"series of {studies} stud{'y' if studies == 1 else 'ies'}; held-out {change}")


def _name_store_item(item: QListWidgetItem) -> None:
    """Show a listed store as "NAME: k accepted series" (or why it cannot be read)."""
    from ..segment.finetune import accepted_slices
    from ..study import Study

    path = Path(item.data(Qt.ItemDataRole.UserRole))
    try:
        note = f"{len(accepted_slices(Study.open(path)))} accepted series"
    except InputError as exc:
        note = str(exc)
    item.setText(f"{path.name}: {note}")
    item.setToolTip(f"{path}\n{note}")


def find_dicom(viewer) -> Path | None:
    """The DICOM folder or zip the docks' image layer shows, None if it shows none."""
    layer = study_image_layer(viewer)
    return None if layer is None or DICOM_KEY not in layer.metadata else Path(
        layer.metadata[DICOM_KEY])


def run_import(source: Path, dest: Path, cancel: threading.Event, on_progress) -> Path:
    """Import the DICOM ``source`` into the new store ``dest`` (worker thread); ``cancel``
    stops it, and a stopped or failed import leaves no store."""
    from ..dicom import import_dicom

    def progress(done: int, total: int) -> None:
        if cancel.is_set():
            raise Cancelled
        on_progress("import", done, total)

    import_dicom(source, dest, progress=progress, warn=lambda line: None)
    return dest


def run_segment(path: Path, cancel: threading.Event, on_progress, on_device,
                model: Path | None = None) -> dict[str, str]:
    """Run segment (with ``model``, default the shipped one) and its missing prerequisites
    on the store; {step: summary}.

    Runs in the worker thread: it reports through ``on_progress(step, done,
    total)`` and ``on_device(name)`` (signal emitters) and raises
    :class:`Cancelled` once ``cancel`` is set, before a step writes anything.
    """
    from ..pipeline import run_step, with_prerequisites
    from ..segment.model import pick_device
    from ..study import Study

    study = Study.open(path, writable=True)
    device = pick_device("auto")
    on_device(device)
    summaries = {}
    for name in with_prerequisites(study, STEPS):

        def progress(done: int, total: int, name: str = name) -> None:
            if cancel.is_set():
                raise Cancelled
            on_progress(name, done, total)

        progress(0, study.shape[0])
        options = {"model": model} if name == "segment" else {}
        summaries[name] = run_step(study, name, progress, device=device, **options)
    return summaries


def run_finetune(stores: list[Path], base: Path | None, config, cancel: threading.Event,
                 on_progress) -> tuple[Path, dict]:
    """Fine-tune ``base`` on the stores' accepted series into a new user model (worker thread)."""
    from ..segment.finetune import finetune

    def progress(done: int, total: int) -> None:
        if cancel.is_set():
            raise Cancelled
        on_progress("fine-tune", done, total)

    return finetune(stores, base=base, config=config, progress=progress, log=lambda line: None)


def _pick_device() -> str:
    from ..segment.model import pick_device

    return pick_device("auto")


class SegmentWidget(QWidget):
    """Dock widget: segment the LV and RV of the study in the viewer."""

    finished = Signal()  # a run ended: done, cancelled or failed
    _progressed = Signal(str, float, int)  # step, done, total (emitted from the worker)
    _device_found = Signal(str)

    def __init__(self, napari_viewer):
        from ..segment.finetune import FinetuneConfig

        super().__init__()
        self.viewer = napari_viewer
        self.finetune_config = FinetuneConfig()
        self.worker = None  # the running thread worker, None when idle
        self._chosen_model = 0  # index of the model chosen before "other file…" was picked
        self._store: Path | None = None  # the store of the perfusion layer
        self._run_store: Path | None = None  # the store of the current run
        self._device_worker = None
        self._cancel = threading.Event()

        self.study_label = QLabel()
        self.study_label.setWordWrap(True)
        self.device_label = QLabel("device: chosen on first run")
        self.model_box = QComboBox()
        self.model_box.setToolTip("The segmentation model; fine-tuned ones are in "
                                  "the user data folder")
        self.import_button = QPushButton("Import DICOM…")
        self.import_button.setToolTip(
            "Make a study store of the DICOM folder on show (pixels as the scanner stored "
            "them), then open it in place of the folder")
        self.run_button = QPushButton("Segment")
        self.run_button.setToolTip("Estimate motion if needed, then segment every frame; "
                                   "frames with saved label edits are kept")
        self.save_labels_button = QPushButton("Save label edits")
        self.save_labels_button.setToolTip(
            "Write the painted 'labels' layer into the study; the changed frames are marked "
            "edited, kept by Segment and learnt from by Fine-tune")
        self.finetune_stores = QListWidget()
        self.finetune_stores.setToolTip("Studies whose accepted series (circles accepted on "
                                        "every frame) the model learns from")
        self.finetune_stores.setMaximumHeight(100)
        self.finetune_stores.setWordWrap(True)  # a long study name wraps, never cut off
        self.finetune_stores.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.add_stores_button = QPushButton("Add study…")
        self.remove_store_button = QPushButton("Remove")
        self.finetune_button = QPushButton("Fine-tune")
        self.finetune_button.setToolTip(
            "Train the chosen model further on the accepted series of these studies, holding "
            "some out to stop early; the result is a new model, chosen for the next Segment")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.status = QLabel()
        self.status.setWordWrap(True)

        models = QHBoxLayout()
        models.addWidget(QLabel("model:"))
        models.addWidget(self.model_box, stretch=1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.import_button)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.save_labels_button)
        buttons.addWidget(self.cancel_button)
        finetune_group = QGroupBox("Fine-tune on accepted series")
        store_buttons = QHBoxLayout()
        store_buttons.addWidget(self.add_stores_button)
        store_buttons.addWidget(self.remove_store_button)
        store_buttons.addWidget(self.finetune_button)
        finetune_layout = QVBoxLayout(finetune_group)
        finetune_layout.addWidget(self.finetune_stores)
        finetune_layout.addLayout(store_buttons)
        layout = scrolling_layout(self)
        for widget in (self.study_label, self.device_label):
            layout.addWidget(widget)
        layout.addLayout(models)
        layout.addLayout(buttons)
        layout.addWidget(finetune_group)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addStretch()

        self._list_models()
        self.model_box.activated.connect(self._model_activated)
        self.import_button.clicked.connect(self._choose_import_destination)
        self.run_button.clicked.connect(self.run)
        self.save_labels_button.clicked.connect(self.save_label_edits)
        self.finetune_button.clicked.connect(self.fine_tune)
        self.add_stores_button.clicked.connect(self._browse_stores)
        self.remove_store_button.clicked.connect(self._remove_selected_stores)
        self.cancel_button.clicked.connect(self.cancel)
        self._progressed.connect(self._show_progress)
        self._device_found.connect(self._show_device)
        self.viewer.layers.events.inserted.connect(self._refresh)
        self.viewer.layers.events.removed.connect(self._refresh)
        self.viewer.layers.selection.events.active.connect(self._refresh)  # another study
        cancel = self._cancel  # not self: the slot must outlive the widget
        self.destroyed.connect(lambda *_: cancel.set())
        self._refresh()

    # ---------------------------------------------------------------- actions
    def run(self) -> None:
        """Save label edits, then start the steps on the study's store in a worker thread."""
        self._refresh()
        if self._store is None or self.worker is not None:
            return
        self.save_label_edits()  # painted frames are kept, not overwritten
        self._run_store = self._store  # the layer may go while the run goes on
        self._start(step_worker(
            run_segment, self._run_store, self._cancel, self._progressed.emit,
            self._device_found.emit, self.model(), on_done=self._on_done,
            on_error=self._on_error, on_finished=self._on_finished,
        ))

    def _choose_import_destination(self) -> None:
        source = find_dicom(self.viewer)
        if source is None:
            return
        suggested = source.with_name(f"{source.stem}.zarr")
        dest, _ = QFileDialog.getSaveFileName(self, "New study store", str(suggested),
                                              "Study store (*.zarr)")
        if dest:
            self.import_dicom(Path(dest))

    def import_dicom(self, dest: Path) -> None:
        """Import the DICOM folder on show into the new store ``dest`` in a worker thread,
        then show the store in its place."""
        source = find_dicom(self.viewer)
        if source is None or self.worker is not None:
            return
        if dest.suffix != ".zarr":
            dest = dest.with_name(f"{dest.name}.zarr")
        self._start(step_worker(run_import, source, dest, self._cancel, self._progressed.emit,
                                on_done=self._on_imported, on_error=self._on_error,
                                on_finished=self._on_finished))

    def _on_imported(self, dest: Path) -> None:
        for layer in [layer for layer in self.viewer.layers if DICOM_KEY in layer.metadata]:
            self.viewer.layers.remove(layer)
        self.viewer.open(dest, plugin="napari-perfroi")
        self.status.setText(f"imported into {dest.name}")

    def save_label_edits(self) -> int | None:
        """Write the "labels" layer of the open study into its store; the frames newly marked
        edited (None when there is nothing to save)."""
        from ..label_edits import save_label_edits
        from ..study import Study

        layer = find_layer(self.viewer, LABELS_LAYER, self._store)
        if self.worker is not None or layer is None:
            return None
        try:
            added = save_label_edits(Study.open(self._store, writable=True), np.asarray(layer.data))
        except InputError as exc:
            self.status.setText(str(exc))
            return None
        self.status.setText(f"label edits saved: {added} more frame(s) marked edited"
                            if added else "labels: no new edits to save")
        return added

    def fine_tune(self) -> None:
        """Fine-tune the chosen model on the listed studies' accepted series (worker thread);
        label edits of the open study are saved first."""
        if self.worker is not None:
            return
        self.save_label_edits()
        self._count_accepted_series()
        stores = self.stores_to_finetune()
        if not stores:
            self.status.setText("add the studies whose accepted series to learn from")
            return
        self._start(step_worker(
            run_finetune, stores, self.model(), self.finetune_config, self._cancel,
            self._progressed.emit, on_done=self._on_finetuned, on_error=self._on_error,
            on_finished=self._on_finished,
        ))

    def model(self) -> Path | None:
        """The chosen model's weights; None for the shipped model."""
        return Path(self.model_box.currentData()) if self.model_box.currentData() else None

    def choose_model(self, path: Path | None) -> None:
        """Choose ``path`` (None: the shipped model), adding it to the list if needed."""
        key = "" if path is None else str(Path(path).resolve())
        index = self.model_box.findData(key)
        if index < 0:
            index = self.model_box.count() - 1  # before "other file…"
            self.model_box.insertItem(index, Path(key).stem, key)
            self.model_box.setItemData(index, model_description(Path(key)),
                                       Qt.ItemDataRole.ToolTipRole)
        self.model_box.setCurrentIndex(index)
        self._chosen_model = index

    def stores_to_finetune(self) -> list[Path]:
        return [Path(self.finetune_stores.item(i).data(Qt.ItemDataRole.UserRole))
                for i in range(self.finetune_stores.count())]

    def add_finetune_store(self, path: Path) -> None:
        """List a study store to learn from (shown with its number of accepted series)."""
        path = Path(path)
        if path in self.stores_to_finetune():
            return
        item = QListWidgetItem()
        item.setData(Qt.ItemDataRole.UserRole, str(path))
        item.setToolTip(str(path))
        self.finetune_stores.addItem(item)
        _name_store_item(item)

    def _count_accepted_series(self) -> None:
        """Name each listed store with its accepted series as the store has them now."""
        for i in range(self.finetune_stores.count()):
            _name_store_item(self.finetune_stores.item(i))

    def cancel(self) -> None:
        """Ask the running work to stop at the next slice or step; nothing is written."""
        if self.worker is not None:
            request_cancel(self._cancel, self.cancel_button, self.status)

    # ---------------------------------------------------------------- slots (GUI thread)
    def _start(self, worker) -> None:
        self._cancel.clear()
        self.worker = worker
        self._set_running(True)
        clear_step_progress(self.progress_bar, self.status)  # not the last run's
        self.status.setText("starting…")
        self.worker.start()

    def _refresh(self, event=None) -> None:
        previous = self._store
        self._store, note = find_store(self.viewer, previous)
        self.study_label.setText(note)
        if self._store != previous and self.worker is None:
            clear_step_progress(self.progress_bar, self.status)  # the last study's run
        if self._store is not None and self._store != previous:
            self.add_finetune_store(self._store)
            self._show_recorded_segmentation(self._store)
        self._set_running(self.worker is not None)

    def _show_recorded_segmentation(self, store: Path) -> None:
        """Choose the model that produced the store's labels, when it is still there, and
        show the uncertain slices it flagged."""
        from ..segment.infer import uncertainty_flags
        from ..study import Study

        try:
            recorded = Study.open(store).attrs.get("steps", {}).get("segment", {})
        except InputError:  # reported when a step runs on it
            return
        parameters = recorded.get("parameters", {})
        flags = uncertainty_flags(parameters.get("uncertain_slices", []))
        self.status.setText("; ".join(flags))
        path = parameters.get("model_path")
        if path is not None and Path(path).is_file():
            from ..segment.model import SHIPPED_WEIGHTS

            shipped = Path(path).resolve() == SHIPPED_WEIGHTS.resolve()
            self.choose_model(None if shipped else Path(path))

    def _list_models(self) -> None:
        from ..segment.finetune import user_models

        self.model_box.addItem(SHIPPED_MODEL, "")
        self.model_box.setItemData(0, model_description(None), Qt.ItemDataRole.ToolTipRole)
        self.model_box.addItem(OTHER_MODEL, OTHER_MODEL)
        for path in user_models():
            self.choose_model(path)
        self.choose_model(None)

    def _model_activated(self, index: int) -> None:
        if self.model_box.itemData(index) != OTHER_MODEL:
            self._chosen_model = index
            return
        path, _ = QFileDialog.getOpenFileName(self, "Segmentation model", "",
                                              "model weights (*.safetensors)")
        if path:
            self.choose_model(Path(path))
        else:
            self.model_box.setCurrentIndex(self._chosen_model)

    def _browse_stores(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Study store (*.zarr) with accepted series")
        if folder:
            self.add_finetune_store(Path(folder))

    def _remove_selected_stores(self) -> None:
        for item in self.finetune_stores.selectedItems():
            self.finetune_stores.takeItem(self.finetune_stores.row(item))

    def _set_running(self, running: bool) -> None:
        self.cancel_button.setEnabled(running and not self._cancel.is_set())
        self.run_button.setEnabled(not running and self._store is not None)
        self.import_button.setEnabled(not running and find_dicom(self.viewer) is not None)
        self.save_labels_button.setEnabled(not running and self._store is not None)
        self.finetune_button.setEnabled(not running)
        self.model_box.setEnabled(not running)

    def _show_progress(self, step: str, done: float, total: int) -> None:
        unit = {"fine-tune": "steps", "import": "files"}.get(step, "slices")
        show_step_progress(self.progress_bar, self.status, step, done, total, unit,
                           self._cancel.is_set())

    def _show_device(self, device: str) -> None:
        self.device_label.setText(f"device: {device}")

    def _on_done(self, summaries: dict[str, str]) -> None:
        from napari.utils.notifications import show_info

        self._show_labels(self._run_store)
        summary = summaries.get("segment", "done")
        self.status.setText(summary)
        show_info(f"{self._run_store.name}: {summary}")

    def _on_finetuned(self, result: tuple[Path, dict]) -> None:
        from napari.utils.notifications import show_info

        path, metadata = result
        self.choose_model(path)
        recipe = metadata["finetuning"]
        summary = (f"fine-tuned on {recipe['train_series']} series ({recipe['held_out_series']} "
                   f"held out: {held_out_change(metadata)}) in "
                   f"{recipe['total_s']:.0f} s; saved as {path.stem}, chosen for Segment")
        self.status.setText(summary)
        show_info(summary)

    def _on_error(self, exc: Exception) -> None:
        show_step_error(self.status, exc)

    def _on_finished(self) -> None:
        self.worker = None
        self._set_running(False)
        self.finished.emit()

    def _show_labels(self, path: Path) -> None:
        """Add the "labels" and "label uncertainty" layers from the store, or replace the
        data of the existing ones (the uncertainty stays hidden unless it was shown)."""
        from napari.layers import Image, Labels

        from ..study import Study
        from .layers import labels_layer, uncertainty_layer

        study = Study.open(path)
        # napari makes an added layer the active one; the user's stays, so that the keys of
        # the ROI review do not become the labels' paint keys.
        active = self.viewer.layers.selection.active
        self._replace_or_add(uncertainty_layer(study), Image, self.viewer.add_image)
        labels = self._replace_or_add(labels_layer(study), Labels, self.viewer.add_labels)
        labels.visible = True
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active

    def _replace_or_add(self, layer_data, layer_type, add):
        """The study's layer of ``layer_data`` with its data replaced, or a new one."""
        data, kwargs, _ = layer_data
        layer = find_layer(self.viewer, kwargs["name"], kwargs["metadata"][STORE_KEY])
        if not isinstance(layer, layer_type):
            return add(data, **kwargs)
        layer.data = data
        layer.metadata.update(kwargs["metadata"])
        return layer

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        """Recount the accepted series (the ROI review changes them); find the device in the
        background the first time the widget is shown."""
        super().showEvent(event)
        if self.worker is None:
            self._count_accepted_series()
        if self._device_worker is None:
            from napari.qt.threading import create_worker

            self._device_worker = create_worker(
                _pick_device, _start_thread=False, _ignore_errors=True
            )
            self._device_worker.returned.connect(self._show_device)
            self._device_worker.start()
