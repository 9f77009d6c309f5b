"""The viability report: scar per segment beside perfusion, and each territory's verdict.

Written by ``perfroi report`` next to the flow report when the study has an
analysed LGE study: ``viability.csv`` (one row per AHA segment),
``viability.json`` (the whole viability document), ``viability_bullseye.png``
(perfusion colour, scar hatching, verdicts), and a second page of ``report.pdf``.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..report import (
    A4_PORTRAIT_IN,
    SEGMENT_LEVEL,
    SEGMENT_NAMES,
    SEGMENT_TERRITORY,
    TERRITORY_NAMES,
    _json_safe,
    _save_figure,
    _segments_csv,
)
from ..study import Study, atomic_write_text
from .bullseye import draw_combined_bullseye
from .store import LgeStudy, has_lge

if TYPE_CHECKING:
    from matplotlib.figure import Figure

VIABILITY_FILES = ("viability.csv", "viability.json", "viability_bullseye.png")
VIABILITY_COLUMNS = ("segment", "name", "level", "territory", "perfusion", "perfusion_abnormal",
                     "scar_percent", "transmurality", "scar_class", "wall_thickness_mm",
                     "pixels", "scar_pixels")
PAGE_TITLE = "Viability: LGE scar beside stress perfusion"


def viability_document(study: Study) -> dict[str, Any] | None:
    """The study's viability document (``perfroi lge-analyze``), None without one."""
    if not has_lge(study):
        return None
    return LgeStudy.open(study).attrs.get("viability")


def viability_table(document: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per AHA segment (:data:`VIABILITY_COLUMNS`)."""
    rows = []
    for row in document["segments"]:
        segment = row["segment"]
        rows.append({**{column: row.get(column) for column in VIABILITY_COLUMNS},
                     "name": SEGMENT_NAMES[segment], "level": SEGMENT_LEVEL[segment],
                     "territory": TERRITORY_NAMES[SEGMENT_TERRITORY[segment]]})
    return rows


def write_viability_report(study: Study, out_dir: str | Path) -> list[Path]:
    """Write :data:`VIABILITY_FILES` into ``out_dir`` (none without a viability document)."""
    document = viability_document(study)
    if document is None:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table, doc, bullseye = (out_dir / name for name in VIABILITY_FILES)
    atomic_write_text(table, _segments_csv(viability_table(document)))
    atomic_write_text(doc, json.dumps(_json_safe({"study": study.name, **document}), indent=2,
                                      allow_nan=False) + "\n")
    _save_figure(viability_bullseye_figure(study.name, document), bullseye)
    return [table, doc, bullseye]


def draw_viability_bullseye(ax, document: dict[str, Any], highlight: int | None = None,
                            colorbar: bool = True):
    """The combined bullseye of a viability document on ``ax``."""
    rows = document["segments"]
    return draw_combined_bullseye(
        ax, [row["perfusion"] for row in rows],
        {row["segment"]: row["scar_class"] for row in rows}, document["territories"],
        absolute=document["absolute_mbf"], highlight=highlight, colorbar=colorbar)


def viability_bullseye_figure(name: str, document: dict[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 6.4))
    ax = fig.add_subplot()
    draw_viability_bullseye(ax, document)
    ax.set_title(f"{name}: perfusion and LGE scar", fontsize=10)
    return fig


def viability_page(document: dict[str, Any], name: str) -> Figure:
    """The viability report on one A4 portrait page (the PDF's second page)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=A4_PORTRAIT_IN)
    fig.text(0.05, 0.975, PAGE_TITLE, fontsize=13, fontweight="bold", va="top")
    burden = document["global_scar_percent"]
    lines = [
        f"Study: {name}",
        f"Scar: {document['scar_method_description'] or 'not found'}"
        + ("" if burden is None else f"; {burden:.1f} % of the imaged LV myocardium"),
        f"Perfusion: {document['perfusion_measure']}"
        + (f", abnormal below {document['ischaemic_mbf']:g}" if document["absolute_mbf"]
           else ", abnormal well below the study's normal segments"),
        "Verdict per territory: ischaemia = perfusion defect without scar; infarct = scar",
        "covering every abnormal segment; peri-infarct ischaemia = abnormal segments beyond the "
        "scar.",
    ]
    for k, line in enumerate(lines):
        fig.text(0.05, 0.94 - 0.018 * k, line, fontsize=8, va="top")
    draw_viability_bullseye(fig.add_axes((0.1, 0.40, 0.8, 0.45)), document)
    for k, line in enumerate(document["qa"][:6]):
        fig.text(0.05, 0.385 - 0.015 * k, f"QA: {line}", fontsize=7, va="top", color="firebrick")
    _draw_viability_table(fig.add_axes((0.05, 0.02, 0.9, 0.27)), document)
    return fig


def _draw_viability_table(ax, document: dict[str, Any]) -> None:
    ax.axis("off")
    header = ("Segment", "Name", "Territory", "Perfusion", "Scar %", "Transmurality", "Class")
    rows = [[str(row["segment"]), row["name"], row["territory"], _text(row["perfusion"]),
             _text(row["scar_percent"], 1), _text(row["transmurality"]),
             row["scar_class"] or "not assessed"] for row in viability_table(document)]
    table = ax.table(cellText=rows, colLabels=header, loc="upper center", cellLoc="center",
                     colWidths=(0.09, 0.25, 0.1, 0.13, 0.1, 0.14, 0.19))
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.scale(1.0, 1.05)


def _text(value: Any, decimals: int = 2) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{decimals}f}"


def pdf_pages(report_page: Figure, study: Study, metadata: dict[str, Any]) -> bytes:
    """The report PDF: the flow report page, then the viability page when there is one."""
    from matplotlib.backends.backend_pdf import PdfPages

    document = viability_document(study)
    pdf = io.BytesIO()
    with PdfPages(pdf, metadata=metadata) as pages:
        pages.savefig(report_page)
        if document is not None:
            pages.savefig(viability_page(document, study.name))
    return pdf.getvalue()
