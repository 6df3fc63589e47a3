"""Which statistic of a network's runs a latency budget means, and the device's factor to it.

hwnas times every round robustly by its **fastest** run (:attr:`hwnas.devices.Stats.round_ms`): a
neighbour on the machine only ever adds time. The LUT, its calibration and the search predict that
statistic. An app, though, runs at its typical run, and product budgets are stated as the median
or the 90th percentile. ``--statistic`` says which one a budget means:

* ``fastest``: the fastest run of each round (what the LUT measures);
* ``median``: each round's median run;
* ``p90``: each round's 90th percentile run.

Every statistic of a measured file is taken from its own runs. A *prediction* of ``median`` or
``p90`` is the calibrated fastest-run prediction times the device's **factor**: over the networks
the calibration timed (``hwnas lut validate --fit``), the median of each network's median (p90)
over its fastest run, in rounds the disturbance guard did not flag. The factor's spread over
those networks (10th to 90th percentile) goes with it. On a phone the factor is the phone's: it
comes from the runs of the device the LUT was calibrated on. There ``p90`` is what
``benchmark_model`` prints: its p95 where it prints percentiles, else its slowest run (see
:meth:`hwnas.devices.adb.AdbDevice.measure`), so a phone's p90 factor errs on the slow side.
"""

from __future__ import annotations

import json
import statistics as stats
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hwnas.core.errors import HwnasError

STATISTICS = ("fastest", "median", "p90")
DEFAULT_STATISTIC = "fastest"
FACTORS_META = "statistic_factors"
_STATS_FIELD = {"fastest": "min_ms", "median": "median_ms", "p90": "p90_ms"}


def check_statistic(name: str) -> str:
    """``name`` if it is a statistic hwnas knows, else a one-line error."""
    if name not in STATISTICS:
        raise HwnasError(f"unknown statistic {name!r}; choose one of {', '.join(STATISTICS)} (--statistic)")
    return name


def of_stats(stats_: Any, statistic: str) -> float:
    """The ``statistic`` of one timed round (a :class:`~hwnas.devices.Stats` or its dict), in ms;
    ``fastest`` falls back to the median where the source did not report its minimum."""

    def get(key: str) -> Any:
        return stats_.get(key) if isinstance(stats_, Mapping) else getattr(stats_, key)

    value = get(_STATS_FIELD[check_statistic(statistic)])
    return float(value if value is not None else get("median_ms"))


@dataclass(frozen=True)
class Factor:
    """One statistic over the fastest run: the median over networks and its 10-90% spread."""

    factor: float
    lo: float
    hi: float
    networks: int

    def text(self) -> str:
        return f"{self.factor:.3f}x (10-90% over {self.networks} networks: {self.lo:.3f}-{self.hi:.3f})"


def factors_from_rounds(rounds: Mapping[str, Sequence[tuple[float, float, float]]]) -> dict[str, Factor]:
    """The factors of ``median`` and ``p90`` from each network's undisturbed rounds, given as
    ``(fastest, median, p90)`` in ms per round, keyed by network."""
    out: dict[str, Factor] = {}
    for i, name in ((1, "median"), (2, "p90")):
        per_net = [stats.median(r[i] / r[0] for r in rs) for rs in rounds.values() if rs and all(r[0] > 0 for r in rs)]
        if not per_net:
            continue
        q = stats.quantiles(per_net, n=10, method="inclusive") if len(per_net) > 1 else [per_net[0]] * 9
        out[name] = Factor(stats.median(per_net), q[0], q[-1], len(per_net))
    return out


def factors_to_meta(factors: Mapping[str, Factor], device: Mapping[str, Any]) -> str:
    return json.dumps({"device": dict(device), **{k: vars(f) for k, f in factors.items()}}, sort_keys=True)


def read_factors(meta: Mapping[str, Any], source: str) -> dict[str, Factor]:
    """The factors a LUT holds (none for a LUT calibrated before hwnas kept them)."""
    text = meta.get(FACTORS_META)
    if text is None:
        return {}
    try:
        data = json.loads(text)
        out = {}
        for name in ("median", "p90"):
            if name in data:
                d = data[name]
                f = Factor(float(d["factor"]), float(d["lo"]), float(d["hi"]), int(d["networks"]))
                if not (f.factor > 0 and f.lo > 0 and f.hi > 0):
                    raise ValueError(name)
                out[name] = f
        return out
    except (ValueError, KeyError, TypeError) as exc:
        raise HwnasError(f"{source}: damaged statistic factors ({exc}); recalibrate with 'hwnas lut validate "
                         f"{source} --space S --device D --fit'") from None  # fmt: skip


def factor_for(factors: Mapping[str, Factor], statistic: str, source: str) -> float:
    """The multiplier from a fastest-run prediction to ``statistic`` (1 for ``fastest``); a LUT
    without that factor is a one-line error that says how to recalibrate."""
    if check_statistic(statistic) == "fastest":
        return 1.0
    if statistic not in factors:
        raise HwnasError(f"{source} holds no {statistic}/fastest factor (calibrated before hwnas measured it, or "
                         f"never calibrated): recalibrate with 'hwnas lut validate {source} --space S --device D "
                         f"--fit', or give --statistic fastest")  # fmt: skip
    return factors[statistic].factor
