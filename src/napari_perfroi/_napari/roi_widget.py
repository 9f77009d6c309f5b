"""The "ROI review" dock widget: review, edit and accept the LV circle of every frame.

The widget keeps the study's circles and review states in memory
(:class:`ReviewModel`) and keeps the "LV ROI" Shapes layer in step with them:

* edits made with napari's own shape tools (move, resize, draw, delete) come in
  through ``layer.events.data`` and become ``edited`` frames (or ``none`` for a
  deleted circle); the widget's own updates of the layer are guarded so they
  are never taken for edits;
* the buttons (and their keys) propagate, accept, revert and navigate; the
  geometry lives in :mod:`napari_perfroi.roi`, the widget only maps layer <->
  model and saves.

Never lose work: an accept is written at once; any other change is written
after a short pause (debounce) and at once when the work could go:

* the layer is removed (``viewer.close()`` removes every layer first);
* the widget is hidden (the viewer window's or the dock's close button hides
  it before Qt deletes it; ``Window._qt_window`` is off limits to plugins);
* the widget is destroyed (``destroyed`` runs a slot that holds the model,
  not the widget).

A hard kill loses at most the edits of the last second, never an accept.
"""

from __future__ import annotations

import time
import weakref
from collections import defaultdict
from functools import partial
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QGridLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QWidget,
)

from ..errors import InputError
from ..review import CIRCLE_TOLERANCE_PX, ReviewModel
from ..roi import ACCEPTED, EDITED, circle_mask, mean_spacing, proposals_for_study
from ..study import ROI_STATES, Study
from .layers import (
    IMAGE_LAYER,
    LABELS_LAYER,
    ROI_LAYER,
    ROI_STATE_COLORS,
    circle_corners,
    find_layer,
    frame_at,
    go_to_frame,
    layer_role,
    roi_layer,
    roi_shapes,
    shape_circle,
)
from .scroll import scrolling_layout
from .segment_widget import find_store
from .step_worker import step_worker

AUTOSAVE_MS = 1000  # pause after the last edit before it is written
PAST_TENSE = {"added", "changed", "removed"}  # "adding/changing/removing" come first
MIN_RADIUS_PX = 1.0  # a smaller shape is a stray click, not a circle: it is dropped
ROUND_TOLERANCE = 0.1  # a drawn ellipse whose axes differ by more is said to become a circle
NO_ROI_HINT = "segment it in the Segment dock, then press Propose circles"
# Layers whose arrival or removal can change what the dock attaches to or offers.
ATTACH_LAYERS = {ROI_LAYER, IMAGE_LAYER, LABELS_LAYER}

# method -> (button text with its key, key). See _bind_keys for where the keys are bound.
ACTIONS = {
    "propagate": ("Propagate [P]", "P"),
    "accept_frame": ("Accept frame [A]", "A"),
    "accept_series": ("Accept series [Shift-A]", "Shift-A"),
    "revert": ("Revert to proposal [R]", "R"),
    "next_unreviewed": ("Next unreviewed [N]", "N"),
    "previous_unreviewed": ("Previous unreviewed [Shift-N]", "Shift-N"),
}


# ---------------------------------------------------------------- hooks that outlive the widget
class _Hooks:
    """What the widget must undo (and save) when it goes, held apart from the widget.

    ``destroyed`` fires when the Qt side of the widget is gone, so the slot may
    use this object only, never the widget.
    """

    def __init__(self):
        self.model: ReviewModel | None = None
        self.connections: list[tuple[object, object]] = []  # (napari emitter, callback)
        # (provider, key, our callback, the binding it replaced)
        self.keys: list[tuple[object, str, object, object]] = []

    def save_if_dirty(self) -> None:
        if self.model is not None and self.model.dirty:
            try:
                self.model.save()
            except Exception as exc:  # noqa: BLE001 - the widget is gone: say it in the log
                import logging

                logging.getLogger(__name__).error("could not save %s: %s", self.model.path, exc)

    def unbind_keys(self, provider=None) -> None:
        from napari.utils.key_bindings import coerce_keybinding

        keep = []
        for owner, key, ours, previous in self.keys:
            if provider is not None and owner is not provider:
                keep.append((owner, key, ours, previous))
            elif owner.keymap.get(coerce_keybinding(key)) is ours:  # not rebound since
                owner.bind_key(key, previous, overwrite=True)  # None unbinds
        self.keys = keep

    def disconnect(self, emitter=None) -> None:
        keep = []
        for owner, callback in self.connections:
            if emitter is None or owner is emitter:
                owner.disconnect(callback)
            else:
                keep.append((owner, callback))
        self.connections = keep

    def teardown(self, *_) -> None:
        self.save_if_dirty()
        self.disconnect()
        self.unbind_keys()


def _key_callback(widget_ref, method: str):
    def on_key(_provider) -> None:
        widget = widget_ref()
        if widget is not None:
            getattr(widget, method)()

    on_key.__name__ = f"perfroi_{method}"
    return on_key


# ---------------------------------------------------------------- widget
class RoiWidget(QWidget):
    """Dock widget: review the LV circles of the study in the viewer."""

    changed = Signal()  # the model changed (an edit, an action, a load)
    saved = Signal()  # the model was written to the store
    proposed = Signal()  # a "Propose circles" run ended

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.model: ReviewModel | None = None
        self.layer = None  # the "LV ROI" Shapes layer in sync with the model
        self._store: Path | None = None
        self._updating = 0  # > 0 while the widget itself changes the layer
        self._hooks = _Hooks()
        self._attaching = False  # the widget adds the layer itself: not a layer to attach to
        self._pending_reverts: list[tuple[int, int]] = []
        self._proposal_worker = None
        self._proposal_model: ReviewModel | None = None
        self._propose_worker = None

        self.study_label = QLabel()
        self.study_label.setWordWrap(True)
        self.buttons: dict[str, QPushButton] = {}
        grid = QGridLayout()
        for i, (method, (text, key)) in enumerate(ACTIONS.items()):
            button = QPushButton(text)
            button.setToolTip(f"{(getattr(type(self), method).__doc__ or '').strip()} (key {key})")
            button.clicked.connect(getattr(self, method))
            self.buttons[method] = button
            grid.addWidget(button, i // 2, i % 2)
        self.overwrite_box = QCheckBox("overwrite reviewed frames")
        self.overwrite_box.setToolTip("Propagate also replaces edited and accepted frames")
        self.propose_button = QPushButton("Propose circles")
        self.propose_button.setToolTip("Run the roi step (needs labels and motion)")
        self.propose_button.clicked.connect(self.propose)
        self.frame_label = QLabel()
        self.frame_label.setWordWrap(True)
        self.zoom_box = QCheckBox("zoom to the LV")
        self.zoom_box.setToolTip("Centre and zoom the view on the slice's LV circles when the "
                                 "slice changes")
        self._zoomed_slice: int | None = None
        self.progress_list = QListWidget()
        self.progress_list.setToolTip("Double-click: go to the slice's first frame not accepted")
        self.progress_list.itemActivated.connect(self._go_to_slice_item)
        self.legend = QLabel(" ".join(
            f'<span style="color:{colour}">&#9632; {name}</span>'
            for name, colour in ROI_STATE_COLORS.items()
        ))
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.save_label = QLabel()
        self.status = QLabel()
        self.status.setWordWrap(True)

        layout = scrolling_layout(self)
        layout.addWidget(self.study_label)
        layout.addLayout(grid)
        layout.addWidget(self.overwrite_box)
        layout.addWidget(self.propose_button)
        layout.addWidget(self.frame_label)
        layout.addWidget(self.zoom_box)
        layout.addWidget(self.progress_list)
        layout.addWidget(self.legend)
        layout.addWidget(self.save_label)
        layout.addWidget(self.status)

        self.zoom_box.toggled.connect(self._zoom_option_changed)
        self._autosave_timer = QTimer(self)
        self._autosave_timer.setSingleShot(True)
        self._autosave_timer.setInterval(AUTOSAVE_MS)
        self._autosave_timer.timeout.connect(self.save)
        self._render_timer = QTimer(self)  # redraws after napari finished its own event
        self._render_timer.setSingleShot(True)
        self._render_timer.setInterval(0)
        self._render_timer.timeout.connect(self._render)

        self._connect(self.viewer.layers.events.inserted, self._on_layer_inserted)
        self._connect(self.viewer.layers.events.removed, self._on_layer_removed)
        self._connect(self.viewer.layers.selection.events.active, self._on_selection)
        self._connect(self.viewer.dims.events.point, self._show_frame)
        self._bind_keys(self.viewer)
        self.destroyed.connect(partial(_Hooks.teardown, self._hooks))
        self._attach(create_layer=True)

    # ---------------------------------------------------------------- actions
    def propagate(self) -> None:
        """Carry the current frame's circle to the other frames of its slice (with the motion)."""
        frame = self._current_frame()
        if frame is None:
            return
        s, t = frame
        try:
            targets = self.model.propagate(s, t, self.overwrite_box.isChecked())
        except InputError as exc:
            self.status.setText(str(exc))
            return
        self._model_changed(autosave=True)
        kept = self.model.shape[1] - 1 - len(targets)
        self.status.setText(f"propagated slice {s + 1} frame {t} to {len(targets)} frame(s)"
                            + (f"; {kept} reviewed frame(s) kept" if kept else ""))

    def accept_frame(self) -> None:
        """Accept the current frame's circle (saved at once)."""
        frame = self._current_frame()
        if frame is None:
            return
        if not self.model.accept([frame]):
            self.status.setText(f"slice {frame[0] + 1} frame {frame[1]} has no circle to accept")
            return
        self._model_changed(autosave=False)
        if self.save():
            self.status.setText(f"accepted slice {frame[0] + 1} frame {frame[1]}")

    def accept_series(self) -> None:
        """Accept every frame with a circle of the current slice (saved at once)."""
        frame = self._current_frame()
        if frame is None:
            return
        s = frame[0]
        done = self.model.accept([(s, t) for t in range(self.model.shape[1])])
        if not done:
            self.status.setText(f"slice {s + 1} has no circle to accept")
            return
        self._model_changed(autosave=False)
        if self.save():
            self.status.setText(f"accepted {len(done)} frame(s) of slice {s + 1}")

    def revert(self) -> None:
        """Put the current frame back to its proposal from the labels."""
        frame = self._current_frame()
        if frame is None:
            return
        if self.model.proposals is not None:
            self._revert(frame)
            return
        self._pending_reverts.append(frame)
        if self._proposal_worker is None:
            self.status.setText("computing the proposals…")
            self._proposal_model = self.model
            self._proposal_worker = step_worker(
                _proposals, self.model.path, on_done=self._on_proposals,
                on_error=self._on_proposals_error, on_finished=self._on_proposals_finished)
            self._proposal_worker.start()

    def next_unreviewed(self) -> None:
        """Go to the next slice with frames not accepted, on its first such frame."""
        self._go_unreviewed(+1)

    def previous_unreviewed(self) -> None:
        """Go to the previous slice with frames not accepted, on its first such frame."""
        self._go_unreviewed(-1)

    def propose(self) -> None:
        """Run the roi step on the store in a worker thread, then show the circles."""
        if self._store is None or self._propose_worker is not None:
            return
        self.propose_button.setEnabled(False)
        self.status.setText("proposing circles…")
        self._propose_worker = step_worker(
            _run_roi_step, self._store, on_done=self._on_proposed,
            on_error=self._on_propose_error, on_finished=self._on_propose_finished)
        self._propose_worker.start()

    def save(self) -> bool:
        """Write the circles and states now; False (and a message) if it failed."""
        self._autosave_timer.stop()
        if self.model is None:
            return True
        try:
            self.model.save()
        except Exception as exc:  # noqa: BLE001 - keep the edits, say why they are not on disk
            from napari.utils.notifications import show_error

            message = f"could not save {self.model.path.name}: {exc}"
            self.save_label.setText(f"<b>not saved</b>: {exc}")
            show_error(message)
            return False
        self.save_label.setText(f"all changes saved ({time.strftime('%H:%M:%S')})")
        self.saved.emit()
        return True

    def flush(self) -> None:
        """Save now if there are unsaved changes (close, hide, layer removed)."""
        if self.model is not None and self.model.dirty:
            self.save()

    # ---------------------------------------------------------------- store and layer
    def _attach(self, create_layer: bool = False) -> None:
        """Find the store and the "LV ROI" layer, load the model and sync the layer."""
        from napari.layers import Shapes

        path, note = find_store(self.viewer, self._store)
        layer = find_layer(self.viewer, ROI_LAYER, path) if path is not None else None
        layer = layer if isinstance(layer, Shapes) else None
        self._store = path
        if path is None:
            return self._show_unavailable(note, can_propose=False)
        try:
            study = Study.open(path)
        except InputError as exc:
            return self._show_unavailable(str(exc), can_propose=False)
        if not study.has("roi"):
            can_propose = study.has("labels")
            hint = "press Propose circles" if can_propose else NO_ROI_HINT
            return self._show_unavailable(f"{path.name} has no circles yet: {hint}", can_propose)
        if layer is None:
            if not create_layer:
                return self._show_unavailable(
                    f"no '{ROI_LAYER}' layer: reopen {path.name}", can_propose=False)
            data, kwargs, _ = roi_layer(study)
            self._attaching = True
            try:
                layer = self.viewer.add_shapes(data, **kwargs)
            finally:
                self._attaching = False
        try:
            self.model = ReviewModel.load(path)
        except InputError as exc:
            return self._show_unavailable(str(exc), can_propose=False)
        self._hooks.model = self.model
        self.layer = layer
        self._connect(layer.events.data, self._on_data)
        self._bind_keys(layer)
        self.study_label.setText(f"study: {path.name}")
        self.propose_button.setVisible(False)
        changed = self._sync_from_layer(set())  # edits made before the widget opened
        if changed:
            self.status.setText(f"{len(changed)} frame(s) differ from the store: kept as edited")
        if not changed:
            self.save_label.setText("all changes saved")
        self._model_changed(autosave=bool(changed))
        self._set_enabled(True)

    def _detach(self) -> None:
        self.flush()
        if self.layer is not None:
            self._hooks.disconnect(self.layer.events.data)
            self._hooks.unbind_keys(self.layer)
        self.layer = None
        self.model = None
        self._hooks.model = None
        self._render_timer.stop()

    def _show_unavailable(self, note: str, can_propose: bool) -> None:
        self.study_label.setText(note)
        self.propose_button.setVisible(True)
        self.propose_button.setEnabled(can_propose and self._propose_worker is None)
        self._set_enabled(False)
        self.progress_list.clear()
        self.frame_label.setText("")

    def _set_enabled(self, enabled: bool) -> None:
        for button in self.buttons.values():
            button.setEnabled(enabled)
        self.overwrite_box.setEnabled(enabled)

    def _on_layer_inserted(self, event) -> None:
        # An "LV ROI" layer to attach to, or a store opened later: say what it lacks.
        if (self.layer is None and layer_role(event.value) in ATTACH_LAYERS
                and not self._attaching and self._propose_worker is None):
            self._attach()

    def _on_layer_removed(self, event) -> None:
        if event.value is self.layer:
            self._detach()  # saves first
        if self.layer is None and layer_role(event.value) in ATTACH_LAYERS:
            self._attach()

    def _on_selection(self, event=None) -> None:
        """A layer of another study was selected: review that study (this one is saved)."""
        if self._attaching or self._propose_worker is not None:
            return
        if find_store(self.viewer, self._store)[0] != self._store:
            self._detach()
            self._attach()

    # ---------------------------------------------------------------- layer -> model
    def _on_data(self, event) -> None:
        """A shape was added, changed or removed with napari's tools."""
        if self._updating or self.model is None:
            return
        action = str(getattr(event, "action", ""))
        if action not in PAST_TENSE:
            return  # a drag in progress, or the announcement of a change
        n_shapes = len(self.layer.data)
        touched = set()
        if action != "removed":  # removed indices point into the old list
            for index in getattr(event, "data_indices", ()) or ():
                index = int(index)
                touched.add(index + n_shapes if index < 0 else index)
        rounded = self._not_circles(touched)
        changed = self._sync_from_layer(touched)
        if changed:
            self._model_changed(autosave=True, render_now=False)
            s, t = changed[-1]
            state = ROI_STATES[int(self.model.states[s, t])]
            text = (f"slice {s + 1} frame {t}: {state}" if len(changed) == 1
                    else f"{len(changed)} frames changed")
            if rounded and np.isfinite(self.model.roi[s, t, 2]):
                text += (f"; the {rounded} became a circle of radius "
                         f"{self.model.roi[s, t, 2]:.1f} px (the ROI is LV-centred circles)")
            self.status.setText(text)
        self._render(rebuild_later=True)

    def _not_circles(self, touched: set[int]) -> str | None:
        """What a touched shape is when it is not a circle ("ellipse", "rectangle", ...)."""
        for index in touched:
            if index >= len(self.layer.data):
                continue
            kind = self.layer.shape_type[index]
            extent = np.ptp(np.asarray(self.layer.data[index])[:, -2:], axis=0)
            if kind != "ellipse":
                return kind
            if abs(extent[0] - extent[1]) > ROUND_TOLERANCE * extent.max():
                return "ellipse"
        return None

    def _sync_from_layer(self, touched: set[int]) -> list[tuple[int, int]]:
        """Read the layer's shapes into the model; the frames that changed.

        A changed or new circle makes its frame ``edited``; a frame whose circle
        is gone becomes ``none``. With several shapes on one frame the one just
        touched (else the newest) wins; the others go at the next redraw.
        """
        model = self.model
        n_slices, n_times = model.shape
        by_frame: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = defaultdict(list)
        for index, (vertices, kind) in enumerate(zip(self.layer.data, self.layer.shape_type,
                                                     strict=False)):
            found = shape_circle(vertices, kind)
            if found is None:
                continue
            s, t, circle = found
            if 0 <= s < n_slices and 0 <= t < n_times and circle[2] >= MIN_RADIUS_PX:
                by_frame[(s, t)].append((index, circle))
        changed = []
        for (s, t), shapes in sorted(by_frame.items()):
            _, circle = ([item for item in shapes if item[0] in touched] or shapes)[-1]
            if not model.same_circle(s, t, circle):
                model.set_circle(s, t, circle, EDITED)
                changed.append((s, t))
        for s, t in sorted(model.frames_with_circle() - by_frame.keys()):
            model.clear(s, t)
            changed.append((s, t))
        return changed

    # ---------------------------------------------------------------- model -> layer
    def _render(self, rebuild_later: bool = False) -> None:
        """Show the model: recolour the shapes, or rebuild them when the geometry differs.

        Inside napari's own data event (``rebuild_later``) a rebuild waits for
        the next turn of the event loop, when napari has finished with the
        shapes (a drawing in progress, a selection); a recolour happens at once.
        """
        layer, model = self.layer, self.model
        if layer is None or model is None:
            return
        frames = self._layer_frames()
        if frames is None and rebuild_later:
            self._render_timer.start()
            return
        self._render_timer.stop()
        self._updating += 1
        try:
            if frames is None:  # duplicates, strays, non-circles or another geometry
                selected = {self._shape_frame(i) for i in layer.selected_data}
                ellipses, colours, features = roi_shapes(model.roi, model.states)
                layer.data = [(e, "ellipse") for e in ellipses] if ellipses else []
                if ellipses:
                    layer.edge_color = colours
                layer.features = features
                frames = [tuple(int(v) for v in f) for f in zip(features["slice"],
                                                                 features["t"], strict=True)]
                layer.selected_data = {i for i, f in enumerate(frames) if f in selected}
            else:
                names = [ROI_STATES.get(int(model.states[f]), "none") for f in frames]
                if frames:
                    layer.edge_color = [ROI_STATE_COLORS[name] for name in names]
                layer.features = {"slice": [f[0] for f in frames], "t": [f[1] for f in frames],
                                  "state": names}
        finally:
            self._updating -= 1

    def _shape_frame(self, index: int):
        found = shape_circle(self.layer.data[index], self.layer.shape_type[index])
        return None if found is None else found[:2]

    def _layer_frames(self) -> list[tuple[int, int]] | None:
        """Each shape's frame if the layer shows exactly the model's circles, else None."""
        model = self.model
        frames = []
        for vertices, kind in zip(self.layer.data, self.layer.shape_type, strict=False):
            found = shape_circle(vertices, kind)
            if kind != "ellipse" or found is None:
                return None
            s, t, circle = found
            in_range = 0 <= s < model.shape[0] and 0 <= t < model.shape[1]
            if not in_range or not model.same_circle(s, t, circle):
                return None
            expected = circle_corners(s, t, *circle)
            if not np.allclose(np.sort(vertices, axis=0), np.sort(expected, axis=0),
                               atol=CIRCLE_TOLERANCE_PX * 10):
                return None  # an ellipse that is no longer a circle: redraw it as one
            frames.append((s, t))
        if len(set(frames)) != len(frames) or set(frames) != model.frames_with_circle():
            return None
        return frames

    def _model_changed(self, autosave: bool, render_now: bool = True) -> None:
        if autosave and self.model is not None and self.model.dirty:
            self._autosave_timer.start()  # restarts: saves 1 s after the last edit
            self.save_label.setText("unsaved changes (autosave)")
        if render_now:
            self._render()
        self._show_progress()
        self._show_frame()
        self.changed.emit()

    # ---------------------------------------------------------------- frames and display
    def _frame_layer(self):
        if self.layer is not None:
            return self.layer
        return next((lay for lay in self.viewer.layers if lay.ndim >= 2), None)

    def current_frame(self) -> tuple[int, int] | None:
        """(slice, t) of the viewer's dims position, None without a study."""
        layer = self._frame_layer()
        if layer is None or self.model is None:
            return None
        return frame_at(self.viewer, layer, self.model.shape)

    def _current_frame(self) -> tuple[int, int] | None:
        frame = self.current_frame()
        if frame is None:
            self.status.setText(self.study_label.text())
        return frame

    def go_to(self, s: int, t: int) -> None:
        """Move the viewer's dims to frame ``t`` of slice ``s``."""
        layer = self._frame_layer()
        if layer is not None:
            go_to_frame(self.viewer, layer, s, t)

    def _go_unreviewed(self, step: int) -> None:
        frame = self._current_frame()
        if frame is None:
            return
        found = self.model.unreviewed(frame, step)
        if found is None:
            self.status.setText("every frame is accepted")
            return
        self.go_to(*found)
        self.status.setText(f"slice {found[0] + 1} frame {found[1]}: not accepted yet")

    def _go_to_slice_item(self, item) -> None:
        if self.model is None:
            return
        s = self.progress_list.row(item)
        pending = np.flatnonzero(self.model.states[s] != ACCEPTED)
        self.go_to(s, int(pending[0]) if pending.size else 0)

    def _show_progress(self) -> None:
        model = self.model
        if model is None:
            return
        n_slices, n_times = model.shape
        lines = [f"slice {s + 1} ({model.slice_levels[s]}): {model.accepted(s)}/{n_times} accepted"
                 for s in range(n_slices)]
        if [self.progress_list.item(i).text() for i in range(self.progress_list.count())] != lines:
            self.progress_list.clear()
            self.progress_list.addItems(lines)

    def _show_frame(self, event=None) -> None:
        frame = self.current_frame()
        if frame is None:
            return
        s, t = frame
        if self.progress_list.currentRow() != s and s < self.progress_list.count():
            self.progress_list.setCurrentRow(s)
        model = self.model
        if self.zoom_box.isChecked() and s != self._zoomed_slice:
            self._zoom_to_lv(s)
        state = ROI_STATES.get(int(model.states[s, t]), "none")
        head = f"slice {s + 1} ({model.slice_levels[s]}) · frame {t} · {state}"
        if not model.has_circle(s, t):
            self.frame_label.setText(f"{head}\nno circle")
            return
        spacing = np.asarray(model.pixel_spacing_mm, dtype=float)
        radius_mm = model.roi[s, t, 2] * mean_spacing(model.pixel_spacing_mm)
        # Where the centre lies against the slice's usual one shows a circle gone astray.
        offset_mm = (model.roi[s, t, :2] - self._median_circle(s)[:2]) * spacing
        self.frame_label.setText(
            f"{head}\nradius {radius_mm:.1f} mm · centre {np.hypot(*offset_mm):.1f} mm from "
            f"the slice's median centre (down {offset_mm[0]:+.1f}, right {offset_mm[1]:+.1f})")

    def _median_circle(self, s: int) -> np.ndarray:
        """(row, col, radius) px: the median of slice ``s``'s circles (NaN without any)."""
        circles = self.model.roi[s][circle_mask(self.model.roi[s])]
        return np.median(circles, axis=0) if len(circles) else np.full(3, np.nan)

    def _zoom_option_changed(self, checked: bool) -> None:
        self._zoomed_slice = None
        frame = self.current_frame()
        if checked and frame is not None:
            self._zoom_to_lv(frame[0])
        elif not checked:
            self.viewer.reset_view()

    def _zoom_to_lv(self, s: int) -> None:
        """Centre the view on slice ``s``'s median LV circle, four radii across the canvas."""
        layer = self._frame_layer()
        row, col, radius = self._median_circle(s)
        if layer is None or not np.isfinite(radius):
            return
        scale = np.asarray(layer.scale[-2:], dtype=float)
        camera = self.viewer.scene.camera
        camera.center = tuple(np.array([row, col]) * scale)
        camera.zoom = min(self.viewer.canvas.size) / (4.0 * radius * scale.mean())
        self._zoomed_slice = s

    # ---------------------------------------------------------------- workers (GUI thread slots)
    def _revert(self, frame: tuple[int, int]) -> None:
        self.model.revert(*frame)
        self._model_changed(autosave=True)
        self.status.setText(f"slice {frame[0] + 1} frame {frame[1]} back to its proposal")

    def _on_proposals(self, proposals: np.ndarray) -> None:
        self._proposal_model.proposals = proposals
        if self._proposal_model is self.model:
            for frame in self._pending_reverts:
                self._revert(frame)
        self._pending_reverts = []

    def _on_proposals_error(self, exc: Exception) -> None:
        self._pending_reverts = []
        self.status.setText(f"no proposals to revert to: {exc}")

    def _on_proposals_finished(self) -> None:
        self._proposal_worker = None

    def _on_proposed(self, summary: str) -> None:
        self.status.setText(summary)
        self._attach(create_layer=True)

    def _on_propose_error(self, exc: Exception) -> None:
        self.status.setText(f"could not propose circles: {exc}")
        if not isinstance(exc, InputError):
            raise exc  # a bug: let napari show the traceback

    def _on_propose_finished(self) -> None:
        self._propose_worker = None
        if self.model is None:
            self.propose_button.setEnabled(self._store is not None)
        self.proposed.emit()

    # ---------------------------------------------------------------- plumbing
    def _connect(self, emitter, callback) -> None:
        emitter.connect(callback)
        self._hooks.connections.append((emitter, callback))

    def _bind_keys(self, provider) -> None:
        """Bind the action keys on ``provider`` (the viewer or the ROI layer).

        napari looks keys up in the active layer first, then in the viewer. On
        the viewer the keys work whichever layer is active and never replace a
        layer's own key (with a Labels layer active, P still paints). On the
        "LV ROI" layer itself they must be bound again, or the Shapes keys win
        there: P (polygon), A (select all in slice) and R (rectangle) are
        replaced on this layer only, tools that make no sense for circles;
        E (ellipse), S (select), D (direct), Z (pan/zoom) and Delete still work.
        The previous bindings come back when the widget or the layer goes.
        """
        ref = weakref.ref(self)
        for method, (_, key) in ACTIONS.items():
            callback = _key_callback(ref, method)
            previous = provider.bind_key(key, callback, overwrite=True)
            self._hooks.keys.append((provider, key, callback, previous))

    def hideEvent(self, event) -> None:  # noqa: N802 - Qt override
        self.flush()  # the dock was closed or hidden
        super().hideEvent(event)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        self.flush()
        super().closeEvent(event)


def _proposals(path: Path) -> np.ndarray:
    """Worker thread: the proposals of the store (nothing written)."""
    return proposals_for_study(Study.open(path))


def _run_roi_step(path: Path) -> str:
    """Worker thread: the roi step on the store; its one-line summary."""
    from ..pipeline import run_step

    return run_step(Study.open(path, writable=True), "roi")
