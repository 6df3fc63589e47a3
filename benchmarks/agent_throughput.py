"""Profiling through device agents: throughput with one agent and with two at once, the overhead of
the wire, and how far an agent's LUT lies from a local one (issue 14, must-show 5).

Usage:
    python benchmarks/agent_throughput.py [--space tiny] [--rounds 2] [--workdir DIR]

On this machine (loopback), in this order: a local ``ort-cpu:threads=1`` profile, the same through
one agent, through two agents at once (``--device A --device B``, one thread each), and a second
local profile. Every profile starts from an empty LUT; kernel models are converted once, before
the first, so the figures are timing and transport only. Reports per run: measurements, wall time,
time inside timed runs (as the agents report it), measurements per second, overhead ratio (wall /
measuring), and per LUT the median |log(latency / local)| beside the noise floor of the same run
(the two local profiles against each other). Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from hwnas.devices.agent.local import LocalAgent
from hwnas.latency.store import LutStore


def _median_of_rounds(lut: Path) -> tuple[dict[str, float], float, int]:
    """Per kernel the median of its rounds; seconds inside warm-up and timed runs; measurements re-taken."""
    by: dict[str, list[float]] = {}
    busy = 0.0
    with LutStore.open(lut) as store:
        for key, _round, ms, *rest in store.rows():
            by.setdefault(key, []).append(ms)
            busy += float(rest[-2])  # busy_s (the last column is measured_at)
        retaken = store.conn.execute("SELECT COUNT(*) FROM conditions WHERE attempts > 1").fetchone()[0]
    return {k: sorted(v)[len(v) // 2] for k, v in by.items()}, busy, int(retaken)


def _error(a: dict[str, float], b: dict[str, float]) -> float:
    errs = sorted(abs(math.log(a[k] / b[k])) for k in a)
    return errs[len(errs) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workdir")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="hwnas-agents-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HWNAS_CACHE=str(work / "cache"), COLUMNS="200")

    def profile(devices: list[str], outs: list[Path]) -> float:
        cmd = [sys.executable, "-m", "hwnas", "profile", "--space", args.space, "--rounds", str(args.rounds),
               "--no-progress"]  # fmt: skip
        for d, o in zip(devices, outs, strict=True):
            cmd += ["--device", d, "--out", str(o)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        return time.perf_counter() - t0

    # convert once (not timed): a throwaway profile with one round and minimal timing
    subprocess.run([sys.executable, "-m", "hwnas", "profile", "--space", args.space, "--device", "ort-cpu",
                    "--out", str(work / "warm.lut"), "--rounds", "1", "--min-runs", "1", "--min-time-ms", "0.1",
                    "--warmup-runs", "1", "--warmup-ms", "0.1", "--no-progress"], check=True, env=env,
                   capture_output=True)  # fmt: skip
    agents = [LocalAgent(work / f"agent{i}") for i in range(2)]
    for a in agents:
        a.start()
    try:
        specs = [a.spec(token_file=a.token_file) for a in agents]
        runs = [("local ort-cpu:threads=1", ["ort-cpu:threads=1"], ["local1"]),
                ("one agent", specs[:1], ["one"]),
                ("two agents at once", specs, ["two-a", "two-b"]),
                ("local ort-cpu:threads=1, again", ["ort-cpu:threads=1"], ["local2"])]  # fmt: skip
        results = []
        for label, devices, names in runs:
            outs = [work / f"{n}.lut" for n in names]
            wall = profile(devices, outs)
            tables = [_median_of_rounds(o) for o in outs]
            results.append((label, names, wall, tables))
    finally:
        for a in agents:
            a.stop()
    local1, local2 = results[0][3][0][0], results[-1][3][0][0]
    noise = _error(local1, local2)
    local = {k: math.sqrt(local1[k] * local2[k]) for k in local1}
    kernels = len(local1)
    print(f"<!-- {date.today()}, {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"space {args.space}, {kernels} kernels x {args.rounds} rounds -->")  # fmt: skip
    print("| run | measurements | re-taken (disturbed) | wall (s) | measuring (s) | measurements/s | overhead ratio | "
          "median abs log(latency / local) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for label, names, wall, tables in results:
        n = kernels * args.rounds * len(names)
        busy = sum(b for _, b, _ in tables)
        retaken = sum(r for _, _, r in tables)
        errs = ", ".join(f"{_error(t, local):.3f}" for t, _, _ in tables)
        print(f"| {label} | {n} | {retaken} | {wall:.1f} | {busy:.1f} | {n / wall:.2f} | {wall * len(names) / busy:.2f} | "
              f"{errs} |")  # fmt: skip
    one, two = results[1][2], results[2][2]
    print(f"\nthroughput, two agents / one agent: {2 * one / two:.2f}x; noise floor (local vs local): {noise:.3f}")


if __name__ == "__main__":
    main()
