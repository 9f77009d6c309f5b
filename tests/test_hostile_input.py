"""Hostile input: damaged headers, zip entries and stores end in one line, never a traceback.

Each mutation is applied to a few files of the sample series (one slice) and
``perfroi import`` (or ``analyze``) must end with exit 2 and one stderr line,
or with exit 0 where the mutation is harmless (said per kind below); either
way nothing is left beside the destination and the input is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from napari_perfroi.cli import main
from napari_perfroi.segment.model import SHIPPED_WEIGHTS, ModelError, load_model
from napari_perfroi.study import Study, StoreError

SAMPLE = Path(__file__).parents[1] / "sample_data"
PERFROI = str(Path(sys.executable).with_name("perfroi"))
SEED = 20240611
N_FILES = 4  # frames of one slice: enough for a series, quick to import


# ---------------------------------------------------------------- inputs
@pytest.fixture(scope="module")
def one_slice(tmp_path_factory) -> list[Path]:
    """The first frames (by InstanceNumber) of one slice of the sample's main series."""
    by_slice: dict[float, list[tuple[int, Path]]] = {}
    for path in sorted(SAMPLE.iterdir()):
        if not path.is_file() or path.name.startswith("README"):
            continue
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if "AIF" not in str(ds.SeriesDescription):
            by_slice.setdefault(float(ds.SliceLocation), []).append((int(ds.InstanceNumber), path))
    frames = sorted(by_slice[min(by_slice)])
    folder = tmp_path_factory.mktemp("one_slice")
    copies = []
    for _, path in frames[: 2 * N_FILES]:
        copies.append(folder / path.name)
        shutil.copy(path, copies[-1])
    return copies


@pytest.fixture
def series(tmp_path, one_slice) -> Path:
    """A fresh folder with N_FILES frames of one slice."""
    folder = tmp_path / "series"
    folder.mkdir()
    for path in one_slice[:N_FILES]:
        shutil.copy(path, folder / path.name)
    return folder


def digest(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    hasher = hashlib.sha256()
    for file in files:
        hasher.update(file.name.encode() + file.read_bytes())
    return hasher.hexdigest()


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir()
                  if p.name.startswith((".staging-", ".retired-")))


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, names: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err and "\r" not in err, err
    assert names in err, err


# ---------------------------------------------------------------- header mutations
def set_raw(path: Path, tag: int, vr: str, value: bytes) -> None:
    """Write ``value`` as the raw bytes of element ``tag`` (no validation on the way)."""
    ds = pydicom.dcmread(path)
    value += b" " * (len(value) % 2)
    ds[tag] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)
    ds.save_as(path)


def set_transfer_syntax(path: Path, uid: bytes) -> None:
    """Replace the TransferSyntaxUID value in place (same length, so the meta group
    length still holds)."""
    data = path.read_bytes()
    marker = b"\x02\x00\x10\x00UI"
    at = data.index(marker) + len(marker)
    length = struct.unpack("<H", data[at:at + 2])[0]
    value = uid.ljust(length, b"\0")
    assert len(value) == length
    path.write_bytes(data[:at + 2] + value + data[at + 2 + length:])


def us(value: int) -> bytes:
    return struct.pack("<H", value)


def letters(rng: random.Random) -> bytes:
    return bytes(rng.choice(b"abcdefxyz") for _ in range(rng.randint(1, 12)))


def anything(rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))


# (keyword, tag, VR, fixed values, random value maker or None): each value makes every
# file unreadable or the series unusable, so the import must stop with exit 2.
REFUSED = [
    ("NumberOfFrames", 0x00280008, "IS", [b"abc", b"1e9", b"nan", b"-3", b"2.5"], letters),
    ("Rows", 0x00280010, "US", [us(0)], None),
    ("Rows", 0x00280010, "UL", [struct.pack("<I", 100_000)], None),
    ("Columns", 0x00280011, "US", [us(0)], None),
    ("BitsAllocated", 0x00280100, "US", [us(0), us(64)], None),
    ("SamplesPerPixel", 0x00280002, "US", [us(3)], None),
    ("PixelSpacing", 0x00280030, "DS",
     [b"abc\\1", b"nan\\1", b"inf\\inf", b"0\\0", b"-1\\1", b"1", b""], letters),
    ("SliceThickness", 0x00180050, "DS", [b"abc", b"nan", b"-inf", b"0", b"-2", b""], letters),
    ("ImageOrientationPatient", 0x00200037, "DS",
     [b"abc", b"0\\0\\0\\0\\0\\0", b"1\\0\\0\\1\\0\\0", b"nan\\0\\0\\0\\1\\0"], letters),
    ("ImagePositionPatient", 0x00200032, "DS", [b"abc\\0\\0", b"1\\2", b"inf\\0\\0"], letters),
    ("InstanceNumber", 0x00200013, "IS", [b"x"], letters),
    ("RescaleSlope", 0x00281053, "DS", [b"abc", b"inf", b"nan"], letters),
    ("AcquisitionTime", 0x00080032, "TM", [b"abcdef", b"996199"], letters),
]
# Values no import reads as geometry, time or pixels, and an empty or one NumberOfFrames
# (one frame, as in a classic file): the import succeeds (exit 0).
HARMLESS = [
    ("SeriesDescription", 0x0008103E, "LO", [], anything),
    ("Manufacturer", 0x00080070, "LO", [], anything),
    ("ImageComments", 0x00204000, "LT", [], anything),
    ("private", 0x00091010, "LO", [], anything),
    ("NumberOfFrames", 0x00280008, "IS", [b"", b"1"], None),
]
TRANSFER_SYNTAXES = [b"", b"1.2.840.10008.1.1", b"9.9.9.9.9.9.9.9"]  # empty, SOP class, unknown


def header_mutations():
    rng = random.Random(SEED)
    cases = []
    for keyword, tag, vr, values, maker in REFUSED:
        drawn = [maker(rng) for _ in range(2)] if maker else []
        cases += [pytest.param(tag, vr, v, 2, id=f"{keyword}={v!r}") for v in values + drawn]
    for keyword, tag, vr, values, maker in HARMLESS:
        drawn = [maker(rng) for _ in range(2)] if maker else []
        cases += [pytest.param(tag, vr, v, 0, id=f"{keyword}={v!r}") for v in values + drawn]
    return cases


@pytest.mark.parametrize("tag, vr, value, expected", header_mutations())
def test_damaged_header_value(tmp_path, capsys, series, tag, vr, value, expected):
    for path in series.iterdir():
        set_raw(path, tag, vr, value)
    check_import(tmp_path, capsys, series, expected)


@pytest.mark.parametrize("uid", TRANSFER_SYNTAXES)
def test_transfer_syntax_that_is_not_one(tmp_path, capsys, series, uid):
    for path in series.iterdir():
        set_transfer_syntax(path, uid)
    err = check_import(tmp_path, capsys, series, 2)
    assert "is not a transfer syntax" in err


def check_import(tmp_path: Path, capsys, src: Path, expected: int) -> str:
    before = digest(src)
    dest = tmp_path / "out.zarr"
    code, err = run_cli(capsys, "import", src, dest)
    assert digest(src) == before
    assert leftovers(dest) == []
    if expected == 2:
        assert_one_line_error(code, err, str(src))
        assert not dest.exists()
    else:
        assert code == 0 and "Traceback" not in err, err
        assert Study.open(dest).shape[:2] == (1, N_FILES)
    return err


# ---------------------------------------------------------------- zip mutations
UNSUPPORTED_METHODS = [1, 2, 3, 4, 5, 6, 7, 9, 10, 18, 19, 97, 98, 99]


def make_zip(series: Path, path: Path, method=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as archive:
        for file in sorted(series.iterdir()):
            archive.write(file, file.name)
    return path


def local_headers(data: bytes) -> list[int]:
    offsets, at = [], data.find(b"PK\x03\x04")
    while at >= 0:
        offsets.append(at)
        at = data.find(b"PK\x03\x04", at + 4)
    return offsets


def patch_entries(path: Path, members: slice, local: tuple[int, int], central: tuple[int, int],
                  change) -> None:
    """Apply ``change(old) -> new`` to a 2-byte field of the local and central headers of
    the chosen members (offset of the field in each header)."""
    data = bytearray(path.read_bytes())
    centrals, at = [], data.find(b"PK\x01\x02")
    while at >= 0:
        centrals.append(at)
        at = data.find(b"PK\x01\x02", at + 4)
    for offsets, field in ((local_headers(data), local[0]), (centrals, central[0])):
        for at in offsets[members]:
            old = struct.unpack("<H", data[at + field:at + field + 2])[0]
            data[at + field:at + field + 2] = struct.pack("<H", change(old))
    path.write_bytes(bytes(data))


def unsupported_method(path, members, rng):
    method = rng.choice(UNSUPPORTED_METHODS)
    patch_entries(path, members, (8, 0), (10, 0), lambda _: method)


def encrypted(path, members, rng):
    patch_entries(path, members, (6, 0), (8, 0), lambda flags: flags | 1)


def corrupt_deflate(path, members, rng):
    """Scramble 64 bytes at a random place of each chosen member's deflate stream."""
    data = bytearray(path.read_bytes())
    offsets = local_headers(data)
    for at in offsets[members]:
        size = struct.unpack("<I", data[at + 18:at + 22])[0]
        name_len, extra_len = struct.unpack("<HH", data[at + 26:at + 30])
        start = at + 30 + name_len + extra_len + rng.randrange(0, max(size - 64, 1))
        for k in range(start, min(start + 64, at + 30 + name_len + extra_len + size)):
            data[k] ^= rng.randrange(1, 256)
    path.write_bytes(bytes(data))


def truncated(path, members, rng):
    data = path.read_bytes()
    path.write_bytes(data[:rng.randrange(len(data) // 4, len(data) - 22)])


ZIP_MUTATIONS = {
    "unsupported method": unsupported_method,
    "encrypted": encrypted,
    "corrupt deflate": corrupt_deflate,
    "truncated": truncated,
}


@pytest.mark.parametrize("draw", range(3))
@pytest.mark.parametrize("kind", ZIP_MUTATIONS)
def test_every_zip_member_damaged(tmp_path, capsys, series, kind, draw):
    """No member is readable: exit 2 with one line naming the zip."""
    archive = make_zip(series, tmp_path / "series.zip")
    ZIP_MUTATIONS[kind](archive, slice(None), random.Random(f"{SEED}-{kind}-{draw}"))
    check_import(tmp_path, capsys, archive, 2)


@pytest.mark.parametrize("kind", ["unsupported method", "encrypted"])
def test_one_unreadable_zip_member_is_skipped(tmp_path, capsys, series, kind):
    """The other members form the series: exit 0 with a warning naming the member."""
    archive = make_zip(series, tmp_path / "series.zip")
    ZIP_MUTATIONS[kind](archive, slice(0, 1), random.Random(SEED))
    before = digest(archive)
    code, err = run_cli(capsys, "import", archive, tmp_path / "out.zarr")
    assert code == 0, err
    assert digest(archive) == before
    first = sorted(p.name for p in series.iterdir())[0]
    assert f"skipped 1 unreadable file(s): {first} (unreadable zip member" in err
    assert Study.open(tmp_path / "out.zarr").shape[:2] == (1, N_FILES - 1)


# ---------------------------------------------------------------- the probe's cases, end to end
def perfroi(*args) -> subprocess.CompletedProcess:
    return subprocess.run([PERFROI, *map(str, args)], capture_output=True, text=True)


PROBE_CASES = {
    "unsupported method": lambda series, tmp: damaged_zip(series, tmp, unsupported_method),
    "encrypted": lambda series, tmp: damaged_zip(series, tmp, encrypted),
    "corrupt deflate": lambda series, tmp: damaged_zip(series, tmp, corrupt_deflate),
    "NumberOfFrames not a number": lambda series, tmp: damaged_header(
        series, 0x00280008, "IS", b"abc"),
    "empty TransferSyntaxUID": lambda series, tmp: damaged_syntax(series, b""),
    "TransferSyntaxUID of a SOP class": lambda series, tmp: damaged_syntax(
        series, b"1.2.840.10008.5.1.4"),
}


def damaged_zip(series: Path, tmp: Path, mutation) -> Path:
    archive = make_zip(series, tmp / "series.zip")
    mutation(archive, slice(None), random.Random(SEED))
    return archive


def damaged_header(series: Path, tag: int, vr: str, value: bytes) -> Path:
    for path in series.iterdir():
        set_raw(path, tag, vr, value)
    return series


def damaged_syntax(series: Path, uid: bytes) -> Path:
    for path in series.iterdir():
        set_transfer_syntax(path, uid)
    return series


@pytest.mark.parametrize("case", PROBE_CASES)
def test_probe_case_is_one_line_from_the_console_script(tmp_path, series, case):
    src = PROBE_CASES[case](series, tmp_path)
    dest = tmp_path / "out.zarr"
    result = perfroi("import", src, dest)
    assert_one_line_error(result.returncode, result.stderr, str(src))
    assert not dest.exists() and leftovers(dest) == []


@pytest.fixture
def store(tmp_path, capsys, series) -> Path:
    dest = tmp_path / "store.zarr"
    assert main(["import", str(series), str(dest)]) == 0
    capsys.readouterr()
    return dest


@pytest.mark.parametrize("spacing", [[float("inf"), 2.28], [float("nan"), 2.28], [0, 2.28],
                                     ["abc", 2.28], [2.28]])
def test_store_with_unusable_pixel_spacing_is_refused_at_open(capsys, store, spacing):
    meta_path = store / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["perfroi"]["pixel_spacing_mm"] = spacing
    meta_path.write_text(json.dumps(meta))
    before = digest(store)
    with pytest.raises(StoreError, match="pixel_spacing_mm"):
        Study.open(store)
    code, err = run_cli(capsys, "analyze", store, "--steps", "motion")
    assert_one_line_error(code, err, str(store))
    assert digest(store) == before


def test_store_with_infinite_spacing_from_the_console_script(store):
    meta_path = store / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["perfroi"]["pixel_spacing_mm"] = [float("inf"), float("inf")]
    meta_path.write_text(json.dumps(meta))
    result = perfroi("analyze", store)
    assert_one_line_error(result.returncode, result.stderr, str(store))


# ---------------------------------------------------------------- paths
def tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def test_zip_member_names_never_place_files_outside(tmp_path, capsys, series, monkeypatch):
    outside = tmp_path / "outside"
    outside.mkdir()
    names = ["../escape.dcm", "../../escape.dcm", str(outside / "absolute.dcm"),
             "a/../../b/escape.dcm"]
    archive = tmp_path / "slip.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, file in zip(names, sorted(series.iterdir())):
            zf.write(file, name)
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    before = tree(tmp_path)
    code, err = run_cli(capsys, "import", archive, "out.zarr")
    assert code == 0, err
    assert {p for p in tree(tmp_path) - before if not p.startswith("work/deep/out.zarr")} == set()
    assert Study.open(work / "out.zarr").shape[:2] == (1, N_FILES)


def test_symlinks_in_a_folder_are_not_followed(tmp_path, capsys, series, one_slice):
    outside = tmp_path / "outside"
    outside.mkdir()
    for path in one_slice[N_FILES:]:  # more frames of the same slice
        shutil.copy(path, outside / path.name)
    (series / "linked_file.dcm").symlink_to(outside / one_slice[N_FILES].name)
    (series / "linked_folder").symlink_to(outside, target_is_directory=True)
    (series / "dangling").symlink_to(tmp_path / "missing")
    code, err = run_cli(capsys, "import", series, tmp_path / "out.zarr")
    assert code == 0, err
    assert Study.open(tmp_path / "out.zarr").shape[:2] == (1, N_FILES)


# ---------------------------------------------------------------- absurd shapes
def test_absurd_declared_shape_is_refused_before_any_allocation(tmp_path, capsys, series,
                                                                monkeypatch):
    for path in series.iterdir():
        set_raw(path, 0x00280010, "UL", struct.pack("<I", 100_000))
        set_raw(path, 0x00280011, "UL", struct.pack("<I", 100_000))
        set_raw(path, 0x00280008, "IS", b"1000000000")
    import pydicom.pixels

    monkeypatch.setattr(pydicom.pixels, "pixel_array",
                        lambda *a, **k: pytest.fail("pixel data decoded"))
    tracemalloc.start()
    try:
        code, err = run_cli(capsys, "import", series, tmp_path / "out.zarr")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_one_line_error(code, err, str(series))
    assert "declares 1000000000 frame(s) of 100000x100000 pixels" in err
    assert peak < 50 * 2**20


# ---------------------------------------------------------------- model weights
class _Explode:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["PERFROI_TEST_MARKER"]),))


def test_pickled_weights_are_never_unpickled(tmp_path, capsys, store, monkeypatch):
    marker = tmp_path / "unpickled"
    monkeypatch.setenv("PERFROI_TEST_MARKER", str(marker))
    weights = tmp_path / "evil.pt"
    weights.write_bytes(pickle.dumps({"state": _Explode()}))
    metadata = json.loads(SHIPPED_WEIGHTS.with_suffix(".json").read_text())
    metadata["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    weights.with_suffix(".json").write_text(json.dumps(metadata))
    with pytest.raises(ModelError, match="not a safetensors file"):
        load_model(weights, device="cpu")
    code, err = run_cli(capsys, "analyze", store, "--steps", "segment", "--weights", weights,
                        "--device", "cpu")
    assert_one_line_error(code, err, str(weights))
    assert not marker.exists()


# ---------------------------------------------------------------- SIGKILL during overwrite
@pytest.mark.parametrize("kill_when", ["soon", "staging", "after staging"])
def test_sigkill_during_overwrite_leaves_a_whole_store(tmp_path, series, one_slice, kill_when):
    """Killed at any time, the store is the old one or the new one, whole, and the next
    run succeeds (a killed run's staging folder has a name of its own, which blocks none)."""
    larger = tmp_path / "larger"
    larger.mkdir()
    for path in one_slice:
        shutil.copy(path, larger / path.name)
    dest = tmp_path / "store.zarr"
    assert perfroi("import", series, dest).returncode == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "napari_perfroi.cli", "import", larger, dest, "--overwrite"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for(process, dest, kill_when)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert Study.open(dest).shape[1] in (N_FILES, len(one_slice))
    rerun = perfroi("import", larger, dest, "--overwrite")
    assert rerun.returncode == 0, rerun.stderr
    assert Study.open(dest).shape[1] == len(one_slice)


def wait_for(process: subprocess.Popen, dest: Path, when: str) -> None:
    """Return at the moment to kill ``process``: ``soon`` after its start, while its
    staging folder exists, or once that folder is gone (the store swapped)."""
    if when == "soon":
        time.sleep(0.2)
        return
    deadline = time.monotonic() + 30
    while not leftovers(dest):
        assert process.poll() is None and time.monotonic() < deadline, "no staging folder seen"
    while when == "after staging" and leftovers(dest) and process.poll() is None:
        pass
