"""Summaries and pictures of a study store (PNG via matplotlib's Agg backend).

The flow report (``perfroi report``) is drawn from the ``report`` attribute the
analysis writes: an AHA 16-segment bullseye, AIF and tissue curves, a
per-segment CSV table, the report as JSON and all of these on one PDF page.
Figures are built on ``matplotlib.figure.Figure`` without pyplot, so they are
safe to draw from a worker thread and never change the GUI's matplotlib backend.
"""

from __future__ import annotations

import csv
import io
import json
import math
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .aha import LEVEL_SEGMENTS, TERRITORIES, territory_means
from .study import (SEMIQUANTITATIVE_MAPS, TWO_COMPARTMENT_MAPS, StoreError, atomic_write_bytes,
                    atomic_write_text)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Wedge

    from .reserve import Reserve, StressRest
    from .study import Study


def montage_frames(n_frames: int, n_columns: int) -> list[int]:
    """Frame indices spread evenly over the series, first and last included."""
    return sorted({int(round(i)) for i in np.linspace(0, n_frames - 1, min(n_columns, n_frames))})


# Outline colour -> the label values inside it: epicardium, endocardium, RV.
LABEL_OUTLINES = {"yellow": (1, 2), "red": (1,), "royalblue": (3,)}


def save_montage(study, path: str | Path, n_columns: int = 8) -> Path:
    """Save a grid of frames: one row per slice, columns spread over time.

    Outlines of the epicardium (yellow), endocardium (red) and RV (blue) and
    the LV circle (dashed white) are drawn when the study has them. Only the
    frames shown are read.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    n_slices, n_frames, n_rows, n_cols = study.shape
    frames = montage_frames(n_frames, n_columns)
    shown = study.image[:, frames].compute().astype(np.float32)
    labels = study.zarr_array("labels")[:, frames] if study.has("labels") else None
    circles = study.read("roi")[:, frames] if study.has("roi") else None
    low, high = np.percentile(shown, [1, 99.7])
    times = study.frame_times_s
    levels = study.attrs["slice_levels"]
    aspect = study.pixel_spacing_mm[0] / study.pixel_spacing_mm[1]
    cell = 1.6
    fig, axes = plt.subplots(
        n_slices, len(frames), squeeze=False,
        figsize=(cell * len(frames), cell * n_slices * aspect * n_rows / n_cols + 0.4),
    )
    for s in range(n_slices):
        for j, t in enumerate(frames):
            ax = axes[s, j]
            ax.imshow(shown[s, j], cmap="gray", vmin=low, vmax=high, aspect=aspect)
            if labels is not None:
                for colour, values in LABEL_OUTLINES.items():
                    inside = np.isin(labels[s, j], values)
                    if inside.any():
                        ax.contour(inside, levels=[0.5], colors=colour, linewidths=0.6)
            if circles is not None and np.all(np.isfinite(circles[s, j])):
                row, col, radius = circles[s, j]
                ax.add_patch(plt.Circle((col, row), radius, fill=False, color="white",
                                        linestyle="--", linewidth=0.6))
            ax.set_xticks([])
            ax.set_yticks([])
            if s == 0:
                ax.set_title(f"t = {times[s, t]:.1f} s", fontsize=8)
            if j == 0:
                ax.set_ylabel(levels[s], fontsize=8)
    fig.suptitle(f"{study.name}: {n_slices} slices x {n_frames} frames", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def study_summary(study) -> str:
    """A few lines describing a study store."""
    attrs = study.attrs
    n_slices, n_frames, n_rows, n_cols = study.shape
    times = np.asarray(attrs["frame_times_s"], dtype=float)
    intervals = np.diff(times, axis=1)
    source = attrs["source"]
    lines = [
        f"study      {study.path}",
        f"image      {n_slices} slices x {n_frames} frames x {n_rows} x {n_cols}"
        f" ({study.zarr_array('image').dtype})",
        f"pixels     {attrs['pixel_spacing_mm'][0]:.2f} x {attrs['pixel_spacing_mm'][1]:.2f} mm,"
        f" slice thickness {attrs['slice_thickness_mm']:.1f} mm",
        f"slices     {', '.join(attrs['slice_levels'])} (base -> apex)",
        f"timing     {times[:, -1].max():.1f} s, frame interval"
        f" {np.median(intervals):.2f} s (range {intervals.min():.2f}-{intervals.max():.2f})"
        if n_frames > 1 else "timing     single frame",
        f"source     {_describe_source(source)}",
        f"arrays     {', '.join(study.arrays())}",
    ]
    return "\n".join(lines)


def _describe_source(source: dict) -> str:
    if "description" in source:
        return source["description"]
    parts = [
        ", ".join(source.get("series", [])),
        ", ".join(source.get("manufacturer", [])),
        f"{source['n_files']} files" if "n_files" in source else "",
        f"frames ordered by {source['time_source']}" if "time_source" in source else "",
    ]
    return f"{source.get('format', source.get('importer', '?'))}: " + "; ".join(p for p in parts if p)


# ---------------------------------------------------------------- flow report

REPORT_FILES = ("bullseye.png", "segments.csv", "report.json", "curves.png", "report.pdf")
# Report entries the outputs are drawn from (the analysis writes more).
REQUIRED_REPORT_KEYS = (
    "model", "flow", "hematocrit", "aif", "aif_times_s",
    "segment_mbf", "segment_stats", "segment_curves", "global_mbf",
)
SEGMENT_COLUMNS = ("segment", "name", "level", "territory", "mbf", "mean", "median", "sd", "pixels",
                   *SEMIQUANTITATIVE_MAPS)
_SIX_WALLS = ("anterior", "anteroseptal", "inferoseptal", "inferior", "inferolateral",
              "anterolateral")
_WALLS = {
    "basal": _SIX_WALLS, "mid": _SIX_WALLS, "apical": ("anterior", "septal", "inferior", "lateral"),
}
SEGMENT_LEVEL = {seg: level for level, segs in LEVEL_SEGMENTS.items() for seg in segs}
SEGMENT_NAMES = {
    seg: f"{level} {wall}"
    for level, segs in LEVEL_SEGMENTS.items() for seg, wall in zip(segs, _WALLS[level])
}
SEGMENT_TERRITORY = {seg: name for name, segs in TERRITORIES.items() for seg in segs}
TERRITORY_NAMES = {"lad": "LAD", "rca": "RCA", "lcx": "LCx"}

# Bullseye rings in data units: apex disc in the centre, basal ring outermost.
BULLSEYE_RINGS = {"apical": (0.0, 1.0), "mid": (1.0, 2.0), "basal": (2.0, 3.0)}
BULLSEYE_RADIUS = 3.0
LEGEND_COLUMN_INCHES = 2.6  # the width one column of the curves' legend takes
_HIGHLIGHT_COLOUR = "#00e5ff"


def bullseye_wedge(segment: int) -> tuple[float, float, float, float]:
    """(inner radius, outer radius, start angle, end angle) of a segment in the bullseye.

    Angles are degrees counter-clockwise from +x: segment 1 (13) is centred at
    the top and the numbers run counter-clockwise, so the septum is on the left.
    """
    level = SEGMENT_LEVEL[segment]
    segments = LEVEL_SEGMENTS[level]
    width = 360.0 / len(segments)
    centre = 90.0 + width * segments.index(segment)
    return (*BULLSEYE_RINGS[level], centre - width / 2, centre + width / 2)


def bullseye_segment_at(x: float, y: float) -> int | None:
    """The segment under point (x, y) in the bullseye's data coordinates; None outside."""
    radius = math.hypot(x, y)
    if not radius <= BULLSEYE_RADIUS:  # also rejects NaN
        return None
    level = next(name for name, (_, outer) in BULLSEYE_RINGS.items() if radius <= outer)
    segments = LEVEL_SEGMENTS[level]
    width = 360.0 / len(segments)
    # Angle from the start of the first segment, counter-clockwise.
    turned = (math.degrees(math.atan2(y, x)) - 90.0 + width / 2) % 360.0
    return segments[min(int(turned // width), len(segments) - 1)]


def draw_bullseye(
    ax: Axes,
    segment_values: Iterable[float | None],
    *,
    vmin: float = 0.0,
    vmax: float = 6.0,
    cmap: str | Colormap = "inferno",
    highlight: int | None = None,
    units: str = "mL/min/g",
    colorbar: bool = True,
) -> dict[int, Wedge]:
    """Draw the AHA 16-segment bullseye of ``segment_values`` (segments 1-16) on ``ax``.

    Each segment shows its value (1 decimal) on a fixed colour scale; None
    (not imaged) is grey and hatched. ``highlight`` outlines one segment.
    ``colorbar`` adds a colour bar labelled with ``units`` (leave it out when
    redrawing the same axes). Returns the wedge of each segment; map a click
    to a segment with :func:`bullseye_segment_at`.
    """
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Wedge

    values = list(segment_values)
    if len(values) != 16:
        raise ValueError(f"expected 16 segment values, got {len(values)}")
    colours = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    norm = Normalize(vmin, vmax, clip=True)
    wedges = {}
    for segment, value in zip(range(1, 17), values):
        inner, outer, start, end = bullseye_wedge(segment)
        imaged = value is not None and math.isfinite(value)
        wedge = Wedge(
            (0, 0), outer, start, end, width=outer - inner,
            facecolor=colours(norm(value)) if imaged else "0.88",
            edgecolor="white" if imaged else "0.45", hatch=None if imaged else "///",
            linewidth=1.2,
        )
        ax.add_patch(wedge)
        wedges[segment] = wedge
        if imaged:
            middle = math.radians((start + end) / 2)
            text_radius = (inner + outer) / 2 if inner else 0.58 * outer
            red, green, blue, _ = wedge.get_facecolor()
            ax.text(
                text_radius * math.cos(middle), text_radius * math.sin(middle),
                _bullseye_label(value, vmax), ha="center", va="center", fontsize=9,
                fontweight="bold",
                color="black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white",
            )
    if highlight is not None:
        inner, outer, start, end = bullseye_wedge(highlight)
        ax.add_patch(Wedge((0, 0), outer, start, end, width=outer - inner, fill=False,
                           edgecolor=_HIGHLIGHT_COLOUR, linewidth=3.5, zorder=3))
    edge = BULLSEYE_RADIUS + 0.25
    for x, y, wall in ((0, edge, "anterior"), (-edge, 0, "septal"),
                       (0, -edge, "inferior"), (edge, 0, "lateral")):
        ax.text(x, y, wall, ha="center", va="center", fontsize=8, color="0.3",
                rotation=90 if x else 0)
    notes = []
    if not all(value is not None and math.isfinite(value) for value in values):
        notes.append("hatched: not imaged")
    if any(value is not None and value > vmax for value in values):
        notes.append(f"\u2191: above the colour scale ({vmax:g})")
    if notes:
        ax.text(0, -edge - 0.35, "; ".join(notes), ha="center", va="center", fontsize=7,
                color="0.3")
    limit = BULLSEYE_RADIUS + 0.6
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_aspect("equal")
    ax.set_axis_off()
    if colorbar:
        ax.figure.colorbar(ScalarMappable(norm, colours), ax=ax, shrink=0.75,
                           extend="max", label=units)
    return wedges


def _bullseye_label(value: float, vmax: float) -> str:
    """A segment's value as written in: three characters at most (10 and more without a
    decimal, so it fits its wedge), marked when the colour scale saturates."""
    text = f"{value:.1f}" if abs(value) < 10 else f"{value:.0f}"
    return text + ("\u2191" if value > vmax else "")


def draw_curves(
    ax: Axes,
    report: dict[str, Any],
    segments: Iterable[int] | None = None,
    highlight: int | None = None,
) -> Axes:
    """Draw the AIF and per-segment tissue curves of a flow ``report`` on ``ax``.

    Measured tissue concentration is drawn as markers, the fitted model as
    lines, against time in s; the plasma AIF, about ten times higher, goes on
    a second y axis (returned). ``segments`` picks segments (default: all
    with curves); ``highlight`` emphasises one.
    """
    from matplotlib.lines import Line2D

    curves = report["segment_curves"]
    chosen = [s for s in (range(1, 17) if segments is None else segments) if curves[s - 1]]
    handles = []
    for segment in chosen:
        curve = curves[segment - 1]
        colour = _segment_colour(segment)
        emphasis = 1.0 if highlight in (None, segment) else 0.3
        width = 2.6 if segment == highlight else 1.3
        ax.plot(curve["times_s"], curve["tissue"], "o", markersize=3.5 if emphasis == 1 else 2.5,
                color=colour, alpha=emphasis, linewidth=0)
        ax.plot(curve["times_s"], curve["fitted"], "-", color=colour, alpha=emphasis,
                linewidth=width, zorder=3 if segment == highlight else 2)
        handles.append(Line2D([], [], color=colour, marker="o", markersize=3.5, linewidth=width,
                              alpha=emphasis, label=f"{segment} {SEGMENT_NAMES[segment]}"))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("tissue concentration (mmol/L)")
    aif_ax = ax.twinx()
    (aif_line,) = aif_ax.plot(report["aif_times_s"], report["aif"], "--", color="black",
                              linewidth=1.4, label="AIF, plasma (right axis)")
    aif_lines = [aif_line]
    measured = report.get("aif_measured")
    if measured is not None and not np.allclose(measured, report["aif"], rtol=1e-3, atol=1e-3):
        (measured_line,) = aif_ax.plot(report["aif_times_s"], measured, ":", color="dimgray",
                                       linewidth=1.4, label=_measured_aif_label(report))
        aif_lines.append(measured_line)
    aif_ax.set_ylabel("AIF plasma concentration (mmol/L)")
    ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
    aif_ax.set_ylim(bottom=min(0.0, aif_ax.get_ylim()[0]))
    # Below the axes, where it covers no curve, in as many columns as the figure's width
    # holds (a narrow dock figure: one).
    columns = max(1, min(3, int(ax.figure.get_figwidth() / LEGEND_COLUMN_INCHES)))
    aif_ax.legend(handles=[*aif_lines, *handles], fontsize=7, loc="upper center",
                  bbox_to_anchor=(0.5, -0.22), ncol=columns,
                  title="markers: measured, lines: model fit", title_fontsize=7)
    return aif_ax


def _measured_aif_label(report: dict[str, Any]) -> str:
    """Legend of the measured AIF where the AIF used differs from it."""
    if report.get("aif_construction", "measured") == "measured":
        return "AIF as measured, saturated"
    return "AIF as measured (pre-bolus)"


def flow_report(study: Study) -> dict[str, Any]:
    """The study's flow report (the ``report`` attribute); :class:`StoreError` if absent."""
    report = study.attrs.get("report")
    rerun = f"run `perfroi analyze {study.path} --steps flow,aha`"
    if not report:
        raise StoreError(f"{study.path}: no flow report yet; {rerun} first")
    missing = [key for key in REQUIRED_REPORT_KEYS if key not in report]
    if missing:
        raise StoreError(f"{study.path}: flow report lacks {', '.join(missing)}; {rerun} again")
    for key in ("segment_mbf", "segment_stats", "segment_curves"):
        if not isinstance(report[key], list) or len(report[key]) != 16:
            raise StoreError(f"{study.path}: flow report {key} must have 16 entries; {rerun} again")
    return report


def segment_table(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per AHA segment 1-16 (:data:`SEGMENT_COLUMNS`); None where not imaged.

    ``mbf`` is the flow fitted to the segment's median curve (None without a
    trustworthy AIF); ``mean``, ``median``, ``sd`` and ``pixels`` describe the
    pixel-wise map; the semi-quantitative indices come from the segment's median
    signal curve. A two-compartment
    run adds the segment fit's ``ps``, ``vp`` and ``ve``.
    """
    rows = []
    two_compartment = report.get("flow_model") == "2cxm"
    indices = report.get("segment_semiquant") or [None] * 16
    for segment, mbf, stats, curves, semi in zip(range(1, 17), report["segment_mbf"],
                                                 report["segment_stats"],
                                                 report["segment_curves"], indices):
        stats = stats or {}
        fitted = {key: (curves or {}).get(key) for key in TWO_COMPARTMENT_MAPS}
        rows.append({
            "segment": segment,
            "name": SEGMENT_NAMES[segment],
            "level": SEGMENT_LEVEL[segment],
            "territory": SEGMENT_TERRITORY[segment],
            "mbf": mbf,
            **{key: stats.get(key) for key in ("mean", "median", "sd")},
            "pixels": int(stats.get("pixels") or 0),
            **{key: (semi or {}).get(key) for key in SEMIQUANTITATIVE_MAPS},
            **(fitted if two_compartment else {}),
        })
    return rows


def write_report(study: Study, out_dir: str | Path) -> list[Path]:
    """Write bullseye.png, segments.csv, report.json, curves.png and report.pdf
    (:data:`REPORT_FILES`) into ``out_dir``, and the viability files when the study has
    an analysed LGE study (:func:`napari_perfroi.lge.report.write_viability_report`).

    Each file is replaced atomically. Raises :class:`StoreError` when the
    study has no flow report yet.
    """
    report = flow_report(study)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bullseye, table, document, curves, pdf = (out_dir / name for name in REPORT_FILES)
    _save_figure(_bullseye_figure(study.name, report), bullseye)
    atomic_write_text(table, _segments_csv(segment_table(report)))
    head = {key: report[key] for key in ("model", "flow", "hematocrit")}
    atomic_write_text(document, json.dumps(
        _json_safe({"study": study.name, **head, **report}), indent=2, allow_nan=False) + "\n")
    _save_figure(_curves_figure(study.name, report), curves)
    write_pdf(study, pdf)
    from .lge.report import write_viability_report

    return [bullseye, table, document, curves, pdf, *write_viability_report(study, out_dir)]


def _segment_colour(segment: int) -> tuple[float, ...]:
    """Colour by position in the ring, so basal and mid walls match (anterior blue, ...)."""
    import matplotlib

    return matplotlib.colormaps["tab10"](LEVEL_SEGMENTS[SEGMENT_LEVEL[segment]].index(segment))


def _flow_summary(report: dict[str, Any]) -> str:
    return (f"{report['flow']} flow, hematocrit {report['hematocrit']:.2f}\n"
            f"model: {report['model']}")


def _number(value: float | None, decimals: int = 2) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{decimals}f}"


def _bullseye_figure(name: str, report: dict[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    ax = fig.add_subplot()
    if not has_absolute_mbf(report):
        _relative_upslope_bullseye(fig, ax, name, report)
        return fig
    units = report.get("units", "mL/min/g")
    draw_bullseye(ax, report["segment_mbf"], units=f"MBF ({units})")
    summary = f"global {_number(report['global_mbf'])} {units}"
    territories = report.get("territory_mbf") or {}
    if territories:
        summary += "; " + ", ".join(
            f"{TERRITORY_NAMES[key]} {_number(value)}" for key, value in territories.items()
        )
    if report.get("lowest_territory"):
        summary += f" (lowest {TERRITORY_NAMES[report['lowest_territory']]})"
    fig.suptitle(f"{name}: MBF per AHA segment, fitted to each segment's median curve\n"
                 f"{_flow_summary(report)}\n{summary}", fontsize=9)
    _qa_text(fig, report)
    return fig


def _relative_upslope_bullseye(fig: Figure, ax: Axes, name: str, report: dict[str, Any]) -> None:
    """The bullseye of a study without absolute flow: each segment's relative upslope."""
    draw_upslope_bullseye(ax, report)
    lowest = report.get("lowest_territory")
    fig.suptitle(f"{name}: absolute MBF not available (AIF saturated)\n"
                 f"relative upslope per AHA segment, semi-quantitative"
                 + (f"\nlowest {TERRITORY_NAMES[lowest]}" if lowest else ""), fontsize=9)
    _qa_text(fig, report)


def draw_upslope_bullseye(ax: Axes, report: dict[str, Any], highlight: int | None = None) -> None:
    """Draw each segment's relative upslope (per cent) as a bullseye on ``ax``."""
    values = relative_upslope_percent(report)
    draw_bullseye(ax, values, vmax=max([20.0, *filter(None, values)]), cmap="viridis",
                  highlight=highlight, units="relative upslope (% of the LV blood pool's)")


def relative_upslope_percent(report: dict[str, Any]) -> list[float | None]:
    """Each segment's relative upslope in per cent (None where not imaged)."""
    return [None if s is None or s.get("relative_upslope") is None
            else 100.0 * s["relative_upslope"] for s in report.get("segment_semiquant") or
            [None] * 16]


def _qa_text(fig: Figure, report: dict[str, Any]) -> None:
    if report.get("qa"):
        fig.text(0.02, 0.01, "QA: " + "; ".join(report["qa"]), fontsize=7, color="firebrick",
                 wrap=True)


def _curves_figure(name: str, report: dict[str, Any]) -> Figure:
    """One panel per slice level that has curves (AIF only when none has)."""
    from matplotlib.figure import Figure

    panels = _curve_panels(report)
    fig = Figure(figsize=(8.0, 0.6 + 3.2 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False, sharex=True)[:, 0]
    for ax, (level, segments) in zip(axes, panels):
        draw_curves(ax, report, segments)
        ax.set_title(_panel_title(report, level, segments), fontsize=9)
    for ax in axes[:-1]:
        ax.set_xlabel("")
    fig.suptitle(f"{name}: AIF and tissue curves\n{_flow_summary(report)}", fontsize=9)
    return fig


def _curve_panels(report: dict[str, Any]) -> list[tuple[str, list[int]]]:
    """(slice level, its segments with curves) for each level that has curves, or one
    panel without tissue curves when none has."""
    curves = report["segment_curves"]
    panels = [(level, [s for s in segs if curves[s - 1]]) for level, segs in LEVEL_SEGMENTS.items()]
    return [(level, segs) for level, segs in panels if segs] or [("no tissue curves", [])]


def _panel_title(report: dict[str, Any], level: str, segments: list[int]) -> str:
    """A curve panel's title: the slice level and the slices its segments lie in."""
    slices = sorted({report["segment_curves"][s - 1]["slice"] for s in segments})
    return f"{level}" + (f" (slice {', '.join(str(s + 1) for s in slices)})" if slices else "")


def _save_figure(fig: Figure, path: Path) -> None:
    """Save ``fig`` as PNG at ``path`` atomically."""
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    atomic_write_bytes(path, png.getvalue())


def _segments_csv(rows: list[dict[str, Any]]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _cell(value) for key, value in row.items()})
    return text.getvalue()


def _cell(value: Any) -> Any:
    """A CSV cell: empty for missing or non-finite values, floats with 4 decimals."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.4f}" if isinstance(value, float) else value


def _json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as null, so the file is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


# ---------------------------------------------------------------- one-page PDF

A4_PORTRAIT_IN = (8.27, 11.69)
PAGE_TITLE = "Stress perfusion MRI: myocardial blood flow report"
_AXIS_FONT_SIZE = 7  # tick and axis labels of the page's plots
_LINE_SPACING = 1.4  # baseline to baseline, in font sizes
# Figure-fraction rectangles (left, bottom, width, height) of the page's panels; the
# bullseye reaches up to the header's last line (at most _BULLSEYE_TOP).
_BULLSEYE_LEFT, _BULLSEYE_BOTTOM, _BULLSEYE_WIDTH, _BULLSEYE_TOP = 0.03, 0.55, 0.48, 0.8
_TITLE_SPACE = 0.03  # between the header and the top of the bullseye axes (its title)
_CURVES_RECT = (0.08, 0.35, 0.55, 0.17)
_TABLE_RECT = (0.05, 0.02, 0.90, 0.26)
_RESULTS_X = 0.55
_HEADER_WIDTH_CHARS = 100
_RESULTS_WIDTH_CHARS = 58
_MAX_QA_LINES = 18
_TABLE_COLUMNS = ("Segment", "Name", "Territory", "MBF (mL/min/g)", "MBF map mean ± SD",
                  "Relative upslope (%)")
_TABLE_WIDTHS = (0.09, 0.25, 0.1, 0.16, 0.2, 0.2)


def write_pdf(study: Study, path: str | Path) -> Path:
    """Write the study's one-page PDF report (:func:`report_pdf_bytes`) to ``path``,
    replacing it atomically; return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, report_pdf_bytes(study))
    return path


def report_pdf_bytes(study: Study) -> bytes:
    """The study's flow report as a one-page A4 portrait PDF (a second page with the
    viability report when the study has one, :mod:`napari_perfroi.lge.report`).

    The page shows the study and its source description, the software version,
    model, flow type, hematocrit, AIF source and saturation verdict; the
    bullseye (MBF, or relative upslope without absolute MBF), the AIF and
    tissue curves of one slice level, the global and territory means, the
    lowest territory, the QA flags and a per-segment table. The same report
    gives the same bytes. Raises :class:`StoreError` when the study has no
    flow report yet.
    """
    from .lge.report import pdf_pages

    report = flow_report(study)
    page = _report_page(report, study.name, _describe_source(study.attrs["source"]))
    return pdf_pages(page, study, metadata={
        "Title": f"{study.name}: {PAGE_TITLE}", "Creator": f"napari-perfroi {__version__}",
        "CreationDate": None,
    })


def _report_page(report: dict[str, Any], name: str, description: str) -> Figure:
    """The flow report drawn on one A4 portrait figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=A4_PORTRAIT_IN)
    fig.text(0.05, 0.975, PAGE_TITLE, fontsize=13, fontweight="bold", va="top")
    top = 0.945
    for key, value in _header_rows(report, name, description):
        fig.text(0.05, top, key, fontsize=8, fontweight="bold", va="top")
        top = _page_lines(fig, 0.19, top, _wrapped(value, _HEADER_WIDTH_CHARS, 3))
    top = min(_BULLSEYE_TOP, top - _TITLE_SPACE)
    _draw_page_bullseye(fig.add_axes((_BULLSEYE_LEFT, _BULLSEYE_BOTTOM, _BULLSEYE_WIDTH,
                                      top - _BULLSEYE_BOTTOM)), report)
    top = _page_lines(fig, _RESULTS_X, top, _results_lines(report), fontsize=9)
    _page_lines(fig, _RESULTS_X, top - 0.01, _qa_lines(report.get("qa", [])), color="firebrick")
    _draw_page_curves(fig.add_axes(_CURVES_RECT), report)
    _draw_segment_table(fig.add_axes(_TABLE_RECT), report)
    for ax in fig.axes:
        ax.tick_params(labelsize=_AXIS_FONT_SIZE)
        ax.xaxis.label.set_size(_AXIS_FONT_SIZE)
        ax.yaxis.label.set_size(_AXIS_FONT_SIZE)
    return fig


def _header_rows(report: dict[str, Any], name: str, description: str) -> list[tuple[str, str]]:
    """(label, value) lines at the top of the page."""
    return [
        ("Study", name),
        ("Description", description),
        ("Software", f"napari-perfroi {__version__}"),
        ("Model", report["model"]),
        ("Flow type", report["flow"]),
        ("Hematocrit", f"{report['hematocrit']:.2f}"),
        ("AIF", _aif_description(report)),
        ("AIF saturation", _saturation_verdict(report)),
    ]


def _aif_description(report: dict[str, Any]) -> str:
    """Where the AIF came from, its plasma peak and how it was built."""
    parts = [report.get("aif_source", "source not recorded")]
    if "aif_slice" in report:  # numbered from 0, as in the curves' titles
        parts.append(f"slice {report['aif_slice'] + 1}")
    parts.append(f"plasma peak {max(report['aif']):.1f} mmol/L")
    if report.get("aif_construction", "measured") != "measured":
        parts.append(report["aif_construction"])
    return ", ".join(parts)


def _saturation_verdict(report: dict[str, Any]) -> str:
    """The saturation check's verdict, or why there is none."""
    saturation = report.get("aif_saturation")
    if saturation:
        return saturation["verdict"]
    if report.get("aif_construction", "measured") != "measured":
        return "not checked (AIF built from a dual bolus)"
    return "not checked"


def has_absolute_mbf(report: dict[str, Any]) -> bool:
    """Whether the report has absolute MBF (older reports lack the key and have it)."""
    return bool(report.get("absolute_mbf", True))


def _results_lines(report: dict[str, Any]) -> list[str]:
    """Global MBF (or that there is none), territory means and the lowest territory."""
    if has_absolute_mbf(report):
        units = report.get("units", "mL/min/g")
        lines = [f"Global MBF: {_number(report['global_mbf'])} {units}",
                 f"Territory means (MBF, {units}):"]
        means, decimals = report.get("territory_mbf") or {}, 2
    else:
        lines = ["Absolute MBF not available:", "  semi-quantitative indices only",
                 "Territory means (relative upslope, %):"]
        values = relative_upslope_percent(report)
        means, decimals = territory_means(dict(enumerate(values, start=1))), 1
    lines.append(("  " + "   ".join(f"{TERRITORY_NAMES[key]} {_number(value, decimals)}"
                                    for key, value in means.items())) if means else "  -")
    lowest = report.get("lowest_territory")
    lines.append(f"Lowest territory: {TERRITORY_NAMES[lowest] if lowest else '-'}")
    return lines


def _qa_lines(qa: list[str]) -> list[str]:
    """The QA flags as wrapped bullet lines, cut to :data:`_MAX_QA_LINES`."""
    if not qa:
        return ["QA flags: none"]
    lines = [f"QA flags ({len(qa)}):"]
    for flag in qa:
        lines += textwrap.wrap(flag, _RESULTS_WIDTH_CHARS, initial_indent="• ",
                               subsequent_indent="  ")
    if len(lines) > _MAX_QA_LINES:
        hidden = len(lines) - _MAX_QA_LINES + 1
        lines = [*lines[:_MAX_QA_LINES - 1], f"... {hidden} more lines in report.json"]
    return lines


def _wrapped(text: str, width: int, max_lines: int) -> list[str]:
    """``text`` wrapped to ``width`` characters, at most ``max_lines`` lines."""
    return textwrap.wrap(text, width, max_lines=max_lines, placeholder=" ...") or ["-"]


def _page_lines(fig: Figure, x: float, top: float, lines: list[str], fontsize: float = 8,
                **style: Any) -> float:
    """Write ``lines`` down from figure height ``top`` at ``x``; return the height below them."""
    step = fontsize * _LINE_SPACING / 72 / fig.get_figheight()
    for i, line in enumerate(lines):
        fig.text(x, top - i * step, line, fontsize=fontsize, va="top", **style)
    return top - len(lines) * step


def _draw_page_bullseye(ax: Axes, report: dict[str, Any]) -> None:
    """The MBF bullseye, or relative upslope without absolute MBF."""
    if has_absolute_mbf(report):
        units = report.get("units", "mL/min/g")
        draw_bullseye(ax, report["segment_mbf"], units=f"MBF ({units})")
        ax.set_title("MBF per AHA segment (each segment's median curve)", fontsize=9)
    else:
        draw_upslope_bullseye(ax, report)
        ax.set_title("Relative upslope per AHA segment (%)", fontsize=9)


def _draw_page_curves(ax: Axes, report: dict[str, Any]) -> None:
    """The AIF and the curves of the mid level (else the first level with curves), with
    the legend, its labels wrapped, to the right of the axes."""
    panels = _curve_panels(report)
    level, segments = next((panel for panel in panels if panel[0] == "mid"), panels[0])
    legend = draw_curves(ax, report, segments).get_legend()
    legend.set_loc("upper left")
    legend.set_bbox_to_anchor((1.16, 1.02))
    legend.get_title().set_text("markers: measured,\nlines: model fit")
    for text in legend.get_texts():
        text.set_text(textwrap.fill(text.get_text(), 32))
    ax.set_title(f"AIF and tissue curves: {_panel_title(report, level, segments)}", fontsize=9)


def _draw_segment_table(ax: Axes, report: dict[str, Any]) -> None:
    """The per-segment table (:data:`_TABLE_COLUMNS`) filling ``ax``."""
    ax.set_axis_off()
    table = ax.table(cellText=_table_rows(report), colLabels=_TABLE_COLUMNS,
                     colWidths=_TABLE_WIDTHS, cellLoc="center", bbox=(0, 0, 1, 1))
    table.auto_set_font_size(False)
    table.set_fontsize(7.5)
    for (row, _), cell in table.get_celld().items():
        cell.set_linewidth(0.4)
        cell.set_edgecolor("0.6")
        if row == 0:
            cell.set_facecolor("0.9")
            cell.set_text_props(fontweight="bold")
    ax.set_title("Per segment (AHA 16-segment model; -: not imaged)", loc="left", fontsize=9)


def _table_rows(report: dict[str, Any]) -> list[list[str]]:
    """The table's cells; MBF and the map's statistics are n/a without absolute MBF."""
    absolute = has_absolute_mbf(report)
    rows = []
    for row, upslope in zip(segment_table(report), relative_upslope_percent(report)):
        flow = [_number(row["mbf"]), _mean_sd(row)] if absolute else ["n/a", "n/a"]
        rows.append([str(row["segment"]), row["name"], TERRITORY_NAMES[row["territory"]],
                     *flow, _number(upslope, 1)])
    return rows


def _mean_sd(row: dict[str, Any]) -> str:
    """A segment's map mean ± SD with 2 decimals; - where not imaged."""
    if row["mean"] is None:
        return "-"
    return f"{_number(row['mean'])} ± {_number(row['sd'])}"


# ---------------------------------------------------------------- stress and rest

RESERVE_FILES = ("reserve.csv", "reserve.json", "reserve_bullseye.png", "curves_stress_rest.png")
RESERVE_COLUMNS = ("segment", "name", "level", "territory", "stress", "rest", "reserve", "index")
# Red below the ischaemic threshold, yellow at it, green above: the scale runs from 0
# to twice the threshold.
RESERVE_COLOURS = "RdYlGn"


def reserve_table(reserve: Reserve) -> list[dict[str, Any]]:
    """One row per AHA segment 1-16 (:data:`RESERVE_COLUMNS`): the stress and rest values
    the index divides (MBF in mL/min/g or relative upslope), their ratio and the index;
    None where a study has no usable value."""
    return [
        {"segment": segment, "name": SEGMENT_NAMES[segment], "level": SEGMENT_LEVEL[segment],
         "territory": SEGMENT_TERRITORY[segment], "stress": stress, "rest": rest,
         "reserve": ratio, "index": reserve.index}
        for segment, stress, rest, ratio in zip(range(1, 17), reserve.stress, reserve.rest,
                                                reserve.segments)
    ]


def reserve_document(pair: StressRest) -> dict[str, Any]:
    """The content of reserve.json: the index, both studies (name, model, QA), the
    reserve per segment, per territory and globally, and the pair's QA."""
    from dataclasses import asdict

    reserve = pair.reserve
    studies = {}
    for role, name, report in (("stress", pair.stress_name, pair.stress_report),
                               ("rest", pair.rest_name, pair.rest_report)):
        studies[role] = {"study": name, "model": report["model"], "flow": report["flow"],
                         "absolute_mbf": has_absolute_mbf(report),
                         "qa": list(report.get("qa", []))}
    return {
        "index": reserve.index,
        "quantity": reserve.quantity,
        "ischaemic_threshold": reserve.threshold,
        **studies,
        "segments": reserve_table(reserve),
        "territories": {name: asdict(pooled) for name, pooled in reserve.territories.items()},
        "global": asdict(reserve.overall),
        "qa": pair.warnings + reserve.qa,
    }


def write_reserve_report(pair: StressRest, out_dir: str | Path) -> list[Path]:
    """Write reserve.csv, reserve.json, reserve_bullseye.png and curves_stress_rest.png
    (:data:`RESERVE_FILES`) into ``out_dir``, each replaced atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table, document, bullseye, curves = (out_dir / name for name in RESERVE_FILES)
    atomic_write_text(table, _segments_csv(reserve_table(pair.reserve)))
    atomic_write_text(document, json.dumps(
        _json_safe(reserve_document(pair)), indent=2, allow_nan=False) + "\n")
    _save_figure(reserve_bullseye_figure(pair), bullseye)
    _save_figure(_stress_rest_curves_figure(pair), curves)
    return [table, document, bullseye, curves]


def reserve_bullseye_figure(pair: StressRest) -> Figure:
    """The reserve per AHA segment as a bullseye (values written in) on a fixed scale
    from 0 to twice the index's ischaemic threshold, marked on the colour bar."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    reserve = pair.reserve
    fig = Figure(figsize=(6.4, 5.8), layout="constrained")
    ax = fig.add_subplot()
    top = 2 * reserve.threshold
    draw_bullseye(ax, reserve.segments, vmax=top, cmap=RESERVE_COLOURS, colorbar=False)
    label = (f"{reserve.index}, stress / rest\n"
             f"black line: ischaemic threshold {reserve.threshold:.1f}")
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, top), RESERVE_COLOURS), ax=ax, shrink=0.75,
                       extend="max", label=label)
    bar.ax.axhline(reserve.threshold, color="black", linewidth=2.5)
    summary = f"global {_number(reserve.overall.reserve)}; " + ", ".join(
        f"{TERRITORY_NAMES[name]} {_number(pooled.reserve)}"
        for name, pooled in reserve.territories.items())
    models = _stress_and_rest(*(f"model {report['model']}"
                                for report in (pair.stress_report, pair.rest_report)))
    fig.suptitle(f"{pair.stress_name} (stress) / {pair.rest_name} (rest): {reserve.index}\n"
                 f"{models}\n{summary} (ratios of territory means)", fontsize=9)
    qa = pair.warnings + reserve.qa
    if qa:
        fig.text(0.02, 0.01, "QA: " + "; ".join(qa), fontsize=7, color="firebrick", wrap=True)
    return fig


def _stress_rest_curves_figure(pair: StressRest) -> Figure:
    """Per slice level, the stress (left) and rest (right) AIF and tissue curves on the
    same concentration scales."""
    from matplotlib.figure import Figure

    studies = (("stress", pair.stress_name, pair.stress_report),
               ("rest", pair.rest_name, pair.rest_report))
    panels = [(level, segments) for level, segments in LEVEL_SEGMENTS.items()
              if any(report["segment_curves"][s - 1] for *_, report in studies for s in segments)]
    panels = panels or [("no tissue curves", [])]
    fig = Figure(figsize=(13.0, 0.8 + 3.2 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 2, squeeze=False)
    aif_axes = []
    for row, (level, segments) in zip(axes, panels):
        for ax, (role, name, report) in zip(row, studies):
            aif_axes.append(draw_curves(ax, report, segments))
            imaged = [s for s in segments if report["segment_curves"][s - 1]]
            title = _panel_title(report, level, imaged) if imaged else f"{level} (not imaged)"
            ax.set_title(f"{role}, {name}: {title}", fontsize=9)
    _common_limits(list(axes.ravel()), "x")
    _common_limits(list(axes.ravel()), "y")
    _common_limits(aif_axes, "y")
    models = _stress_and_rest(*(
        f"{report['flow']} flow, hematocrit {report['hematocrit']:.2f}, {report['model']}"
        for report in (pair.stress_report, pair.rest_report)))
    fig.suptitle(f"{pair.stress_name} (stress) and {pair.rest_name} (rest): AIF and tissue "
                 f"curves on common scales\n{models}", fontsize=9)
    return fig


def _stress_and_rest(stress: str, rest: str) -> str:
    """Descriptions of the stress and rest studies: once when they agree, else a line each."""
    return f"stress and rest: {stress}" if stress == rest else f"stress: {stress}\nrest: {rest}"


def _common_limits(axes: list[Axes], which: str) -> None:
    """Give every axes in ``axes`` the ``which`` ("x" or "y") range that covers them all."""
    limits = [getattr(ax, f"get_{which}lim")() for ax in axes]
    span = (min(low for low, _ in limits), max(high for _, high in limits))
    for ax in axes:
        getattr(ax, f"set_{which}lim")(span)
