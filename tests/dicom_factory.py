"""Small DICOM series for tests: synthetic studies, hand-made datasets, edits, shuffles."""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # normal +z (superior): the apex is at lower z


def make_study(n_slices=3, n_frames=5, rows=8, cols=6, seed=0):
    """A small uint16 study (image, attrs) with jittered frame times and slice offsets."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 4096, (n_slices, n_frames, rows, cols)).astype(np.uint16)
    beat = 0.8 + rng.uniform(-0.05, 0.05, (n_frames,))
    slice_offset = 0.21 * np.arange(n_slices)
    times = np.round(np.concatenate([[0.0], np.cumsum(beat)[:-1]])[None] + slice_offset[:, None], 6)
    attrs = {
        "pixel_spacing_mm": [1.75, 1.5],
        "slice_thickness_mm": 8.0,
        "frame_times_s": times.tolist(),
        "slice_positions_mm": [-10.0 * s for s in range(n_slices)],
    }
    return image, attrs


def single_slice_phantom(seed=1, **overrides):
    """A one-slice phantom without PD frames or AIF series; ``overrides`` replace
    PhantomParams fields."""
    from napari_perfroi.phantom import generate_phantom

    settings = dict(n_slices=1, n_pd_frames=0, aif_series=False, acquisition_order=(0,))
    return generate_phantom(seed, **{**settings, **overrides})


def export_phantom(phantom, folder: Path, crop=None) -> np.ndarray:
    """Export a phantom as one DICOM series; return the image written.

    ``crop`` (row, col, rows, cols) cuts the image to that window, moving
    ImagePositionPatient with it.
    """
    from napari_perfroi.dicom_export import export_dicom

    image, attrs = phantom.image, {**phantom.attrs, **phantom.extra}
    if crop is not None:
        row, col, rows, cols = crop
        image = np.ascontiguousarray(image[..., row : row + rows, col : col + cols])
        orientation = np.asarray(attrs["image_orientation_patient"])
        row_spacing, col_spacing = attrs["pixel_spacing_mm"]
        shift = col * col_spacing * orientation[:3] + row * row_spacing * orientation[3:]
        attrs["image_position_patient"] = (
            np.asarray(attrs["image_position_patient"]) + shift
        ).tolist()
    export_dicom(image, attrs, folder)
    return image


def drop_acquisition_times(ds: Dataset) -> None:
    """Leave TriggerTime as the only time of the frame."""
    for keyword in ("AcquisitionDateTime", "AcquisitionTime", "AcquisitionDate",
                    "ContentTime", "ContentDate"):
        if keyword in ds:
            delattr(ds, keyword)


def to_float_pixel_data(ds: Dataset) -> None:
    """Store the rescaled real values as Float Pixel Data (7FE0,0008), float32."""
    real = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    del ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    del ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType
    ds.BitsAllocated = 32
    ds.FloatPixelData = real.astype("<f4").tobytes()


def files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file())


def edit_series(folder: Path, edit: Callable[[Dataset], None]) -> None:
    """Apply ``edit`` to the dataset of every file in ``folder`` and save it back."""
    for path in files(folder):
        ds = pydicom.dcmread(path)
        edit(ds)
        ds.save_as(path, enforce_file_format=True)


def copy_shuffled(folder: Path, dest: Path, seed=0) -> Path:
    """Copy every file to a random name in random sub-folders (names carry no order)."""
    rng = np.random.default_rng(seed)
    sources = files(folder)
    rng.shuffle(sources)
    for index, path in enumerate(sources):
        target = dest / f"d{rng.integers(3)}" / f"{rng.integers(1 << 30):x}_{index}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return dest


def zip_shuffled(folder: Path, archive: Path, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    sources = files(folder)
    rng.shuffle(sources)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for index, path in enumerate(sources):
            zf.write(path, f"DICOM/{rng.integers(1 << 30):x}{index}.dcm")
        zf.writestr("README.txt", "not dicom")
        zf.writestr("__MACOSX/._x", b"\x00\x05\x16\x07")
    return archive


def classic_dataset(
    pixels: np.ndarray,
    *,
    study_uid: str,
    series_uid: str,
    instance: int,
    position=None,
    orientation=AXIAL,
    acquisition_time: str | None = None,
    acquisition_date: str | None = "20240101",
    trigger_ms: float | None = None,
    spacing=(1.5, 1.5),
    thickness=8.0,
) -> Dataset:
    """A classic MR image made from scratch (not by the exporter)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 7
    ds.InstanceNumber = instance
    if position is not None:
        ds.ImagePositionPatient = list(position)
        ds.ImageOrientationPatient = list(orientation)
    if acquisition_time is not None:
        ds.AcquisitionTime = acquisition_time
        if acquisition_date is not None:
            ds.AcquisitionDate = acquisition_date
    if trigger_ms is not None:
        ds.TriggerTime = trigger_ms
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = thickness
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds


def write_datasets(folder: Path, datasets: list[Dataset], seed=0) -> Path:
    """Save datasets under random names, in random order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in rng.permutation(len(datasets)):
        datasets[index].save_as(folder / f"{rng.integers(1 << 40):x}", enforce_file_format=True)
    return folder


def enhanced_from_real(
    name: str,
    dest: Path,
    *,
    positions_z: list[float],
    times_s: list[float] | None,
    rescale: tuple[float, float] | None = None,
) -> Path:
    """A real pydicom-data Enhanced MR file with functional groups added (pixels untouched).

    The real files have no geometry or per-frame times; this adds shared
    PixelMeasures / PlaneOrientation and per-frame PlanePosition /
    FrameContent (and PixelValueTransformation when ``rescale`` is given).
    """
    ds = pydicom.dcmread(get_testdata_file(name))
    measures = Dataset()
    measures.PixelSpacing = [1.25, 1.25]
    measures.SliceThickness = 6.0
    plane = Dataset()
    plane.ImageOrientationPatient = AXIAL
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([plane])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for index, z in enumerate(positions_z):
        item = Dataset()
        position = Dataset()
        position.ImagePositionPatient = [0.0, 0.0, float(z)]
        item.PlanePositionSequence = Sequence([position])
        if times_s is not None:
            content = Dataset()
            minutes, seconds = divmod(times_s[index], 60)
            content.FrameAcquisitionDateTime = f"2024010110{int(minutes):02d}{seconds:09.6f}"
            item.FrameContentSequence = Sequence([content])
        if rescale is not None:
            transform = Dataset()
            transform.RescaleSlope, transform.RescaleIntercept = rescale
            transform.RescaleType = "US"
            item.PixelValueTransformationSequence = Sequence([transform])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.save_as(dest, enforce_file_format=True)
    return dest


def make_dual_study(tmp_path: Path, n_frames=5, seed=0):
    """A study store with a separate AIF series (acquired first in each beat) and
    saturation times; returns (store, image, attrs, aif_image, aif_series)."""
    from napari_perfroi.study import Study

    image, attrs = make_study(n_frames=n_frames, seed=seed)
    main_times = np.asarray(attrs["frame_times_s"])
    attrs["frame_times_s"] = np.round(main_times + 0.125, 6).tolist()
    aif_image = np.random.default_rng(seed + 1).integers(0, 4096, (n_frames, 4, 3))
    aif_series = {
        "frame_times_s": main_times[0].tolist(),  # the earliest frame of the study is at 0 s
        "pixel_spacing_mm": [3.5, 3.0],
        "slice": 1,
        "origin_px": [1.25, -0.5],
        "saturation_time_s": 0.0275,
    }
    store = Study.create(
        tmp_path / "dual.zarr", image, source={"importer": "test"},
        extra_attrs={"saturation_time_s": 0.1005}, aif_image=aif_image.astype(np.uint16),
        aif_series=aif_series, **attrs,
    )
    return store, image, attrs, aif_image, aif_series
