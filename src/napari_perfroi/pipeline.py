"""The analysis steps in order; the CLI, the widgets and the batch runner call these."""

from __future__ import annotations

from collections.abc import Callable

from .errors import InputError


def _motion(study, progress, options):
    from .motion import estimate_study_motion

    estimate_study_motion(study, progress=progress)
    return f"motion estimated on {study.shape[0]} slice(s)"


def _segment(study, progress, options):
    from .segment.infer import segment_study
    from .segment.model import load_model

    model = load_model(options.get("model"), device=options.get("device", "auto"))
    return segment_study(study, model, progress=progress).message()


def _roi(study, progress, options):
    from .roi import DEFAULT_MARGIN_MM, propose_study

    margin_mm = options.get("margin_mm")
    return propose_study(study, DEFAULT_MARGIN_MM if margin_mm is None else margin_mm, progress)


def _flow(study, progress, options):
    from .flow import compute_flow

    return compute_flow(study, progress, **options)


def _aha(study, progress, options):
    from .flow import compute_segments

    return compute_segments(study, progress, **options)


# Step name -> function(study, progress, options) that reads its inputs from the
# study, writes its outputs back and returns a one-line summary; in run order.
STEPS: dict[str, Callable] = {
    "motion": _motion, "segment": _segment, "roi": _roi, "flow": _flow, "aha": _aha,
}
# Step -> the arrays it needs and the steps that write them.
PREREQUISITES = {
    "segment": {"motion": "motion"},
    "roi": {"motion": "motion", "labels": "segment"},
    "flow": {"motion": "motion", "labels": "segment"},
    "aha": {"motion": "motion", "labels": "segment", "mbf": "flow"},
}


def parse_steps(text: str) -> list[str]:
    """``"motion,segment"`` -> the known steps, in pipeline order."""
    requested = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in requested if name not in STEPS]
    if unknown or not requested:
        raise InputError(
            f"unknown step {', '.join(unknown) or '(none given)'}; available: {', '.join(STEPS)}"
        )
    return [name for name in STEPS if name in requested]


def with_prerequisites(study, steps: list[str]) -> list[str]:
    """``steps`` plus the earlier steps whose output the study lacks, in pipeline order."""
    needed = set(steps)
    for name in steps:
        for array, step in PREREQUISITES.get(name, {}).items():
            if not study.has(array):
                needed.add(step)
    return [name for name in STEPS if name in needed]


def run_steps(study, steps: list[str], **options) -> None:
    """Run steps in order with a progress bar each, printing each one's summary line."""
    from .progress import TqdmProgress

    for name in steps:
        with TqdmProgress(name, unit="slice") as progress:
            print(f"{name}: {run_step(study, name, progress, **options)}")


def run_step(
    study,
    name: str,
    progress: Callable[[int, int], None] | None = None,
    **options,
) -> str:
    """Run one step on an open, writable study; return its one-line summary.

    ``progress(done, total)`` may raise (e.g. :class:`~.progress.Cancelled`)
    to stop the step before it writes anything. Options: ``model`` (weights
    path) and ``device`` for segment, ``margin_mm`` for roi, ``hematocrit``,
    ``t1_blood_s``, ``t1_myocardium_s``, ``flow_model`` and ``dose_ratio`` for flow.
    """
    return STEPS[name](study, progress, options)
