"""Save a screenshot of napari showing a study store with the plugin's docks (run under xvfb-run).

Usage: ``python scripts/napari_screenshot.py STORE.zarr OUT.png``
(the same picture as ``perfroi demo`` saves as napari.png).
"""

import sys

from napari_perfroi._napari.screenshot import main

if __name__ == "__main__":
    sys.exit(main())
