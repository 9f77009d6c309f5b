"""LGE analysis on unseen phantoms: myocardium, scar, scar per segment, verdicts, speed.

Each study is an LGE phantom (``lge.phantom.generate_lge_phantom``) of a seed below
100 000: training draws seeds from 300 000 and validation from 400 000. Per study:

- myocardium: ``lge.models.segment_lge`` against the true labels (Dice of the LV
  myocardium over the stack);
- scar, by each method on two myocardium masks: the true one with the true AHA sectors
  (the scar method alone) and the predicted one with the sectors that
  ``aha.segment_geometry`` places on the predicted labels, as the lge-aha step does
  (end to end). The methods are those of the lge-scar step, run as it runs them: the
  U-Nets trained with pixel masks, one label per slice and one per study
  (``scar_probability`` above the threshold in the model's metadata), and the n-SD
  (n = 3, 5) and FWHM rules over ``remote_myocardium`` of the sectors; each mask then
  goes through ``clean_scar``;
- per AHA segment (``lge.scar.segment_scar``): scar % against the truth's
  ``segment_scar_percent`` (absolute error, percentage points), and the class
  (``scar_class``: none, <50 %, >=50 %) against the class of the truth's scar % and
  transmurality;
- per coronary territory: ``territory_verdicts`` of the found classes against those of
  the true classes, both with the true perfusion (a segment is abnormal when its true
  stress MBF is below ``ISCHAEMIC_MBF``): the LGE part of the verdict alone.

Scar Dice is taken over the stack, on the studies with true scar; of the scar-free
studies the table counts those where scar was found. Segment figures pool every
imaged segment (most have no scar, hence a separate median over the scarred ones); a
segment the predicted sectors miss has no scar % (counted as "missing", and as
outside 10 points) and a wrong class.

The first table runs the drawn settings (``--seeds``). The generalisation table repeats
the first ``--held-out`` seeds with each setting training never drew
(``lge.train.HELD_OUT``: inversion time 150 and 600 ms, 1.0 mm pixels, SNR 5), beside
the same seeds as drawn and the drawn studies split by image kind (PSIR, magnitude);
its cells are end to end. The aims, checked on the drawn studies: median scar Dice
with slice-level labels within 0.05 of pixel supervision; and, for the lge-scar step's
default method, per-segment scar % within 10 percentage points on >= 90 % of the
segments and verdicts right on >= 90 % of the territories.

``--weights DIR`` measures other weights (lge_*.safetensors in DIR);
``--truth-myocardium`` only the true myocardium (no myocardium model needed).

``--with-perfusion N`` runs the whole product on the first N seeds, with the shipped
models: the perfusion phantom's store through the motion, segment, roi, flow and aha
steps, its LGE phantom (``write_lge_phantom``, the same patient) through
``run_lge_steps`` with each scar method, and the viability report's territory verdicts
against the truth's.

Times: CPU, 2 torch threads, median per study of each step of the in-memory analysis
(models loaded once); the analysis of a study is segment + sectors + scar + segments.

    python benchmarks/bench_lge.py [--seeds 7000-7039] [--held-out 8] [--methods all]
        [--weights DIR] [--truth-myocardium] [--with-perfusion 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from _common import seed_range
from napari_perfroi import __version__, aha
from napari_perfroi.errors import InputError
from napari_perfroi.lge import scar as scar_rules
from napari_perfroi.lge.models import (load_lge_model, scar_probability, segment_lge,
                                       weights_path)
from napari_perfroi.lge.phantom import generate_lge_phantom, write_lge_phantom
from napari_perfroi.lge.pipeline import DEFAULT_SCAR_METHOD, run_lge_steps
from napari_perfroi.lge.store import LgeStudy
from napari_perfroi.lge.train import HELD_OUT
from napari_perfroi.phantom import write_phantom
from napari_perfroi.pipeline import run_step
from napari_perfroi.report import flow_report
from napari_perfroi.segment.metrics import dice
from napari_perfroi.study import MYOCARDIUM

# method: (label, lge-scar step method, n_sd)
METHODS = {
    "pixel": ("U-Net, pixel masks", "pixel", None),
    "slice": ("U-Net, slice labels", "slice", None),
    "stack": ("U-Net, study labels", "stack", None),
    "nsd3": ("3-SD", "nsd", 3.0),
    "nsd5": ("5-SD", "nsd", 5.0),
    "fwhm": ("FWHM", "fwhm", None),
}
SUPERVISIONS = ("pixel", "slice", "stack")
SOURCES = {"truth": "true myocardium", "predicted": "end to end"}
DRAWN = "as drawn"
AIM_DICE_GAP = 0.05  # slice-label scar Dice at most this far below pixel supervision
AIM_SEGMENT_POINTS = 10.0  # per-segment scar % error, percentage points
AIM_SEGMENT_SHARE = 0.9  # of the segments within AIM_SEGMENT_POINTS
AIM_VERDICTS = 0.9  # of the territories with the right verdict
PERFUSION_STEPS = ("motion", "segment", "roi", "flow", "aha")


@dataclass
class MethodResult:
    """One scar method on one myocardium mask of one study."""

    dice: float  # over the stack; NaN when neither truth nor method has scar
    found_scar: bool
    errors: list  # |found - true| scar % per truth-imaged segment; None: no such segment found
    scarred: list  # per the same segments: the true class is not "none"
    classes_right: list  # per the same segments
    verdicts_right: list  # per territory the truth assesses


@dataclass
class StudyResult:
    seed: int
    setting: str
    kind: str  # psir | magnitude
    pattern: str  # true scar pattern
    has_scar: bool
    myocardium_dice: float  # NaN without the myocardium model
    sectors_failed: bool = False  # no RV insertion points on the predicted labels
    methods: dict = field(default_factory=dict)  # (source, method) -> MethodResult
    seconds: dict = field(default_factory=dict)  # step -> s (end to end)


# ----------------------------------------------------------------------------- truth
def true_abnormal(truth: dict) -> dict[int, bool]:
    """Perfusion defect per imaged segment: true stress MBF below ISCHAEMIC_MBF."""
    return {s: mbf < scar_rules.ISCHAEMIC_MBF
            for s, mbf in enumerate(truth["perfusion_segment_mbf"], start=1) if mbf is not None}


def true_classes(truth: dict) -> dict[int, str]:
    """Scar class per imaged segment, from the true scar % and transmurality."""
    return {s: scar_rules.scar_class(percent, transmurality)
            for s, (percent, transmurality) in enumerate(
                zip(truth["segment_scar_percent"], truth["segment_transmurality"]), start=1)
            if percent is not None}


def true_verdicts(truth: dict) -> dict[str, str]:
    return scar_rules.territory_verdicts(true_abnormal(truth), true_classes(truth))


def verdicts_right(found: dict[str, str], truth: dict[str, str]) -> list[bool]:
    """Per territory the truth assesses: the found verdict is the true one."""
    return [found.get(t) == verdict for t, verdict in truth.items()
            if verdict != scar_rules.NOT_ASSESSED]


def shown_method(methods: list[str]) -> str:
    """The method of the aims and of the per-study lines: the lge-scar step's default."""
    return DEFAULT_SCAR_METHOD if DEFAULT_SCAR_METHOD in methods else methods[0]


# ----------------------------------------------------------------------------- one study
def find_scar(method: str, image, myocardium, sectors, spacing, models) -> np.ndarray:
    """The lge-scar step's mask of ``method``, in memory."""
    _, step_method, n_sd = METHODS[method]
    if method in SUPERVISIONS:
        model = models[method]
        threshold = float(model.metadata.get("threshold", 0.5))
        found = scar_probability(image, myocardium, spacing, model=model) > threshold
    else:
        remote = scar_rules.remote_myocardium(image, myocardium, sectors)
        found = (scar_rules.threshold_nsd(image, myocardium, n_sd, remote) if step_method == "nsd"
                 else scar_rules.threshold_fwhm(image, myocardium, remote))
    return scar_rules.clean_scar(found, myocardium, spacing)


def score(scar, true_scar, rows, truth: dict, abnormal, truth_verdicts) -> MethodResult:
    found = {row["segment"]: row for row in rows}
    classes = true_classes(truth)
    percents = truth["segment_scar_percent"]
    errors, scarred, right = [], [], []
    for s, true_class in classes.items():
        percent = found[s]["scar_percent"]
        errors.append(None if percent is None else abs(percent - percents[s - 1]))
        scarred.append(true_class != scar_rules.SCAR_NONE)
        right.append(found[s]["scar_class"] == true_class)
    verdicts = scar_rules.territory_verdicts(
        abnormal, {s: row["scar_class"] for s, row in found.items()})
    return MethodResult(dice=dice(scar, true_scar), found_scar=bool(scar.any()), errors=errors,
                        scarred=scarred, classes_right=right,
                        verdicts_right=verdicts_right(verdicts, truth_verdicts))


def evaluate(seed: int, setting: str, overrides: dict, methods: list[str], sources,
             models) -> StudyResult:
    phantom = generate_lge_phantom(seed, **overrides)
    attrs, truth = phantom.attrs, phantom.truth
    image = phantom.image.astype(np.float32) + attrs["rescale_intercept"]  # PSIR signed
    spacing = attrs["pixel_spacing_mm"]
    true_scar = phantom.scar > 0
    abnormal, truth_verdicts = true_abnormal(truth), true_verdicts(truth)
    result = StudyResult(seed=seed, setting=setting, kind=attrs["lge_kind"],
                         pattern=truth["scar_pattern"], has_scar=bool(true_scar.any()),
                         myocardium_dice=float("nan"))
    # source: (myocardium, AHA sectors, LV centres)
    masks = {"truth": (phantom.labels == MYOCARDIUM, phantom.aha, None)}
    if "predicted" in sources:
        started = time.perf_counter()
        labels = segment_lge(image, spacing, model=models["myocardium"]).labels
        result.seconds["segment"] = time.perf_counter() - started
        result.myocardium_dice = dice(labels == MYOCARDIUM, phantom.labels == MYOCARDIUM)
        started = time.perf_counter()
        try:
            geometry = aha.segment_geometry(labels, attrs["slice_levels"],
                                            attrs["image_orientation_patient"], spacing)
            sectors, centres = geometry.aha, geometry.centre
        except InputError:  # no RV insertion points: no sectors, every segment missing
            sectors, centres = np.zeros(labels.shape, dtype=np.uint8), None
            result.sectors_failed = True
        result.seconds["sectors"] = time.perf_counter() - started
        masks["predicted"] = (labels == MYOCARDIUM, sectors, centres)
    for source in sources:
        myocardium, sectors, centres = masks[source]
        for method in methods:
            started = time.perf_counter()
            scar = find_scar(method, image, myocardium, sectors, spacing, models)
            scar_s = time.perf_counter() - started
            started = time.perf_counter()
            rows = scar_rules.segment_scar(myocardium, scar, sectors, centres, spacing)
            result.methods[source, method] = score(scar, true_scar, rows, truth, abnormal,
                                                   truth_verdicts)
            if source == sources[-1]:
                result.seconds[f"scar {method}"] = scar_s
                result.seconds.setdefault("segments", time.perf_counter() - started)
    return result


# ----------------------------------------------------------------------------- statistics
def finite_or_none(value):
    return None if value is None or not np.isfinite(value) else float(value)


def summarise(results: list[StudyResult], source: str, method: str) -> dict:
    """Pooled figures of one method on one myocardium source."""
    chosen = [r.methods[source, method] for r in results]
    scores = np.array([m.dice for r, m in zip(results, chosen) if r.has_scar])
    errors = [e for m in chosen for e in m.errors]
    known = np.array([e for e in errors if e is not None])
    scarred = np.array([e for m in chosen for e, s in zip(m.errors, m.scarred)
                        if s and e is not None])
    classes = [x for m in chosen for x in m.classes_right]
    verdicts = [x for m in chosen for x in m.verdicts_right]
    scar_free = [m.found_scar for r, m in zip(results, chosen) if not r.has_scar]

    def quantile(values, q):
        return finite_or_none(np.percentile(values, q)) if values.size else None

    return {
        "studies_with_scar": int(scores.size),
        "dice_median": quantile(scores, 50), "dice_q1": quantile(scores, 25),
        "dice_q3": quantile(scores, 75),
        "scar_free_studies": len(scar_free), "scar_free_with_scar_found": int(sum(scar_free)),
        "segments": len(errors), "segments_missing": len(errors) - int(known.size),
        "segment_error_median": quantile(known, 50), "segment_error_p90": quantile(known, 90),
        "segments_within_10_points": (float(np.sum(known <= AIM_SEGMENT_POINTS)) / len(errors)
                                      if errors else None),
        "scarred_segment_error_median": quantile(scarred, 50),
        "class_accuracy": float(np.mean(classes)) if classes else None,
        "territories": len(verdicts),
        "verdict_accuracy": float(np.mean(verdicts)) if verdicts else None,
    }


def myocardium_dice(results: list[StudyResult]) -> dict:
    values = np.array([r.myocardium_dice for r in results])
    values = values[np.isfinite(values)]
    if not values.size:
        return {"median": None, "q1": None, "q3": None, "min": None}
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {"median": float(median), "q1": float(q1), "q3": float(q3),
            "min": float(values.min())}


def text(value, pattern: str = "{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


def percent(value) -> str:
    return text(None if value is None else 100 * value, "{:.0f} %")


# ----------------------------------------------------------------------------- tables
def print_main(results: list[StudyResult], methods, sources) -> dict:
    seeds = [r.seed for r in results]
    myo = myocardium_dice(results)
    print(f"\nLGE benchmark: {len(results)} unseen phantoms as drawn (seeds {seeds[0]}-"
          f"{seeds[-1]}: {sum(r.has_scar for r in results)} with scar, "
          f"{sum(r.kind == 'psir' for r in results)} PSIR)")
    if myo["median"] is not None:
        print(f"Myocardium Dice (segment_lge): median {text(myo['median'], '{:.3f}')} "
              f"[IQR {text(myo['q1'], '{:.3f}')}-{text(myo['q3'], '{:.3f}')}], "
              f"min {text(myo['min'], '{:.3f}')}; no AHA sectors on the predicted labels "
              f"(no RV insertion points): {sum(r.sectors_failed for r in results)} studies")
    print("\n| Scar method | Myocardium | Scar Dice median [IQR] (studies with scar) "
          "| Scar found in scar-free studies | Segment scar % abs. error: median / 90th pct / "
          "within 10 pts (missing) | Error on scarred segments, median | Class accuracy "
          "| Verdicts right (territories) |")
    print("|---|---|---|---|---|---|---|---|")
    table = {}
    for method in methods:
        for source in sources:
            s = table[f"{source}/{method}"] = summarise(results, source, method)
            print(f"| {METHODS[method][0]} | {SOURCES[source]} "
                  f"| {text(s['dice_median'])} [{text(s['dice_q1'])}-{text(s['dice_q3'])}] "
                  f"({s['studies_with_scar']}) "
                  f"| {s['scar_free_with_scar_found']}/{s['scar_free_studies']} "
                  f"| {text(s['segment_error_median'], '{:.1f}')} / "
                  f"{text(s['segment_error_p90'], '{:.1f}')} / "
                  f"{percent(s['segments_within_10_points'])} ({s['segments_missing']}) "
                  f"| {text(s['scarred_segment_error_median'], '{:.1f}')} "
                  f"| {percent(s['class_accuracy'])} "
                  f"| {percent(s['verdict_accuracy'])} ({s['territories']}) |")
    return {"myocardium_dice": myo, "methods": table}


def print_generalisation(groups: dict[str, list[StudyResult]], methods, source) -> dict:
    print(f"\nGeneralisation ({SOURCES[source]}): myocardium Dice median; per method scar "
          "Dice median / verdicts right")
    print("| Setting (studies) | Myocardium Dice | "
          + " | ".join(METHODS[m][0] for m in methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    table = {}
    for name, results in groups.items():
        if not results:
            continue
        row = table[name] = {"studies": len(results),
                             "myocardium_dice": myocardium_dice(results)["median"]}
        cells = []
        for method in methods:
            s = summarise(results, source, method)
            row[method] = {"dice_median": s["dice_median"],
                           "verdict_accuracy": s["verdict_accuracy"]}
            cells.append(f"{text(s['dice_median'])} / {percent(s['verdict_accuracy'])}")
        print(f"| {name} ({len(results)}) | {text(row['myocardium_dice'], '{:.3f}')} | "
              + " | ".join(cells) + " |")
    return table


def print_aims(table: dict, methods, sources) -> dict:
    def met(ok: bool | None) -> str:
        return "not measured" if ok is None else ("met" if ok else "MISSED")

    aims = {}
    print("\nAims (studies as drawn)")
    if {"pixel", "slice"} <= set(methods):
        for source in sources:
            pixel = table[f"{source}/pixel"]["dice_median"]
            weak = table[f"{source}/slice"]["dice_median"]
            ok = None if pixel is None or weak is None else weak >= pixel - AIM_DICE_GAP
            aims[f"slice_dice_gap/{source}"] = ok
            print(f"  scar Dice with slice-level labels within {AIM_DICE_GAP} of pixel "
                  f"supervision ({SOURCES[source]}): {text(weak)} vs {text(pixel)}: {met(ok)}")
    shown = shown_method(methods)
    for source in sources:
        s = table[f"{source}/{shown}"]
        within = s["segments_within_10_points"]
        ok = None if within is None else within >= AIM_SEGMENT_SHARE
        aims[f"segment_points/{source}/{shown}"] = ok
        print(f"  per-segment scar % within {AIM_SEGMENT_POINTS:.0f} percentage points "
              f"({METHODS[shown][0]}, {SOURCES[source]}; on >= "
              f"{100 * AIM_SEGMENT_SHARE:.0f} % of segments): {percent(within)}: {met(ok)}")
        accuracy = s["verdict_accuracy"]
        ok = None if accuracy is None else accuracy >= AIM_VERDICTS
        aims[f"verdicts/{source}/{shown}"] = ok
        print(f"  verdicts right on >= {100 * AIM_VERDICTS:.0f} % of territories "
              f"({METHODS[shown][0]}, {SOURCES[source]}): {percent(accuracy)}: {met(ok)}")
    return aims


def print_times(results: list[StudyResult], methods) -> dict:
    order = ["segment", "sectors", *(f"scar {m}" for m in methods), "segments"]
    steps = {name: float(np.median([r.seconds[name] for r in results]))
             for name in order if name in results[0].seconds}
    base = sum(steps.get(name, 0.0) for name in ("segment", "sectors", "segments"))
    per_study = {method: base + steps[f"scar {method}"] for method in methods}
    print(f"\nTime per study (CPU, {torch.get_num_threads()} torch threads, load average "
          + " ".join(f"{v:.1f}" for v in os.getloadavg())
          + f" on {os.cpu_count()} CPUs; median; models loaded once): "
          + ", ".join(f"{name} {value:.2f} s" for name, value in steps.items()))
    print("  analysis of one study (segment + sectors + scar + segments): "
          + ", ".join(f"{METHODS[m][0]} {per_study[m]:.2f} s" for m in methods))
    return {"steps": steps, "per_study": per_study, "load_average": os.getloadavg()}


# ----------------------------------------------------------------------------- whole product
def with_perfusion(seeds: list[int], methods: list[str], tmp: str) -> dict:
    """Territory verdicts of the viability report (perfusion and LGE pipelines on stores)
    against the truth's, per method; and the perfusion defect per segment alone."""
    shown = shown_method(methods)
    right = {method: [] for method in methods}
    perfusion_right, started = [], time.perf_counter()
    print(f"\nWhole product on {len(seeds)} studies (perfusion steps "
          f"{', '.join(PERFUSION_STEPS)}; LGE steps by run_lge_steps)")
    for seed in seeds:
        path = Path(tmp) / f"perfusion-{seed}.zarr"
        study = write_phantom(path, seed)
        for name in PERFUSION_STEPS:
            run_step(study, name)
        truth = write_lge_phantom(study).attrs["truth"]
        expected, abnormal = true_verdicts(truth), true_abnormal(truth)
        found_abnormal = scar_rules.perfusion_abnormal(flow_report(study))
        here = [found_abnormal[s] == value for s, value in abnormal.items()]
        perfusion_right.extend(here)
        counts, problems = [], set()
        for method in methods:
            _, step_method, n_sd = METHODS[method]
            try:
                run_lge_steps(study, ["lge-scar", "viability"], method=step_method, n_sd=n_sd)
            except InputError as error:  # e.g. no RV insertion points: no verdict at all
                verdicts = {}
                problems.add(str(error))
            else:
                verdicts = LgeStudy.open(study).attrs["viability"]["territories"]
            hits = verdicts_right(verdicts, expected)
            right[method].extend(hits)
            counts.append(f"{method} {sum(hits)}/{len(hits)}")
            if method == shown:
                found = ", ".join(f"{t} {verdicts.get(t, 'failed')}" for t in expected)
        print(f"  seed {seed}: perfusion defect right on {sum(here)}/{len(here)} segments; "
              "true " + ", ".join(f"{t} {v}" for t, v in expected.items())
              + f"; found ({shown}) {found}; verdicts right: " + ", ".join(counts)
              + "".join(f" ({problem})" for problem in sorted(problems))
              + f"; {time.perf_counter() - started:.0f} s", flush=True)
        shutil.rmtree(path, ignore_errors=True)
    print(f"  perfusion defect per segment (found MBF vs true MBF < "
          f"{scar_rules.ISCHAEMIC_MBF}): {percent(float(np.mean(perfusion_right)))} right "
          f"({len(perfusion_right)} segments)")
    summary = {"perfusion_segments_right": float(np.mean(perfusion_right))}
    for method in methods:
        summary[method] = float(np.mean(right[method]))
        print(f"  {METHODS[method][0]:22s} verdicts right {percent(summary[method])} "
              f"({len(right[method])} territories)")
    return summary


# ----------------------------------------------------------------------------- main
def load_models(methods, sources, folder: str | None) -> dict:
    kinds = [m for m in methods if m in SUPERVISIONS]
    if "predicted" in sources:
        kinds.insert(0, "myocardium")
    return {kind: load_lge_model(weights_path(kind) if folder is None
                                 else Path(folder) / weights_path(kind).name, device="cpu")
            for kind in kinds}


def progress_line(r: StudyResult, methods, source: str, elapsed: float) -> str:
    scores = " ".join(f"{m} {r.methods[source, m].dice:.2f}" for m in methods)
    shown = shown_method(methods)
    verdicts = r.methods[source, shown].verdicts_right
    return (f"  {r.setting} seed {r.seed}: {r.kind:9s} {r.pattern:14s} myocardium Dice "
            f"{r.myocardium_dice:.3f}; scar Dice ({SOURCES[source]}) {scores}; verdicts "
            f"({shown}) {sum(verdicts)}/{len(verdicts)}; {elapsed:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="7000-7039",
                        help="unseen phantom seeds, as drawn (default 7000-7039)")
    parser.add_argument("--held-out", type=int, default=8,
                        help="first seeds repeated with each held-out setting (default 8; "
                             "0 skips them)")
    parser.add_argument("--methods", default="all",
                        help=f"comma-separated scar methods of {', '.join(METHODS)} (default all)")
    parser.add_argument("--weights", default=None,
                        help="folder holding lge_*.safetensors to measure (default: shipped)")
    parser.add_argument("--truth-myocardium", action="store_true",
                        help="only the true myocardium (no myocardium model needed)")
    parser.add_argument("--with-perfusion", type=int, default=0, metavar="N",
                        help="whole product on the first N seeds, shipped models (default 0)")
    parser.add_argument("--json", default=None, help="also write the summary to this JSON file")
    args = parser.parse_args()
    methods = list(METHODS) if args.methods == "all" else args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method {', '.join(unknown)} (expected {', '.join(METHODS)})")
    if args.with_perfusion and (args.weights or args.truth_myocardium):
        parser.error("--with-perfusion runs the shipped models on the predicted myocardium")
    sources = ("truth",) if args.truth_myocardium else ("truth", "predicted")
    seeds = seed_range(args.seeds)
    if max(seeds) >= 100_000:
        parser.error("benchmark seeds must be below 100000 (training and validation use more)")

    torch.set_num_threads(2)
    models = load_models(methods, sources, args.weights)
    print(f"napari_perfroi {__version__}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; models "
          + ", ".join(f"{m.weights_path.name} {m.sha256[:12]}"
                      + (f" threshold {m.metadata['threshold']}" if "threshold" in m.metadata
                         else "")
                      for m in models.values()))
    started = time.perf_counter()
    groups = {DRAWN: []}
    settings = {DRAWN: {}, **{name: HELD_OUT[name] for name in HELD_OUT if args.held_out}}
    for name, overrides in settings.items():
        for seed in seeds if name == DRAWN else seeds[: args.held_out]:
            result = evaluate(seed, name, overrides, methods, sources, models)
            groups.setdefault(name, []).append(result)
            print(progress_line(result, methods, sources[-1], time.perf_counter() - started),
                  flush=True)

    drawn = groups[DRAWN]
    summary = {"seeds": seeds, "held_out_seeds": seeds[: args.held_out], "methods": methods,
               "models": {kind: {"file": m.weights_path.name, "sha256": m.sha256,
                                 "threshold": m.metadata.get("threshold")}
                          for kind, m in models.items()}}
    summary["drawn"] = print_main(drawn, methods, sources)
    paired = {
        f"{DRAWN}, all": drawn,
        f"{DRAWN}, PSIR": [r for r in drawn if r.kind == "psir"],
        f"{DRAWN}, magnitude": [r for r in drawn if r.kind == "magnitude"],
        f"{DRAWN}, first {args.held_out} seeds": drawn[: args.held_out] if args.held_out else [],
        **{name: groups[name] for name in HELD_OUT if name in groups},
    }
    summary["generalisation"] = print_generalisation(paired, methods, sources[-1])
    summary["aims"] = print_aims(summary["drawn"]["methods"], methods, sources)
    summary["seconds"] = print_times(drawn, methods)
    if args.with_perfusion:
        with tempfile.TemporaryDirectory() as tmp:
            summary["with_perfusion"] = with_perfusion(seeds[: args.with_perfusion], methods, tmp)
    print(f"\nTotal {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
