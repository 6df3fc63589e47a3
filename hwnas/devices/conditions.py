"""The machine's conditions around a timing: is anything else competing for the CPU?

A latency measured while another process holds a core, while the hypervisor steals cycles, or
while the load is high is a measurement of the neighbours as much as of the model. This module
reads what Linux exposes, without privileges:

* load average (``os.getloadavg``);
* CPU time used by *other* processes over a span: the busy jiffies of ``/proc/stat`` (all CPUs)
  minus this process's own (``/proc/self/stat``, all its threads and its reaped children), in
  cores, i.e.
  ``others = (d busy_all - d busy_self) / (HZ * d wall)``;
* steal time over the span, as a share of all CPU time (``/proc/stat``'s 8th field);
* the frequency governor of cpu0 where ``/sys`` exposes it.

A span is *disturbed* when other processes used more than half of the cores this timing does
not need (at least half a core), or when the hypervisor stole more than 10% of the CPU time.
The counters tick in jiffies (1/HZ s, 10 ms), so over a short span the estimate is coarse: the
other processes' share is judged by its lower bound, less ``cpus + 1`` jiffies of rounding
(``others_slack``); a span of a few milliseconds is never judged by it (the spread across rounds
still judges it).
Where ``/proc`` is not readable (macOS, Windows) the fields are ``None`` and nothing is ever
judged disturbed: the spread across rounds still is.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
STEAL_LIMIT = 0.10  # share of CPU time stolen by the hypervisor that disturbs a timing


@dataclass(frozen=True)
class CpuSnapshot:
    """Cumulative CPU counters at one instant (jiffies), or ``None`` where not readable."""

    wall: float
    busy_all: int | None
    steal_all: int | None
    total_all: int | None
    busy_self: int | None

    @classmethod
    def take(cls) -> CpuSnapshot:
        busy = steal = total = own = None
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            # user nice system idle iowait irq softirq steal guest guest_nice
            total = sum(fields[:8])
            busy = total - fields[3] - fields[4]
            steal = fields[7] if len(fields) > 7 else 0
            stat = Path("/proc/self/stat").read_text()
            after_name = stat.rsplit(")", 1)[1].split()
            # utime, stime (all threads), cutime, cstime (children reaped so far, e.g. an isolated timing)
            own = sum(int(v) for v in after_name[11:15])
        except (OSError, ValueError, IndexError):
            busy = steal = total = own = None
        return cls(time.monotonic(), busy, steal, total, own)


@dataclass(frozen=True)
class Conditions:
    """What else the machine did over a span (see the module docstring for the formulas)."""

    seconds: float
    cpus: int
    load1: float | None
    others_cores: float | None  # CPU used by other processes, in cores
    others_slack: float | None  # its rounding error, in cores (cpus + 1 jiffies over the span)
    steal: float | None  # share of all CPU time stolen by the hypervisor
    governor: str | None

    def disturbed(self, threads: int = 1) -> bool:
        """Whether the span was shared with enough other work to distrust a timing of it."""
        return bool(self.reasons(threads))

    def reasons(self, threads: int = 1) -> list[str]:
        """Why the span is disturbed, in words; empty when it is not."""
        out = []
        limit = others_limit(self.cpus, threads)
        if self.others_cores is not None and self.others_cores - (self.others_slack or 0.0) > limit:
            out.append(f"other processes used {self.others_cores:.1f} of {self.cpus} cores")
        if self.steal is not None and self.steal > STEAL_LIMIT:
            out.append(f"the hypervisor stole {self.steal:.0%} of the CPU time")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        parts = [f"{self.cpus} cores"]
        if self.load1 is not None:
            parts.append(f"load average {self.load1:.2f}")
        if self.others_cores is not None:
            parts.append(f"other processes {self.others_cores:.2f} cores")
        if self.steal is not None:
            parts.append(f"steal {self.steal:.1%}")
        if self.governor:
            parts.append(f"governor {self.governor}")
        return ", ".join(parts)


def others_limit(cpus: int, threads: int) -> float:
    """Cores other processes may use before a timing with ``threads`` threads counts as disturbed."""
    return 0.5 * max(1, cpus - threads)


def cpu_count() -> int:
    """CPUs of the machine (what ``/proc/stat`` sums over), not only those this process may use."""
    return os.cpu_count() or 1


def governor() -> str | None:
    try:
        return Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip() or None
    except OSError:
        return None


def between(a: CpuSnapshot, b: CpuSnapshot) -> Conditions:
    """The conditions over the span from snapshot ``a`` to snapshot ``b``."""
    seconds = max(b.wall - a.wall, 1e-9)
    others = slack = steal = None
    if None not in (a.busy_all, b.busy_all, a.busy_self, b.busy_self):
        used = (b.busy_all - a.busy_all) - (b.busy_self - a.busy_self)  # type: ignore[operator]
        others = max(0.0, used / _HZ / seconds)
        slack = (cpu_count() + 1) / _HZ / seconds
    if None not in (a.steal_all, b.steal_all, a.total_all, b.total_all):
        total = b.total_all - a.total_all  # type: ignore[operator]
        steal = (b.steal_all - a.steal_all) / total if total > 0 else 0.0  # type: ignore[operator]
    try:
        load1: float | None = os.getloadavg()[0]
    except (OSError, AttributeError):
        load1 = None
    return Conditions(seconds, cpu_count(), load1, others, slack, steal, governor())


def sample(seconds: float = 0.5) -> Conditions:
    """The conditions over the next ``seconds`` (this process sleeps meanwhile)."""
    a = CpuSnapshot.take()
    time.sleep(seconds)
    return between(a, CpuSnapshot.take())


NOISY_DISTURBED = 0.10  # a run with more of its measurements disturbed than this is labelled noisy


@dataclass(frozen=True)
class RunConditions:
    """The host's noise over a whole run (a validation, a verdict): what else ran while it measured,
    and how well its rounds agreed."""

    measurements: int
    others_median: float | None  # cores used by other processes, median over measurements
    others_max: float | None
    steal_median: float | None  # share of CPU time the hypervisor stole
    steal_max: float | None
    disturbed: int  # measurements kept although disturbed
    round_spread: float | None  # median over keys of (max - min) / median of their rounds
    spread_limit: float | None = None  # the run's own threshold on it (None: none)

    def noisy(self) -> list[str]:
        """Why the run was noisier than its own thresholds, in words; empty when it was not."""
        out = []
        if self.measurements and self.disturbed / self.measurements > NOISY_DISTURBED:
            out.append(f"{self.disturbed} of {self.measurements} measurements were taken while other processes "
                       "competed for the CPU")  # fmt: skip
        if self.steal_median is not None and self.steal_median > STEAL_LIMIT:
            out.append(f"the hypervisor stole {self.steal_median:.0%} of the CPU time (median)")
        if self.spread_limit is not None and self.round_spread is not None and self.round_spread > self.spread_limit:
            out.append(f"the rounds spread {self.round_spread:.1%} (median), above {self.spread_limit:.0%}")
        return out

    def text(self) -> str:
        """e.g. ``others' CPU 0.05 cores (max 1.02), steal 0.3% (max 4.0%), round spread 1.2%, 0 of 300 disturbed``."""
        parts = []
        if self.others_median is not None:
            parts.append(f"others' CPU {self.others_median:.2f} cores (max {self.others_max:.2f})")
        if self.steal_median is not None:
            parts.append(f"steal {self.steal_median:.1%} (max {self.steal_max:.1%})")
        if self.round_spread is not None:
            parts.append(f"round spread {self.round_spread:.1%}")
        parts.append(f"{self.disturbed} of {self.measurements} measurements disturbed")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "noisy": self.noisy(), "text": self.text()}


def run_conditions(
    records: list[dict[str, Any]], rounds: list[list[float]], spread_limit: float | None = None
) -> RunConditions:
    """Summarize the conditions ``records`` of a run's measurements (``others_cores``, ``steal``,
    ``disturbed``, as the LUT's ``conditions`` table holds them) and its keys' ``rounds``."""

    def med(values: list[float]) -> float | None:
        return float(statistics.median(values)) if values else None

    others = [float(r["others_cores"]) for r in records if r.get("others_cores") is not None]
    steal = [float(r["steal"]) for r in records if r.get("steal") is not None]
    spreads = [(max(r) - min(r)) / statistics.median(r) for r in rounds if len(r) >= 2 and min(r) > 0]
    return RunConditions(
        measurements=len(records),
        others_median=med(others),
        others_max=max(others) if others else None,
        steal_median=med(steal),
        steal_max=max(steal) if steal else None,
        disturbed=sum(1 for r in records if r.get("disturbed")),
        round_spread=med(spreads),
        spread_limit=spread_limit,
    )
