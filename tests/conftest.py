"""Phantom study stores shared by the tests: built once per session, copied per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from napari_perfroi.phantom import write_phantom
from napari_perfroi.pipeline import run_step

TEMPLATE_SEED = 11
TEMPLATE_DYNAMICS = 24  # a short series keeps the real motion step quick


@pytest.fixture(scope="session")
def phantom_template(tmp_path_factory) -> Path:
    """A phantom store with its raw image and truth only (do not modify: copy it)."""
    path = tmp_path_factory.mktemp("phantom") / "p.zarr"
    write_phantom(path, seed=TEMPLATE_SEED, n_dynamics=TEMPLATE_DYNAMICS)
    return path


@pytest.fixture(scope="session")
def analysed_template(phantom_template, tmp_path_factory) -> Path:
    """The phantom after the motion, segment and roi steps (do not modify: copy it)."""
    path = tmp_path_factory.mktemp("analysed") / "p.zarr"
    study = _copy(phantom_template, path)
    for step in ("motion", "segment", "roi"):
        run_step(study, step)
    return path


@pytest.fixture
def phantom_store(phantom_template, tmp_path) -> Path:
    """A fresh copy of the raw phantom store."""
    return _copy(phantom_template, tmp_path / "p.zarr").path


@pytest.fixture
def analysed_store(analysed_template, tmp_path) -> Path:
    """A fresh copy of the analysed phantom store (circles proposed)."""
    return _copy(analysed_template, tmp_path / "p.zarr").path


def _copy(template: Path, path: Path):
    from napari_perfroi.study import Study

    shutil.copytree(template, path)
    return Study.open(path, writable=True)
