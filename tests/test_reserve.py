"""Stress and rest: the perfusion reserve (MPR or MPRI), its files, the CLI and the batch."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import matplotlib
import matplotlib.image
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from napari_perfroi.aha import TERRITORIES
from napari_perfroi.batch import (
    STATUS_DONE,
    STATUS_FAILED,
    SUMMARY_COLUMNS,
    BatchJob,
    StudyRecord,
    add_reserve,
    read_pairs,
)
from napari_perfroi.cli import main
from napari_perfroi.errors import InputError
from napari_perfroi.phantom import write_phantom
from napari_perfroi.pipeline import STEPS, run_step
from napari_perfroi.report import (
    RESERVE_COLOURS,
    RESERVE_COLUMNS,
    RESERVE_FILES,
    bullseye_wedge,
    reserve_bullseye_figure,
    write_report,
    write_reserve_report,
)
from napari_perfroi.reserve import (
    MPR,
    MPRI,
    pair_studies,
    perfusion_reserve,
)
from napari_perfroi.study import Study

TIMES = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
AIF = [0.0, 1.0, 8.0, 4.0, 2.0, 1.5]
LAD = TERRITORIES["lad"]
PNG_DPI = 120  # the report's PNG resolution
# Per-segment flow (mL/min/g) of the synthetic reports: a low LAD at stress.
STRESS_MBF = [1.0 + 0.04 * n if n in LAD else 3.0 + 0.05 * n for n in range(1, 17)]
REST_MBF = [0.8 + 0.03 * n for n in range(1, 17)]
# True rest flow per segment of the rest phantom, around a normal 1.0.
PHANTOM_REST_MBF = tuple(0.9 + 0.2 * ((7 * n) % 16) / 15 for n in range(16))


# ---------------------------------------------------------------- synthetic reports
def _report(mbf: list[float | None], upslope: list[float | None] | None = None,
            absolute: bool | None = True, model: str = "Fermi model") -> dict:
    """A flow report with per-segment ``mbf`` (None entries: not imaged) and relative
    ``upslope``s; ``absolute`` None leaves the key out, as older reports do."""
    upslope = upslope if upslope is not None else [None if v is None else v / 10 for v in mbf]
    levels = {n: 0 if n <= 6 else 1 if n <= 12 else 2 for n in range(1, 17)}
    curves, semiquant = [], []
    for n, (flow, slope) in enumerate(zip(mbf, upslope), start=1):
        tissue = [0.05 * (flow or 0.5) * a for a in AIF]
        curves.append({"slice": levels[n], "times_s": TIMES, "tissue": tissue,
                       "fitted": [0.97 * v for v in tissue], "fit_error": 0.02})
        semiquant.append(None if slope is None else {
            "upslope": 40 * slope, "relative_upslope": slope, "peak_enhancement": 100.0,
            "relative_peak": 0.2, "time_to_peak_s": 3.0, "first_pass_auc": 300.0})
    report = {
        "model": model, "flow": "blood", "hematocrit": 0.45, "units": "mL/min/g",
        "aif": AIF, "aif_times_s": TIMES, "aif_source": "aif series", "aif_slice": 0,
        "segment_mbf": mbf if absolute is not False else [None] * 16,
        "segment_stats": [None] * 16, "segment_curves": curves,
        "segment_semiquant": semiquant,
        "global_mbf": None, "territory_mbf": {}, "lowest_territory": None, "qa": [],
    }
    if absolute is not None:
        report["absolute_mbf"] = absolute
    return report


def _store(path: Path, report: dict | None, seed: int = 5) -> Study:
    """A small phantom-like store with ``report`` (None: not analysed) and a phantom seed."""
    study = Study.create(
        path, np.zeros((3, len(TIMES), 16, 16), np.uint16), pixel_spacing_mm=(2.0, 2.0),
        slice_thickness_mm=8.0, frame_times_s=[TIMES] * 3, slice_positions_mm=[0, 10, 20],
        source={"importer": "phantom"}, extra_attrs={"truth": {"seed": seed}},
    )
    if report is not None:
        study.update_attrs(report=report)
    return study



def test_reserve_per_segment_territory_and_global():
    rest_mbf = list(REST_MBF)
    rest_mbf[15 - 1] = None  # not imaged at rest
    reserve = perfusion_reserve(_report(STRESS_MBF), _report(rest_mbf))

    assert reserve.index == MPR
    for n in range(1, 17):
        expected = None if n == 15 else STRESS_MBF[n - 1] / rest_mbf[n - 1]
        assert reserve.segments[n - 1] == pytest.approx(expected), n
    for name, members in TERRITORIES.items():
        paired = [n for n in members if n != 15]
        stress = np.mean([STRESS_MBF[n - 1] for n in paired])
        rest = np.mean([rest_mbf[n - 1] for n in paired])
        pooled = reserve.territories[name]
        assert pooled.segments == paired
        assert (pooled.stress, pooled.rest) == (pytest.approx(stress), pytest.approx(rest))
        assert pooled.reserve == pytest.approx(stress / rest), name
    lad_ratios = [reserve.segments[n - 1] for n in LAD]
    assert reserve.territories["lad"].reserve != pytest.approx(np.mean(lad_ratios), abs=1e-4)
    paired = [n for n in range(1, 17) if n != 15]
    assert reserve.overall.reserve == pytest.approx(
        np.mean([STRESS_MBF[n - 1] for n in paired]) / np.mean([rest_mbf[n - 1] for n in paired]))
    assert reserve.qa == ["segment 15: no usable MBF at rest, no reserve"]


@pytest.mark.parametrize("lacking", ["stress", "rest", "both"])
def test_mpri_when_a_study_lacks_absolute_mbf(lacking):
    stress_slopes = [0.2 + 0.01 * n for n in range(1, 17)]
    rest_slopes = [0.1 + 0.002 * n for n in range(1, 17)]
    stress = _report(STRESS_MBF, stress_slopes, absolute=lacking == "rest")
    rest = _report(REST_MBF, rest_slopes, absolute=lacking == "stress")
    reserve = perfusion_reserve(stress, rest)

    assert reserve.index == MPRI == "MPRI (relative-upslope ratio)"
    assert reserve.segments == pytest.approx([s / r for s, r in zip(stress_slopes, rest_slopes)])
    lad = reserve.territories["lad"]
    assert lad.reserve == pytest.approx(np.mean([stress_slopes[n - 1] for n in LAD])
                                        / np.mean([rest_slopes[n - 1] for n in LAD]))
    study = "stress and rest" if lacking == "both" else lacking
    assert reserve.qa == [f"no absolute MBF in the {study} study: the reserve is the {MPRI}, "
                          "semi-quantitative"]


def test_older_reports_without_the_flag_are_absolute():
    reserve = perfusion_reserve(_report(STRESS_MBF, absolute=None),
                                _report(REST_MBF, absolute=None))
    assert reserve.index == MPR == "MPR (MBF ratio)"
    assert reserve.segments[0] == pytest.approx(STRESS_MBF[0] / REST_MBF[0])


def test_no_index_for_a_segment_gives_no_reserve():
    rest = _report(REST_MBF, absolute=False)
    del rest["segment_semiquant"]  # a semi-quantitative index the report lacks
    reserve = perfusion_reserve(_report(STRESS_MBF), rest)
    assert reserve.index == MPRI and reserve.segments == [None] * 16
    assert reserve.overall.reserve is None and reserve.territories["lad"].reserve is None
    assert "the rest study has no segment relative upslope: no reserve" in reserve.qa

    slopes = [0.3] * 16
    slopes[2], slopes[4] = None, -0.01  # missing; not positive (noise)
    reserve = perfusion_reserve(_report(STRESS_MBF, slopes, absolute=False),
                                _report(REST_MBF, [0.1] * 16, absolute=False))
    assert [n for n, v in enumerate(reserve.segments, 1) if v is None] == [3, 5]
    assert reserve.segments[0] == pytest.approx(3.0)
    assert "segments 3, 5: no usable relative upslope at stress, no reserve" in reserve.qa


def test_swapped_studies_are_flagged():
    reserve = perfusion_reserve(_report(REST_MBF), _report(STRESS_MBF))
    assert reserve.overall.reserve < 1
    assert any("wrong way round" in line for line in reserve.qa)


# ---------------------------------------------------------------- the report command
def test_report_with_rest_writes_the_reserve_files(tmp_path, capsys):
    stress = _store(tmp_path / "stress.zarr", _report(STRESS_MBF, model="Fermi model"))
    rest = _store(tmp_path / "rest.zarr", _report(REST_MBF, model="2CXM model"))
    out = tmp_path / "out"
    assert main(["report", str(stress.path), "--rest", str(rest.path), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    listed = [Path(line.strip()).name for line in lines[1:-1]]
    assert listed[-4:] == list(RESERVE_FILES) and "bullseye.png" in listed
    assert lines[-1].startswith(f"{MPR}: global ")
    assert sorted(p.name for p in out.iterdir()) == sorted(listed)

    with open(out / "reserve.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == RESERVE_COLUMNS
    assert [int(row["segment"]) for row in rows] == list(range(1, 17))
    assert rows[0]["name"] == "basal anterior" and rows[0]["territory"] == "lad"
    assert {row["index"] for row in rows} == {MPR}
    for row, stress_mbf, rest_mbf in zip(rows, STRESS_MBF, REST_MBF):
        assert float(row["stress"]) == pytest.approx(stress_mbf, abs=1e-4)
        assert float(row["rest"]) == pytest.approx(rest_mbf, abs=1e-4)
        assert float(row["reserve"]) == pytest.approx(stress_mbf / rest_mbf, abs=1e-4)

    document = json.loads((out / "reserve.json").read_text())
    assert document["index"] == MPR and document["ischaemic_threshold"] == 2.0
    assert document["stress"]["study"] == "stress" and document["rest"]["study"] == "rest"
    assert document["stress"]["model"] == "Fermi model"
    assert document["rest"]["model"] == "2CXM model"
    assert [entry["reserve"] for entry in document["segments"]] == pytest.approx(
        [s / r for s, r in zip(STRESS_MBF, REST_MBF)])
    assert set(document["territories"]) == {"lad", "rca", "lcx"}
    lad = document["territories"]["lad"]
    assert lad["reserve"] == pytest.approx(lad["stress"] / lad["rest"]) and lad["segments"] == list(LAD)
    assert document["global"]["reserve"] == pytest.approx(np.mean(STRESS_MBF)
                                                          / np.mean(REST_MBF))
    assert document["qa"] == []
    for name in ("reserve_bullseye.png", "curves_stress_rest.png"):
        assert matplotlib.image.imread(out / name).shape[2] == 4


def test_report_json_names_the_mpri_and_is_strict(tmp_path):
    stress = _store(tmp_path / "stress.zarr", _report(STRESS_MBF, absolute=False))
    rest = _store(tmp_path / "rest.zarr", _report(REST_MBF))
    write_reserve_report(pair_studies(stress, rest), tmp_path / "out")
    text = (tmp_path / "out" / "reserve.json").read_text()
    document = json.loads(text)
    assert document["index"] == MPRI and document["ischaemic_threshold"] == 1.5
    assert document["stress"]["absolute_mbf"] is False and document["rest"]["absolute_mbf"]
    assert document["qa"][0].startswith("no absolute MBF in the stress study")
    assert "NaN" not in text


def _one_error_line(capsys, args: list[str], out: Path) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("perfroi report: error: "), err
    assert not out.exists()
    return err


def test_rest_without_flow_report_is_one_line_and_writes_nothing(tmp_path, capsys):
    stress = _store(tmp_path / "stress.zarr", _report(STRESS_MBF))
    rest = _store(tmp_path / "rest.zarr", None)
    out = tmp_path / "out"
    err = _one_error_line(capsys, ["report", str(stress.path), "--rest", str(rest.path),
                                   "--out", str(out)], out)
    assert str(rest.path) in err and "no flow report yet" in err
    err = _one_error_line(capsys, ["report", str(rest.path), "--rest", str(stress.path),
                                   "--out", str(out)], out)
    assert str(rest.path) in err


def test_same_store_twice_is_refused(tmp_path, capsys):
    stress = _store(tmp_path / "stress.zarr", _report(STRESS_MBF))
    out = tmp_path / "out"
    (tmp_path / "link.zarr").symlink_to(stress.path)
    err = _one_error_line(capsys, ["report", str(stress.path), "--rest",
                                   str(tmp_path / "link.zarr"), "--out", str(out)], out)
    assert "the rest study is the stress study itself" in err


def test_another_patients_rest_study_is_a_warning(tmp_path, capsys):
    stress = _store(tmp_path / "stress.zarr", _report(STRESS_MBF), seed=5)
    rest = _store(tmp_path / "rest.zarr", _report(REST_MBF), seed=6)
    out = tmp_path / "out"
    assert main(["report", str(stress.path), "--rest", str(rest.path), "--out", str(out)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("perfroi report: warning: ")
    assert "phantom seed 5" in err[0] and "phantom seed 6" in err[0]
    assert json.loads((out / "reserve.json").read_text())["qa"] == [err[0].split("warning: ")[1]]


def test_copied_store_is_a_warning(tmp_path):
    stress = _store(tmp_path / "stress.zarr", _report(STRESS_MBF))
    shutil.copytree(stress.path, tmp_path / "copy.zarr")
    pair = pair_studies(stress, Study.open(tmp_path / "copy.zarr"))
    assert pair.warnings == ["stress and copy have identical flow reports: is one a copy of "
                             "the other?"]


# ---------------------------------------------------------------- real phantoms
@pytest.fixture(scope="module")
def phantom_pair(tmp_path_factory) -> tuple[Path, Path]:
    """One patient's analysed stress study (LAD defect) and rest study (flow about 1)."""
    root = tmp_path_factory.mktemp("reserve")
    stress = write_phantom(root / "stress.zarr", seed=21, defect="lad", n_dynamics=40)
    rest = write_phantom(root / "rest.zarr", seed=21, defect="lad", n_dynamics=40,
                         segment_mbf=PHANTOM_REST_MBF)
    for study in (stress, rest):
        for step in STEPS:
            run_step(study, step)
    return stress.path, rest.path


def test_phantom_reserve_is_low_in_the_defect_territory(phantom_pair, tmp_path, capsys):
    stress, rest = phantom_pair
    out = tmp_path / "out"
    assert main(["report", str(stress), "--rest", str(rest), "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""
    document = json.loads((out / "reserve.json").read_text())
    threshold = document["ischaemic_threshold"]
    territories = {name: value["reserve"] for name, value in document["territories"].items()}
    assert territories["lad"] < threshold < min(territories["rca"], territories["lcx"])
    if document["index"] == MPR:  # the truth: stress flow over rest flow
        truth = Study.open(stress).attrs["truth"]["segment_mbf"]
        true_lad = (np.mean([truth[n - 1] for n in LAD])
                    / np.mean([PHANTOM_REST_MBF[n - 1] for n in LAD]))
        assert territories["lad"] == pytest.approx(true_lad, rel=0.35)

    # The PNG: each segment in the colour of its reserve, red in the LAD, green elsewhere.
    pair = pair_studies(Study.open(stress), Study.open(rest))
    fig = reserve_bullseye_figure(pair)
    fig.set_dpi(PNG_DPI)
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    pixels = matplotlib.image.imread(out / "reserve_bullseye.png")[..., :3]
    assert pixels.shape[:2] == fig.canvas.get_width_height()[::-1]
    colours = matplotlib.colormaps[RESERVE_COLOURS]
    for segment in (1, 2, 7, 8, 3, 4, 9, 10, 5, 6, 11, 12):
        inner, outer, start, end = bullseye_wedge(segment)
        angle = math.radians(start + 0.2 * (end - start))  # away from the printed value
        radius = (inner + outer) / 2
        col, row = ax.transData.transform((radius * math.cos(angle), radius * math.sin(angle)))
        red, green, _ = pixels[int(pixels.shape[0] - row), int(col)]
        value = document["segments"][segment - 1]["reserve"]
        assert (red, green) == pytest.approx(colours(value / (2 * threshold))[:2], abs=0.03)
        assert (red > green) == (segment in LAD), segment
    assert matplotlib.image.imread(out / "curves_stress_rest.png").shape[2] == 4


def test_phantom_mpri_when_rest_has_no_absolute_mbf(phantom_pair, tmp_path):
    stress, rest = phantom_pair
    copy = Study.open(shutil.copytree(rest, tmp_path / "rest.zarr"), writable=True)
    report = copy.attrs["report"]
    report.update(absolute_mbf=False, segment_mbf=[None] * 16)  # as for a saturated AIF
    copy.update_attrs(report=report)
    reserve = pair_studies(Study.open(stress), copy).reserve
    assert reserve.index == MPRI and reserve.threshold == 1.5
    assert all(value is not None for value in reserve.segments)
    territories = {name: pooled.reserve for name, pooled in reserve.territories.items()}
    assert territories["lad"] < reserve.threshold < min(territories["rca"], territories["lcx"])


# ---------------------------------------------------------------- batch
def _pairs_file(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("stress,rest\n" + "".join(f"{s},{r}\n" for s, r in rows))
    return path


def test_batch_pairs_add_reserve_columns(phantom_pair, tmp_path, capsys):
    """Studies already analysed in the output folder are skipped; the pairing still runs."""
    stress, rest = phantom_pair
    out = tmp_path / "out"
    for source in (stress, rest):
        name = source.name.removesuffix(".zarr")
        shutil.copytree(source, out / "studies" / source.name)
        write_report(Study.open(out / "studies" / source.name), out / "reports" / name)
    pairs = _pairs_file(stress.parent / "pairs.csv", [("stress.zarr", "rest.zarr")])
    assert main(["batch", str(stress), str(rest), "--pairs", str(pairs), "--out", str(out),
                 "--workers", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "0 done, 2 skipped, 0 failed"

    with open(out / "summary.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == SUMMARY_COLUMNS
        rows = {row["study"]: row for row in reader}
    document = json.loads((out / "reports" / "stress" / "reserve.json").read_text())
    row = rows["stress"]
    assert row["rest_study"] == "rest" and row["reserve_index"] == document["index"]
    assert float(row["global_reserve"]) == pytest.approx(document["global"]["reserve"], abs=1e-4)
    for name in TERRITORIES:
        assert float(row[f"reserve_{name}"]) == pytest.approx(
            document["territories"][name]["reserve"], abs=1e-4)
    assert float(row["reserve_lad"]) < float(row["reserve_rca"])
    assert all(rows["rest"][column] == "" for column in
               ("rest_study", "reserve_index", "global_reserve", "reserve_lad"))
    assert sorted(p.name for p in (out / "reports" / "stress").iterdir() if "reserve" in p.name
                  or "stress_rest" in p.name) == sorted(RESERVE_FILES)


def test_a_failed_rest_study_or_pair_leaves_the_reserve_empty(tmp_path):
    stress = StudyRecord("s", "s.zarr", STATUS_DONE, qa=["low fit quality"])
    record = add_reserve(stress, StudyRecord("r", "r.zarr", STATUS_FAILED), str(tmp_path))
    assert record.rest_study == "r" and record.reserve_index is None
    assert record.qa == ["low fit quality", "reserve: the rest study r failed"]
    assert stress.qa == ["low fit quality"]  # the original record is left alone
    record = add_reserve(stress, StudyRecord("r", "r.zarr", STATUS_DONE), str(tmp_path))
    assert record.qa[1].startswith("reserve: ") and "not a study store" in record.qa[1]
    row = record.row()
    assert row["rest_study"] == "r" and row["global_reserve"] is None and row["reserve_lad"] is None


@pytest.mark.parametrize(("rows", "message"), [
    ([("a.zarr", "elsewhere.zarr")], "line 2: elsewhere.zarr is not one of the batch's SRC"),
    ([("a.zarr", "a.zarr")], "line 2: a study cannot be its own rest study"),
    ([("a.zarr", "b.zarr"), ("a.zarr", "c.zarr")], "line 3: a.zarr already has a rest study"),
    ([("a.zarr", "")], "line 2: a stress and a rest study are needed"),
])
def test_pairs_file_errors(tmp_path, rows, message):
    jobs = [BatchJob(name, tmp_path / f"{name}.zarr") for name in "abc"]
    with pytest.raises(InputError, match=message):
        read_pairs(_pairs_file(tmp_path / "pairs.csv", rows), jobs)


def test_pairs_file_paths_are_relative_to_it(tmp_path):
    (tmp_path / "data").mkdir()
    jobs = [BatchJob(name, tmp_path / "data" / f"{name}.zarr") for name in ("s", "r")]
    pairs = _pairs_file(tmp_path / "data" / "pairs.csv",
                        [("s.zarr", str(tmp_path / "data" / "r.zarr"))])
    assert read_pairs(pairs, jobs) == {"s": "r"}


def test_batch_bad_pairs_file_is_one_line_before_any_work(tmp_path, capsys):
    source = tmp_path / "s.zarr"
    source.mkdir()
    (tmp_path / "pairs.csv").write_text("stress;rest\ns.zarr;s.zarr\n")
    out = tmp_path / "out"
    for pairs, message in ((tmp_path / "pairs.csv", "needs the columns stress and rest"),
                           (tmp_path / "absent.csv", "no such pairs file")):
        assert main(["batch", str(source), "--pairs", str(pairs), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("perfroi batch: error: ") and message in err
        assert not out.exists()
