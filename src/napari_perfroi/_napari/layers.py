"""Layers of a study, by fixed name, as napari layer-data tuples.

The reader, the sample data and the widgets all build their layers here, so a
layer has one name, one look and one geometry wherever it comes from. Every
layer of a study carries the store path in ``metadata[STORE_KEY]`` so a widget
can find the store it belongs to.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..roi import circle_from_corners, frames_with_circle, read_review
from ..study import ROI_STATES, Study

LayerData = tuple[Any, dict[str, Any], str]

IMAGE_LAYER = "perfusion"
MBF_LAYER = "MBF"
AHA_LAYER = "AHA segments"
TRUTH_LABELS_LAYER = "truth labels"
UNCERTAINTY_LAYER = "label uncertainty"
LABELS_LAYER = "labels"
ROI_LAYER = "LV ROI"
# Two-compartment maps besides MBF: store array -> (layer name, contrast limits).
PARAMETER_MAP_LAYERS = {"ps": ("PS", (0.0, 4.0)), "vp": ("vp", (0.0, 0.15)),
                        "ve": ("ve", (0.0, 0.5))}
# The semi-quantitative maps of every flow run (store array -> layer name, contrast limits).
INDEX_MAP_LAYERS = {"relative_upslope": ("relative upslope", (0.0, 0.4)),
                    "relative_peak": ("relative peak", (0.0, 2.0)),
                    "time_to_peak_s": ("time to peak (s)", (0.0, 30.0))}
MAP_LAYERS = {**PARAMETER_MAP_LAYERS, **INDEX_MAP_LAYERS}  # hidden until asked for

STORE_KEY = "perfroi_store"
DICOM_KEY = "perfroi_dicom"
# What a layer is for (its name without the " [1]" napari adds when a second study opens).
ROLE_KEY = "perfroi_layer"
AXIS_LABELS = ("slice", "t", "y", "x")
MBF_RANGE_ML_MIN_G = (0.0, 6.0)
# 0 background, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool
LABEL_COLORS = {None: "transparent", 0: "transparent", 1: "red", 2: "yellow", 3: "royalblue"}
# Apart from the label colours (LV red, myocardium yellow, RV blue) and readable on
# napari's dark theme.
ROI_STATE_COLORS = {"none": "white", "proposed": "magenta", "edited": "orange",
                    "propagated": "cyan", "accepted": "lime"}
# Below this size a derived 4D array is read into memory so it can be painted;
# above it stays lazy (view only) to keep memory bounded.
EDITABLE_LIMIT_BYTES = 512 * 2**20
CONTRAST_SAMPLE_FRAMES = 8
CONTRAST_PERCENTILES = (0.5, 99.8)


# ---------------------------------------------------------------- geometry
def image_scale(pixel_spacing_mm) -> tuple[float, float, float, float]:
    """World scale of (slice, t, y, x): 1 per slice, 1 per frame, mm per pixel.

    The slice axis counts slices rather than millimetres: slice positions are
    rarely evenly spaced, and napari picks shapes with the mouse only where the
    slice coordinate maps back to a whole index (a scale of 12.640002 mm puts
    the second slice at 0.9999999999999999, where no circle can be picked).
    """
    row_mm, col_mm = (_positive_or_one(v) for v in pixel_spacing_mm)
    return (1.0, 1.0, row_mm, col_mm)


def _positive_or_one(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 1.0
    return value if np.isfinite(value) and value > 0 else 1.0


def study_scale(study: Study) -> tuple[float, float, float, float]:
    return image_scale(study.attrs["pixel_spacing_mm"])


def contrast_limits(image, n_frames: int = CONTRAST_SAMPLE_FRAMES) -> tuple[float, float]:
    """Display range from a few frames spread over slices and time.

    ``image`` is any (S, T, Y, X) array that reads one frame with ``image[s, t]``
    (zarr, dask, numpy); only ``n_frames`` frames are read, never the series.
    Frames are spread over time so the contrast bolus, not only the dark
    pre-contrast baseline, sets the upper limit.
    """
    n_slices, n_times = image.shape[:2]
    flat = np.unique(np.linspace(0, n_slices * n_times - 1, n_frames).round().astype(int))
    sample = np.stack([np.asarray(image[i // n_times, i % n_times]) for i in flat])
    low, high = (float(v) for v in np.nanpercentile(sample, CONTRAST_PERCENTILES))
    return (low, high) if high > low else (low, low + 1.0)


def circle_corners(s: int, t: int, row: float, col: float, radius: float) -> np.ndarray:
    """The (4, 4) bounding-box corners (slice, t, row, col) of a circle, as napari ellipses use."""
    rows = [row - radius, row - radius, row + radius, row + radius]
    cols = [col - radius, col + radius, col + radius, col - radius]
    return np.column_stack([np.full(4, s), np.full(4, t), rows, cols]).astype(float)


# ---------------------------------------------------------------- layer data
def _common(study: Study, name: str, scale=None) -> dict[str, Any]:
    return {
        "name": name,
        "scale": study_scale(study) if scale is None else scale,
        "axis_labels": AXIS_LABELS,
        "metadata": {STORE_KEY: str(study.path), ROLE_KEY: name},
    }


def image_layer(study: Study, scale=None) -> LayerData:
    """The raw image, lazy (one dask chunk per frame)."""
    kwargs = _common(study, IMAGE_LAYER, scale)
    kwargs.update(
        contrast_limits=contrast_limits(study.zarr_array("image")),
        colormap="gray",
        multiscale=False,
    )
    return study.image, kwargs, "image"


def dicom_image_layer(series, folder) -> LayerData:
    """A scanned DICOM series, lazy, with the same name and geometry as a store's image."""
    image = series.to_dask()
    kwargs = {
        "name": IMAGE_LAYER,
        "scale": image_scale(series.pixel_spacing_mm),
        "axis_labels": AXIS_LABELS,
        "metadata": {DICOM_KEY: str(folder), ROLE_KEY: IMAGE_LAYER},
        "contrast_limits": contrast_limits(image),
        "colormap": "gray",
        "multiscale": False,
    }
    return image, kwargs, "image"


def _per_frame_labels(study: Study, name: str):
    """A 4D label array: in memory (paintable) when small, lazy dask otherwise."""
    array = study.zarr_array(name)
    if array.nbytes <= EDITABLE_LIMIT_BYTES:
        return array[...]
    import dask.array as da

    return da.from_zarr(array)


def _over_time(study: Study, name: str, motion: np.ndarray | None = None):
    """A per-slice (S, Y, X) map on every frame (:func:`following_motion`)."""
    per_slice = study.read(name)
    return following_motion(per_slice, study.shape[1], motion, labels=per_slice.dtype.kind != "f")


def following_motion(per_slice: np.ndarray, n_times: int, motion: np.ndarray | None, *,
                     labels: bool):
    """A per-slice (S, Y, X) map drawn in the reference frames, on every frame (S, T, Y, X).

    Without ``motion`` it is the same map on every frame, a read-only view (no
    copy). With ``motion`` (S, T, 2) it is moved with each frame's motion, lazily,
    one frame at a time: stepping through frames then slices data like the image
    instead of moving the layer, which would make napari re-slice every layer.
    """
    n_slices, n_rows, n_cols = per_slice.shape
    if motion is None:
        return np.broadcast_to(per_slice[:, None], (n_slices, n_times, n_rows, n_cols))
    import dask.array as da

    def frame(block_info=None):
        s, t = block_info[None]["chunk-location"][:2]
        return moved_map(per_slice[s], motion[s, t], labels=labels)[None, None]

    return da.map_blocks(frame, dtype=per_slice.dtype,
                         chunks=((1,) * n_slices, (1,) * n_times, (n_rows,), (n_cols,)),
                         meta=np.empty((0, 0, 0, 0), dtype=per_slice.dtype))


def moved_map(image: np.ndarray, shift, *, labels: bool) -> np.ndarray:
    """``image`` (Y, X) moved by ``shift`` (row, col) px.

    Labels move to the nearest pixel; a float map is interpolated linearly from
    its finite pixels alone (NaN where less than half the weight is finite), so
    a thin map such as the myocardium's keeps its rim.
    """
    from scipy import ndimage

    if labels:
        return ndimage.shift(image, shift, order=0, mode="constant", cval=0)
    finite = np.isfinite(image)
    values = ndimage.shift(np.where(finite, image, 0.0), shift, order=1, cval=0.0)
    weight = ndimage.shift(finite.astype(values.dtype), shift, order=1, cval=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight >= 0.5, values / weight, np.nan).astype(image.dtype)


def labels_layer(study: Study, scale=None) -> LayerData:
    kwargs = _common(study, LABELS_LAYER, scale)
    kwargs.update(colormap=dict(LABEL_COLORS), opacity=0.5)
    return _per_frame_labels(study, "labels"), kwargs, "labels"


def truth_labels_layer(study: Study, scale=None) -> LayerData:
    kwargs = _common(study, TRUTH_LABELS_LAYER, scale)
    kwargs.update(colormap=dict(LABEL_COLORS), opacity=0.5, visible=False)
    return _per_frame_labels(study, "truth/labels"), kwargs, "labels"


def mbf_layer(study: Study, scale=None, motion=None) -> LayerData:
    """The MBF map on every frame (moved with ``motion`` when given)."""
    kwargs = _common(study, MBF_LAYER, scale)
    kwargs.update(
        colormap="turbo", contrast_limits=MBF_RANGE_ML_MIN_G, opacity=0.7, multiscale=False
    )
    return _over_time(study, "mbf", motion), kwargs, "image"


def parameter_map_layer(study: Study, scale=None, motion=None, *, array: str) -> LayerData:
    """A map of :data:`MAP_LAYERS` (two-compartment or semi-quantitative), hidden until
    asked for."""
    name, limits = MAP_LAYERS[array]
    kwargs = _common(study, name, scale)
    kwargs.update(colormap="viridis", contrast_limits=limits, opacity=0.7, visible=False,
                  multiscale=False)
    return _over_time(study, array, motion), kwargs, "image"


def uncertainty_layer(study: Study, scale=None) -> LayerData:
    """The segment step's per-pixel uncertainty (hidden until asked for)."""
    kwargs = _common(study, UNCERTAINTY_LAYER, scale)
    kwargs.update(colormap="magma", contrast_limits=(0.0, 0.5), blending="additive",
                  visible=False, multiscale=False)
    return _over_time(study, "label_uncertainty"), kwargs, "image"


def aha_layer(study: Study, scale=None, motion=None) -> LayerData:
    kwargs = _common(study, AHA_LAYER, scale)
    kwargs.update(opacity=0.4, visible=False)
    return _over_time(study, "aha", motion), kwargs, "labels"


def roi_shapes(roi: np.ndarray, states: np.ndarray) -> tuple[list[np.ndarray], list[str], dict]:
    """Ellipses, edge colours and features of the frames with a circle, in frame order."""
    frames = frames_with_circle(roi)
    ellipses = [circle_corners(s, t, *roi[s, t]) for s, t in frames]
    state_names = [ROI_STATES.get(int(states[s, t]), "none") for s, t in frames]
    colours = [ROI_STATE_COLORS[name] for name in state_names]
    return ellipses, colours, {"slice": frames[:, 0], "t": frames[:, 1], "state": state_names}


def shape_circle(vertices, shape_type: str = "ellipse") -> tuple[int, int, np.ndarray] | None:
    """Frame (slice, t) and circle (row, col, radius) px of one ROI shape's (n, 4) vertices.

    The frame is the rounded slice and t of the vertices; None when they vary
    (a shape not drawn on one frame). An ellipse or rectangle gives its circle
    from its corners (in any order); any other shape from its bounding box.
    """
    vertices = np.asarray(vertices, dtype=float)
    if vertices.ndim != 2 or vertices.shape[1] < 4 or not np.all(np.isfinite(vertices)):
        return None
    frame = vertices[:, :2]
    if np.any(np.ptp(frame, axis=0) > 0.5):
        return None
    s, t = (int(v) for v in np.rint(frame.mean(axis=0)))
    if shape_type not in ("ellipse", "rectangle") or len(vertices) != 4:
        (r0, c0), (r1, c1) = vertices[:, -2:].min(axis=0), vertices[:, -2:].max(axis=0)
        vertices = np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]])
    return s, t, circle_from_corners(vertices)


def roi_layer(study: Study, scale=None) -> LayerData:
    """One ellipse per frame with a circle, on that frame only, edged by its review state."""
    ellipses, colours, features = roi_shapes(*read_review(study))
    kwargs = _common(study, ROI_LAYER, scale)
    kwargs.update(
        ndim=4,
        shape_type="ellipse",
        face_color="transparent",
        edge_color=colours or ROI_STATE_COLORS["proposed"],
        edge_width=1,
        features=features,
    )
    return ellipses, kwargs, "shapes"


# Bottom to top: the raw image first, the ROI outlines last.
_OPTIONAL_LAYERS = (
    ("truth/labels", truth_labels_layer),
    ("labels", labels_layer),
    ("label_uncertainty", uncertainty_layer),
    *((array, partial(parameter_map_layer, array=array)) for array in MAP_LAYERS),
    ("mbf", mbf_layer),  # above the labels, which would hide it
    ("aha", aha_layer),
    ("roi", roi_layer),
)


def study_layers(study: Study) -> list[LayerData]:
    """Every layer a study store has data for, in display order."""
    scale = study_scale(study)  # read the store attributes once, not once per layer
    layers = [image_layer(study, scale)]
    layers += [build(study, scale) for array, build in _OPTIONAL_LAYERS if study.has(array)]
    return layers


# ---------------------------------------------------------------- finding a study's layers
def layer_role(layer) -> str:
    """What ``layer`` shows (e.g. "labels"), whatever napari renamed it to."""
    return layer.metadata.get(ROLE_KEY, layer.name)


def find_layer(viewer, role: str, store: Path | str | None = None):
    """The first layer showing ``role`` of the study at ``store`` (any study if None)."""
    for layer in viewer.layers:
        if layer_role(layer) == role and (
                store is None or layer.metadata.get(STORE_KEY) == str(store)):
            return layer
    return None


def study_image_layer(viewer, current: Path | None = None):
    """The image layer of the study the docks should show.

    That is the study of the selected layer when it belongs to one; else
    ``current`` while its image is open; else the first study or DICOM image.
    """
    active = viewer.layers.selection.active
    for store in (active.metadata.get(STORE_KEY) if active is not None else None, current):
        layer = find_layer(viewer, IMAGE_LAYER, store) if store else None
        if layer is not None:
            return layer
    return find_layer(viewer, IMAGE_LAYER)


# ---------------------------------------------------------------- perfusion results
AIF_ROI_LAYER = "AIF ROI"
AHA_BOUNDARIES_LAYER = "AHA boundaries"
AHA_NUMBERS_LAYER = "AHA numbers"
AIF_ROI_COLORS = {None: "magenta", 0: "transparent"}
# The "AHA segments" layer outlines the chosen segment in the bullseye's highlight colour.
AHA_HIGHLIGHT_COLORS = {None: "#00e5ff", 0: "transparent"}
AHA_BOUNDARY_WIDTH = 0.3


def on_every_frame(scale, n_times: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Scale and translate that show a one-frame (S, 1, ...) layer on all ``n_times`` frames.

    The single frame is stretched over the t axis: its centre sits in the
    middle of the series and it spans every frame, so painting on any frame
    edits the same (S, Y, X) data.
    """
    scale = tuple(float(v) for v in scale)
    return (scale[0], float(n_times), *scale[2:]), (0.0, (n_times - 1) / 2, 0.0, 0.0)


def aif_roi_layer(study: Study, scale=None) -> LayerData:
    """The AIF pixels (``aif_mask``, reference-frame geometry) as one editable frame per slice."""
    n_slices, n_times, n_rows, n_cols = study.shape
    mask = np.zeros((n_slices, 1, n_rows, n_cols), dtype=np.uint8)
    if study.has("aif_mask"):
        mask[:, 0] = study.read("aif_mask") > 0
    kwargs = _common(study, AIF_ROI_LAYER, scale)
    kwargs["scale"], kwargs["translate"] = on_every_frame(kwargs["scale"], n_times)
    kwargs.update(colormap=dict(AIF_ROI_COLORS), opacity=0.6)
    return mask, kwargs, "labels"


def aif_mask_from_layer(data) -> np.ndarray:
    """The (S, Y, X) uint8 AIF mask (1 inside) of an "AIF ROI" layer's (S, 1, Y, X) data."""
    return (np.asarray(data)[:, 0] > 0).astype(np.uint8)


def segment_number_points(aha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where to write each segment's number: (N, 3) (slice, row, col) and the (N,) segments.

    Each point is the segment pixel nearest the segment's centroid, so the
    number sits on the segment even where the sector is curved.
    """
    points, segments = [], []
    for s, sectors in enumerate(np.asarray(aha)):
        for segment in np.unique(sectors[sectors > 0]):
            rows, cols = np.nonzero(sectors == segment)
            nearest = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
            points.append((s, rows[nearest], cols[nearest]))
            segments.append(int(segment))
    return np.asarray(points, dtype=float).reshape(-1, 3), np.asarray(segments, dtype=int)


def sector_boundaries(aha: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """The line between each pair of touching AHA segments: (slice, (2, 2) ends in (row, col)).

    The line runs through the midpoints between neighbouring pixels of the
    two segments, along their main direction, across the whole wall.
    """
    lines = []
    for s, sectors in enumerate(np.asarray(aha)):
        rows, cols, firsts, seconds = [], [], [], []
        for axis, step in ((0, (0.5, 0.0)), (1, (0.0, 0.5))):
            here = sectors[:-1, :] if axis == 0 else sectors[:, :-1]
            there = sectors[1:, :] if axis == 0 else sectors[:, 1:]
            r, c = np.nonzero((here > 0) & (there > 0) & (here != there))
            rows.append(r + step[0])
            cols.append(c + step[1])
            firsts.append(np.minimum(here[r, c], there[r, c]))
            seconds.append(np.maximum(here[r, c], there[r, c]))
        points = np.column_stack([np.concatenate(rows), np.concatenate(cols)])
        pairs = np.column_stack([np.concatenate(firsts), np.concatenate(seconds)])
        for pair in np.unique(pairs, axis=0):
            chosen = points[np.all(pairs == pair, axis=1)]
            if len(chosen) < 2:
                continue
            centre = chosen.mean(axis=0)
            direction = np.linalg.svd(chosen - centre)[2][0]
            along = (chosen - centre) @ direction
            ends = centre + np.outer([along.min() - 0.5, along.max() + 0.5], direction)
            lines.append((s, ends))
    return lines


def _on_each_frame(points: np.ndarray, n_times: int, motion: np.ndarray | None) -> np.ndarray:
    """(N, 3) (slice, row, col) reference-frame points as (N * T, 4) (slice, t, row, col),
    frame by frame, moved with each frame's ``motion`` when given."""
    n_points = len(points)
    frames = np.repeat(np.arange(n_times), n_points)
    placed = np.tile(points, (n_times, 1))
    slices = placed[:, 0].astype(int)
    if motion is not None:
        placed[:, 1:] += motion[slices, frames]
    return np.column_stack([placed[:, 0], frames, placed[:, 1:]])


def aha_boundaries_layer(study: Study, scale=None, motion=None) -> LayerData:
    """The lines between the AHA segments of each slice on every frame, moved with
    ``motion`` when given (a Vectors layer: one line per boundary and frame)."""
    lines = sector_boundaries(study.read("aha"))
    starts = np.array([(s, *ends[0]) for s, ends in lines], dtype=float).reshape(-1, 3)
    steps = np.array([ends[1] - ends[0] for _, ends in lines], dtype=float).reshape(-1, 2)
    n_times = study.shape[1]
    data = np.zeros((len(lines) * n_times, 2, 4))
    data[:, 0] = _on_each_frame(starts, n_times, motion)
    data[:, 1, 2:] = np.tile(steps, (n_times, 1))
    kwargs = _common(study, AHA_BOUNDARIES_LAYER, scale)
    kwargs.update(ndim=4, vector_style="line", edge_color="white",
                  edge_width=AHA_BOUNDARY_WIDTH, length=1.0)
    return data, kwargs, "vectors"


def aha_numbers_layer(study: Study, scale=None, motion=None) -> LayerData:
    """The AHA segment numbers as text, one point per segment, slice and frame, moved with
    ``motion`` when given."""
    where, segments = segment_number_points(study.read("aha"))
    n_times = study.shape[1]
    kwargs = _common(study, AHA_NUMBERS_LAYER, scale)
    kwargs.update(
        ndim=4,
        features={"segment": np.tile(segments, n_times)},
        text={"string": "{segment}", "color": "white", "size": 9, "anchor": "center"},
        size=1,
        face_color="transparent",
        border_color="transparent",
    )
    return _on_each_frame(where, n_times, motion), kwargs, "points"


def frame_at(viewer, layer, shape: tuple[int, int]) -> tuple[int, int]:
    """(slice, t) of the viewer's position in ``layer`` (axes slice, t, ...), clipped to
    ``shape`` (slices, frames)."""
    s, t = (int(round(float(v))) for v in layer.world_to_data(viewer.dims.point)[:2])
    return min(max(s, 0), shape[0] - 1), min(max(t, 0), shape[1] - 1)


def go_to_frame(viewer, layer, s: int, t: int) -> None:
    """Move the viewer's dims to frame ``t`` of slice ``s`` of ``layer``."""
    position = np.zeros(layer.ndim)
    position[:2] = s, t
    world = layer.data_to_world(position)
    first = viewer.dims.ndim - layer.ndim
    viewer.dims.set_point([first, first + 1], [float(world[0]), float(world[1])])
