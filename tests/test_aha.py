"""AHA sector geometry: angles, septal bisector and 16-segment labels."""

import numpy as np
import pytest

from napari_perfroi import aha
from napari_perfroi.errors import InputError
from napari_perfroi.study import BACKGROUND, LV_BLOOD, MYOCARDIUM, RV_BLOOD

CENTRE = (50.0, 60.0)


def ring(shape=(101, 121), centre=CENTRE, inner=20.0, outer=30.0):
    rows, cols = np.indices(shape)
    dist = np.hypot(rows - centre[0], cols - centre[1])
    return (dist >= inner) & (dist <= outer)


def label_at(labels, theta_deg, radius=25.0, centre=CENTRE):
    """Label of the pixel at display angle ``theta_deg`` on the ring."""
    row = round(centre[0] - radius * np.sin(np.radians(theta_deg)))
    col = round(centre[1] + radius * np.cos(np.radians(theta_deg)))
    return int(labels[row, col])


def in_arc(theta, start, end):
    """theta within the counter-clockwise arc start -> end (degrees, inclusive)."""
    return np.mod(theta - start, 360.0) <= np.mod(end - start, 360.0) + 1e-6


def test_angle_convention():
    rows = np.array([50, 40, 50, 60])
    cols = np.array([70, 60, 50, 60])
    np.testing.assert_allclose(aha.angle_deg(rows, cols, CENTRE), [0, 90, 180, 270])
    assert 0 <= aha.angle_deg(50.0, 70.0 - 1e-15, (50.0 + 1e-18, 60.0)) < 360


@pytest.mark.parametrize(
    ("anterior", "inferior", "bisector"),
    [
        (120, 240, 180),  # standard view
        (240, 120, 180),  # same points, labels swapped (mirrored view)
        (60, 300, 0),  # mirrored standard view: septal arc passes through 0
        (350, 80, 35),  # arc crosses 0 counter-clockwise
        (160, 280, 220),  # rotated by 40
        (100, 250, 175),  # 150 degrees apart
    ],
)
def test_septal_bisector_is_midpoint_of_shorter_arc(anterior, inferior, bisector):
    assert aha.septal_bisector_deg(anterior, inferior) == pytest.approx(bisector)


def test_numbering_direction_follows_insertion_points():
    assert aha.numbering_direction(120, aha.septal_bisector_deg(120, 240)) == 1
    assert aha.numbering_direction(60, aha.septal_bisector_deg(60, 300)) == -1
    assert aha.numbering_direction(350, aha.septal_bisector_deg(350, 80)) == 1


# Standard view: anterior up, RV on the left, insertion points at 120 and 240.
STANDARD_BASAL = {
    1: (60, 120), 2: (120, 180), 3: (180, 240), 4: (240, 300), 5: (300, 360), 6: (0, 60),
}
STANDARD_APICAL = {13: (45, 135), 14: (135, 225), 15: (225, 315), 16: (315, 45)}


def check_arcs(labels, arcs, rotation=0.0, mirrored=False):
    rows, cols = np.nonzero(labels)
    theta = aha.angle_deg(rows, cols, CENTRE)
    assert set(np.unique(labels[labels > 0])) == set(arcs)
    for segment, (start, end) in arcs.items():
        if mirrored:  # reflect about the vertical axis: theta -> 180 - theta
            start, end = 180 - end, 180 - start
        inside = in_arc(theta[labels[rows, cols] == segment], start + rotation, end + rotation)
        assert inside.all(), f"segment {segment} has pixels outside its arc"


def test_standard_view_basal_and_mid():
    mask = ring()
    basal = aha.sector_labels(mask, CENTRE, 180.0, "basal", anterior_deg=120.0)
    mid = aha.sector_labels(mask, CENTRE, 180.0, "mid", anterior_deg=120.0)
    expected = {90: 1, 150: 2, 210: 3, 270: 4, 330: 5, 30: 6}
    assert {t: label_at(basal, t) for t in expected} == expected
    assert {t: label_at(mid, t) for t in expected} == {t: s + 6 for t, s in expected.items()}
    check_arcs(basal, STANDARD_BASAL)
    assert (basal[~mask] == 0).all() and (basal[mask] > 0).all()
    # The anterior insertion (120) is the 1|2 boundary, the inferior one (240) the 3|4 boundary.
    assert (label_at(basal, 118), label_at(basal, 122)) == (1, 2)
    assert (label_at(basal, 238), label_at(basal, 242)) == (3, 4)


def test_default_direction_is_standard_view():
    mask = ring()
    np.testing.assert_array_equal(
        aha.sector_labels(mask, CENTRE, 180.0, "basal"),
        aha.sector_labels(mask, CENTRE, 180.0, "basal", anterior_deg=120.0),
    )


def test_standard_view_apical():
    apical = aha.sector_labels(ring(), CENTRE, 180.0, "apical", anterior_deg=120.0)
    expected = {90: 13, 180: 14, 270: 15, 0: 16}
    assert {t: label_at(apical, t) for t in expected} == expected
    check_arcs(apical, STANDARD_APICAL)


def test_rotated_view():
    anterior, inferior = 160.0, 280.0
    septal = aha.septal_bisector_deg(anterior, inferior)
    basal = aha.sector_labels(ring(), CENTRE, septal, "basal", anterior_deg=anterior)
    apical = aha.sector_labels(ring(), CENTRE, septal, "apical", anterior_deg=anterior)
    check_arcs(basal, STANDARD_BASAL, rotation=40)
    check_arcs(apical, STANDARD_APICAL, rotation=40)
    assert label_at(basal, 130) == 1 and label_at(basal, 250) == 3


def test_mirrored_view_numbers_clockwise():
    anterior, inferior = 60.0, 300.0  # RV on the right, anterior still up
    septal = aha.septal_bisector_deg(anterior, inferior)
    basal = aha.sector_labels(ring(), CENTRE, septal, "basal", anterior_deg=anterior)
    expected = {90: 1, 30: 2, 330: 3, 270: 4, 210: 5, 150: 6}
    assert {t: label_at(basal, t) for t in expected} == expected
    check_arcs(basal, STANDARD_BASAL, mirrored=True)
    apical = aha.sector_labels(ring(), CENTRE, septal, "apical", anterior_deg=anterior)
    assert {t: label_at(apical, t) for t in (90, 0, 270, 180)} == {90: 13, 0: 14, 270: 15, 180: 16}
    check_arcs(apical, STANDARD_APICAL, mirrored=True)


def test_mirrored_and_rotated_view():
    anterior, inferior = 330.0, 210.0  # anterior towards the right, RV down, mirrored
    septal = aha.septal_bisector_deg(anterior, inferior)
    assert septal == pytest.approx(270.0)
    mid = aha.sector_labels(ring(), CENTRE, septal, "mid", anterior_deg=anterior)
    expected = {0: 7, 300: 8, 240: 9, 180: 10, 120: 11, 60: 12}
    assert {t: label_at(mid, t) for t in expected} == expected


def test_segment_sizes_are_equal_on_a_ring():
    basal = aha.sector_labels(ring(inner=200, outer=240, shape=(501, 501), centre=(250, 250)),
                              (250, 250), 180.0, "basal")
    counts = np.bincount(basal.ravel(), minlength=7)[1:]
    assert counts.min() / counts.max() > 0.98


def test_territories_partition_the_segments():
    segments = [s for territory in aha.TERRITORIES.values() for s in territory]
    assert sorted(segments) == list(range(1, 17))
    assert set(aha.TERRITORIES) == {"lad", "rca", "lcx"}


def test_unknown_level_is_rejected():
    with pytest.raises(ValueError, match="level"):
        aha.sector_labels(ring(), CENTRE, 180.0, "apex")


# ----------------------------------------------------------------------------- the aha step
HEART_CENTRE = (64.0, 64.0)
EPICARDIUM_PX = 28.0


def heart(rv_start=120.0, rv_end=240.0, spacing_mm=1.0, rv_wall_mm=3.0, shape=(128, 128)):
    """Labels of an LV ring (blood pool radius 20 px, wall 8 px) and an RV crescent
    14 px deep whose free wall's mid-line meets the epicardium at ``rv_start``
    and ``rv_end`` (the RV arc runs counter-clockwise from the one to the other)."""
    rows, cols = np.indices(shape)
    dist = np.hypot(rows - HEART_CENTRE[0], cols - HEART_CENTRE[1])
    theta = aha.angle_deg(rows, cols, HEART_CENTRE)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[dist <= 20.0] = LV_BLOOD
    labels[(dist > 20.0) & (dist <= EPICARDIUM_PX)] = MYOCARDIUM
    half_wall_deg = np.degrees(rv_wall_mm / 2 / (EPICARDIUM_PX * spacing_mm))
    in_rv_arc = in_arc(theta, rv_start + half_wall_deg, rv_end - half_wall_deg)
    labels[(dist > EPICARDIUM_PX) & (dist <= EPICARDIUM_PX + 14.0) & in_rv_arc] = RV_BLOOD
    return labels


def angle_error(a, b):
    return abs(float(np.mod(a - b + 180.0, 360.0) - 180.0))


def heart_label_at(labels, theta_deg, radius=24.0):
    """Label of the myocardium pixel at display angle ``theta_deg`` of :func:`heart`."""
    return label_at(labels, theta_deg, radius=radius, centre=HEART_CENTRE)


def orientation(anterior_deg, mirrored=False, tilt=0.0):
    """ImageOrientationPatient whose projected patient anterior shows at ``anterior_deg``
    (mirrored: at 180 - anterior_deg); ``tilt`` turns the plane out of the anterior axis."""
    phi = np.radians(anterior_deg)
    anterior = np.array([0.0, -np.cos(tilt), np.sin(tilt)])  # in-plane part of (0, -1, 0)
    across = np.array([1.0, 0.0, 0.0])
    right = np.cos(phi) * anterior + np.sin(phi) * across
    up = np.sin(phi) * anterior - np.cos(phi) * across
    return [*(-right if mirrored else right), *(-up)]


STANDARD_IOP = orientation(90.0)


@pytest.mark.parametrize(
    ("rv_start", "rv_end"),
    [
        (120, 240),  # standard view
        (300, 60),  # mirrored: RV on the right, arc through 0
        (200, 330),  # rotated
        (350, 100),  # arc through 0 counter-clockwise
        (45, 225),  # RV wrapping 180 degrees
        (150, 220),  # small RV (apical)
    ],
)
@pytest.mark.parametrize("spacing_mm", [1.0, (1.5, 1.5)])
def test_rv_insertion_points_on_a_synthetic_heart(rv_start, rv_end, spacing_mm):
    labels = heart(rv_start, rv_end, spacing_mm=float(np.mean(spacing_mm)))
    found = aha.rv_insertion_points_deg(labels, HEART_CENTRE, spacing_mm)
    assert found is not None
    assert angle_error(found[0], rv_start) < 1.5 and angle_error(found[1], rv_end) < 1.5, found


def test_rv_insertion_points_need_rv_next_to_the_lv():
    labels = heart()
    no_rv = np.where(labels == RV_BLOOD, 0, labels)
    assert aha.rv_insertion_points_deg(no_rv, HEART_CENTRE, 1.0) is None
    far_rv = no_rv.copy()
    far_rv[5:20, 5:20] = RV_BLOOD  # blood pool far from the LV: not an insertion
    assert aha.rv_insertion_points_deg(far_rv, HEART_CENTRE, 1.0) is None
    speck = no_rv.copy()
    speck[64, 93:96] = RV_BLOOD  # a few pixels touching the LV are noise, not an RV
    assert aha.rv_insertion_points_deg(speck, HEART_CENTRE, 1.0) is None
    surrounded = heart(0.0, 359.9)  # an RV all round the LV has no ends
    surrounded[(surrounded == BACKGROUND) & (np.hypot(*(np.indices(surrounded.shape) - 64.0))
                                              < 40)] = RV_BLOOD
    assert aha.rv_insertion_points_deg(surrounded, HEART_CENTRE, 1.0) is None


def test_rv_insertion_points_tolerate_noisy_masks():
    labels = heart(120, 240)
    rows, cols = np.indices(labels.shape)
    dist = np.hypot(rows - 64, cols - 64)
    theta = aha.angle_deg(rows, cols, HEART_CENTRE)
    noisy = labels.copy()
    noisy[(labels == RV_BLOOD) & (dist <= EPICARDIUM_PX + 2)] = BACKGROUND  # 2 px gap
    noisy[(labels == RV_BLOOD) & in_arc(theta, 175, 181)] = BACKGROUND  # a break in the RV
    noisy[60:64, 93:95] = RV_BLOOD  # a speck touching the lateral wall
    noisy[108:112, 31:35] = LV_BLOOD  # a stray LV island beyond the inferior insertion
    found = aha.rv_insertion_points_deg(noisy, HEART_CENTRE, 1.0)
    assert found is not None
    assert angle_error(found[0], 120) < 3 and angle_error(found[1], 240) < 3, found


@pytest.mark.parametrize(
    ("iop", "expected"),
    [
        (STANDARD_IOP, 90.0),  # axial-like: anterior up
        ([1, 0, 0, 0, -1, 0], 270.0),  # image down is anterior
        ([0, -1, 0, 0, 0, -1], 0.0),  # image right is anterior
        (orientation(35.0), 35.0),
        (orientation(250.0, tilt=1.0), 250.0),  # oblique plane
        (orientation(35.0, mirrored=True), 145.0),
        (orientation(300.0, mirrored=True, tilt=-0.7), 240.0),
    ],
)
def test_anterior_display_deg(iop, expected):
    assert angle_error(aha.anterior_display_deg(iop), expected) < 1e-6


def test_anterior_display_deg_is_none_without_an_in_plane_anterior():
    assert aha.anterior_display_deg(None) is None
    assert aha.anterior_display_deg([1, 0, 0, 0, 0, -1]) is None  # coronal plane
    assert aha.anterior_display_deg(orientation(60.0, tilt=np.radians(88))) is None


@pytest.mark.parametrize(
    ("a", "b", "anterior", "expected"),
    [
        (120, 240, 90.0, (120, 240)),
        (240, 120, 90.0, (120, 240)),
        (300, 60, 90.0, (60, 300)),  # mirrored
        (120, 240, 270.0, (240, 120)),  # image upside down
        (350, 100, 20.0, (350, 100)),
        (350, 100, 80.0, (100, 350)),
        (300, 60, None, (60, 300)),  # unknown orientation: image up is anterior
    ],
)
def test_order_insertions(a, b, anterior, expected):
    assert aha.order_insertions(a, b, anterior) == expected


def test_segment_geometry_standard_view():
    labels = np.stack([heart(120, 240), heart(125, 235), heart(140, 220)])
    geometry = aha.segment_geometry(labels, ["basal", "mid", "apical"], STANDARD_IOP, 1.0)
    assert geometry.messages == []
    assert geometry.anterior_deg == pytest.approx(90.0)
    np.testing.assert_allclose(geometry.centre, [HEART_CENTRE] * 3, atol=1e-9)
    assert angle_error(geometry.rv_insertion_deg[0][0], 120) < 1.5
    assert angle_error(geometry.rv_insertion_deg[0][1], 240) < 1.5
    assert all(angle_error(s, 180) < 1.5 for s in geometry.septal_deg)
    assert geometry.aha.dtype == np.uint8 and geometry.aha.shape == labels.shape
    np.testing.assert_array_equal(geometry.aha > 0, labels == MYOCARDIUM)
    basal = {90: 1, 150: 2, 210: 3, 270: 4, 330: 5, 30: 6}
    assert {t: heart_label_at(geometry.aha[0], t) for t in basal} == basal
    assert {t: heart_label_at(geometry.aha[1], t) for t in basal} == {
        t: s + 6 for t, s in basal.items()
    }
    apical = {90: 13, 180: 14, 270: 15, 0: 16}
    assert {t: heart_label_at(geometry.aha[2], t) for t in apical} == apical


@pytest.mark.parametrize("rotation", [0.0, 70.0, 200.0])
def test_segment_geometry_mirrored_views_number_clockwise(rotation):
    # Mirror of the standard view (RV on the right), turned by ``rotation``.
    labels = heart(300 + rotation, 60 + rotation)[None]
    iop = orientation(90.0 - rotation, mirrored=True)  # anterior shows at 90 + rotation
    geometry = aha.segment_geometry(labels, ["basal"], iop, 1.0)
    anterior, inferior = geometry.rv_insertion_deg[0]
    assert angle_error(anterior, 60 + rotation) < 1.5
    assert angle_error(inferior, 300 + rotation) < 1.5
    expected = {90: 1, 30: 2, 330: 3, 270: 4, 210: 5, 150: 6}  # clockwise from the top
    found = {t: heart_label_at(geometry.aha[0], t + rotation) for t in expected}
    assert found == expected


def test_segment_geometry_upside_down_image_swaps_anterior_and_inferior():
    labels = heart(120, 240)[None]
    geometry = aha.segment_geometry(labels, ["mid"], orientation(270.0), 1.0)
    assert angle_error(geometry.rv_insertion_deg[0][0], 240) < 1.5
    expected = {270: 7, 210: 8, 150: 9, 90: 10, 30: 11, 330: 12}
    assert {t: heart_label_at(geometry.aha[0], t) for t in expected} == expected


def test_segment_geometry_rv_wrapping_half_the_lv():
    geometry = aha.segment_geometry(heart(100, 280)[None], ["basal"], STANDARD_IOP, 1.0)
    assert angle_error(geometry.septal_deg[0], 190) < 1.5  # the bisector facing the RV
    assert heart_label_at(geometry.aha[0], 185) == 2 and heart_label_at(geometry.aha[0], 195) == 3


def test_segment_geometry_takes_the_nearest_slices_insertions():
    no_rv = np.where(heart() == RV_BLOOD, BACKGROUND, heart())
    labels = np.stack([heart(120, 240), no_rv, heart(130, 230), no_rv, no_rv])
    levels = ["basal", "basal", "mid", "mid", "apical"]
    geometry = aha.segment_geometry(labels, levels, STANDARD_IOP, 1.0)
    assert geometry.messages == [
        "slice 2 (basal): no RV insertion found, took slice 1's",
        "slice 4 (mid): no RV insertion found, took slice 3's",
        "slice 5 (apical): no RV insertion found, took slice 3's",
    ]
    assert geometry.rv_insertion_deg[1] == geometry.rv_insertion_deg[0]
    insertions = geometry.rv_insertion_deg
    assert insertions[3] == insertions[4] == insertions[2]
    assert heart_label_at(geometry.aha[1], 90) == 1 and heart_label_at(geometry.aha[4], 180) == 14


def test_segment_geometry_leaves_a_slice_without_lv_empty():
    labels = np.stack([heart(), np.zeros((128, 128), dtype=np.uint8)])
    geometry = aha.segment_geometry(labels, ["basal", "mid"], STANDARD_IOP, 1.0)
    assert geometry.messages == ["slice 2 (mid): no LV, no segments"]
    assert not geometry.aha[1].any() and np.isnan(geometry.centre[1]).all()


def test_segment_geometry_without_any_rv_is_an_input_error():
    no_rv = np.where(heart() == RV_BLOOD, BACKGROUND, heart())
    with pytest.raises(InputError, match="RV") as caught:
        aha.segment_geometry(np.stack([no_rv, no_rv]), ["basal", "mid"], STANDARD_IOP, 1.0)
    assert "\n" not in str(caught.value)


def test_segment_statistics_ignore_nan_and_report_absent_segments():
    segments = np.zeros((1, 4, 5), dtype=np.uint8)
    segments[0, 0, :4] = 1
    segments[0, 1, :3] = 7
    values = np.full(segments.shape, 9.0)  # outside the segments: ignored
    values[0, 0, :4] = [1.0, 2.0, 6.0, np.nan]
    values[0, 1, :3] = np.nan  # segment 7 imaged but without finite values
    statistics = aha.segment_statistics(values, segments)
    assert [row["segment"] for row in statistics] == list(range(1, 17))
    first = statistics[0]
    assert first["pixels"] == 3
    assert first["mean"] == pytest.approx(3.0) and first["median"] == pytest.approx(2.0)
    assert first["sd"] == pytest.approx(np.std([1.0, 2.0, 6.0]))
    for row in statistics[1:]:
        assert row["pixels"] == 0 and row["mean"] is row["median"] is row["sd"] is None
    with pytest.raises(ValueError, match="shape"):
        aha.segment_statistics(values[0], segments)


def test_territory_means_and_lowest_territory():
    values = {s: 3.0 for s in range(1, 17)}
    values.update({3: 1.0, 4: 1.4, 9: 1.2, 10: 1.6, 15: None})  # RCA defect, apex 15 missing
    means = aha.territory_means(values)
    assert means["rca"] == pytest.approx(1.3) and means["lad"] == means["lcx"] == 3.0
    assert aha.lowest_territory(values) == "rca"
    apical_only = {13: 2.0, 14: float("nan"), 15: 2.5, 16: 1.5}
    assert aha.territory_means(apical_only) == {"lad": 2.0, "rca": 2.5, "lcx": 1.5}
    assert aha.lowest_territory(apical_only) == "lcx"
    assert aha.lowest_territory({}) is None
