"""The ``perfroi`` command line: thin wrappers around the core steps."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .errors import InputError
from .progress import TqdmProgress
from .report import study_summary


def _cmd_import(args: argparse.Namespace) -> None:
    from .dicom import import_dicom

    with TqdmProgress("import") as progress:
        study = import_dicom(args.src, args.dest, overwrite=args.overwrite, progress=progress)
    print(study_summary(study))


def _cmd_phantom(args: argparse.Namespace) -> None:
    from .phantom import write_phantom

    study = write_phantom(args.dest, args.seed, defect=args.defect, overwrite=args.overwrite)
    print(study_summary(study))


def _cmd_analyze(args: argparse.Namespace) -> None:
    from .pipeline import parse_steps, run_step
    from .study import Study

    steps = parse_steps(args.steps)
    study = Study.open(args.store, writable=True)
    for name in steps:
        with TqdmProgress(name, unit="slice") as progress:
            run_step(study, name, progress)
    print(f"{study.path}: ran {', '.join(steps)}")


def _cmd_info(args: argparse.Namespace) -> None:
    from .study import Study

    print(study_summary(Study.open(args.store)))


def _cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    written = run_demo(Path(args.out), sample_dir=args.sample)
    print("wrote:")
    for path in written:
        print(f"  {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perfroi",
        description="Stress perfusion cardiac MRI: study stores, LV ROIs and myocardial blood flow.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cmd = commands.add_parser("import", help="DICOM folder or zip -> study store")
    cmd.add_argument("src", help="folder (searched recursively) or .zip of DICOM files")
    cmd.add_argument("dest", help="study store to create (DEST.zarr)")
    cmd.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    cmd.set_defaults(run=_cmd_import)

    cmd = commands.add_parser("phantom", help="write a seeded synthetic study with ground truth")
    cmd.add_argument("dest", help="study store to create (DEST.zarr)")
    cmd.add_argument("--seed", type=int, required=True, help="random seed (same seed, same study)")
    cmd.add_argument(
        "--defect", choices=("lad", "rca", "lcx", "none"), default=None,
        help="territory with reduced flow (default: chosen by the seed among lad/rca/lcx)",
    )
    cmd.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    cmd.set_defaults(run=_cmd_phantom)

    cmd = commands.add_parser("analyze", help="run analysis steps on a study store")
    cmd.add_argument("store", help="study store (STORE.zarr)")
    cmd.add_argument(
        "--steps", default="motion", help="comma-separated steps to run (available: motion)"
    )
    cmd.set_defaults(run=_cmd_analyze)

    cmd = commands.add_parser("info", help="print a summary of a study store")
    cmd.add_argument("store", help="study store (STORE.zarr)")
    cmd.set_defaults(run=_cmd_info)

    cmd = commands.add_parser("demo", help="the main job end to end on the embedded sample")
    cmd.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    cmd.add_argument(
        "--sample", default=None,
        help="DICOM folder to use instead of the embedded sample (default: sample_data/)",
    )
    cmd.set_defaults(run=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except InputError as exc:
        print(f"perfroi {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permission denied, ...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"perfroi {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"perfroi {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
