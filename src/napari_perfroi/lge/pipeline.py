"""The LGE steps on a study store's ``lge`` group, and the viability report.

``lge-segment`` labels the myocardium (keeping slices edited by hand),
``lge-aha`` places the AHA sectors from the LGE's own RV insertion points,
``lge-scar`` finds the scar with the chosen method (keeping edited slices),
and ``viability`` measures scar per segment and, with the perfusion study's
flow report, gives each coronary territory its verdict. A step whose input
is missing runs the step that makes it first (:func:`run_lge_steps`).

QA refuses a scar number that means nothing: on a magnitude slice whose
myocardium is not dark beside the brightest of the LV (the inversion time
missed the myocardial null), scar cannot be told from myocardium; its
segments are "not assessed".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import __version__, aha
from ..errors import InputError
from ..study import LV_BLOOD, MYOCARDIUM, StoreError, Study
from . import scar as scar_rules
from .store import LgeStudy

LGE_STEPS = ("lge-segment", "lge-aha", "lge-scar", "viability")
# Scar methods: the three models (trained with pixel masks, one label per slice, one per
# study) and the two thresholding rules clinicians know.
SCAR_METHODS = {
    "slice": "U-Net trained with slice-level labels",
    "stack": "U-Net trained with study-level labels",
    "pixel": "U-Net trained with pixel masks",
    "nsd": "n-SD over remote myocardium",
    "fwhm": "full width at half maximum",
}
DEFAULT_SCAR_METHOD = "slice"
DEFAULT_N_SD = 5.0
# Remote myocardium (the wall's lower quartile) at least this bright (x the 95th percentile
# of the LV blood pool and myocardium) in a magnitude image: the myocardium is not nulled.
NOT_NULLED_FRACTION = 0.5
REMOTE_PERCENTILE, BRIGHT_PERCENTILE = 25, 95
# Of each step: the arrays it needs.
_NEEDS = {"lge-segment": (), "lge-aha": ("labels",), "lge-scar": ("labels", "aha"),
          "viability": ("labels", "aha", "scar")}
_MAKER = {"labels": "lge-segment", "aha": "lge-aha", "scar": "lge-scar"}  # array: its step


def lge_image(lge: LgeStudy) -> np.ndarray:
    """The LGE stack as float32 (PSIR signed, as stored)."""
    return lge.read("image").astype(np.float32)


# ---------------------------------------------------------------- steps
def segment_step(lge: LgeStudy, model=None, progress=None) -> str:
    """Label the LV blood pool, myocardium and RV of every slice not edited by hand."""
    from .models import load_lge_model, segment_lge

    loaded = load_lge_model(model or "myocardium")
    result = segment_lge(lge_image(lge), lge.pixel_spacing_mm, model=loaded, progress=progress)
    labels = result.labels
    edited = _edited(lge, "labels")
    if edited.any():
        labels[edited] = lge.read("labels")[edited]
    lge.write("labels", labels)
    lge.record_step("lge-segment", {
        "model": str(loaded.weights_path.name), "sha256": loaded.metadata["sha256"],
        "confidence": [round(float(c), 3) for c in result.confidence],
        "kept_edited_slices": [int(s) for s in np.flatnonzero(edited)],
    }, __version__)
    found = sum(result.lv_found)
    return f"LV found on {found} of {len(result.lv_found)} LGE slice(s)"


def sectors_step(lge: LgeStudy, progress=None) -> str:
    """AHA sectors of every slice from its labels and its RV insertion points."""
    attrs = lge.attrs
    geometry = aha.segment_geometry(lge.read("labels"), attrs["slice_levels"],
                                    attrs["image_orientation_patient"], lge.pixel_spacing_mm)
    lge.write("aha", geometry.aha)
    lge.update_attrs(lv_centre_px=[list(c) for c in geometry.centre],
                     rv_insertion_deg=[list(p) for p in geometry.rv_insertion_deg])
    lge.record_step("lge-aha", {"messages": geometry.messages}, __version__)
    if progress is not None:
        progress(1, 1)
    return "; ".join(geometry.messages) or f"{len(np.unique(geometry.aha)) - 1} segments"


def scar_step(lge: LgeStudy, method: str = DEFAULT_SCAR_METHOD, n_sd: float = DEFAULT_N_SD,
              progress=None, weights=None) -> str:
    """Scar inside the myocardium by ``method`` (:data:`SCAR_METHODS`), on every slice not
    edited by hand; the models (``weights``: a fine-tuned file instead of the shipped
    model of ``method``) also write their per-pixel ``scar_probability``."""
    if method not in SCAR_METHODS:
        raise InputError(f"unknown scar method {method!r} (expected one of "
                         f"{', '.join(SCAR_METHODS)})")
    if not n_sd > 0:
        raise InputError(f"--n-sd must be positive, got {n_sd}")
    if weights is not None and method in ("nsd", "fwhm"):
        raise InputError(f"scar weights are for the models, not the {method} rule")
    image = lge_image(lge)
    myocardium = lge.read("labels") == MYOCARDIUM
    spacing = lge.pixel_spacing_mm
    parameters: dict[str, Any] = {"method": method, "description": SCAR_METHODS[method]}
    if method in ("nsd", "fwhm"):
        remote = scar_rules.remote_myocardium(image, myocardium, lge.read("aha"))
        found = (scar_rules.threshold_nsd(image, myocardium, n_sd, remote) if method == "nsd"
                 else scar_rules.threshold_fwhm(image, myocardium, remote))
        if method == "nsd":
            parameters["n_sd"] = n_sd
        if progress is not None:
            progress(1, 1)
    else:
        from .models import load_lge_model, scar_probability

        model = load_lge_model(weights or method)
        threshold = float(model.metadata.get("threshold", 0.5))
        probability = scar_probability(image, myocardium, spacing, model=model,
                                       progress=progress)
        lge.write("scar_probability", probability)
        found = probability > threshold
        parameters.update(model=model.weights_path.name, sha256=model.metadata["sha256"],
                          threshold=threshold)
    scar = scar_rules.clean_scar(found, myocardium, spacing).astype(np.uint8)
    edited = _edited(lge, "scar")
    if edited.any():
        scar[edited] = lge.read("scar")[edited]
    lge.write("scar", scar)
    parameters["kept_edited_slices"] = [int(s) for s in np.flatnonzero(edited)]
    lge.record_step("lge-scar", parameters, __version__)
    with_scar = int((scar > 0).any(axis=(1, 2)).sum())
    return f"scar ({SCAR_METHODS[method]}) on {with_scar} of {len(scar)} LGE slice(s)"


def viability_step(lge: LgeStudy, study: Study, progress=None) -> str:
    """Scar per AHA segment, the perfusion of each segment and each territory's verdict,
    kept as the ``viability`` attribute of the LGE study."""
    document = viability(lge, study)
    lge.update_attrs(viability=document)
    lge.record_step("viability", {"scar_method": document["scar_method"]}, __version__)
    if progress is not None:
        progress(1, 1)
    return viability_line(document)


_STEP_FUNCTIONS: dict[str, Callable] = {
    "lge-segment": lambda lge, study, progress, o: segment_step(lge, o.get("model"), progress),
    "lge-aha": lambda lge, study, progress, o: sectors_step(lge, progress),
    "lge-scar": lambda lge, study, progress, o: scar_step(
        lge, o.get("method") or DEFAULT_SCAR_METHOD, o.get("n_sd") or DEFAULT_N_SD, progress,
        o.get("scar_weights")),
    "viability": lambda lge, study, progress, o: viability_step(lge, study, progress),
}


def steps_to_run(lge: LgeStudy, requested: list[str]) -> list[str]:
    """``requested`` with the steps that make their missing inputs, in order."""
    unknown = [name for name in requested if name not in LGE_STEPS]
    if unknown:
        raise InputError(f"unknown LGE step {', '.join(unknown)} (available: "
                         f"{', '.join(LGE_STEPS)})")
    chosen = set(requested)
    for name in reversed(LGE_STEPS):
        if name in chosen:
            for needed in _NEEDS[name]:
                if not lge.has(needed) or _MAKER[needed] in chosen:
                    chosen.add(_MAKER[needed])
    return [name for name in LGE_STEPS if name in chosen]


def run_lge_steps(study: Study, steps: list[str] | None = None,
                  progress: Callable[[str, float, int], None] | None = None,
                  log: Callable[[str], None] | None = None, **options) -> dict[str, str]:
    """Run LGE ``steps`` (default all) and their missing prerequisites on the LGE study of
    ``study``; {step: summary line}. ``progress(step, done, total)`` may raise to cancel
    before a step writes; ``options``: model, method, n_sd, scar_weights."""
    lge = LgeStudy.open(study, writable=True)
    order = steps_to_run(lge, list(steps or LGE_STEPS))
    summaries = {}
    for name in order:
        step_progress = None if progress is None else (
            lambda done, total, name=name: progress(name, done, total))
        summaries[name] = _STEP_FUNCTIONS[name](lge, study, step_progress, options)
        if log is not None:
            log(f"{name}: {summaries[name]}")
    return summaries


# ---------------------------------------------------------------- viability
def viability(lge: LgeStudy, study: Study) -> dict[str, Any]:
    """The viability document: per segment scar and perfusion, per territory verdict, QA."""
    from ..report import flow_report, has_absolute_mbf, relative_upslope_percent

    image = lge_image(lge)
    labels, sectors, scar = lge.read("labels"), lge.read("aha"), lge.read("scar") > 0
    myocardium = labels == MYOCARDIUM
    attrs = lge.attrs
    qa = []
    unassessable = _not_nulled_slices(image, labels, attrs["lge_kind"])
    for s in unassessable:
        qa.append(f"LGE slice {s + 1}: the remote myocardium is not nulled (inversion time "
                  "off the myocardial null): scar cannot be told from it, not assessed")
    centres = attrs.get("lv_centre_px")
    rows = scar_rules.segment_scar(myocardium, scar, sectors, centres, lge.pixel_spacing_mm)
    unassessed_segments = set(np.unique(sectors[unassessable])) - {0} if unassessable else set()
    for row in rows:
        if row["segment"] in unassessed_segments:
            row.update(scar_percent=None, transmurality=None, scar_class=None)
    try:
        report = flow_report(study)
    except StoreError:
        report = None
        qa.append("the perfusion study has no flow report: territory verdicts need it "
                  "(run perfroi analyze)")
    abnormal = scar_rules.perfusion_abnormal(report) if report else dict.fromkeys(range(1, 17))
    if report is not None:
        absolute = has_absolute_mbf(report)
        perfusion = (report["segment_mbf"] if absolute else relative_upslope_percent(report))
    else:
        absolute, perfusion = False, [None] * 16
    classes = {row["segment"]: row["scar_class"] for row in rows}
    verdicts = scar_rules.territory_verdicts(abnormal, classes)
    method = attrs["steps"].get("lge-scar", {}).get("parameters", {}).get("method")
    for row in rows:
        segment = row["segment"]
        row.update(perfusion=perfusion[segment - 1], perfusion_abnormal=abnormal.get(segment))
    return {
        "scar_method": method,
        "scar_method_description": SCAR_METHODS.get(method),
        "perfusion_measure": "stress MBF (mL/min/g)" if absolute else "relative upslope (%)",
        "absolute_mbf": absolute,
        "ischaemic_mbf": scar_rules.ISCHAEMIC_MBF,
        "segments": rows,
        "territories": verdicts,
        "global_scar_percent": _global_scar_percent(rows),
        "qa": qa,
    }


def viability_line(document: dict[str, Any]) -> str:
    """One line: the verdict of each territory and the scar burden."""
    territories = ", ".join(f"{name.upper()} {verdict}"
                            for name, verdict in document["territories"].items())
    burden = document["global_scar_percent"]
    scar_text = "scar not assessed" if burden is None else f"scar {burden:.1f} % of the LV"
    return f"{territories}; {scar_text}"


def _global_scar_percent(rows: list[dict[str, Any]]) -> float | None:
    assessed = [row for row in rows if row["scar_percent"] is not None and row["pixels"]]
    if not assessed:
        return None
    return 100.0 * sum(row["scar_pixels"] for row in assessed) / sum(
        row["pixels"] for row in assessed)


def _not_nulled_slices(image: np.ndarray, labels: np.ndarray, kind: str) -> list[int]:
    """Magnitude slices whose myocardium is not dark beside the LV's brightest pixels.

    The myocardium's lower quartile stands for the remote wall: it holds even with
    scar in half the wall or a few mislabelled pixels.
    """
    if kind != "magnitude":
        return []  # PSIR keeps the sign: nulled myocardium is told apart whatever TI
    slices = []
    for s, (values, labelled) in enumerate(zip(image, labels)):
        wall = values[labelled == MYOCARDIUM]
        heart = values[(labelled == MYOCARDIUM) | (labelled == LV_BLOOD)]
        if wall.size and (np.percentile(wall, REMOTE_PERCENTILE)
                          >= NOT_NULLED_FRACTION * np.percentile(heart, BRIGHT_PERCENTILE)):
            slices.append(s)
    return slices


def _edited(lge: LgeStudy, name: str) -> np.ndarray:
    """Slices whose ``name`` (labels or scar) was edited by hand and is in the store."""
    flags = f"{name}_edited"
    if not (lge.has(name) and lge.has(flags)):
        return np.zeros(lge.shape[0], dtype=bool)
    return lge.read(flags) > 0
