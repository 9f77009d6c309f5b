"""Robustness run: `perfroi batch` over 20 studies of which some inputs are broken.

Good inputs: 13 phantom stores, 2 DICOM folders, 1 zip, 1 single-slice study.
Broken: a DICOM folder with a truncated file, an empty folder, a store of an
unknown format version. Prints the summary's status and error per study and
checks that every input file is unchanged.

Usage: python benchmarks/bench_robustness.py [--dynamics N] [--workers 2]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

from napari_perfroi.cli import main as perfroi
from napari_perfroi.dicom_export import export_study
from napari_perfroi.phantom import write_phantom

FIRST_SEED = 4000


def make_inputs(root: Path, dynamics: int | None) -> list[Path]:
    """The 20 sources, good and broken, under ``root``."""
    length = {} if dynamics is None else {"n_dynamics": dynamics}
    sources = []
    for k in range(13):
        sources.append(root / f"store-{k:02d}.zarr")
        write_phantom(sources[-1], FIRST_SEED + k, **length)
    scratch = root.parent / "scratch"
    for k in range(3):
        exported = write_phantom(scratch / f"s{k}.zarr", FIRST_SEED + 20 + k, **length)
        folder = root / f"dicom-{k}"
        files = export_study(exported, folder)
        if k == 2:  # the same series as a zip
            with zipfile.ZipFile(root / "dicom-2.zip", "w") as archive:
                for path in files:
                    archive.write(path, path.name)
            shutil.rmtree(folder)
            folder = root / "dicom-2.zip"
        sources.append(folder)
    sources.append(root / "single-slice.zarr")
    write_phantom(sources[-1], FIRST_SEED + 30, n_slices=1, acquisition_order=(0,), **length)
    # Broken inputs.
    truncated = root / "truncated-dicom"
    shutil.copytree(root / "dicom-0", truncated)
    victim = sorted(truncated.iterdir())[7]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])
    empty = root / "empty-folder"
    empty.mkdir()
    future = root / "future-version.zarr"
    shutil.copytree(sources[0], future)
    meta = json.loads((future / "zarr.json").read_text())
    meta["attributes"]["perfroi"]["format_version"] = 99
    (future / "zarr.json").write_text(json.dumps(meta))
    return sources + [truncated, empty, future]


def file_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dynamics", type=int, default=None,
                        help="frames per phantom study (default: the phantom's own, 50-70)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "inputs"
        root.mkdir()
        sources = make_inputs(root, args.dynamics)
        before = file_hashes(root)
        out = Path(scratch) / "out"
        start = time.perf_counter()
        code = perfroi(["batch", *map(str, sources), "--out", str(out),
                        "--workers", str(args.workers)])
        elapsed = time.perf_counter() - start
        with open(out / "summary.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        print(f"\n{len(sources)} inputs, exit code {code}, {elapsed:.0f} s\n")
        print("| study | status | global MBF | QA | error |")
        print("|---|---|---|---|---|")
        for row in rows:
            print(f"| {row['study']} | {row['status']} | {row['global_mbf']} | "
                  f"{row['qa'][:60]} | {row['error']} |")
        unchanged = file_hashes(root) == before
        print(f"\ninputs unchanged: {unchanged} ({len(before)} files hashed before and after)")
        counts = {status: sum(r["status"] == status for r in rows) for status in ("done", "failed")}
        print(f"done {counts['done']}, failed {counts['failed']}")


if __name__ == "__main__":
    main()
