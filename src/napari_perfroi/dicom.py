"""Scanner DICOM -> study: scan headers, group frames into slices, order them, read pixels.

SRC is a folder (searched recursively), a ``.zip`` file, or one DICOM file (an
enhanced multi-frame file holds a whole series). File names and file order are
never used: everything comes from the headers.

Files
    A file without the ``DICM`` marker is not DICOM and is ignored silently
    (README, .DS_Store, ``__MACOSX`` debris), as is a DICOM object that is not
    an image (DICOMDIR, reports). An image file whose header or pixel data is
    cut short or unparsable -- a value that is not a number, not finite, or
    not a transfer syntax; more than 10,000 frames or more pixel data than an
    element holds (4 GiB), refused before anything is read or allocated; a zip
    member that is encrypted, damaged or compressed with an unsupported
    method -- is skipped with a warning and counted; the import goes on if the
    remaining files form a consistent series. Symbolic links in a folder are
    not followed; zip members are read from the archive, never extracted.

Frames
    A classic file is one frame. An enhanced multi-frame file (Enhanced MR) is
    one frame per item of its per-frame functional groups: position from
    PlanePositionSequence, time from FrameContentSequence
    (FrameAcquisitionDateTime, else FrameReferenceDateTime), rescale from
    PixelValueTransformationSequence, trigger delay from
    CardiacSynchronizationSequence; per-frame items win over shared ones, and
    top-level attributes are the last fallback.

Slices
    A frame's position is ImagePositionPatient projected on the slice normal
    (row x column direction of ImageOrientationPatient); SliceLocation is used
    only when a frame lacks those. Positions closer than 0.1 x SliceThickness
    are one slice. Frames of one slice may come from several series (one
    series per slice is allowed), but two series may not share a slice.

Time order (one clock for the whole series, so slice offsets are kept)
    1. Acquisition time -- FrameAcquisitionDateTime, AcquisitionDateTime, or
       AcquisitionDate + AcquisitionTime -- when every frame has one and no
       two frames of a slice share it. It is the scanner's real clock; the date
       carries a series across midnight (without a date, a span over 12 h is
       read as a midnight crossing, as a perfusion series lasts minutes).
    2. Else TriggerTime (NominalCardiacTriggerDelayTime in enhanced files)
       when distinct within each slice: some vendors (Philips) write the
       acquisition time of the series start on every frame and a cumulative
       TriggerTime. On others TriggerTime is the delay after each R wave, which
       is no clock at all: it is read as such when it spans less than
       (T - 1) x 0.3 s (heart rate 200/min) over the T frames of a slice, and
       otherwise, when InstanceNumber orders a slice differently, the order is
       ambiguous and the import stops.
    3. Else InstanceNumber (then the frame index within a file) orders each
       slice, and frame t is at t x NominalInterval (or FrameTime, or
       RRIntervalTimeNominal; the median over frames) in every slice, with a
       warning (the beat-to-beat variation of the times is lost).
    Otherwise the import stops with an error naming the missing tags. Frame
    times are seconds from the earliest frame of the study, rounded to 1 us.

Base -> apex
    With ImageOrientationPatient, the apex lies towards the patient's left,
    anterior, inferior: d = (+1, -1, -1) / sqrt(3) in DICOM's LPS axes. Slices
    go base -> apex in increasing position along the normal n when n . d > 0,
    in decreasing position otherwise. With SliceLocation only, the direction
    of the normal is unknown: slices go in increasing SliceLocation, with a
    warning. Slice positions are rounded to 1 nm (float noise of the dot
    product).

Saturation time
    InversionTime (ms), where several vendors put the saturation-recovery
    delay, when every frame of a series has the same one; unknown otherwise.

Separate AIF series (dual-sequence acquisitions)
    When SRC holds several series and one of them has "AIF" in its
    SeriesDescription (any case) -- or, failing that, one single-slice series
    has a pixel spacing at least 1.5 x the finest one -- that series is the
    AIF image and the other series form the main series, checked as above.
    The AIF series must have one slice, the main series' ImageOrientationPatient
    and number of dynamics, and be timed by the same clock: frame times of
    both series count from the earliest frame of either. It is placed in the
    main slice nearest along the normal, at the pixel coordinates of that
    slice where the centre of its first pixel falls.

Pixel values
    Raw stored values after RescaleSlope / RescaleIntercept: uint16 when every
    frame is unsigned, at most 16 bits, with slope 1 and intercept 0, float32
    real values otherwise, as for Float Pixel Data and Double Float Pixel Data
    (the dtype is known from the headers alone, so the lazy array and the
    import agree).

References
    The UIDs of the study, its frame of reference, each slice's series and each
    frame's instance are kept in the ``source_instances`` attribute, so results
    exported as DICOM (segmentations, parametric maps) reference the images
    they were made from.

Errors (:class:`DicomError`, one line naming SRC and the files, series or tags)
    missing SRC, empty folder, no DICOM files, no readable image; several
    StudyInstanceUIDs; a repeated SOPInstanceUID; two images of one slice with
    the same time and InstanceNumber; missing PixelSpacing, SliceThickness or
    position tags; a PixelSpacing or SliceThickness that is not positive; an
    ImageOrientationPatient that is not two perpendicular unit vectors;
    matrix size, PixelSpacing, SliceThickness or
    ImageOrientationPatient that differ between files; two series at one
    slice position; slices with different frame counts; no usable clock;
    several AIF-like series; an AIF series with several slices, without
    patient geometry, or with another orientation, number of dynamics or
    clock than the main series.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import statistics
import struct
import sys
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .errors import InputError
from .study import StoreError, Study, slice_levels_for

APEX_DIRECTION_LPS = np.array([1.0, -1.0, -1.0]) / np.sqrt(3.0)
SLICE_TOLERANCE = 0.1  # fraction of the slice thickness within which positions are one slice
_ORIENTATION_TOLERANCE = 1e-3
_ORTHONORMAL_TOLERANCE = 1e-2  # of the dot products of ImageOrientationPatient's vectors
_SPACING_TOLERANCE_MM = 1e-4
_POSITION_DECIMALS = 6  # mm
_ORIGIN_DECIMALS = 6  # pixels
_TIME_DECIMALS = 6  # s
_SATURATION_DECIMALS = 9  # s
_SHORTEST_RR_S = 0.3  # heart rate 200/min
_AIF_SPACING_RATIO = 1.5  # a single-slice series this much coarser than the finest is the AIF
_TRIGGER_CLOCK = "TriggerTime"
_INSTANCE_CLOCK = "InstanceNumber x nominal interval"
_NO_DATE = _dt.date(1900, 1, 1)  # stands in for a missing AcquisitionDate
# Pixel Data, Float Pixel Data, Double Float Pixel Data
_PIXEL_DATA_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_ITEM_TAG = (0xFFFE, 0xE000)
_SEQUENCE_END_TAG = (0xFFFE, 0xE0DD)
_UNDEFINED_LENGTH = 0xFFFFFFFF
_MAX_NAMED = 3  # files named in one message
_MAX_FRAMES = 10_000  # frames of one file
_MAX_PIXEL_BITS = 8 * 2**32  # the most one (native) Pixel Data element holds


class DicomError(InputError):
    """A DICOM source cannot be imported as one perfusion series."""


class _Unreadable(Exception):
    """A DICOM image file whose header or pixel data cannot be read (it is skipped)."""


def _warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass(frozen=True)
class FrameRef:
    """Where one frame's pixels are: a file (or a zip member) and the frame index in it."""

    path: str
    member: str | None
    frame: int

    def __str__(self) -> str:
        return self.path if self.member is None else f"{self.path}:{self.member}"


@dataclass(frozen=True)
class _FileInfo:
    """What the header of one file says about the whole file."""

    name: str  # relative to SRC, for messages
    study_uid: str
    series_uid: str
    series_label: str
    description: str  # SeriesDescription
    sop_uid: str
    sop_class: str
    sop_class_uid: str
    frame_of_reference_uid: str
    multiframe: bool  # an enhanced file: frames are referenced by number
    modality: str
    manufacturer: str
    image_type: tuple[str, ...] = ()  # ImageType values, upper case


@dataclass(eq=False)
class _Frame:
    """What the headers say about one frame."""

    ref: FrameRef
    file: _FileInfo
    rows: int
    cols: int
    unsigned16: bool
    spacing: tuple[float, float] | None
    thickness: float | None
    orientation: tuple[float, ...] | None
    position: tuple[float, float, float] | None
    slice_location: float | None
    acquired: _dt.datetime | None
    acquired_tag: str | None
    trigger_s: float | None
    interval_s: float | None
    instance: int | None
    slope: float
    intercept: float
    inversion_s: float | None
    location_mm: float = 0.0  # position along the normal (or SliceLocation)

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def order_key(self) -> tuple[int, int] | None:
        return None if self.instance is None else (self.instance, self.ref.frame)


@dataclass
class DicomSeries:
    """A scanned series: geometry, order and times of every frame; pixels read on demand."""

    src: Path
    shape: tuple[int, int, int, int]
    dtype: np.dtype
    frames: list[list[FrameRef]]  # [S][T]
    rescale: list[list[tuple[float, float]]]  # [S][T] (slope, intercept)
    pixel_spacing_mm: tuple[float, float]
    slice_thickness_mm: float
    frame_times_s: list[list[float]]  # [S][T], from the study's first frame
    slice_positions_mm: list[float]  # [S], along the normal (or SliceLocation)
    slice_levels: list[str]
    image_orientation_patient: list[float] | None
    image_position_patient: list[list[float]] | None  # [S][3], first frame of each slice
    source: dict[str, Any]
    skipped: list[str] = field(default_factory=list)  # unreadable files: "name (reason)"
    saturation_time_s: float | None = None  # from InversionTime
    aif: DicomSeries | None = None  # the separate AIF series (one slice), if any
    aif_series: dict[str, Any] | None = None  # its store attribute (see study.check_aif_series)
    source_instances: dict[str, Any] | None = None  # the store attribute (_source_instances)

    @property
    def skipped_files(self) -> int:
        return len(self.skipped)

    def read_frame(
        self, s: int, t: int, archive: zipfile.ZipFile | None = None
    ) -> np.ndarray:
        """Pixels of frame ``t`` of slice ``s`` (Y, X), rescaled, in :attr:`dtype`.

        ``archive``, when given, is the already open zip the frame is a member of.
        """
        ref = self.frames[s][t]
        slope, intercept = self.rescale[s][t]
        stored = _read_pixels(ref, archive)
        if stored.shape != self.shape[2:]:
            raise DicomError(f"{ref}: frame is {stored.shape}, expected {self.shape[2:]}")
        if self.dtype == np.uint16:
            return stored.astype(np.uint16)
        return (stored.astype(np.float64) * slope + intercept).astype(np.float32)

    def to_dask(self):
        """A lazy (S, T, Y, X) array, one frame per chunk; pixels are read when computed."""
        import dask.array as da

        n_slices, n_frames, n_rows, n_cols = self.shape

        def load(block_id=None):
            s, t = block_id[:2]
            return self.read_frame(s, t)[None, None]

        return da.map_blocks(
            load,
            chunks=((1,) * n_slices, (1,) * n_frames, (n_rows,), (n_cols,)),
            dtype=self.dtype,
            meta=np.empty((0, 0, 0, 0), dtype=self.dtype),
        )


# ---------------------------------------------------------------- public API
def scan_series(
    src: str | os.PathLike, *, warn: Callable[[str], None] = _warn_stderr
) -> DicomSeries:
    """Read the headers under ``src`` and work out slices, frame order and times.

    A separate AIF series, when there is one, is set aside in :attr:`DicomSeries.aif`.
    Raises :class:`DicomError` (one line naming ``src`` and the files or tags
    involved) when the files do not form one consistent series.
    """
    src = Path(src)
    frames, skipped = scan_frames(src, warn=warn)
    main_frames, aif_frames = _split_aif(src, frames)
    series = _build_series(src, main_frames, skipped, warn, frames)
    if aif_frames:
        aif = _build_series(src, aif_frames, skipped, warn, frames)
        _attach_aif(src, series, aif, aif_frames[0].file.series_label)
    return series


def scan_frames(
    src: str | os.PathLike, *, warn: Callable[[str], None] = _warn_stderr
) -> tuple[list[_Frame], list[str]]:
    """The headers of every frame of the readable DICOM images under ``src`` (one study,
    each instance once), and the unreadable files skipped, as "name (reason)" (warned).

    A frame has ``ref``, ``file`` (``series_uid``, ``series_label``, ``description``,
    ``image_type``, ``study_uid``, ``frame_of_reference_uid``, ``name``), ``position``,
    ``orientation``, ``thickness`` and ``intercept``; :func:`build_series` makes a series
    of frames chosen among them.
    """
    src = Path(src)
    frames, skipped = _scan_frames(src)
    if not frames:
        raise DicomError(f"{src}: no readable DICOM images (skipped {_names(skipped)})")
    if skipped:
        warn(f"{src}: {_skipped_note(skipped)}")
    _check_one_study(src, frames)
    _check_unique_instances(src, frames)
    return frames, skipped


def build_series(
    src: str | os.PathLike,
    frames: list[_Frame],
    skipped: list[str],
    *,
    warn: Callable[[str], None] = _warn_stderr,
) -> DicomSeries:
    """One series of ``frames`` from :func:`scan_frames` (all of them: no AIF series is
    set aside), checked, grouped into slices and ordered as :func:`scan_series` does."""
    return _build_series(Path(src), frames, skipped, warn, frames)


def import_dicom(
    src: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    warn: Callable[[str], None] = _warn_stderr,
) -> Study:
    """Import the DICOM series at ``src`` into a new study store at ``dest``.

    Pixels are stored exactly as the scanner stored them (after rescale). A
    separate AIF series goes into ``aif_image`` and ``aif_series``.
    A failure leaves no store behind.
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:  # fail before reading every file
        raise StoreError(f"{dest}: already exists (use overwrite to replace it)")
    series = scan_series(src, warn=warn)
    parts = [series] if series.aif is None else [series, series.aif]
    images = [np.empty(part.shape, dtype=part.dtype) for part in parts]
    total = sum(part.shape[0] * part.shape[1] for part in parts)
    done = 0
    with _opened_archive(series.frames[0][0]) as archive:  # one zip open for every frame
        for part, image in zip(parts, images):
            for s, t in np.ndindex(part.shape[:2]):
                image[s, t] = part.read_frame(s, t, archive)
                done += 1
                if progress is not None:
                    progress(done, total)
    extra = {}
    if series.image_orientation_patient is not None:
        extra["image_orientation_patient"] = series.image_orientation_patient
        extra["image_position_patient"] = series.image_position_patient
    if series.saturation_time_s is not None:
        extra["saturation_time_s"] = series.saturation_time_s
    extra["source_instances"] = series.source_instances
    return Study.create(
        dest,
        images[0],
        pixel_spacing_mm=series.pixel_spacing_mm,
        slice_thickness_mm=series.slice_thickness_mm,
        frame_times_s=series.frame_times_s,
        slice_positions_mm=series.slice_positions_mm,
        source=series.source,
        slice_levels=series.slice_levels,
        extra_attrs=extra,
        aif_image=images[1][0] if series.aif is not None else None,
        aif_series=series.aif_series,
        overwrite=overwrite,
    )


# ---------------------------------------------------------------- files
def _scan_frames(src: Path) -> tuple[list[_Frame], list[str]]:
    """Frames of every readable DICOM image under ``src``, and the skipped files."""
    frames: list[_Frame] = []
    skipped: list[str] = []
    n_files = 0
    with _opened_source(src) as (archive, files), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about odd values; _Unreadable says enough
        for name, ref, size in files:
            n_files += 1
            try:
                with _open_ref(ref, archive) as fh:
                    frames.extend(_read_file(fh, ref, name, size))
            except _Unreadable as exc:
                skipped.append(f"{name} ({exc})")
    if n_files == 0:
        raise DicomError(f"{src}: folder is empty")
    if not frames and not skipped:
        raise DicomError(f"{src}: no DICOM files ({n_files} file(s) looked at)")
    return frames, skipped


@contextlib.contextmanager
def _opened_source(
    src: Path,
) -> Iterator[tuple[zipfile.ZipFile | None, list[tuple[str, FrameRef, int]]]]:
    """The open zip (None for a folder or a single file) and the (name, reference of
    frame 0, size in bytes) of every file in it (a zip member's size is its
    uncompressed size, from the directory). Zip members are read in memory, never
    extracted, so their names cannot place anything outside."""
    if not src.exists():
        raise DicomError(f"{src}: no such file or folder")
    if src.is_dir():
        yield None, [
            (p.relative_to(src).as_posix(), FrameRef(str(p), None, 0), p.stat().st_size)
            for p in _files_under(src)
        ]
    elif zipfile.is_zipfile(src):
        try:
            with zipfile.ZipFile(src) as archive:
                members = sorted(
                    (i for i in archive.infolist() if not i.is_dir()), key=lambda i: i.filename
                )
                yield archive, [
                    (i.filename, FrameRef(str(src), i.filename, 0), i.file_size) for i in members
                ]
        except zipfile.BadZipFile as exc:
            raise DicomError(f"{src}: unreadable zip file ({exc})") from None
    else:
        yield None, [(src.name, FrameRef(str(src), None, 0), src.stat().st_size)]


def _files_under(folder: Path) -> list[Path]:
    """Regular files under ``folder``, searched recursively. Symbolic links, to files or
    folders, are not followed, so nothing outside ``folder`` is read."""
    found = []
    for root, _, names in os.walk(folder):
        paths = (Path(root) / name for name in names)
        found.extend(p for p in paths if not p.is_symlink() and p.is_file())
    return sorted(found)


@contextlib.contextmanager
def _opened_archive(ref: FrameRef) -> Iterator[zipfile.ZipFile | None]:
    """The zip that ``ref`` is a member of, open; None for a plain file."""
    if ref.member is None:
        yield None
    else:
        with zipfile.ZipFile(ref.path) as archive:
            yield archive


@contextlib.contextmanager
def _open_ref(ref: FrameRef, archive: zipfile.ZipFile | None = None) -> Iterator[BinaryIO]:
    """The file that holds ``ref``, open for reading. A zip member that cannot be read
    (compression method not supported, encrypted, damaged) raises _Unreadable."""
    if ref.member is None:
        with open(ref.path, "rb") as fh:
            yield fh
        return
    with contextlib.ExitStack() as stack:
        if archive is None:
            archive = stack.enter_context(_opened_archive(ref))
        try:
            fh = stack.enter_context(archive.open(ref.member))
        except (NotImplementedError, RuntimeError, zipfile.BadZipFile) as exc:
            raise _Unreadable(f"unreadable zip member: {_one_line(exc)}") from None
        try:
            yield fh
        except (zlib.error, zipfile.BadZipFile, EOFError) as exc:
            raise _Unreadable(f"damaged zip member: {_one_line(exc)}") from None


def read_header(ref: FrameRef):
    """The header (pixel data left out) of the file that holds frame ``ref``."""
    import pydicom

    with _open_ref(ref) as fh:
        return pydicom.dcmread(fh, stop_before_pixels=True)


def _read_pixels(ref: FrameRef, archive: zipfile.ZipFile | None = None) -> np.ndarray:
    """Stored pixel values of one frame, as decoded by pydicom (no rescale)."""
    from pydicom.pixels import pixel_array

    try:
        with _open_ref(ref, archive) as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(pixel_array(fh, index=ref.frame))
    except Exception as exc:  # any decoder failure is a bad file, named in one line
        raise DicomError(
            f"{ref}: cannot read pixel data of frame {ref.frame} ({_one_line(exc)})"
        ) from None


# ---------------------------------------------------------------- headers
def _read_file(fh: BinaryIO, ref: FrameRef, name: str, size: int) -> list[_Frame]:
    """Frames of one file of ``size`` bytes; [] for non-DICOM and non-image files;
    raises _Unreadable."""
    import pydicom

    if fh.read(132)[128:132] != b"DICM":
        return []
    fh.seek(0)
    try:
        ds = pydicom.dcmread(fh, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for a damaged header
        raise _Unreadable(f"unreadable header: {_one_line(exc)}") from None
    if _is_known_non_image(ds.file_meta.get("MediaStorageSOPClassUID") or ds.get("SOPClassUID")):
        return []
    if "Rows" not in ds or "Columns" not in ds:
        raise _Unreadable("truncated header")
    try:  # every value below comes from the header and may be anything
        _check_layout(ds)
        problem = _pixel_data_problem(fh, ds, size)
        if problem:
            raise _Unreadable(problem)
        _check_decodable(ds)
        return _frames_of(ds, ref, name)
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        raise _Unreadable(f"malformed header: {_one_line(exc)}") from None


def _check_layout(ds) -> None:
    """Refuse a transfer syntax, matrix or frame count that no image can have, before
    anything is sized from them."""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if not syntax or not syntax.is_transfer_syntax:
        raise _Unreadable(f"TransferSyntaxUID {str(syntax or '')!r} is not a transfer syntax")
    rows, cols, n_frames = int(ds.Rows), int(ds.Columns), int(ds.get("NumberOfFrames") or 1)
    bits = int(ds.get("BitsAllocated") or 16)
    if min(rows, cols, n_frames, bits) < 1 or n_frames > _MAX_FRAMES:
        raise _Unreadable(f"declares {n_frames} frame(s) of {rows}x{cols} pixels of {bits} bits")
    if rows * cols * n_frames * bits > _MAX_PIXEL_BITS:
        raise _Unreadable(
            f"declares {n_frames} frame(s) of {rows}x{cols} pixels of {bits} bits, more "
            "than pixel data can hold (4 GiB)"
        )


def _is_known_non_image(sop_class) -> bool:
    """A registered SOP class that is not an image (DICOMDIR, reports, presentation states)."""
    if sop_class is None:
        return False
    name = sop_class.name
    return name != str(sop_class) and "Image Storage" not in name


def _pixel_data_problem(fh: BinaryIO, ds, size: int) -> str | None:
    """Why the pixel data after the header is unusable (truncated, absent), or None.

    ``fh`` is positioned at the pixel data element (pydicom stops before it) of
    a file of ``size`` bytes (given, as seeking to the end of a compressed zip
    member would decompress all of it). Only element and item headers are
    read: the pixel values themselves are not.
    """
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax.is_deflated:
        return None  # the file position means nothing in a deflated stream
    endian = "<" if syntax.is_little_endian else ">"
    head = fh.read(4)
    if len(head) < 4:
        return "truncated: no pixel data"
    if struct.unpack(endian + "HH", head) not in _PIXEL_DATA_TAGS:
        return "no pixel data"
    if syntax.is_implicit_VR:
        raw_length = fh.read(4)
    else:
        raw_length = fh.read(8)[4:]  # VR (2) + reserved (2) + length (4)
    if len(raw_length) < 4:
        return "truncated pixel data"
    length = struct.unpack(endian + "I", raw_length)[0]
    n_frames = int(ds.get("NumberOfFrames") or 1)
    if length == _UNDEFINED_LENGTH:
        return _encapsulated_problem(fh, size, n_frames)
    if fh.tell() + length > size:
        return "truncated pixel data"
    bits = int(ds.get("BitsAllocated") or 16)
    expected = ds.Rows * ds.Columns * int(ds.get("SamplesPerPixel") or 1) * n_frames * bits
    if length * 8 < expected:
        return f"pixel data holds {length} bytes, {(expected + 7) // 8} expected"
    return None


def _encapsulated_problem(fh: BinaryIO, size: int, n_frames: int) -> str | None:
    """Walk the item headers of compressed pixel data up to the sequence delimiter."""
    n_items = 0
    while True:
        head = fh.read(8)
        if len(head) < 8:
            return "truncated pixel data"
        group, element, length = struct.unpack("<HHI", head)
        if (group, element) == _SEQUENCE_END_TAG:
            break
        if (group, element) != _ITEM_TAG or fh.tell() + length > size:
            return "truncated pixel data"
        fh.seek(length, os.SEEK_CUR)
        n_items += 1
    if n_items - 1 < n_frames:  # the first item is the offset table; a frame is >= 1 fragment
        return f"pixel data holds {max(n_items - 1, 0)} fragment(s) for {n_frames} frame(s)"
    return None


def _check_decodable(ds) -> None:
    from pydicom.pixels import get_decoder

    syntax = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise _Unreadable(f"unsupported transfer syntax {syntax}") from None
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies)
        raise _Unreadable(f"no decoder for {syntax.name} (needs one of: {needs})")
    if int(ds.get("SamplesPerPixel") or 1) != 1:
        raise _Unreadable(f"colour images are not supported (SamplesPerPixel {ds.SamplesPerPixel})")


def _frames_of(ds, ref: FrameRef, name: str) -> list[_Frame]:
    """One _Frame per frame of the file, from per-frame, shared and top-level attributes."""
    sop_class = ds.get("SOPClassUID")
    info = _FileInfo(
        name=name,
        study_uid=str(ds.get("StudyInstanceUID", "")),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        series_label=f"series {ds.get('SeriesNumber', '?')} '{ds.get('SeriesDescription', '')}'",
        description=str(ds.get("SeriesDescription", "")),
        sop_uid=str(ds.get("SOPInstanceUID", "")),
        sop_class="" if sop_class is None else sop_class.name,
        sop_class_uid=str(sop_class or ""),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
        multiframe="NumberOfFrames" in ds,
        modality=str(ds.get("Modality", "")),
        manufacturer=str(ds.get("Manufacturer", "")),
        image_type=_upper_values(ds.get("ImageType")),
    )
    unsigned16 = int(ds.get("PixelRepresentation") or 0) == 0 and int(ds.BitsAllocated) <= 16
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared_items = ds.get("SharedFunctionalGroupsSequence") or []
    shared = shared_items[0] if shared_items else None
    frames = []
    for index in range(int(ds.get("NumberOfFrames") or 1)):
        own = per_frame[index] if index < len(per_frame) else None
        measures = _macro("PixelMeasuresSequence", own, shared)
        cardiac = _macro("CardiacSynchronizationSequence", own, shared)
        transform = _macro("PixelValueTransformationSequence", own, shared)
        orientation = _value(
            "ImageOrientationPatient", _macro("PlaneOrientationSequence", own, shared), ds
        )
        position = _value("ImagePositionPatient", _macro("PlanePositionSequence", own, shared), ds)
        acquired, acquired_tag = _acquisition_time(_macro("FrameContentSequence", own, shared), ds)
        trigger_ms = _first_present(
            _value("NominalCardiacTriggerDelayTime", cardiac), _value("TriggerTime", ds)
        )
        inversion_ms = _value("InversionTime", ds)
        interval_ms = _first_present(
            _value("RRIntervalTimeNominal", cardiac),
            _value("NominalInterval", ds),
            _value("FrameTime", ds),
        )
        frames.append(
            _Frame(
                ref=FrameRef(ref.path, ref.member, index),
                file=info,
                rows=int(ds.Rows),
                cols=int(ds.Columns),
                unsigned16=unsigned16,
                spacing=_floats(_value("PixelSpacing", measures, ds), 2, "PixelSpacing"),
                thickness=_float(_value("SliceThickness", measures, ds), "SliceThickness"),
                orientation=_floats(orientation, 6, "ImageOrientationPatient"),
                position=_floats(position, 3, "ImagePositionPatient"),
                slice_location=_float(_value("SliceLocation", ds), "SliceLocation"),
                acquired=acquired,
                acquired_tag=acquired_tag,
                trigger_s=_seconds(trigger_ms, "TriggerTime"),
                interval_s=_seconds(interval_ms, "NominalInterval"),
                instance=None if _value("InstanceNumber", ds) is None else int(ds.InstanceNumber),
                slope=_float(_first_present(_value("RescaleSlope", transform, ds), 1.0),
                             "RescaleSlope"),
                intercept=_float(_first_present(_value("RescaleIntercept", transform, ds), 0.0),
                                 "RescaleIntercept"),
                inversion_s=(
                    None if inversion_ms is None
                    else round(_seconds(inversion_ms, "InversionTime"), _SATURATION_DECIMALS)
                ),
            )
        )
    return frames


def _upper_values(value) -> tuple[str, ...]:
    """The values of a (possibly single-valued) code string, upper case."""
    if value is None:
        return ()
    values = [value] if isinstance(value, str) else list(value)
    return tuple(str(v).strip().upper() for v in values)


def _float(value, keyword: str) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(f"{keyword} is {number}")
    return number


def _seconds(milliseconds, keyword: str) -> float | None:
    return None if milliseconds is None else _float(milliseconds, keyword) / 1000.0


def _floats(values, count: int, keyword: str) -> tuple[float, ...] | None:
    if values is None:
        return None
    if len(values) != count:
        raise ValueError(f"{keyword} has {len(values)} values, {count} expected")
    return tuple(_float(v, keyword) for v in values)


def _first_present(*values):
    return next((v for v in values if v is not None), None)


def _macro(sequence: str, *groups):
    """First item of functional group macro ``sequence``: per-frame first, then shared."""
    for group in groups:
        if group is not None and group.get(sequence):
            return group.get(sequence)[0]
    return None


def _value(keyword: str, *datasets):
    """Value of ``keyword`` in the first dataset that has a non-empty one."""
    for dataset in datasets:
        if dataset is None:
            continue
        value = dataset.get(keyword)
        if value is not None and not _is_empty(value):
            return value
    return None


def _is_empty(value) -> bool:
    try:
        return len(value) == 0
    except TypeError:  # numbers have no length
        return False


def _acquisition_time(content, ds) -> tuple[_dt.datetime | None, str | None]:
    from pydicom.valuerep import DA, DT, TM

    for keyword, dataset in (
        ("FrameAcquisitionDateTime", content),
        ("FrameReferenceDateTime", content),
        ("AcquisitionDateTime", ds),
    ):
        value = _value(keyword, dataset)
        if value:
            return DT(str(value)).replace(tzinfo=None), keyword
    time = _value("AcquisitionTime", ds)
    if not time:
        return None, None
    date = _value("AcquisitionDate", ds)
    day = DA(str(date)) if date else _NO_DATE
    keyword = "AcquisitionDate/AcquisitionTime" if date else "AcquisitionTime"
    return _dt.datetime.combine(day, TM(str(time))), keyword


# ---------------------------------------------------------------- series
def _build_series(
    src: Path,
    frames: list[_Frame],
    skipped: list[str],
    warn: Callable[[str], None],
    study_frames: list[_Frame],
) -> DicomSeries:
    """One series from its ``frames``; times count from the earliest of ``study_frames``."""
    _check_required_tags(src, frames)
    _check_geometry(src, frames)
    orientation, location_tag = _set_locations(src, frames)
    slices = _group_slices(frames, frames[0].thickness)
    _check_series_overlap(src, slices)
    _check_duplicates(src, slices)
    _check_frame_counts(src, slices, skipped)
    slices = _order_base_to_apex(src, slices, orientation, warn)
    times, clock = _order_in_time(src, slices, study_frames, warn)
    first = frames[0]
    as_uint16 = all(f.unsigned16 and f.slope == 1.0 and f.intercept == 0.0 for f in frames)
    # + 0.0 turns a rounded -0.0 into 0.0
    slice_positions = [
        round(statistics.median(f.location_mm for f in s), _POSITION_DECIMALS) + 0.0 for s in slices
    ]
    first_positions = None
    if orientation is not None:
        first_positions = [list(s[0].position) for s in slices]
    return DicomSeries(
        src=src,
        shape=(len(slices), len(slices[0]), first.rows, first.cols),
        dtype=np.dtype(np.uint16 if as_uint16 else np.float32),
        frames=[[f.ref for f in s] for s in slices],
        rescale=[[(f.slope, f.intercept) for f in s] for s in slices],
        pixel_spacing_mm=first.spacing,
        slice_thickness_mm=first.thickness,
        frame_times_s=times,
        slice_positions_mm=slice_positions,
        slice_levels=slice_levels_for(len(slices)),
        image_orientation_patient=None if orientation is None else [float(v) for v in orientation],
        image_position_patient=first_positions,
        source=_describe(study_frames, skipped, clock, location_tag),
        skipped=skipped,
        saturation_time_s=_saturation_time(frames),
        source_instances=_source_instances(slices),
    )


def _source_instances(slices: list[list[_Frame]]) -> dict[str, Any]:
    """The ``source_instances`` store attribute: where each frame [S][T] came from.

    ``study_instance_uid``, ``frame_of_reference_uid`` (None unless every file has
    the same one), per slice ``series_instance_uid`` and ``sop_class_uid``, per
    frame ``sop_instance_uid``, and ``frame_number`` [S][T] (1-based) when the
    frames come from enhanced multi-frame files (None otherwise). DICOM results
    (segmentations, parametric maps) reference the images through these.
    """
    frames_of_reference = {f.file.frame_of_reference_uid for s in slices for f in s}
    multiframe = any(f.file.multiframe for s in slices for f in s)
    return {
        "study_instance_uid": slices[0][0].file.study_uid,
        "frame_of_reference_uid": (frames_of_reference.pop()
                                   if len(frames_of_reference) == 1 else None) or None,
        "series_instance_uid": [s[0].file.series_uid for s in slices],
        "sop_class_uid": [s[0].file.sop_class_uid for s in slices],
        "sop_instance_uid": [[f.file.sop_uid for f in s] for s in slices],
        "frame_number": [[f.ref.frame + 1 for f in s] for s in slices] if multiframe else None,
    }


def _saturation_time(frames: list[_Frame]) -> float | None:
    """The InversionTime (s) shared by every frame; None if absent or not shared."""
    values = {f.inversion_s for f in frames}
    return values.pop() if len(values) == 1 else None


def _split_aif(src: Path, frames: list[_Frame]) -> tuple[list[_Frame], list[_Frame]]:
    """(main frames, frames of the separate AIF series, [] when there is none)."""
    by_series: dict[str, list[_Frame]] = {}
    for f in frames:
        by_series.setdefault(f.file.series_uid, []).append(f)
    if len(by_series) < 2:
        return frames, []
    aif_like = [uid for uid, fs in by_series.items() if "aif" in fs[0].file.description.lower()]
    if not aif_like:
        aif_like = _coarse_single_slice_series(by_series)
    if len(aif_like) > 1:
        labels = sorted(by_series[uid][0].file.series_label for uid in aif_like)
        raise DicomError(
            f"{src}: {len(aif_like)} AIF-like series ({', '.join(labels)}); keep one AIF series"
        )
    if not aif_like:
        return frames, []
    return [f for f in frames if f.file.series_uid != aif_like[0]], by_series[aif_like[0]]


def _coarse_single_slice_series(by_series: dict[str, list[_Frame]]) -> list[str]:
    """Single-slice series with a pixel spacing much coarser than the finest series'."""
    spacing = {uid: float(np.mean(fs[0].spacing)) for uid, fs in by_series.items()
               if fs[0].spacing is not None}
    if not spacing:
        return []
    finest = min(spacing.values())
    return [uid for uid, value in spacing.items()
            if value >= _AIF_SPACING_RATIO * finest and _is_single_slice(by_series[uid])]


def _is_single_slice(frames: list[_Frame]) -> bool:
    """Whether every frame lies at one position along the normal (or one SliceLocation)."""
    if all(f.position is not None and f.orientation is not None for f in frames):
        normal = slice_normal(frames[0].orientation)
        locations = [float(np.dot(f.position, normal)) for f in frames]
    elif all(f.slice_location is not None for f in frames):
        locations = [f.slice_location for f in frames]
    else:
        return False
    return max(locations) - min(locations) <= SLICE_TOLERANCE * (frames[0].thickness or 0.0)


def _attach_aif(src: Path, main: DicomSeries, aif: DicomSeries, label: str) -> None:
    """Check the AIF series against the main one and place it in the nearest main slice."""
    if aif.shape[0] != 1:
        raise DicomError(
            f"{src}: AIF series {label} has {aif.shape[0]} slice positions, one expected"
        )
    if main.image_orientation_patient is None or aif.image_orientation_patient is None:
        raise DicomError(
            f"{src}: AIF series {label} cannot be placed: both series need "
            "ImagePositionPatient/ImageOrientationPatient"
        )
    orientation = np.asarray(main.image_orientation_patient)
    if not np.allclose(aif.image_orientation_patient, orientation, atol=_ORIENTATION_TOLERANCE):
        raise DicomError(
            f"{src}: AIF series {label} has ImageOrientationPatient "
            f"{_fmt(aif.image_orientation_patient)} but the main series has {_fmt(orientation)}"
        )
    if aif.shape[1] != main.shape[1]:
        note = f"; {_skipped_note(main.skipped)}" if main.skipped else ""
        raise DicomError(
            f"{src}: AIF series {label} has {aif.shape[1]} dynamics but the main series has "
            f"{main.shape[1]}{note}"
        )
    clocks = (main.source["time_source"], aif.source["time_source"])
    if len({_clock_kind(clock) for clock in clocks}) > 1:
        raise DicomError(
            f"{src}: AIF series {label} is timed by {clocks[1]} but the main series by "
            f"{clocks[0]}; no common clock"
        )
    position = np.asarray(aif.image_position_patient[0])
    location = float(np.dot(position, slice_normal(orientation)))
    nearest = int(np.argmin(np.abs(np.asarray(main.slice_positions_mm) - location)))
    offset = position - np.asarray(main.image_position_patient[nearest])
    row_spacing, col_spacing = main.pixel_spacing_mm
    origin = (
        np.dot(offset, orientation[3:]) / row_spacing,  # along the column direction
        np.dot(offset, orientation[:3]) / col_spacing,
    )
    main.aif = aif
    main.aif_series = {
        "frame_times_s": aif.frame_times_s[0],
        "pixel_spacing_mm": list(aif.pixel_spacing_mm),
        "slice": nearest,
        "origin_px": [round(float(v), _ORIGIN_DECIMALS) + 0.0 for v in origin],
        "saturation_time_s": aif.saturation_time_s,
    }
    main.source["aif_series"] = label


def _clock_kind(clock: str) -> str:
    """Acquisition-time tags all read the scanner's clock; the other clocks are their own."""
    return clock if clock in (_TRIGGER_CLOCK, _INSTANCE_CLOCK) else "acquisition time"


def _check_one_study(src: Path, frames: list[_Frame]) -> None:
    files_of_study: dict[str, set[str]] = {}
    for f in frames:
        files_of_study.setdefault(f.file.study_uid, set()).add(f.name)
    if len(files_of_study) > 1:
        studies = [
            f"{uid} ({len(names)} file(s), e.g. {min(names)})"
            for uid, names in sorted(files_of_study.items())
        ]
        raise DicomError(
            f"{src}: files from {len(studies)} studies: StudyInstanceUID {'; '.join(studies)}; "
            "import one study at a time"
        )


def _check_unique_instances(src: Path, frames: list[_Frame]) -> None:
    first_file: dict[str, str] = {}
    for f in frames:
        if f.ref.frame or not f.file.sop_uid:
            continue
        other = first_file.setdefault(f.file.sop_uid, f.name)
        if other != f.name:
            raise DicomError(
                f"{src}: duplicate instance: {other} and {f.name} have the same "
                f"SOPInstanceUID {f.file.sop_uid}"
            )


def _check_required_tags(src: Path, frames: list[_Frame]) -> None:
    for f in frames:
        missing = [tag for tag, value in (
            ("PixelSpacing", f.spacing),
            ("SliceThickness", f.thickness),
        ) if value is None]
        if f.slice_location is None and (f.position is None or f.orientation is None):
            missing.append("ImagePositionPatient/ImageOrientationPatient (or SliceLocation)")
        if missing:
            where = src if src.is_file() else f"{src}: {f.name}"
            raise DicomError(f"{where}: missing {', '.join(missing)}")
        if f.thickness <= 0:
            raise DicomError(f"{src}: {f.name}: SliceThickness must be positive, got {f.thickness}")
        if min(f.spacing) <= 0:
            raise DicomError(
                f"{src}: {f.name}: PixelSpacing must be positive, got {_fmt(f.spacing)}"
            )
        if f.orientation is not None and not _orthonormal(f.orientation):
            raise DicomError(
                f"{src}: {f.name}: ImageOrientationPatient {_fmt(f.orientation)} is not two "
                "perpendicular unit vectors"
            )


def _orthonormal(orientation) -> bool:
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    products = [row @ row, col @ col, row @ col]
    return np.allclose(products, [1.0, 1.0, 0.0], atol=_ORTHONORMAL_TOLERANCE)


def _check_geometry(src: Path, frames: list[_Frame]) -> None:
    """Matrix size, pixel spacing, thickness and orientation must agree across frames."""
    first = frames[0]
    for f in frames:
        if (f.rows, f.cols) != (first.rows, first.cols):
            raise DicomError(
                f"{src}: inconsistent matrix size: {first.name} ({first.file.series_label}) is "
                f"{first.rows}x{first.cols} but {f.name} ({f.file.series_label}) is "
                f"{f.rows}x{f.cols}"
            )
        if not np.allclose(f.spacing, first.spacing, rtol=0, atol=_SPACING_TOLERANCE_MM):
            raise DicomError(
                f"{src}: inconsistent PixelSpacing: {first.name} has {_fmt(first.spacing)} "
                f"but {f.name} has {_fmt(f.spacing)}"
            )
        if abs(f.thickness - first.thickness) > _SPACING_TOLERANCE_MM:
            raise DicomError(
                f"{src}: inconsistent SliceThickness: {first.name} has {first.thickness:g} "
                f"but {f.name} has {f.thickness:g}"
            )
        if (f.orientation is None) != (first.orientation is None) or (
            f.orientation is not None
            and not np.allclose(f.orientation, first.orientation, atol=_ORIENTATION_TOLERANCE)
        ):
            raise DicomError(
                f"{src}: inconsistent ImageOrientationPatient: {first.name} has "
                f"{_fmt(first.orientation)} but {f.name} has {_fmt(f.orientation)}"
            )


def _set_locations(src: Path, frames: list[_Frame]) -> tuple[np.ndarray | None, str]:
    """Set each frame's position along the slice normal; return (orientation, tag used)."""
    orientation = frames[0].orientation
    if orientation is not None and all(f.position is not None for f in frames):
        normal = slice_normal(orientation)
        for f in frames:
            f.location_mm = float(np.dot(f.position, normal))
        return np.asarray(orientation), "ImagePositionPatient"
    if all(f.slice_location is not None for f in frames):
        for f in frames:
            f.location_mm = f.slice_location
        return None, "SliceLocation"
    lacking = [f.name for f in frames if f.position is None or f.orientation is None]
    raise DicomError(
        f"{src}: some files have only SliceLocation, others only ImagePositionPatient: "
        f"ImagePositionPatient/ImageOrientationPatient missing in {_names(lacking)}"
    )


def slice_normal(orientation) -> np.ndarray:
    """Unit normal (row x column) of an ImageOrientationPatient (6 direction cosines)."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, col)
    return normal / np.linalg.norm(normal)


def _group_slices(frames: list[_Frame], thickness: float) -> list[list[_Frame]]:
    """Frames grouped by position along the normal, within 0.1 x slice thickness."""
    tolerance = SLICE_TOLERANCE * thickness
    by_location = sorted(frames, key=lambda f: f.location_mm)
    slices = [[by_location[0]]]
    for f in by_location[1:]:
        if f.location_mm - slices[-1][-1].location_mm > tolerance:
            slices.append([])
        slices[-1].append(f)
    return slices


def _check_series_overlap(src: Path, slices: list[list[_Frame]]) -> None:
    for frames_of_slice in slices:
        series = {}
        for f in frames_of_slice:
            series.setdefault(f.file.series_uid, f.file.series_label)
        if len(series) > 1:
            labels = [f"{label} ({uid})" for uid, label in series.items()]
            raise DicomError(
                f"{src}: {len(series)} series overlap at slice position "
                f"{_mm(frames_of_slice[0].location_mm)}: {', '.join(labels)}; "
                "keep one series per slice position"
            )


def _check_duplicates(src: Path, slices: list[list[_Frame]]) -> None:
    """Two images of one slice with the same time and the same InstanceNumber."""
    for frames_of_slice in slices:
        seen: dict[tuple, _Frame] = {}
        for f in frames_of_slice:
            if f.acquired is None and f.trigger_s is None:
                continue  # no time to compare: ordering reports the missing tags
            key = (f.acquired, f.trigger_s, f.order_key)
            other = seen.setdefault(key, f)
            if other is not f:
                raise DicomError(
                    f"{src}: two images at the same position and time: {other.name} and "
                    f"{f.name} (slice {_mm(f.location_mm)}, {_describe_time(f)})"
                )


def _skipped_note(skipped: list[str]) -> str:
    return f"skipped {len(skipped)} unreadable file(s): {_names(skipped)}"


def _check_frame_counts(src: Path, slices: list[list[_Frame]], skipped: list[str]) -> None:
    counts = [len(s) for s in slices]
    if len(set(counts)) > 1:
        detail = ", ".join(f"{_mm(s[0].location_mm)}: {len(s)}" for s in slices)
        note = f"; {_skipped_note(skipped)}" if skipped else ""
        raise DicomError(f"{src}: slices have different frame counts ({detail}){note}")


def _order_base_to_apex(
    src: Path, slices: list[list[_Frame]], orientation, warn: Callable[[str], None]
) -> list[list[_Frame]]:
    if len(slices) == 1:
        return slices
    if orientation is None:
        warn(
            f"{src}: no ImageOrientationPatient/ImagePositionPatient, so the apex direction is "
            "unknown: slices ordered by increasing SliceLocation"
        )
        return slices
    towards_apex = float(np.dot(slice_normal(orientation), APEX_DIRECTION_LPS))
    if abs(towards_apex) < _ORIENTATION_TOLERANCE:
        warn(
            f"{src}: the slice normal is perpendicular to the apex direction (left, anterior, "
            "inferior): slices ordered by increasing position along the normal"
        )
    return slices if towards_apex >= 0 else slices[::-1]


def _order_in_time(
    src: Path,
    slices: list[list[_Frame]],
    study_frames: list[_Frame],
    warn: Callable[[str], None],
) -> tuple[list[list[float]], str]:
    """Sort each slice by time (in place); return frame times [S][T] in s, from the
    earliest of ``study_frames`` on the same clock, and the clock used."""
    frames = [f for s in slices for f in s]
    if _usable_clock(slices, lambda f: f.acquired):
        timed = [f for f in study_frames if f.acquired is not None]
        _unwrap_midnight(timed)
        start = min(f.acquired for f in timed)
        for s in slices:
            s.sort(key=lambda f: f.acquired)
        times = [[(f.acquired - start).total_seconds() for f in s] for s in slices]
        clock = "/".join(sorted({f.acquired_tag for f in frames}))
    elif not (trigger_problem := _trigger_problem(slices)):
        _check_trigger_agrees_with_instances(src, slices)
        start = min(f.trigger_s for f in study_frames if f.trigger_s is not None)
        for s in slices:
            s.sort(key=lambda f: f.trigger_s)
        times = [[f.trigger_s - start for f in s] for s in slices]
        clock = _TRIGGER_CLOCK
    else:
        interval = _nominal_interval(src, slices, trigger_problem)
        for s in slices:
            s.sort(key=lambda f: f.order_key)
        times = [[t * interval for t in range(len(s))] for s in slices]
        clock = _INSTANCE_CLOCK
        warn(
            f"{src}: no usable acquisition time and {trigger_problem}: frames ordered by "
            f"InstanceNumber, {interval:g} s apart (nominal interval); beat-to-beat "
            "variation of the frame times is lost"
        )
    return [[round(t, _TIME_DECIMALS) for t in s] for s in times], clock


def _usable_clock(slices: list[list[_Frame]], value_of) -> bool:
    """True when every frame has a value and no two frames of a slice share one."""
    for frames_of_slice in slices:
        values = [value_of(f) for f in frames_of_slice]
        if any(v is None for v in values) or len(set(values)) < len(values):
            return False
    return True


def _unwrap_midnight(frames: list[_Frame]) -> None:
    """Without a date, a span over 12 h means the series crossed midnight."""
    if any(f.acquired.date() != _NO_DATE for f in frames):
        return
    times = [f.acquired for f in frames]
    if max(times) - min(times) <= _dt.timedelta(hours=12):
        return
    for f in frames:
        if f.acquired.hour < 12:
            f.acquired += _dt.timedelta(days=1)


def _trigger_problem(slices: list[list[_Frame]]) -> str:
    """Why TriggerTime cannot time the frames ("" when it can).

    A clock of one frame per beat spans at least (T - 1) x the shortest R-R
    interval over the T frames of a slice; a TriggerTime that spans less resets
    every beat (the delay after each R wave, nearly the same in every frame).
    """
    if not _usable_clock(slices, lambda f: f.trigger_s):
        return "TriggerTime is missing or repeats within a slice"
    for frames_of_slice in slices:
        triggers = [f.trigger_s for f in frames_of_slice]
        span = max(triggers) - min(triggers)
        if span < (len(triggers) - 1) * _SHORTEST_RR_S:
            return (
                f"TriggerTime spans only {span * 1000:g} ms over the {len(triggers)} frames of "
                f"slice {_mm(frames_of_slice[0].location_mm)}, so it is the delay after each "
                "R wave, not a clock"
            )
    return ""


def _check_trigger_agrees_with_instances(src: Path, slices: list[list[_Frame]]) -> None:
    for frames_of_slice in slices:
        if not _usable_clock([frames_of_slice], lambda f: f.order_key):
            continue
        keys = [f.order_key for f in sorted(frames_of_slice, key=lambda f: f.trigger_s)]
        if keys != sorted(keys):
            raise DicomError(
                f"{src}: no usable acquisition time, and TriggerTime and InstanceNumber give "
                f"different frame orders in slice {_mm(frames_of_slice[0].location_mm)}; "
                "TriggerTime may be a delay after each R wave, not a time"
            )


def _nominal_interval(src: Path, slices: list[list[_Frame]], trigger_problem: str) -> float:
    frames = [f for s in slices for f in s]
    missing = []
    if not _usable_clock(slices, lambda f: f.order_key):
        missing.append("InstanceNumber (distinct within each slice)")
    intervals = [f.interval_s for f in frames if f.interval_s]
    if not intervals:
        missing.append("NominalInterval/FrameTime")
    if missing:
        raise DicomError(
            f"{src}: cannot order frames in time: AcquisitionDateTime/AcquisitionTime is "
            f"missing or repeats within a slice, {trigger_problem}, and {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing (e.g. {frames[0].name})"
        )
    return statistics.median(intervals)


def _describe(frames: list[_Frame], skipped: list[str], clock: str, location_tag: str) -> dict:
    """Patient-free description of the source, kept in the store."""
    import pydicom

    files = {f.name: f.file for f in frames}.values()
    return {
        "importer": "napari_perfroi.dicom",
        "format": "DICOM",
        "modality": sorted({f.modality for f in files}),
        "manufacturer": sorted({f.manufacturer for f in files}),
        "sop_class": sorted({f.sop_class for f in files}),
        "series": sorted({f.series_label for f in files}),
        "n_files": len(files),
        "n_skipped_files": len(skipped),
        "time_source": clock,
        "slice_position_source": location_tag,
        "pydicom_version": pydicom.__version__,
    }


# ---------------------------------------------------------------- messages
def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_NAMED])
    more = len(items) - _MAX_NAMED
    return f"{shown} and {more} more" if more > 0 else shown


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _mm(value: float) -> str:
    return f"{round(value, 3) + 0.0:g} mm"


def _fmt(values) -> str:
    return "none" if values is None else "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _describe_time(f: _Frame) -> str:
    if f.acquired is not None:
        return f"{f.acquired_tag} {f.acquired.time().isoformat()}"
    if f.trigger_s is not None:
        return f"TriggerTime {f.trigger_s * 1000:g} ms"
    return f"InstanceNumber {f.instance}"
