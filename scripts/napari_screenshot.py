"""Save a screenshot of napari showing a study store with the plugin's docks (run under xvfb-run).

Usage: ``python scripts/napari_screenshot.py STORE.zarr OUT.png``
"""

import sys
import time

import napari
from napari.qt.threading import WorkerBase
from qtpy.QtWidgets import QApplication

PLUGIN = "napari-perfroi"


def _process_events(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)


def main(store: str, out: str) -> None:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 850)
    viewer.open(store, plugin=PLUGIN)
    for widget in ("Segment", "ROI review"):
        viewer.window.add_plugin_dock_widget(PLUGIN, widget, tabify=False)
    viewer.dims.set_current_step(1, 20)  # a frame during the LV first pass
    viewer.dims.set_current_step(0, 1)  # the mid slice
    viewer.layers.selection.active = viewer.layers[0]
    viewer.reset_view()
    _process_events(0.5)  # show the docks: the Segment dock then looks up the torch device
    WorkerBase.await_workers()
    _process_events(0.5)  # deliver the workers' results to the docks
    viewer.screenshot(out, canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
