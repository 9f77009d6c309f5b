"""File > Save Selected Layers: the labels layer as DICOM Segmentations (npe2 writer)."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest

from napari_perfroi._napari.layers import STORE_KEY
from napari_perfroi._napari.writer import write_labels_layer
from napari_perfroi.dicom_seg_import import import_segmentation
from napari_perfroi.errors import InputError
from napari_perfroi.study import Study

PLUGIN = "napari-perfroi"


def test_painted_labels_saved_as_dicom_segmentations_import_back(
        make_napari_viewer, full_store_path, tmp_path):
    viewer = make_napari_viewer()
    viewer.open(str(full_store_path), plugin=PLUGIN)
    layer = viewer.layers["labels"]
    layer.paint((1, 5, 20, 20), 3)  # slice 1, dynamic 5: now edited
    painted = np.asarray(layer.data).copy()
    assert (painted != Study.open(full_store_path).read("labels")).any()

    written = layer.save(str(tmp_path / "patient.dcm"), plugin=PLUGIN)

    folder = tmp_path / "patient"
    segmentations = sorted(folder.glob("t*.dcm"))
    assert [p.name for p in segmentations] == [f"t{t:03d}.dcm" for t in range(1, 41)]
    assert set(segmentations) <= {Path(p) for p in written}
    kinds = {int(p.stem[1:]) - 1: {s.SegmentAlgorithmType
                                   for s in hd.seg.segread(p).SegmentSequence}
             for p in segmentations[4:7]}
    assert kinds == {4: {"AUTOMATIC"}, 5: {"SEMIAUTOMATIC"}, 6: {"AUTOMATIC"}}
    study = Study.open(full_store_path, writable=True)
    imported = import_segmentation(folder, study)  # the series in images/ is left aside
    np.testing.assert_array_equal(study.read("labels"), painted)
    assert imported.edited == 1 and study.read("labels_edited")[1, 5]


def test_only_a_study_s_labels_layer_can_be_saved(full_store_path, tmp_path):
    data, meta = np.zeros((2, 3, 8, 8), dtype=np.uint8), {"name": "mine", "metadata": {}}
    with pytest.raises(InputError, match="'mine' does not belong to a study store"):
        write_labels_layer(str(tmp_path / "mine.dcm"), data, meta)
    meta["metadata"] = {STORE_KEY: str(full_store_path)}
    with pytest.raises(InputError, match=r"'mine' has shape \(2, 3, 8, 8\), the study"):
        write_labels_layer(str(tmp_path / "mine.dcm"), data, meta)
    assert not (tmp_path / "mine").exists()
