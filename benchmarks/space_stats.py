"""Size, distinct-kernel counts and FLOP range of the preset search spaces, as a Markdown table.

Usage: python benchmarks/space_stats.py
"""

from __future__ import annotations

import math
import platform
import time
from collections import Counter
from datetime import date

from hwnas.spaces import get_space, list_spaces
from hwnas.spaces.kernels import arch_flops


def main() -> None:
    print(
        f"<!-- {date.today()} on {platform.processor() or platform.machine()}, python {platform.python_version()} -->"
    )
    print(
        "| space | resolutions | layers | size | log10(size) | distinct kernels | by op | MFLOPs min-max | list time (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in list_spaces():
        space = get_space(name)
        t0 = time.perf_counter()
        kernels = space.kernels()
        elapsed = time.perf_counter() - t0
        ops = ", ".join(f"{op} {n}" for op, n in sorted(Counter(k.op for k in kernels).items()))
        lo, hi = arch_flops(space.smallest()) / 1e6, arch_flops(space.largest()) / 1e6
        size = space.size()
        print(
            f"| {name} | {', '.join(map(str, space.resolutions))} | {len(space.layers)} | {size:.3e} "
            f"| {math.log10(size):.1f} | {len(kernels)} | {ops} | {lo:.2f}-{hi:.2f} | {elapsed:.3f} |"
        )


if __name__ == "__main__":
    main()
