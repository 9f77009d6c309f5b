"""AHA sector geometry: angles, septal bisector and 16-segment labels."""

import numpy as np
import pytest

from napari_perfroi import aha

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
