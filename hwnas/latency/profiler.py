"""The profiler: time every kernel of a work list on a device, into a LUT file.

Method: convert (or fetch from the cache) every kernel model first, then time the list in
``rounds`` passes, each in a freshly shuffled order (drift and noisy neighbours spread over all
kernels instead of hitting a few), committing each measurement to the store as it is taken.
A LUT entry is the median across rounds of each round's median. A re-run skips every
``(key, round)`` already stored, so a killed profile resumes where it stopped.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from hwnas.devices.base import Device, Runner, Stats, TimingConfig
from hwnas.latency.artifact_cache import ArtifactCache
from hwnas.latency.kernel_models import ARTIFACT_BUILDERS, kernel_input_shape, kernel_module
from hwnas.latency.store import LutStore
from hwnas.nas.spaces.kernels import Kernel
from hwnas.progress import progress_bar

T = TypeVar("T")


@dataclass
class ProfileReport:
    """What a profile run did and where its time went."""

    kernels: int = 0
    measured: int = 0  # measurements taken by this run
    skipped: int = 0  # (key, round) already in the store
    converted: int = 0  # kernel models converted by this run (not cached)
    wall_s: float = 0.0
    convert_s: float = 0.0
    busy_s: float = 0.0  # inside warm-up and timed runs

    @property
    def overhead_ratio(self) -> float:
        """Wall time / time spent measuring (1.0 = no overhead)."""
        return self.wall_s / self.busy_s if self.busy_s > 0 else float("nan")


def shuffled_rounds(todo_rounds: Sequence[Sequence[T]], seed: int) -> Iterator[tuple[int, T]]:
    """``(round, item)`` for every item of every round, each round in its own seeded shuffle."""
    for r, todo in enumerate(todo_rounds):
        order = list(todo)
        random.Random(seed * 1_000_003 + r).shuffle(order)
        for item in order:
            yield r, item


def measure_and_close(device: Device, runner: Runner, timing: TimingConfig) -> Stats:
    try:
        return device.measure(runner, timing)
    finally:
        runner.close()


def load_kernel(device: Device, kernel: Kernel, cache: ArtifactCache | None) -> Runner:
    """Load one kernel's model on the device, from the cache for file-based formats."""
    shape = kernel_input_shape(kernel, device.batch)
    if device.format == "torch":
        return device.load(kernel_module(kernel), shape)
    assert cache is not None
    data = cache.get(kernel.key)
    if data is None:
        [data] = ARTIFACT_BUILDERS[device.format]([kernel], device.batch)
        cache.put(kernel.key, data)
    return device.load(data, shape)


def profile(
    kernels: Sequence[Kernel],
    device: Device,
    store: LutStore,
    rounds: int = 3,
    timing: TimingConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    cache: ArtifactCache | None = None,
) -> ProfileReport:
    """Measure every ``(kernel, round)`` not yet in ``store``; see the module docstring."""
    start = time.perf_counter()
    timing = timing or TimingConfig()
    unique = sorted(set(kernels))
    done = store.done()
    todo_rounds = [[k for k in unique if (k.key, r) not in done] for r in range(rounds)]
    report = ProfileReport(kernels=len(unique), skipped=sum(len(unique) - len(t) for t in todo_rounds))
    total = sum(len(t) for t in todo_rounds)
    store.set_meta("timing", timing.__dict__)
    store.set_meta("rounds", rounds)
    if device.format != "torch":
        cache = cache or ArtifactCache(device.format, device.batch)
    with progress_bar(progress) as bar:
        if cache is not None:
            needed = sorted({k for t in todo_rounds for k in t})
            missing = len(cache.missing(needed))
            if missing:
                task = bar.add_task(f"converting to {device.format}", total=missing)
                t0 = time.perf_counter()
                report.converted = cache.ensure(
                    needed, ARTIFACT_BUILDERS[device.format], on_chunk=lambda n: bar.advance(task, n)
                )
                report.convert_s = time.perf_counter() - t0
        task = bar.add_task(f"timing on {device.kind}", total=total)
        for r, kernel in shuffled_rounds(todo_rounds, seed):
            stats = measure_and_close(device, load_kernel(device, kernel, cache), timing)
            store.add(kernel.key, r, stats)
            report.measured += 1
            report.busy_s += stats.busy_s
            bar.advance(task)
    report.wall_s = time.perf_counter() - start
    return report
