"""The ``perfroi`` command line: thin wrappers around the core steps."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .errors import InputError
from .progress import TqdmProgress
from .report import study_summary
from .roi import DEFAULT_MARGIN_MM
from .segment.finetune import FinetuneConfig
from .segment.train import TrainingConfig


def _cmd_import(args: argparse.Namespace) -> None:
    from .dicom import import_dicom

    with TqdmProgress("import") as progress:
        study = import_dicom(args.src, args.dest, overwrite=args.overwrite, progress=progress)
    print(study_summary(study))


def _cmd_phantom(args: argparse.Namespace) -> None:
    from .phantom import write_phantom

    overrides = dict(_phantom_setting(text) for text in args.set)
    chosen = {"acquisition": args.acquisition, "state": args.state,
              "tissue_model": args.tissue_model, "readout": args.readout}
    overrides.update({name: value for name, value in chosen.items() if value is not None})
    lge_overrides = dict(_phantom_setting(text) for text in args.lge_set)
    if (lge_overrides or args.scar) and not args.lge:
        raise InputError("--scar and --lge-set describe the LGE phantom: add --lge")
    study = write_phantom(args.dest, args.seed, defect=args.defect, overwrite=args.overwrite,
                          **overrides)
    print(study_summary(study))
    if args.lge:
        from .lge.phantom import write_lge_phantom

        lge = write_lge_phantom(study, args.scar, **lge_overrides)
        truth = lge.attrs["truth"]
        print(f"LGE ({lge.attrs['lge_kind']}) {lge.shape[0]} slice(s): scar "
              f"{truth['scar_pattern']} in {truth['scar_territory'] or 'no territory'}")


def _cmd_lge_import(args: argparse.Namespace) -> None:
    from .lge.dicom_import import import_lge_dicom

    with TqdmProgress("lge-import", unit="file") as progress:
        lge = import_lge_dicom(args.src, args.store, overwrite=args.overwrite, progress=progress)
    attrs = lge.attrs
    at = [s for s in attrs["perfusion_slice"] if s is not None]
    print(f"{args.store}: LGE ({attrs['lge_kind']}) {lge.shape[0]} slice(s) "
          f"{lge.shape[1]}x{lge.shape[2]}, {len(at)} at a perfusion slice")


def _cmd_lge_analyze(args: argparse.Namespace) -> None:
    from .lge.pipeline import LGE_STEPS, run_lge_steps
    from .study import Study

    steps = [name.strip() for name in args.steps.split(",") if name.strip()] or list(LGE_STEPS)
    study = Study.open(args.store, writable=True)
    run_lge_steps(study, steps, log=print, model=args.weights, method=args.scar_method,
                  n_sd=args.n_sd, scar_weights=args.scar_weights)


def _cmd_train_lge(args: argparse.Namespace) -> None:
    if args.finetune is None:
        from .lge.train import run_command

        run_command(args)
        return
    from .lge.finetune import KIND, finetune_scar

    if args.kind != KIND:
        raise InputError(f"--finetune learns from the slices' fibrosis labels: --kind {KIND}")
    metadata = finetune_scar(args.finetune, Path(args.out), base=args.weights or KIND,
                             epochs=args.epochs, seed=args.seed)
    change = metadata["finetuning"]["held_out_weak_loss"]
    print(f"wrote {args.out}: held-out weak loss {change['before']} -> {change['after']}, "
          f"threshold {metadata['threshold']}")


def _phantom_setting(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` with VALUE read as JSON (numbers, lists, true/false) or else as text."""
    import json

    name, sep, value = text.partition("=")
    if not sep or not name:
        raise InputError(f"--set expects NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def _cmd_analyze(args: argparse.Namespace) -> None:
    from .pipeline import parse_steps, run_steps, with_prerequisites
    from .study import Study, checked_slice_levels

    study = Study.open(args.store, writable=True)
    if args.slice_levels is not None:
        levels = checked_slice_levels(args.slice_levels.split(","), study.shape[0])
        study.update_attrs(slice_levels=levels)
    steps = with_prerequisites(study, parse_steps(args.steps))
    if "segment" in steps:  # a bad device or weights file fails now, not after the motion step
        from .segment.model import load_model

        load_model(args.weights, args.device)
    run_steps(study, steps, model=args.weights, device=args.device, margin_mm=args.margin_mm,
              flow_model=args.model,
              hematocrit=args.hematocrit, t1_blood_s=args.t1_blood, t1_myocardium_s=args.t1_myocardium,
              dose_ratio=args.dose_ratio)
    print(f"{study.path}: ran {', '.join(steps)}")


def _cmd_train(args: argparse.Namespace) -> None:
    if args.finetune:
        _finetune(args)
        return
    from .segment.train import train

    if args.out is None:
        raise InputError("--out is required (the folder for unet.safetensors and unet.json)")
    defaults = TrainingConfig()
    config = TrainingConfig(
        train_studies=args.train_studies,
        validation_studies=args.validation_studies,
        max_epochs=defaults.max_epochs if args.epochs is None else args.epochs,
        patience=defaults.patience if args.patience is None else args.patience,
        seed=args.seed,
        workers=args.workers,
        device=args.device,
    )
    metadata = train(args.out, config, log=lambda line: print(line, flush=True))
    dice = ", ".join(f"{k} {v:.3f}" for k, v in metadata["validation_dice"].items())
    print(f"wrote {Path(args.out) / metadata['weights']} (sha256 {metadata['sha256']}); "
          f"validation Dice: {dice}")


def _finetune(args: argparse.Namespace) -> None:
    from .segment.finetune import FinetuneConfig, finetune

    defaults = FinetuneConfig()
    config = FinetuneConfig(
        max_epochs=defaults.max_epochs if args.epochs is None else args.epochs,
        patience=defaults.patience if args.patience is None else args.patience,
        seed=args.seed,
    )
    with TqdmProgress("fine-tune", unit="step") as progress:
        path, metadata = finetune(args.finetune, args.out, args.weights, config, progress=progress,
                                  log=lambda line: print(line, flush=True))
    dice = ", ".join(f"{k} {v:.3f}" for k, v in metadata["validation_dice"].items())
    print(f"wrote {path} (sha256 {metadata['sha256']}); held-out Dice: {dice}")


def _cmd_export_rois(args: argparse.Namespace) -> None:
    from .roi_export import export_rois
    from .study import Study

    written = export_rois(Study.open(args.store), args.out, crop_mm=args.crop_mm,
                          spacing_mm=args.crop_spacing_mm)
    print("wrote:")
    for path in written:
        print(f"  {path}")


def _cmd_report(args: argparse.Namespace) -> None:
    from .report import write_report, write_reserve_report
    from .reserve import pair_studies, reserve_line
    from .study import Study

    study = Study.open(args.store)
    pair = None
    if args.rest is not None:  # both studies are checked before anything is written
        pair = pair_studies(study, Study.open(args.rest))
        for warning in pair.warnings:
            print(f"perfroi report: warning: {warning}", file=sys.stderr)
    written = write_report(study, args.out)
    if pair is not None:
        written += write_reserve_report(pair, args.out)
    print("wrote:")
    for path in written:
        print(f"  {path}")
    if pair is not None:
        print(reserve_line(pair.reserve))


def _cmd_export_dicom(args: argparse.Namespace) -> None:
    from .dicom_results import export_results
    from .study import Study

    with TqdmProgress("export", unit="dynamic") as progress:
        written = export_results(Study.open(args.store), args.out, source=args.source,
                                 progress=progress, lge_source=args.lge_source)
    out = Path(args.out)
    counts: dict[str, int] = {}
    for path in written:
        entry = path.relative_to(out).parts[0]
        counts[entry] = counts.get(entry, 0) + 1
    print("wrote:")
    for entry, count in counts.items():
        print(f"  {out / entry}" + (f"/ ({count} files)" if (out / entry).is_dir() else ""))


def _cmd_import_seg(args: argparse.Namespace) -> None:
    from .dicom_seg_import import import_segmentation
    from .study import Study

    study = Study.open(args.store, writable=True)
    imported = import_segmentation(args.seg, study)
    print(f"{study.path}: labels of {imported.frames} frame(s) imported from {args.seg}, "
          f"{imported.edited} newly marked edited")


def _cmd_info(args: argparse.Namespace) -> None:
    from .study import Study

    print(study_summary(Study.open(args.store)))


def _cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    written = run_demo(Path(args.out), sample_dir=args.sample, screenshot=not args.no_screenshot)
    print("wrote:")
    for path in written:
        print(f"  {path}")


def _cmd_batch(args: argparse.Namespace) -> None:
    from .batch import (count_line, expand_sources, open_client, plan_jobs, read_lge_sources,
                        read_pairs, run_batch)

    out_dir = Path(args.out)
    weights = None
    if args.weights is not None:
        weights = Path(args.weights).expanduser().resolve()  # the workers may run elsewhere
        if not weights.is_file():
            raise InputError(f"{args.weights}: model weights not found")
    jobs = plan_jobs(expand_sources(args.src), out_dir)
    pairs = {} if args.pairs is None else read_pairs(Path(args.pairs), jobs)
    lge_sources = {} if args.lge is None else read_lge_sources(Path(args.lge), jobs)
    with open_client(workers=args.workers, scheduler=args.scheduler) as client:
        records = run_batch(jobs, out_dir, client, force=args.force, weights=weights,
                            flow_model=args.model, pairs=pairs, export_dicom=args.export_dicom,
                            lge_sources=lge_sources)
    print(f"wrote {out_dir / 'summary.csv'}")
    print(count_line(records))


def _add_flow_model(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--model", choices=("fermi", "2cxm"), default="fermi",
                     help="flow: tissue model, Fermi-constrained deconvolution or the "
                          "two-compartment exchange model with PS, vp and ve maps "
                          "(default fermi)")


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
    cmd.add_argument(
        "--acquisition", choices=("dual-sequence", "single-bolus", "dual-bolus"), default=None,
        help="dual-sequence: a separate low-resolution AIF series (default); single-bolus: "
             "none; dual-bolus: a dilute pre-bolus before the main bolus in the same series",
    )
    cmd.add_argument("--state", choices=("stress", "rest"), default=None,
                     help="stress (default) or rest flow and heart rate, same patient")
    cmd.add_argument("--tissue-model", choices=("fermi", "2cxm"), default=None,
                     help="myocardial kinetics: Fermi residue (default) or two-compartment "
                          "exchange")
    cmd.add_argument(
        "--readout", choices=("ideal", "scanner"), default=None,
        help="ideal saturation recovery (default) or a scanner's FLASH readout, whose LV "
             "blood signal saturates at the bolus peak",
    )
    cmd.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                     help="override a phantom parameter, e.g. --set hematocrit=0.35 "
                          "--set tissue_model=2cxm --set n_pd_frames=0 (repeatable)")
    cmd.add_argument("--lge", action="store_true",
                     help="add the same heart's LGE stack (scar with known truth) as the "
                          "store's lge group")
    cmd.add_argument("--scar", choices=("lad", "rca", "lcx", "none"), default=None,
                     help="with --lge: territory of the scar (default: chosen by the seed)")
    cmd.add_argument("--lge-set", action="append", default=[], metavar="NAME=VALUE",
                     help="with --lge: override an LGE phantom parameter, e.g. "
                          "--lge-set inversion_time_ms=250 --lge-set lge_kind=psir")
    cmd.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    cmd.set_defaults(run=_cmd_phantom)

    cmd = commands.add_parser(
        "lge-import", help="add an LGE stack (DICOM folder or zip) to a perfusion study store",
        description="Import a single-phase short-axis LGE stack (magnitude or PSIR) of the "
        "perfusion study's patient into STORE/lge; each LGE slice is matched to the perfusion "
        "slice at its position. Another patient or study, another orientation or no slice at a "
        "perfusion position is refused and nothing is written.")
    cmd.add_argument("src", help="folder (searched recursively) or .zip of DICOM files")
    cmd.add_argument("store", help="the perfusion study store (STORE.zarr)")
    cmd.add_argument("--overwrite", action="store_true",
                     help="replace the LGE study the store already has")
    cmd.set_defaults(run=_cmd_lge_import)

    cmd = commands.add_parser(
        "lge-analyze", help="LGE myocardium, AHA sectors, scar and the viability verdicts",
        description="Run the LGE steps on STORE/lge: lge-segment, lge-aha, lge-scar, viability "
        "(a step whose input is missing runs the step that makes it). Slices whose labels or "
        "scar were edited by hand are kept. The viability step needs the perfusion study's flow "
        "report for its verdicts (perfroi analyze); perfroi report then writes viability.csv, "
        "viability.json, viability_bullseye.png and a second PDF page.")
    cmd.add_argument("store", help="the perfusion study store with an LGE study")
    cmd.add_argument("--steps", default=",".join(("lge-segment", "lge-aha", "lge-scar",
                                                  "viability")),
                     help="comma-separated LGE steps (default: all)")
    cmd.add_argument("--scar-method", choices=("slice", "stack", "pixel", "nsd", "fwhm"),
                     default=None,
                     help="scar: U-Net trained with slice-level (default), study-level or "
                          "pixel labels; nsd: n SD over remote myocardium; fwhm: half the "
                          "maximum of the enhanced region")
    cmd.add_argument("--n-sd", type=float, default=None,
                     help="with --scar-method nsd: SDs over the remote mean (default 5)")
    cmd.add_argument("--weights", default=None,
                     help="myocardium model weights (.safetensors; default: the shipped one)")
    cmd.add_argument("--scar-weights", default=None,
                     help="scar model weights for a model method (e.g. a model fine-tuned "
                          "with train-lge --finetune; default: the shipped one)")
    cmd.set_defaults(run=_cmd_lge_analyze)

    cmd = commands.add_parser("analyze", help="run analysis steps on a study store")
    cmd.add_argument("store", help="study store (STORE.zarr)")
    cmd.add_argument(
        "--steps", default="motion,segment,roi,flow,aha",
        help="comma-separated steps to run (available: motion, segment, roi, flow, aha; "
        "default: all); "
        "a step whose input is missing also runs the step that makes it",
    )
    cmd.add_argument("--margin-mm", type=float, default=None,
                     help=f"roi: margin added to the LV circle's radius "
                          f"(default {DEFAULT_MARGIN_MM:g} mm)")
    cmd.add_argument("--weights", default=None,
                     help="segmentation weights (.safetensors; default: the shipped model)")
    _add_flow_model(cmd)
    cmd.add_argument("--device", default="auto",
                     help="torch device for segmentation: auto (cuda > mps > cpu), cpu, cuda, mps")
    cmd.add_argument("--hematocrit", type=float, default=None,
                     help="flow: blood hematocrit (default: the store's, 0.45 unless imported "
                          "otherwise); the AIF is converted to plasma with it and MBF is blood flow")
    cmd.add_argument("--t1-blood", type=float, default=None,
                     help="flow: native blood T1 in s (default: from proton-density frames when "
                          "present, else 1.65)")
    cmd.add_argument("--t1-myocardium", type=float, default=None,
                     help="flow: native myocardial T1 in s (default 1.05)")
    cmd.add_argument("--slice-levels", default=None, metavar="LEVELS",
                     help="aha: the level of each slice, base to apex, e.g. 'mid' for one mid "
                          "slice or 'basal,mid' (default: by thirds: one slice is basal)")
    cmd.add_argument("--dose-ratio", type=float, default=None, metavar="R",
                     help="flow: a dual-bolus series (a dilute pre-bolus, then the main bolus): "
                          "main dose over pre-bolus dose; the AIF is the pre-bolus scaled by R")
    cmd.set_defaults(run=_cmd_analyze)

    cmd = commands.add_parser(
        "report",
        help="flow report: bullseye.png, segments.csv, report.json, curves.png, report.pdf",
        description="Write the flow report of an analysed study: the AHA 16-segment bullseye "
        "(bullseye.png), per-segment MBF, map statistics and semi-quantitative indices "
        "(segments.csv), the full report (report.json), the AIF and tissue curves (curves.png) "
        "and all of it on one page (report.pdf). With --rest, STORE is the "
        "stress study and the perfusion reserve (stress / rest) is written too: reserve.csv, "
        "reserve.json, reserve_bullseye.png and curves_stress_rest.png. The reserve is the MPR "
        "(MBF ratio) when both studies have absolute MBF, else the MPRI (relative-upslope ratio).",
    )
    cmd.add_argument("store", help="study store (STORE.zarr) analysed with the flow and aha steps")
    cmd.add_argument("--out", required=True, metavar="DIR",
                     help="folder for the report files (created if needed)")
    cmd.add_argument("--rest", default=None, metavar="REST.zarr",
                     help="the same patient's rest study, analysed likewise: also write the "
                          "perfusion reserve files")
    cmd.set_defaults(run=_cmd_report)

    cmd = commands.add_parser(
        "export-dicom", help="results as DICOM for PACS: segmentations, parametric maps, PDF",
        description="Write the study's results as DICOM objects in the study of its images: "
        "the labels (Segmentation, one instance per dynamic, in DIR/labels/), the AHA segments "
        "(aha.dcm, Segmentation), each map present (mbf.dcm, ...: Parametric Map, no value "
        "stored as -1) and the flow report (report.dcm, Encapsulated PDF). A study not "
        "imported from DICOM (a phantom) gets its MR series in DIR/images/ too. An analysed "
        "LGE study adds DIR/lge/: myocardium and scar (scar.dcm) and AHA segments (aha.dcm) "
        "as Segmentations of the LGE images (written in DIR/lge/images/ for a phantom). DIR "
        "is replaced whole if it holds an earlier export.",
    )
    cmd.add_argument("store", help="study store (STORE.zarr)")
    cmd.add_argument("--out", required=True, metavar="DIR", help="folder for the DICOM files")
    cmd.add_argument("--source", default=None, metavar="SRC",
                     help="the original DICOM folder or zip the study was imported from: the "
                          "patient and study identification (name, ID, accession number) are "
                          "copied from it (the store keeps none; without SRC they are empty)")
    cmd.add_argument("--lge-source", default=None, metavar="SRC",
                     help="the original LGE DICOM folder or zip the LGE stack was imported "
                          "from, for its identification likewise (without it, the perfusion "
                          "study's when both are one study)")
    cmd.set_defaults(run=_cmd_export_dicom)

    cmd = commands.add_parser(
        "import-seg", help="a DICOM Segmentation of the study's images -> its labels",
        description="Import a DICOM Segmentation (a file, or a folder such as the labels/ of "
        "export-dicom) made on the study's own images into its labels: segments LV blood pool, "
        "LV myocardium and RV blood pool (by SNOMED CT code or segment label). The frames it "
        "covers replace the labels and, where they differ, are marked edited, so the segment "
        "step keeps them. A segmentation of another series or geometry is refused and nothing "
        "is written.",
    )
    cmd.add_argument("seg", help="DICOM Segmentation file, or a folder of them")
    cmd.add_argument("store", help="study store (STORE.zarr) whose images it segments")
    cmd.set_defaults(run=_cmd_import_seg)

    cmd = commands.add_parser("export-rois", help="LV circles as CSV and LV-centred crops")
    cmd.add_argument("store", help="study store (STORE.zarr) with circles (the roi step)")
    cmd.add_argument("--out", required=True, help="folder for rois.csv and crops.zarr")
    cmd.add_argument("--crop-mm", type=float, default=96.0,
                     help="side of the square LV-centred crop (default 96 mm)")
    cmd.add_argument("--crop-spacing-mm", type=float, default=1.0,
                     help="pixel spacing of the crops (default 1 mm)")
    cmd.set_defaults(run=_cmd_export_rois)

    cmd = commands.add_parser(
        "batch", help="import, analyse and report many studies on dask.distributed",
        description="Process each SRC (a DICOM folder, a .zip of DICOM files or a study store) "
        "as one independent task: import into DIR/studies/NAME.zarr (a store is copied; inputs "
        "are never written), run every analysis step, write the report into DIR/reports/NAME/, "
        "and write DIR/summary.csv. Studies with a report are skipped unless --force; a failing "
        "study is recorded in the summary and does not stop the others. With --pairs, each "
        "stress study's report folder gains the perfusion reserve files against its rest study "
        "and its summary row the reserve (index, global, per territory).",
    )
    cmd.add_argument("src", nargs="+", metavar="SRC",
                     help="one study each: DICOM folder, .zip or STORE.zarr; glob patterns allowed")
    cmd.add_argument("--out", required=True, metavar="DIR",
                     help="output folder (studies/, reports/, summary.csv)")
    where = cmd.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None, metavar="N",
                       help="local single-threaded worker processes (default: one per core)")
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="an existing dask scheduler, e.g. tcp://host:8786 (its workers must "
                            "see the same files)")
    cmd.add_argument("--force", action="store_true",
                     help="recompute studies that already have a report")
    cmd.add_argument("--weights", default=None,
                     help="segmentation weights (.safetensors, e.g. a fine-tuned model; "
                          "default: the shipped model)")
    _add_flow_model(cmd)
    cmd.add_argument("--pairs", default=None, metavar="FILE.csv",
                     help="stress and rest studies of one patient: a CSV file with the columns "
                          "stress and rest, one pair a row, each a SRC of this batch (relative "
                          "paths are from the file's folder)")
    cmd.add_argument("--lge", default=None, metavar="FILE.csv",
                     help="LGE stacks: a CSV file with the columns perfusion (a SRC of this "
                          "batch) and lge (its LGE DICOM folder or zip), one study a row; each "
                          "is imported, analysed and reported with its study (viability files, "
                          "scar and verdict columns)")
    cmd.add_argument("--export-dicom", action="store_true",
                     help="also export each study's results as DICOM (as export-dicom, "
                          "identified from its DICOM source) into DIR/reports/NAME/dicom/")
    cmd.set_defaults(run=_cmd_batch)

    cmd = commands.add_parser(
        "train", help="train the segmentation model on phantoms, or fine-tune it on accepted series",
        description="Without --finetune: train from scratch on generated phantoms into --out DIR. "
        "With --finetune STORE...: start from the shipped model (or --weights) and fine-tune it on "
        "the accepted series of the stores (slices whose circles are accepted on every frame), "
        "holding some out for early stopping; the result is a user model at --out FILE.",
    )
    cmd.add_argument("--out", default=None,
                     help="training: folder for unet.safetensors and unet.json; fine-tuning: "
                          "the .safetensors file to write (default: a new file in the user's "
                          "napari-perfroi/models data folder; never the shipped model)")
    cmd.add_argument("--finetune", nargs="+", default=None, metavar="STORE",
                     help="fine-tune on the accepted series of these study stores")
    cmd.add_argument("--weights", default=None,
                     help="fine-tuning: the weights to start from (default: the shipped model)")
    defaults = TrainingConfig()
    cmd.add_argument("--train-studies", type=int, default=defaults.train_studies,
                     help=f"phantom studies to train on (default {defaults.train_studies})")
    cmd.add_argument("--validation-studies", type=int, default=defaults.validation_studies,
                     help=f"phantom studies for early stopping (default {defaults.validation_studies})")
    cmd.add_argument("--epochs", type=int, default=None,
                     help=f"most epochs (default {defaults.max_epochs}; fine-tuning "
                          f"{FinetuneConfig.max_epochs})")
    cmd.add_argument("--patience", type=int, default=None,
                     help=f"stop after this many epochs without improvement (default "
                          f"{defaults.patience}; fine-tuning {FinetuneConfig.patience})")
    cmd.add_argument("--seed", type=int, default=defaults.seed, help="training seed (default 0)")
    cmd.add_argument("--workers", type=int, default=defaults.workers,
                     help=f"processes generating phantoms (default {defaults.workers})")
    cmd.add_argument("--device", default=defaults.device,
                     help="training: auto (a GPU where there is one), cpu, cuda, mps")
    cmd.set_defaults(run=_cmd_train)

    cmd = commands.add_parser(
        "train-lge", help="train an LGE model (myocardium, or scar from pixel, slice or study "
                          "labels) on LGE phantoms")
    from .lge.train import add_arguments

    add_arguments(cmd)
    cmd.add_argument("--finetune", nargs="+", default=None, metavar="STORE",
                     help="with --kind slice: fine-tune the slice-level scar model (--weights, "
                          "default the shipped one) on the fibrosis yes/no labels of these "
                          "stores' LGE slices; --out is then the .safetensors file to write")
    cmd.add_argument("--weights", default=None,
                     help="with --finetune: the model to start from (default: the shipped one)")
    cmd.set_defaults(run=_cmd_train_lge)

    cmd = commands.add_parser("info", help="print a summary of a study store")
    cmd.add_argument("store", help="study store (STORE.zarr)")
    cmd.set_defaults(run=_cmd_info)

    cmd = commands.add_parser("demo", help="the main job end to end on the embedded sample")
    cmd.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    cmd.add_argument(
        "--sample", default=None,
        help="DICOM folder to use instead of the embedded sample (default: sample_data/)",
    )
    cmd.add_argument(
        "--no-screenshot", action="store_true",
        help="do not save napari.png (a screenshot of napari, which needs a display)",
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
