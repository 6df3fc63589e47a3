"""Profile cost and repeatability: run `hwnas profile` on a space and device, report where the time went.

Usage:
    python benchmarks/profile_cost.py --space cifar --device ort-cpu:threads=1 [--repeat 2] [--workdir DIR]

Each repeat profiles into its own fresh LUT. The first repeat starts from an empty kernel-model
cache (so conversion cost is included); later repeats reuse it. Prints, per repeat: kernels,
wall time, conversion time, time inside warm-up and timed runs, and the overhead ratio (wall /
measuring). With --repeat >= 2 it also prints the repeatability of the first two LUTs: over
kernels, |latency_1 - latency_2| / mean latency, as percentiles. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from hwnas.latency.store import LutStore
from hwnas.latency.table import LatencyTable


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", required=True)
    ap.add_argument("--device", required=True)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep-cache", action="store_true", help="do not empty the kernel-model cache first")
    args, extra = ap.parse_known_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="hwnas-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HWNAS_CACHE=str(work / "cache"))
    if not args.keep_cache:
        subprocess.run(["rm", "-rf", str(work / "cache")], check=True)
    print(f"<!-- {date.today()}, {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()} -->")
    print("| space | device | repeat | kernels | wall (s) | converting (s) | measuring (s) | overhead ratio |")
    print("|---|---|---|---|---|---|---|---|")
    luts = []
    for i in range(args.repeat):
        out = work / f"{args.space}-{args.device.replace(':', '_').replace(',', '_')}-{i}.lut"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{out}{suffix}").unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "hwnas", "profile", "--space", args.space, "--device", args.device,
               "--out", str(out), "--no-progress", *extra]  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0  # includes the process start, imports and the cache check
        with LutStore.open(out) as store:
            rep = store.get_meta("last_profile")
        print(f"| {args.space} | {args.device} | {i + 1} | {rep['kernels']} | {wall:.1f} | {rep['convert_s']:.1f} "
              f"| {rep['busy_s']:.1f} | {wall / rep['busy_s']:.2f} |")  # fmt: skip
        luts.append(out)
    if len(luts) >= 2:
        a, b = (LatencyTable.load(p).df.set_index("key")["latency_ms"] for p in luts[:2])
        rel = (a - b).abs() / ((a + b) / 2)
        q = np.percentile(rel.to_numpy() * 100, [50, 75, 90, 95, 99, 100])
        print()
        print("| space | device | kernels | median | p75 | p90 | p95 | p99 | max |")
        print("|---|---|---|---|---|---|---|---|---|")
        print(f"| {args.space} | {args.device} | {len(rel)} | " + " | ".join(f"{x:.1f}%" for x in q) + " |")
        worst = rel.sort_values().tail(3)
        print(json.dumps({k: round(float(v) * 100, 1) for k, v in worst.items()}))


if __name__ == "__main__":
    main()
