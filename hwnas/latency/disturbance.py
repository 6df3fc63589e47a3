"""Disturbed measurements: detect them, re-take them (within a time budget), and say so.

Two detectors, because each misses what the other sees:

1. **What else ran** (:mod:`hwnas.devices.conditions`): every measurement is taken between two
   CPU snapshots. When other processes used more than half of the cores the timing leaves free,
   or the hypervisor stole over 10% of the CPU, the measurement is disturbed: wait
   ``backoff_s`` (doubled each time) and take it again, up to ``retries`` times.
2. **Rounds that disagree**: a key (a kernel, a network) is timed in several rounds, in shuffled
   orders. With at least 3 rounds, the round farthest from the key's median across rounds is the
   suspect when it lies more than ``stable_within`` away (``|x / median - 1| > P``); with 2, the
   slower one when it is more than ``P`` slower than the other (noise only adds time). The
   suspects are re-measured, farthest first, pass after pass, each replacing the round it
   re-measures, until every key's rounds agree or the time budget is spent (``passes`` bounds the
   passes: validation takes one, so its noise floor still shows the noise it met). A key whose
   rounds still disagree at the end is *unstable*, and named.

Both spend one time budget per run: re-takes, re-measurements and their pauses may take at most
``max_extra_s`` seconds, or, by default, ``extra_ratio`` times what the planned measurements take
(estimated from those taken so far), so a machine that is busy all the time makes a run slower by
a bounded factor, never endless. A re-run counts every round of the keys an earlier run left
unstable as planned work too (estimated from its first re-measurements when it measures nothing
new), so running the same command again re-measures them; what could not be re-taken stays marked ``disturbed`` in the
LUT's ``conditions`` table and is counted in the report.
"""

from __future__ import annotations

import functools
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hwnas.devices.base import Device, Runner, Stats, TimingConfig
from hwnas.devices.conditions import Conditions

T = TypeVar("T")
# rounds of one kernel may differ by this much and still count as agreeing: the quiet machine's
# kernels agree far closer (median round spread 1.7%, BENCHMARKS "Profile cost"), and a kernel
# 10% off is the error the LUT's accuracy bar allows a whole network
STABLE_WITHIN = 0.10


@dataclass(frozen=True)
class GuardConfig:
    """How hard to try for undisturbed measurements (see the module docstring)."""

    retries: int = 3
    backoff_s: float = 0.25
    stable_within: float = STABLE_WITHIN
    max_extra_s: float | None = None  # seconds; None: extra_ratio x the planned measurements' time
    extra_ratio: float = 1.0
    passes: int | None = None  # passes of re-measuring rounds that disagree (None: until they agree)
    per_key: int = 12  # re-measurements of one key at most (a key that never settles is named, not chased)
    pass_gap_s: float = 0.5  # a pass shorter than this waits out the rest, so a noisy phase can pass
    enabled: bool = True


@dataclass
class Measured:
    """One kept measurement, with the conditions it was taken in."""

    stats: Stats
    conditions: Conditions
    attempts: int
    disturbed: bool  # the kept attempt was still disturbed (retries or cap exhausted)

    def record(self) -> dict[str, float | int | None]:
        """The row of the LUT's ``conditions`` table (see :mod:`hwnas.latency.store`)."""
        c = self.conditions
        return {"others_cores": c.others_cores, "steal": c.steal, "load1": c.load1,
                "attempts": self.attempts, "disturbed": int(self.disturbed)}  # fmt: skip


@dataclass
class Guard:
    """Takes measurements for one run and counts what it re-takes against the run's time budget."""

    device: Device
    timing: TimingConfig
    planned: int
    config: GuardConfig = field(default_factory=GuardConfig)
    sleep: Callable[[float], None] = time.sleep
    retaken: int = 0  # re-takes of disturbed measurements
    remeasured_rounds: int = 0  # rounds re-measured because they disagreed with the key's others
    still_disturbed: int = 0
    first_s: float = 0.0  # seconds inside first attempts
    firsts: int = 0  # first attempts taken
    rework: int = 0  # rounds of keys an earlier run left unstable (planned work of a re-run)
    redo_s: float = 0.0  # seconds inside the first attempts of re-measurements
    redos: int = 0  # re-measurements taken
    extra_s: float = 0.0  # seconds inside re-takes, re-measurements and their pauses

    @property
    def budget_s(self) -> float:
        """The run's time budget for re-taking and re-measuring (module docstring)."""
        if not self.config.enabled:
            return 0.0
        if self.config.max_extra_s is not None:
            return self.config.max_extra_s
        if self.firsts:
            per = self.first_s / self.firsts
        elif self.redos:
            per = self.redo_s / self.redos
        else:  # nothing timed yet: a re-run with earlier work to redo may start, which gives the estimate
            return float("inf") if self.rework else 0.0
        return self.config.extra_ratio * per * (max(self.planned, self.firsts) + self.rework)

    @property
    def has_budget(self) -> bool:
        return self.extra_s < self.budget_s

    def pause(self, seconds: float) -> None:
        """Wait ``seconds`` on the budget's account."""
        self.sleep(seconds)
        self.extra_s += seconds

    def measure(self, load: Callable[[], Runner], close: bool = True, extra: bool = False) -> Measured:
        """Load once, time, and re-time while the span was disturbed (within retries and budget);
        the runner is closed afterwards unless ``close`` is False (a runner the caller reuses).
        ``extra``: a re-measurement, whose first attempt is spent from the budget too."""
        runner = load()
        try:
            attempts = 0
            while True:
                t0 = time.perf_counter()
                stats, cond = self.device.measure_watched(runner, self.timing)
                spent = time.perf_counter() - t0
                if attempts == 0 and not extra:
                    self.first_s += spent
                    self.firsts += 1
                else:
                    self.extra_s += spent
                    if attempts == 0:
                        self.redo_s += spent
                        self.redos += 1
                attempts += 1
                why = cond.reasons(self.device.threads)
                if not why or attempts > self.config.retries or not self.has_budget:
                    break
                self.retaken += 1
                self.pause(self.config.backoff_s * 2 ** (attempts - 1))
        finally:
            if close:
                runner.close()
        disturbed = bool(why)
        self.still_disturbed += disturbed
        return Measured(stats, cond, attempts, disturbed)

    def stabilize(
        self,
        items: Mapping[str, T],
        load: Callable[[T], Runner],
        save: Callable[[T, int, Measured], None],
        stored: Callable[[], dict[str, dict[int, float]]],
        seed: int = 0,
        on_pass: Callable[[int, int], None] | None = None,
        on_measured: Callable[[], None] | None = None,
        fresh: Collection[str] | None = None,
    ) -> tuple[list[str], float]:
        """Re-measure the rounds that disagree (module docstring) of the keys of ``items``, pass
        after pass, while the budget lasts; ``stored()`` gives each key's rounds (ms), ``save``
        replaces one. Returns (the keys still unstable, seconds spent inside timed runs).
        ``on_pass(pass, n)`` is told each pass's size, ``on_measured()`` each re-measurement.
        ``fresh``: the keys this run measured (None: all); the rounds of other keys that disagree
        were left by an earlier run, and join the planned work the default budget is made of."""
        cfg = self.config
        counts: Counter[str] = Counter()
        busy, passes = 0.0, 0
        if fresh is not None and cfg.enabled:
            per_key = _of(stored(), items)
            earlier = {k for k, _ in outlying_rounds(per_key, cfg.stable_within)} - set(fresh)
            self.rework += sum(len(per_key[k]) for k in earlier)
        while cfg.enabled and (cfg.passes is None or passes < cfg.passes) and self.has_budget:
            per_key = _of(stored(), items)
            redo = [(k, r) for k, r in outlying_rounds(per_key, cfg.stable_within) if counts[k] < cfg.per_key]
            if not redo:
                break
            # the farthest rounds first, so a budget that runs out leaves the mildest; ties shuffled
            random.Random(seed * 7919 + passes).shuffle(redo)
            redo.sort(key=lambda kr: -_off(per_key[kr[0]], kr[1]))
            if on_pass is not None:
                on_pass(passes, len(redo))
            t0 = time.perf_counter()
            for key, r in redo:
                if not self.has_budget:
                    break
                m = self.measure(functools.partial(load, items[key]), extra=True)
                save(items[key], r, m)
                self.remeasured_rounds += 1
                counts[key] += 1
                busy += m.stats.busy_s
                if on_measured is not None:
                    on_measured()
            passes += 1
            rest = cfg.pass_gap_s - (time.perf_counter() - t0)
            if rest > 0 and self.has_budget and (cfg.passes is None or passes < cfg.passes):
                self.pause(min(rest, self.budget_s - self.extra_s))
        unstable = sorted({k for k, _ in outlying_rounds(_of(stored(), items), cfg.stable_within)})
        return unstable, busy

    def summary(self) -> str:
        """One line for the end of a run; empty when nothing was disturbed."""
        if not (self.retaken or self.remeasured_rounds or self.still_disturbed):
            return ""
        text = (f"re-took {self.retaken} disturbed measurement(s) and re-measured {self.remeasured_rounds} "
                f"round(s) that disagreed, in {self.extra_s:.1f} s of a {self.budget_s:.1f} s budget")  # fmt: skip
        if self.still_disturbed:
            text += f"; {self.still_disturbed} kept while still disturbed (retries or budget spent)"
        return text


def _off(rounds: Mapping[int, float], r: int) -> float:
    """How far round ``r`` lies from the key's other rounds (the measure :func:`outlying_rounds` judges)."""
    if len(rounds) == 2:
        return rounds[r] / min(rounds.values()) - 1
    return abs(rounds[r] / statistics.median(rounds.values()) - 1)


def _of(per_key: dict[str, dict[int, float]], items: Mapping[str, Any]) -> dict[str, dict[int, float]]:
    return {k: v for k, v in per_key.items() if k in items}


def outlying_rounds(per_key: Mapping[str, Mapping[int, float]], spread: float) -> list[tuple[str, int]]:
    """``(key, round)`` of each key whose rounds disagree by more than ``spread``: with 3 rounds
    or more, its round farthest from its median, when beyond ``spread`` of it; with 2, the slower
    one, when more than ``spread`` slower than the other (noise only adds time); with 1, none."""
    out: list[tuple[str, int]] = []
    for key, rounds in per_key.items():
        if len(rounds) < 2:
            continue
        if len(rounds) == 2:
            (_, a), (rb, b) = sorted(rounds.items(), key=lambda kv: kv[1])
            if a > 0 and b / a - 1 > spread:
                out.append((key, rb))
            continue
        med = statistics.median(rounds.values())
        if med <= 0:
            continue
        r, x = max(rounds.items(), key=lambda kv: abs(kv[1] / med - 1))
        if abs(x / med - 1) > spread:
            out.append((key, r))
    return out
