import numpy as np
import pytest
from scipy import ndimage

from napari_perfroi import __version__
from napari_perfroi.motion import estimate_motion, estimate_study_motion
from napari_perfroi.phantom import generate_phantom, write_phantom
from napari_perfroi.study import Study


def relative_truth(truth: np.ndarray, reference_frame: int) -> np.ndarray:
    return truth - truth[reference_frame]


@pytest.mark.parametrize("seed", [11, 23])
def test_phantom_motion_within_one_pixel(seed):
    phantom = generate_phantom(seed)
    s = 1  # the mid slice
    result = estimate_motion(phantom.image[s])
    truth = relative_truth(phantom.truth["motion"][s], result.reference_frame)
    errors = np.linalg.norm(result.shifts - truth, axis=1)
    assert result.shifts.dtype == np.float32
    assert result.shifts.shape == (phantom.image.shape[1], 2)
    np.testing.assert_array_equal(result.shifts[result.reference_frame], 0)
    assert np.median(errors) <= 1.0


@pytest.mark.xfail(
    strict=True,
    reason="known limitation: with no contrast change the low-rank target and the shared "
    "window taper absorb part of the motion (median error ~0.4 px on random shifts)",
)
def test_pure_translation_recovered_to_a_tenth_of_a_pixel():
    rng = np.random.default_rng(0)
    base = ndimage.gaussian_filter(rng.random((96, 96)), 3.0)
    true_shifts = rng.uniform(-3, 3, (30, 2))
    true_shifts[0] = 0
    # Frame t shows the base image's content moved by true_shifts[t].
    series = np.stack([ndimage.shift(base, shift, order=3, mode="wrap") for shift in true_shifts])
    result = estimate_motion(series, reference_frame=0)
    assert result.reference_frame == 0
    np.testing.assert_allclose(result.shifts, true_shifts, atol=0.1)


def test_reference_frame_is_validated():
    with pytest.raises(ValueError):
        estimate_motion(np.zeros((3, 8, 8)), reference_frame=3)


@pytest.mark.parametrize("series", [np.ones((1, 16, 16)), np.full((6, 16, 16), 7.0)])
def test_degenerate_series_give_zero_shifts(series):
    result = estimate_motion(series)
    assert result.shifts.shape == (len(series), 2)
    np.testing.assert_array_equal(result.shifts, 0)
    assert result.reference_frame == 0


def test_study_motion_is_written_and_recorded(tmp_path):
    write_phantom(tmp_path / "p.zarr", seed=5)
    study = Study.open(tmp_path / "p.zarr", writable=True)
    calls = []
    results = estimate_study_motion(study, progress=lambda done, total: calls.append(done))
    n_s, n_t = study.shape[:2]
    motion = study.read("motion")
    assert motion.shape == (n_s, n_t, 2) and motion.dtype == np.float32
    references = study.attrs["reference_frame"]
    assert references == [r.reference_frame for r in results]
    for s, ref in enumerate(references):
        np.testing.assert_array_equal(motion[s, ref], 0)
    assert study.attrs["steps"]["motion"]["version"] == __version__
    assert calls[-1] == n_s


def test_motion_reports_progress_within_a_slice(phantom_store):
    """A one-slice series does not sit at 0/1 until it is done."""
    from napari_perfroi.motion import estimate_study_motion
    from napari_perfroi.study import Study

    calls = []
    estimate_study_motion(Study.open(phantom_store, writable=True),
                          progress=lambda done, total: calls.append((done, total)))
    n_slices = Study.open(phantom_store).shape[0]
    assert calls[-1] == (n_slices, n_slices)
    within_first = [done for done, _ in calls if 0 < done < 1]
    assert within_first and within_first == sorted(within_first)
