"""Two studies open in one viewer: the docks follow the study of the selected layer."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from napari_perfroi._napari import layers as L
from napari_perfroi.roi import ACCEPTED
from napari_perfroi.study import Study

pytestmark = pytest.mark.napari

PLUGIN = "napari-perfroi"


def test_docks_follow_the_study_of_the_selected_layer(make_napari_viewer, analysed_template,
                                                      tmp_path, qtbot):
    first, second = tmp_path / "first.zarr", tmp_path / "second.zarr"
    for path in (first, second):
        shutil.copytree(analysed_template, path)
    states_before = Study.open(first).read("roi_state")
    viewer = make_napari_viewer()
    viewer.open(first, plugin=PLUGIN)
    viewer.open(second, plugin=PLUGIN)
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    _, review = viewer.window.add_plugin_dock_widget(PLUGIN, "ROI review")
    _, perfusion = viewer.window.add_plugin_dock_widget(PLUGIN, "Perfusion")
    # The first image layer is selected last by the reader of the second study: choose the first.
    viewer.layers.selection.active = L.find_layer(viewer, L.IMAGE_LAYER, first)
    qtbot.waitUntil(lambda: perfusion._shown_store == first, timeout=5000)
    assert review.model.path == first and segment._store == first

    second_image = L.find_layer(viewer, L.IMAGE_LAYER, second)
    assert second_image.name != L.IMAGE_LAYER  # napari renamed the second study's layers
    viewer.layers.selection.active = second_image
    qtbot.waitUntil(lambda: perfusion._shown_store == second, timeout=5000)
    assert segment._store == second and "second.zarr" in segment.study_label.text()
    assert review.model.path == second
    assert review.layer is L.find_layer(viewer, L.ROI_LAYER, second)
    assert "second.zarr" in review.study_label.text()

    review.go_to(1, 5)
    assert review.current_frame() == (1, 5)
    review.accept_frame()
    assert Study.open(second).read("roi_state")[1, 5] == ACCEPTED
    np.testing.assert_array_equal(Study.open(first).read("roi_state"), states_before)

    # Selecting any layer of the first study brings the docks back to it.
    viewer.layers.selection.active = L.find_layer(viewer, L.LABELS_LAYER, first)
    qtbot.waitUntil(lambda: perfusion._shown_store == first, timeout=5000)
    assert review.model.path == first and segment._store == first
