"""A screenshot of napari showing an analysed study store with the plugin's docks.

``python -m napari_perfroi._napari.screenshot STORE.zarr OUT.png`` (needs a
display: run it under ``xvfb-run`` on a headless machine). The viewer opens
the store with the plugin's reader, docks *ROI review* and *Perfusion*, shows
the mid slice on its reference frame (where the MBF map was fitted) zoomed on
the heart, with faint labels under an opaque MBF map, and saves the whole window.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

PLUGIN = "napari-perfroi"
WINDOW_SIZE = (1680, 1200)
HEART_FIELD = 1.8  # the view spans this many times the extent of the LV and RV


def display_problem() -> str | None:
    """Why no napari window can be shown here, None when a display is available."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return "no display (run under xvfb-run -a)"
    return None


def save_screenshot(store: str | Path, out: str | Path,
                    size: tuple[int, int] = WINDOW_SIZE) -> Path:
    """Open ``store`` in a napari window of ``size`` pixels and save the window to ``out``."""
    import napari
    from napari.qt.threading import WorkerBase

    from .layers import IMAGE_LAYER, LABELS_LAYER, MBF_LAYER
    from .roi_widget import RoiWidget

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    try:
        viewer.window.resize(*size)
        viewer.open(str(store), plugin=PLUGIN)
        # ROI review under the layer list, so that Perfusion has the right side to itself
        viewer.window.add_dock_widget(RoiWidget(viewer), name="ROI review", area="left")
        viewer.window.add_plugin_dock_widget(PLUGIN, "Perfusion")
        layers = viewer.layers
        # Labels under the maps (as after Segment then Compute) and faint, the map opaque:
        # the red of the LV blood pool must not pass for high flow on the turbo colours.
        if LABELS_LAYER in layers:
            layers.move(layers.index(LABELS_LAYER), layers.index(IMAGE_LAYER) + 1)
            layers[LABELS_LAYER].opacity = 0.3
        if MBF_LAYER in layers:
            layers[MBF_LAYER].opacity = 1.0
        _show_mid_slice(viewer)
        layers.selection.active = layers[MBF_LAYER] if MBF_LAYER in layers else layers[0]
        _process_events(0.5)  # lay out the docks; they may start workers
        WorkerBase.await_workers()
        _process_events(0.5)  # deliver the workers' results to the docks
        viewer.screenshot(str(out), canvas_only=False)
    finally:
        viewer.close()
    return out


def _show_mid_slice(viewer) -> None:
    """Go to the mid slice on its reference frame and zoom on its heart."""
    import numpy as np

    from ..study import Study
    from .layers import IMAGE_LAYER, STORE_KEY

    image = viewer.layers[IMAGE_LAYER]
    study = Study.open(image.metadata[STORE_KEY])
    s = study.shape[0] // 2
    t = int(study.attrs["reference_frame"][s])
    world = image.data_to_world(np.array([s, t, 0.0, 0.0]))
    viewer.dims.set_point([0, 1], [float(world[0]), float(world[1])])
    viewer.reset_view()
    if not study.has("labels"):
        return
    rows, cols = np.nonzero(study.zarr_array("labels")[s, t])
    if rows.size == 0:
        return
    middle = [s, t, (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2]
    heart = np.array([np.ptp(rows) + 1, np.ptp(cols) + 1]) * HEART_FIELD
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari < 0.9
    camera.center = tuple(float(v) for v in image.data_to_world(np.array(middle))[2:])
    camera.zoom *= max(1.0, float(np.min(np.asarray(study.shape[2:]) / heart)))


def _process_events(seconds: float) -> None:
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    """``STORE.zarr OUT.png``: save the screenshot; 2 and a line on stderr on bad use."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m napari_perfroi._napari.screenshot STORE.zarr OUT.png",
              file=sys.stderr)
        return 2
    problem = display_problem()
    if problem:
        print(f"napari screenshot: {problem}", file=sys.stderr)
        return 2
    print(save_screenshot(*args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
