"""Progress reporting for the command line.

Core functions take an optional ``progress(done, total)`` callback; the CLI
passes a :class:`TqdmProgress`, the napari widgets one that feeds a progress bar.
``done`` may be fractional: a slice under way reports how far it is.
"""

from __future__ import annotations


class Cancelled(Exception):
    """Raised by a progress callback to stop a step before it writes its result."""


def within(progress, done: int, total: int):
    """``part(fraction)``: reports ``progress(done + fraction, total)`` while unit ``done``
    (e.g. a slice) is under way; None without ``progress``."""
    if progress is None:
        return None
    return lambda fraction: progress(done + min(max(fraction, 0.0), 1.0), total)


class TqdmProgress:
    """A ``progress(done, total)`` callback drawing a tqdm bar on stderr."""

    def __init__(self, description: str, unit: str = "frame"):
        self.description = description
        self.unit = unit
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.description, unit=self.unit)
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.close()
