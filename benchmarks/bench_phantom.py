"""Time to generate one phantom study (target: under 5 s).

Usage: python benchmarks/bench_phantom.py [--seeds 2000-2009]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import seed_range
from napari_perfroi.phantom import generate_phantom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="2000-2009", help="seed range, e.g. 2000-2009")
    seconds = []
    print(f"{'seed':>6} {'shape':>20} {'seconds':>8}")
    for seed in seed_range(parser.parse_args().seeds):
        start = time.perf_counter()
        phantom = generate_phantom(seed)
        seconds.append(time.perf_counter() - start)
        shape = "x".join(map(str, phantom.image.shape))
        print(f"{seed:>6} {shape:>20} {seconds[-1]:>8.2f}")
    print(f"mean {np.mean(seconds):.2f} s, worst {max(seconds):.2f} s per study (target < 5 s)")


if __name__ == "__main__":
    main()
