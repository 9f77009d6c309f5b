"""The scanner-like phantom family: scanner effects on the teaching phantom's anatomy."""

import numpy as np
import pytest
from scipy import ndimage

from napari_perfroi.phantom import generate_phantom
from napari_perfroi.phantom_scanner import (
    HELD_OUT_SPACING_MM,
    TRAINING_SPACING_MM,
    render_scanner_effects,
    scanner_like_overrides,
    scanner_like_phantom,
)
from napari_perfroi.study import LV_BLOOD, MYOCARDIUM


def test_family_is_seeded_and_keeps_the_truth_of_its_anatomy():
    first = scanner_like_phantom(40, np.random.default_rng([40, 2]))
    again = scanner_like_phantom(40, np.random.default_rng([40, 2]))
    np.testing.assert_array_equal(first.image, again.image)
    assert first.image.dtype == np.uint16
    assert first.image.shape == first.truth["labels"].shape
    lv = first.truth["labels"] == LV_BLOOD
    assert lv.any() and (first.truth["labels"] == MYOCARDIUM).any()


def test_held_out_spacing_is_never_drawn_for_training():
    training = [scanner_like_overrides(np.random.default_rng(k))["pixel_spacing_mm"]
                for k in range(300)]
    held_out = [scanner_like_overrides(np.random.default_rng(k), held_out=True)
                ["pixel_spacing_mm"] for k in range(300)]
    assert TRAINING_SPACING_MM[0] <= min(training) and max(training) <= TRAINING_SPACING_MM[1]
    assert min(held_out) >= HELD_OUT_SPACING_MM[0] > max(training) - 1e-3


def test_dark_rim_darkens_the_blood_next_to_the_myocardium_at_the_lv_peak():
    phantom = generate_phantom(41, n_dynamics=30, snr=1000.0)
    labels = phantom.truth["labels"]
    lv = labels == LV_BLOOD
    curve = (phantom.image * lv).sum(axis=(2, 3)) / lv.sum(axis=(2, 3))
    peak = int(np.argmax(curve[0]))
    rim = lv[0, peak] & ndimage.binary_dilation(labels[0, peak] == MYOCARDIUM)
    centre = ndimage.binary_erosion(lv[0, peak], iterations=4)
    rims = []
    for k in range(12):  # effects are drawn: keep the draws that render a dark rim
        image = render_scanner_effects(phantom, np.random.default_rng(k)).astype(float)
        rims.append(image[0, peak][rim].mean() / image[0, peak][centre].mean())
    plain = phantom.image[0, peak].astype(float)
    assert min(rims) < plain[rim].mean() / plain[centre].mean() - 0.05


@pytest.mark.parametrize("held_out", [False, True])
def test_vendor_scales_vary_widely(held_out):
    phantom = generate_phantom(42, n_dynamics=20)
    peaks = [np.percentile(render_scanner_effects(phantom, np.random.default_rng(k), held_out),
                           99.9) for k in range(8)]
    assert max(peaks) / min(peaks) > 5


def test_held_out_offset_lifts_the_background():
    phantom = generate_phantom(42, n_dynamics=20)
    rng = np.random.default_rng(3)
    held_out = render_scanner_effects(phantom, rng, held_out=True)
    peak = np.percentile(held_out, 99.9)
    assert np.percentile(held_out, 1) > 0.2 * peak  # air is no longer dark
