"""Shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""

import json
import os
import shutil
import subprocess
import sys

XVFB = ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24"]


def seed_range(text: str) -> list[int]:
    """``"1000-1019"`` -> [1000, ..., 1019]; ``"7"`` -> [7]."""
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def measure_in_fresh_process(script: str, *args: str) -> dict:
    """Run ``script --measure ARGS`` in a new Python (under Xvfb without a display) and
    return the JSON object it prints last: a napari measurement free of earlier imports."""
    command = [sys.executable, script, "--measure", *args]
    if not os.environ.get("DISPLAY") and shutil.which("xvfb-run"):
        command = XVFB + command
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"measurement failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
