"""The analysis steps in order; the CLI, the widgets and the batch runner call these."""

from __future__ import annotations

from collections.abc import Callable

from .errors import InputError

def _motion(study, progress):
    from .motion import estimate_study_motion

    estimate_study_motion(study, progress=progress)


# Step name -> function(study, progress) that reads its inputs from the study
# and writes its outputs back, in the order the steps run.
STEPS: dict[str, Callable] = {"motion": _motion}


def parse_steps(text: str) -> list[str]:
    """``"motion,segment"`` -> the known steps, in pipeline order."""
    requested = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in requested if name not in STEPS]
    if unknown or not requested:
        raise InputError(
            f"unknown step {', '.join(unknown) or '(none given)'}; available: {', '.join(STEPS)}"
        )
    return [name for name in STEPS if name in requested]


def run_step(study, name: str, progress: Callable[[int, int], None] | None = None) -> None:
    """Run one step on an open, writable study."""
    STEPS[name](study, progress)
