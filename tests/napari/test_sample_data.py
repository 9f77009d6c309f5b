"""The "Stress perfusion phantom" sample: a cached study store, shown like the reader shows it."""

from __future__ import annotations

import shutil

import dask.array as da
import pytest

from napari_perfroi import phantom
from napari_perfroi._napari import layers as L
from napari_perfroi._napari.reader import get_reader
from napari_perfroi._napari.sample_data import PHANTOM_SEED, phantom_store_path, phantom_study
from napari_perfroi.demo import SAMPLE_DEFECT

pytestmark = pytest.mark.napari


PLUGIN = "napari-perfroi"
SAMPLE = "stress_perfusion_phantom"


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    """Keep the sample store out of the real user cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_sample_shows_the_phantom_store_layers(make_napari_viewer, cache_home):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, SAMPLE)

    store = phantom_store_path()
    assert store.is_relative_to(cache_home)
    expected = phantom.generate_phantom(PHANTOM_SEED, SAMPLE_DEFECT)
    from_reader = [kwargs["name"] for _, kwargs, _ in get_reader(store)(str(store))]
    assert [layer.name for layer in viewer.layers] == from_reader
    assert L.TRUTH_LABELS_LAYER in from_reader
    assert not viewer.layers[L.TRUTH_LABELS_LAYER].visible
    image = viewer.layers[L.IMAGE_LAYER]
    assert isinstance(image.data, da.Array)
    assert image.data.shape == expected.image.shape
    for layer in viewer.layers:
        assert layer.metadata[L.STORE_KEY] == str(store)
        assert tuple(layer.axis_labels) == L.AXIS_LABELS


def test_sample_store_is_generated_once(monkeypatch):
    first = phantom_study()
    created = (first.path / "zarr.json").stat().st_mtime_ns

    def no_regeneration(*args, **kwargs):
        raise AssertionError("the cached phantom was generated again")

    monkeypatch.setattr(phantom, "write_phantom", no_regeneration)
    again = phantom_study()
    assert again.path == first.path
    assert (again.path / "zarr.json").stat().st_mtime_ns == created


def test_damaged_sample_store_is_regenerated():
    path = phantom_study().path
    shutil.rmtree(path / "0")  # the image array
    assert phantom_study().has("image")
    (path / "zarr.json").write_text("{broken")
    assert phantom_study().has("image")
