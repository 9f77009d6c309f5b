"""The main job, end to end, on the embedded sample (``perfroi demo``)."""

from __future__ import annotations

from pathlib import Path

# The sample in sample_data/ is this phantom exported as DICOM
# (regenerate it with `python scripts/make_sample_data.py`).
SAMPLE_SEED = 7
SAMPLE_DEFECT = "lad"
REPOSITORY_SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


def write_sample_dicom(folder: str | Path) -> Path:
    """Write the sample phantom study as a scanner-like DICOM series into ``folder``."""
    from .dicom_export import export_dicom
    from .phantom import generate_phantom

    phantom = generate_phantom(SAMPLE_SEED, SAMPLE_DEFECT)
    attrs = {**phantom.attrs, **phantom.extra}
    export_dicom(phantom.image, attrs, folder, seed=SAMPLE_SEED, aif_image=phantom.aif_image)
    return Path(folder)


def sample_dicom_folder(out_dir: Path) -> Path:
    """The embedded sample; regenerated into ``out_dir`` when not shipped alongside."""
    if any(p.suffix != ".md" for p in REPOSITORY_SAMPLE.glob("*")):
        return REPOSITORY_SAMPLE
    return write_sample_dicom(out_dir / "sample_dicom")


def run_demo(out_dir: Path, sample_dir: str | Path | None = None) -> list[Path]:
    """Import the sample DICOM, run every analysis step, save a montage and the flow
    report; return the written files."""
    from .dicom import import_dicom
    from .pipeline import STEPS, run_steps
    from .progress import TqdmProgress
    from .report import save_montage, study_summary, write_report

    out_dir.mkdir(parents=True, exist_ok=True)
    source = Path(sample_dir) if sample_dir else sample_dicom_folder(out_dir)
    with TqdmProgress("import") as progress:
        study = import_dicom(source, out_dir / "study.zarr", overwrite=True, progress=progress)
    run_steps(study, list(STEPS))  # every analysis step
    print(study_summary(study))
    montage = save_montage(study, out_dir / "montage.png")
    return [study.path, montage, *write_report(study, out_dir / "report")]
