"""The phantom's acquisitions (dual-sequence, single-bolus, dual-bolus), rest and stress
states of one patient, and the scanner-like saturation of the blood signal."""

import dataclasses
import math

import numpy as np
import pytest
from scipy import ndimage

from napari_perfroi import aha
from napari_perfroi.cli import main
from napari_perfroi.errors import InputError
from napari_perfroi.flow import signal_to_concentration
from napari_perfroi.phantom import (
    _concentration_curves,
    _signal_of,
    generate_phantom,
    sample_params,
)
from napari_perfroi.study import LV_BLOOD, MYOCARDIUM, Study

SEED = 7
SHORT = {"n_dynamics": 30}
# Noise-free and still: the LV blood pool signal is the readout's, up to a constant gain.
STILL = {"snr": 1e6, "breathing_amplitude_mm": 0.0, "drift_mm": (0.0, 0.0), "jitter_mm": 0.0,
         "n_pd_frames": 0, "phase_resolution": 1.0}


@pytest.fixture(scope="module")
def acquisitions():
    return {kind: generate_phantom(SEED, "lad", acquisition=kind, **SHORT)
            for kind in ("dual-sequence", "single-bolus", "dual-bolus")}


def blood_and_times(phantom):
    """Truth LV blood concentration and the basal slice's frame times."""
    return (np.asarray(phantom.extra["truth"]["aif_blood"]),
            np.asarray(phantom.attrs["frame_times_s"][0]))


# ----------------------------------------------------------------------------- acquisitions
def test_only_the_dual_sequence_has_an_aif_series(acquisitions):
    for kind, phantom in acquisitions.items():
        assert phantom.extra["truth"]["acquisition"] == kind
        assert (phantom.aif_image is not None) == (kind == "dual-sequence")
        assert ("aif_series" in phantom.attrs) == (kind == "dual-sequence")
    # Without a pre-bolus the main series is the same acquisition.
    np.testing.assert_array_equal(acquisitions["single-bolus"].image,
                                  acquisitions["dual-sequence"].image)


def test_aif_series_flag_is_shorthand_for_the_acquisition():
    assert sample_params(np.random.default_rng(1), aif_series=False).acquisition == "single-bolus"
    assert sample_params(np.random.default_rng(1), aif_series=True).acquisition == "dual-sequence"
    assert not sample_params(np.random.default_rng(1), aif_series=False,
                             acquisition="dual-bolus").aif_series
    with pytest.raises(InputError, match="aif_series"):
        sample_params(np.random.default_rng(1), aif_series=True, acquisition="single-bolus")
    with pytest.raises(InputError, match="acquisition"):
        generate_phantom(1, acquisition="triple-bolus")


def test_dual_bolus_pre_bolus_is_a_diluted_copy_leading_the_main_bolus(acquisitions):
    phantom = acquisitions["dual-bolus"]
    truth, p = phantom.extra["truth"], phantom.params
    single_blood, single_times = blood_and_times(acquisitions["single-bolus"])
    blood, times = blood_and_times(phantom)
    ratio, lead = truth["prebolus_dose_ratio"], truth["prebolus_lead_s"]
    assert 8.0 <= ratio <= 12.0 and 18.0 <= lead <= 28.0
    single_foot = acquisitions["single-bolus"].extra["truth"]["main_bolus_foot_s"]
    foot = truth["main_bolus_foot_s"]
    assert foot == pytest.approx(single_foot + lead, abs=1e-3)

    # Extra frames hold the pre-bolus: the main bolus keeps its baseline and its frames.
    assert blood.size > single_blood.size
    assert abs(np.count_nonzero(times >= foot) - np.count_nonzero(single_times >= single_foot)) <= 3
    interval = np.median(np.diff(single_times))
    before = times < foot
    pre_peak = blood[before].max()
    assert pre_peak == pytest.approx(blood[~before].max() / ratio, rel=0.1)
    first_rise = times[np.flatnonzero(blood > 1e-6)[0]]
    assert 0.0 < first_rise - (foot - lead) <= 2 * interval
    assert blood[~before].max() == pytest.approx(single_blood.max(), rel=0.05)

    # The myocardium enhances with the pre-bolus too.
    labels = phantom.truth["labels"][0]
    myocardium = np.array([frame[labels[t] == MYOCARDIUM].mean()
                           for t, frame in enumerate(phantom.image[0].astype(float))])
    baseline = myocardium[p.n_pd_frames : p.n_pd_frames + 3].mean()
    assert myocardium[before].max() > 1.1 * baseline


def test_every_tissue_sees_the_sum_of_both_boluses():
    """The kinetics are linear: dual-bolus curves = main bolus alone + pre-bolus / ratio."""
    p = sample_params(np.random.default_rng(SEED), n_pd_frames=0, tissue_model="2cxm")
    lead, ratio = p.prebolus_lead_s, p.prebolus_dose_ratio
    times = np.arange(0.0, 80.0, 0.7)[None]
    dual = _concentration_curves(dataclasses.replace(p, acquisition="dual-bolus"), times)
    main_alone = _concentration_curves(
        dataclasses.replace(p, acquisition="single-bolus", baseline_s=p.baseline_s + lead), times)
    pre_alone = _concentration_curves(dataclasses.replace(p, acquisition="single-bolus"), times)
    for name in ("lv", "rv", "segments", "liver", "muscle"):
        np.testing.assert_allclose(dual[name], main_alone[name] + pre_alone[name] / ratio,
                                   rtol=1e-4, atol=1e-9, err_msg=name)


# ----------------------------------------------------------------------------- rest
def test_rest_and_stress_image_the_same_heart(acquisitions):
    stress = acquisitions["dual-sequence"]
    rest = generate_phantom(SEED, "lad", state="rest", **SHORT)
    for k in range(3):
        np.testing.assert_array_equal(
            rest.truth["labels"][k, rest.attrs["reference_frame"][k]],
            stress.truth["labels"][k, stress.attrs["reference_frame"][k]],
        )
    np.testing.assert_array_equal(rest.truth["aha"], stress.truth["aha"])
    assert rest.extra["image_orientation_patient"] == stress.extra["image_orientation_patient"]
    assert rest.extra["truth"]["lv_centre_px"] == stress.extra["truth"]["lv_centre_px"]
    for field in dataclasses.fields(stress.params):
        if field.name != "state":
            assert getattr(rest.params, field.name) == getattr(stress.params, field.name)

    truth = rest.extra["truth"]
    assert truth["state"] == "rest" and rest.extra["perfusion_state"] == "rest"
    assert stress.extra["truth"]["state"] == "stress"
    assert "rest perfusion" in rest.attrs["source"]["description"]
    np.testing.assert_allclose(truth["segment_mbf"], rest.params.rest_segment_mbf, rtol=1e-12)
    myocardium = rest.truth["aha"] > 0
    np.testing.assert_allclose(
        rest.truth["mbf"][myocardium],
        np.asarray(rest.params.rest_segment_mbf)[rest.truth["aha"][myocardium] - 1], rtol=1e-6)
    # A slower heart: longer frame intervals, at most 1.3 s per beat on average.
    rest_interval = np.median(np.diff(rest.attrs["frame_times_s"][0]))
    stress_interval = np.median(np.diff(stress.attrs["frame_times_s"][0]))
    assert rest_interval > 1.1 * stress_interval
    assert rest.params.imaged_rr_interval_s <= 1.3


def test_rest_flows_are_normal_preserved_in_the_defect_and_leave_a_reserve():
    params = [sample_params(np.random.default_rng(seed), state="rest") for seed in range(60)]
    for p in params:
        rest, stress = np.asarray(p.rest_segment_mbf), np.asarray(p.segment_mbf)
        territory = np.isin(np.arange(1, 17), aha.TERRITORIES[p.defect])
        assert 0.5 <= rest.min() and rest.max() <= 1.3
        assert 0.6 - 0.05 <= rest[~territory].mean() <= 1.2 + 0.05
        assert (stress[~territory] / rest[~territory]).min() > 1.5  # perfusion reserve
        assert 0.75 <= rest[territory].mean() / rest[~territory].mean() <= 1.1
        assert p.imaged_segment_mbf == p.rest_segment_mbf
        factor = p.imaged_rr_interval_s / p.rr_interval_s
        assert p.imaged_rr_interval_s == pytest.approx(1.3) or 1.15 <= factor <= 1.5
    assert np.mean([np.mean(p.rest_segment_mbf) for p in params]) == pytest.approx(0.9, abs=0.1)


# ----------------------------------------------------------------------------- readout
def read_blood(p, signal, baseline):
    """The flow step's ideal saturation-recovery conversion with the nominal TS, true T1."""
    return signal_to_concentration(signal, baseline, p.t1_s["blood"], p.saturation_time_s,
                                   p.relaxivity_per_mm_s)


def test_scanner_readout_reads_the_blood_peak_low_and_tissue_nearly_right():
    shortfalls, tissue_errors = [], []
    for seed in range(200):
        p = sample_params(np.random.default_rng(seed), readout="scanner")
        peak = 4.0 + 4.0 * seed / 199
        signal = _signal_of(p, "blood", np.array([0.0, peak]))
        shortfalls.append(1.0 - read_blood(p, signal, signal[0])[1] / peak)
        tissue = np.array([0.0, 0.2, 0.5, 1.0])
        signal = _signal_of(p, "myocardium", tissue)
        read = signal_to_concentration(signal, signal[0], p.t1_s["myocardium"],
                                       p.saturation_time_s, p.relaxivity_per_mm_s)
        tissue_errors.append(read[1:] / tissue[1:] - 1.0)
    shortfalls, tissue_errors = np.asarray(shortfalls), np.asarray(tissue_errors)
    assert np.mean((shortfalls >= 0.25) & (shortfalls <= 0.6)) >= 0.85
    assert 0.1 <= shortfalls.min() and shortfalls.max() <= 0.8
    assert 0.38 <= np.median(shortfalls) <= 0.52
    assert np.abs(tissue_errors).max() <= 0.12 and np.median(np.abs(tissue_errors)) <= 0.06


def test_scanner_readout_flattens_the_top_of_the_truth_curve():
    p = sample_params(np.random.default_rng(SEED), readout="scanner", lv_peak_mmol=6.0)
    times = np.arange(0.0, 60.0, 0.05)[None]
    blood = _concentration_curves(p, times)["lv"][0]
    signal = _signal_of(p, "blood", blood)
    read = read_blood(p, signal, signal[0])
    assert 0.25 <= 1.0 - read.max() / blood.max() <= 0.6

    def time_near_peak(curve):
        return np.count_nonzero(curve >= 0.9 * curve.max()) * 0.05

    assert time_near_peak(read) >= 1.3 * time_near_peak(blood)
    ideal = dataclasses.replace(p, readout="ideal")
    signal = _signal_of(ideal, "blood", blood)
    np.testing.assert_allclose(read_blood(p, signal, signal[0]), blood, atol=1e-6)


@pytest.mark.parametrize("readout, low, high", [("scanner", 0.25, 0.6), ("ideal", -0.05, 0.05)])
def test_rendered_lv_blood_pool_through_the_ideal_conversion(readout, low, high):
    phantom = generate_phantom(SEED, readout=readout, lv_peak_mmol=6.0, n_dynamics=40, **STILL)
    truth, p = phantom.extra["truth"], phantom.params
    blood, times = blood_and_times(phantom)
    labels = phantom.truth["labels"][0]
    core = [ndimage.binary_erosion(frame == LV_BLOOD, iterations=3) for frame in labels]
    image = phantom.image[0].astype(float)
    signal = np.array([frame[inside].mean() for frame, inside in zip(image, core)])
    baseline = signal[times < truth["main_bolus_foot_s"]].mean()
    assert phantom.extra["saturation_time_s"] == p.saturation_time_s  # the nominal TS
    read = signal_to_concentration(signal, baseline, p.t1_s["blood"],
                                   phantom.extra["saturation_time_s"], p.relaxivity_per_mm_s)
    assert low <= 1.0 - read.max() / blood.max() <= high
    assert truth["signal_model"]["readout"] == readout


def test_aif_series_keeps_the_ideal_readout(acquisitions):
    ideal = acquisitions["dual-sequence"]
    scanner = generate_phantom(SEED, "lad", readout="scanner", **SHORT)
    np.testing.assert_array_equal(scanner.aif_image, ideal.aif_image)
    assert not np.array_equal(scanner.image, ideal.image)


# ----------------------------------------------------------------------------- CLI
def test_phantom_command_flags(tmp_path, capsys):
    dest = tmp_path / "rest.zarr"
    code = main(["phantom", str(dest), "--seed", "5", "--acquisition", "dual-bolus",
                 "--state", "rest", "--tissue-model", "2cxm", "--readout", "scanner",
                 "--set", "n_dynamics=20"])
    assert code == 0
    study = Study.open(dest)
    truth = study.attrs["truth"]
    assert truth["acquisition"] == "dual-bolus" and truth["state"] == "rest"
    assert truth["parameters"]["tissue_model"] == "2cxm"
    assert truth["signal_model"]["readout"] == "scanner"
    assert study.attrs["perfusion_state"] == "rest"
    assert not study.has("aif_image") and "aif_series" not in study.attrs
    n_frames = study.shape[1]
    assert n_frames > 20 + truth["parameters"]["n_pd_frames"]  # the pre-bolus frames
    assert math.isclose(truth["prebolus_lead_s"], truth["parameters"]["prebolus_lead_s"])

    code = main(["phantom", str(tmp_path / "bad.zarr"), "--seed", "5",
                 "--acquisition", "single-bolus", "--set", "aif_series=true"])
    assert code == 2 and "aif_series" in capsys.readouterr().err
    assert not (tmp_path / "bad.zarr").exists()
