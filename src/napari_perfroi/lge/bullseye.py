"""Perfusion and scar on one AHA bullseye, with the territory verdicts under it.

Each segment is coloured by perfusion on the flow report's scales (stress MBF,
or relative upslope without absolute MBF) and hatched by its scar class; the
verdict of each coronary territory (:func:`napari_perfroi.lge.scar.territory_verdicts`)
is written below. Drawn on a given matplotlib axes, without pyplot, so the same
function serves the PDF page, PNG files and the napari dock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from ..report import (BULLSEYE_RADIUS, TERRITORY_NAMES, bullseye_segment_at, bullseye_wedge,
                      draw_bullseye)
from .scar import (INFARCT, ISCHAEMIA, NORMAL, NOT_ASSESSED, PERI_INFARCT_ISCHAEMIA,
                   SCAR_NON_TRANSMURAL, SCAR_TRANSMURAL)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.patches import Wedge

# Sparse single hatching for non-transmural scar, dense cross-hatching for transmural;
# both differ from the grey "///" of a segment without perfusion data.
SCAR_HATCHES = {SCAR_NON_TRANSMURAL: "\\\\", SCAR_TRANSMURAL: "xx"}
SCAR_LEGEND = {SCAR_NON_TRANSMURAL: "scar <50 % transmural",
               SCAR_TRANSMURAL: "scar \u226550 % transmural"}
VERDICT_COLOURS = {NORMAL: "darkgreen", ISCHAEMIA: "darkorange", INFARCT: "firebrick",
                   PERI_INFARCT_ISCHAEMIA: "darkmagenta", NOT_ASSESSED: "0.4"}
MBF_UNITS = "stress MBF (mL/min/g)"
UPSLOPE_UNITS = "relative upslope (% of the LV blood pool's)"
# Room under the bullseye (data units; the bullseye's radius is 3) for the scar legend
# and the verdicts, whose lines are spaced in points so they keep their size.
_TEXT_AREA = 1.9
_TEXT_TOP = BULLSEYE_RADIUS + 0.85
_LINE_POINTS = 11.0
_LEGEND_ROW_POINTS = 20.0
_LEGEND_COLUMN_INCHES = 2.2
_FONT_SIZE = 8


def draw_combined_bullseye(
    ax: Axes,
    perfusion_values: Iterable[float | None],
    scar_classes: Mapping[int, str | None],
    verdicts: Mapping[str, str],
    *,
    absolute: bool,
    highlight: int | None = None,
    colorbar: bool = True,
) -> dict[int, Wedge]:
    """Draw perfusion, scar and territory verdicts on ``ax``; return each segment's wedge.

    ``perfusion_values`` are the 16 segments' stress MBF in mL/min/g when
    ``absolute``, else their relative upslope in per cent (None: not imaged), on
    the colour scales of the flow report's bullseye. ``scar_classes`` maps a
    segment to its scar class: "<50 %" is hatched sparsely, ">=50 %" cross-hatched,
    "none" and None (no LGE) not at all. ``verdicts`` maps a territory (lad, rca,
    lcx) to its verdict. ``highlight`` and ``colorbar`` are as in
    :func:`napari_perfroi.report.draw_bullseye`; map a click to a segment with
    :func:`napari_perfroi.report.bullseye_segment_at`.
    """
    from matplotlib.patches import Patch, Wedge

    values = list(perfusion_values)
    if absolute:
        wedges = draw_bullseye(ax, values, highlight=highlight, units=MBF_UNITS,
                               colorbar=colorbar)
    else:  # the scale of napari_perfroi.report.draw_upslope_bullseye
        imaged = [v for v in values if v is not None and math.isfinite(v)]
        wedges = draw_bullseye(ax, values, vmax=max([20.0, *imaged]), cmap="viridis",
                               highlight=highlight, units=UPSLOPE_UNITS, colorbar=colorbar)
    scarred = {}
    for segment, wedge in wedges.items():
        hatch = SCAR_HATCHES.get(scar_classes.get(segment))
        if hatch is None:
            continue
        inner, outer, start, end = bullseye_wedge(segment)
        ax.add_patch(Wedge((0, 0), outer, start, end, width=outer - inner, fill=False,
                           hatch=hatch, edgecolor=_contrasting(wedge.get_facecolor()),
                           linewidth=0, zorder=2))
        scarred[segment] = wedge.get_facecolor()
    # The values written in scarred segments get their segment's colour behind them.
    for text in ax.texts:
        segment = bullseye_segment_at(*text.get_position())
        if segment in scarred:
            text.set_bbox({"boxstyle": "round,pad=0.15", "facecolor": scarred[segment],
                           "edgecolor": "none"})
    limit = BULLSEYE_RADIUS + 0.6
    ax.set_ylim(-limit - _TEXT_AREA, limit)
    marks = [Patch(facecolor="0.85", edgecolor="black", hatch=SCAR_HATCHES[c],
                   label=SCAR_LEGEND[c]) for c in SCAR_HATCHES]
    if not all(v is not None and math.isfinite(v) for v in values):
        marks.append(Patch(facecolor="0.88", edgecolor="0.45", hatch="///",
                           label="no perfusion data"))
    # As many legend columns as the figure's width holds (a narrow dock figure: one).
    columns = max(1, min(len(marks), int(ax.figure.get_figwidth() / _LEGEND_COLUMN_INCHES)))
    ax.legend(handles=marks, loc="upper center", bbox_to_anchor=(0.0, -_TEXT_TOP),
              bbox_transform=ax.transData, ncol=columns, fontsize=_FONT_SIZE - 1,
              frameon=False, handlelength=3.0, handleheight=2.0, borderaxespad=0.0,
              columnspacing=1.2)
    legend_rows = math.ceil(len(marks) / columns)
    lines = []
    for territory, name in TERRITORY_NAMES.items():
        verdict = verdicts.get(territory, NOT_ASSESSED)
        lines.append((f"{name}: {verdict}", VERDICT_COLOURS.get(verdict, "black"), "bold"))
    no_lge = [s for s, v in zip(range(1, 17), values)
              if v is not None and math.isfinite(v) and scar_classes.get(s) is None]
    if no_lge:
        lines.append((f"no LGE: segment{'s' if len(no_lge) > 1 else ''} "
                      + ", ".join(map(str, no_lge)), "0.4", "normal"))
    for row, (text, colour, weight) in enumerate(lines):
        ax.annotate(text, (0.0, -_TEXT_TOP),
                    xytext=(0.0, -(legend_rows * _LEGEND_ROW_POINTS + row * _LINE_POINTS)),
                    textcoords="offset points", ha="center", va="top", fontsize=_FONT_SIZE,
                    color=colour, fontweight=weight, annotation_clip=False)
    return wedges


def _contrasting(rgba) -> str:
    """Black on a light colour, white on a dark one (the rule of the bullseye's numbers)."""
    red, green, blue, _ = rgba
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
