"""The seeded stress perfusion phantom: determinism, realism checks and truth consistency."""

import math
import time

import numpy as np
import pytest
from scipy import ndimage, optimize, signal

from napari_perfroi import aha
from napari_perfroi.cli import main
from napari_perfroi.errors import InputError
from napari_perfroi.phantom import (
    HELD_OUT_SETTINGS,
    generate_phantom,
    sample_params,
    scanner_like_overrides,
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


# ----------------------------------------------------------------------------- scanner-like
SCANNER_SEED = 116  # its draws include trabeculae, dark rim, inflow, voids, wrap, blur, R = 3


def scanner_overrides(seed, held_out=False):
    return scanner_like_overrides(np.random.default_rng([seed, 2]), held_out=held_out)


@pytest.fixture(scope="module")
def scanner():
    return generate_phantom(SCANNER_SEED, **scanner_overrides(SCANNER_SEED))


def quick(seed=3, **overrides):
    """A short study (few frames, no PD frames) for effect checks."""
    return generate_phantom(seed, **{"n_dynamics": 25, "n_pd_frames": 0, **overrides})


def lv_peak_frame(phantom, k):
    return int(np.argmax(region_curve(phantom, k, LV)))


def test_scanner_like_truth_matches_the_geometry(scanner):
    overrides = scanner_overrides(SCANNER_SEED)
    assert overrides["phase_wrap"] and overrides["dark_rim_depth"] > 0
    assert overrides["trabecular_depth_mm"] > 0 and overrides["flow_voids"] > 0
    test_truth_maps_follow_the_reference_frame_myocardium(scanner)
    test_truth_motion_matches_the_labels(scanner)
    test_labels_per_frame_are_consistent_with_roi(scanner)
    test_lv_blood_brighter_than_myocardium_at_lv_peak(scanner)
    test_rv_peaks_before_lv(scanner)
    assert scanner.image.shape[2:] == overrides["matrix"]


def test_scanner_like_draws_are_seeded_varied_and_in_range():
    assert scanner_overrides(5) == scanner_overrides(5)
    draws = [scanner_overrides(seed) for seed in range(200)]
    for name in ("trabecular_depth_mm", "dark_rim_depth", "blood_inflow", "motion_blur",
                 "g_factor_ripple", "injection_duration_s", "bolus_dispersion_s",
                 "precontrast_blood_ratio", "heart_offset", "epicardial_fat_mm"):
        present = sum(name in d for d in draws)
        assert 20 < present < 180, name  # on in some studies, off in others
    assert {d.get("sequence", "gre") for d in draws} == {"gre", "ssfp"}
    assert {d.get("stored_bits", 16) for d in draws} == {12, 16}
    assert {d["phase_wrap"] for d in draws} == {True, False}
    spacing = [d["pixel_spacing_mm"] for d in draws]
    assert 1.2 <= min(spacing) < 1.4 and 2.6 < max(spacing) < 2.8
    assert any(min(d["matrix"]) % 8 for d in draws) and any(d["matrix"][0] % 8 == 0 for d in draws)
    frames = [d["n_dynamics"] for d in draws]
    assert min(frames) < 45 and max(frames) > 85 and 40 <= min(frames) and max(frames) <= 90
    peaks = [d.get("intensity_peak", 1000.0) for d in draws]
    assert min(peaks) < 200 and max(peaks) > 10000
    assert max(d["through_plane_scale"] for d in draws) > 0.1
    # Every draw builds a valid parameter set.
    for seed, d in enumerate(draws[:20]):
        sample_params(np.random.default_rng(seed), **d)


def test_held_out_settings_are_never_drawn_for_training():
    training = [scanner_overrides(seed) for seed in range(300)]
    held_out = [scanner_overrides(seed, held_out=True) for seed in range(300)]

    def held_out_settings(d):
        found = {
            "sequence": d.get("sequence") == "epi",
            "pixel_spacing_mm": d["pixel_spacing_mm"] >= 2.8,
            "second_bolus_fraction": d.get("second_bolus_fraction", 0.0) > 0,
            "intensity_offset": d.get("intensity_offset", 0.0) >= 300,
        }
        assert set(found) == set(HELD_OUT_SETTINGS)
        return {name for name, on in found.items() if on}

    assert all(not held_out_settings(d) for d in training)
    assert all(held_out_settings(d) for d in held_out)
    assert set().union(*map(held_out_settings, held_out)) == set(HELD_OUT_SETTINGS)
    assert max(d.get("intensity_offset", 0.0) for d in training) <= 100


def test_wrap_folds_the_body_in_from_the_opposite_edge():
    # A 200 mm phase field of view across a body wider than that.
    settings = dict(pixel_spacing_mm=2.0, matrix=(100, 180), phase_axis=0, rotation_deg=0.0,
                    snr=1e9, heart_offset=(0.0, 0.0))
    plain, wrapped = quick(phase_wrap=False, **settings), quick(phase_wrap=True, **settings)
    edges = np.r_[0:4, 96:100]
    assert wrapped.image[:, :, edges].mean() > 1.5 * plain.image[:, :, edges].mean() + 5
    np.testing.assert_array_equal(wrapped.truth["labels"], plain.truth["labels"])


def test_dark_rim_lowers_the_blood_at_the_endocardium_at_lv_peak():
    plain = quick(snr=1e9)
    rim = quick(snr=1e9, dark_rim_px=1.5, dark_rim_depth=0.5)
    np.testing.assert_array_equal(rim.truth["labels"], plain.truth["labels"])
    for k in range(3):
        t = lv_peak_frame(plain, k)
        labels = plain.truth["labels"][k, t]
        band = (labels == LV) & ndimage.binary_dilation(labels == MYO)
        centre = ndimage.binary_erosion(labels == LV, iterations=4)
        before, after = plain.image[k, t].astype(float), rim.image[k, t].astype(float)
        assert after[band].mean() < 0.93 * before[band].mean()
        assert after[centre].mean() == pytest.approx(before[centre].mean(), rel=0.01)
        first = 0  # before the bolus: no rim
        assert rim.image[k, first][band].mean() == pytest.approx(
            plain.image[k, first][band].mean(), rel=0.01
        )


def test_trabeculae_darken_the_lv_blood_label_but_keep_the_labels():
    plain = quick(snr=1e9)
    trabecular = quick(snr=1e9, trabecular_depth_mm=3.0)
    np.testing.assert_array_equal(trabecular.truth["labels"], plain.truth["labels"])
    t = lv_peak_frame(plain, 0)
    assert region_curve(trabecular, 0, LV)[t] < 0.97 * region_curve(plain, 0, LV)[t]


def test_inflow_and_voids_make_the_blood_pool_uneven_over_space_and_time():
    plain = quick(snr=1e9, breathing_amplitude_mm=0.0)
    flowing = quick(snr=1e9, breathing_amplitude_mm=0.0, blood_inflow=0.3, flow_voids=4)
    k = 1
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    inside = ndimage.binary_erosion(plain.truth["labels"][k] == LV, in_plane, iterations=2)

    def spread(phantom):
        return np.array([phantom.image[k, t][inside[t]].std() for t in range(inside.shape[0])])

    assert np.median(spread(flowing)) > 1.5 * np.median(spread(plain)) + 1
    relative = flowing.image[k].astype(float) / np.maximum(plain.image[k], 1)
    assert np.std([relative[t][inside[t]].mean() for t in range(inside.shape[0])]) > 0.01


def test_sequences_change_the_contrast_noise_and_ghost():
    settings = dict(snr=1e9, seed=4)
    gre, ssfp = quick(**settings), quick(sequence="ssfp", precontrast_blood_ratio=1.4, **settings)
    for phantom, low, high in ((gre, 0.0, 0.95), (ssfp, 1.1, 1.5)):
        ratio = region_curve(phantom, 1, LV)[0] / region_curve(phantom, 1, MYO)[0]
        assert low < ratio < high
    epi = quick(sequence="epi", ghost_fraction=0.05, readout_blur_px=0.01, **settings)
    axis = 2 + epi.params.phase_axis
    image = gre.image.astype(float)
    ghost = np.roll(image, image.shape[axis] // 2, axis=axis)
    dark = image < 0.05 * image.max()
    excess = epi.image.astype(float)[dark] - image[dark]
    assert np.corrcoef(excess, ghost[dark])[0, 1] > 0.7
    noisy_gre, noisy_epi = quick(seed=4), quick(seed=4, sequence="epi")
    noise = [p.extra["truth"]["signal_model"]["noise_sd"] for p in (noisy_gre, noisy_epi)]
    assert noise[1] == pytest.approx(noise[0] / 0.7)


def test_g_factor_map_raises_the_noise_in_bands_along_the_phase_axis():
    settings = dict(seed=5, g_factor=0.0, n_dynamics=12, phase_axis=1)
    clean = quick(snr=1e9, **settings)
    line = np.arange(clean.image.shape[3])
    bands = np.cos(np.pi * 3 * (line / line.size - 0.5)) ** 2
    for ripple, low, high in ((1.5, 0.8, 1.0), (0.0, -1.0, 0.4)):
        noisy = quick(snr=5.0, acceleration=3, g_factor_ripple=ripple, **settings)
        residual = noisy.image.astype(float) - clean.image
        profile = residual.std(axis=(0, 1, 2))
        assert low < np.corrcoef(profile, bands)[0, 1] < high


def half_width_s(phantom):
    aif = np.asarray(phantom.extra["truth"]["aif_blood"])
    times = np.asarray(phantom.attrs["frame_times_s"])[0]
    return np.ptp(times[aif > aif.max() / 2])


def test_bolus_shapes_and_the_truth_aif_follow_the_curves_used():
    settings = dict(n_dynamics=60, rr_interval_s=0.8, baseline_s=5.0, lv_time_to_peak_s=3.0,
                    bolus_alpha=3.0, recirculation_fraction=0.1, snr=1e9)
    single = quick(**settings)
    double = quick(second_bolus_fraction=0.7, second_bolus_delay_s=10.0, **settings)
    slow = quick(injection_duration_s=10.0, **settings)
    poor = quick(bolus_dispersion_s=4.0, lv_peak_mmol=2.0, **settings)

    def n_peaks(phantom):
        aif = np.asarray(phantom.extra["truth"]["aif_blood"])
        return len(signal.find_peaks(aif, prominence=0.25 * aif.max())[0])

    assert n_peaks(single) == 1 and n_peaks(double) == 2
    assert half_width_s(slow) > 1.5 * half_width_s(single)
    assert half_width_s(poor) > 1.5 * half_width_s(single)
    assert max(poor.extra["truth"]["aif_blood"]) == pytest.approx(2.0, rel=0.02)
    for phantom in (single, double, slow, poor):  # the image shows the truth AIF
        truth = np.asarray(phantom.extra["truth"]["aif_blood"])
        assert abs(lv_peak_frame(phantom, 0) - int(np.argmax(truth))) <= 1


def test_motion_blur_softens_the_moving_heart_but_keeps_the_labels():
    settings = dict(snr=1e9, breathing_amplitude_mm=10.0, jitter_mm=0.0)
    sharp, blurred = quick(**settings), quick(motion_blur=1.0, **settings)
    np.testing.assert_array_equal(blurred.truth["labels"], sharp.truth["labels"])
    k = 1
    speed = np.abs(np.gradient(sharp.truth["motion"][k], axis=0)).sum(axis=1)
    t = int(np.argmax(speed))
    assert speed[t] > 1.0
    heart = ndimage.binary_dilation(np.isin(sharp.truth["labels"][k, t], (LV, MYO)), iterations=3)

    def edges(phantom):
        return np.hypot(*np.gradient(phantom.image[k, t].astype(float)))[heart].mean()

    assert edges(blurred) < 0.97 * edges(sharp)


def test_vendor_scales_and_offsets_change_the_stored_range():
    twelve_bit = quick(stored_bits=12, intensity_peak=3500.0)
    assert twelve_bit.image.max() <= 4095 and twelve_bit.aif_image.max() <= 4095
    low = quick(intensity_peak=150.0)
    assert 100 < low.image.max() < 600
    large = quick(intensity_peak=20000.0)
    assert large.image.max() > 15000
    offset = quick(intensity_offset=500.0)
    assert offset.image.min() >= 500 and offset.aif_image.min() >= 500
    plain = quick()
    assert offset.image.astype(int).mean() - plain.image.mean() == pytest.approx(500, abs=1)


def test_cli_scanner_like_is_seeded_and_set_wins(tmp_path):
    dest = tmp_path / "s.zarr"
    assert main(["phantom", str(dest), "--seed", "9", "--scanner-like", "--held-out",
                 "--set", "n_dynamics=30"]) == 0
    parameters = Study.open(dest).attrs["truth"]["parameters"]
    expected = scanner_overrides(9, held_out=True)
    assert parameters["n_dynamics"] == 30 and parameters["matrix"] == list(expected["matrix"])
    assert parameters["pixel_spacing_mm"] == expected["pixel_spacing_mm"]


def test_scanner_like_generation_time():
    overrides = scanner_overrides(21)
    start = time.perf_counter()
    phantom = generate_phantom(21, **overrides)
    elapsed = time.perf_counter() - start
    print(f"scanner-like phantom {phantom.image.shape} generated in {elapsed:.2f} s")
    assert elapsed < 30.0
