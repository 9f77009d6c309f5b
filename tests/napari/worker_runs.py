"""Running a dock's worker in a test while checking that the viewer stays responsive."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QTimer


def run_responsively(qtbot, widget, start: Callable[[], None], start_button,
                     timeout_ms: int) -> list[int]:
    """Run ``start`` until the widget's worker finishes; return the progress values shown.

    Asserts that Cancel is enabled and the start button disabled while it runs,
    and that a timer fired at least twice meanwhile: the event loop was never blocked.
    """
    ticks_while_running = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks_while_running.append(widget.worker is not None))
    timer.start(20)
    shown: list[int] = []
    widget.progress_bar.valueChanged.connect(shown.append)
    with qtbot.waitSignal(widget.finished, timeout=timeout_ms):
        start()
        assert widget.cancel_button.isEnabled() and not start_button.isEnabled()
    timer.stop()
    assert sum(ticks_while_running) >= 2
    return shown
