"""The "Segment" dock widget: motion + segmentation of the study shown in the viewer.

The steps run in a napari thread worker, so the viewer stays responsive. The
widget only finds the study store, starts and cancels the run and shows the
result; the analysis lives in :mod:`napari_perfroi.pipeline`. Torch is
imported in the worker thread, never when napari loads this module.
"""

from __future__ import annotations

import threading
from pathlib import Path

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..progress import Cancelled
from .layers import DICOM_KEY, IMAGE_LAYER, LABELS_LAYER, STORE_KEY
from .step_worker import request_cancel, show_step_error, show_step_progress, step_worker

STEPS = ["segment"]  # plus the steps whose output the store lacks (motion)
IMPORT_HINT = "import it first (perfroi import FOLDER STUDY.zarr) and open STUDY.zarr"


def find_store(viewer) -> tuple[Path | None, str]:
    """The store path of the viewer's perfusion layer (None if it has none) and a note."""
    layer = next((layer for layer in viewer.layers if layer.name == IMAGE_LAYER), None)
    if layer is None:
        return None, f"no '{IMAGE_LAYER}' layer: open a study store (*.zarr)"
    if STORE_KEY in layer.metadata:
        path = Path(layer.metadata[STORE_KEY])
        return path, f"study: {path.name}"
    if DICOM_KEY in layer.metadata:
        return None, f"'{IMAGE_LAYER}' is a DICOM folder, not a study store: {IMPORT_HINT}"
    return None, f"'{IMAGE_LAYER}' is not from a study store: {IMPORT_HINT}"


def run_segment(path: Path, cancel: threading.Event, on_progress, on_device) -> dict[str, str]:
    """Run segment and its missing prerequisites on the store; {step: summary}.

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
        summaries[name] = run_step(study, name, progress, device=device)
    return summaries


def _pick_device() -> str:
    from ..segment.model import pick_device

    return pick_device("auto")


class SegmentWidget(QWidget):
    """Dock widget: segment the LV and RV of the study in the viewer."""

    finished = Signal()  # a run ended: done, cancelled or failed
    _progressed = Signal(str, int, int)  # step, done, total (emitted from the worker)
    _device_found = Signal(str)

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None  # the running thread worker, None when idle
        self._store: Path | None = None  # the store of the perfusion layer
        self._run_store: Path | None = None  # the store of the current run
        self._device_worker = None
        self._cancel = threading.Event()

        self.study_label = QLabel()
        self.study_label.setWordWrap(True)
        self.device_label = QLabel("device: chosen on first run")
        self.run_button = QPushButton("Segment")
        self.run_button.setToolTip("Estimate motion if needed, then segment every frame")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.status = QLabel()
        self.status.setWordWrap(True)

        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        for widget in (self.study_label, self.device_label):
            layout.addWidget(widget)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addStretch()

        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self._progressed.connect(self._show_progress)
        self._device_found.connect(self._show_device)
        self.viewer.layers.events.inserted.connect(self._refresh)
        self.viewer.layers.events.removed.connect(self._refresh)
        cancel = self._cancel  # not self: the slot must outlive the widget
        self.destroyed.connect(lambda *_: cancel.set())
        self._refresh()

    # ---------------------------------------------------------------- actions
    def run(self) -> None:
        """Start the steps on the study's store in a worker thread."""
        self._refresh()
        if self._store is None or self.worker is not None:
            return
        self._cancel.clear()
        self._run_store = self._store  # the layer may go while the run goes on
        self.worker = step_worker(
            run_segment, self._run_store, self._cancel, self._progressed.emit,
            self._device_found.emit, on_done=self._on_done, on_error=self._on_error,
            on_finished=self._on_finished,
        )
        self._set_running(True)
        self.status.setText("starting…")
        self.worker.start()

    def cancel(self) -> None:
        """Ask the running steps to stop at the next slice; nothing is written."""
        if self.worker is not None:
            request_cancel(self._cancel, self.cancel_button, self.status)

    # ---------------------------------------------------------------- slots (GUI thread)
    def _refresh(self, event=None) -> None:
        self._store, note = find_store(self.viewer)
        self.study_label.setText(note)
        self.run_button.setEnabled(self._store is not None and self.worker is None)

    def _set_running(self, running: bool) -> None:
        self.cancel_button.setEnabled(running)
        self.run_button.setEnabled(not running and self._store is not None)

    def _show_progress(self, step: str, done: int, total: int) -> None:
        show_step_progress(self.progress_bar, self.status, step, done, total, "slices",
                           self._cancel.is_set())

    def _show_device(self, device: str) -> None:
        self.device_label.setText(f"device: {device}")

    def _on_done(self, summaries: dict[str, str]) -> None:
        from napari.utils.notifications import show_info

        self._show_labels(self._run_store)
        summary = summaries.get("segment", "done")
        self.status.setText(summary)
        show_info(f"{self._run_store.name}: {summary}")

    def _on_error(self, exc: Exception) -> None:
        show_step_error(self.status, exc)

    def _on_finished(self) -> None:
        self.worker = None
        self._set_running(False)
        self.finished.emit()

    def _show_labels(self, path: Path) -> None:
        """Add the "labels" layer from the store, or replace the data of the existing one."""
        from napari.layers import Labels

        from ..study import Study
        from .layers import labels_layer

        data, kwargs, _ = labels_layer(Study.open(path))
        layer = next((layer for layer in self.viewer.layers if layer.name == LABELS_LAYER), None)
        if isinstance(layer, Labels):
            layer.data = data
            layer.metadata.update(kwargs["metadata"])
            layer.visible = True
        else:
            layer = self.viewer.add_labels(data, **kwargs)
        self.viewer.layers.selection.active = layer

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        """Find the device in the background the first time the widget is shown."""
        super().showEvent(event)
        if self._device_worker is None:
            from napari.qt.threading import create_worker

            self._device_worker = create_worker(
                _pick_device, _start_thread=False, _ignore_errors=True
            )
            self._device_worker.returned.connect(self._show_device)
            self._device_worker.start()
