"""The LGE phantom: the perfusion phantom's heart, scar truth that matches the image,
inversion-recovery contrast, overrides and the DICOM series of the same study."""

import time

import numpy as np
import pydicom
import pytest

from napari_perfroi import aha
from napari_perfroi.dicom_export import export_dicom
from napari_perfroi.errors import InputError
from napari_perfroi.lge.phantom import (
    PSIR_OFFSET,
    generate_lge_phantom,
    sample_lge_params,
    write_lge_dicom,
)
from napari_perfroi.phantom import generate_phantom, heart_of_seed
from napari_perfroi.study import LV_BLOOD, MYOCARDIUM

SEED = 11


@pytest.fixture(scope="module")
def pair():
    """The LGE and perfusion phantoms of one patient."""
    return generate_lge_phantom(SEED), generate_phantom(SEED)


def _signed(phantom):
    return phantom.image.astype(float) + phantom.attrs["rescale_intercept"]


def _perfusion_labels_on_lge_grid(perfusion, lge, k):
    """Reference-frame labels of perfusion slice k sampled (nearest) at the LGE pixel centres
    through patient coordinates."""
    orientation = np.asarray(lge.attrs["image_orientation_patient"])
    row_dir, col_dir = orientation[:3], orientation[3:]
    lge_spacing = lge.attrs["pixel_spacing_mm"][0]
    perfusion_spacing = perfusion.attrs["pixel_spacing_mm"][0]
    rows, cols = np.mgrid[0 : lge.labels.shape[1], 0 : lge.labels.shape[2]]
    points = (
        np.asarray(lge.attrs["image_position_patient"][k])
        + cols[..., None] * lge_spacing * row_dir
        + rows[..., None] * lge_spacing * col_dir
    )
    offset = points - np.asarray(perfusion.extra["image_position_patient"][k])
    perfusion_cols = np.rint(offset @ row_dir / perfusion_spacing).astype(int)
    perfusion_rows = np.rint(offset @ col_dir / perfusion_spacing).astype(int)
    reference = perfusion.truth["labels"][k, perfusion.attrs["reference_frame"][k]]
    inside = (
        (perfusion_rows >= 0) & (perfusion_rows < reference.shape[0])
        & (perfusion_cols >= 0) & (perfusion_cols < reference.shape[1])
    )
    sampled = np.zeros(lge.labels.shape[1:], dtype=np.uint8)
    sampled[inside] = reference[perfusion_rows[inside], perfusion_cols[inside]]
    return sampled


def _dice(a, b):
    return 2.0 * np.sum(a & b) / (np.sum(a) + np.sum(b))


def _patient_point(attrs, k, row_col, spacing):
    orientation = np.asarray(attrs["image_orientation_patient"])
    r, c = row_col
    return (np.asarray(attrs["image_position_patient"][k])
            + c * spacing * orientation[:3] + r * spacing * orientation[3:])


def test_same_heart_as_the_perfusion_phantom(pair):
    lge, perfusion = pair
    assert lge.params.pixel_spacing_mm < perfusion.params.pixel_spacing_mm  # finer in-plane
    np.testing.assert_allclose(
        lge.attrs["image_orientation_patient"], perfusion.extra["image_orientation_patient"]
    )
    np.testing.assert_allclose(
        lge.attrs["slice_positions_mm"], perfusion.attrs["slice_positions_mm"], atol=0.01
    )
    assert lge.attrs["slice_levels"] == perfusion.attrs["slice_levels"]
    assert lge.truth["perfusion_defect"] == perfusion.params.defect
    for k in range(perfusion.params.n_slices):
        # The true LV centre is the same point in patient space.
        lge_centre = _patient_point(lge.attrs, k, lge.attrs["lv_centre_px"][k],
                                    lge.params.pixel_spacing_mm)
        perfusion_centre = _patient_point(
            perfusion.extra, k, perfusion.extra["truth"]["lv_centre_px"][k],
            perfusion.params.pixel_spacing_mm,
        )
        np.testing.assert_allclose(lge_centre, perfusion_centre, atol=0.01)
        np.testing.assert_allclose(
            lge.attrs["rv_insertion_deg"][k], perfusion.extra["truth"]["rv_insertion_deg"][k]
        )
        sampled = _perfusion_labels_on_lge_grid(perfusion, lge, k)
        assert _dice(sampled == MYOCARDIUM, lge.labels[k] == MYOCARDIUM) > 0.88
        assert _dice(sampled == LV_BLOOD, lge.labels[k] == LV_BLOOD) > 0.9


def test_perfusion_truth_is_the_perfusion_phantoms(pair):
    lge, perfusion = pair
    expected = perfusion.extra["truth"]["segment_mbf"]  # None where not imaged
    assert lge.truth["perfusion_segment_mbf"] == pytest.approx(expected)


@pytest.mark.parametrize("territory, pattern", [
    ("lad", "transmural"), ("rca", "subendocardial"), ("lcx", "patchy"), ("lad", "patchy"),
])
def test_scar_lies_in_the_myocardium_of_its_segments(territory, pattern):
    for seed in (3, 8):
        phantom = generate_lge_phantom(seed, scar=territory, scar_pattern=pattern)
        scarred = phantom.scar > 0
        assert scarred.any()
        assert np.all(phantom.labels[scarred] == MYOCARDIUM)
        segments = set(np.unique(phantom.aha[scarred]).tolist())
        assert segments <= set(phantom.params.scar_segments) <= set(aha.TERRITORIES[territory])
        assert phantom.truth["scar_segments"] == sorted(segments)
        assert phantom.truth["slice_has_scar"] == [bool(s.any()) for s in scarred]
        assert np.all(phantom.aha[phantom.labels == MYOCARDIUM] > 0)
        assert np.all(phantom.aha[phantom.labels != MYOCARDIUM] == 0)


def test_truth_scar_percent_matches_the_masks():
    phantom = generate_lge_phantom(4, scar="lcx", scar_pattern="transmural")
    for s in range(1, 17):
        in_segment = phantom.aha == s
        expected = 100.0 * np.sum(phantom.scar[in_segment] > 0) / np.sum(in_segment)
        assert phantom.truth["segment_scar_percent"][s - 1] == pytest.approx(expected)
    assert max(phantom.truth["segment_scar_percent"]) > 30.0


def test_partial_segments_and_mvo_overrides():
    phantom = generate_lge_phantom(
        6, scar="lad", scar_pattern="transmural", transmurality=1.0, scar_segments=(7, 8),
        has_mvo=True,
    )
    assert phantom.truth["scar_segments"] == [7, 8]
    assert phantom.truth["slice_has_scar"] == [False, True, False]
    assert phantom.truth["has_mvo"] and np.any(phantom.scar == 2)
    # MVO is a subendocardial core: it touches the blood pool side, never the epicardium.
    mvo = phantom.scar[1] == 2
    grown = np.zeros_like(mvo)
    grown[1:-1, 1:-1] = mvo[:-2, 1:-1] | mvo[2:, 1:-1] | mvo[1:-1, :-2] | mvo[1:-1, 2:]
    neighbours = phantom.labels[1][grown & ~mvo]
    assert LV_BLOOD in neighbours and 0 not in neighbours


def test_subendocardial_scar_is_less_transmural_than_transmural_scar():
    results = {}
    for pattern, extent in (("subendocardial", 0.3), ("transmural", 1.0)):
        phantom = generate_lge_phantom(
            12, scar="rca", scar_pattern=pattern, transmurality=extent, scar_segments=(9, 10)
        )
        results[pattern] = phantom.truth
        measured = [phantom.truth["segment_transmurality"][s - 1] for s in (9, 10)]
        # The extent tapers to nothing at the arc ends: the segment mean is a bit below the peak.
        assert all(0.6 * extent <= m <= extent for m in measured)
    for s in (9, 10):
        assert (results["subendocardial"]["segment_transmurality"][s - 1]
                < results["transmural"]["segment_transmurality"][s - 1] - 0.3)
        assert (results["subendocardial"]["segment_scar_percent"][s - 1]
                < results["transmural"]["segment_scar_percent"][s - 1] - 20.0)
    assert results["transmural"]["segment_transmurality"][0] == 0.0  # an unscarred segment


def _tissue_means(phantom):
    inner = phantom.scar == 1
    eroded = np.zeros_like(inner)  # away from the partial-volume edges
    eroded[:, 1:-1, 1:-1] = (inner[:, 1:-1, 1:-1] & inner[:, :-2, 1:-1] & inner[:, 2:, 1:-1]
                            & inner[:, 1:-1, :-2] & inner[:, 1:-1, 2:])
    blood = phantom.labels == LV_BLOOD
    remote = (phantom.labels == MYOCARDIUM) & (phantom.scar == 0)
    values = _signed(phantom)
    return values[eroded].mean(), values[blood].mean(), values[remote].mean()


def test_blood_versus_scar_contrast_follows_inversion_time():
    t1 = {"blood": 420.0, "myocardium": 520.0, "scar": 260.0}
    common = dict(scar="lad", scar_pattern="transmural", transmurality=1.0, t1_ms=t1,
                  snr=60.0, ghost_amplitude=0.0, inversion_inhomogeneity=0.0, coil_shading=0.0,
                  scar_heterogeneity=0.0)
    nulled = generate_lge_phantom(2, lge_kind="magnitude", **common)
    null_ms = nulled.truth["myocardial_null_ms"]
    at_null = generate_lge_phantom(2, lge_kind="magnitude", inversion_time_ms=null_ms, **common)
    scar, blood, remote = _tissue_means(at_null)
    assert scar > 1.5 * blood and remote < 0.3 * blood  # bright scar, nulled myocardium
    short = generate_lge_phantom(2, lge_kind="magnitude", inversion_time_ms=120.0, **common)
    scar, blood, _ = _tissue_means(short)
    assert blood > 1.3 * scar  # both below their null: the longer T1 is the brighter
    # PSIR keeps the sign, so scar stays above blood whatever the TI.
    for ti in (null_ms, 120.0):
        psir = generate_lge_phantom(2, lge_kind="psir", inversion_time_ms=ti, **common)
        scar, blood, remote = _tissue_means(psir)
        assert scar > blood + 0.1 * abs(blood) and scar > remote
    # A blood T1 shorter than the scar's makes the blood brighter at the null too.
    swapped = dict(common, t1_ms={"blood": 240.0, "myocardium": 520.0, "scar": 330.0})
    scar, blood, _ = _tissue_means(generate_lge_phantom(2, lge_kind="magnitude", **swapped))
    assert blood > scar


def test_mvo_is_darker_than_the_enhanced_scar():
    settings = dict(scar="lad", scar_pattern="transmural", transmurality=1.0, has_mvo=True,
                    lge_kind="magnitude", snr=50.0, ghost_amplitude=0.0)
    null_ms = generate_lge_phantom(6, **settings).truth["myocardial_null_ms"]
    phantom = generate_lge_phantom(6, inversion_time_ms=null_ms, **settings)
    values = _signed(phantom)
    assert values[phantom.scar == 2].mean() < 0.6 * values[phantom.scar == 1].mean()


def test_magnitude_and_psir_noise():
    magnitude = generate_lge_phantom(5, scar="none", lge_kind="magnitude")
    psir = generate_lge_phantom(5, scar="none", lge_kind="psir")
    corner = (slice(None), slice(0, 8), slice(0, 8))  # air outside the body
    assert magnitude.attrs["rescale_intercept"] == 0 and magnitude.image[corner].min() >= 0
    assert psir.attrs["rescale_intercept"] == -PSIR_OFFSET
    air = _signed(psir)[corner]
    assert (air < 0).mean() > 0.3 and abs(air.mean()) < 3.0 * air.std()  # signed noise about 0
    assert np.array_equal(magnitude.labels, psir.labels)


def test_deterministic_and_seeded():
    a, b = generate_lge_phantom(21), generate_lge_phantom(21)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.scar, b.scar)
    assert a.truth == b.truth and a.attrs == b.attrs
    assert not np.array_equal(generate_lge_phantom(22).labels, a.labels)


def test_overrides_are_respected():
    base = generate_lge_phantom(9, scar="rca")
    phantom = generate_lge_phantom(
        9, scar="rca", pixel_spacing_mm=1.25, matrix=(200, 240), inversion_time_ms=333.0,
        lge_kind="psir", snr=12.0,
    )
    assert phantom.image.shape == (3, 200, 240)
    assert phantom.attrs["pixel_spacing_mm"] == [1.25, 1.25]
    assert phantom.attrs["inversion_time_ms"] == 333.0 and phantom.attrs["lge_kind"] == "psir"
    assert phantom.params.snr == 12.0
    assert phantom.params.scar_segments == base.params.scar_segments  # other draws unchanged
    assert phantom.params.t1_ms == base.params.t1_ms
    more = generate_lge_phantom(9, scar="none", n_slices=5)
    assert more.image.shape[0] == 5 and more.attrs["slice_levels"][-1] == "apical"
    assert not np.any(more.scar) and more.truth["scar_pattern"] == "none"
    smaller = generate_lge_phantom(9, scar="none", lv_radius_mm=22.0)  # heart parameters
    bigger = generate_lge_phantom(9, scar="none", lv_radius_mm=34.0)
    assert bigger.heart.lv_radius_mm == 34.0
    assert np.sum(bigger.labels == LV_BLOOD) > 1.5 * np.sum(smaller.labels == LV_BLOOD)


def test_drawn_scars_follow_the_perfusion_defect():
    counts = {"defect territory": 0, "other territory": 0, "none": 0}
    whole = partial = 0
    for seed in range(200):
        heart = heart_of_seed(seed)
        params = sample_lge_params(seed, heart)
        if params.scar_territory is None:
            counts["none"] += 1
        elif params.scar_territory == heart.params.defect:
            counts["defect territory"] += 1
            imaged_territory = set(aha.TERRITORIES[params.scar_territory])
            if set(params.scar_segments) == imaged_territory:
                whole += 1
            else:
                partial += 1
        else:
            counts["other territory"] += 1
    assert 60 <= counts["defect territory"] <= 120
    assert 15 <= counts["other territory"] <= 50
    assert 55 <= counts["none"] <= 110
    assert whole >= 20 and partial >= 20  # infarcts with and without peri-infarct ischaemia


def test_write_lge_dicom_is_the_perfusion_patients_study(pair, tmp_path):
    perfusion = pair[1]
    lge = generate_lge_phantom(SEED, lge_kind="psir")
    export_dicom(perfusion.image, {**perfusion.attrs, **perfusion.extra}, tmp_path / "perfusion",
                 seed=SEED, aif_image=perfusion.aif_image)
    reference = pydicom.dcmread(next((tmp_path / "perfusion").iterdir()))
    folder = write_lge_dicom(lge, tmp_path / "lge")
    files = sorted(folder.iterdir())
    assert len(files) == 3
    series = set()
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == pydicom.uid.MRImageStorage
        for key in ("PatientName", "PatientID", "StudyInstanceUID", "FrameOfReferenceUID"):
            assert ds[key].value == reference[key].value
        assert ds.SeriesInstanceUID != reference.SeriesInstanceUID
        series.add(ds.SeriesInstanceUID)
        assert ds.SeriesDescription == "LGE PSIR SAX" and "PSIR" in ds.ImageType
        assert float(ds.InversionTime) == pytest.approx(lge.attrs["inversion_time_ms"])
        assert [float(v) for v in ds.PixelSpacing] == lge.attrs["pixel_spacing_mm"]
        assert float(ds.SliceThickness) == float(reference.SliceThickness)
        position = np.asarray(ds.ImagePositionPatient, dtype=float)
        normal = np.cross(*np.reshape(np.asarray(ds.ImageOrientationPatient, float), (2, 3)))
        assert position @ normal == pytest.approx(perfusion.attrs["slice_positions_mm"][k],
                                                  abs=0.1)
        values = pydicom.pixels.apply_rescale(ds.pixel_array, ds)
        np.testing.assert_array_equal(values, _signed(lge)[k])
        assert values.min() < 0
    assert len(series) == 1
    with pytest.raises(InputError, match="not empty"):
        write_lge_dicom(lge, folder)


@pytest.mark.parametrize("kwargs, message", [
    ({"not_a_parameter": 1}, "unknown"),
    ({"lge_kind": "t2"}, "lge_kind"),
    ({"scar": "lcd"}, "unknown scar"),
    ({"scar": "lad", "transmurality": 1.5}, "transmurality"),
    ({"scar": "lad", "scar_segments": (3,)}, "scar_segments"),
    ({"scar": "rca", "scar_pattern": "patchy", "has_mvo": True}, "has_mvo"),
    ({"scar": "none", "scar_pattern": "transmural"}, "scar_pattern"),
    ({"matrix": (8, 8)}, "matrix"),
    ({"inversion_time_ms": -5.0}, "inversion_time_ms"),
    ({"n_slices": 0}, "n_slices"),
    ({"t1_ms": {"blood": 0.0}}, "t1_ms"),
    ({"t1_ms": 300.0}, "t1_ms"),
])
def test_bad_overrides_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message) as raised:
        generate_lge_phantom(1, **kwargs)
    assert "\n" not in str(raised.value)


def test_generation_time():
    generate_lge_phantom(30)  # imports and caches warmed up
    start = time.perf_counter()
    for seed in range(31, 36):
        generate_lge_phantom(seed)
    assert (time.perf_counter() - start) / 5 < 1.0
