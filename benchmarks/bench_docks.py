"""Frame stepping and event-loop stalls in napari with the plugin's docks open.

Usage: python benchmarks/bench_docks.py [--steps N]

An analysed phantom store (seed 7, LAD defect; motion, segment, roi, flow
and aha run on it) is built once under ``benchmarks/_work/`` and reused;
each run works on a fresh copy (Segment and Compute rewrite it). The
measurement runs in a fresh process with a real, shown napari window (under
``xvfb-run`` when there is no display).

1. ms per frame step: ``viewer.dims.set_current_step`` on the t axis, then
   the event loop runs until the vispy canvas has drawn (its ``draw``
   event) and once more for what the step queued, for the plain image layer
   alone, with the reader's layers, and with the Segment, ROI review and
   Perfusion docks open. Median and 90th percentile.
2. The time each dock takes to open, and the longest event-loop stall (the
   largest gap between the ticks of a 5 ms QTimer) while opening the store,
   each dock, and during Segment (``run()``) and Compute (``compute()``)
   until their ``finished`` signals.

Targets: <= 40 ms per frame step with everything open; no
window freeze of seconds when a dock opens or a run goes on.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _common import measure_in_fresh_process

WORK = Path(__file__).resolve().parent / "_work"
STORE = WORK / "docks-phantom-7-lad.zarr"
STEPS = ("motion", "segment", "roi", "flow", "aha")
DOCKS = ("Segment", "ROI review", "Perfusion")
TARGET_FRAME_MS = 40.0
TARGET_STALL_MS = 1000.0


# ---------------------------------------------------------------- the store
def ensure_store() -> Path:
    from napari_perfroi.study import StoreError, Study

    try:
        if Study.open(STORE).has("aha"):
            return STORE
    except StoreError:
        pass
    from napari_perfroi.phantom import write_phantom
    from napari_perfroi.pipeline import run_step

    WORK.mkdir(parents=True, exist_ok=True)
    print(f"building {STORE} ...", flush=True)
    write_phantom(STORE, 7, "lad", overwrite=True)
    study = Study.open(STORE, writable=True)
    for step in STEPS:
        print(f"  {step}: {run_step(study, step)}", flush=True)
    return STORE


# ---------------------------------------------------------------- in the napari process
class StallMeter:
    """The largest gap between the ticks of a 5 ms timer: how long the event loop stalled."""

    def __init__(self):
        from qtpy.QtCore import Qt, QTimer

        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(5)
        self.timer.timeout.connect(self._tick)
        self.last = self.worst = 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        self.worst = max(self.worst, now - self.last)
        self.last = now

    def __enter__(self):
        self.worst, self.last = 0.0, time.perf_counter()
        self.timer.start()
        spin(0.05)  # the timer ticks before the measured work
        self.worst, self.last = 0.0, time.perf_counter()
        return self

    def __exit__(self, *exc):
        spin(0.1)  # the tick that ends a stall
        self.timer.stop()
        return False


def spin(seconds: float) -> None:
    """Run the event loop for ``seconds``."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec_()


def wait_for(signal, timeout_s: float = 300.0) -> float:
    """Run the event loop until ``signal`` fires; seconds waited."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    signal.connect(loop.quit)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    start = time.perf_counter()
    loop.exec_()
    signal.disconnect(loop.quit)
    return time.perf_counter() - start


def step_frames(viewer, n_steps: int) -> list[float]:
    """ms per step through the t axis, each until the canvas has drawn the new frame."""
    from napari_perfroi._napari.layers import IMAGE_LAYER
    from qtpy.QtCore import QEventLoop
    from qtpy.QtWidgets import QApplication

    layer = viewer.layers[IMAGE_LAYER]
    t_axis = viewer.dims.ndim - layer.ndim + 1
    n_frames = int(viewer.dims.nsteps[t_axis])
    scene_canvas = viewer.window._qt_viewer.canvas._scene_canvas
    app = QApplication.instance()
    draws = [0]

    def on_draw(event=None) -> None:
        draws[0] += 1

    scene_canvas.events.draw.connect(on_draw)

    def step_to(t: int) -> float:
        before = draws[0]
        start = time.perf_counter()
        viewer.dims.set_current_step(t_axis, t)
        deadline = start + 5.0
        while draws[0] == before and time.perf_counter() < deadline:
            app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 5)
        app.processEvents()  # what the step queued after the draw
        return (time.perf_counter() - start) * 1000

    try:
        step_to(0)
        times = [step_to((i + 1) % n_frames) for i in range(n_steps + 5)]  # 5 warm-up steps
    finally:
        scene_canvas.events.draw.disconnect(on_draw)
    return times[5:]


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"median": statistics.median(ordered),
            "p90": ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]}


def new_viewer():
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1280, 1000)
    spin(0.2)
    return viewer


def open_store(viewer, path: Path) -> tuple[float, float]:
    with StallMeter() as meter:
        start = time.perf_counter()
        viewer.open(path, plugin="napari-perfroi")
        seconds = time.perf_counter() - start
    return seconds, meter.worst


def measure(path: Path, n_steps: int, profile: Path | None) -> dict:
    from napari_perfroi._napari.layers import IMAGE_LAYER
    from napari_perfroi._napari.reader import get_reader

    out: dict = {"steps": {}, "open_s": {}, "stall_s": {}}

    # the plain image: the reader's image layer alone (added, not left by removing the
    # others: drawing after a layer removal crashes the software GL of xvfb)
    viewer = new_viewer()
    data, kwargs, _ = next(item for item in get_reader(path)(str(path))
                           if item[1].get("name") == IMAGE_LAYER)
    viewer.add_image(data, **kwargs)
    spin(0.2)
    out["steps"]["plain image"] = step_frames(viewer, n_steps)
    viewer.close()

    # the reader's layers, then the docks
    viewer = new_viewer()
    out["open_s"]["store"], out["stall_s"]["open store"] = open_store(viewer, path)
    out["layers"] = [layer.name for layer in viewer.layers]
    spin(0.2)
    out["steps"]["reader's layers"] = step_frames(viewer, n_steps)
    widgets = {}
    for name in DOCKS:
        with StallMeter() as meter:
            start = time.perf_counter()
            _, widgets[name] = viewer.window.add_plugin_dock_widget("napari-perfroi", name)
            out["open_s"][name] = time.perf_counter() - start
        out["stall_s"][f"open {name} dock"] = meter.worst
    spin(0.3)
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    out["steps"]["+ all three docks"] = step_frames(viewer, n_steps)
    if profile is not None:
        profiler.disable()
        profiler.dump_stats(profile)

    with StallMeter() as meter:
        widgets["Segment"].run()
        out["open_s"]["Segment run"] = wait_for(widgets["Segment"].finished)
    out["stall_s"]["Segment run"] = meter.worst
    spin(0.3)
    with StallMeter() as meter:
        widgets["Perfusion"].compute()
        out["open_s"]["Compute run"] = wait_for(widgets["Perfusion"].finished)
    out["stall_s"]["Compute run"] = meter.worst
    spin(0.3)
    out["steps"]["+ all three docks, after Compute"] = step_frames(viewer, n_steps)
    viewer.close()
    return out


# ---------------------------------------------------------------- report
def run_fresh(path: Path, n_steps: int, profile: Path | None) -> dict:
    extra = [] if profile is None else ["--profile", str(profile)]
    return measure_in_fresh_process(__file__, str(path), "--steps", str(n_steps), *extra)


def print_report(out: dict, n_steps: int) -> None:
    steps = {name: summary(times) for name, times in out["steps"].items()}
    plain = steps["plain image"]["median"]
    print(f"\nframe stepping, {n_steps} steps on the t axis "
          f"(layers: {', '.join(out['layers'])})\n")
    print("| viewer | median ms/frame | p90 ms/frame | x plain (median) | target |")
    print("|---|---:|---:|---:|---|")
    for name, s in steps.items():
        target = "" if name.startswith(("plain", "reader")) else (
            f"<= {TARGET_FRAME_MS:.0f} ms: {'yes' if s['median'] <= TARGET_FRAME_MS else 'NO'}")
        print(f"| {name} | {s['median']:.1f} | {s['p90']:.1f} | "
              f"{s['median'] / plain:.2f} | {target} |")
    print("\n| action | time s | longest stall ms | target |")
    print("|---|---:|---:|---|")
    rows = [("open store", "store"), *((f"open {d} dock", d) for d in DOCKS),
            ("Segment run", "Segment run"), ("Compute run", "Compute run")]
    for label, key in rows:
        stall = out["stall_s"][label] * 1000
        print(f"| {label} | {out['open_s'][key]:.3f} | {stall:.0f} | "
              f"< {TARGET_STALL_MS:.0f} ms: {'yes' if stall < TARGET_STALL_MS else 'NO'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="frame steps per measurement")
    parser.add_argument("--profile", type=Path,
                        help="write a cProfile of the steps with all three docks open here")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.steps, args.profile)))
        return
    source = ensure_store()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / source.name
        shutil.copytree(source, path)
        out = run_fresh(path, args.steps, args.profile)
    print_report(out, args.steps)


if __name__ == "__main__":
    main()
