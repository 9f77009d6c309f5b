"""Accuracy and speed of the flow and aha steps on unseen phantoms with known flow.

Per seed the phantom store is written once and copied; on the two copies:

- truth labels: the phantom's true labels and motion are written as ``labels``
  and ``motion`` (the store's reference frames are the truth's), then the
  flow and aha steps run: the error of the flow quantification alone;
- end to end: the motion, segment, roi, flow and aha steps on the fresh copy.

Reported, pooled over all imaged segments of all studies (relative error =
estimate / truth - 1; "fit" is ``report['segment_mbf']``, the Fermi fit of each
segment's median curve, "map" the median of the pixel-wise map in the segment,
``report['segment_stats'][i]['median']``):

1. per-segment MBF error with truth labels (target: median |error| <= 10 %);
2. the same end to end (target <= 15 %);
3. defect territory: ``report['lowest_territory']`` against the phantom's defect;
4. RV insertion angle error (anterior and inferior point of every slice, as
   reported, circular difference; target median <= 5 deg);
5. speed of the pixel-wise map: ``run_step(study, "flow")`` per study (median,
   after one warm-up run) and its myocardium pixels; and, for one study, the
   batched ``fermi_flow`` against ``fermi_flow_reference`` (scipy, one curve at
   a time) on exactly the map's tissue curves (``flow.tissue_curves`` of the
   truth-label myocardium, slice by slice);
6. the error split by whether the study has proton-density frames (without
   them the blood T1 is assumed, 1.65 s, not measured) and by the phantom's
   SNR (the two are confounded in small samples), and per study.
   Segments listed at the end: |error| > 25 % or no estimate.

A markdown summary table is printed at the end. The batched fit is BLAS-bound:
the thread settings are printed; on a busy machine compare with
``OPENBLAS_NUM_THREADS=1``.

A second markdown table (``--acquisition-seeds``, default 1000-1005; "none" skips it)
compares acquisitions, with truth labels and motion: dual-sequence with the ideal
readout, and single-bolus and dual-bolus (dose ratio = the truth's) with the scanner
readout (saturated blood). Per acquisition: plasma AIF peak / truth - 1 of the AIF
used (``report['aif_peak_mmol']``) and of the measured one (``report['aif_measured']``,
before desaturation), segment MBF / truth of the studies with absolute MBF, the defect
territory found (by MBF, or by relative upslope when absolute MBF is withheld), and the
saturation check: detected / corrected / refused (absolute MBF withheld). Two more rows:
the Fermi and 2CXM fits on the same ``tissue_model="2cxm"`` phantoms (dual-sequence,
ideal readout, so that only the tissue model differs). ``--acquisitions-only`` prints
only this table.

    python benchmarks/bench_flow.py [--seeds 1000-1011] [--quick] [--speed-seed 1000]
                                    [--acquisition-seeds 1000-1005] [--acquisitions-only]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from _common import seed_range
from napari_perfroi import __version__
from napari_perfroi import flow as F
from napari_perfroi.aha import TERRITORIES
from napari_perfroi.perfusion import fermi_flow, fermi_flow_reference
from napari_perfroi.phantom import write_phantom
from napari_perfroi.pipeline import run_step
from napari_perfroi.study import MYOCARDIUM, Study

TRUTH_TARGET = 0.10
E2E_TARGET = 0.15
RV_TARGET_DEG = 5.0
SETTINGS = {"truth": "truth labels + motion", "e2e": "end to end"}
LOW_SNR = 6.0  # phantom SNR split of the per-study breakdown
LARGE_ERROR = 0.25  # segments listed as suspicious above this |relative error|
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
SCANNER = {"readout": "scanner"}
# row label: (phantom overrides, flow step options); dose_ratio None = the truth's
ACQUISITION_ROWS = {
    "dual-sequence, ideal readout": ({}, {}),
    "single-bolus, scanner readout": (SCANNER | {"acquisition": "single-bolus"}, {}),
    "dual-bolus, scanner readout": (SCANNER | {"acquisition": "dual-bolus"},
                                    {"dose_ratio": None}),
    "2CXM tissue, dual-sequence, ideal: Fermi fit": ({"tissue_model": "2cxm"},
                                                     {"flow_model": "fermi"}),
    "2CXM tissue, dual-sequence, ideal: 2CXM fit": ({"tissue_model": "2cxm"},
                                                    {"flow_model": "2cxm"}),
}


@dataclass
class Result:
    """One study in one setting."""

    seed: int
    setting: str
    truth_mbf: list  # [16], None = not imaged
    fit_mbf: list  # [16] report['segment_mbf']
    map_mbf: list  # [16] report['segment_stats'][i]['median']
    fit_error: list  # [16] relative residual of the segment fit
    defect: str
    territory: str | None
    rv_errors: list  # |circular error| deg, (anterior, inferior) of every slice
    flow_s: float
    pixels: int
    n_pd: int
    snr: float  # the phantom's pre-contrast myocardium SNR
    aif_source: str
    t1_blood: tuple  # (used by the flow step, true)
    qa: list = field(default_factory=list)
    step_s: dict = field(default_factory=dict)

    def errors(self, which: str = "fit") -> np.ndarray:
        """Relative errors of the imaged segments (NaN where the estimate is missing)."""
        values = self.fit_mbf if which == "fit" else self.map_mbf
        return np.array([np.nan if v is None else v / t - 1.0
                         for v, t in zip(values, self.truth_mbf) if t is not None])


def circular_deg(a: float, b: float) -> float:
    return abs(float(np.mod(a - b + 180.0, 360.0) - 180.0))


def thread_settings() -> str:
    env = ", ".join(f"{name}={os.environ.get(name, 'unset')}" for name in THREAD_VARIABLES)
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{blas.get('name')} {blas.get('version', '')}".strip()
    except Exception:  # older numpy: no dict mode
        blas = "?"
    return (f"napari_perfroi {__version__}; {env}; numpy {np.__version__} BLAS {blas}; "
            f"torch {torch.get_num_threads()} threads; {os.cpu_count()} CPUs, load average "
            + " ".join(f"{v:.1f}" for v in os.getloadavg()))


def collect(study: Study, seed: int, setting: str, flow_s: float, step_s: dict) -> Result:
    attrs = study.attrs
    truth, report = attrs["truth"], attrs["report"]
    rv_errors = [circular_deg(found, true)
                 for found_pair, true_pair in zip(report["rv_insertion_deg"],
                                                  truth["rv_insertion_deg"])
                 for found, true in zip(found_pair, true_pair)]
    curves = report["segment_curves"]
    used_t1 = attrs["steps"]["flow"]["parameters"]["t1_blood_s"]
    return Result(
        seed=seed, setting=setting, truth_mbf=truth["segment_mbf"],
        fit_mbf=report["segment_mbf"],
        map_mbf=[s["median"] for s in report["segment_stats"]],
        fit_error=[None if c is None else c["fit_error"] for c in curves],
        defect=truth["defect"], territory=report["lowest_territory"], rv_errors=rv_errors,
        flow_s=flow_s, pixels=int(np.isfinite(study.read("mbf")).sum()),
        n_pd=int(truth["parameters"]["n_pd_frames"]), snr=float(truth["parameters"]["snr"]),
        aif_source=report["aif_source"],
        t1_blood=(used_t1, truth["parameters"]["t1_s"]["blood"]), qa=report["qa"],
        step_s=step_s,
    )


def timed(study: Study, name: str) -> float:
    started = time.perf_counter()
    run_step(study, name)
    return time.perf_counter() - started


def run_truth(path: Path, seed: int, warm_up: bool) -> tuple[Result, Study]:
    study = Study.open(path, writable=True)
    study.write("labels", study.read("truth/labels"))
    study.write("motion", study.read("truth/motion"))
    if warm_up:
        run_step(study, "flow")
    flow_s = timed(study, "flow")
    aha_s = timed(study, "aha")
    return collect(study, seed, "truth", flow_s, {"flow": flow_s, "aha": aha_s}), study


def run_e2e(path: Path, seed: int) -> Result:
    study = Study.open(path, writable=True)
    step_s = {name: timed(study, name) for name in ("motion", "segment", "roi", "flow", "aha")}
    return collect(study, seed, "e2e", step_s["flow"], step_s)


def batched_vs_reference(study: Study) -> dict:
    """Batched and one-by-one Fermi fits of the flow step's own tissue curves (truth labels)."""
    settings = F.recorded_settings(study)
    labels = F.reference_labels(study)
    motion = study.read("motion").astype(float)
    images = F.read_images(study)
    aif = F.recorded_aif(study, settings)
    stored = study.read("mbf")
    batched_s = reference_s = 0.0
    fast, slow, map_values = [], [], []
    for k in range(labels.shape[0]):
        rows, cols = np.nonzero(labels[k] == MYOCARDIUM)
        if not rows.size:
            continue
        curves, times, aif_here = F.tissue_curves(F.slice_series(study, images, k), rows, cols,
                                                  motion[k], aif, settings)
        kwargs = {"hematocrit": settings.hematocrit, "flow": settings.flow}
        started = time.perf_counter()
        fast.append(fermi_flow(curves, aif_here, times, **kwargs).mbf)
        batched_s += time.perf_counter() - started
        started = time.perf_counter()
        slow.append(fermi_flow_reference(curves, aif_here, times, **kwargs).mbf)
        reference_s += time.perf_counter() - started
        map_values.append(stored[k, rows, cols])
    fast, slow, map_values = (np.concatenate(x) for x in (fast, slow, map_values))
    both = np.isfinite(fast) & np.isfinite(slow)
    difference = np.abs(fast[both] / slow[both] - 1.0)
    same_as_map = np.isfinite(map_values) & np.isfinite(fast)
    return {
        "curves": fast.size, "batched_s": batched_s, "reference_s": reference_s,
        "median_diff": float(np.median(difference)),
        "p99_diff": float(np.percentile(difference, 99)),
        "max_diff": float(difference.max()), "nan_batched": int((~np.isfinite(fast)).sum()),
        "nan_reference": int((~np.isfinite(slow)).sum()),
        "map_diff": float(np.max(np.abs(map_values[same_as_map] - fast[same_as_map]))),
    }


@dataclass
class AcquisitionResult:
    """One study of the acquisition table (truth labels and motion)."""

    aif_error: float  # plasma AIF peak / truth - 1, the AIF used
    measured_error: float  # the same, measured (before desaturation)
    ratios: list  # segment MBF / truth of the imaged segments; empty when withheld
    defect: str
    territory: str | None
    saturation: dict | None


def acquisition_result(study: Study, **options) -> AcquisitionResult:
    truth = study.attrs["truth"]
    if "dose_ratio" in options:
        options["dose_ratio"] = truth["prebolus_dose_ratio"]
    run_step(study, "flow", **options)
    run_step(study, "aha")
    report = study.attrs["report"]
    peak = float(np.nanmax(truth["aif"]))
    return AcquisitionResult(
        aif_error=report["aif_peak_mmol"] / peak - 1.0,
        measured_error=float(np.nanmax(report["aif_measured"])) / peak - 1.0,
        ratios=[m / t for m, t in zip(report["segment_mbf"], truth["segment_mbf"])
                if m is not None and t is not None],
        defect=truth["defect"], territory=report["lowest_territory"],
        saturation=report["aif_saturation"])


def run_acquisitions(seeds: list[int], tmp: str) -> dict[str, list[AcquisitionResult]]:
    """Every row of :data:`ACQUISITION_ROWS` on every seed; one phantom per overrides."""
    results = {row: [] for row in ACQUISITION_ROWS}
    started = time.perf_counter()
    for seed in seeds:
        studies = {}
        for row, (overrides, options) in ACQUISITION_ROWS.items():
            key = tuple(sorted(overrides.items()))
            if key not in studies:
                path = Path(tmp) / f"acquisition-{seed}-{len(studies)}.zarr"
                study = studies[key] = write_phantom(path, seed, **overrides)
                study.write("labels", study.read("truth/labels"))
                study.write("motion", study.read("truth/motion"))
            results[row].append(acquisition_result(studies[key], **options))
        for study in studies.values():
            shutil.rmtree(study.path, ignore_errors=True)
        print(f"  acquisitions, seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)
    return results


def print_acquisitions(results: dict[str, list[AcquisitionResult]], seeds: list[int]) -> None:
    def spread(values) -> str:
        values = 100 * np.asarray(values)
        return f"{np.median(values):+.0f} % ({values.min():+.0f} to {values.max():+.0f})"

    print(f"\n| Acquisition ({len(seeds)} phantoms, seeds {seeds[0]}-{seeds[-1]}, truth labels) "
          "| AIF peak err, used: median (range) | AIF peak err, measured | Segment MBF / truth: "
          "median [IQR] (studies with absolute MBF) | Defect territory found "
          "| Saturation detected / corrected / refused |")
    print("|---|---|---|---|---|---|")
    for row, studies in results.items():
        ratios = np.array([x for r in studies for x in r.ratios])
        absolute = sum(bool(r.ratios) for r in studies)
        mbf = (f"{np.median(ratios):.2f} [{np.percentile(ratios, 25):.2f}-"
               f"{np.percentile(ratios, 75):.2f}] ({absolute}/{len(studies)})"
               if ratios.size else f"- (0/{len(studies)})")
        with_defect = [r for r in studies if r.defect != "none"]
        found = sum(r.territory == r.defect for r in with_defect)
        checks = [r.saturation for r in studies if r.saturation is not None]
        saturation = (f"{sum(c['saturated'] for c in checks)} / "
                      f"{sum(c['corrected'] and c['trusted'] for c in checks)} / "
                      f"{sum(not r.ratios for r in studies)} of {len(checks)}"
                      if checks else "not checked")
        print(f"| {row} | {spread([r.aif_error for r in studies])} "
              f"| {spread([r.measured_error for r in studies])} | {mbf} "
              f"| {found}/{len(with_defect)} | {saturation} |")


# ----------------------------------------------------------------------------- reporting
def pooled(results: list[Result], which: str = "fit") -> np.ndarray:
    return np.concatenate([r.errors(which) for r in results]) if results else np.empty(0)


def stats(errors: np.ndarray) -> dict:
    finite = errors[np.isfinite(errors)]
    if not finite.size:
        return {"n": 0, "missing": int(errors.size), "abs": np.nan, "signed": np.nan,
                "p90": np.nan, "max": np.nan}
    return {"n": int(finite.size), "missing": int(errors.size - finite.size),
            "abs": float(np.median(np.abs(finite))), "signed": float(np.median(finite)),
            "p90": float(np.percentile(np.abs(finite), 90)), "max": float(np.abs(finite).max())}


def error_line(label: str, s: dict) -> str:
    missing = f", {s['missing']} missing" if s["missing"] else ""
    return (f"  {label:22s} median |err| {100 * s['abs']:5.1f} %, median signed "
            f"{100 * s['signed']:+5.1f} %, 90th pct |err| {100 * s['p90']:5.1f} %, max "
            f"{100 * s['max']:5.1f} % ({s['n']} segments{missing})")


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "MISSED"


def print_accuracy(results: list[Result], setting: str, target: float) -> dict:
    fit, mapped = stats(pooled(results, "fit")), stats(pooled(results, "map"))
    print(f"\n{'12'[setting == 'e2e']}. Per-segment MBF error, {SETTINGS[setting]} "
          f"({len(results)} studies)")
    print(error_line("segment fit", fit))
    print(error_line("pixel-map median", mapped))
    print(f"  target median |err| <= {100 * target:.0f} %: segment fit "
          f"{verdict(fit['abs'], target)}, pixel map {verdict(mapped['abs'], target)}")
    return {"fit": fit, "map": mapped}


def print_per_study(truth: list[Result], e2e: list[Result]) -> None:
    print("\n6. Per study: median |err| of the segment fit (pixel-map median), PD frames, "
          "phantom SNR, AIF, blood T1 used / true")
    print(f"  {'seed':>5s} {'defect':>6s} {'PD':>3s} {'SNR':>5s} {'AIF':>11s} "
          f"{'T1 used/true s':>15s} {'truth labels':>15s} {'end to end':>15s} "
          f"{'worst e2e seg':>14s}")
    for t, e in zip(truth, e2e):
        te, ee = t.errors("fit"), e.errors("fit")
        tm, em = t.errors("map"), e.errors("map")
        worst = int(np.nanargmax(np.abs(ee))) if np.isfinite(ee).any() else None
        imaged = [i + 1 for i, v in enumerate(e.truth_mbf) if v is not None]
        worst_text = "-" if worst is None else f"{imaged[worst]:d}: {100 * ee[worst]:+.0f} %"
        print(f"  {t.seed:5d} {t.defect:>6s} {t.n_pd:3d} {t.snr:5.1f} {t.aif_source:>11s} "
              f"{t.t1_blood[0]:7.2f}/{t.t1_blood[1]:.2f} "
              f"{100 * np.nanmedian(np.abs(te)):6.1f} ({100 * np.nanmedian(np.abs(tm)):4.1f}) % "
              f"{100 * np.nanmedian(np.abs(ee)):6.1f} ({100 * np.nanmedian(np.abs(em)):4.1f}) % "
              f"{worst_text:>14s}")
    print("  By proton-density frames and by phantom SNR (segment fit, median |err| / "
          "median signed):")
    groups = {
        "with PD frames": lambda r: r.n_pd > 0,
        "without (T1 assumed)": lambda r: r.n_pd == 0,
        f"SNR >= {LOW_SNR:g}": lambda r: r.snr >= LOW_SNR,
        f"SNR < {LOW_SNR:g}": lambda r: r.snr < LOW_SNR,
    }
    for name, member in groups.items():
        group = [i for i, r in enumerate(truth) if member(r)]
        if not group:
            print(f"    {name:22s} no studies")
            continue
        parts = []
        for setting, results in (("truth", truth), ("e2e", e2e)):
            s = stats(pooled([results[i] for i in group]))
            parts.append(f"{SETTINGS[setting]} {100 * s['abs']:4.1f} / {100 * s['signed']:+5.1f} %")
        print(f"    {name:22s} {len(group):2d} studies: " + ", ".join(parts))


def fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_large_errors(results: list[Result]) -> None:
    rows = []
    for r in results:
        imaged = [i for i, v in enumerate(r.truth_mbf) if v is not None]
        for i, err in zip(imaged, r.errors("fit")):
            if not np.isfinite(err) or abs(err) > LARGE_ERROR:
                rows.append((r, i, err))
    print(f"\nSegments with |err| > {100 * LARGE_ERROR:.0f} % or no estimate: {len(rows)}")
    for r, i, err in sorted(rows, key=lambda x: -abs(np.nan_to_num(x[2], nan=9.0)))[:15]:
        fit_error = r.fit_error[i]
        print(f"  seed {r.seed} {SETTINGS[r.setting]:22s} segment {i + 1:2d}: truth "
              f"{r.truth_mbf[i]:.2f}, fit {fmt(r.fit_mbf[i])}, map median "
              f"{fmt(r.map_mbf[i])}, error "
              f"{100 * err:+.0f} %, fit residual "
              f"{'-' if fit_error is None else f'{fit_error:.3f}'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1000-1011",
                        help="unseen phantom seeds (default 1000-1011)")
    parser.add_argument("--quick", action="store_true", help="only the first 3 seeds")
    parser.add_argument("--speed-seed", type=int, default=None,
                        help="study of the batched vs scipy comparison (default: the first seed)")
    parser.add_argument("--acquisition-seeds", default="1000-1005",
                        help="phantom seeds of the acquisition table (default 1000-1005; "
                             "'none' skips it)")
    parser.add_argument("--acquisitions-only", action="store_true",
                        help="only the acquisition table")
    args = parser.parse_args()
    acquisition_seeds = [] if args.acquisition_seeds == "none" else seed_range(
        args.acquisition_seeds)
    if args.acquisitions_only:
        if not acquisition_seeds:
            parser.error("--acquisitions-only needs --acquisition-seeds")
        torch.set_num_threads(2)
        print(f"Threads: {thread_settings()}")
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            results = run_acquisitions(acquisition_seeds, tmp)
        print(f"Total {time.perf_counter() - started:.0f} s")
        print_acquisitions(results, acquisition_seeds)
        return
    seeds = seed_range(args.seeds)[: 3 if args.quick else None]
    speed_seed = seeds[0] if args.speed_seed is None else args.speed_seed
    if speed_seed not in seeds:
        parser.error(f"--speed-seed {speed_seed} is not among the seeds")
    torch.set_num_threads(2)
    print(f"Threads: {thread_settings()}")
    started = time.perf_counter()
    truth, e2e, speed = [], [], None
    with tempfile.TemporaryDirectory() as tmp:
        for n, seed in enumerate(seeds):
            path = Path(tmp) / f"phantom-{seed}.zarr"
            write_phantom(path, seed)
            shutil.copytree(path, path.with_name(f"e2e-{seed}.zarr"))
            t, study = run_truth(path, seed, warm_up=n == 0)
            if seed == speed_seed:
                speed = batched_vs_reference(study)
            e = run_e2e(path.with_name(f"e2e-{seed}.zarr"), seed)
            truth.append(t)
            e2e.append(e)
            print(f"  seed {seed}: defect {t.defect:4s} PD {t.n_pd} AIF {t.aif_source:10s} "
                  f"median |err| truth labels {100 * np.nanmedian(np.abs(t.errors())):4.1f} %, "
                  f"end to end {100 * np.nanmedian(np.abs(e.errors())):4.1f} %; lowest territory "
                  f"{t.territory}/{e.territory}; flow {t.flow_s:.1f}/{e.flow_s:.1f} s; steps "
                  + " ".join(f"{k} {v:.1f}" for k, v in e.step_s.items())
                  + f"; {time.perf_counter() - started:.0f} s", flush=True)
            shutil.rmtree(path, ignore_errors=True)
            shutil.rmtree(path.with_name(f"e2e-{seed}.zarr"), ignore_errors=True)

    print(f"\nFlow accuracy on unseen phantoms, seeds {seeds[0]}-{seeds[-1]} "
          f"({len(seeds)} studies)")
    accuracy = {"truth": print_accuracy(truth, "truth", TRUTH_TARGET),
                "e2e": print_accuracy(e2e, "e2e", E2E_TARGET)}

    print("\n3. Defect territory (report lowest_territory == truth defect)")
    defects = [i for i, r in enumerate(truth) if r.defect != "none"]
    found = {}
    for setting, results in (("truth", truth), ("e2e", e2e)):
        hits = [results[i].territory == results[i].defect for i in defects]
        found[setting] = f"{sum(hits)}/{len(defects)}"
        misses = [f"seed {results[i].seed}: {results[i].defect} found {results[i].territory}"
                  for i, hit in zip(defects, hits) if not hit]
        print(f"  {SETTINGS[setting]:22s} {found[setting]} found"
              + "".join(f"; {m}" for m in misses))
    print(f"  studies without a defect: {len(truth) - len(defects)} (territories: "
          + ", ".join(sorted(TERRITORIES)) + ")")

    print("\n4. RV insertion angle error (anterior and inferior point per slice)")
    rv = {}
    for setting, results in (("truth", truth), ("e2e", e2e)):
        errors = np.array([x for r in results for x in r.rv_errors])
        rv[setting] = (float(np.median(errors)), float(errors.max()))
        print(f"  {SETTINGS[setting]:22s} median {rv[setting][0]:5.2f} deg, 95th pct "
              f"{np.percentile(errors, 95):5.2f}, max {rv[setting][1]:6.2f} deg "
              f"({errors.size} points); target median <= {RV_TARGET_DEG:.0f}: "
              f"{verdict(rv[setting][0], RV_TARGET_DEG)}")

    print("\n5. Speed of the pixel-wise map (run_step 'flow', store read and write included)")
    flow_speed = {}
    for setting, results in (("truth", truth), ("e2e", e2e)):
        seconds = np.array([r.flow_s for r in results])
        pixels = np.array([r.pixels for r in results])
        flow_speed[setting] = (float(np.median(seconds)), int(np.median(pixels)))
        print(f"  {SETTINGS[setting]:22s} median {flow_speed[setting][0]:.2f} s (range "
              f"{seconds.min():.2f}-{seconds.max():.2f}) for median {flow_speed[setting][1]} "
              f"myocardium pixels ({1e3 * np.median(seconds / pixels):.2f} ms/pixel)")
    ratio = speed["reference_s"] / speed["batched_s"]
    print(f"  seed {speed_seed}, {speed['curves']} tissue curves (truth labels), fits only: "
          f"batched fermi_flow {speed['batched_s']:.2f} s, scipy fermi_flow_reference one by one "
          f"{speed['reference_s']:.2f} s: {ratio:.1f}x faster")
    print(f"  batched vs scipy MBF: median relative difference {speed['median_diff']:.2e}, "
          f"99th pct {speed['p99_diff']:.2e}, max {speed['max_diff']:.2e}; NaN "
          f"{speed['nan_batched']}/{speed['nan_reference']}; batched vs stored map max "
          f"|diff| {speed['map_diff']:.2e} mL/min/g")

    print_per_study(truth, e2e)
    print_large_errors(truth + e2e)

    print(f"\nThreads: {thread_settings()}")
    print(f"Total {time.perf_counter() - started:.0f} s")

    a, b = accuracy["truth"], accuracy["e2e"]

    def pct(s):
        return f"{100 * s['abs']:.1f} % / {100 * s['signed']:+.1f} % / {100 * s['p90']:.1f} %"

    print(f"\n| Flow benchmark, {len(seeds)} unseen phantoms (seeds {seeds[0]}-{seeds[-1]}) "
          "| truth labels + motion | end to end |")
    print("|---|---|---|")
    print(f"| Segment MBF, fit: median \\|err\\| / signed / 90th pct | {pct(a['fit'])} "
          f"| {pct(b['fit'])} |")
    print(f"| Segment MBF, pixel-map median: median \\|err\\| / signed / 90th pct "
          f"| {pct(a['map'])} | {pct(b['map'])} |")
    print(f"| Target median \\|err\\| (fit) | <= {100 * TRUTH_TARGET:.0f} %: "
          f"{verdict(a['fit']['abs'], TRUTH_TARGET)} | <= {100 * E2E_TARGET:.0f} %: "
          f"{verdict(b['fit']['abs'], E2E_TARGET)} |")
    print(f"| Defect territory found | {found['truth']} | {found['e2e']} |")
    print(f"| RV insertion error median / max (target median <= {RV_TARGET_DEG:.0f} deg) "
          f"| {rv['truth'][0]:.1f} / {rv['truth'][1]:.1f} deg | {rv['e2e'][0]:.1f} / "
          f"{rv['e2e'][1]:.1f} deg |")
    print(f"| Flow step, median (myocardium pixels) | {flow_speed['truth'][0]:.2f} s "
          f"({flow_speed['truth'][1]}) | {flow_speed['e2e'][0]:.2f} s ({flow_speed['e2e'][1]}) |")
    print(f"| Batched Fermi fit vs scipy one by one ({speed['curves']} curves) "
          f"| {speed['batched_s']:.2f} s vs {speed['reference_s']:.1f} s ({ratio:.0f}x), "
          f"median rel. diff {speed['median_diff']:.0e} | |")

    if acquisition_seeds:
        with tempfile.TemporaryDirectory() as tmp:
            results = run_acquisitions(acquisition_seeds, tmp)
        print_acquisitions(results, acquisition_seeds)


if __name__ == "__main__":
    main()
