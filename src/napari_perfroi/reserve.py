"""Myocardial perfusion reserve: one patient's stress and rest studies compared.

With absolute flow in both studies the reserve is the MPR, stress MBF / rest
MBF (both mL/min/g). When either study has no absolute flow (e.g. no
unsaturated AIF) it is the MPRI, stress / rest relative upslope (the
myocardial upslope over the LV blood upslope): semi-quantitative, but it
needs no AIF on a concentration scale. One index is used for the whole pair,
so segment, territory and global values are comparable. A territory's (and
the global) reserve is the ratio of the mean stress and mean rest values of
its segments that have both, not the mean of the segment ratios.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .aha import TERRITORIES
from .errors import InputError
from .report import TERRITORY_NAMES, flow_report, has_absolute_mbf

if TYPE_CHECKING:
    from .study import Study

MPR = "MPR (MBF ratio)"
MPRI = "MPRI (relative-upslope ratio)"
# What each index divides.
INDEX_QUANTITY = {MPR: "MBF (mL/min/g)", MPRI: "relative upslope (myocardium / LV blood)"}
# Reserve below which a segment is usually read as ischaemic: MPR 2.0; MPRI 1.5
# (Al-Saadi et al., Circulation 2000).
ISCHAEMIC_RESERVE = {MPR: 2.0, MPRI: 1.5}
# A global reserve below this suggests the two studies were given the wrong way round.
SWAPPED_BELOW = 1.0


@dataclass(frozen=True)
class Pooled:
    """Mean stress and rest values over ``segments`` (those with both) and their ratio."""

    segments: list[int]
    stress: float | None
    rest: float | None
    reserve: float | None


@dataclass(frozen=True)
class Reserve:
    """Stress / rest ratio per AHA segment (entry 0 is segment 1), territory and globally.

    ``stress`` and ``rest`` hold the per-segment values the ``index`` divides
    (:data:`INDEX_QUANTITY`); None where a study has no usable value.
    """

    index: str
    stress: list[float | None]
    rest: list[float | None]
    segments: list[float | None]
    territories: dict[str, Pooled]
    overall: Pooled
    qa: list[str]

    @property
    def quantity(self) -> str:
        """What the index divides, with its units."""
        return INDEX_QUANTITY[self.index]

    @property
    def threshold(self) -> float:
        """The reserve (a ratio, no units) below which a segment is usually read as ischaemic."""
        return ISCHAEMIC_RESERVE[self.index]


@dataclass(frozen=True)
class StressRest:
    """A stress study and its rest study: names, flow reports, reserve and warnings."""

    stress_name: str
    rest_name: str
    stress_report: dict[str, Any]
    rest_report: dict[str, Any]
    reserve: Reserve
    warnings: list[str]


def pair_studies(stress: Study, rest: Study) -> StressRest:
    """Read both studies' flow reports and compute the reserve.

    Raises :class:`~.errors.InputError` when both are one store and
    :class:`~.study.StoreError` when either has no flow report; ``warnings``
    say when the two seem to come from different patients.
    """
    if os.path.samefile(stress.path, rest.path):
        raise InputError(f"{rest.path}: the rest study is the stress study itself; "
                         "give the rest scan's store")
    stress_report, rest_report = flow_report(stress), flow_report(rest)
    warnings = identity_warnings(stress.attrs, rest.attrs)
    if stress_report == rest_report:
        warnings.append(f"{stress.name} and {rest.name} have identical flow reports: "
                        "is one a copy of the other?")
    return StressRest(stress.name, rest.name, stress_report, rest_report,
                      perfusion_reserve(stress_report, rest_report), warnings)


def reserve_line(reserve: Reserve) -> str:
    """One line: the index, the global and each territory's reserve."""
    territories = ", ".join(f"{TERRITORY_NAMES[name]} {_number(pooled.reserve)}"
                            for name, pooled in reserve.territories.items())
    return f"{reserve.index}: global {_number(reserve.overall.reserve)}; {territories}"


def identity_warnings(stress_attrs: dict[str, Any], rest_attrs: dict[str, Any]) -> list[str]:
    """Signs that two studies are not one patient's, from their ``perfroi`` attributes.

    The stores are patient-free, so this compares what they keep: the
    importer, a phantom's seed (its anatomy) and a DICOM study's scanner
    manufacturer.
    """
    stress_source, rest_source = stress_attrs["source"], rest_attrs["source"]
    stress_importer, rest_importer = stress_source.get("importer"), rest_source.get("importer")
    if stress_importer != rest_importer:
        return [f"the stress study comes from {stress_importer}, the rest study from "
                f"{rest_importer}: are they one patient's?"]
    stress_seed = stress_attrs.get("truth", {}).get("seed")
    rest_seed = rest_attrs.get("truth", {}).get("seed")
    if stress_seed != rest_seed:
        return [f"the stress study is phantom seed {stress_seed}, the rest study phantom seed "
                f"{rest_seed}: different anatomies, not one patient"]
    stress_makers, rest_makers = stress_source.get("manufacturer"), rest_source.get("manufacturer")
    if stress_makers != rest_makers:
        return [f"the stress study was acquired on {', '.join(stress_makers or ['?'])}, the rest "
                f"study on {', '.join(rest_makers or ['?'])}: are they one patient's?"]
    return []


def reserve_index(stress_report: dict[str, Any], rest_report: dict[str, Any]) -> str:
    """:data:`MPR` when both reports have absolute MBF, else :data:`MPRI`."""
    return MPR if has_absolute_mbf(stress_report) and has_absolute_mbf(rest_report) else MPRI


def index_values(report: dict[str, Any], index: str) -> list[float | None]:
    """The 16 per-segment values ``index`` divides: MBF in mL/min/g for the MPR, the
    relative upslope for the MPRI; None where missing, not finite or not positive."""
    if index == MPR:
        values = report["segment_mbf"]
    else:
        semiquant = report.get("segment_semiquant") or [None] * 16
        values = [None if entry is None else entry.get("relative_upslope") for entry in semiquant]
    return [_positive(value) for value in values]


def perfusion_reserve(stress_report: dict[str, Any], rest_report: dict[str, Any]) -> Reserve:
    """The reserve of a stress and a rest flow report (:class:`Reserve`)."""
    index = reserve_index(stress_report, rest_report)
    stress = index_values(stress_report, index)
    rest = index_values(rest_report, index)
    segments = [None if s is None or r is None else s / r for s, r in zip(stress, rest)]
    territories = {name: pool(stress, rest, members) for name, members in TERRITORIES.items()}
    overall = pool(stress, rest, range(1, 17))
    qa = _index_notes(stress_report, rest_report, index) + _gap_notes(stress, rest, index)
    if overall.reserve is not None and overall.reserve < SWAPPED_BELOW:
        qa.append(f"global reserve {overall.reserve:.2f} is below {SWAPPED_BELOW:g}: are the "
                  "stress and rest studies the wrong way round?")
    return Reserve(index, stress, rest, segments, territories, overall, qa)


def pool(stress: Sequence[float | None], rest: Sequence[float | None],
         members: Sequence[int] | range) -> Pooled:
    """Means over the ``members`` (segment numbers) that have both values, and their ratio."""
    paired = [n for n in members if stress[n - 1] is not None and rest[n - 1] is not None]
    if not paired:
        return Pooled([], None, None, None)
    stress_mean = sum(stress[n - 1] for n in paired) / len(paired)
    rest_mean = sum(rest[n - 1] for n in paired) / len(paired)
    return Pooled(paired, stress_mean, rest_mean, stress_mean / rest_mean)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _positive(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(value) and value > 0 else None


def _index_notes(stress_report: dict[str, Any], rest_report: dict[str, Any],
                 index: str) -> list[str]:
    if index == MPR:
        return []
    lacking = [label for label, report in (("stress", stress_report), ("rest", rest_report))
               if not has_absolute_mbf(report)]
    return [f"no absolute MBF in the {' and '.join(lacking)} study: the reserve is the "
            f"{index}, semi-quantitative"]


def _gap_notes(stress: list[float | None], rest: list[float | None], index: str) -> list[str]:
    """Where one study has a value and the other none, or a study has none at all."""
    quantity = INDEX_QUANTITY[index].split(" (")[0]
    notes = []
    for label, own, other in (("stress", stress, rest), ("rest", rest, stress)):
        if all(value is None for value in own):
            notes.append(f"the {label} study has no segment {quantity}: no reserve")
            continue
        gaps = [n for n, (mine, theirs) in enumerate(zip(own, other), start=1)
                if mine is None and theirs is not None]
        if gaps:
            notes.append(f"segment{'s' if len(gaps) > 1 else ''} {', '.join(map(str, gaps))}: "
                         f"no usable {quantity} at {label}, no reserve")
    return notes
