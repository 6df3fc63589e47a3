"""Which per-round statistic should a LUT store: the minimum, the median or a trimmed mean?

    python benchmarks/round_statistic.py --space cifar --device ort-cpu:threads=1 [--busy] [--networks 80]

Times every kernel of the space and ``--networks`` whole networks (stratified over the predicted
range) in 3 shuffled rounds each, with hwnas's timing settings, but keeps every run's time. From
the same runs it builds one LUT per statistic (each round summarized by the statistic, the median
across rounds as usual) and one end-to-end figure per network and statistic, fits the calibration
on every other network and scores the rest, per statistic. It also reports each statistic's
repeatability: the median over networks of (max - min) / median across the 3 rounds. Printed as
a markdown table for BENCHMARKS.md. ``--busy`` spins a child process on the last core the whole
time. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import date
from pathlib import Path

import numpy as np

from hwnas.devices import Stats, TimingConfig, open_device
from hwnas.devices.base import time_samples
from hwnas.latency.kernel_models import kernel_artifacts, kernel_input_shape
from hwnas.latency.network_timing import network_artifacts, network_input_shape
from hwnas.latency.predictor import LatencyPredictor, fit_calibration
from hwnas.latency.store import LutStore
from hwnas.latency.table import LatencyTable
from hwnas.latency.validate import scores, stratified_sample
from hwnas.spaces import get_space


def _trimmed(xs: list[float]) -> float:
    xs = sorted(xs)
    k = len(xs) // 10
    return statistics.fmean(xs[k : len(xs) - k] if len(xs) > 2 * k else xs)


STATISTICS: dict[str, Callable[[list[float]], float]] = {
    "min": min,
    "median": statistics.median,
    "trimmed mean (10%)": _trimmed,
}


def _samples(run: Callable[[], object], cfg: TimingConfig) -> list[float]:
    """Every timed run of hwnas's timing loop, in ms."""
    return [ns / 1e6 for ns in time_samples(run, cfg)[0]]


def _time_all(device, items: Mapping[str, tuple[bytes, tuple[int, ...]]], rounds: int, seed: int):
    """{key: [samples of round 0, round 1, ...]}, each round in its own shuffled order."""
    cfg = TimingConfig()
    got: dict[str, list[list[float]]] = {k: [] for k in items}
    for r in range(rounds):
        order = list(items)
        random.Random(seed * 1_000_003 + r).shuffle(order)
        for k in order:
            data, shape = items[k]
            runner = device.load(data, shape)
            got[k].append(_samples(runner.run, cfg))
            runner.close()
    return got


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="cifar")
    ap.add_argument("--device", default="ort-cpu:threads=1")
    ap.add_argument("--networks", type=int, default=80)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--busy", action="store_true")
    args = ap.parse_args()
    busy = None
    if args.busy:
        core = (os.cpu_count() or 1) - 1
        busy = subprocess.Popen(
            [sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True: pass"]
        )
    try:
        _run(args)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def _run(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    space = get_space(args.space)
    device = open_device(args.device)
    kernels = space.kernels()
    data = kernel_artifacts(kernels, device.format, device.batch, device.precision)
    k_items = {k.key: (d, kernel_input_shape(k, device.batch)) for k, d in zip(kernels, data, strict=True)}
    k_runs = _time_all(device, k_items, args.rounds, seed=0)

    work = Path(tempfile.mkdtemp(prefix="hwnas-stat-"))
    tables: dict[str, LatencyTable] = {}
    for name, stat in STATISTICS.items():
        path = work / f"{name.split()[0]}.lut"
        with LutStore.create_or_open(path, device.fingerprint(), device.spec) as store:
            for key, rounds in k_runs.items():
                for r, xs in enumerate(rounds):
                    v = stat(xs)
                    store.add(key, r, Stats(v, v, v, v, 0.0, len(xs), 0, 0.0))
        tables[name] = LatencyTable.load(path)

    archs = stratified_sample(space, LatencyPredictor(tables["median"]).raw, args.networks, seed=1)
    n_data = network_artifacts(archs, device.format, device.batch, device.precision)
    n_items = {a.to_str(): (d, network_input_shape(a, device.batch)) for a, d in zip(archs, n_data, strict=True)}
    n_runs = _time_all(device, n_items, args.rounds, seed=1)

    fit = archs[::2]
    held = archs[1::2]
    print(f"<!-- {date.today()}, {platform.machine()}, {os.cpu_count()} cores, {args.space} on {device.spec}, "
          f"{len(kernels)} kernels, {len(archs)} networks ({len(held)} held out), {args.rounds} rounds, busy loop: "
          f"{'yes' if args.busy else 'no'}, {time.perf_counter() - t0:.0f} s -->")  # fmt: skip
    print("| statistic | within +-10% | within +-5% | RMSPE | Kendall tau | round spread of a network, median (p90) |")
    print("|---|---|---|---|---|---|")
    for name, stat in STATISTICS.items():
        y = {a: statistics.median(stat(xs) for xs in n_runs[a]) for a in n_runs}
        spread = [(max(v) - min(v)) / statistics.median(v) for v in ([stat(xs) for xs in n_runs[a]] for a in n_runs)]
        cal = fit_calibration(tables[name], fit, [y[a.to_str()] for a in fit], device.fingerprint())
        pred = LatencyPredictor(tables[name], cal)
        s = scores([pred.predict(a) for a in held], [y[a.to_str()] for a in held])
        print(f"| {name} | {s['within_10']:.1%} | {s['within_5']:.1%} | {s['rmspe']:.1%} | {s['kendall_tau']:.3f} | "
              f"{np.median(spread):.1%} ({np.percentile(spread, 90):.1%}) |")  # fmt: skip


if __name__ == "__main__":
    main()
