"""Sample data: the seeded stress perfusion phantom, as a study store.

The phantom is written once into the user's cache directory and reopened
after that, so the sample opens fast and edits saved from the widgets
(labels, ROIs) are still there the next time it is opened.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..study import Study
    from .layers import LayerData

from ..demo import SAMPLE_DEFECT, SAMPLE_SEED

# The same phantom as the embedded DICOM sample (sample_data/).
PHANTOM_SEED = SAMPLE_SEED


def phantom_store_path(seed: int = PHANTOM_SEED) -> Path:
    """Where the sample phantom lives; one store per seed and package version."""
    import platformdirs

    from .. import __version__

    cache = Path(platformdirs.user_cache_dir("napari-perfroi"))
    return cache / f"phantom-seed{seed}-v{__version__}.zarr"


def phantom_study(seed: int = PHANTOM_SEED) -> Study:
    """Open the cached phantom store, generating it first if needed."""
    from ..phantom import write_phantom
    from ..study import StoreError, Study

    path = phantom_store_path(seed)
    try:
        return Study.open(path)
    except StoreError:
        pass  # not generated yet, or damaged: (re)generate below
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(path, ignore_errors=True)  # our own cache entry, damaged
    try:
        return write_phantom(path, seed, defect=SAMPLE_DEFECT)
    except StoreError:
        if not path.exists():
            raise
        return Study.open(path)  # another napari generated it in the meantime


def stress_perfusion_phantom() -> list[LayerData]:
    """The phantom's layers, exactly as the reader shows its store."""
    from .layers import study_layers

    return study_layers(phantom_study())
