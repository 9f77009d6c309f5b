"""The review of one study's LV circles in memory: edit, propagate, accept, revert, save.

Front ends (the napari "ROI review" widget) change circles and states here and
call :meth:`ReviewModel.save`; the geometry lives in :mod:`.roi`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .roi import (
    ACCEPTED,
    NONE,
    PROPOSED,
    circle_mask,
    frames_with_circle,
    propagate,
    read_review,
    save_review,
)
from .study import Study

CIRCLE_TOLERANCE_PX = 1e-3


class ReviewModel:
    """Circles (S, T, 3) and states (S, T) of one store as the review changes them."""

    def __init__(self, path: Path, roi, states, motion, slice_levels, pixel_spacing_mm):
        self.path = Path(path)
        self.roi = np.array(roi, dtype=np.float32)
        self.states = np.array(states, dtype=np.uint8)
        self.motion = np.asarray(motion, dtype=np.float32)
        self.slice_levels = list(slice_levels)
        self.pixel_spacing_mm = tuple(float(v) for v in pixel_spacing_mm)
        self.proposals: np.ndarray | None = None  # computed on the first revert
        self.dirty = False
        self._study: Study | None = None

    @classmethod
    def load(cls, path: Path) -> ReviewModel:
        study = Study.open(path, writable=True)
        roi, states = read_review(study)
        n_slices, n_times = study.shape[:2]
        motion = study.read("motion") if study.has("motion") else np.zeros(
            (n_slices, n_times, 2), np.float32)
        model = cls(path, roi, states, motion, study.attrs["slice_levels"],
                    study.pixel_spacing_mm)
        model._study = study
        return model

    @property
    def shape(self) -> tuple[int, int]:
        return self.states.shape

    def has_circle(self, s: int, t: int) -> bool:
        return bool(circle_mask(self.roi[s, t]))

    def frames_with_circle(self) -> set[tuple[int, int]]:
        return {(int(s), int(t)) for s, t in frames_with_circle(self.roi)}

    def same_circle(self, s: int, t: int, circle) -> bool:
        return self.has_circle(s, t) and bool(
            np.allclose(self.roi[s, t], circle, atol=CIRCLE_TOLERANCE_PX))

    def set_circle(self, s: int, t: int, circle, state: int) -> None:
        self.roi[s, t] = circle
        self.states[s, t] = state
        self.dirty = True

    def clear(self, s: int, t: int) -> None:
        self.roi[s, t] = np.nan
        self.states[s, t] = NONE
        self.dirty = True

    def accept(self, frames) -> list[tuple[int, int]]:
        """Accept the given frames that have a circle; the accepted frames."""
        done = [(s, t) for s, t in frames if self.has_circle(s, t)]
        for s, t in done:
            self.states[s, t] = ACCEPTED
        self.dirty = self.dirty or bool(done)
        return done

    def propagate(self, s: int, t: int, overwrite_reviewed: bool) -> np.ndarray:
        targets = propagate(self.roi, self.states, self.motion, s, t, overwrite_reviewed)
        self.dirty = self.dirty or bool(len(targets))
        return targets

    def revert(self, s: int, t: int) -> None:
        """Frame back to its proposal (``proposals`` must be set); no proposal -> none."""
        circle = self.proposals[s, t]
        if circle_mask(circle):
            self.set_circle(s, t, circle, PROPOSED)
        else:
            self.clear(s, t)

    def accepted(self, s: int) -> int:
        return int((self.states[s] == ACCEPTED).sum())

    def unreviewed(self, frame: tuple[int, int], step: int) -> tuple[int, int] | None:
        """The first frame not accepted after ``frame`` (``step`` +1) or before it (-1), slice
        by slice and frame by frame, wrapping round; None when every frame is accepted.

        The rest of ``frame``'s own slice comes first, so no frame is skipped.
        """
        n_times = self.shape[1]
        pending = np.flatnonzero((self.states != ACCEPTED).ravel())
        if not pending.size:
            return None
        here = frame[0] * n_times + frame[1]
        if step > 0:
            after = pending[pending > here]
            index = after[0] if after.size else pending[0]
        else:
            before = pending[pending < here]
            index = before[-1] if before.size else pending[-1]
        s, t = divmod(int(index), n_times)
        return s, t

    def save(self) -> None:
        """Write circles and states to the store (atomic); clears ``dirty``."""
        if self._study is None:
            self._study = Study.open(self.path, writable=True)
        self.dirty = False  # before: an edit made while writing sets it again
        try:
            save_review(self._study, self.roi, self.states)
        except BaseException:
            self.dirty = True
            raise
