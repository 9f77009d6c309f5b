"""Scanner-like randomisation of training series: same anatomy, another acquisition."""

import numpy as np

from napari_perfroi.phantom import generate_phantom
from napari_perfroi.segment.randomise import MIN_FRAMES, randomise_series


def test_randomised_series_keep_times_shifts_and_frames_together():
    phantom = generate_phantom(31, n_dynamics=30)
    frames, times, shifts = phantom.image[0], phantom.attrs["frame_times_s"][0], \
        phantom.truth["motion"][0]
    counts, peaks = set(), []
    for k in range(40):
        rng = np.random.default_rng(k)
        new_frames, new_times, new_shifts = randomise_series(frames, times, shifts, rng)
        assert len(new_frames) == len(new_times) == len(new_shifts) >= MIN_FRAMES
        assert new_frames.shape[1:] == frames.shape[1:] and new_frames.dtype == np.float32
        assert np.all(np.diff(new_times) >= 0)
        assert np.array_equal(new_frames, np.rint(new_frames)) and new_frames.min() >= 0
        assert np.isin(new_shifts, shifts).all(axis=1).all()  # each frame keeps its motion
        counts.add(len(new_frames))
        peaks.append(np.percentile(new_frames, 99.5))
    assert len(counts) > 3  # frame counts vary
    assert max(peaks) / min(peaks) > 20  # so do the stored intensity ranges


def test_randomisation_is_seeded():
    phantom = generate_phantom(31, n_dynamics=20)
    args = phantom.image[1], phantom.attrs["frame_times_s"][1], phantom.truth["motion"][1]
    first = randomise_series(*args, np.random.default_rng(5))
    again = randomise_series(*args, np.random.default_rng(5))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
