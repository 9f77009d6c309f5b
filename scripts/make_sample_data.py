"""Regenerate sample_data/: the sample phantom study exported as a DICOM series.

Run from the repository root: ``python scripts/make_sample_data.py``.
"""

import shutil
import tempfile
from pathlib import Path

from napari_perfroi.demo import REPOSITORY_SAMPLE, write_sample_dicom


def main() -> None:
    for old in REPOSITORY_SAMPLE.glob("*"):
        if old.name != "README.md":
            old.unlink() if old.is_file() else shutil.rmtree(old)
    with tempfile.TemporaryDirectory() as scratch:
        for written in write_sample_dicom(Path(scratch) / "dicom").iterdir():
            shutil.move(written, REPOSITORY_SAMPLE / written.name)
    size_mb = sum(p.stat().st_size for p in REPOSITORY_SAMPLE.iterdir()) / 1e6
    print(f"wrote {len(list(REPOSITORY_SAMPLE.iterdir())) - 1} files, {size_mb:.1f} MB")


if __name__ == "__main__":
    main()
