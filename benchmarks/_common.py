"""Shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""


def seed_range(text: str) -> list[int]:
    """``"1000-1019"`` -> [1000, ..., 1019]; ``"7"`` -> [7]."""
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))
