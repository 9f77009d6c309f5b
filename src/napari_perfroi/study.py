"""The study store: one zarr v3 directory per study (format version 2), an OME-Zarr 0.5 image.

Layout and attributes are described in the README ("Study store"). The raw
``image`` is written once at creation and never modified; every other array
is replaced atomically: it is written beside the live one and swapped in, so
a reader sees either the old array or the new one, never a half-written one.

Callers name arrays by their public names (``image``, ``labels``, ``mbf``, ...)
with the public axis order (S, T, Y, X). Format 2 keeps ``image``, ``labels`` and
``mbf`` where OME-Zarr readers look for them (:data:`OME_PLACEMENTS`), ``image``
and ``labels`` time-first on disk (OME-Zarr wants the time axis first); this
module maps the names and axes, without copying. Format 1 stores (every array
at the root, slice-first) are read as they are and migrated to format 2 when
opened for writing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime as _dt
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)  # 1 is read as it is and migrated when opened for writing
OME_VERSION = "0.5"
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
# Group holding the LGE study of the same patient: a store of its own (lge/store.py),
# neither listed nor checked with the perfusion arrays.
LGE_GROUP = "lge"
# Label image under the NGFF ``labels`` group, and what its values mean (colours as the
# napari layer shows them).
LABEL_IMAGE = "segmentation"
LABEL_VALUES = {
    BACKGROUND: ("background", (0, 0, 0, 0)),
    LV_BLOOD: ("LV blood pool", (255, 0, 0, 255)),
    MYOCARDIUM: ("LV myocardium", (255, 255, 0, 255)),
    RV_BLOOD: ("RV blood pool", (65, 105, 225, 255)),
}
# OME-Zarr axis (name, type, unit) of each public axis letter.
OME_AXES = {
    "T": ("t", "time", "second"),
    "S": ("slice", "space", "millimeter"),
    "Y": ("y", "space", "millimeter"),
    "X": ("x", "space", "millimeter"),
}


@dataclass(frozen=True)
class OmePlacement:
    """Where format 2 keeps a public array that is an OME-Zarr image.

    ``group`` is the directory written (and replaced) as a whole with the array,
    "" for the store's root; ``path`` is the array, relative to the store;
    ``disk_axes`` is the on-disk axis order, as letters of the public axes
    (NGFF: time first, the 2-3 space axes last).
    """

    group: str
    path: str
    public_axes: str
    disk_axes: str

    @property
    def order(self) -> tuple[int, ...]:
        """On-disk axis ``m`` is public axis ``order[m]`` (``numpy.transpose`` order)."""
        return tuple(self.public_axes.index(a) for a in self.disk_axes)


OME_PLACEMENTS = {
    "image": OmePlacement("", "0", "STYX", "TSYX"),
    "labels": OmePlacement("labels", f"labels/{LABEL_IMAGE}/0", "STYX", "TSYX"),
    "mbf": OmePlacement("mbf", "mbf/0", "SYX", "SYX"),
}
_PUBLIC_NAME = {placement.path: name for name, placement in OME_PLACEMENTS.items()}


class StoreError(InputError):
    """A study store is missing, malformed, or of an unknown format version."""


class _Replaced(Exception):
    """A file of the store vanished while it was being read."""


def slice_levels_for(n_slices: int) -> list[str]:
    """Level of each slice ordered base -> apex: basal/mid/apical by thirds."""
    return [SLICE_LEVELS[min(2, (3 * i) // n_slices)] for i in range(n_slices)]


def checked_slice_levels(levels: list[str], n_slices: int) -> list[str]:
    """``levels`` (one per slice, base -> apex) if they can be a study's, else InputError."""
    levels = [str(level).strip().lower() for level in levels]
    unknown = [level for level in levels if level not in SLICE_LEVELS]
    if unknown:
        raise InputError(f"unknown slice level {unknown[0]!r}: expected {', '.join(SLICE_LEVELS)}")
    if len(levels) != n_slices:
        raise InputError(f"{len(levels)} slice level(s) given for {n_slices} slice(s)")
    ranks = [SLICE_LEVELS.index(level) for level in levels]
    if ranks != sorted(ranks):
        raise InputError(f"slice levels must run from base to apex, got {', '.join(levels)}")
    return levels


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

            root = zarr.open_group(staging, mode="w", zarr_format=3, attributes={
                "ome": _ome_group_attrs("image", attrs)[""], ATTRS_KEY: attrs,
            })
            _create_disk_array(root, "image", image, chunks=(1, 1) + image.shape[2:])
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
        """Open and validate an existing store; raises :class:`StoreError`.

        A format 1 store opened ``writable`` is first migrated to format 2 (in
        place, atomically, announced with one logged line); opened read-only it
        is read as it is and nothing is written.
        """
        study = cls(Path(path), writable=writable)
        study.validate()
        if writable and study.format_version < FORMAT_VERSION:
            migrate(study.path)
            study.validate()
        return study

    @property
    def format_version(self) -> int:
        return self.attrs["format_version"]

    def validate(self) -> None:
        """Check the format version, required attributes and array shapes."""
        try:
            self._validate(retry=True)
        except _Replaced:  # a file vanished: the store was replaced meanwhile (a migration)
            self._validate(retry=False)

    def _validate(self, retry: bool) -> None:
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
        if type(version) is not int or version not in READABLE_FORMAT_VERSIONS:
            readable = " and ".join(str(v) for v in READABLE_FORMAT_VERSIONS)
            raise StoreError(
                f"{self.path}: unknown format_version {version!r} "
                f"(this version of napari-perfroi reads {readable})"
            )
        if not self.has("image"):
            raise StoreError(f"{self.path}: required array 'image' is missing")
        try:
            _check_attrs(self.path, attrs, self.shape)
            for name in self.arrays():
                if name not in RAW_ARRAYS:
                    self._check_derived(name, self._meta(name))
            if self.has("aif_image") or "aif_series" in attrs:
                meta = self._meta("aif_image")
                check_aif_series(self.path, attrs.get("aif_series"), meta.shape, meta.dtype)
        except StoreError:
            raise
        except (OSError, ValueError, TypeError, KeyError) as exc:
            if retry and isinstance(exc, FileNotFoundError):
                raise _Replaced from None
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
        attrs = meta["attributes"][ATTRS_KEY]
        attrs.update(changes)
        geometry = _OME_GEOMETRY.intersection(changes)
        if geometry and "ome" in meta["attributes"]:
            meta["attributes"]["ome"] = _ome_group_attrs("image", attrs)[""]
        atomic_write_text(self.path / "zarr.json", json.dumps(meta, indent=2))
        if geometry:
            self._refresh_ome_groups(attrs)

    def _refresh_ome_groups(self, attrs: dict[str, Any]) -> None:
        """Rewrite the OME-Zarr scales of the label and map images after a geometry change."""
        for name, placement in OME_PLACEMENTS.items():
            located = self._locate(name)
            if not placement.group or located is None or located[0] != placement.path:
                continue
            for folder, ome in _ome_group_attrs(name, attrs).items():
                file = self.path / placement.group / folder / "zarr.json"
                meta = _read_json(file)
                meta.setdefault("attributes", {})["ome"] = ome
                atomic_write_text(file, json.dumps(meta, indent=2))

    def record_step(self, name: str, parameters: dict[str, Any], version: str) -> None:
        """Record that a step ran, with its parameters, code version and time."""
        steps = self.attrs["steps"]
        steps[name] = {"parameters": parameters, "version": version, "time": _now()}
        self.update_attrs(steps=steps)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self._meta("image").shape

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
        """The zarr array ``name`` (read-only unless the study is writable), public axis order.

        ``image``, ``labels`` and ``mbf`` are always read-only views (:class:`PublicAxesStore`);
        change them with :meth:`write`.
        """
        import zarr

        located = self._locate(name)
        if located is None:
            raise StoreError(f"{self.path}: array '{name}' is missing")
        if name in OME_PLACEMENTS:
            return zarr.open_array(PublicAxesStore.for_array(self.path, name), mode="r",
                                   zarr_format=3)
        mode = "r+" if self.writable and name not in RAW_ARRAYS else "r"
        return zarr.open_array(self.path / name, mode=mode, zarr_format=3)

    def has(self, name: str) -> bool:
        return self._locate(name) is not None

    def _locate(self, name: str) -> tuple[str, tuple[int, ...] | None] | None:
        return locate_array(self.path, name)

    def _meta(self, name: str) -> _ArrayMeta:
        """Shape and dtype of array ``name`` in its public axis order."""
        located, meta = _located_metadata(self.path, name)
        if located is None:
            raise StoreError(f"{self.path}: array '{name}' is missing")
        return _ArrayMeta(_public_shape(tuple(meta["shape"]), located[1]),
                          np.dtype(meta["data_type"]))

    def arrays(self) -> list[str]:
        """Public names of the arrays present, ``truth/...`` included."""
        return sorted(_PUBLIC_NAME.get(path, path)
                      for path in zarr_array_paths(self.path, skip_groups=(LGE_GROUP,)))

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

        if name in OME_PLACEMENTS:
            self._write_ome(name, data)
            return
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

    def _write_ome(self, name: str, data: np.ndarray) -> None:
        """Write an OME-Zarr image array with its group(s), all swapped in at once."""
        import zarr

        placement = OME_PLACEMENTS[name]
        target = self.path / placement.group
        staging = target.with_name(f"{_STAGING_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}")
        try:
            groups = _ome_group_attrs(name, self.attrs)
            for folder in sorted(groups):
                zarr.open_group(staging / folder, mode="w", zarr_format=3,
                                attributes={"ome": groups[folder]})
            parent, leaf = os.path.split(placement.path[len(placement.group) + 1:])
            group = zarr.open_group(staging / parent, mode="r+", zarr_format=3)
            # One chunk: a reader gets the whole old or the whole new array, never a mix.
            _create_disk_array(group, name, data, chunks=data.shape, path=leaf)
            replace_dir(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def remove(self, name: str) -> None:
        """Remove derived array ``name`` if present (readers see it whole or not at all)."""
        self._require_writable()
        if name in RAW_ARRAYS:
            raise StoreError(f"{self.path}: the raw '{name}' is never modified")
        located = self._locate(name)
        if located is None:
            return
        path = located[0]
        placement = OME_PLACEMENTS.get(name)
        target = self.path / (placement.group if placement and path == placement.path else path)
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


def zarr_array_paths(root: Path, skip_groups: tuple[str, ...] = ()) -> list[str]:
    """Paths (relative to ``root``) of the zarr arrays under ``root``, leaving out its
    top-level groups ``skip_groups`` and every dot-named (staging or retired) folder."""
    found = []
    for folder, subfolders, files in os.walk(root):
        # Staging and retired copies (dot names) may appear and vanish meanwhile.
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        if folder == str(root):
            subfolders[:] = [d for d in subfolders if d not in skip_groups]
            continue
        if "zarr.json" not in files:
            continue
        try:
            node_type = _read_json(Path(folder) / "zarr.json").get("node_type")
        except FileNotFoundError:
            continue  # replaced meanwhile
        if node_type == "array":
            subfolders[:] = []  # chunk folders
            found.append(Path(folder).relative_to(root).as_posix())
    return found


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _array_meta(path: Path) -> _ArrayMeta:
    meta = _read_json(path / "zarr.json")
    return _ArrayMeta(tuple(meta["shape"]), np.dtype(meta["data_type"]))


# ---------------------------------------------------------------- OME-Zarr (format 2)
_OME_GEOMETRY = frozenset({"pixel_spacing_mm", "slice_thickness_mm", "slice_positions_mm",
                           "frame_times_s"})


def ome_scale(attrs: dict[str, Any]) -> dict[str, float]:
    """Physical step along each public axis: seconds per frame (``T``, the mean frame
    interval), mm between slices (``S``, the median gap between slice positions, or the
    slice thickness with one slice), mm per row (``Y``) and column (``X``)."""
    times = np.asarray(attrs["frame_times_s"], dtype=float)
    steps = np.diff(times, axis=-1).ravel() if times.ndim == 2 else np.empty(0)
    steps = steps[np.isfinite(steps) & (steps > 0)]
    gaps = np.abs(np.diff(np.asarray(attrs["slice_positions_mm"], dtype=float)))
    gaps = gaps[np.isfinite(gaps) & (gaps > 0)]
    row_mm, col_mm = (_positive_or_one(v) for v in attrs["pixel_spacing_mm"])
    scale = {
        "T": float(steps.mean()) if steps.size else 1.0,
        "S": (float(np.median(gaps)) if gaps.size
              else _positive_or_one(attrs["slice_thickness_mm"])),
        "Y": row_mm,
        "X": col_mm,
    }
    return {axis: round(step, 9) or step for axis, step in scale.items()}  # 0.8, not 0.80..02


def _positive_or_one(value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 1.0
    return value if np.isfinite(value) and value > 0 else 1.0


def _ome_group_attrs(name: str, attrs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``ome`` attribute of each group written with OME-Zarr image ``name``, by folder
    relative to its placement's group ("" for the group itself)."""
    placement = OME_PLACEMENTS[name]
    inside = placement.path[len(placement.group) + 1:] if placement.group else placement.path
    folder, dataset = os.path.split(inside)
    scale = ome_scale(attrs)
    multiscale = {
        "name": LABEL_IMAGE if name == "labels" else name,
        "axes": [dict(zip(("name", "type", "unit"), OME_AXES[a])) for a in placement.disk_axes],
        "datasets": [{
            "path": dataset,
            "coordinateTransformations": [
                {"type": "scale", "scale": [scale[a] for a in placement.disk_axes]},
            ],
        }],
    }
    image = {"version": OME_VERSION, "multiscales": [multiscale]}
    if name != "labels":
        return {folder: image}
    image["image-label"] = {
        "version": OME_VERSION,
        "colors": [{"label-value": value, "rgba": list(rgba)}
                   for value, (_, rgba) in LABEL_VALUES.items()],
        "properties": [{"label-value": value, "name": label}
                       for value, (label, _) in LABEL_VALUES.items()],
        "source": {"image": "../../"},
    }
    return {"": {"version": OME_VERSION, "labels": [LABEL_IMAGE]}, folder: image}


def _inverse(order: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(order))


def _transpose_keeps_bytes(order, shape) -> bool:
    """Whether ``numpy.transpose(a, order)`` of a C-ordered ``a`` of ``shape`` has the same
    bytes (the axes longer than 1 keep their order)."""
    long_axes = [axis for axis in order if shape[axis] > 1]
    return long_axes == sorted(long_axes)


def _public_shape(shape: tuple[int, ...], order: tuple[int, ...] | None) -> tuple[int, ...]:
    if order is None:
        return tuple(shape)
    inverse = _inverse(order)
    return tuple(shape[i] for i in inverse)


def _create_disk_array(group, name: str, data: np.ndarray, *, chunks, path: str | None = None):
    """Create OME-Zarr image array ``name`` in ``group`` on-disk axis order first, from
    public-order ``data`` and ``chunks``; the chunk bytes are those of the public order."""
    from zarr.codecs import TransposeCodec

    placement = OME_PLACEMENTS[name]
    order = placement.order
    filters = [] if _transpose_keeps_bytes(order, chunks) else [
        TransposeCodec(order=_inverse(order))
    ]
    array = group.create_array(
        path or placement.path, shape=tuple(data.shape[i] for i in order), dtype=data.dtype,
        chunks=tuple(chunks[i] for i in order), filters=filters,
        fill_value=np.nan if name != "image" and data.dtype.kind == "f" else 0,
        dimension_names=[OME_AXES[a][0] for a in placement.disk_axes],
    )
    array[...] = np.transpose(data, order)
    return array


def _permuted_codecs(codecs: list[dict], order: tuple[int, ...], shape) -> list[dict]:
    """Codecs that first transpose a chunk of ``shape`` by ``order``, then apply ``codecs``
    (one transpose merged with theirs; none where it would not change the bytes)."""
    codecs = [dict(c) for c in codecs]
    if codecs and codecs[0].get("name") == "transpose":
        order = tuple(order[i] for i in codecs.pop(0)["configuration"]["order"])
    if _transpose_keeps_bytes(order, shape):
        return codecs
    return [{"name": "transpose", "configuration": {"order": list(order)}}] + codecs


def _public_metadata(disk: dict[str, Any], order: tuple[int, ...]) -> dict[str, Any]:
    """The zarr.json of an on-disk array seen in the public axis order (disk axis ``m`` is
    public axis ``order[m]``)."""
    meta = json.loads(json.dumps(disk))
    inverse = _inverse(order)
    grid = meta["chunk_grid"]["configuration"]
    grid["chunk_shape"] = [grid["chunk_shape"][i] for i in inverse]
    meta["shape"] = [meta["shape"][i] for i in inverse]
    if meta.get("dimension_names"):
        meta["dimension_names"] = [meta["dimension_names"][i] for i in inverse]
    meta["codecs"] = _permuted_codecs(meta["codecs"], order, grid["chunk_shape"])
    return meta


def _disk_metadata(public: dict[str, Any], placement: OmePlacement) -> dict[str, Any]:
    """The zarr.json of a public-order array (format 1) in its format 2 on-disk order, with
    the same chunk bytes."""
    meta = json.loads(json.dumps(public))
    order = placement.order
    grid = meta["chunk_grid"]["configuration"]
    grid["chunk_shape"] = [grid["chunk_shape"][i] for i in order]
    meta["shape"] = [meta["shape"][i] for i in order]
    meta["dimension_names"] = [OME_AXES[a][0] for a in placement.disk_axes]
    meta["codecs"] = _permuted_codecs(meta["codecs"], _inverse(order), grid["chunk_shape"])
    return meta


def _chunk_separator(meta: dict[str, Any]) -> str:
    encoding = meta.get("chunk_key_encoding", {"name": "default"})
    if encoding.get("name") != "default":
        raise StoreError(f"unsupported chunk key encoding {encoding}")
    return encoding.get("configuration", {}).get("separator", "/")


def _permute_chunk_key(key: str, order: tuple[int, ...] | None, separator: str) -> str:
    """The key of chunk ``key`` (public grid) in the grid whose axis ``m`` is public
    axis ``order[m]``."""
    prefix = "c" + separator
    if order is None or not key.startswith(prefix):
        return key
    index = key[len(prefix):].split(separator)
    return prefix + separator.join(index[i] for i in order)


def locate_array(root: Path, name: str) -> tuple[str, tuple[int, ...] | None] | None:
    """Where public array ``name`` lives in the store at ``root``: its path relative to
    ``root`` and its on-disk axis order (None: the public order), or None if absent.

    Format 2 placements first, then format 1's (every array at the root under its
    name), so an object opened on a format 1 store still finds its arrays after
    another one migrated the store.
    """
    placement = OME_PLACEMENTS.get(name)
    if placement is not None and (root / placement.path / "zarr.json").is_file():
        return _placed(placement)
    file = root / name / "zarr.json"
    if placement is None:
        return (name, None) if file.is_file() else None
    try:
        if _read_json(file).get("node_type") == "array":  # in format 2 this folder is a group
            return name, None
    except ValueError:
        return name, None  # malformed: reading it will say so
    except OSError:
        pass
    if (root / placement.path / "zarr.json").is_file():
        return _placed(placement)  # migrated between the two looks
    return None


def _located_metadata(root: Path, name: str):
    """:func:`locate_array` and the array's on-disk zarr.json, looked up again once if it
    vanished or became a group in between (the store was migrated); (None, None) if
    absent."""
    for attempt in range(2):
        located = locate_array(root, name)
        if located is None:
            return None, None
        try:
            meta = _read_json(root / located[0] / "zarr.json")
        except FileNotFoundError:
            if attempt:
                raise
            continue
        if meta.get("node_type") == "array" or attempt:
            return located, meta
    raise AssertionError("unreachable")


def _placed(placement: OmePlacement) -> tuple[str, tuple[int, ...] | None]:
    order = placement.order
    return placement.path, (None if order == tuple(range(len(order))) else order)


try:
    from zarr.storage import WrapperStore as _WrapperStore
except ImportError:  # pragma: no cover - zarr>=3 has it
    _WrapperStore = object


class PublicAxesStore(_WrapperStore):
    """A read-only zarr store holding one array of a study, seen in the public axis order.

    Format 2 keeps ``image`` and ``labels`` time-first on disk; through this store they
    are the (S, T, Y, X) arrays of the contract, without copying: chunk keys are
    permuted and the metadata carries the transpose (none when a chunk's bytes do
    not change, e.g. the one-frame chunks of ``image``). A chunk that is not found
    makes it look again where the array lives, so an array opened before the store
    was migrated keeps reading the same values after.
    """

    def __init__(self, store, name: str) -> None:
        super().__init__(store)
        self.name = name
        located, disk = _located_metadata(self.study_path, name)
        if located is None:
            raise StoreError(f"{self.study_path}: array '{name}' is missing")
        self._located = located
        order = located[1]
        self._separator = _chunk_separator(disk)
        public = disk if order is None else _public_metadata(disk, order)
        self._metadata = json.dumps(public).encode()

    @classmethod
    def for_array(cls, study_path: Path, name: str) -> PublicAxesStore:
        from zarr.storage import LocalStore

        return cls(LocalStore(study_path, read_only=True), name)

    def _with_store(self, store) -> PublicAxesStore:
        return type(self)(store, self.name)

    @property
    def study_path(self) -> Path:
        return Path(self._store.root)

    def __eq__(self, other: object) -> bool:
        return (type(self) is type(other) and self.name == other.name
                and self.study_path == other.study_path)

    def __hash__(self) -> int:
        return hash((self.study_path, self.name))

    def __repr__(self) -> str:
        return f"PublicAxesStore({str(self.study_path)!r}, {self.name!r})"

    def __str__(self) -> str:
        return f"{self.study_path}#{self.name}"

    def _disk_key(self, key: str, located) -> str:
        path, order = located
        return f"{path}/{_permute_chunk_key(key, order, self._separator)}"

    def _relocated(self, located) -> bool:
        """Look again where the array lives; True if it moved (e.g. a migration)."""
        now = locate_array(self.study_path, self.name)
        if now is None or now == located:
            return False
        self._located = now
        return True

    async def get(self, key, prototype=None, byte_range=None):
        if prototype is None:
            from zarr.core.buffer import default_buffer_prototype

            prototype = default_buffer_prototype()
        if key == "zarr.json":
            return prototype.buffer.from_bytes(self._metadata)
        located = self._located
        buffer = await self._store.get(self._disk_key(key, located), prototype, byte_range)
        if buffer is None and self._relocated(located):
            buffer = await self._store.get(self._disk_key(key, self._located), prototype,
                                           byte_range)
        return buffer

    async def get_partial_values(self, prototype, key_ranges):
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    async def exists(self, key: str) -> bool:
        if key == "zarr.json":
            return True
        return await self._store.exists(self._disk_key(key, self._located))

    @property
    def read_only(self) -> bool:
        return True

    @property
    def supports_writes(self) -> bool:
        return False

    @property
    def supports_deletes(self) -> bool:
        return False

    @property
    def supports_listing(self) -> bool:
        return False

    def _refuse(self, *_args, **_kwargs):
        raise StoreError(f"{self.study_path}: '{self.name}' is read-only here "
                         "(write it with Study.write)")

    set = set_if_not_exists = delete = delete_dir = clear = _set_many = _refuse
    list = list_prefix = list_dir = _refuse


def migrate(path: str | os.PathLike) -> None:
    """Migrate the format 1 store at ``path`` to format 2, atomically, and say so (one
    logged line).

    The format 2 layout is built beside the store from hard links to its files
    (copies where a link is not possible) and swapped in: chunk files are renamed,
    never rewritten, so every array keeps its data byte for byte.
    """
    path = Path(path)
    with _exclusive(path / "zarr.json"):
        # Read under the lock: another process may have migrated the store meanwhile.
        meta = _read_json(path / "zarr.json")
        version = meta["attributes"][ATTRS_KEY].get("format_version")
        if version == FORMAT_VERSION:
            return
        if version != 1:
            raise StoreError(f"{path}: format_version {version!r} is not 1")
        _migrate_format1(path, meta)
    logger.warning("migrated %s from format 1 to %d", path, FORMAT_VERSION)


@contextlib.contextmanager
def _exclusive(file: Path):
    """Hold an exclusive lock on ``file`` (where the OS has flock; released on exit or
    crash). The lock is on the file itself, so a process that waited for it sees the
    store that replaced it when it reads ``file`` again."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(file, "rb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def _migrate_format1(path: Path, meta: dict[str, Any]) -> None:
    attrs = meta["attributes"][ATTRS_KEY]
    moved = {}  # public name -> (format 1 zarr.json, chunk key separator)
    for name in OME_PLACEMENTS:
        if locate_array(path, name) == (name, None):
            public = _read_json(path / name / "zarr.json")
            moved[name] = (public, _chunk_separator(public))
    attrs = {**attrs, "format_version": FORMAT_VERSION}
    meta["attributes"] = {**meta["attributes"], "ome": _ome_group_attrs("image", attrs)[""],
                          ATTRS_KEY: attrs}
    staging = path.with_name(f"{_STAGING_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")
    made = set()
    try:
        for folder, subfolders, files in os.walk(path):
            subfolders[:] = [d for d in subfolders if not d.startswith(".")]
            relative = Path(folder).relative_to(path)
            for file in files:
                if file.startswith("."):
                    continue
                new = _migrated_path((relative / file).as_posix(), moved)
                if new is not None:
                    target = staging / new
                    if target.parent not in made:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        made.add(target.parent)
                    _link_or_copy(Path(folder) / file, target)
        _write_json(staging / "zarr.json", meta)
        for name, (public, _) in moved.items():
            placement = OME_PLACEMENTS[name]
            for folder, ome in _ome_group_attrs(name, attrs).items():
                if placement.group or folder:  # the root's was written above
                    _write_json(staging / placement.group / folder / "zarr.json",
                                {"zarr_format": 3, "node_type": "group",
                                 "attributes": {"ome": ome}})
            _write_json(staging / placement.path / "zarr.json",
                        _disk_metadata(public, placement))
        replace_dir(staging, path)
    except OSError as exc:
        raise StoreError(f"{path}: cannot migrate from format 1 to {FORMAT_VERSION} "
                         f"({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _migrated_path(relative: str, moved: dict[str, tuple[dict, str]]) -> str | None:
    """Where file ``relative`` of a format 1 store goes in format 2 (None: rewritten)."""
    if relative == "zarr.json":
        return None
    name, _, rest = relative.partition("/")
    if name not in moved or not rest:
        return relative
    if rest == "zarr.json":
        return None
    placement = OME_PLACEMENTS[name]
    return f"{placement.path}/{_permute_chunk_key(rest, placement.order, moved[name][1])}"


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2))


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
    if not _positive_numbers(attrs["pixel_spacing_mm"], 2):
        raise StoreError(f"{path}: pixel_spacing_mm must be two finite positive numbers")
    if not _positive_numbers([attrs["slice_thickness_mm"]], 1):
        raise StoreError(f"{path}: slice_thickness_mm must be a finite positive number")
    if np.shape(attrs["frame_times_s"]) != (n_slices, n_frames):
        raise StoreError(f"{path}: frame_times_s does not match image shape {shape}")
    for key in ("frame_times_s", "slice_positions_mm"):
        if not np.all(np.isfinite(np.asarray(attrs[key], dtype=float))):
            raise StoreError(f"{path}: {key} must be finite numbers")
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
    if not _positive_numbers(series["pixel_spacing_mm"], 2):
        raise StoreError(
            f"{path}: aif_series pixel_spacing_mm must be two finite positive numbers"
        )


def _positive_numbers(values: Any, count: int) -> bool:
    """Whether ``values`` are ``count`` finite numbers above zero."""
    try:
        numbers = np.asarray(values, dtype=float)
    except (ValueError, TypeError):
        return False
    return numbers.shape == (count,) and bool(np.all(np.isfinite(numbers) & (numbers > 0)))


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
