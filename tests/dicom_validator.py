"""dciodvfy (dicom3tools) on written DICOM objects, for the export tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def validator_errors(files: list[Path]) -> dict[str, list[str]]:
    """{file: its "Error" lines} of every file dciodvfy finds errors in. Fails under CI and
    skips elsewhere when the tool is missing (scripts/install-system-deps.sh installs it)."""
    if shutil.which("dciodvfy") is None:
        if os.environ.get("CI"):
            pytest.fail("dciodvfy is missing: run scripts/install-system-deps.sh")
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    problems = {}
    for path in files:
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        errors = [line for line in (result.stdout + result.stderr).splitlines()
                  if line.startswith("Error")]
        if errors:
            problems[str(path)] = errors
    return problems
