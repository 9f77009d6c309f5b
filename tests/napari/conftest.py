"""Fixtures for the napari tests: small study stores and chunk-read counting."""

from __future__ import annotations

from pathlib import Path

import pytest
import zarr
from study_fixtures import add_derived_arrays, create_store


@pytest.fixture
def store_path(tmp_path) -> Path:
    """A study store with only its raw image."""
    path = tmp_path / "study.zarr"
    create_store(path)
    return path


@pytest.fixture
def full_store_path(tmp_path) -> Path:
    """A study store with every derived array and phantom truth labels."""
    path = tmp_path / "full.zarr"
    add_derived_arrays(create_store(path))
    return path


@pytest.fixture
def image_chunk_reads(monkeypatch) -> list[str]:
    """Record every chunk of an ``image`` array read from a local zarr store."""
    reads: list[str] = []
    original_get = zarr.storage.LocalStore.get

    async def counting_get(self, key, *args, **kwargs):
        # format 2 reads the image as "0/c/..." of the store; format 1 as "c/..." of "image"
        if key.startswith("0/c/") or (Path(self.root).name == "image" and key.startswith("c/")):
            reads.append(key)
        return await original_get(self, key, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.LocalStore, "get", counting_get)
    return reads
