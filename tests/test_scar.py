"""Scar quantification, viability verdicts and the combined bullseye on synthetic LGE rings."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.figure import Figure

from napari_perfroi import aha
from napari_perfroi.lge import scar
from napari_perfroi.lge.bullseye import SCAR_HATCHES, draw_combined_bullseye
from napari_perfroi.study import LV_BLOOD, MYOCARDIUM, RV_BLOOD

SIZE = 96
CENTRE = 47.3  # row and col of the LV centre, off the pixel grid
ENDO, EPI = 16.0, 24.0  # radii in px
SPACING_MM = 1.5
SUBSAMPLES = 4  # per pixel and axis: partial volume at every edge
TRANSMURALITY = 0.7  # over FULL_ARC; half of it over the rest of SCAR_ARC
FULL_ARC = (240.0, 300.0)  # display degrees: the inferior segment (4 basal, 10 mid)
SCAR_ARC = (240.0, 330.0)  # half of the inferolateral segment (5, 11) too
LEVELS = ["basal", "mid"]
# Intensities: nulled myocardium, bright scar, blood in between, dark MVO core.
BLOOD, MYO, SCAR, DARK = 0.6, 0.1, 1.0, 0.05


def scar_percent(depth: float) -> float:
    """Scar share (%) of a wall sector whose inner ``depth`` (0-1) of the wall is scar."""
    return 100.0 * ((ENDO + depth * (EPI - ENDO)) ** 2 - ENDO**2) / (EPI**2 - ENDO**2)


def ring_study(seed: int, noise: float, transmurality: float = TRANSMURALITY, mvo: bool = False,
               n_slices: int = len(LEVELS)):
    """(image, labels, truth scar) (S, Y, X): an LV ring with an RV on its left (septum at
    180 degrees), a subendocardial scar arc of known depth, Rician noise of SD ``noise``.
    ``mvo`` darkens a subendocardial core of the scar (still scar in the truth)."""
    offsets = (np.arange(SUBSAMPLES) + 0.5) / SUBSAMPLES - 0.5
    grid = np.arange(SIZE, dtype=float)
    rows, cols = np.broadcast_arrays(grid[:, None, None, None] + offsets[None, None, :, None],
                                     grid[None, :, None, None] + offsets[None, None, None, :])
    radius = np.hypot(rows - CENTRE, cols - CENTRE)
    theta = aha.angle_deg(rows, cols, (CENTRE, CENTRE))
    wall = (radius >= ENDO) & (radius < EPI)
    cavity = radius < ENDO
    rv = (radius >= EPI + 1) & (radius < EPI + 9) & (theta > 120) & (theta < 240)
    depth = np.where((theta >= FULL_ARC[0]) & (theta < FULL_ARC[1]), transmurality,
                     np.where((theta >= SCAR_ARC[0]) & (theta < SCAR_ARC[1]),
                              transmurality / 2, 0.0))
    scarred = wall & (radius < ENDO + depth * (EPI - ENDO))
    core = scarred & (radius < ENDO + 2.5) & (theta > 262) & (theta < 278) if mvo else False
    fine = np.full(radius.shape, DARK)
    fine[cavity | rv] = BLOOD
    fine[wall] = MYO
    fine[scarred] = SCAR
    fine[core] = DARK
    labels = np.zeros((SIZE, SIZE), dtype=np.uint8)
    for mask, value in ((cavity, LV_BLOOD), (wall, MYOCARDIUM), (rv, RV_BLOOD)):
        labels[mask.mean(axis=(2, 3)) > 0.5] = value
    truth = (scarred.mean(axis=(2, 3)) > 0.5) & (labels == MYOCARDIUM)
    rng = np.random.default_rng(seed)
    shape = (n_slices, SIZE, SIZE)
    image = np.hypot(fine.mean(axis=(2, 3)) + rng.normal(0.0, noise, shape),
                     rng.normal(0.0, noise, shape))
    return image, np.repeat(labels[None], n_slices, 0), np.repeat(truth[None], n_slices, 0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def by_segment(rows: list[dict]) -> dict[int, dict]:
    return {row["segment"]: row for row in rows}


@pytest.fixture(scope="module")
def geometry():
    _, labels, _ = ring_study(0, 0.05)
    return aha.segment_geometry(labels, LEVELS, None, SPACING_MM)


def test_sectors_from_labels_put_the_scar_in_the_inferior_segments(geometry):
    assert geometry.messages == []
    assert all(abs(septal - 180.0) < 2.0 for septal in geometry.septal_deg)
    # Inferior 240-300 degrees: segments 4 and 10; inferolateral 300-360: 5 and 11.
    assert aha.segment_of_angle(270.0, geometry.septal_deg[0], "basal") == 4
    assert aha.segment_of_angle(315.0, geometry.septal_deg[1], "mid") == 11


@pytest.mark.parametrize("method", ["nsd", "fwhm"])
@pytest.mark.parametrize("noise", [0.03, 0.08])
def test_thresholds_find_the_arc(method, noise):
    image, labels, truth = ring_study(1, noise)
    myocardium = labels == MYOCARDIUM
    found = (scar.threshold_nsd(image, myocardium) if method == "nsd"
             else scar.threshold_fwhm(image, myocardium))
    assert found.dtype == bool and found.shape == image.shape
    assert not (found & ~myocardium).any()
    assert dice(found, truth) > 0.85
    assert dice(scar.clean_scar(found, myocardium, SPACING_MM), truth) > 0.9


def test_segment_scar_recovers_the_construction(geometry):
    image, labels, truth = ring_study(2, 0.05)
    myocardium = labels == MYOCARDIUM
    remote = scar.remote_myocardium(image, myocardium, geometry.aha)
    found = scar.clean_scar(scar.threshold_nsd(image, myocardium, remote=remote), myocardium,
                            SPACING_MM)
    for mask, percent_tolerance in ((truth, 3.0), (found, 5.0)):
        rows = by_segment(scar.segment_scar(myocardium, mask, geometry.aha, geometry.centre,
                                            SPACING_MM))
        assert [s for s, row in rows.items() if row["pixels"]] == list(range(1, 13))
        for inferior, inferolateral in ((4, 5), (10, 11)):
            assert rows[inferior]["scar_percent"] == pytest.approx(
                scar_percent(TRANSMURALITY), abs=percent_tolerance)
            assert rows[inferior]["transmurality"] == pytest.approx(TRANSMURALITY, abs=0.1)
            assert rows[inferior]["scar_class"] == ">=50 %"
            assert rows[inferolateral]["scar_percent"] == pytest.approx(
                scar_percent(TRANSMURALITY / 2) / 2, abs=percent_tolerance)
            assert rows[inferolateral]["transmurality"] == pytest.approx(
                TRANSMURALITY / 4, abs=0.1)
            assert rows[inferolateral]["scar_class"] == "<50 %"
        for segment in (1, 2, 3, 6, 7, 8, 9, 12):
            assert rows[segment]["scar_percent"] < 1.0
            assert rows[segment]["transmurality"] < 0.02
            assert rows[segment]["scar_class"] == "none"
            assert rows[segment]["wall_thickness_mm"] == pytest.approx(
                (EPI - ENDO) * SPACING_MM, abs=1.0)
        for segment in range(13, 17):
            assert rows[segment] == {"segment": segment, "pixels": 0, "scar_pixels": 0,
                                     "scar_percent": None, "transmurality": None,
                                     "wall_thickness_mm": None, "scar_class": None}
    # Without centres, each slice's centre is taken from its myocardium.
    given = scar.segment_scar(myocardium, truth, geometry.aha, geometry.centre, SPACING_MM)
    own = scar.segment_scar(myocardium, truth, geometry.aha, None, SPACING_MM)
    for with_given, with_own in zip(given, own):
        assert with_own["scar_percent"] == with_given["scar_percent"]
        assert with_own["transmurality"] == pytest.approx(with_given["transmurality"], abs=0.02)


def test_remote_is_the_darkest_sector_away_from_the_scar(geometry):
    image, labels, truth = ring_study(3, 0.05)
    myocardium = labels == MYOCARDIUM
    for remote in (scar.remote_myocardium(image, myocardium),
                   scar.remote_myocardium(image, myocardium, geometry.aha)):
        assert not (remote & ~myocardium).any()
        assert not (remote & truth).any()
        for s in range(len(LEVELS)):
            # about one sixth of the ring on every slice
            assert 0.1 < remote[s].sum() / myocardium[s].sum() < 0.25
    by_aha = scar.remote_myocardium(image, myocardium, geometry.aha)
    for s in range(len(LEVELS)):
        assert len(np.unique(geometry.aha[s][by_aha[s]])) == 1


def test_remote_drawn_on_one_slice_serves_them_all():
    image, labels, truth = ring_study(4, 0.05)
    myocardium = labels == MYOCARDIUM
    remote = scar.remote_myocardium(image, myocardium)
    remote[1:] = False
    assert dice(scar.threshold_nsd(image, myocardium, remote=remote), truth) > 0.85


def test_clean_scar_drops_specks_and_fills_mvo_cores():
    image, labels, truth = ring_study(5, 0.05, mvo=True)
    myocardium = labels == MYOCARDIUM
    found = scar.threshold_nsd(image, myocardium)
    core = truth & ~found  # the dark core the threshold misses
    assert core.sum() >= 4
    found[:, 55, 47 + 20] = found[:, 56, 47 + 20] = True  # a 2-pixel speck in remote myocardium
    found[:, 2, 2] = True  # outside the myocardium
    cleaned = scar.clean_scar(found, myocardium, SPACING_MM)
    assert cleaned[core].all()
    assert not cleaned[:, 55:57, 67].any() and not cleaned[:, 2, 2].any()
    assert dice(cleaned, truth) > dice(found, truth) + 0.02
    # Smaller specks survive a smaller minimum area.
    assert scar.clean_scar(found, myocardium, SPACING_MM, min_area_mm2=1.0)[:, 55, 67].all()


def test_clean_scar_keeps_remote_between_two_transmural_scars():
    _, labels, _ = ring_study(0, 0.05, n_slices=1)
    myocardium = labels == MYOCARDIUM
    rows, cols = np.nonzero(myocardium[0])
    theta = aha.angle_deg(rows, cols, (CENTRE, CENTRE))
    two = np.zeros_like(myocardium)
    transmural = ((theta > 0) & (theta < 40)) | ((theta > 90) & (theta < 130))
    two[0, rows[transmural], cols[transmural]] = True
    cleaned = scar.clean_scar(two, myocardium, SPACING_MM)
    np.testing.assert_array_equal(cleaned, two)


def test_no_scar_is_found_where_there_is_none(geometry):
    for seed in range(3):
        image, labels, truth = ring_study(10 + seed, 0.05, transmurality=0.0)
        myocardium = labels == MYOCARDIUM
        assert not truth.any()
        for found in (scar.threshold_nsd(image, myocardium),
                      scar.threshold_nsd(image, myocardium, n_sd=2.0),
                      scar.threshold_fwhm(image, myocardium)):
            cleaned = scar.clean_scar(found, myocardium, SPACING_MM)
            assert cleaned.sum() == 0
            rows = scar.segment_scar(myocardium, cleaned, geometry.aha, geometry.centre,
                                     SPACING_MM)
            assert {row["scar_class"] for row in rows if row["pixels"]} == {"none"}


def test_nan_pixels_are_never_scar():
    image, labels, truth = ring_study(6, 0.05)
    myocardium = labels == MYOCARDIUM
    holes = np.random.default_rng(7).random(image.shape) < 0.05
    image[holes] = np.nan
    for found in (scar.threshold_nsd(image, myocardium), scar.threshold_fwhm(image, myocardium)):
        assert not (found & holes).any()
        assert dice(found, truth) > 0.8
    assert not (scar.remote_myocardium(image, myocardium) & holes).any()


def test_empty_myocardium_gives_empty_results(geometry):
    image, _, _ = ring_study(0, 0.05)
    empty = np.zeros(image.shape, dtype=bool)
    assert not scar.remote_myocardium(image, empty).any()
    assert not scar.remote_myocardium(image, empty, geometry.aha).any()
    assert not scar.threshold_nsd(image, empty).any()
    assert not scar.threshold_fwhm(image, empty).any()
    assert not scar.clean_scar(empty, empty, SPACING_MM).any()
    rows = scar.segment_scar(empty, empty, np.zeros(image.shape, np.uint8), None, SPACING_MM)
    assert [row["segment"] for row in rows] == list(range(1, 17))
    assert all(row["pixels"] == 0 and row["scar_class"] is None for row in rows)
    # A slice with an LV centre but no myocardium (a blood pool found without its wall).
    rows = scar.segment_scar(empty, empty, geometry.aha, [(24.0, 24.0)] * len(image), SPACING_MM)
    assert all(row["pixels"] == 0 for row in rows)
    # An all-NaN image has no remote statistics, so no scar.
    _, labels, _ = ring_study(0, 0.05)
    assert not scar.threshold_nsd(np.full(image.shape, np.nan), labels == MYOCARDIUM).any()


def test_shapes_must_agree():
    image, labels, _ = ring_study(0, 0.05)
    with pytest.raises(ValueError, match="differ in shape"):
        scar.threshold_nsd(image[:1], labels == MYOCARDIUM)
    with pytest.raises(ValueError, match=r"\(S, Y, X\)"):
        scar.remote_myocardium(image[0], labels[0] == MYOCARDIUM)


@pytest.mark.parametrize(("percent", "transmurality", "expected"), [
    (0.0, 0.0, "none"), (1.9, 0.9, "none"), (float("nan"), None, "none"),
    (3.0, 0.1, "<50 %"), (40.0, 0.49, "<50 %"), (40.0, 0.5, ">=50 %"),
    (30.0, None, "<50 %"), (60.0, None, ">=50 %"),
])
def test_scar_class(percent, transmurality, expected):
    assert scar.scar_class(percent, transmurality) == expected


def test_perfusion_abnormal_from_absolute_mbf():
    mbf = [2.5] * 16
    mbf[2], mbf[8], mbf[15] = 1.2, 1.49, None
    abnormal = scar.perfusion_abnormal({"segment_mbf": mbf})  # older reports: absolute
    assert [s for s, a in abnormal.items() if a] == [3, 9]
    assert abnormal[16] is None and abnormal[1] is False
    assert scar.perfusion_abnormal({"absolute_mbf": True, "segment_mbf": mbf}) == abnormal


def test_perfusion_abnormal_from_relative_upslope():
    upslope = [0.12 + 0.004 * (s % 3) for s in range(16)]  # normal segments 12-13 %
    upslope[3] = upslope[9] = 0.06  # half the normal level
    upslope[4] = 0.10  # 20 % below: not clearly abnormal
    semiquant = [{"relative_upslope": value} for value in upslope]
    semiquant[15] = None
    report = {"absolute_mbf": False, "segment_mbf": [None] * 16, "segment_semiquant": semiquant}
    abnormal = scar.perfusion_abnormal(report)
    assert [s for s, a in abnormal.items() if a] == [4, 10]
    assert abnormal[5] is False and abnormal[16] is None
    report["segment_semiquant"] = semiquant[:3] + [None] * 13
    assert set(scar.perfusion_abnormal(report).values()) == {None}


def test_territory_verdicts():
    none = dict.fromkeys(range(1, 17), "none")
    normal = dict.fromkeys(range(1, 17), False)
    assert scar.territory_verdicts(normal, none) == dict.fromkeys(("lad", "rca", "lcx"), "normal")
    # LAD: defect without scar; RCA: defect confined to its scar; LCx: defect beyond the scar.
    abnormal = {**normal, 1: True, 7: True, 3: True, 9: True, 5: True, 11: True}
    classes = {**none, 3: ">=50 %", 9: "<50 %", 4: "<50 %", 5: ">=50 %"}
    assert scar.territory_verdicts(abnormal, classes) == {
        "lad": "ischaemia", "rca": "infarct", "lcx": "infarct with peri-infarct ischaemia"}
    # Scar without any defect is an infarct; a defect where LGE is missing is beyond the scar.
    assert scar.territory_verdicts(normal, {**none, 13: "<50 %"})["lad"] == "infarct"
    assert scar.territory_verdicts({**normal, 16: True}, {**classes, 16: None})["lcx"] == \
        "infarct with peri-infarct ischaemia"
    # Nothing known about perfusion (or LGE) in a territory: no verdict.
    unknown = {**normal, **dict.fromkeys(aha.TERRITORIES["rca"], None)}
    assert scar.territory_verdicts(unknown, classes)["rca"] == scar.NOT_ASSESSED
    assert scar.territory_verdicts(normal, {})["lad"] == scar.NOT_ASSESSED
    assert set(scar.territory_verdicts(abnormal, classes).values()) <= set(scar.VERDICTS)


def _hatched(ax) -> list:
    return [p for p in ax.patches if p.get_hatch() in SCAR_HATCHES.values()]


def test_combined_bullseye_marks_scar_and_writes_verdicts():
    mbf = [2.8] * 16
    mbf[3], mbf[9], mbf[10], mbf[11] = 0.8, 0.9, 1.2, 1.3  # 12 abnormal beyond the scar
    mbf[12] = None
    classes = {**dict.fromkeys(range(1, 17), "none"), 4: ">=50 %", 10: ">=50 %", 11: "<50 %"}
    classes[16] = None
    verdicts = scar.territory_verdicts(
        scar.perfusion_abnormal({"segment_mbf": mbf}), classes)
    assert verdicts == {"lad": "normal", "rca": "infarct",
                        "lcx": "infarct with peri-infarct ischaemia"}
    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    ax = fig.add_subplot()
    wedges = draw_combined_bullseye(ax, mbf, classes, verdicts, absolute=True, highlight=10)
    assert sorted(wedges) == list(range(1, 17))
    hatches = sorted(p.get_hatch() for p in _hatched(ax))
    assert hatches == sorted([SCAR_HATCHES[">=50 %"]] * 2 + [SCAR_HATCHES["<50 %"]])
    for patch in _hatched(ax):  # dark (low-flow) segments get white marks
        assert patch.get_edgecolor()[:3] == pytest.approx((1.0, 1.0, 1.0))
    texts = [t.get_text() for t in ax.texts]
    assert "RCA: infarct" in texts and "LCx: infarct with peri-infarct ischaemia" in texts
    assert "LAD: normal" in texts and "no LGE: segment 16" in texts
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["scar <50 % transmural", "scar \u226550 % transmural", "no perfusion data"]
    fig.canvas.draw()  # lays out and renders without error
    fig.savefig(io.BytesIO(), format="png", dpi=60)


def test_combined_bullseye_relative_upslope_in_a_narrow_dock():
    upslope = [14.0] * 16
    upslope[0] = 5.0
    fig = Figure(figsize=(3.6, 3.6), layout="constrained")
    ax = fig.add_subplot()
    draw_combined_bullseye(ax, upslope, {1: ">=50 %"}, {"lad": "infarct"}, absolute=False,
                           colorbar=False)
    assert len(_hatched(ax)) == 1
    texts = [t.get_text() for t in ax.texts]
    assert "RCA: not assessed" in texts
    assert any(t.startswith("no LGE: segments 2, 3") for t in texts)
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert fig.bbox.x0 <= legend.x0 and legend.x1 <= fig.bbox.x1  # one column: it fits
    with pytest.raises(ValueError, match="16 segment values"):
        draw_combined_bullseye(Figure().add_subplot(), upslope[:15], {}, {}, absolute=False)

