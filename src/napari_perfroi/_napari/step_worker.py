"""What the docks that run analysis steps in a worker thread share."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..errors import InputError
from ..progress import Cancelled

BAR_STEPS_PER_UNIT = 100  # so that a unit under way (a slice) moves the bar


def step_worker(function: Callable, *args, on_done: Callable, on_error: Callable,
                on_finished: Callable) -> Any:
    """A napari worker (not started yet) running ``function(*args)`` with its signals connected."""
    from napari.qt.threading import create_worker

    worker = create_worker(function, *args, _start_thread=False, _ignore_errors=True)
    worker.returned.connect(on_done)
    worker.errored.connect(on_error)
    worker.finished.connect(on_finished)
    return worker


def request_cancel(cancel: threading.Event, cancel_button, status) -> None:
    """Ask the running steps to stop before they write; grey out the Cancel button."""
    cancel.set()
    cancel_button.setEnabled(False)
    status.setText("cancelling…")


def clear_step_progress(progress_bar, status) -> None:
    """An empty bar and status line: for another study, or a new run."""
    progress_bar.reset()
    progress_bar.setFormat("")
    status.setText("")


def show_step_progress(progress_bar, status, step: str, done: float, total: int, unit: str,
                       cancelling: bool) -> None:
    """``done`` of ``total`` units; a fractional ``done`` (a slice under way) moves the bar."""
    progress_bar.setMaximum(max(total, 1) * BAR_STEPS_PER_UNIT)
    progress_bar.setValue(round(done * BAR_STEPS_PER_UNIT))
    progress_bar.setFormat(f"{step} {int(done)}/{total} {unit}")
    if not cancelling:
        status.setText(f"running {step}…")


def show_step_error(status, exc: Exception) -> None:
    """A cancel or bad input as the status line (and a notification); a bug is re-raised so
    that napari shows its traceback."""
    from napari.utils.notifications import show_error

    if isinstance(exc, Cancelled):
        status.setText("cancelled: nothing was written")
    elif isinstance(exc, InputError):
        status.setText(str(exc))
        show_error(str(exc))
    else:
        status.setText(f"failed: {type(exc).__name__}: {exc}")
        raise exc
