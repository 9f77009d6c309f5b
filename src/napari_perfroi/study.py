"""The study store: one zarr v3 directory per study (format version 1).

Layout and attributes are described in the README ("Study store"). The raw
``image`` is written once at creation and never modified; every other array
is replaced atomically: it is written beside the live one and swapped in, so
a reader sees either the old array or the new one, never a half-written one.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime as _dt
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

FORMAT_VERSION = 1
ATTRS_KEY = "perfroi"
REQUIRED_ATTRS = (
    "format_version",
    "pixel_spacing_mm",
    "slice_thickness_mm",
    "frame_times_s",
    "slice_levels",
    "slice_positions_mm",
    "reference_frame",
    "hematocrit",
    "source",
    "steps",
)
SLICE_LEVELS = ("basal", "mid", "apical")
TWO_COMPARTMENT_MAPS = ("ps", "vp", "ve")  # written with mbf by a two-compartment flow run
# Written by every flow run: the semi-quantitative first-pass indices (semiquant.py).
SEMIQUANTITATIVE_MAPS = ("upslope", "relative_upslope", "peak_enhancement", "relative_peak",
                         "time_to_peak_s", "first_pass_auc")
# Arrays a step may write, with their dtype and the axes they share with image.
DERIVED_ARRAYS = {
    "labels": ("uint8", "STYX"),
    "labels_edited": ("uint8", "ST"),
    "label_confidence": ("float32", "ST"),
    "label_uncertainty": ("float32", "SYX"),
    "roi": ("float32", "ST3"),
    "roi_state": ("uint8", "ST"),
    "motion": ("float32", "ST2"),
    "mbf": ("float32", "SYX"),
    "mbf_fit_error": ("float32", "SYX"),
    **dict.fromkeys(TWO_COMPARTMENT_MAPS, ("float32", "SYX")),
    **dict.fromkeys(SEMIQUANTITATIVE_MAPS, ("float32", "SYX")),
    "aif_mask": ("uint8", "SYX"),
    "aha": ("uint8", "SYX"),
}
# Raw inputs, written once by create and never modified.
RAW_ARRAYS = ("image", "aif_image")
ROI_STATES = {0: "none", 1: "proposed", 2: "edited", 3: "propagated", 4: "accepted"}
# Values of the labels array (papillary muscles are LV blood pool).
BACKGROUND, LV_BLOOD, MYOCARDIUM, RV_BLOOD = 0, 1, 2, 3
_STAGING_PREFIX = ".staging-"
_RETIRED_PREFIX = ".retired-"


class StoreError(InputError):
    """A study store is missing, malformed, or of an unknown format version."""


def slice_levels_for(n_slices: int) -> list[str]:
    """Level of each slice ordered base -> apex: basal/mid/apical by thirds."""
    return [SLICE_LEVELS[min(2, (3 * i) // n_slices)] for i in range(n_slices)]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Study:
    """An open study store. Create with :meth:`create`, open with :meth:`open`."""

    path: Path
    writable: bool

    # ---------------------------------------------------------------- create / open
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        image: np.ndarray,
        *,
        pixel_spacing_mm: tuple[float, float],
        slice_thickness_mm: float,
        frame_times_s: list[list[float]] | np.ndarray,
        slice_positions_mm: list[float] | np.ndarray,
        source: dict[str, Any],
        slice_levels: list[str] | None = None,
        hematocrit: float = 0.45,
        reference_frame: list[int] | None = None,
        extra_attrs: dict[str, Any] | None = None,
        aif_image: np.ndarray | None = None,
        aif_series: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> Study:
        """Write a new store with its raw ``image`` (S, T, Y, X).

        ``aif_image`` (T, Ya, Xa), with its ``aif_series`` attribute, is an
        optional separate AIF image series of a dual-sequence acquisition
        (see :func:`check_aif_series`).

        ``extra_attrs`` are merged into the ``perfroi`` attribute (e.g. the
        optional ``image_orientation_patient`` [6] and ``image_position_patient``
        [S][3] from DICOM, or a phantom's ``truth``).

        The store is built in a staging directory beside ``path`` and renamed
        into place at the end, so a failure never leaves a half-written store.
        """
        path = Path(path)
        image = np.asarray(image)
        if image.ndim != 4 or min(image.shape) < 1:
            raise StoreError(f"{path}: image must be (slices, frames, rows, cols), got {image.shape}")
        if image.dtype not in (np.uint16, np.float32):
            raise StoreError(f"{path}: image dtype must be uint16 or float32, got {image.dtype}")
        n_slices, n_frames = image.shape[:2]
        frame_times = np.asarray(frame_times_s, dtype=float)
        if frame_times.shape != (n_slices, n_frames):
            raise StoreError(
                f"{path}: frame_times_s must be {n_slices}x{n_frames}, got {frame_times.shape}"
            )
        if path.exists() and not overwrite:
            raise StoreError(f"{path}: already exists (use overwrite to replace it)")
        if path.exists() and not is_study_store(path):
            raise StoreError(f"{path}: exists and is not a study store; refusing to replace it")
        attrs = {
            "format_version": FORMAT_VERSION,
            "pixel_spacing_mm": [float(v) for v in pixel_spacing_mm],
            "slice_thickness_mm": float(slice_thickness_mm),
            "frame_times_s": frame_times.tolist(),
            "slice_levels": list(slice_levels or slice_levels_for(n_slices)),
            "slice_positions_mm": [float(v) for v in slice_positions_mm],
            "reference_frame": [int(v) for v in (reference_frame or [0] * n_slices)],
            "hematocrit": float(hematocrit),
            "source": source,
            "steps": {},
            **(extra_attrs or {}),
        }
        if (aif_image is None) != (aif_series is None):
            raise StoreError(f"{path}: aif_image and aif_series go together")
        if aif_image is not None:
            aif_image = np.asarray(aif_image)
            attrs["aif_series"] = aif_series
            check_aif_series(path, aif_series, aif_image.shape, aif_image.dtype)
        _check_attrs(path, attrs, image.shape)
        staging = path.with_name(f"{_STAGING_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")
        try:
            import zarr

            root = zarr.open_group(staging, mode="w", zarr_format=3)
            root.attrs[ATTRS_KEY] = attrs
            arr = root.create_array(
                "image", shape=image.shape, dtype=image.dtype,
                chunks=(1, 1) + image.shape[2:], fill_value=0,
            )
            arr[...] = image
            if aif_image is not None:
                root.create_array(
                    "aif_image", shape=aif_image.shape, dtype=aif_image.dtype,
                    chunks=aif_image.shape, fill_value=0,
                )[...] = aif_image
            replace_dir(staging, path)  # the old store stays whole until the swap
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return cls(path, writable=True)

    @classmethod
    def open(cls, path: str | os.PathLike, *, writable: bool = False) -> Study:
        """Open and validate an existing store; raises :class:`StoreError`."""
        study = cls(Path(path), writable=writable)
        study.validate()
        return study

    def validate(self) -> None:
        """Check the format version, required attributes and array shapes."""
        if not (self.path / "zarr.json").is_file():
            raise StoreError(f"{self.path}: not a study store (no zarr.json)")
        try:
            meta = _read_json(self.path / "zarr.json")
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self.path}: unreadable zarr.json ({exc})") from None
        attrs = meta.get("attributes", {}).get(ATTRS_KEY)
        if meta.get("zarr_format") != 3 or meta.get("node_type") != "group" or attrs is None:
            raise StoreError(f"{self.path}: not a perfroi study store (no '{ATTRS_KEY}' attribute)")
        version = attrs.get("format_version")
        if version != FORMAT_VERSION:
            raise StoreError(
                f"{self.path}: unknown format_version {version!r} "
                f"(this version of napari-perfroi reads {FORMAT_VERSION})"
            )
        if not (self.path / "image" / "zarr.json").is_file():
            raise StoreError(f"{self.path}: required array 'image' is missing")
        try:
            _check_attrs(self.path, attrs, self.shape)
            for name in self.arrays():
                if name not in RAW_ARRAYS:
                    self._check_derived(name, _array_meta(self.path / name))
            if self.has("aif_image") or "aif_series" in attrs:
                meta = _array_meta(self.path / "aif_image")
                check_aif_series(self.path, attrs.get("aif_series"), meta.shape, meta.dtype)
        except StoreError:
            raise
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise StoreError(f"{self.path}: malformed store ({type(exc).__name__}: {exc})") from None

    # ---------------------------------------------------------------- metadata
    @property
    def attrs(self) -> dict[str, Any]:
        """The ``perfroi`` attribute (a fresh copy; change it with :meth:`update_attrs`)."""
        return _read_json(self.path / "zarr.json")["attributes"][ATTRS_KEY]

    def update_attrs(self, **changes: Any) -> None:
        """Merge ``changes`` into the ``perfroi`` attribute, atomically."""
        self._require_writable()
        meta = _read_json(self.path / "zarr.json")
        meta["attributes"][ATTRS_KEY].update(changes)
        atomic_write_text(self.path / "zarr.json", json.dumps(meta, indent=2))

    def record_step(self, name: str, parameters: dict[str, Any], version: str) -> None:
        """Record that a step ran, with its parameters, code version and time."""
        steps = self.attrs["steps"]
        steps[name] = {"parameters": parameters, "version": version, "time": _now()}
        self.update_attrs(steps=steps)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return _array_meta(self.path / "image").shape

    @property
    def pixel_spacing_mm(self) -> tuple[float, float]:
        return tuple(self.attrs["pixel_spacing_mm"])

    @property
    def frame_times_s(self) -> np.ndarray:
        return np.asarray(self.attrs["frame_times_s"], dtype=float)

    @property
    def name(self) -> str:
        return self.path.name.removesuffix(".zarr")

    # ---------------------------------------------------------------- arrays
    @property
    def image(self):
        """The raw image as a lazy dask array, one chunk per frame (S, T, Y, X)."""
        import dask.array as da

        return da.from_zarr(self.zarr_array("image"), chunks=(1, 1) + self.shape[2:])

    def zarr_array(self, name: str):
        """The zarr array ``name`` (read-only unless the study is writable)."""
        import zarr

        if not self.has(name):
            raise StoreError(f"{self.path}: array '{name}' is missing")
        mode = "r+" if self.writable and name not in RAW_ARRAYS else "r"
        return zarr.open_array(self.path / name, mode=mode, zarr_format=3)

    def has(self, name: str) -> bool:
        return (self.path / name / "zarr.json").is_file()

    def arrays(self) -> list[str]:
        """Names of the arrays present, ``truth/...`` included."""
        found = []
        for folder, subfolders, files in os.walk(self.path):
            # Staging and retired copies (dot names) may appear and vanish meanwhile.
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            if folder == str(self.path) or "zarr.json" not in files:
                continue
            if _read_json(Path(folder) / "zarr.json").get("node_type") == "array":
                subfolders[:] = []  # chunk folders
                found.append(Path(folder).relative_to(self.path).as_posix())
        return sorted(found)

    def read(self, name: str) -> np.ndarray:
        """Read a whole array into memory."""
        return self.zarr_array(name)[...]

    def write(self, name: str, data: np.ndarray) -> None:
        """Write (or replace) array ``name``; readers never see a partial array.

        Raw inputs (``image``, ``aif_image``) cannot be written: raw
        intensities are never modified.
        """
        self._require_writable()
        if name in RAW_ARRAYS:
            raise StoreError(f"{self.path}: the raw '{name}' is never modified")
        data = np.asarray(data)
        self._check_derived(name, data)
        import zarr

        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not (target.parent / "zarr.json").exists():
            zarr.open_group(target.parent, mode="a", zarr_format=3)
        staging = target.with_name(f"{_STAGING_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}")
        # One chunk: a reader gets the whole old or the whole new array, never a mix.
        chunks = data.shape
        try:
            arr = zarr.create_array(
                zarr.storage.LocalStore(staging), shape=data.shape, dtype=data.dtype,
                chunks=chunks, fill_value=np.nan if data.dtype.kind == "f" else 0,
                zarr_format=3,
            )
            arr[...] = data
            replace_dir(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def remove(self, name: str) -> None:
        """Remove derived array ``name`` if present (readers see it whole or not at all)."""
        self._require_writable()
        if name in RAW_ARRAYS:
            raise StoreError(f"{self.path}: the raw '{name}' is never modified")
        target = self.path / name
        if target.exists():
            _retire(target)

    def _check_derived(self, name: str, data) -> None:
        """Check a derived array's shape and dtype (``data``: an array or its metadata)."""
        leaf = name.split("/")[-1]
        if leaf not in DERIVED_ARRAYS:  # e.g. phantom-only truth arrays
            return
        dtype, axes = DERIVED_ARRAYS[leaf]
        n_s, n_t, n_y, n_x = self.shape
        sizes = {"S": n_s, "T": n_t, "Y": n_y, "X": n_x, "2": 2, "3": 3}
        expected = tuple(sizes[a] for a in axes)
        if data.shape != expected or data.dtype != np.dtype(dtype):
            raise StoreError(
                f"{self.path}: '{name}' must be {dtype} {expected}, got {data.dtype} {data.shape}"
            )

    def _require_writable(self) -> None:
        if not self.writable:
            raise StoreError(f"{self.path}: opened read-only")


@dataclass(frozen=True)
class _ArrayMeta:
    shape: tuple[int, ...]
    dtype: np.dtype


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _array_meta(path: Path) -> _ArrayMeta:
    meta = _read_json(path / "zarr.json")
    return _ArrayMeta(tuple(meta["shape"]), np.dtype(meta["data_type"]))


def is_study_store(path: Path) -> bool:
    """Whether ``path`` is a zarr group that claims to be a study (any format version)."""
    try:
        meta = _read_json(path / "zarr.json")
    except (OSError, ValueError):
        return False
    attributes = meta.get("attributes") if isinstance(meta, dict) else None
    return isinstance(attributes, dict) and ATTRS_KEY in attributes


def _check_attrs(path: Path, attrs: dict[str, Any], shape: tuple[int, ...]) -> None:
    missing = [key for key in REQUIRED_ATTRS if key not in attrs]
    if missing:
        raise StoreError(f"{path}: missing required attribute {', '.join(missing)}")
    n_slices, n_frames = shape[0], shape[1]
    if len(attrs["pixel_spacing_mm"]) != 2 or min(attrs["pixel_spacing_mm"]) <= 0:
        raise StoreError(f"{path}: pixel_spacing_mm must be two positive numbers")
    if np.shape(attrs["frame_times_s"]) != (n_slices, n_frames):
        raise StoreError(f"{path}: frame_times_s does not match image shape {shape}")
    for key in ("slice_levels", "slice_positions_mm", "reference_frame"):
        if len(attrs[key]) != n_slices:
            raise StoreError(f"{path}: {key} must have one entry per slice ({n_slices})")
    bad_levels = set(attrs["slice_levels"]) - set(SLICE_LEVELS)
    if bad_levels:
        raise StoreError(f"{path}: unknown slice level {sorted(bad_levels)}")


def check_aif_series(path: Path, series: Any, shape: tuple[int, ...], dtype) -> None:
    """Check a separate AIF series: ``aif_image`` (T, Ya, Xa) and its attribute.

    ``aif_series`` = {``frame_times_s`` [T] (same clock as ``frame_times_s``),
    ``pixel_spacing_mm`` [row, col], ``slice`` (the image slice it lies in),
    ``origin_px`` [row, col] (where the centre of its pixel (0, 0) falls in
    that slice's pixel coordinates), ``saturation_time_s`` (None if unknown)}.
    """
    if not isinstance(series, dict):
        raise StoreError(f"{path}: aif_image needs an 'aif_series' attribute")
    missing = [k for k in ("frame_times_s", "pixel_spacing_mm", "slice", "origin_px", "saturation_time_s")
               if k not in series]
    if missing:
        raise StoreError(f"{path}: aif_series lacks {', '.join(missing)}")
    if len(shape) != 3 or np.dtype(dtype) not in (np.uint16, np.float32):
        raise StoreError(f"{path}: aif_image must be uint16 or float32 (T, rows, cols), got {dtype} {shape}")
    times = np.asarray(series["frame_times_s"], dtype=float)
    if times.shape != (shape[0],) or np.any(np.diff(times) <= 0):
        raise StoreError(f"{path}: aif_series frame_times_s must be {shape[0]} increasing times")
    if len(series["pixel_spacing_mm"]) != 2 or min(series["pixel_spacing_mm"]) <= 0:
        raise StoreError(f"{path}: aif_series pixel_spacing_mm must be two positive numbers")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one rename: readers see the old or the new file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) in one rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2); False if unsupported."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    result = libc.renameat2(
        _AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE
    )
    return result == 0


def replace_dir(new: Path, target: Path) -> None:
    """Put directory ``new`` at ``target``; atomic where the OS can swap directories."""
    if not target.exists():
        os.rename(new, target)
        return
    if _renameat2_exchange(new, target):
        shutil.rmtree(new)  # ``new`` now holds the old array
        return
    retired = _retire(target, keep=True)
    os.rename(new, target)
    with contextlib.suppress(OSError):
        shutil.rmtree(retired)


def _retire(target: Path, keep: bool = False) -> Path:
    """Move ``target`` out of the way in one rename (readers see it or nothing), then
    delete it unless ``keep``; returns where it went."""
    retired = target.with_name(f"{_RETIRED_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}")
    os.rename(target, retired)
    if not keep:
        shutil.rmtree(retired, ignore_errors=True)
    return retired
