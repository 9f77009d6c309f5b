import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import matplotlib
import matplotlib.image
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pypdf import PdfReader

from napari_perfroi import __version__
from napari_perfroi.aha import sector_labels
from napari_perfroi.cli import main
from napari_perfroi.errors import InputError
from napari_perfroi.report import (
    REPORT_FILES,
    SEGMENT_COLUMNS,
    SEGMENT_NAMES,
    bullseye_segment_at,
    bullseye_wedge,
    draw_bullseye,
    draw_curves,
    flow_report,
    report_pdf_bytes,
    write_pdf,
    write_report,
)
from napari_perfroi.study import Study

PERFROI = str(Path(sys.executable).with_name("perfroi"))
TIMES = [0.0, 1.0, 2.0, 3.0, 4.0]
NOT_IMAGED = 15  # apical inferior: outside the apical slice in this study
MODEL = "Fermi-constrained deconvolution"


def _maps() -> tuple[np.ndarray, np.ndarray]:
    """An MBF map of 1 + 0.2 * segment (+ noise) on a ring, with its AHA labels."""
    rows, cols = np.mgrid[:32, :32]
    radius = np.hypot(rows - 16, cols - 16)
    ring = (radius >= 6) & (radius <= 10)
    aha = np.stack([sector_labels(ring, (16, 16), 180.0, level)
                    for level in ("basal", "mid", "apical")])
    aha[aha == NOT_IMAGED] = 0
    noise = np.random.default_rng(0).normal(0, 0.05, aha.shape)
    mbf = np.where(aha > 0, 1.0 + 0.2 * aha + noise, np.nan).astype(np.float32)
    return mbf, aha


def _report(mbf: np.ndarray, aha: np.ndarray) -> dict:
    aif = [0.0, 2.0, 6.0, 3.0, 1.5]
    stats, curves, segment_mbf = [], [], []
    for segment in range(1, 17):
        values = mbf[aha == segment]
        if values.size == 0:
            stats.append({"segment": segment, "mean": None, "median": None, "sd": None,
                          "pixels": 0})
            curves.append(None)
            segment_mbf.append(None)
            continue
        stats.append({"segment": segment, "mean": float(values.mean()),
                      "median": float(np.median(values)), "sd": float(values.std()),
                      "pixels": int(values.size)})
        tissue = [0.1 * segment * a / 6 for a in aif]
        curves.append({"slice": int(np.nonzero((aha == segment).any(axis=(1, 2)))[0][0]),
                       "times_s": TIMES, "tissue": tissue,
                       "fitted": [0.95 * v for v in tissue], "fit_error": 0.01})
        segment_mbf.append(1.0 + 0.2 * segment + 0.01)
    return {
        "model": MODEL, "flow": "blood", "hematocrit": 0.42, "units": "mL/min/g",
        "aif": aif, "aif_times_s": TIMES, "aif_source": "auto", "aif_slice": 0,
        "aif_foot_s": 0.5, "aif_peak_s": 2.0, "aif_peak_mmol": 6.0,
        "conversion": "baseline-normalised signal, linear",
        "segment_mbf": segment_mbf, "segment_stats": stats, "segment_curves": curves,
        "global_mbf": 2.6, "rv_insertion_deg": [[120.0, 240.0]] * 3,
        "territory_mbf": {"lad": 2.1, "rca": 2.7, "lcx": 3.3}, "lowest_territory": "lad",
        "qa": ["AIF peak early"],
    }


def _store(path: Path, with_report: bool = True) -> Study:
    study = Study.create(
        path, np.zeros((3, 5, 32, 32), np.uint16), pixel_spacing_mm=(2.0, 2.0),
        slice_thickness_mm=8.0, frame_times_s=[TIMES] * 3, slice_positions_mm=[0, 10, 20],
        source={"importer": "test"},
    )
    mbf, aha = _maps()
    study.write("mbf", mbf)
    study.write("aha", aha)
    if with_report:
        study.update_attrs(report=_report(mbf, aha))
    return study


def test_write_report_files_and_csv_match_the_map(tmp_path):
    study = _store(tmp_path / "s1.zarr")
    written = write_report(study, tmp_path / "out")
    assert [p.name for p in written] == list(REPORT_FILES)
    assert all(p.is_file() and p.stat().st_size > 0 for p in written)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(REPORT_FILES)
    for name in ("bullseye.png", "curves.png"):
        assert matplotlib.image.imread(tmp_path / "out" / name).shape[2] == 4

    with open(tmp_path / "out" / "segments.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == SEGMENT_COLUMNS
    assert [int(r["segment"]) for r in rows] == list(range(1, 17))
    mbf, aha = study.read("mbf"), study.read("aha")
    for row in rows:
        segment = int(row["segment"])
        values = mbf[aha == segment]
        assert int(row["pixels"]) == values.size
        if segment == NOT_IMAGED:
            assert [row[k] for k in ("mbf", "mean", "median", "sd")] == ["", "", "", ""]
            continue
        assert float(row["mbf"]) == pytest.approx(1.0 + 0.2 * segment + 0.01, abs=1e-4)
        assert float(row["mean"]) == pytest.approx(values.mean(), abs=1e-4)
        assert float(row["median"]) == pytest.approx(np.median(values), abs=1e-4)
        assert float(row["sd"]) == pytest.approx(values.std(), abs=1e-4)
    assert rows[0]["name"] == "basal anterior" and rows[0]["territory"] == "lad"
    assert rows[8]["name"] == "mid inferoseptal" and rows[8]["level"] == "mid"
    assert rows[15]["name"] == "apical lateral" and rows[15]["territory"] == "lcx"


def test_report_json_round_trips_with_model_first(tmp_path):
    study = _store(tmp_path / "s1.zarr")
    write_report(study, tmp_path / "out")
    document = json.loads((tmp_path / "out" / "report.json").read_text())
    assert list(document)[:4] == ["study", "model", "flow", "hematocrit"]
    assert document["study"] == "s1"
    assert {k: v for k, v in document.items() if k != "study"} == study.attrs["report"]


def test_report_json_is_strict_with_nan(tmp_path):
    study = _store(tmp_path / "s1.zarr")
    report = study.attrs["report"]
    report["segment_curves"][0]["fit_error"] = float("nan")
    study.update_attrs(report=report)
    write_report(study, tmp_path / "out")
    text = (tmp_path / "out" / "report.json").read_text()
    assert "NaN" not in text
    assert json.loads(text)["segment_curves"][0]["fit_error"] is None



def test_report_with_nothing_imaged_still_draws(tmp_path):
    study = _store(tmp_path / "s1.zarr")
    report = study.attrs["report"]
    report.update(segment_mbf=[None] * 16, segment_curves=[None] * 16, global_mbf=None,
                  territory_mbf={"lad": None, "rca": None, "lcx": None}, lowest_territory=None)
    study.update_attrs(report=report)
    written = write_report(study, tmp_path / "out")
    assert all(p.is_file() for p in written)
    rows = list(csv.DictReader((tmp_path / "out" / "segments.csv").read_text().splitlines()))
    assert {row["mbf"] for row in rows} == {""}

@pytest.mark.parametrize(("x", "y", "segment"), [
    (0, 2.5, 1), (-2.2, 1.2, 2), (-2.2, -1.2, 3), (0, -2.5, 4), (2.2, -1.2, 5), (2.2, 1.2, 6),
    (0, 1.5, 7), (-1.3, 0.7, 8), (-1.3, -0.7, 9), (0, -1.5, 10), (1.3, -0.7, 11), (1.3, 0.7, 12),
    (0, 0.5, 13), (-0.5, 0, 14), (0, -0.5, 15), (0.5, 0, 16),
    (0, 3.2, None), (3.0, 3.0, None), (float("nan"), 0, None),
])
def test_bullseye_segment_at(x, y, segment):
    assert bullseye_segment_at(x, y) == segment


def test_bullseye_wedges_agree_with_segment_at():
    for segment in range(1, 17):
        inner, outer, start, end = bullseye_wedge(segment)
        for fraction in (0.1, 0.5, 0.9):
            angle = math.radians(start + fraction * (end - start))
            radius = inner + fraction * (outer - inner)
            x, y = radius * math.cos(angle), radius * math.sin(angle)
            assert bullseye_segment_at(x, y) == segment


def test_bullseye_pixels_show_the_values():
    """Rendered colours match the colour scale; a null segment is grey and hatched."""
    values = [0.5 + 0.3 * s for s in range(1, 17)]
    values[NOT_IMAGED - 1] = None
    fig = Figure(figsize=(4, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    wedges = draw_bullseye(ax, values, highlight=2, colorbar=True)
    assert sorted(wedges) == list(range(1, 17))
    assert wedges[NOT_IMAGED].get_hatch() == "///"
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3] / 255.0
    height = pixels.shape[0]
    for segment in (1, 4, 9, 14, 16):
        inner, outer, start, end = bullseye_wedge(segment)
        angle = math.radians(start + 0.2 * (end - start))  # away from the printed value
        radius = (inner + outer) / 2 if inner else 0.8 * outer
        col, row = ax.transData.transform((radius * math.cos(angle), radius * math.sin(angle)))
        expected = matplotlib.colormaps["inferno"](values[segment - 1] / 6.0)[:3]
        assert pixels[int(height - row), int(col)] == pytest.approx(expected, abs=0.03), segment
    texts = [t.get_text() for t in ax.texts]
    assert "0.8" in texts and "5.3" in texts and len(fig.axes) == 2  # values and colour bar
    outlines = [p for p in ax.patches if p not in wedges.values()]
    assert len(outlines) == 1 and outlines[0].get_linewidth() > 3


def test_draw_curves_aif_on_second_axis_and_highlight(tmp_path):
    report = flow_report(_store(tmp_path / "s1.zarr"))
    fig = Figure()
    ax = fig.add_subplot()
    aif_ax = draw_curves(ax, report, segments=[1, 2, 3, 15], highlight=2)
    assert aif_ax is not ax and aif_ax.get_ylabel().startswith("AIF plasma")
    assert list(aif_ax.lines[0].get_ydata()) == report["aif"]
    assert ax.get_xlabel() == "time (s)" and "mmol/L" in ax.get_ylabel()
    assert len(ax.lines) == 6  # measured + fitted for 1, 2, 3; 15 has no curve
    widths = {line.get_label(): line.get_linewidth() for line in aif_ax.get_legend().get_lines()}
    assert widths[f"2 {SEGMENT_NAMES[2]}"] > widths[f"1 {SEGMENT_NAMES[1]}"]
    assert "AIF, plasma (right axis)" in widths


def test_missing_report_is_one_clear_error(tmp_path):
    study = _store(tmp_path / "s1.zarr", with_report=False)
    with pytest.raises(InputError, match="no flow report yet; run `perfroi analyze .* "
                                          "--steps flow,aha` first"):
        write_report(study, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    result = subprocess.run([PERFROI, "report", str(study.path), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("perfroi report: error: "), result.stderr
    assert str(study.path) in lines[0] and "Traceback" not in result.stderr


def test_incomplete_report_names_what_is_missing(tmp_path):
    study = _store(tmp_path / "s1.zarr", with_report=False)
    study.update_attrs(report={"segment_mbf": [2.0] * 16, "global_mbf": 2.0})
    with pytest.raises(InputError, match="flow report lacks model, flow, hematocrit"):
        flow_report(study)


def test_cli_report_writes_and_lists_files(tmp_path, capsys):
    study = _store(tmp_path / "s1.zarr")
    assert main(["report", str(study.path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "wrote:"
    assert [Path(line.strip()).name for line in out[1:]] == list(REPORT_FILES)
    assert all(Path(line.strip()).is_file() for line in out[1:])


def _pdf_page_text(pdf: bytes) -> str:
    """The text of a one-page PDF (asserting it has one A4 portrait page)."""
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 1
    box = reader.pages[0].mediabox
    assert (float(box.width), float(box.height)) == pytest.approx((595.3, 841.9), abs=1.0)
    return reader.pages[0].extract_text()


def test_report_pdf_is_one_page_with_the_report_values(tmp_path):
    study = _store(tmp_path / "s1.zarr")
    write_report(study, tmp_path / "out")
    pdf = (tmp_path / "out" / "report.pdf").read_bytes()
    assert report_pdf_bytes(study) == pdf  # the same report gives the same bytes
    text = _pdf_page_text(pdf)
    for expected in ("Study s1", f"napari-perfroi {__version__}", f"Model {MODEL}",
                     "Flow type blood", "Hematocrit 0.42", "AIF auto, slice 1, plasma peak 6.0",
                     "AIF saturation not checked", "Global MBF: 2.60 mL/min/g", "LAD 2.10",
                     "RCA 2.70", "LCx 3.30", "Lowest territory: LAD", "AIF peak early",
                     "1 basal anterior LAD 1.21", f"{NOT_IMAGED} apical inferior RCA - - -"):
        assert expected in text, expected


def test_report_pdf_without_absolute_mbf_says_so(tmp_path):
    study = _store(tmp_path / "s1.zarr")
    report = study.attrs["report"]
    upslope = [None if curve is None else 0.1 + 0.01 * segment
               for segment, curve in enumerate(report["segment_curves"], start=1)]
    report.update(absolute_mbf=False, segment_mbf=[None] * 16, global_mbf=None,
                  territory_mbf={"lad": None, "rca": None, "lcx": None},
                  segment_semiquant=[None if u is None else {"relative_upslope": u}
                                     for u in upslope])
    study.update_attrs(report=report)
    text = _pdf_page_text(report_pdf_bytes(study))
    assert "Absolute MBF not available" in text and "Global MBF" not in text
    # Mean relative upslope (%) of the imaged segments of each territory.
    for expected in ("LAD 17.5", "RCA 16.5", "LCx 20.0", "1 basal anterior LAD n/a n/a 11.0"):
        assert expected in text, expected


def test_report_pdf_cuts_a_long_qa_list(tmp_path):
    study = _store(tmp_path / "s1.zarr")
    report = study.attrs["report"]
    report["qa"] = [f"flag {n}: " + "a long explanation of what went wrong " * 3 for n in range(30)]
    study.update_attrs(report=report)
    text = _pdf_page_text(report_pdf_bytes(study))
    assert "QA flags (30):" in text and "flag 0:" in text and "flag 29:" not in text
    assert "more lines in report.json" in text


def test_write_pdf_alone(tmp_path):
    study = _store(tmp_path / "s1.zarr")
    path = write_pdf(study, tmp_path / "new" / "page.pdf")
    assert path == tmp_path / "new" / "page.pdf" and path.read_bytes().startswith(b"%PDF")
    bare = _store(tmp_path / "s2.zarr", with_report=False)
    with pytest.raises(InputError, match="no flow report yet"):
        write_pdf(bare, tmp_path / "bare.pdf")
    assert not (tmp_path / "bare.pdf").exists()


def test_cli_report_help():
    result = subprocess.run([PERFROI, "report", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "--out DIR" in result.stdout and "bullseye.png" in result.stdout



def test_bullseye_marks_values_above_its_scale():
    from matplotlib.figure import Figure

    from napari_perfroi.report import draw_bullseye

    values = [2.0] * 16
    values[0], values[12] = 7.25, 10.4
    ax = Figure().subplots()
    draw_bullseye(ax, values, vmax=6.0)
    texts = [text.get_text() for text in ax.texts]
    assert "7.2\u2191" in texts and "10\u2191" in texts and texts.count("2.0") == 14
    assert any("above the colour scale (6)" in text for text in texts)
