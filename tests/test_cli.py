import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_perfroi.cli import main
from napari_perfroi.study import Study

PERFROI = str(Path(sys.executable).with_name("perfroi"))


def run_perfroi(*args, cwd=None):
    return subprocess.run([PERFROI, *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_console_script_help():
    result = run_perfroi("--help")
    assert result.returncode == 0
    for command in ("import", "phantom", "analyze", "export-rois", "train", "info", "demo"):
        assert command in result.stdout


def test_info_prints_summary(tmp_path, capsys):
    path = tmp_path / "s.zarr"
    Study.create(
        path, np.zeros((3, 4, 8, 10), np.uint16), pixel_spacing_mm=(2.0, 2.0),
        slice_thickness_mm=8.0, frame_times_s=[[0, 0.8, 1.7, 2.5]] * 3,
        slice_positions_mm=[0, 10, 20], source={"importer": "test"},
    )
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "3 slices x 4 frames x 8 x 10" in out
    assert "basal, mid, apical" in out


@pytest.mark.parametrize("make_bad", ["missing", "not_a_store"])
def test_bad_store_is_one_line_without_traceback(tmp_path, make_bad):
    path = tmp_path / "bad.zarr"
    if make_bad == "not_a_store":
        path.mkdir()
    result = run_perfroi("info", path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert str(path) in result.stderr
    assert "Traceback" not in result.stderr


def test_core_imports_no_gui_and_no_torch():
    """The package and its core modules load without napari, Qt or torch."""
    code = (
        "import sys, importlib, pkgutil, napari_perfroi\n"
        "core = [m.name for m in pkgutil.iter_modules(napari_perfroi.__path__)"
        " if not m.name.startswith('_')]\n"
        "for name in core: importlib.import_module('napari_perfroi.' + name)\n"
        "heavy = sorted(m for m in ('torch', 'napari', 'PyQt6', 'qtpy', 'magicgui')"
        " if m in sys.modules)\n"
        "print(len(core), heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    count, heavy = result.stdout.split(" ", 1)
    assert int(count) >= 5
    assert heavy.strip() == "[]"


def test_phantom_command_writes_store_with_truth(tmp_path):
    dest = tmp_path / "p.zarr"
    result = run_perfroi("phantom", dest, "--seed", 3, "--defect", "rca")
    assert result.returncode == 0, result.stderr
    study = Study.open(dest)
    assert study.attrs["truth"]["defect"] == "rca"
    assert {"truth/labels", "truth/motion", "truth/mbf", "truth/aha"} <= set(study.arrays())


@pytest.mark.parametrize("case", ["empty_folder", "no_dicom", "missing"])
def test_import_bad_input_one_line_and_no_store(tmp_path, case):
    src = tmp_path / "src"
    if case != "missing":
        src.mkdir()
    if case == "no_dicom":
        (src / "notes.txt").write_text("not an image")
    dest = tmp_path / "out.zarr"
    result = run_perfroi("import", src, dest)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(src) in lines[0], result.stderr
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["src"] if case != "missing" else [])


def test_analyze_motion_writes_motion(tmp_path):
    dest = tmp_path / "p.zarr"
    assert main(["phantom", str(dest), "--seed", "4"]) == 0
    assert main(["analyze", str(dest), "--steps", "motion"]) == 0
    study = Study.open(dest)
    assert study.read("motion").shape == study.shape[:2] + (2,)
    assert "motion" in study.attrs["steps"]


def test_analyze_unknown_step_is_one_line(tmp_path):
    dest = tmp_path / "p.zarr"
    assert main(["phantom", str(dest), "--seed", "4"]) == 0
    result = run_perfroi("analyze", dest, "--steps", "motion,warp")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "perfroi analyze: error: unknown step warp; available: motion, segment, roi, flow, aha"
    ]


def test_analyze_with_the_two_compartment_model(tmp_path):
    dest = tmp_path / "p.zarr"
    assert main(["phantom", str(dest), "--seed", "4", "--set", "n_dynamics=24"]) == 0
    study = Study.open(dest, writable=True)
    study.write("labels", study.read("truth/labels"))
    study.write("motion", study.read("truth/motion"))
    assert main(["analyze", str(dest), "--steps", "flow,aha", "--model", "2cxm"]) == 0
    study = Study.open(dest)
    assert study.attrs["report"]["flow_model"] == "2cxm"
    assert all(study.has(name) for name in ("ps", "vp", "ve"))
    result = run_perfroi("analyze", dest, "--steps", "flow", "--model", "tofts")
    assert result.returncode == 2
    assert "argument --model: invalid choice: 'tofts'" in result.stderr


def test_analyze_sets_the_slice_levels(tmp_path, capsys):
    from napari_perfroi.phantom import write_phantom
    from napari_perfroi.study import Study

    store = write_phantom(tmp_path / "p.zarr", 5, n_slices=1, acquisition_order=(0,),
                          n_dynamics=12).path
    assert Study.open(store).attrs["slice_levels"] == ["basal"]
    assert main(["analyze", str(store), "--steps", "motion", "--slice-levels", "mid"]) == 0
    assert Study.open(store).attrs["slice_levels"] == ["mid"]
    assert main(["analyze", str(store), "--steps", "motion", "--slice-levels", "mid,apical"]) == 2
    assert capsys.readouterr().err.strip().endswith("2 slice level(s) given for 1 slice(s)")
    assert main(["analyze", str(store), "--steps", "motion", "--slice-levels", "top"]) == 2
