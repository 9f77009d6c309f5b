"""The seeded stress perfusion phantom: determinism, realism checks and truth consistency."""

import math
import time

import numpy as np
import pytest
from scipy import ndimage, optimize

from napari_perfroi import aha
from napari_perfroi.errors import InputError
from napari_perfroi.phantom import (
    generate_phantom,
    sample_params,
    write_phantom,
)
from napari_perfroi.study import Study

SEED = 7
LV, MYO, RV = 1, 2, 3


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(SEED)


def region_curve(phantom, k, label):
    """Mean image intensity of one truth label over the frames of slice k."""
    image, labels = phantom.image[k].astype(float), phantom.truth["labels"][k]
    return np.array([image[t][labels[t] == label].mean() for t in range(image.shape[0])])


def test_same_seed_same_study_and_different_seeds_differ(phantom):
    again = generate_phantom(SEED)
    np.testing.assert_array_equal(again.image, phantom.image)
    for name, array in phantom.truth.items():
        np.testing.assert_array_equal(again.truth[name], array)
    assert again.attrs == phantom.attrs
    other = generate_phantom(SEED + 1)
    assert other.image.shape != phantom.image.shape or (other.image != phantom.image).any()


def test_shapes_dtypes_and_attrs(phantom):
    image = phantom.image
    n_s, n_t, n_y, n_x = image.shape
    assert image.dtype == np.uint16 and n_s == 3
    assert 50 <= n_t <= 73 and n_y != n_x and min(n_y, n_x) >= 144 and max(n_y, n_x) <= 224
    attrs = phantom.attrs
    assert set(attrs) == {
        "pixel_spacing_mm", "slice_thickness_mm", "frame_times_s", "slice_positions_mm",
        "slice_levels", "reference_frame", "hematocrit", "source", "aif_series",
    }
    assert 1.8 <= attrs["pixel_spacing_mm"][0] <= 2.5
    assert 8 <= attrs["slice_thickness_mm"] <= 10
    assert attrs["slice_levels"] == ["basal", "mid", "apical"]
    times = np.asarray(attrs["frame_times_s"])
    assert times.shape == (n_s, n_t) and times.min() == 0.0
    assert (np.diff(times, axis=1) > 0.4).all() and (np.diff(times, axis=1) < 5).all()
    step = np.diff(attrs["slice_positions_mm"])  # along the DICOM normal, either sign
    assert (np.abs(step) > attrs["slice_thickness_mm"]).all()  # a gap between slices
    assert (np.sign(step) == np.sign(step[0])).all()
    assert all(phantom.params.n_pd_frames <= r < n_t for r in attrs["reference_frame"])

    truth = phantom.truth
    expected = {
        "labels": (np.uint8, (n_s, n_t, n_y, n_x)),
        "motion": (np.float32, (n_s, n_t, 2)),
        "roi": (np.float32, (n_s, n_t, 3)),
        "roi_state": (np.uint8, (n_s, n_t)),
        "mbf": (np.float32, (n_s, n_y, n_x)),
        "aha": (np.uint8, (n_s, n_y, n_x)),
    }
    assert {name: (a.dtype, a.shape) for name, a in truth.items()} == expected
    assert (truth["roi_state"] == 4).all()
    assert set(np.unique(truth["labels"])) == {0, 1, 2, 3}


def test_truth_maps_follow_the_reference_frame_myocardium(phantom):
    truth = phantom.truth
    for k, level in enumerate(phantom.attrs["slice_levels"]):
        myocardium = truth["labels"][k, phantom.attrs["reference_frame"][k]] == MYO
        np.testing.assert_array_equal(truth["aha"][k] > 0, myocardium)
        assert set(np.unique(truth["aha"][k][myocardium])) == set(aha.LEVEL_SEGMENTS[level])
        assert np.isnan(truth["mbf"][k][~myocardium]).all()
        segment_mbf = np.asarray(phantom.extra["truth"]["segment_mbf"])
        np.testing.assert_allclose(
            truth["mbf"][k][myocardium], segment_mbf[truth["aha"][k][myocardium] - 1], rtol=1e-6
        )


def test_lv_blood_brighter_than_myocardium_at_lv_peak(phantom):
    n_pd = phantom.params.n_pd_frames
    for k in range(3):
        lv, myo = region_curve(phantom, k, LV), region_curve(phantom, k, MYO)
        peak = n_pd + int(np.argmax(lv[n_pd:]))
        assert lv[peak] > 1.5 * myo[peak]
        assert myo[peak:].max() > 1.5 * myo[n_pd : n_pd + 2].mean()  # myocardium enhances


def test_rv_peaks_before_lv(phantom):
    n_pd = phantom.params.n_pd_frames
    times = np.asarray(phantom.attrs["frame_times_s"])
    for k in range(3):
        rv_peak = times[k, n_pd + np.argmax(region_curve(phantom, k, RV)[n_pd:])]
        lv_peak = times[k, n_pd + np.argmax(region_curve(phantom, k, LV)[n_pd:])]
        assert 0.5 < lv_peak - rv_peak < 10


@pytest.mark.parametrize("defect", ["lad", "rca", "lcx"])
def test_defect_territory_has_lower_flow_and_enhancement(defect):
    phantom = generate_phantom(3, defect=defect)
    mbf = np.asarray(phantom.extra["truth"]["segment_mbf"])
    territory = np.isin(np.arange(1, 17), aha.TERRITORIES[defect])
    assert phantom.extra["truth"]["defect"] == defect
    assert mbf[territory].max() <= 1.5 and mbf[~territory].min() >= 2.0
    for k in range(3):
        reference = phantom.attrs["reference_frame"][k]
        segments = phantom.truth["aha"][k]
        frame = phantom.image[k, reference].astype(float)
        ischaemic = np.isin(segments, aha.TERRITORIES[defect])
        remote = (segments > 0) & ~ischaemic
        assert frame[ischaemic].mean() < frame[remote].mean()


def test_no_defect_and_seeded_choice():
    healthy = generate_phantom(3, defect="none")
    assert healthy.extra["truth"]["defect"] == "none"
    assert min(healthy.extra["truth"]["segment_mbf"]) >= 2.0
    chosen = {sample_params(np.random.default_rng(seed)).defect for seed in range(30)}
    assert chosen == {"lad", "rca", "lcx"}


def test_truth_motion_matches_the_labels(phantom):
    labels, motion = phantom.truth["labels"], phantom.truth["motion"]
    for k, reference in enumerate(phantom.attrs["reference_frame"]):
        np.testing.assert_array_equal(motion[k, reference], [0, 0])
        centroids = np.array(
            [ndimage.center_of_mass(np.isin(frame, (LV, MYO))) for frame in labels[k]]
        )
        np.testing.assert_allclose(centroids - centroids[reference], motion[k], atol=0.5)
    assert np.ptp(motion, axis=1).max() > 0.5  # the heart does move


def test_truth_motion_matches_the_image():
    # Contrast- and noise-free, so frames differ only by the motion.
    phantom = generate_phantom(
        3, lv_peak_mmol=1e-9, snr=1e9, n_pd_frames=0, texture=0.0, through_plane_scale=0.0,
        breathing_amplitude_mm=10.0,
    )
    k = 1
    reference = phantom.attrs["reference_frame"][k]
    image = phantom.image[k].astype(float)
    motion = phantom.truth["motion"][k]
    moving = np.argsort(-np.abs(motion).sum(axis=1))[:3]
    for t in moving:
        inside = ndimage.binary_erosion(np.isin(phantom.truth["labels"][k, t], (LV, MYO)))

        def mismatch(extra, t=t, inside=inside):
            shifted = ndimage.shift(image[reference], motion[t] + extra, order=3, mode="nearest")
            return float(((image[t] - shifted)[inside] ** 2).mean())

        best = optimize.minimize(mismatch, [0.0, 0.0], method="Nelder-Mead").x
        assert np.abs(motion[t]).max() > 1.0
        assert np.abs(best).max() < 0.35, f"frame {t}: truth motion off by {best} px"


def test_labels_per_frame_are_consistent_with_roi(phantom):
    labels, roi = phantom.truth["labels"], phantom.truth["roi"]
    for k in range(3):
        for t in range(0, labels.shape[1], 5):
            rows, cols = np.nonzero(np.isin(labels[k, t], (LV, MYO)))
            r0, c0, radius = roi[k, t]
            assert (r0, c0) == pytest.approx((rows.mean(), cols.mean()), abs=1e-3)
            distance = np.hypot(rows - r0, cols - c0)
            assert distance.max() <= radius + 1e-3
            myo_rows, myo_cols = np.nonzero(labels[k, t] == MYO)
            assert np.hypot(myo_rows - r0, myo_cols - c0).max() == pytest.approx(radius, abs=1e-3)
            rv_rows, rv_cols = np.nonzero(labels[k, t] == RV)
            assert rv_rows.size > 0 and np.hypot(rv_rows - r0, rv_cols - c0).mean() > radius / 2


def test_scalar_truth(phantom):
    truth = phantom.extra["truth"]
    n_t = phantom.image.shape[1]
    assert truth["seed"] == SEED
    assert len(truth["segment_mbf"]) == 16
    assert truth["global_mbf"] == pytest.approx(np.mean(truth["segment_mbf"]))
    aif, blood = np.asarray(truth["aif"]), np.asarray(truth["aif_blood"])
    assert aif.shape == blood.shape == (n_t,)
    np.testing.assert_allclose(aif, blood / (1 - truth["hematocrit"]))
    assert 2.0 < blood.max() <= 8.0
    assert truth["hematocrit"] == phantom.attrs["hematocrit"]
    assert len(truth["rv_insertion_deg"]) == 3
    for anterior, inferior in truth["rv_insertion_deg"]:
        separation = abs((inferior - anterior + 180) % 360 - 180)
        assert 60 < separation < 170


@pytest.mark.parametrize("mirrored", [False, True])
def test_dicom_geometry_matches_the_anatomy(mirrored):
    phantom = generate_phantom(SEED, mirrored=mirrored)
    iop = np.asarray(phantom.extra["image_orientation_patient"])
    row_dir, col_dir = iop[:3], iop[3:]
    np.testing.assert_allclose(
        [row_dir @ row_dir, col_dir @ col_dir, row_dir @ col_dir], [1, 1, 0], atol=1e-5
    )  # direction cosines are rounded to 6 decimals, as scanners write them
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    positions = np.asarray(phantom.extra["image_position_patient"]) @ normal
    np.testing.assert_allclose(positions, phantom.attrs["slice_positions_mm"], atol=1e-6)
    apex_ward = positions * np.sign(normal @ [1.0, -1.0, -1.0])  # the importer's rule
    assert (np.diff(apex_ward) > 0).all()  # base -> apex
    # Patient anterior projected into the image, as a display angle.
    anterior_lps = np.array([0.0, -1.0, 0.0])
    anterior_deg = math.degrees(math.atan2(-(anterior_lps @ col_dir), anterior_lps @ row_dir))
    for ant, inf in phantom.extra["truth"]["rv_insertion_deg"]:
        def gap(a):
            return abs((a - anterior_deg + 180) % 360 - 180)

        assert gap(ant) < gap(inf)


@pytest.mark.parametrize("mirrored", [False, True])
def test_segment_numbering_runs_from_anterior_through_septum(mirrored):
    phantom = generate_phantom(SEED, mirrored=mirrored)
    truth = phantom.extra["truth"]
    ant, inf = truth["rv_insertion_deg"][0]
    septal = aha.septal_bisector_deg(ant, inf)
    rows, cols = np.nonzero(phantom.truth["aha"][0] == 2)  # anteroseptal
    theta = aha.angle_deg(rows, cols, truth["lv_centre_px"][0])
    # Segment 2 lies between the anterior insertion and the septal bisector.
    span = abs((septal - ant + 180) % 360 - 180)
    assert (np.abs((theta - ant + 180) % 360 - 180) <= span + 1).all()
    assert (np.abs((theta - septal + 180) % 360 - 180) <= span + 1).all()


def test_overrides_for_another_site():
    phantom = generate_phantom(5, pixel_spacing_mm=1.2, matrix=(256, 256), n_dynamics=40)
    assert phantom.image.shape[1:] == (40 + phantom.params.n_pd_frames, 256, 256)
    assert phantom.attrs["pixel_spacing_mm"] == [1.2, 1.2]
    labels = phantom.truth["labels"]
    assert (labels[:, :, 0, :] == 0).all() and (labels[:, :, -1, :] == 0).all()  # heart in view
    base = sample_params(np.random.default_rng(5))
    changed = sample_params(np.random.default_rng(5), snr=50.0)
    assert changed.snr == 50.0 and changed.lv_radius_mm == base.lv_radius_mm


def test_parameter_ranges_over_seeds():
    params = [sample_params(np.random.default_rng(seed)) for seed in range(40)]
    assert all(1.8 <= p.pixel_spacing_mm <= 2.5 for p in params)
    assert all(144 <= min(p.matrix) and max(p.matrix) <= 224 for p in params)
    assert all(50 <= p.n_dynamics <= 70 and 0 <= p.n_pd_frames <= 3 for p in params)
    assert all(0.5 <= p.rr_interval_s <= 1.1 for p in params)
    assert {p.n_pd_frames > 0 for p in params} == {True, False}
    assert {p.mirrored for p in params} == {True, False}


def test_write_phantom_round_trip(tmp_path):
    path = tmp_path / "phantom.zarr"
    study = write_phantom(path, 11, defect="rca")
    reopened = Study.open(path)
    expected = generate_phantom(11, defect="rca")
    np.testing.assert_array_equal(reopened.read("image"), expected.image)
    for name, array in expected.truth.items():
        np.testing.assert_array_equal(reopened.read(f"truth/{name}"), array)
    attrs = reopened.attrs
    assert attrs["truth"]["defect"] == "rca" and attrs["truth"]["seed"] == 11
    assert attrs["frame_times_s"] == expected.attrs["frame_times_s"]
    assert len(attrs["image_position_patient"]) == 3
    assert len(attrs["image_orientation_patient"]) == 6
    assert attrs["truth"]["parameters"]["defect"] == "rca"
    assert study.path == path
    with pytest.raises(InputError):
        write_phantom(path, 11)  # exists, no overwrite


def test_bad_input_is_rejected():
    with pytest.raises(InputError, match="defect"):
        generate_phantom(1, defect="rcx")
    with pytest.raises(InputError, match="seed"):
        generate_phantom(-1)
    with pytest.raises(InputError, match="parameter"):
        generate_phantom(1, not_a_parameter=3)


def test_generation_time():
    start = time.perf_counter()
    phantom = generate_phantom(21)
    elapsed = time.perf_counter() - start
    print(f"phantom {phantom.image.shape} generated in {elapsed:.2f} s")
    assert elapsed < 15.0
