"""LV circles: proposals from labels, propagation with the motion, review states, export."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import zarr

from napari_perfroi import roi as R
from napari_perfroi.cli import main
from napari_perfroi.phantom import write_phantom
from napari_perfroi.pipeline import run_step
from napari_perfroi.roi_export import CSV_COLUMNS, export_rois
from napari_perfroi.study import Study


def _ring(shape, centre, inner, outer):
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    d = np.hypot(rows - centre[0], cols - centre[1])
    labels = np.zeros(shape, dtype=np.uint8)
    labels[d <= outer] = 2
    labels[d <= inner] = 1
    return labels


def _rasterised_iou(a, b) -> float:
    lo = np.minimum(a[:2] - a[2], b[:2] - b[2]) - 1
    hi = np.maximum(a[:2] + a[2], b[:2] + b[2]) + 1
    rows, cols = np.meshgrid(*(np.linspace(lo[i], hi[i], 600) for i in range(2)), indexing="ij")
    in_a = np.hypot(rows - a[0], cols - a[1]) <= a[2]
    in_b = np.hypot(rows - b[0], cols - b[1]) <= b[2]
    return float((in_a & in_b).sum() / (in_a | in_b).sum())


@pytest.mark.parametrize("b", [(10, 10, 5), (12, 11, 5), (10, 10, 3), (14, 10, 3), (30, 30, 4),
                               (10, 17.5, 2.5)])
def test_circle_iou_matches_rasterised_overlap(b):
    a, b = np.array([10.0, 10.0, 5.0]), np.array(b, dtype=float)
    assert R.circle_iou(a, b) == pytest.approx(_rasterised_iou(a, b), abs=0.01)
    assert np.isnan(R.circle_iou(a, [np.nan] * 3))


def test_circle_encloses_cavity_and_myocardium_plus_margin():
    labels = _ring((80, 90), (40.0, 50.0), 10, 16)
    circle = R.circle_of_frame(labels, (2.0, 2.0), margin_mm=4.0)
    np.testing.assert_allclose(circle[:2], [40.0, 50.0], atol=1e-6)
    assert circle[2] == pytest.approx(16.0 + 2.0, abs=0.1)  # 16 px + 4 mm at 2 mm


def test_frames_without_labels_take_the_nearest_circle_moved_by_the_motion():
    labels = np.stack([_ring((60, 60), (30, 30), 6, 10)] * 5)
    labels[[0, 3, 4]] = 0
    motion = np.array([[0, 0], [1, 0], [2, 0], [3, 2], [4, 4]], dtype=np.float32)
    circles = R.propose_slice(labels, motion, (1.5, 1.5), margin_mm=0.0)
    np.testing.assert_allclose(circles[0, :2], [30 - 1, 30])  # from frame 1
    np.testing.assert_allclose(circles[3, :2], [30 + 1, 32])  # from frame 2
    np.testing.assert_allclose(circles[4, :2], [30 + 2, 34])
    assert np.all(circles[:, 2] == circles[1, 2])


def test_a_slice_without_any_lv_has_no_circles():
    circles = R.propose(np.zeros((1, 4, 20, 20), np.uint8), np.zeros((1, 4, 2)), (1.0, 1.0))
    assert np.isnan(circles).all()


def test_corners_in_any_order_give_the_same_circle():
    corners = np.array([[0, 3, 10.0, 20.0], [0, 3, 10.0, 30.0], [0, 3, 20.0, 30.0],
                        [0, 3, 20.0, 20.0]])
    for order in ([0, 1, 2, 3], [2, 0, 3, 1], [3, 2, 1, 0]):
        np.testing.assert_allclose(R.circle_from_corners(corners[order]), [15.0, 25.0, 5.0])


def _slice_with_motion(n=8):
    motion = np.zeros((2, n, 2), dtype=np.float32)
    motion[1] = np.column_stack([np.arange(n), -np.arange(n)])
    return (np.full((2, n, 3), np.nan, dtype=np.float32), np.zeros((2, n), dtype=np.uint8),
            motion)


def test_propagate_from_one_frame_follows_the_motion():
    roi, states, motion = _slice_with_motion()
    roi[1] = (5.0, 5.0, 3.0)  # proposals, overwritten
    roi[1, 2] = (40.0, 50.0, 12.0)
    changed = R.propagate(roi, states, motion, 1, 2)
    assert list(changed) == [0, 1, 3, 4, 5, 6, 7]
    np.testing.assert_allclose(roi[1, changed], R.moved_circle(roi[1, 2], motion[1], 2, changed))
    assert (states[1, changed] == R.PROPAGATED).all()
    assert np.isnan(roi[0]).all()  # other slices untouched


def test_propagate_keeps_reviewed_frames_and_interpolates_between_them():
    roi, states, motion = _slice_with_motion()
    # Reference-frame circles (minus the motion) of the three anchors: 2, 4 (accepted), 6 (edited).
    for t, reference, state in ((4, (10.0, 20.0, 8.0), R.ACCEPTED), (6, (14.0, 24.0, 10.0), R.EDITED),
                                (2, (10.0, 20.0, 8.0), R.PROPOSED)):
        roi[1, t] = np.array(reference) + [*motion[1, t], 0.0]
        states[1, t] = state
    before = roi[1, [4, 6]].copy()
    changed = R.propagate(roi, states, motion, 1, 2)
    assert list(changed) == [0, 1, 3, 5, 7]
    np.testing.assert_array_equal(roi[1, [4, 6]], before)
    assert states[1, 4] == R.ACCEPTED and states[1, 6] == R.EDITED
    expected_reference = {0: (10, 20, 8), 1: (10, 20, 8), 3: (10, 20, 8),  # before 2, between 2 and 4
                          5: (12, 22, 9), 7: (14, 24, 10)}  # between 4 and 6, after 6
    for t, reference in expected_reference.items():
        np.testing.assert_allclose(roi[1, t], np.array(reference) + [*motion[1, t], 0.0], atol=1e-5)
    changed = R.propagate(roi, states, motion, 1, 2, overwrite_reviewed=True)
    assert list(changed) == [0, 1, 3, 4, 5, 6, 7]
    assert states[1, 4] == R.PROPAGATED
    np.testing.assert_allclose(roi[1, 6], [10 + 6, 20 - 6, 8], atol=1e-5)


def test_propagating_a_frame_without_circle_is_a_clear_error():
    with pytest.raises(R.InputError, match="slice 0 frame 1 has no circle"):
        R.propagate(np.full((1, 3, 3), np.nan), np.zeros((1, 3), np.uint8),
                    np.zeros((1, 3, 2)), 0, 1)


def test_roi_step_proposes_circles_close_to_the_truth(analysed_template):
    study = Study.open(analysed_template)
    roi, states, truth = study.read("roi"), study.read("roi_state"), study.read("truth/roi")
    assert np.all(states == R.PROPOSED)
    margin_px = R.DEFAULT_MARGIN_MM / R.mean_spacing(study.pixel_spacing_mm)
    ious = R.circle_iou(roi, truth + [0, 0, margin_px])
    assert np.median(ious) >= 0.9
    assert study.attrs["steps"]["roi"]["parameters"]["margin_mm"] == R.DEFAULT_MARGIN_MM


def test_rerunning_roi_keeps_reviewed_frames(analysed_store):
    study = Study.open(analysed_store, writable=True)
    roi, states = study.read("roi"), study.read("roi_state")
    roi[0, 5] = (10.0, 11.0, 12.0)
    states[0, 5] = R.ACCEPTED
    states[1, 7] = R.EDITED
    R.save_review(study, roi, states)
    assert "2 reviewed kept" in run_step(study, "roi")
    after_roi, after_states = study.read("roi"), study.read("roi_state")
    np.testing.assert_array_equal(after_roi[0, 5], [10.0, 11.0, 12.0])
    assert after_states[0, 5] == R.ACCEPTED and after_states[1, 7] == R.EDITED
    assert (after_states == R.PROPOSED).sum() == after_states.size - 2


def test_export_writes_a_row_per_circle_and_lv_centred_crops(analysed_template, tmp_path, capsys):
    assert main(["export-rois", str(analysed_template), "--out", str(tmp_path / "out"),
                 "--crop-mm", "64", "--crop-spacing-mm", "2"]) == 0
    study = Study.open(analysed_template)
    roi = study.read("roi")
    with open(tmp_path / "out" / "rois.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == int(np.isfinite(roi[..., 2]).sum())
    first = rows[0]
    s, t = int(first["slice"]), int(first["frame"])
    assert float(first["row"]) == pytest.approx(roi[s, t, 0], abs=1e-3)
    assert float(first["radius_mm"]) == pytest.approx(
        roi[s, t, 2] * R.mean_spacing(study.pixel_spacing_mm), abs=1e-3)
    assert float(first["time_s"]) == pytest.approx(study.frame_times_s[s, t], abs=1e-4)
    assert first["state"] == "proposed" and first["study"] == "p"
    crops = zarr.open_array(tmp_path / "out" / "crops.zarr", mode="r")
    assert crops.shape == (*study.shape[:2], 32, 32)
    assert crops.attrs["crop_mm"] == 64.0


def test_crops_are_centred_on_the_circle_at_the_requested_spacing(tmp_path):
    spacing = (1.6, 1.6)
    centre = (37.3, 52.8)  # px
    rows, cols = np.ogrid[:80, :96]
    disc = np.hypot((rows - centre[0]) * spacing[0], (cols - centre[1]) * spacing[1]) <= 12.0
    image = np.where(disc, 1000, 10).astype(np.uint16)[None, None].repeat(2, axis=1)
    study = Study.create(tmp_path / "d.zarr", image, pixel_spacing_mm=spacing,
                         slice_thickness_mm=8.0, frame_times_s=[[0.0, 1.0]],
                         slice_positions_mm=[0.0], source={"importer": "test"})
    roi = np.array([[[*centre, 10.0], [np.nan] * 3]], dtype=np.float32)
    study.write("roi", roi)
    export_rois(study, tmp_path / "out", crop_mm=48.0, spacing_mm=0.5)
    crops = zarr.open_array(tmp_path / "out" / "crops.zarr", mode="r")[...]
    assert crops.shape == (1, 2, 96, 96)
    assert np.isnan(crops[0, 1]).all()  # no circle, no crop
    bright = np.argwhere(crops[0, 0] > 500)
    np.testing.assert_allclose(bright.mean(axis=0), [47.5, 47.5], atol=0.3)
    assert len(bright) * 0.5**2 == pytest.approx(np.pi * 12.0**2, rel=0.03)


def test_export_without_circles_is_one_line(tmp_path, capsys):
    path = tmp_path / "p.zarr"
    write_phantom(path, seed=32, n_dynamics=10)
    assert main(["export-rois", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "run the roi step first" in capsys.readouterr().err
    assert not (tmp_path / "out" / "crops.zarr").exists()
