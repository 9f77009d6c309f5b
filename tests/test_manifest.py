"""The npe2 manifest is valid, both from the development install and from a built wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "napari-perfroi"
WHEEL_MANIFEST = "napari_perfroi/napari.yaml"


def _run(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        args, capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_manifest_is_valid_in_the_development_install():
    _run(sys.executable, "-m", "npe2", "validate", PLUGIN, "--imports")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run(
        sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
        "--quiet", "-w", str(out),
    )
    (built,) = out.glob("napari_perfroi-*.whl")
    return built


def test_wheel_ships_the_manifest_as_a_real_file(wheel):
    with zipfile.ZipFile(wheel) as archive:
        info = archive.getinfo(WHEEL_MANIFEST)
        shipped = archive.read(WHEEL_MANIFEST).decode()
    unix_mode = info.external_attr >> 16
    assert unix_mode == 0 or (unix_mode & 0o170000) == 0o100000, "not a regular file"
    assert yaml.safe_load(shipped) == yaml.safe_load((ROOT / "napari.yaml").read_text())


def test_manifest_is_valid_in_a_wheel_install(wheel, tmp_path):
    target = tmp_path / "site"
    _run(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
         str(target), str(wheel))
    # -S skips site-packages and its .pth files, so the editable install of the
    # package cannot be imported; the wheel's copy comes first on the path and
    # npe2 and its dependencies come from the environment after it.
    path = os.pathsep.join([str(target), sysconfig.get_path("purelib")])
    env = {**os.environ, "PYTHONPATH": path}
    isolated = (sys.executable, "-S")
    where = _run(*isolated, "-c", textwrap.dedent(f"""
        import importlib.metadata, importlib.util
        from npe2 import PluginManifest
        spec = importlib.util.find_spec("napari_perfroi")
        print(spec.submodule_search_locations[0])
        print(importlib.metadata.distribution("{PLUGIN}").locate_file(""))
        print(PluginManifest.from_distribution("{PLUGIN}").display_name)
        from napari_perfroi.segment.model import load_model
        print(load_model(device="cpu").weights_path)
        from napari_perfroi.lge.models import KINDS, load_lge_model
        print(";".join(str(load_lge_model(kind, device="cpu").weights_path) for kind in KINDS))
    """), env=env).splitlines()
    package_dir, dist_dir, display_name, weights, lge_weights = where
    assert Path(package_dir) == target / "napari_perfroi"
    assert Path(dist_dir) == target
    assert display_name == "Perfusion ROI"
    assert Path(weights).is_relative_to(target)  # the wheel ships the model and it loads
    assert all(Path(path).is_relative_to(target) for path in lge_weights.split(";"))
    _run(*isolated, "-m", "npe2", "validate", PLUGIN, "--imports", env=env)
