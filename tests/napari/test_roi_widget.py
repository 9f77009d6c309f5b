"""The "ROI review" dock widget and the LV ROI writer in a real viewer on a real store.

One phantom store with motion, labels and proposed circles is built per module
(the steps run for real) and copied for each test.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
from napari.layers import Shapes
from napari.utils.interactions import (
    mouse_move_callbacks,
    mouse_press_callbacks,
    mouse_release_callbacks,
)
from napari.utils.key_bindings import KeymapHandler
from qtpy.QtCore import QEvent, QPointF, Qt
from qtpy.QtGui import QMouseEvent
from qtpy.QtWidgets import QApplication

from napari_perfroi._napari import layers as L
from napari_perfroi._napari.roi_widget import NO_ROI_HINT, RoiWidget
from napari_perfroi._napari.writer import write_roi_layer
from napari_perfroi.errors import InputError
from napari_perfroi.roi import (
    ACCEPTED,
    EDITED,
    NONE,
    PROPAGATED,
    PROPOSED,
    frames_with_circle,
    propagate,
    moved_circle,
    proposals_for_study,
)
from napari_perfroi.roi_export import CSV_COLUMNS
from napari_perfroi.study import ROI_STATES, Study

pytestmark = pytest.mark.napari

PLUGIN = "napari-perfroi"
WIDGET = "ROI review"


# ---------------------------------------------------------------- fixtures
@pytest.fixture
def store(analysed_store):
    return analysed_store


@pytest.fixture
def review(make_napari_viewer, store):
    """(viewer, widget, layer) on a fresh copy of the analysed store."""
    viewer = make_napari_viewer()
    viewer.open(store, plugin=PLUGIN)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return viewer, widget, viewer.layers[L.ROI_LAYER]


@pytest.fixture
def shown_review(make_napari_viewer, store, qtbot):
    """(viewer, dock, widget, layer) in a shown window, the dock visible."""
    viewer = make_napari_viewer(show=True)
    viewer.open(store, plugin=PLUGIN)
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    qtbot.waitUntil(widget.isVisible, timeout=5000)
    return viewer, dock, widget, viewer.layers[L.ROI_LAYER]


# ---------------------------------------------------------------- helpers
def stored(path):
    study = Study.open(path)
    return study.read("roi"), study.read("roi_state")


def layer_circles(layer):
    """{(slice, t): (circle, state name)} of the layer's shapes; one shape per frame."""
    found = {}
    for index, (vertices, kind) in enumerate(zip(layer.data, layer.shape_type, strict=True)):
        assert kind == "ellipse"
        s, t, circle = L.shape_circle(vertices, kind)
        assert (s, t) not in found, f"two shapes on slice {s} frame {t}"
        found[s, t] = (circle, layer.features["state"][index])
    return found


def assert_layer_shows(layer, roi, states):
    """The layer has one circle per frame with a circle, and the right state and colour."""
    shown = layer_circles(layer)
    expected = {tuple(int(v) for v in f) for f in frames_with_circle(roi)}
    assert set(shown) == expected
    for (s, t), (circle, state) in shown.items():
        np.testing.assert_allclose(circle, roi[s, t], atol=1e-3)
        assert state == ROI_STATES[int(states[s, t])]
    colours = [L.ROI_STATE_COLORS[state] for state in layer.features["state"]]
    assert colours
    from napari.utils.colormaps.standardize_color import transform_color

    np.testing.assert_allclose(layer.edge_color, transform_color(colours))


def moved_shape(layer, s, t, d_row, d_col):
    """layer.data with the circle of frame (s, t) moved by (d_row, d_col) px; its index."""
    data = [np.array(v) for v in layer.data]
    index = next(i for i, v in enumerate(data) if L.shape_circle(v)[:2] == (s, t))
    data[index][:, 2] += d_row
    data[index][:, 3] += d_col
    return data, index


def settle(qtbot):
    """Let the widget redraw after napari's event (it waits for the next loop turn)."""
    qtbot.wait(10)


class _Event:
    """What napari's mouse callbacks read from a vispy mouse event (world coordinates)."""

    def __init__(self, kind, position, dragging=False):
        self.__wrapped__ = SimpleNamespace(
            type=kind, position=tuple(position), is_dragging=dragging, modifiers=[],
            pos=np.zeros(2), view_direction=None, up_direction=None, dims_displayed=[2, 3],
            delta=None, native=None, handled=False,
        )

    def __getattr__(self, name):
        return getattr(self.__wrapped__, name)


def drag(layer, start_world, end_world):
    """Press at ``start``, move to ``end`` in steps and release, as a mouse drag does."""
    mouse_press_callbacks(layer, _Event("mouse_press", start_world))
    for f in np.linspace(0, 1, 4):
        point = np.asarray(start_world) + f * (np.asarray(end_world) - start_world)
        mouse_move_callbacks(layer, _Event("mouse_move", point, dragging=True))
    mouse_release_callbacks(layer, _Event("mouse_release", end_world))


# ---------------------------------------------------------------- display
def test_proposals_appear_as_shapes_on_their_frames(review, store):
    viewer, widget, layer = review
    assert isinstance(widget, RoiWidget)
    assert widget.study_label.text() == f"study: {store.name}"
    roi, states = stored(store)
    assert np.isfinite(roi).all() and (states == PROPOSED).all()  # the phantom has an LV everywhere
    assert len(layer.data) == roi.shape[0] * roi.shape[1]
    assert_layer_shows(layer, roi, states)
    assert widget.layer is layer and len(viewer.layers[L.ROI_LAYER].data) == len(layer.data)
    # Buttons carry their keys and are enabled; the legend names every state.
    labels = {b.text() for b in widget.buttons.values()}
    assert {"Propagate [P]", "Accept frame [A]", "Accept series [Shift-A]",
            "Revert to proposal [R]", "Next unreviewed [N]",
            "Previous unreviewed [Shift-N]"} <= labels
    assert all(b.isEnabled() for b in widget.buttons.values())
    for name, colour in L.ROI_STATE_COLORS.items():
        assert f"color:{colour}" in widget.legend.text() and name in widget.legend.text()
    n_times = roi.shape[1]
    assert [widget.progress_list.item(i).text() for i in range(widget.progress_list.count())] == [
        f"slice 1 (basal): 0/{n_times} accepted", f"slice 2 (mid): 0/{n_times} accepted",
        f"slice 3 (apical): 0/{n_times} accepted"]  # slices count from 1, as in Perfusion


def test_frame_info_follows_the_dims(review, store):
    viewer, widget, layer = review
    roi, _ = stored(store)
    spacing = Study.open(store).pixel_spacing_mm
    widget.go_to(2, 7)
    assert widget.current_frame() == (2, 7)
    text = widget.frame_label.text()
    assert "slice 3 (apical) · frame 7 · proposed" in text
    assert f"radius {roi[2, 7, 2] * np.mean(spacing):.1f} mm" in text
    offset = (roi[2, 7, :2] - np.median(roi[2, :, :2], axis=0)) * spacing
    assert (f"centre {np.hypot(*offset):.1f} mm from the slice's median centre "
            f"(down {offset[0]:+.1f}, right {offset[1]:+.1f})") in text
    assert widget.progress_list.currentRow() == 2


def test_zoom_to_the_lv_follows_the_slice(review, store):
    viewer, widget, layer = review
    roi, _ = stored(store)
    scale = np.asarray(layer.scale[-2:])
    widget.zoom_box.setChecked(True)
    for s in (1, 2):
        widget.go_to(s, 4)
        row, col, radius = np.median(roi[s], axis=0)
        np.testing.assert_allclose(viewer.scene.camera.center[-2:], np.array([row, col]) * scale)
        assert viewer.scene.camera.zoom == pytest.approx(
            min(viewer.canvas.size) / (4 * radius * scale.mean()))
    widget.go_to(2, 9)  # another frame of the same slice: the view stays
    np.testing.assert_allclose(viewer.scene.camera.center[-2:],
                               np.median(roi[2, :, :2], axis=0) * scale)
    widget.zoom_box.setChecked(False)


# ---------------------------------------------------------------- edits with napari's tools
def test_replacing_layer_data_marks_only_that_frame_edited(review, store, qtbot):
    viewer, widget, layer = review
    roi, states = stored(store)
    data, index = moved_shape(layer, 1, 4, 2.5, -1.5)
    layer.data = data  # napari emits "changing" then "changed" for every shape

    expected_states = states.copy()
    expected_states[1, 4] = EDITED
    np.testing.assert_array_equal(widget.model.states, expected_states)
    expected_roi = roi.copy()
    expected_roi[1, 4, :2] += (2.5, -1.5)
    np.testing.assert_allclose(widget.model.roi, expected_roi, atol=1e-4)
    settle(qtbot)
    assert_layer_shows(layer, expected_roi, expected_states)
    assert layer.features["state"][index] == "edited"


def test_mouse_drag_draw_and_delete_like_a_user(review, store, qtbot):
    viewer, widget, layer = review
    roi, states = stored(store)
    scale = np.asarray(layer.scale)

    # Drag the circle of slice 0 frame 3 by its centre in select mode.
    widget.go_to(0, 3)
    layer.mode = "select"
    # Grab it a little off its centre: the exact centre can fall on an edge of
    # napari's triangulation of the ellipse, where picking misses it.
    grab = np.array([0, 3, *(roi[0, 3, :2] + 0.3 * roi[0, 3, 2])]) * scale
    drag(layer, grab, grab + np.array([0, 0, 4, 6]) * scale)
    settle(qtbot)
    assert widget.model.states[0, 3] == EDITED
    np.testing.assert_allclose(widget.model.roi[0, 3], roi[0, 3] + [4, 6, 0], atol=1e-3)
    assert (widget.model.states != PROPOSED).sum() == 1  # only that frame

    # Draw a new ellipse on slice 2 frame 5: it replaces that frame's circle.
    widget.go_to(2, 5)
    layer.mode = "add_ellipse"
    corner = np.array([2, 5, 40.0, 50.0])
    drag(layer, corner * scale, (corner + [0, 0, 20, 20]) * scale)
    settle(qtbot)
    assert widget.model.states[2, 5] == EDITED
    np.testing.assert_allclose(widget.model.roi[2, 5], [50, 60, 10], atol=1e-3)
    assert widget.status.text() == "slice 3 frame 5: edited"  # a circle: nothing to say

    # An ellipse is taken as a circle, and the dock says so.
    widget.go_to(2, 6)
    corner = np.array([2, 6, 40.0, 50.0])
    drag(layer, corner * scale, (corner + [0, 0, 10, 30]) * scale)
    settle(qtbot)
    assert widget.model.states[2, 6] == EDITED
    assert "the ellipse became a circle of radius" in widget.status.text()
    assert len(layer.data) == roi.shape[0] * roi.shape[1]  # the old circle went
    expected_roi, expected_states = roi.copy(), states.copy()
    expected_roi[0, 3, :2] += (4, 6)
    expected_roi[2, 5] = (50, 60, 10)
    expected_roi[2, 6] = widget.model.roi[2, 6]
    expected_states[[0, 2, 2], [3, 5, 6]] = EDITED
    assert_layer_shows(layer, expected_roi, expected_states)

    # Delete the circle of slice 1 frame 2: that frame has none.
    layer.mode = "select"
    index = next(i for i, v in enumerate(layer.data) if L.shape_circle(v)[:2] == (1, 2))
    layer.selected_data = {index}
    layer.remove_selected()
    settle(qtbot)
    assert widget.model.states[1, 2] == NONE and np.isnan(widget.model.roi[1, 2]).all()
    assert (1, 2) not in layer_circles(layer)
    assert (widget.model.states == EDITED).sum() == 3
    widget.go_to(1, 2)
    assert "no circle" in widget.frame_label.text()
    widget.propagate()
    assert "has no circle to propagate" in widget.status.text()
    widget.accept_frame()
    assert "has no circle to accept" in widget.status.text()
    assert widget.model.states[1, 2] == NONE


def _canvas_position(viewer, world_yx) -> QPointF:
    """Where the world point (row, col in mm) of the 2D view is on the canvas widget."""
    native = viewer.window._qt_viewer.canvas.native
    centre = np.asarray(viewer.scene.camera.center)[-2:]
    offset = np.array([native.height() / 2, native.width() / 2])
    y, x = (np.asarray(world_yx) - centre) * viewer.scene.camera.zoom + offset
    return QPointF(float(x), float(y))


def _mouse(viewer, kind, position: QPointF, buttons) -> None:
    """A real Qt mouse event on the canvas (vispy turns it into napari's mouse callbacks)."""
    event = QMouseEvent(kind, position, position, Qt.MouseButton.LeftButton, buttons,
                        Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(viewer.window._qt_viewer.canvas.native, event)


def test_circles_on_every_slice_can_be_dragged_with_the_mouse(make_napari_viewer, store, qtbot):
    """With slices 12.640002 mm apart (a world slice coordinate that maps back to
    0.9999999999999999 when the axis is scaled in mm) a press-drag-release with real Qt
    events moves the circle of each slice."""
    Study.open(store, writable=True).update_attrs(slice_positions_mm=[0.0, 12.640002, 25.280004])
    viewer = make_napari_viewer(show=True)
    viewer.open(store, plugin=PLUGIN)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    layer = viewer.layers[L.ROI_LAYER]
    roi, _ = stored(store)
    spacing = np.asarray(layer.scale)[2:]
    for s in (0, 1, 2):
        widget.go_to(s, 3)
        layer.mode = "select"
        qtbot.wait(20)
        start = _canvas_position(viewer, (roi[s, 3, :2] + 0.3 * roi[s, 3, 2]) * spacing)
        step = QPointF(6.0, 4.0)  # screen pixels
        _mouse(viewer, QEvent.Type.MouseButtonPress, start, Qt.MouseButton.LeftButton)
        for f in (0.5, 1.0):  # napari moves the shape by the cursor's path after the first
            _mouse(viewer, QEvent.Type.MouseMove, start + f * step, Qt.MouseButton.LeftButton)
        _mouse(viewer, QEvent.Type.MouseButtonRelease, start + step, Qt.MouseButton.NoButton)
        settle(qtbot)
        assert widget.model.states[s, 3] == EDITED, f"slice {s}"
        moved = (widget.model.roi[s, 3, :2] - roi[s, 3, :2]) * spacing * viewer.scene.camera.zoom
        np.testing.assert_allclose(moved, [2.0, 3.0], atol=0.5)


def test_widget_updates_are_not_taken_for_edits(review, store, qtbot):
    viewer, widget, layer = review
    widget.go_to(0, 0)
    widget.accept_series()
    widget.propagate()  # nothing to carry to: every frame of slice 0 is accepted
    settle(qtbot)
    assert not (widget.model.states == EDITED).any()
    _, states = stored(store)
    assert (states[0] == ACCEPTED).all() and (states[1:] == PROPOSED).all()


# ---------------------------------------------------------------- actions
def test_propagate_follows_motion_and_keeps_reviewed_frames(review, store, qtbot):
    viewer, widget, layer = review
    roi, _ = stored(store)
    motion = Study.open(store).read("motion")
    widget.go_to(1, 2)
    widget.accept_frame()
    data, _ = moved_shape(layer, 1, 9, 3.0, 3.0)
    layer.data = data  # slice 1 frame 9: edited
    source = roi[1, 5].copy()
    widget.go_to(1, 5)
    # The widget must do what the core does (tested in test_roi) on its model.
    expected_roi, expected_states = widget.model.roi.copy(), widget.model.states.copy()
    propagate(expected_roi, expected_states, motion, 1, 5)
    widget.propagate()

    model = widget.model
    others = [t for t in range(roi.shape[1]) if t not in (2, 5, 9)]
    np.testing.assert_allclose(model.roi, expected_roi, atol=1e-5)
    np.testing.assert_array_equal(model.states, expected_states)
    assert (model.states[1, others] == PROPAGATED).all()
    assert model.states[1, 2] == ACCEPTED and model.states[1, 9] == EDITED
    np.testing.assert_array_equal(model.roi[1, 2], roi[1, 2])
    np.testing.assert_allclose(model.roi[1, 9], roi[1, 9] + [3, 3, 0], atol=1e-4)
    np.testing.assert_array_equal(model.roi[[0, 2]], roi[[0, 2]])  # other slices untouched
    assert_layer_shows(layer, model.roi, model.states)

    widget.overwrite_box.setChecked(True)
    widget.propagate()
    targets = [t for t in range(roi.shape[1]) if t != 5]
    np.testing.assert_allclose(model.roi[1, targets], moved_circle(source, motion[1], 5, targets),
                               atol=1e-5)
    assert (model.states[1, targets] == PROPAGATED).all()
    assert_layer_shows(layer, model.roi, model.states)
    qtbot.waitUntil(lambda: (stored(store)[1][1, targets] == PROPAGATED).all(), timeout=5000)


def test_accept_frame_and_series_are_saved_at_once(review, store):
    viewer, widget, layer = review
    widget.go_to(2, 6)
    widget.accept_frame()
    # No event loop turn in between: the write happened inside accept_frame.
    assert stored(store)[1][2, 6] == ACCEPTED
    widget.go_to(0, 1)
    widget.buttons["accept_series"].click()
    _, states = stored(store)
    assert (states[0] == ACCEPTED).all() and states[2, 6] == ACCEPTED
    assert (states == ACCEPTED).sum() == states.shape[1] + 1
    n_times = states.shape[1]
    assert widget.progress_list.item(0).text().endswith(f"{n_times}/{n_times} accepted")
    assert widget.progress_list.item(2).text().endswith(f"1/{states.shape[1]} accepted")
    assert_layer_shows(layer, widget.model.roi, widget.model.states)


def test_revert_to_proposal(review, store, qtbot):
    viewer, widget, layer = review
    proposals = proposals_for_study(Study.open(store))
    data, _ = moved_shape(layer, 0, 8, -5.0, 2.0)
    layer.data = data
    widget.go_to(0, 8)
    widget.accept_frame()
    assert widget.model.states[0, 8] == ACCEPTED
    widget.revert()  # the proposals are computed in a worker the first time
    qtbot.waitUntil(lambda: widget.model.states[0, 8] == PROPOSED, timeout=10_000)
    np.testing.assert_allclose(widget.model.roi[0, 8], proposals[0, 8], atol=1e-5)
    widget.go_to(0, 9)
    layer.data = moved_shape(layer, 0, 9, 1.0, 1.0)[0]
    widget.revert()  # cached now: at once, no event loop turn needed
    np.testing.assert_allclose(widget.model.roi[0, 9], proposals[0, 9], atol=1e-5)
    assert_layer_shows(layer, widget.model.roi, widget.model.states)
    qtbot.waitUntil(lambda: (stored(store)[1][0, 8:10] == PROPOSED).all(), timeout=5000)


def test_next_and_previous_unreviewed_move_the_dims(review, store):
    viewer, widget, layer = review
    n_times = stored(store)[1].shape[1]
    widget.go_to(0, 0)
    widget.accept_series()  # slice 0 done
    widget.go_to(1, 0)
    widget.accept_frame()
    widget.go_to(1, 1)
    widget.accept_frame()
    widget.go_to(0, 4)
    widget.next_unreviewed()  # past the finished slice 0 and the accepted frames 0, 1
    assert widget.current_frame() == (1, 2)
    assert widget.status.text() == "slice 2 frame 2: not accepted yet"
    widget.next_unreviewed()  # the rest of the same slice comes first
    assert widget.current_frame() == (1, 3)
    widget.go_to(2, n_times - 1)
    widget.next_unreviewed()  # wraps past the finished slice 0
    assert widget.current_frame() == (1, 2)
    widget.previous_unreviewed()  # back past slice 0, to the last frame of the last slice
    assert widget.current_frame() == (2, n_times - 1)
    # The same through the keys, with the ROI layer active (its keys come first).
    handler = KeymapHandler()
    handler.keymap_providers = [layer, viewer]
    viewer.layers.selection.active = layer
    assert handler.press_key("Shift-N")
    assert widget.current_frame() == (2, n_times - 2)
    for s in (1, 2):
        widget.go_to(s, 0)
        widget.accept_series()
    widget.next_unreviewed()
    assert widget.status.text() == "every frame is accepted"
    assert (stored(store)[1] == ACCEPTED).sum() == 3 * n_times


def test_keys_work_on_the_viewer_and_the_roi_layer(review, store):
    viewer, widget, layer = review
    handler = KeymapHandler()
    # With the ROI layer active, napari would start the polygon tool on P and
    # select all shapes on A: the widget's keys win on this layer.
    handler.keymap_providers = [layer, viewer]
    widget.go_to(2, 3)
    assert handler.press_key("A")
    assert layer.mode != "add_polygon"
    assert stored(store)[1][2, 3] == ACCEPTED
    assert handler.press_key("P")
    assert layer.mode != "add_polygon"
    assert widget.model.states[2, 0] == PROPAGATED and widget.model.states[2, 3] == ACCEPTED
    # With the image active only the viewer's bindings apply.
    handler.keymap_providers = [viewer.layers[L.IMAGE_LAYER], viewer]
    widget.go_to(1, 0)
    assert handler.press_key("Shift-A")
    assert (stored(store)[1][1] == ACCEPTED).all()
    # Removing the layer gives the Shapes keys back to it (and saves first).
    viewer.layers.remove(layer)
    assert not layer.keymap
    assert stored(store)[1][2, 0] == PROPAGATED


# ---------------------------------------------------------------- never lose work
def test_edit_is_autosaved(review, store, qtbot):
    viewer, widget, layer = review
    layer.data = moved_shape(layer, 2, 10, 1.0, 0.0)[0]
    assert stored(store)[1][2, 10] == PROPOSED  # not yet: saved after a pause
    assert widget.model.dirty
    with qtbot.waitSignal(widget.saved, timeout=5000):
        pass
    assert stored(store)[1][2, 10] == EDITED
    assert not widget.model.dirty
    assert "saved" in widget.save_label.text()


def test_edit_is_saved_when_the_viewer_closes(review, store):
    viewer, widget, layer = review
    layer.data = moved_shape(layer, 0, 11, 2.0, 2.0)[0]
    edited = widget.model.roi[0, 11].copy()
    viewer.close()  # at once: well before the autosave
    roi, states = stored(store)
    assert states[0, 11] == EDITED
    np.testing.assert_array_equal(roi[0, 11], edited)


def test_edit_is_saved_when_the_dock_closes(shown_review, store):
    _, dock, _, layer = shown_review
    layer.data = moved_shape(layer, 1, 1, 2.0, 2.0)[0]
    dock.close()
    assert stored(store)[1][1, 1] == EDITED


def test_edit_is_saved_when_the_window_is_closed(shown_review, store):
    viewer, _, widget, layer = shown_review
    layer.data = moved_shape(layer, 1, 8, 2.0, 2.0)[0]
    window = widget.window()
    window.close()  # what the window's close button does: Qt deletes the window after
    assert stored(store)[1][1, 8] == EDITED
    del viewer.window._qt_window  # gone already: the fixture must not close it again


def test_edit_is_saved_when_the_widget_is_destroyed(make_napari_viewer, store, qtbot):
    viewer = make_napari_viewer()
    viewer.open(store, plugin=PLUGIN)
    widget = RoiWidget(viewer)
    layer = viewer.layers[L.ROI_LAYER]
    layer.data = moved_shape(layer, 2, 2, 2.0, 2.0)[0]
    with qtbot.waitSignal(widget.destroyed, timeout=5000):
        widget.deleteLater()
    assert stored(store)[1][2, 2] == EDITED
    # The keys went with the widget; editing the layer now changes nothing in the store.
    assert not viewer.keymap
    layer.data = moved_shape(layer, 2, 3, 2.0, 2.0)[0]
    QApplication.processEvents()
    assert stored(store)[1][2, 3] == PROPOSED


def test_reopening_restores_circles_and_states(make_napari_viewer, review, store, qtbot):
    viewer, widget, layer = review
    layer.data = moved_shape(layer, 0, 2, 3.0, -2.0)[0]
    widget.go_to(1, 6)
    widget.propagate()
    widget.go_to(2, 4)
    widget.accept_frame()
    index = next(i for i, v in enumerate(layer.data) if L.shape_circle(v)[:2] == (2, 9))
    layer.remove([index])
    settle(qtbot)
    roi, states = widget.model.roi.copy(), widget.model.states.copy()
    assert {EDITED, PROPAGATED, ACCEPTED, NONE, PROPOSED} <= set(np.unique(states).tolist())
    viewer.close()

    again = make_napari_viewer()
    again.open(store, plugin=PLUGIN)
    _, widget2 = again.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    stored_roi, stored_states = stored(store)
    np.testing.assert_array_equal(stored_roi, roi)
    np.testing.assert_array_equal(stored_states, states)
    np.testing.assert_array_equal(widget2.model.roi, roi)
    np.testing.assert_array_equal(widget2.model.states, states)
    assert not widget2.model.dirty  # the reader's layer is what the widget saved
    assert_layer_shows(again.layers[L.ROI_LAYER], roi, states)


def test_accept_survives_a_crash(store):
    """A napari process killed right after an accept: the accept is in the store."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        import napari
        viewer = napari.Viewer(show=False)
        viewer.open(sys.argv[1], plugin={PLUGIN!r})
        _, widget = viewer.window.add_plugin_dock_widget({PLUGIN!r}, {WIDGET!r})
        widget.go_to(1, 3)
        widget.accept_frame()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script, str(store)], env=dict(os.environ),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    _, states = stored(store)
    assert states[1, 3] == ACCEPTED
    assert (states == ACCEPTED).sum() == 1


# ---------------------------------------------------------------- without circles
def test_store_without_circles_disables_the_buttons(make_napari_viewer, phantom_store):
    path = phantom_store
    viewer = make_napari_viewer()
    viewer.open(path, plugin=PLUGIN)
    widget = RoiWidget(viewer)
    assert NO_ROI_HINT in widget.study_label.text()
    assert not any(b.isEnabled() for b in widget.buttons.values())
    assert not widget.propose_button.isEnabled()  # no labels to propose from
    widget.accept_frame()  # does nothing
    widget.propagate()
    assert L.ROI_LAYER not in [layer.name for layer in viewer.layers]
    assert not Study.open(path).has("roi")

    empty = make_napari_viewer()
    widget = RoiWidget(empty)
    assert "open a study store" in widget.study_label.text()
    assert not any(b.isEnabled() for b in widget.buttons.values())


def test_propose_circles_runs_the_roi_step(make_napari_viewer, analysed_store, qtbot):
    path = analysed_store
    shutil.rmtree(path / "roi")
    shutil.rmtree(path / "roi_state")
    viewer = make_napari_viewer()
    viewer.open(path, plugin=PLUGIN)
    widget = RoiWidget(viewer)
    assert "Propose circles" in widget.study_label.text()
    assert widget.propose_button.isEnabled()
    assert not any(b.isEnabled() for b in widget.buttons.values())
    with qtbot.waitSignal(widget.proposed, timeout=60_000):
        widget.propose()
    layer = viewer.layers[L.ROI_LAYER]
    roi, states = stored(path)
    assert_layer_shows(layer, roi, states)
    assert [lay.name for lay in viewer.layers].count(L.ROI_LAYER) == 1
    assert widget.layer is layer and all(b.isEnabled() for b in widget.buttons.values())
    assert "circles proposed" in widget.status.text()


# ---------------------------------------------------------------- writer
def test_writer_writes_one_row_per_shape(review, store, tmp_path):
    viewer, widget, layer = review
    widget.go_to(0, 0)
    widget.accept_frame()
    index = next(i for i, v in enumerate(layer.data) if L.shape_circle(v)[:2] == (1, 1))
    layer.remove([index])
    layer.data = moved_shape(layer, 2, 2, 1.0, 1.0)[0]
    out = tmp_path / "circles.csv"
    written = layer.save(str(out), plugin=PLUGIN)
    assert written == [str(out)]
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(layer.data)
    by_frame = {(int(r["slice"]), int(r["frame"])): r for r in rows}
    assert (1, 1) not in by_frame
    assert by_frame[0, 0]["state"] == "accepted" and by_frame[2, 2]["state"] == "edited"
    assert by_frame[0, 1]["state"] == "proposed"
    row, col, radius = widget.model.roi[2, 2]
    assert float(by_frame[2, 2]["row"]) == pytest.approx(row, abs=1e-3)
    assert float(by_frame[2, 2]["col"]) == pytest.approx(col, abs=1e-3)
    assert float(by_frame[2, 2]["radius_px"]) == pytest.approx(radius, abs=1e-3)
    assert {r["study"] for r in rows} == {"p"}


def test_writer_needs_the_store_and_one_circle_per_frame(tmp_path, store):
    lonely = Shapes([L.circle_corners(0, 0, 10, 10, 4)], shape_type="ellipse", ndim=4)
    data, meta, _ = lonely.as_layer_data_tuple()
    with pytest.raises(InputError, match="does not belong to a study store"):
        write_roi_layer(str(tmp_path / "x.csv"), data, meta)
    meta["metadata"] = {L.STORE_KEY: str(store)}
    twice = [L.circle_corners(0, 0, 10, 10, 4), L.circle_corners(0, 0, 12, 10, 4)]
    with pytest.raises(InputError, match="both on slice 0 frame 0"):
        write_roi_layer(str(tmp_path / "x.csv"), twice, {**meta, "features": None,
                                                         "shape_type": ["ellipse"] * 2})
    assert not (tmp_path / "x.csv").exists()
