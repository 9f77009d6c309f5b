"""The batch runner on a real local cluster: good and broken studies, resume, --force."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
import zipfile
from pathlib import Path

import pytest

from napari_perfroi.batch import SUMMARY_COLUMNS, expand_sources, plan_jobs, study_name
from napari_perfroi.cli import main
from napari_perfroi.dicom_export import export_study
from napari_perfroi.errors import InputError
from napari_perfroi.phantom import write_phantom

DYNAMICS = 24  # short series keep the steps quick


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Study sources: 4 good (store, DICOM folder, zip, one slice) and 3 broken."""
    root = tmp_path_factory.mktemp("batch") / "inputs"
    root.mkdir()
    write_phantom(root / "good.zarr", seed=21, n_dynamics=DYNAMICS)
    write_phantom(root / "single.zarr", seed=24, n_dynamics=DYNAMICS, n_slices=1,
                  acquisition_order=(0,))
    (root.parent / "scratch").mkdir()
    exported = write_phantom(root.parent / "scratch" / "dicom.zarr", seed=22, n_dynamics=DYNAMICS)
    files = export_study(exported, root / "site1" / "case")
    (root / "site2").mkdir()
    with zipfile.ZipFile(root / "site2" / "case.zip", "w") as archive:
        for path in files:
            archive.write(path, path.name)
    # Broken: a truncated DICOM file, an empty folder, an unknown store format version.
    shutil.copytree(root / "site1" / "case", root / "truncated")
    victim = sorted((root / "truncated").iterdir())[5]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    (root / "empty").mkdir()
    shutil.copytree(root / "good.zarr", root / "future.zarr")
    meta_path = root / "future.zarr" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["perfroi"]["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    return root


def _sources(inputs: Path) -> list[str]:
    return [str(inputs / "*.zarr"), str(inputs / "site1" / "case"),
            str(inputs / "site2" / "case.zip"), str(inputs / "truncated"), str(inputs / "empty")]


def _hashes(folder: Path) -> dict[str, str]:
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _summary(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "summary.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == SUMMARY_COLUMNS
        return {row["study"]: row for row in reader}


def _batch(capsys, *args: str) -> str:
    assert main(["batch", *args, "--workers", "2"]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_batch_good_and_broken_studies_resume_and_force(inputs, tmp_path, capsys):
    before = _hashes(inputs)
    out = tmp_path / "out"

    assert _batch(capsys, *_sources(inputs), "--out", str(out)) == "4 done, 0 skipped, 3 failed"
    rows = _summary(out)
    assert list(rows) == ["future", "good", "single", "case", "case-2", "truncated", "empty"]
    errors = {name: rows[name]["error"] for name in rows if rows[name]["status"] == "failed"}
    assert set(errors) == {"future", "truncated", "empty"}
    assert "unknown format_version 99" in errors["future"]
    assert "truncated pixel data" in errors["truncated"]
    assert str(inputs / "empty") in errors["empty"]
    assert all("\n" not in error for error in errors.values())
    for name in ("good", "single", "case", "case-2"):
        row = rows[name]
        assert row["status"] == "done" and row["error"] == ""
        assert math.isfinite(float(row["global_mbf"])) and float(row["global_mbf"]) > 0
        assert row["lowest_territory"] in ("lad", "rca", "lcx")
        assert row["aif_source"]
        assert (out / "reports" / name / "report.json").is_file()
        assert (out / "studies" / f"{name}.zarr" / "aha").is_dir()
    assert "missing slices" in rows["single"]["qa"]
    assert rows["single"]["segment_13"] == ""  # no apical slice
    assert rows["case"]["global_mbf"] == rows["case-2"]["global_mbf"]  # same study, folder and zip
    for name in errors:
        assert not (out / "studies" / f"{name}.zarr").exists()
        assert not (out / "reports" / name).exists()
    assert _hashes(inputs) == before

    report = out / "reports" / "good" / "report.json"
    first_written = report.stat().st_mtime_ns
    assert _batch(capsys, *_sources(inputs), "--out", str(out)) == "0 done, 4 skipped, 3 failed"
    again = _summary(out)
    statuses = {name: row["status"] for name, row in again.items()}
    assert statuses == {**dict.fromkeys(("good", "single", "case", "case-2"), "skipped"),
                        **dict.fromkeys(errors, "failed")}
    assert again["good"]["global_mbf"] == rows["good"]["global_mbf"]
    assert report.stat().st_mtime_ns == first_written

    assert _batch(capsys, str(inputs / "good.zarr"), "--out", str(out), "--force") == (
        "1 done, 0 skipped, 0 failed")
    assert report.stat().st_mtime_ns > first_written
    assert _summary(out)["good"]["global_mbf"] == rows["good"]["global_mbf"]
    assert _hashes(inputs) == before


def test_names_are_unique_and_file_safe(tmp_path):
    sources = [tmp_path / "a" / "case", tmp_path / "b" / "case.zip", tmp_path / "case-2.zarr",
               tmp_path / "c" / "Case 7.ZIP", tmp_path / "d" / "CASE"]
    names = [job.name for job in plan_jobs(sources, tmp_path / "out")]
    assert names == ["case", "case-2", "case-2-2", "Case_7", "CASE-3"]
    assert study_name(Path(".hidden.zarr")) == "hidden"


def test_quoted_globs_expand_and_folders_are_single_studies(tmp_path):
    for name in ("s1.zarr", "s2.zarr", "group"):
        (tmp_path / name).mkdir()
    (tmp_path / "group" / "s3.zarr").mkdir()
    (tmp_path / "study[1]").mkdir()
    patterns = ["*.zarr", "group", "s1.zarr", "study[1]"]
    found = expand_sources([str(tmp_path / pattern) for pattern in patterns])
    assert found == [tmp_path / "s1.zarr", tmp_path / "s2.zarr", tmp_path / "group",
                     tmp_path / "study[1]"]
    with pytest.raises(InputError, match="no such file or folder"):
        expand_sources([str(tmp_path / "nothing*")])


@pytest.mark.parametrize("case", ["missing_source", "zero_workers", "out_inside_source",
                                  "source_in_outputs", "missing_model"])
def test_batch_bad_arguments_are_one_line_exit_2(tmp_path, capsys, case):
    source = tmp_path / "study"
    source.mkdir()
    out = tmp_path / "out"
    args = {
        "missing_source": [str(tmp_path / "absent"), "--out", str(out)],
        "zero_workers": [str(source), "--out", str(out), "--workers", "0"],
        "out_inside_source": [str(source), "--out", str(source / "results")],
        "source_in_outputs": [str(out / "studies" / "x.zarr"), "--out", str(out)],
        "missing_model": [str(source), "--out", str(out), "--weights", str(tmp_path / "m.safetensors")],
    }[case]
    if case == "source_in_outputs":
        (out / "studies" / "x.zarr").mkdir(parents=True)
    assert main(["batch", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("perfroi batch: error: "), err
    assert not (out / "summary.csv").exists() and not (source / "results").exists()


@pytest.mark.parametrize("args", [["--out", "x"], ["s", "--out", "x", "--workers", "2",
                                                   "--scheduler", "tcp://127.0.0.1:8786"]])
def test_batch_usage_errors(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["batch", *args])
    assert exit_info.value.code == 2
    assert "usage: perfroi batch" in capsys.readouterr().err


def test_batch_with_lge_stacks_reports_viability(tmp_path, capsys):
    """Each study's LGE stack is imported, analysed and reported with it; a stack of
    another patient leaves the perfusion results and says why."""
    from napari_perfroi.lge.phantom import generate_lge_phantom, write_lge_dicom

    root = tmp_path / "inputs"
    for seed, name in ((22, "a"), (23, "b")):
        study = write_phantom(tmp_path / "scratch" / f"{name}.zarr", seed=seed, defect="lad",
                              n_dynamics=DYNAMICS)
        export_study(study, root / name, seed=seed)  # the export a scanner's LGE matches
    scar = {"scar_pattern": "transmural", "transmurality": 0.8, "lge_kind": "psir",
            "scar_segments": [1, 2, 7, 8, 13, 14]}
    write_lge_dicom(generate_lge_phantom(22, "lad", "lad", n_dynamics=DYNAMICS, **scar),
                    root / "a-lge")
    (root / "lge.csv").write_text("perfusion,lge\na,a-lge\nb,a-lge\n")
    before = _hashes(root)
    out = tmp_path / "out"

    assert _batch(capsys, str(root / "a"), str(root / "b"), "--out", str(out),
                  "--lge", str(root / "lge.csv")) == "2 done, 0 skipped, 0 failed"
    rows = _summary(out)
    assert rows["a"]["lge_source"] == str(root / "a-lge")
    assert float(rows["a"]["scar_percent"]) > 5.0
    assert rows["a"]["verdict_lad"] in ("infarct", "infarct with peri-infarct ischaemia")
    assert {rows["a"]["verdict_rca"], rows["a"]["verdict_lcx"]} <= {"normal", "ischaemia"}
    assert (out / "reports" / "a" / "viability.json").is_file()
    assert rows["b"]["status"] == "done" and rows["b"]["scar_percent"] == ""
    assert "LGE not analysed" in rows["b"]["qa"] and "another" in rows["b"]["qa"]
    assert not (out / "studies" / "b.zarr" / "lge").exists()
    assert _hashes(root) == before

    assert _batch(capsys, str(root / "a"), str(root / "b"), "--out", str(out),
                  "--lge", str(root / "lge.csv")) == "1 done, 1 skipped, 0 failed"

    (root / "bad.csv").write_text("perfusion,lge\na,missing-lge\n")
    assert main(["batch", str(root / "a"), "--out", str(out), "--lge",
                 str(root / "bad.csv")]) == 2
    assert "missing-lge" in capsys.readouterr().err
