"""The whole job in a real viewer, as a user does it: sample, Segment, ROI review, Perfusion.

Every step goes through the docks' buttons; the checks read the layers and the
study store the steps wrote, and a screenshot of the window.
"""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from napari_perfroi._napari import layers as L
from napari_perfroi._napari.sample_data import phantom_store_path
from napari_perfroi.demo import SAMPLE_DEFECT, save_napari_screenshot
from napari_perfroi.pipeline import run_step
from napari_perfroi.report import TERRITORY_NAMES
from napari_perfroi.roi import ACCEPTED, EDITED, PROPOSED, moved_circle
from napari_perfroi.segment.metrics import dice_per_class
from napari_perfroi.study import LV_BLOOD, MYOCARDIUM, RV_BLOOD, Study

pytestmark = pytest.mark.napari

PLUGIN = "napari-perfroi"
SAMPLE = "stress_perfusion_phantom"
RUN_TIMEOUT_MS = 300_000  # a whole step of the 60-frame sample on a busy 2-core CPU
EDITED_FRAME = (1, 30)  # mid slice, during the contrast wash-out
MOVE_PX = (2.0, -1.5)  # the user's drag of that frame's circle (row, col)


def _saturated_pixels(rgba: np.ndarray) -> int:
    """Pixels with a clear colour (not grey): the overlays on the grey MRI image."""
    rgb = rgba[..., :3].astype(int)
    return int(((rgb.max(axis=-1) - rgb.min(axis=-1)) > 80).sum())


def _assert_not_blank(rgba: np.ndarray) -> None:
    assert rgba.ndim == 3 and min(rgba.shape[:2]) >= 300, rgba.shape
    colours = np.unique(rgba[..., :3].reshape(-1, 3), axis=0)
    assert len(colours) > 500 and rgba[..., :3].std() > 20, (len(colours), rgba.std())


def test_sample_to_flow_report_with_the_docks(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # a fresh sample store
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1500, 1000)
    viewer.open_sample(PLUGIN, SAMPLE)
    store = phantom_store_path()
    n_slices, n_times = Study.open(store).shape[:2]

    # Segment: motion and labels for every frame, in a worker.
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    with qtbot.waitSignal(segment.finished, timeout=RUN_TIMEOUT_MS):
        segment.run_button.click()
    assert segment.status.text() == f"LV found on all {n_slices} slice(s)"

    # ROI review: propose the circles, move one, propagate it, accept its series.
    _, review = viewer.window.add_plugin_dock_widget(PLUGIN, "ROI review")
    assert not review.propose_button.isHidden() and review.propose_button.isEnabled()
    with qtbot.waitSignal(review.proposed, timeout=RUN_TIMEOUT_MS):
        review.propose_button.click()
    roi_layer = viewer.layers[L.ROI_LAYER]
    assert len(roi_layer.data) == n_slices * n_times
    proposals = Study.open(store).read("roi")
    s, t = EDITED_FRAME
    review.go_to(s, t)
    data = [np.array(vertices) for vertices in roi_layer.data]
    index = next(i for i, v in enumerate(data) if L.shape_circle(v)[:2] == (s, t))
    data[index][:, 2:] += MOVE_PX
    roi_layer.data = data  # as a drag with the select tool leaves it
    qtbot.wait(10)  # the widget redraws on the next turn of the event loop
    assert review.model.states[s, t] == EDITED
    review.buttons["propagate"].click()
    review.buttons["accept_series"].click()

    # Perfusion: MBF map, AHA segments and the flow report, in a worker.
    _, perfusion = viewer.window.add_plugin_dock_widget(PLUGIN, "Perfusion")
    with qtbot.waitSignal(perfusion.finished, timeout=RUN_TIMEOUT_MS):
        perfusion.compute_button.click()

    study = Study.open(store)
    # Labels: in the layer as in the store, LV / myocardium / RV near the phantom's truth.
    labels = study.read("labels")
    np.testing.assert_array_equal(np.asarray(viewer.layers[L.LABELS_LAYER].data), labels)
    per_frame = {k: (labels == k).sum(axis=(2, 3)) for k in (LV_BLOOD, MYOCARDIUM, RV_BLOOD)}
    assert all((counts > 0).all() for counts in per_frame.values())  # on every frame
    lv, myocardium, rv = (float(per_frame[k].sum()) for k in (LV_BLOOD, MYOCARDIUM, RV_BLOOD))
    assert 0.25 <= myocardium / lv <= 2.0 and 0.3 <= rv / lv <= 3.0, (lv, myocardium, rv)
    assert (lv + myocardium + rv) / labels.size < 0.15  # the heart, not the chest
    truth = np.asarray(viewer.layers[L.TRUTH_LABELS_LAYER].data)
    dice = dice_per_class(labels, truth)
    assert dice[0] >= 0.85 and dice[1] >= 0.75 and dice[2] >= 0.7, dice

    # Circles: the slice's series accepted and saved, the edited circle kept,
    # the others carried from it along the motion; the other slices untouched.
    roi, states = study.read("roi"), study.read("roi_state")
    assert (states[s] == ACCEPTED).all()
    assert (np.delete(states, s, axis=0) == PROPOSED).all()
    edited = proposals[s, t] + [*MOVE_PX, 0.0]
    np.testing.assert_allclose(roi[s, t], edited, atol=1e-3)
    others = [u for u in range(n_times) if u != t]
    np.testing.assert_allclose(roi[s, others], moved_circle(edited, study.read("motion")[s], t,
                                                            others), atol=1e-3)
    np.testing.assert_array_equal(np.delete(roi, s, axis=0), np.delete(proposals, s, axis=0))

    # MBF: on the myocardium of each slice's reference frame, finite and in 0-10 mL/min/g.
    mbf_data = viewer.layers[L.MBF_LAYER].data  # on the reference frames as computed
    mbf = np.stack([np.asarray(mbf_data[s, t])
                    for s, t in enumerate(study.attrs["reference_frame"])])
    np.testing.assert_array_equal(mbf, study.read("mbf"))
    reference = [int(u) for u in study.attrs["reference_frame"]]
    myocardium_mask = np.stack([labels[i, u] == MYOCARDIUM for i, u in enumerate(reference)])
    assert np.isfinite(mbf[myocardium_mask]).mean() >= 0.98
    assert not np.isfinite(mbf[~myocardium_mask]).any()
    assert np.nanmin(mbf) >= 0.0 and np.nanmax(mbf) <= 10.0  # the fit's flow bounds
    true_global = study.attrs["truth"]["global_mbf"]  # measured map median: 0.78 of it
    assert 0.5 * true_global <= np.nanmedian(mbf) <= 2.0 * true_global

    # AHA: segments 1-16 on the myocardium, with their numbers on the image.
    aha_data = viewer.layers[L.AHA_LAYER].data
    aha = np.stack([np.asarray(aha_data[s, t])
                    for s, t in enumerate(study.attrs["reference_frame"])])
    assert set(np.unique(aha)) == set(range(17))
    assert np.array_equal(aha > 0, myocardium_mask)
    assert set(viewer.layers[L.AHA_NUMBERS_LAYER].features["segment"]) == set(range(1, 17))

    # Report: 16 segment values, the phantom's defect as lowest territory, shown in the dock.
    report = study.attrs["report"]
    assert len(report["segment_mbf"]) == 16
    assert all(v is not None and 0.0 < v < 10.0 for v in report["segment_mbf"])
    assert report["lowest_territory"] == SAMPLE_DEFECT
    assert f"lowest territory <b>{TERRITORY_NAMES[SAMPLE_DEFECT]}</b>" in perfusion.summary.text()
    assert perfusion.bullseye_axes is not None

    # The window shows all of it: the canvas has the coloured overlays on the grey image.
    assert perfusion.current_frame() == (s, reference[s])
    window = viewer.screenshot(canvas_only=False, flash=False)
    _assert_not_blank(window)
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    _assert_not_blank(canvas)
    assert _saturated_pixels(canvas) > 0.01 * canvas.shape[0] * canvas.shape[1]


def test_demo_screenshot_shows_an_analysed_study(analysed_store, tmp_path):
    study = Study.open(analysed_store, writable=True)
    for step in ("flow", "aha"):
        run_step(study, step)
    shot = save_napari_screenshot(analysed_store, tmp_path / "napari.png")
    assert shot == tmp_path / "napari.png"
    rgba = (imread(shot) * 255).astype(np.uint8)
    _assert_not_blank(rgba)
    assert _saturated_pixels(rgba) > 0.02 * rgba.shape[0] * rgba.shape[1]
    assert shot.stat().st_size > 50_000
