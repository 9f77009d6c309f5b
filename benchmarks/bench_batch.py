"""Batch throughput on dask.distributed: the same phantom studies with 1 and with 2 workers.

Usage: python benchmarks/bench_batch.py [--studies 40]

Study stores (seeds 3000-3039 by default) are generated once into
benchmarks/_work/batch/inputs/; each worker count processes all of them
(copy, motion, segment, roi, flow, aha, report) into a fresh output folder
through the same runner as ``perfroi batch``. Throughput counts the run from
submission to the summary (the cluster's start-up is shown apart). Peak memory
is each worker process's peak resident set.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from napari_perfroi.batch import count_line, open_client, plan_jobs, run_batch
from napari_perfroi.phantom import write_phantom
from napari_perfroi.study import Study, StoreError

WORK = Path(__file__).resolve().parent / "_work" / "batch"
FIRST_SEED = 3000
COHORT = 798
MACHINES = (1, 2, 4, 8, 16)


def make_store(seed: int) -> Path:
    """The phantom store of ``seed`` (reused when a valid one is already there)."""
    path = WORK / "inputs" / f"seed-{seed}.zarr"
    try:
        Study.open(path)
        return path
    except StoreError:
        shutil.rmtree(path, ignore_errors=True)
    write_phantom(path, seed)
    return path


def peak_rss_mib() -> float:
    """Peak resident set of the calling process (run on each worker)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(stores: list[Path], workers: int) -> dict:
    """Process ``stores`` with ``workers`` local workers into a fresh folder; the measures."""
    out = WORK / f"out-{workers}w"
    shutil.rmtree(out, ignore_errors=True)
    jobs = plan_jobs(stores, out)
    started = time.perf_counter()
    with open_client(workers=workers) as client:
        ready = time.perf_counter()
        records = run_batch(jobs, out, client)
        seconds = time.perf_counter() - ready
        peaks = sorted(client.run(peak_rss_mib).values())
    print(count_line(records))
    return {
        "workers": workers,
        "startup_s": ready - started,
        "seconds": seconds,
        "per_minute": 60 * len(stores) / seconds,
        "task_median_s": statistics.median(r.seconds for r in records),
        "peak_mib": peaks,
        "done": sum(r.status == "done" for r in records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=40, help="number of studies (default 40)")
    args = parser.parse_args()

    seeds = range(FIRST_SEED, FIRST_SEED + args.studies)
    started = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        stores = list(pool.map(make_store, seeds))
    shape = Study.open(stores[0]).shape
    print(f"{len(stores)} phantom stores (seeds {seeds[0]}-{seeds[-1]}, first {shape}) ready "
          f"in {time.perf_counter() - started:.0f} s")

    results = [run(stores, workers) for workers in (1, 2)]
    print()
    print("| workers | cluster start | run | studies/min | task median | peak RSS per worker "
          "| done |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        peaks = " / ".join(f"{p:.0f}" for p in r["peak_mib"])
        print(f"| {r['workers']} | {r['startup_s']:.1f} s | {r['seconds']:.1f} s | "
              f"{r['per_minute']:.1f} | {r['task_median_s']:.2f} s | {peaks} MiB | "
              f"{r['done']}/{len(stores)} |")
    one, two = results
    speed_up = two["per_minute"] / one["per_minute"]
    print(f"\nspeed-up, 2 workers vs 1: {speed_up:.2f}x (target >= 1.8x)")
    rate = two["per_minute"]
    print(f"\n{COHORT}-study cohort at {rate:.1f} studies/min per 2-core machine "
          f"(linear in machines; stores on shared storage):")
    for machines in MACHINES:
        minutes = COHORT / (rate * machines)
        print(f"  {machines:>2} machine(s): {minutes:6.1f} min ({minutes / 60:.2f} h)")


if __name__ == "__main__":
    main()
