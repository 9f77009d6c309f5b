"""The LGE steps, the viability verdicts and their report, on phantoms of one heart.

The perfusion study runs its flow on the true labels and motion (quick); the
LGE steps find the scar by the thresholding rules on the true LGE labels. The
models' own steps are checked in test_lge_models.py and the benchmark.
"""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest
from pypdf import PdfReader

from napari_perfroi.cli import main
from napari_perfroi.lge.phantom import write_lge_phantom
from napari_perfroi.lge.pipeline import run_lge_steps, steps_to_run
from napari_perfroi.lge.report import VIABILITY_FILES
from napari_perfroi.lge.scar import INFARCT, NORMAL, NOT_ASSESSED, PERI_INFARCT_ISCHAEMIA
from napari_perfroi.lge.store import LgeStudy
from napari_perfroi.phantom import write_phantom
from napari_perfroi.pipeline import run_step
from napari_perfroi.report import write_report
from napari_perfroi.study import Study

SEED = 3  # LAD defect: measured stress MBF < 1.5 in the LAD segments, > 1.5 elsewhere
THRESHOLD_STEPS = ["lge-aha", "lge-scar", "viability"]


@pytest.fixture(scope="module")
def perfusion_template(tmp_path_factory):
    """A phantom study with its flow report (true labels and motion); do not modify."""
    path = tmp_path_factory.mktemp("lge") / "p.zarr"
    study = write_phantom(path, seed=SEED, defect="lad", n_dynamics=24)
    study.write("labels", study.read("truth/labels"))
    study.write("motion", study.read("truth/motion"))
    for step in ("flow", "aha"):
        run_step(study, step)
    return path


@pytest.fixture
def study(perfusion_template, tmp_path):
    path = tmp_path / "p.zarr"
    shutil.copytree(perfusion_template, path)
    return Study.open(path, writable=True)


def _with_lge(study, **overrides):
    lge = write_lge_phantom(study, "lad", **overrides)
    lge.write("labels", lge.read("truth/labels"))
    return lge


def test_scar_in_part_of_the_defect_is_infarct_with_peri_infarct_ischaemia(study):
    lge = _with_lge(study, scar_segments=[7, 8], lge_kind="psir")
    summaries = run_lge_steps(study, THRESHOLD_STEPS, method="nsd", n_sd=5.0)
    assert set(summaries) == set(THRESHOLD_STEPS)
    document = lge.attrs["viability"]
    assert document["territories"] == {"lad": PERI_INFARCT_ISCHAEMIA, "rca": NORMAL,
                                       "lcx": NORMAL}
    scarred = {row["segment"] for row in document["segments"] if row["scar_class"] != "none"}
    assert scarred == {7, 8}
    truth = lge.attrs["truth"]["segment_scar_percent"]
    for row in document["segments"]:
        assert row["scar_percent"] == pytest.approx(truth[row["segment"] - 1], abs=10.0)
    assert document["absolute_mbf"] and document["qa"] == []
    abnormal = {row["segment"] for row in document["segments"] if row["perfusion_abnormal"]}
    assert abnormal == {1, 2, 7, 13, 14}  # the LAD segments measured under 1.5 mL/min/g
    assert lge.attrs["steps"]["lge-scar"]["parameters"]["n_sd"] == 5.0


def test_scar_over_the_whole_defect_is_infarct(study):
    lge = _with_lge(study, scar_segments=[1, 2, 7, 8, 13, 14], transmurality=0.9,
                    scar_pattern="transmural", lge_kind="psir")
    run_lge_steps(study, THRESHOLD_STEPS, method="fwhm")
    document = lge.attrs["viability"]
    assert document["territories"]["lad"] == INFARCT
    classes = {row["segment"]: row["scar_class"] for row in document["segments"]}
    assert {classes[s] for s in (1, 7, 13)} == {">=50 %"}
    assert document["global_scar_percent"] > 10.0


def test_a_magnitude_image_off_the_null_is_not_assessed(study):
    lge = _with_lge(study, lge_kind="magnitude", inversion_time_ms=150.0)
    run_lge_steps(study, THRESHOLD_STEPS, method="nsd")
    document = lge.attrs["viability"]
    assert len(document["qa"]) == 3 and all("not nulled" in line for line in document["qa"])
    assert all(row["scar_class"] is None for row in document["segments"])
    assert set(document["territories"].values()) == {NOT_ASSESSED}
    assert document["global_scar_percent"] is None


def test_without_a_flow_report_the_verdicts_wait_for_it(tmp_path):
    study = write_phantom(tmp_path / "raw.zarr", seed=SEED, defect="lad", n_dynamics=24)
    lge = _with_lge(study, lge_kind="psir")
    run_lge_steps(study, THRESHOLD_STEPS, method="nsd")
    document = lge.attrs["viability"]
    assert set(document["territories"].values()) == {NOT_ASSESSED}
    assert any("no flow report" in line for line in document["qa"])


def test_edited_scar_slices_are_kept_by_the_next_run(study):
    lge = _with_lge(study, scar_segments=[7, 8], lge_kind="psir")
    run_lge_steps(study, THRESHOLD_STEPS, method="nsd")
    painted = lge.read("scar")
    painted[0] = 0
    painted[0, (lge.read("labels")[0] == 2)] = 1  # the whole basal wall, by hand
    lge.write("scar", painted)
    lge.write("scar_edited", np.array([1, 0, 0], dtype=np.uint8))
    run_lge_steps(study, ["lge-scar", "viability"], method="fwhm")
    np.testing.assert_array_equal(lge.read("scar")[0], painted[0])
    rows = {row["segment"]: row for row in lge.attrs["viability"]["segments"]}
    assert all(rows[s]["scar_percent"] == pytest.approx(100.0) for s in range(1, 7))
    assert lge.attrs["steps"]["lge-scar"]["parameters"]["kept_edited_slices"] == [0]


def test_missing_inputs_run_the_steps_that_make_them(study):
    lge = write_lge_phantom(study, "lad")
    assert steps_to_run(lge, ["viability"]) == ["lge-segment", "lge-aha", "lge-scar", "viability"]
    lge.write("labels", lge.read("truth/labels"))
    assert steps_to_run(lge, ["viability"]) == ["lge-aha", "lge-scar", "viability"]
    assert steps_to_run(lge, ["lge-segment", "viability"]) == list(
        ("lge-segment", "lge-aha", "lge-scar", "viability"))


def test_report_writes_the_viability_files_and_a_second_pdf_page(study, tmp_path):
    lge = _with_lge(study, scar_segments=[7, 8], lge_kind="psir")
    before = write_report(study, tmp_path / "flow-only")
    assert not any(path.name in VIABILITY_FILES for path in before)
    run_lge_steps(study, THRESHOLD_STEPS, method="nsd")
    written = write_report(study, tmp_path / "report")
    names = {path.name for path in written}
    assert set(VIABILITY_FILES) <= names
    with open(tmp_path / "report" / "viability.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["segment"]) for row in rows] == list(range(1, 17))
    assert {row["scar_class"] for row in rows if row["territory"] != "LAD"} == {"none"}
    document = json.loads((tmp_path / "report" / "viability.json").read_text())
    assert document["territories"] == lge.attrs["viability"]["territories"]
    pdf = (tmp_path / "report" / "report.pdf").read_bytes()
    pages = PdfReader(io.BytesIO(pdf)).pages
    assert len(pages) == 2 and len(PdfReader(tmp_path / "flow-only" / "report.pdf").pages) == 1
    text = pages[1].extract_text()
    assert "Viability" in text and "LAD: infarct with peri-infarct ischaemia" in text
    assert "n-SD over remote myocardium" in text
    assert pdf == write_report(study, tmp_path / "again")[4].read_bytes()  # same bytes


def test_cli_phantom_with_lge_then_lge_analyze(tmp_path, capsys):
    store = tmp_path / "cli.zarr"
    assert main(["phantom", str(store), "--seed", str(SEED), "--defect", "lad", "--lge",
                 "--scar", "lad", "--set", "n_dynamics=24", "--lge-set", "lge_kind=psir"]) == 0
    assert "LGE (psir) 3 slice(s)" in capsys.readouterr().out
    lge = LgeStudy.open(store, writable=True)
    lge.write("labels", lge.read("truth/labels"))
    assert main(["lge-analyze", str(store), "--steps", "lge-aha,lge-scar,viability",
                 "--scar-method", "nsd", "--n-sd", "3"]) == 0
    out = capsys.readouterr().out
    assert "lge-scar: scar (n-SD over remote myocardium)" in out and "viability: LAD" in out
    assert main(["lge-analyze", str(store), "--steps", "lge-scar", "--scar-method", "nsd",
                 "--n-sd", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--n-sd must be positive" in err
    assert main(["lge-analyze", str(store), "--steps", "lge-nothing"]) == 2
    assert "unknown LGE step lge-nothing" in capsys.readouterr().err
    assert main(["phantom", str(tmp_path / "x.zarr"), "--seed", "1", "--scar", "lad"]) == 2
    assert "add --lge" in capsys.readouterr().err


def test_lge_analyze_on_a_store_without_lge_is_one_line(tmp_path, capsys):
    store = write_phantom(tmp_path / "no-lge.zarr", seed=SEED, n_dynamics=24).path
    assert main(["lge-analyze", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no LGE study" in err
