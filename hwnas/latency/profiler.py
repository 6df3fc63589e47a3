"""The profiler: time every kernel of a work list on a device, into a LUT file.

Method: convert (or fetch from the cache) every kernel model first, then time the list in
``rounds`` passes, each in a freshly shuffled order (drift and noisy neighbours spread over all
kernels instead of hitting a few), committing each measurement to the store as it is taken.
A LUT entry is the median across rounds of each round's fastest run. A re-run skips every
``(key, round)`` already stored, so a killed profile resumes where it stopped.

Every measurement is watched (:mod:`hwnas.latency.disturbance`): one taken while other processes
competed for the CPU is re-taken after a pause, and once the rounds are done, the kernels whose
rounds disagree by more than ``stable_within`` are re-measured, pass after pass, until they agree
or the run's time budget is spent; the conditions of each kept measurement are stored beside it,
and the kernels still unstable are named in the LUT (:mod:`hwnas.latency.stability`).
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from hwnas.core.progress import progress_bar
from hwnas.devices.base import Device, Runner, TimingConfig
from hwnas.latency.artifact_cache import ArtifactCache
from hwnas.latency.disturbance import Guard, GuardConfig, Measured
from hwnas.latency.kernel_models import kernel_artifacts, kernel_input_shape, kernel_module
from hwnas.latency.stability import DRIFT_META, STABILITY_META, drifted_kernels, record, stability_meta
from hwnas.latency.store import ROW_COLUMNS, LutStore
from hwnas.spaces.kernels import Kernel

if TYPE_CHECKING:
    from rich.progress import Progress

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
    retaken: int = 0  # disturbed measurements taken again
    remeasured: int = 0  # rounds that disagreed, measured again
    still_disturbed: int = 0  # kept although disturbed (retries or budget spent)
    extra_s: float = 0.0  # seconds spent re-taking and re-measuring (pauses included)
    budget_s: float = 0.0  # what the run allowed for it
    stable_within: float = 0.0
    unstable: list[str] = field(default_factory=list)  # kernels whose rounds still disagree

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


def measure_rounds(
    todo_rounds: Sequence[Sequence[T]],
    key_of: Callable[[T], str],
    load: Callable[[T], Runner],
    save: Callable[[T, int, Measured, bool], None],
    stored: Callable[[], dict[str, dict[int, float]]],
    watch: Guard,
    bar: Any,
    label: str,
    seed: int,
    items: Sequence[T] = (),
) -> tuple[int, float, list[str]]:
    """Time every ``(round, item)`` of ``todo_rounds`` in shuffled rounds, saving each as it is
    taken; then re-measure the rounds that disagree (:meth:`Guard.stabilize`) of the items this
    run touched and of ``items`` (the whole work list, so a re-run retries what an earlier run left
    unstable). Returns (measurements taken, seconds spent inside timing, keys still unstable)."""
    task = bar.add_task(label, total=sum(len(t) for t in todo_rounds))
    measured, busy = 0, 0.0
    for r, item in shuffled_rounds(todo_rounds, seed):
        m = watch.measure(functools.partial(load, item))
        save(item, r, m, False)
        measured += 1
        busy += m.stats.busy_s
        bar.advance(task)
    rounds = len(todo_rounds)
    every = {key_of(item): item for item in [*items, *(i for t in todo_rounds for i in t)]}
    fix = bar.add_task("re-measuring rounds that disagree", total=0, visible=False)

    def on_pass(p: int, n: int) -> None:
        bar.update(fix, total=n, completed=0, visible=True,
                   description=f"re-measuring {n} round(s) that disagree (pass {p + 1})")  # fmt: skip

    def current() -> dict[str, dict[int, float]]:
        return {k: {r: ms for r, ms in v.items() if r < rounds} for k, v in stored().items()}

    fresh = {key_of(i) for t in todo_rounds for i in t}
    unstable, extra_busy = watch.stabilize(every, load, lambda item, r, m: save(item, r, m, True), current, seed,
                                           on_pass, lambda: bar.advance(fix), fresh=fresh)  # fmt: skip
    return measured, busy + extra_busy, unstable


def _build(kernels: Sequence[Kernel], batch: int, fmt: str, precision: str) -> list[bytes]:
    return kernel_artifacts(kernels, fmt, batch, precision)


def load_kernel(device: Device, kernel: Kernel, cache: ArtifactCache | None) -> Runner:
    """Load one kernel's model on the device, from the cache for file-based formats."""
    shape = kernel_input_shape(kernel, device.batch)
    if device.format == "torch":
        return device.load(kernel_module(kernel), shape)
    assert cache is not None
    data = cache.get(kernel.key)
    if data is None:
        [data] = kernel_artifacts([kernel], device.format, device.batch, device.precision)
        cache.put(kernel.key, data)
    return device.load(data, shape)


def convert_kernels(kernels: Sequence[Kernel], device: Device, cache: ArtifactCache, bar: Any, label: str) -> int:
    """Convert the kernels not yet in ``cache`` to the device's format; returns how many were converted."""
    missing = len(cache.missing(kernels))
    if not missing:
        return 0
    task = bar.add_task(f"{label}: converting to {device.format}", total=missing)
    return cache.ensure(kernels, functools.partial(_build, fmt=device.format, precision=device.precision),
                        on_chunk=lambda n: bar.advance(task, n))  # fmt: skip


def profile(
    kernels: Sequence[Kernel],
    device: Device,
    store: LutStore,
    rounds: int = 3,
    timing: TimingConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    cache: ArtifactCache | None = None,
    guard: GuardConfig | None = None,
    bar: Progress | None = None,
    label: str | None = None,
    remeasure: Sequence[str] = (),
) -> ProfileReport:
    """Measure every ``(kernel, round)`` not yet in ``store``; see the module docstring.

    ``bar``: a progress bar shared with other profiles running at once (a device farm), whose
    tasks are then named by ``label`` (default: the device kind). ``remeasure``: keys of kernels
    whose every round is measured again, replacing what is stored (e.g. the kernels
    ``hwnas lut validate`` found drifted, which then leave the LUT's drift list)."""
    start = time.perf_counter()
    timing = timing or TimingConfig()
    unique = sorted(set(kernels))
    redo = set(remeasure)
    done = {d for d in store.done() if d[0] not in redo}
    todo_rounds = [[k for k in unique if (k.key, r) not in done] for r in range(rounds)]
    report = ProfileReport(kernels=len(unique), skipped=sum(len(unique) - len(t) for t in todo_rounds))
    total = sum(len(t) for t in todo_rounds)
    store.set_meta("timing", timing.__dict__)
    store.set_meta("rounds", rounds)
    if device.format != "torch":
        cache = cache or ArtifactCache(device.format, device.batch, precision=device.precision)
    label = label or device.kind
    with nullcontext(bar) if bar is not None else progress_bar(progress) as bar:
        if cache is not None:
            t0 = time.perf_counter()
            report.converted = convert_kernels(sorted({k for t in todo_rounds for k in t}), device, cache, bar, label)
            report.convert_s = time.perf_counter() - t0
        watch = Guard(device, timing, planned=total, config=guard or GuardConfig())

        def save(kernel: Kernel, r: int, m: Measured, replace: bool) -> None:
            store.add(kernel.key, r, m.stats, replace=replace or kernel.key in redo)
            store.add_conditions("kernel", kernel.key, r, m.record())

        def stored() -> dict[str, dict[int, float]]:
            per_key: dict[str, dict[int, float]] = {}
            for row in store.rows():
                values = dict(zip(ROW_COLUMNS, row, strict=True))
                fastest = values["min_ms"]
                per_key.setdefault(row[0], {})[row[1]] = values["median_ms"] if fastest is None else fastest
            return per_key

        report.measured, report.busy_s, report.unstable = measure_rounds(
            todo_rounds, lambda k: k.key, lambda k: load_kernel(device, k, cache), save, stored, watch, bar,
            f"timing on {label}", seed, items=unique)  # fmt: skip
        store.set_meta(STABILITY_META, stability_meta(watch.config.stable_within, report.unstable))
        drift = {DRIFT_META: store.get_meta(DRIFT_META)}
        if redo and record(drift, DRIFT_META):  # the kernels re-measured leave the drift list
            left = [k for k in drifted_kernels(drift) if k not in redo]
            store.set_meta(DRIFT_META, {**record(drift, DRIFT_META), "kernels": left})
    report.retaken, report.remeasured, report.still_disturbed = (
        watch.retaken, watch.remeasured_rounds, watch.still_disturbed)  # fmt: skip
    report.extra_s, report.budget_s, report.stable_within = watch.extra_s, watch.budget_s, watch.config.stable_within
    report.wall_s = time.perf_counter() - start
    return report
