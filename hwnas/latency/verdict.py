"""A budget verdict that knows how noisy its measurement was.

A file is timed in several rounds (each round: warm-up, then many runs; the round's latency is
its fastest run, :attr:`hwnas.devices.Stats.round_ms`, the statistic the LUT and its calibration
were measured with, or its median or p90 run where the budget means that, see
:mod:`hwnas.latency.statistic`). The measurement is the median over rounds; its noise is half the range of
the rounds, and never less than ``NOISE_FLOOR`` of the measurement (a few rounds that happen to
agree do not prove a quieter machine than that). With ``m`` the measurement, ``n`` its noise and
``B`` the budget:

* ``m <= B``: **within budget** (exit code 0);
* ``B < m <= B + n``: **within noise of the budget**: the file may or may not be over; the
  measurement cannot tell (exit code 3 from ``hwnas export`` and ``hwnas bench``);
* ``m > B + n``: **over budget**, beyond the measured noise (exit code 1).

When the first rounds land within noise of the budget (``|m - B| <= n``, on either side),
:func:`measure_verdict` takes more rounds before it judges, so the verdict rests on more data.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hwnas.devices.conditions import RunConditions

WITHIN = "within budget"
NOISE = "within noise of the budget"
OVER = "over budget"
EXIT_CODES = {WITHIN: 0, OVER: 1, NOISE: 3}
NOISE_FLOOR = 0.01  # relative: the least noise a measurement is credited with
ROUNDS = 5  # rounds of a first measurement
EXTRA_ROUNDS = 6  # more rounds when the first ones land within noise of the budget


@dataclass(frozen=True)
class Verdict:
    """A measurement against a budget: the outcome, the figure, its noise and the evidence."""

    outcome: str
    measured_ms: float
    noise_ms: float
    budget_ms: float
    rounds_ms: tuple[float, ...]
    disturbed_rounds: int = 0  # rounds kept although the machine was busy while they ran
    statistic: str = "fastest"  # which run of each round the rounds are (hwnas.latency.statistic)
    conditions: RunConditions | None = None  # the host's noise while the rounds ran

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def text(self) -> str:
        """e.g. ``measured 0.459 ms +- 0.012 (8 rounds) against 0.431 ms: over budget``."""
        extra = f"; {self.disturbed_rounds} round(s) taken on a busy machine" if self.disturbed_rounds else ""
        noisy = self.conditions.noisy() if self.conditions is not None else []
        label = f" [noisy run: {'; '.join(noisy)}]" if noisy else ""
        return (f"measured {self.measured_ms:.3f} ms +- {self.noise_ms:.3f} by its {self.statistic} run "
                f"({len(self.rounds_ms)} rounds{extra}) against {self.budget_ms:g} ms: {self.outcome}{label}")  # fmt: skip

    def to_dict(self) -> dict[str, object]:
        return {"outcome": self.outcome, "measured_ms": self.measured_ms, "noise_ms": self.noise_ms,
                "budget_ms": self.budget_ms, "rounds_ms": list(self.rounds_ms),
                "disturbed_rounds": self.disturbed_rounds, "statistic": self.statistic,
                "exit_code": self.exit_code,
                "conditions": self.conditions.to_dict() if self.conditions is not None else None}  # fmt: skip


def noise_of(rounds_ms: Sequence[float]) -> float:
    """Half the range of the rounds' latencies, at least ``NOISE_FLOOR`` of their median (ms)."""
    m = statistics.median(rounds_ms)
    return max(0.5 * (max(rounds_ms) - min(rounds_ms)), NOISE_FLOOR * m)


def judge(
    rounds_ms: Sequence[float], budget_ms: float, disturbed_rounds: int = 0, statistic: str = "fastest"
) -> Verdict:
    """The verdict of the rounds' latencies ``rounds_ms`` (each round's ``statistic`` run) against
    ``budget_ms`` (module docstring)."""
    if not rounds_ms:
        raise ValueError("no rounds to judge")
    m = statistics.median(rounds_ms)
    n = noise_of(rounds_ms)
    outcome = WITHIN if m <= budget_ms else NOISE if m - n <= budget_ms else OVER
    return Verdict(outcome, m, n, budget_ms, tuple(rounds_ms), disturbed_rounds, statistic)


def near(verdict: Verdict) -> bool:
    """Whether the measurement lies within its own noise of the budget, on either side."""
    return abs(verdict.measured_ms - verdict.budget_ms) <= verdict.noise_ms


def measure_verdict(
    measure_round: Callable[[], tuple[float, bool]],
    budget_ms: float,
    rounds: int = ROUNDS,
    extra_rounds: int = EXTRA_ROUNDS,
    statistic: str = "fastest",
) -> Verdict:
    """Take ``rounds`` rounds (``measure_round()`` -> (round latency in ms, disturbed)), judge; when
    that lands within noise of the budget, take ``extra_rounds`` more and judge them all."""
    taken = [measure_round() for _ in range(rounds)]
    verdict = judge([ms for ms, _ in taken], budget_ms, sum(d for _, d in taken), statistic)
    if near(verdict) and extra_rounds > 0:
        taken += [measure_round() for _ in range(extra_rounds)]
        verdict = judge([ms for ms, _ in taken], budget_ms, sum(d for _, d in taken), statistic)
    return verdict
