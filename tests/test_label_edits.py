"""Label edits: saved with their frames marked, kept by the segment step, learnt from."""

from __future__ import annotations

import numpy as np
import pytest

from napari_perfroi.errors import InputError
from napari_perfroi.label_edits import EDITED_LABELS, edited_frames, save_label_edits
from napari_perfroi.pipeline import run_step
from napari_perfroi.segment.finetune import study_series
from napari_perfroi.study import MYOCARDIUM, Study


def _paint_frame(study, s: int, t: int) -> np.ndarray:
    """The study's labels with frame (s, t) thickened: myocardium grown by a 3-pixel ring."""
    from scipy import ndimage

    labels = study.read("labels")
    heart = labels[s, t] > 0
    ring = ndimage.binary_dilation(heart, iterations=3) & ~heart
    labels[s, t][ring] = MYOCARDIUM
    return labels


def test_saving_marks_the_changed_frames_only(analysed_store):
    study = Study.open(analysed_store, writable=True)
    assert not edited_frames(study).any()
    labels = _paint_frame(study, 1, 5)
    assert save_label_edits(study, labels) == 1
    marks = edited_frames(study)
    assert marks[1, 5] and marks.sum() == 1
    np.testing.assert_array_equal(study.read("labels"), labels)
    assert save_label_edits(study, labels) == 0  # nothing new
    labels[0, 2] = 0
    assert save_label_edits(study, labels) == 1
    assert set(zip(*np.nonzero(edited_frames(study)))) == {(1, 5), (0, 2)}


@pytest.mark.parametrize("case", ["shape", "values"])
def test_bad_labels_are_refused_and_nothing_is_written(analysed_store, case):
    study = Study.open(analysed_store, writable=True)
    before = study.read("labels")
    bad = before[:, :-1] if case == "shape" else np.where(before == 1, 7, before)
    with pytest.raises(InputError, match="shape" if case == "shape" else "0-3"):
        save_label_edits(study, bad)
    np.testing.assert_array_equal(study.read("labels"), before)
    assert not study.has(EDITED_LABELS)


def test_segment_keeps_the_edited_frames(analysed_store):
    study = Study.open(analysed_store, writable=True)
    model_labels = study.read("labels")
    painted = _paint_frame(study, 2, 7)
    save_label_edits(study, painted)
    summary = run_step(study, "segment")
    assert "kept the edited labels of 1 frame(s)" in summary
    labels = study.read("labels")
    np.testing.assert_array_equal(labels[2, 7], painted[2, 7])
    assert not np.array_equal(labels[2, 7], model_labels[2, 7])
    others = np.ones(study.shape[:2], dtype=bool)
    others[2, 7] = False
    np.testing.assert_array_equal(labels[others], model_labels[others])
    assert study.attrs["steps"]["segment"]["parameters"]["kept_edited_frames"] == 1


def test_finetuning_targets_come_from_the_edited_frames_moved_back(phantom_store):
    study = Study.open(phantom_store, writable=True)
    for name in ("motion", "labels", "roi"):
        study.write(name, study.read(f"truth/{name}"))
    study.write("roi_state", np.full(study.shape[:2], 4, dtype=np.uint8))
    reference = study.attrs["reference_frame"]
    unedited = {item.slice_index: item for item in study_series(study)}
    assert not any(item.edited for item in unedited.values())

    motion = study.read("motion")
    s = 1
    moved_by = np.abs(motion[s] - motion[s, reference[s]]).sum(axis=1)
    moved = sorted(int(t) for t in np.argsort(moved_by)[-2:])  # the two frames that moved most
    assert moved_by[moved].min() > 1.0
    labels = study.read("labels")
    labels[s, moved, 0, 0] = 3  # edits far from the heart: the frames' labels are the truth's
    save_label_edits(study, labels)
    edited = {item.slice_index: item for item in study_series(study)}
    assert edited[s].edited and edited[s].labels_frames == moved
    # moved back by their motion, the edited frames' blood pool lies on the reference frame's
    # (without the motion the overlap is 0.80 for the frame that moved most)
    blood = [item.labels == 1 for item in (edited[s], unedited[s])]
    assert (blood[0] & blood[1]).sum() / blood[1].sum() > 0.95
    for other in (0, 2):
        np.testing.assert_array_equal(edited[other].labels, unedited[other].labels)
