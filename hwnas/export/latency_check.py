"""Measure exported files on the target device and hold them to the budget.

Every exported file whose format the device runs is loaded through the devices layer and timed
in rounds (:mod:`hwnas.latency.verdict`: the median over rounds of each round's ``statistic`` run,
fastest by default, as the LUT's kernels and the calibration's networks were measured, with the half-range of the rounds as its noise; more rounds when the first ones land within noise of the budget). Each
round is watched (:mod:`hwnas.latency.disturbance`): one taken while other processes competed for
the CPU is re-taken after a pause. With a LUT, the architecture's predicted latency (calibrated
where the LUT holds a calibration) goes beside it; the LUT must describe the device, unless
forced; the prediction goes beside the file of the LUT's precision (an int8 LUT predicts the int8
file, profiled with ``precision=int8``). The verdict of each budgeted file is returned by name, so the caller can fail.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from typing import Any

from hwnas.core.errors import HwnasError
from hwnas.devices.base import Device, TimingConfig
from hwnas.devices.conditions import run_conditions
from hwnas.export.pipeline import Exported, update_card_latency
from hwnas.latency.disturbance import STABLE_WITHIN, Guard, GuardConfig
from hwnas.latency.statistic import STATISTICS, check_statistic, of_stats
from hwnas.latency.verdict import ROUNDS, Verdict, measure_verdict, noise_of
from hwnas.spaces.arch import Architecture


def measure_file(
    device: Device, data: bytes, shape: tuple[int, ...], budget_ms: float | None = None, statistic: str = "fastest"
) -> tuple[float, float, Verdict | None, dict[str, float]]:
    """(median over rounds of each round's ``statistic`` run, its noise, the verdict against
    ``budget_ms`` if given, and the median over rounds of each statistic), in ms."""
    check_statistic(statistic)
    runner = device.load(data, shape)
    # every round may be re-taken while the machine is busy (up to 4x the rounds' own time; a file has few rounds)
    watch = Guard(device, TimingConfig(), planned=1, config=GuardConfig(extra_ratio=4.0))
    taken: list[Any] = []
    records: list[dict[str, Any]] = []

    def one_round() -> tuple[float, bool]:
        watch.planned += 1
        m = watch.measure(lambda: runner, close=False)  # the same runner serves every round
        taken.append(m.stats)
        records.append(m.record())
        return of_stats(m.stats, statistic), m.disturbed

    try:
        if budget_ms is not None:
            verdict = measure_verdict(one_round, budget_ms, statistic=statistic)
            # the host's noise over the rounds, labelled noisy when they spread beyond the profile's agreement
            conditions = run_conditions(records, [list(verdict.rounds_ms)], spread_limit=STABLE_WITHIN)
            verdict = dataclasses.replace(verdict, conditions=conditions)
            measured, noise = verdict.measured_ms, verdict.noise_ms
        else:
            rounds = [one_round()[0] for _ in range(ROUNDS)]
            verdict, measured, noise = None, statistics.median(rounds), noise_of(rounds)
    finally:
        runner.close()
    figures = {name: statistics.median(of_stats(st, name) for st in taken) for name in STATISTICS}
    return measured, noise, verdict, figures


def check_latency(
    results: Sequence[Exported],
    arch: Architecture,
    device: Device,
    lut: str | None = None,
    budget_ms: float | None = None,
    force: bool = False,
    statistic: str = "fastest",
) -> dict[str, Verdict]:
    """Fill in measured (and predicted) latency for the files ``device`` runs, in the ``statistic``
    of each round's runs (the prediction times the LUT's factor for it); with a budget, return
    each measured file's verdict by file name."""
    if budget_ms is not None and not (math.isfinite(budget_ms) and budget_ms > 0):
        raise HwnasError(f"the latency budget must be a finite number of ms > 0, got {budget_ms}")
    predicted, lut_precision = None, None
    if lut is not None:
        from hwnas.latency.predictor import LatencyPredictor

        predictor = LatencyPredictor.from_lut(lut)
        predictor.table.check_device(device.fingerprint(), force=force)
        predicted = predictor.predict(arch, statistic)
        lut_precision = str(predictor.table.fingerprint.get("precision", "fp32"))
    verdicts: dict[str, Verdict] = {}
    for item in results:
        if item.format != device.format:
            continue
        shape = tuple(int(v) for v in item.card["input"]["shape"]) if "batch" not in item.card["input"]["shape"] else (
            1, *item.card["input"]["shape"][1:])  # fmt: skip
        item.measured_ms, item.noise_ms, verdict, item.figures_ms = measure_file(
            device, item.path.read_bytes(), shape, budget_ms, statistic
        )
        item.statistic = statistic
        item.predicted_ms = predicted if item.precision == lut_precision else None  # int8 LUT: the int8 file
        item.device = device.spec
        if verdict is not None:
            item.verdict = verdict.to_dict()
            verdicts[item.path.name] = verdict
        update_card_latency(item)
    return verdicts


def judged(verdicts: dict[str, Verdict], outcome: str, device: str) -> list[str]:
    """One line per file whose verdict is ``outcome``."""
    return [f"{name} {v.text()} on {device}" for name, v in verdicts.items() if v.outcome == outcome]
