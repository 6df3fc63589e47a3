"""Time of one evaluation (forward + backward) of the differentiable expected cost.

Usage: python benchmarks/expected_cost_speed.py [--space fbnetv2] [--repeats 200]
Compare with one supernet training step once the search exists (accuracy/search issues).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hwnas.search.cost import expected_cost
from hwnas.spaces import get_space


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="fbnetv2")
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    space = get_space(args.space)
    t0 = time.perf_counter()
    cost = expected_cost(space, lambda k: k.flops)
    build = time.perf_counter() - t0
    alphas = [torch.zeros(len(layer.options), requires_grad=True) for layer in space.layers]
    res_alpha = torch.zeros(len(space.resolutions), requires_grad=True)
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        value = cost(res_alpha.softmax(0), [a.softmax(0) for a in alphas])
        value.backward()
        times.append(time.perf_counter() - t)
    print(f"| {args.space} | {len(space.layers)} | {sum(len(la.options) for la in space.layers)} | {build:.3f} "
          f"| {statistics.median(times) * 1e3:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
