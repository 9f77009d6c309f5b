"""napari reader: a study store (``*.zarr``) or a folder of DICOM files.

Both open lazily: frames are read when napari displays them. A DICOM folder
is only read, never written to; import it into a store with ``perfroi import``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .layers import LayerData

logger = logging.getLogger(__name__)

ReaderFunction = Callable[[str], "list[LayerData]"]
DICOM_PROBE_FILES = 64  # files looked at before deciding a folder holds no DICOM


def get_reader(path) -> ReaderFunction | None:
    """Return a function that reads ``path``, or None if this plugin cannot read it.

    Never raises: napari asks every compatible reader in turn, and one that
    raises would stop the others from being tried.
    """
    try:
        return _reader_for(path)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ours", said once
        warnings.warn(f"napari-perfroi cannot read {path}: {exc}", stacklevel=2)
        return None


def _reader_for(path) -> ReaderFunction | None:
    if not isinstance(path, (str, os.PathLike)):
        return None  # a stack of paths is not a study
    path = Path(path)
    if not path.is_dir():
        return None
    if _is_zarr(path):
        return _study_reader(path)
    return _dicom_reader(path)


def _is_zarr(path: Path) -> bool:
    markers = ("zarr.json", ".zgroup", ".zarray")
    return path.suffix == ".zarr" or any((path / m).is_file() for m in markers)


def _study_reader(path: Path) -> ReaderFunction | None:
    from ..study import StoreError, Study, is_study_store

    if not is_study_store(path):  # claims to be a study (any format version)?
        logger.debug("%s: a zarr store but not a perfroi study", path)
        return None  # another plugin's zarr: stay quiet
    try:
        study = Study.open(path)
    except StoreError as exc:
        warnings.warn(str(exc), stacklevel=2)
        return None

    def read_study(_path) -> list[LayerData]:
        from .layers import study_layers

        return study_layers(study)

    return read_study


def _dicom_reader(folder: Path) -> ReaderFunction | None:
    # napari offers every folder to this reader: decide from a few file
    # headers, and scan the whole series only once this reader is chosen.
    if not _has_dicom_files(folder):
        # napari alone would only say that no plugin reads it: say what this one looked for.
        warnings.warn(f"{folder}: neither a perfroi study store (*.zarr) nor a folder of DICOM "
                      f"files (none among its first {DICOM_PROBE_FILES} files)", stacklevel=2)
        return None

    def read_dicom_folder(_path) -> list[LayerData]:
        from ..dicom import scan_series
        from .layers import dicom_image_layer

        # napari shows warnings (e.g. skipped unreadable files) as notifications
        series = scan_series(folder, warn=lambda message: warnings.warn(message, stacklevel=2))
        return [dicom_image_layer(series, folder)]

    return read_dicom_folder


def _has_dicom_files(folder: Path, max_files: int = DICOM_PROBE_FILES) -> bool:
    """Whether one of the first files under ``folder`` has the DICOM preamble marker."""
    looked = 0
    for root, subfolders, files in os.walk(folder):
        subfolders.sort()
        for name in sorted(files):
            try:
                with open(os.path.join(root, name), "rb") as fh:
                    if fh.read(132)[128:] == b"DICM":
                        return True
            except OSError:
                pass
            looked += 1
            if looked >= max_files:
                return False
    return False
