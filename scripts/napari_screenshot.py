"""Save a screenshot of napari showing a study store (run under xvfb-run).

Usage: ``python scripts/napari_screenshot.py STORE.zarr OUT.png``
"""

import sys

import napari


def main(store: str, out: str) -> None:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1200, 800)
    viewer.open(store, plugin="napari-perfroi")
    viewer.dims.set_current_step(1, 20)  # a frame during the LV first pass
    viewer.dims.set_current_step(0, 1)  # the mid slice
    for layer in viewer.layers:
        layer.visible = True  # show the phantom's truth labels too
    viewer.layers.selection.active = viewer.layers[0]
    viewer.reset_view()
    viewer.screenshot(out, canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
