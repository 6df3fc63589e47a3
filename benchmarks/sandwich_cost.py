"""Cost of ``--sandwich`` against the default search, side by side (BENCHMARKS.md, search protocol).

    python benchmarks/sandwich_cost.py [--repeats 2] [--threads 2]

One short search per mode on the ``cifar`` space (synthetic 1,280 images at 32 px, 2 epochs of
which 1 warm-up, FLOPs cost, evolution off), the modes alternated ``--repeats`` times so that drift
in the machine's speed hits both. Prints the mean weight step (ms) and the search's wall time (s)
per run, and the JSON of all runs. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from hwnas.search.loop import Search, SearchConfig

MODES = {"default (relaxed supernet + one sampled child)": False, "--sandwich": True}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out: dict[str, list[dict[str, float]]] = {}
    for rep in range(args.repeats):
        for mode, sandwich in MODES.items():
            cfg = SearchConfig(space="cifar", budget=1e9, cost="flops", data="synthetic:n=1280,size=32", epochs=2,
                               warmup_epochs=1, evolution=0, sandwich=sandwich, seed=rep)  # fmt: skip
            with tempfile.TemporaryDirectory() as d:
                t0 = time.perf_counter()
                search = Search(cfg, d, progress=False)
                search.run()
                wall = time.perf_counter() - t0
            t = search.timing
            row = {"weight_step_ms": 1000 * t["weight_step_s"] / t["weight_steps"], "wall_s": wall}
            out.setdefault(mode, []).append(row)
            print(f"{mode}: weight step {row['weight_step_ms']:.0f} ms, search {wall:.1f} s", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
