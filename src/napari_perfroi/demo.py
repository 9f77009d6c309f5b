"""The main job, end to end, on the embedded sample (``perfroi demo``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# The sample in sample_data/ is this phantom exported as DICOM
# (regenerate it with `python scripts/make_sample_data.py`).
SAMPLE_SEED = 7
SAMPLE_DEFECT = "lad"
REPOSITORY_SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
SCREENSHOT_TIMEOUT_S = 300


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


def run_demo(
    out_dir: Path, sample_dir: str | Path | None = None, screenshot: bool = True
) -> list[Path]:
    """Import the sample DICOM, run every analysis step, save a montage, the flow report
    and (``screenshot``, when a display is available) napari.png; return the written files."""
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
    written = [study.path, montage, *write_report(study, out_dir / "report")]
    if screenshot:
        shot = save_napari_screenshot(study.path, out_dir / "napari.png")
        written += [shot] if shot else []
    return written


def save_napari_screenshot(store: Path, out: Path) -> Path | None:
    """Save a screenshot of napari showing ``store`` to ``out``; None, said in one line,
    when it cannot be taken.

    napari runs in a child process: a display that fails (Qt aborts the
    process) or a missing OpenGL cannot stop the demo.
    """
    from ._napari.screenshot import display_problem

    out.unlink(missing_ok=True)  # never list the picture of an earlier run
    problem = display_problem()
    if problem is None:
        command = [sys.executable, "-m", "napari_perfroi._napari.screenshot", str(store), str(out)]
        try:
            done = subprocess.run(command, capture_output=True, text=True,
                                  timeout=SCREENSHOT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            problem = f"napari did not finish within {SCREENSHOT_TIMEOUT_S} s"
        else:
            if done.returncode == 0 and out.is_file():
                return out
            lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
            if not lines:
                problem = f"napari exited with status {done.returncode}"
            elif done.returncode < 0:  # killed by a signal (Qt aborts): its first complaint
                problem = lines[0]
            else:  # a Python error ends with its exception
                problem = lines[-1]
    print(f"napari screenshot skipped: {problem}")
    return None
