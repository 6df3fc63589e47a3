"""Disturbed measurements: detect them, re-take them (up to a cap), and say so.

Two detectors, because each misses what the other sees:

1. **What else ran** (:mod:`hwnas.devices.conditions`): every measurement is taken between two
   CPU snapshots. When other processes used more than half of the cores the timing leaves free,
   or the hypervisor stole over 10% of the CPU, the measurement is disturbed: wait
   ``backoff_s`` (doubled each time) and take it again, up to ``retries`` times.
2. **The spread across rounds**: a kernel is timed in several rounds, in shuffled orders. With
   at least 3 rounds, a round whose latency (its fastest run) is more than ``spread`` away from the median across
   rounds (``|x / median - 1| > spread``) is an outlier, whatever the snapshots said (a short
   burst, a frequency change, a neighbour in another VM): the farthest such round of each key is
   re-measured once, and replaces the stored one.

Both share one cap per run: at most ``cap`` times the planned number of measurements are
re-taken, so a machine that is busy all the time makes a run slower by a bounded factor, never
endless; what could not be re-taken stays marked ``disturbed`` in the LUT's ``conditions`` table
and is counted in the report.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from hwnas.devices.base import Device, Runner, Stats, TimingConfig
from hwnas.devices.conditions import Conditions


@dataclass(frozen=True)
class GuardConfig:
    """How hard to try for undisturbed measurements (see the module docstring)."""

    retries: int = 3
    backoff_s: float = 0.25
    spread: float = 0.15
    cap: float = 0.25
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
    """Takes measurements for one run and counts re-takes against the run's cap."""

    device: Device
    timing: TimingConfig
    planned: int
    config: GuardConfig = field(default_factory=GuardConfig)
    sleep: Callable[[float], None] = time.sleep
    retaken: int = 0  # re-takes of disturbed measurements
    remeasured_rounds: int = 0  # outlying rounds re-measured
    still_disturbed: int = 0

    @property
    def budget_left(self) -> int:
        cap = int(self.config.cap * self.planned) if self.config.enabled else 0
        return max(0, cap - self.retaken - self.remeasured_rounds)

    def measure(self, load: Callable[[], Runner], close: bool = True) -> Measured:
        """Load once, time, and re-time while the span was disturbed (within retries and cap);
        the runner is closed afterwards unless ``close`` is False (a runner the caller reuses)."""
        runner = load()
        try:
            attempts = 0
            while True:
                stats, cond = self.device.measure_watched(runner, self.timing)
                attempts += 1
                why = cond.reasons(self.device.threads)
                if not why or attempts > self.config.retries or self.budget_left == 0:
                    break
                self.retaken += 1
                self.sleep(self.config.backoff_s * 2 ** (attempts - 1))
        finally:
            if close:
                runner.close()
        disturbed = bool(why)
        self.still_disturbed += disturbed
        return Measured(stats, cond, attempts, disturbed)

    def take_remeasure(self) -> bool:
        """Spend one unit of the cap on an outlying round; False when the cap is spent."""
        if self.budget_left == 0:
            return False
        self.remeasured_rounds += 1
        return True

    def summary(self) -> str:
        """One line for the end of a run; empty when nothing was disturbed."""
        if not (self.retaken or self.remeasured_rounds or self.still_disturbed):
            return ""
        text = (f"re-took {self.retaken} disturbed measurement(s) and re-measured {self.remeasured_rounds} "
                f"outlying round(s)")  # fmt: skip
        if self.still_disturbed:
            text += f"; {self.still_disturbed} kept while still disturbed (cap or retries reached)"
        return text


def outlying_rounds(per_key: Mapping[str, Mapping[int, float]], spread: float) -> list[tuple[str, int]]:
    """``(key, round)`` of the farthest round of each key that lies beyond ``spread`` of its median.

    Only keys with at least 3 rounds are judged (with 2, neither round can be called the odd one).
    """
    out = []
    for key, rounds in per_key.items():
        if len(rounds) < 3:
            continue
        med = statistics.median(rounds.values())
        if med <= 0:
            continue
        r, x = max(rounds.items(), key=lambda kv: abs(kv[1] / med - 1))
        if abs(x / med - 1) > spread:
            out.append((key, r))
    return out
