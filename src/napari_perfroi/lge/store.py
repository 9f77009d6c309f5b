"""The LGE study of a patient: the group ``lge`` inside the perfusion study store.

One late gadolinium enhancement stack (single phase, short-axis slices ordered
base -> apex, magnitude or PSIR) and what is derived from it, kept beside the
perfusion study of the same patient so that both are analysed and reported
together. The perfusion store neither lists nor checks this group.

Layout (zarr v3)
    ``lge/zarr.json``   group; its attribute ``perfroi_lge`` holds the attributes
                        below (a key of its own, so the group is never taken for a
                        perfusion study)
    ``lge/image``       raw intensities (S, Y, X), uint16 or float32 (PSIR values are
                        signed), one chunk per slice, written once, never modified
    ``lge/<name>``      derived arrays (:data:`DERIVED_ARRAYS`), one chunk each

Derived arrays are written beside the live one and swapped in with one rename
(``study.replace_dir``), so a reader sees the whole old array or the whole new
one; a write killed half-way leaves the old array and a dot-named staging
folder that nothing reads and the next write does not trip over.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..study import (
    _STAGING_PREFIX,
    LGE_GROUP,
    SLICE_LEVELS,
    StoreError,
    Study,
    _now,
    _retire,
    atomic_write_text,
    is_study_store,
    replace_dir,
    zarr_array_paths,
)

FORMAT_VERSION = 1
ATTRS_KEY = "perfroi_lge"
LGE_KINDS = ("magnitude", "psir")
REQUIRED_ATTRS = (
    "format_version",
    "pixel_spacing_mm",
    "slice_thickness_mm",
    "slice_positions_mm",
    "image_orientation_patient",
    "image_position_patient",
    "inversion_time_ms",
    "lge_kind",
    "slice_levels",
    "perfusion_slice",
    "slice_has_scar",
    "source",
    "steps",
)
# Values of the scar array.
NO_SCAR, SCAR, MVO = 0, 1, 2  # MVO: microvascular obstruction (inside the scar)
# Arrays a step may write: dtype, the axes they share with image, and the largest value
# they may hold (None: any).
DERIVED_ARRAYS = {
    "labels": ("uint8", "SYX", 3),  # study.BACKGROUND .. study.RV_BLOOD
    "labels_edited": ("uint8", "S", 1),  # 1: the slice's labels were edited by hand
    "scar": ("uint8", "SYX", MVO),
    "scar_edited": ("uint8", "S", 1),
    "scar_probability": ("float32", "SYX", None),
    "aha": ("uint8", "SYX", 16),  # AHA segment 1-16 in the myocardium, 0 elsewhere
}
RAW_IMAGE = "image"


def _store_path(study_or_path: Study | str | os.PathLike) -> Path:
    return study_or_path.path if isinstance(study_or_path, Study) else Path(study_or_path)


def has_lge(study_or_path: Study | str | os.PathLike) -> bool:
    """Whether the perfusion study store holds an LGE study."""
    return (_store_path(study_or_path) / LGE_GROUP / "zarr.json").is_file()


def refuse_existing_lge(study_or_path: Study | str | os.PathLike, *, overwrite: bool) -> None:
    """Raise :class:`StoreError` when the store already has an LGE study and ``overwrite``
    is off."""
    if has_lge(study_or_path) and not overwrite:
        raise StoreError(
            f"{_store_path(study_or_path)}: already has an LGE study (use overwrite to replace it)"
        )


@dataclass
class LgeStudy:
    """The LGE study of a perfusion store. Create with :meth:`create`, open with :meth:`open`."""

    study_path: Path  # the perfusion study store
    writable: bool

    @property
    def path(self) -> Path:
        """The ``lge`` group."""
        return self.study_path / LGE_GROUP

    # ---------------------------------------------------------------- create / open
    @classmethod
    def create(
        cls,
        study: Study | str | os.PathLike,
        image: np.ndarray,
        attrs: dict[str, Any],
        *,
        overwrite: bool = False,
    ) -> LgeStudy:
        """Write the LGE study of perfusion store ``study`` with its raw ``image`` (S, Y, X).

        ``attrs`` holds every key of :data:`REQUIRED_ATTRS` but ``format_version``
        and ``steps`` (set here); ``slice_has_scar`` may be left out (unknown for
        every slice). ``perfusion_slice`` gives, for each LGE slice, the perfusion
        slice at its position (None: none). The group is built in a staging folder
        and swapped in whole; with ``overwrite`` it replaces the LGE study there.
        """
        study_path = _store_path(study)
        if isinstance(study, Study) and not study.writable:
            raise StoreError(f"{study_path}: opened read-only")
        if not is_study_store(study_path):
            raise StoreError(f"{study_path}: not a study store")
        image = np.asarray(image)
        if image.ndim != 3 or min(image.shape) < 1:
            raise StoreError(
                f"{study_path}: LGE image must be (slices, rows, cols), got {image.shape}"
            )
        if image.dtype not in (np.uint16, np.float32):
            raise StoreError(
                f"{study_path}: LGE image dtype must be uint16 or float32, got {image.dtype}"
            )
        refuse_existing_lge(study_path, overwrite=overwrite)
        attrs = {
            "slice_has_scar": [None] * image.shape[0],
            **attrs,
            "format_version": FORMAT_VERSION,
            "steps": {},
        }
        _check_attrs(study_path, attrs, image.shape[0], _perfusion_slices(study_path))
        target = study_path / LGE_GROUP
        staging = target.with_name(f"{_STAGING_PREFIX}{LGE_GROUP}-{uuid.uuid4().hex[:8]}")
        try:
            import zarr

            group = zarr.open_group(staging, mode="w", zarr_format=3,
                                    attributes={ATTRS_KEY: _jsonable(attrs)})
            group.create_array(RAW_IMAGE, shape=image.shape, dtype=image.dtype,
                               chunks=(1,) + image.shape[1:], fill_value=0)[...] = image
            replace_dir(staging, target)  # an LGE study there stays whole until the swap
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return cls(study_path, writable=True)

    @classmethod
    def open(cls, study_or_path: Study | str | os.PathLike, *, writable: bool = False) -> LgeStudy:
        """Open and check the LGE study of a perfusion store; raises :class:`StoreError`."""
        study_path = _store_path(study_or_path)
        if not is_study_store(study_path):
            raise StoreError(f"{study_path}: not a study store")
        if not has_lge(study_path):
            raise StoreError(f"{study_path}: has no LGE study")
        lge = cls(study_path, writable=writable)
        lge.validate()
        return lge

    def validate(self) -> None:
        """Check the format version, the attributes and the shapes of the arrays."""
        try:
            meta = _read_json(self.path / "zarr.json")
            attrs = meta.get("attributes", {}).get(ATTRS_KEY)
            if attrs is None:
                raise StoreError(f"{self.path}: not an LGE study (no '{ATTRS_KEY}' attribute)")
            if attrs.get("format_version") != FORMAT_VERSION:
                raise StoreError(
                    f"{self.path}: unknown LGE format_version {attrs.get('format_version')!r} "
                    f"(this version of napari-perfroi reads {FORMAT_VERSION})"
                )
            if not self.has(RAW_IMAGE):
                raise StoreError(f"{self.path}: required array 'image' is missing")
            _check_attrs(self.path, attrs, self.shape[0], _perfusion_slices(self.study_path))
            for name in self.arrays():
                if name != RAW_IMAGE:
                    self._check_derived(name, *_array_meta(self.path / name))
        except StoreError:
            raise
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StoreError(
                f"{self.path}: malformed LGE study ({type(exc).__name__}: {exc})"
            ) from None

    # ---------------------------------------------------------------- metadata
    @property
    def attrs(self) -> dict[str, Any]:
        """The LGE attributes (a fresh copy; change them with :meth:`update_attrs`)."""
        return _read_json(self.path / "zarr.json")["attributes"][ATTRS_KEY]

    def update_attrs(self, **changes: Any) -> None:
        """Merge ``changes`` into the attributes, checked, in one atomic write.

        E.g. ``update_attrs(slice_has_scar=[True, None, False])``: the weak labels a
        user sets, one per slice (true, false, or None for unknown).
        """
        self._require_writable()
        meta = _read_json(self.path / "zarr.json")
        attrs = {**meta["attributes"][ATTRS_KEY], **_jsonable(changes)}
        _check_attrs(self.path, attrs, self.shape[0], _perfusion_slices(self.study_path))
        meta["attributes"][ATTRS_KEY] = attrs
        atomic_write_text(self.path / "zarr.json", json.dumps(meta, indent=2))

    def record_step(self, name: str, parameters: dict[str, Any], version: str) -> None:
        """Record that a step ran, with its parameters, code version and time."""
        steps = self.attrs["steps"]
        steps[name] = {"parameters": parameters, "version": version, "time": _now()}
        self.update_attrs(steps=steps)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(slices, rows, cols) of the image."""
        return _array_meta(self.path / RAW_IMAGE)[0]

    @property
    def pixel_spacing_mm(self) -> tuple[float, float]:
        return tuple(self.attrs["pixel_spacing_mm"])

    # ---------------------------------------------------------------- arrays
    def has(self, name: str) -> bool:
        return (self.path / name / "zarr.json").is_file()

    def arrays(self) -> list[str]:
        """Names of the arrays present (``image`` included)."""
        return sorted(zarr_array_paths(self.path))

    def zarr_array(self, name: str):
        """The zarr array ``name``, read-only (change arrays with :meth:`write`)."""
        import zarr

        if not self.has(name):
            raise StoreError(f"{self.path}: array '{name}' is missing")
        return zarr.open_array(self.path / name, mode="r", zarr_format=3)

    def read(self, name: str) -> np.ndarray:
        """Read a whole array into memory."""
        return self.zarr_array(name)[...]

    def write(self, name: str, data: np.ndarray) -> None:
        """Write (or replace) derived array ``name``; readers never see a partial array.

        The raw ``image`` cannot be written: raw intensities are never modified.
        """
        self._require_writable()
        if name == RAW_IMAGE:
            raise StoreError(f"{self.path}: the raw 'image' is never modified")
        data = np.asarray(data)
        self._check_derived(name, data.shape, data.dtype)
        self._check_values(name, data)
        import zarr

        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not (target.parent / "zarr.json").exists():
            zarr.open_group(target.parent, mode="a", zarr_format=3)
        staging = target.with_name(f"{_STAGING_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}")
        try:
            # One chunk: a reader gets the whole old or the whole new array, never a mix.
            array = zarr.create_array(
                zarr.storage.LocalStore(staging), shape=data.shape, dtype=data.dtype,
                chunks=data.shape, fill_value=np.nan if data.dtype.kind == "f" else 0,
                zarr_format=3,
            )
            array[...] = data
            replace_dir(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def remove(self, name: str) -> None:
        """Remove derived array ``name`` if present (readers see it whole or not at all)."""
        self._require_writable()
        if name == RAW_IMAGE:
            raise StoreError(f"{self.path}: the raw 'image' is never modified")
        if self.has(name):
            _retire(self.path / name)

    def _check_derived(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        """Check a derived array's shape and dtype (names not in the schema, e.g. a
        phantom's truth, are free; ``truth/scar`` is checked as ``scar``)."""
        leaf = name.split("/")[-1]
        if leaf not in DERIVED_ARRAYS:
            return
        expected_dtype, axes, _ = DERIVED_ARRAYS[leaf]
        sizes = dict(zip("SYX", self.shape))
        expected = tuple(sizes[a] for a in axes)
        if tuple(shape) != expected or dtype != np.dtype(expected_dtype):
            raise StoreError(
                f"{self.path}: '{name}' must be {expected_dtype} {expected}, "
                f"got {dtype} {tuple(shape)}"
            )

    def _check_values(self, name: str, data: np.ndarray) -> None:
        largest = DERIVED_ARRAYS.get(name.split("/")[-1], (None, None, None))[2]
        if largest is not None and data.size and int(data.max()) > largest:
            raise StoreError(
                f"{self.path}: '{name}' holds the value {int(data.max())}; at most {largest}"
            )

    def _require_writable(self) -> None:
        if not self.writable:
            raise StoreError(f"{self.path}: opened read-only")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _array_meta(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    meta = _read_json(path / "zarr.json")
    return tuple(meta["shape"]), np.dtype(meta["data_type"])


def _perfusion_slices(study_path: Path) -> int:
    """Number of slices of the perfusion study (its image's shape, read as the Study does)."""
    return Study(study_path, writable=False).shape[0]


def _check_attrs(path: Path, attrs: dict[str, Any], n_slices: int, n_perfusion: int) -> None:
    missing = [key for key in REQUIRED_ATTRS if key not in attrs]
    if missing:
        raise StoreError(f"{path}: LGE study lacks attribute {', '.join(missing)}")
    if not _finite(attrs["pixel_spacing_mm"], (2,), positive=True):
        raise StoreError(f"{path}: pixel_spacing_mm must be two finite positive numbers")
    if not _finite([attrs["slice_thickness_mm"]], (1,), positive=True):
        raise StoreError(f"{path}: slice_thickness_mm must be a finite positive number")
    if not _finite(attrs["slice_positions_mm"], (n_slices,)):
        raise StoreError(f"{path}: slice_positions_mm must be {n_slices} finite numbers")
    geometry = (("image_orientation_patient", (6,)), ("image_position_patient", (n_slices, 3)))
    for key, shape in geometry:
        if attrs[key] is not None and not _finite(attrs[key], shape):
            raise StoreError(f"{path}: {key} must be None or {shape} finite numbers")
    inversion = attrs["inversion_time_ms"]
    if inversion is not None and not _finite([inversion], (1,)):
        raise StoreError(f"{path}: inversion_time_ms must be None or a finite number")
    if attrs["lge_kind"] not in LGE_KINDS:
        raise StoreError(
            f"{path}: lge_kind must be one of {', '.join(LGE_KINDS)}, got {attrs['lge_kind']!r}"
        )
    levels = attrs["slice_levels"]
    if (not isinstance(levels, list) or len(levels) != n_slices
            or any(level not in SLICE_LEVELS for level in levels)):
        raise StoreError(f"{path}: slice_levels must be {n_slices} of {', '.join(SLICE_LEVELS)}")
    ranks = [SLICE_LEVELS.index(level) for level in levels]
    if ranks != sorted(ranks):
        raise StoreError(
            f"{path}: slice_levels must run from base to apex, got {', '.join(levels)}"
        )
    mapping = attrs["perfusion_slice"]
    if (not isinstance(mapping, list) or len(mapping) != n_slices
            or any(s is not None and not (_is_int(s) and 0 <= s < n_perfusion) for s in mapping)):
        raise StoreError(
            f"{path}: perfusion_slice must give each of the {n_slices} LGE slices a perfusion "
            f"slice (0-{n_perfusion - 1}) or None"
        )
    has_scar = attrs["slice_has_scar"]
    if (not isinstance(has_scar, list) or len(has_scar) != n_slices
            or any(v not in (True, False, None) or _is_int(v) for v in has_scar)):
        raise StoreError(f"{path}: slice_has_scar must be {n_slices} of true, false or None")
    if not isinstance(attrs["source"], dict) or not isinstance(attrs["steps"], dict):
        raise StoreError(f"{path}: source and steps must be mappings")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _finite(values: Any, shape: tuple[int, ...], positive: bool = False) -> bool:
    try:
        numbers = np.asarray(values, dtype=float)
    except (ValueError, TypeError):
        return False
    ok = numbers.shape == shape and bool(np.all(np.isfinite(numbers)))
    return ok and (not positive or bool(np.all(numbers > 0)))


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into JSON types."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
