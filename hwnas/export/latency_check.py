"""Measure exported files on the target device and hold them to the budget.

Every exported file whose format the device runs is loaded through the devices layer and timed
(3 rounds of the usual timing, median). With a LUT, the architecture's predicted latency
(calibrated where the LUT holds a calibration) goes beside it; the LUT must describe the device,
unless forced. Files measured over the budget are returned by name, so the caller can fail.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from hwnas.devices.base import Device, TimingConfig
from hwnas.errors import HwnasError
from hwnas.export.pipeline import Exported, update_card_latency
from hwnas.nas.spaces.arch import Architecture

ROUNDS = 3


def measure_file(device: Device, data: bytes, shape: tuple[int, ...]) -> float:
    runner = device.load(data, shape)
    try:
        return statistics.median(device.measure(runner, TimingConfig()).median_ms for _ in range(ROUNDS))
    finally:
        runner.close()


def check_latency(
    results: Sequence[Exported],
    arch: Architecture,
    device: Device,
    lut: str | None = None,
    budget_ms: float | None = None,
    force: bool = False,
) -> list[str]:
    """Fill in measured (and predicted) latency for the files ``device`` runs; return the over-budget ones."""
    if budget_ms is not None and not (math.isfinite(budget_ms) and budget_ms > 0):
        raise HwnasError(f"the latency budget must be a finite number of ms > 0, got {budget_ms}")
    predicted = None
    if lut is not None:
        from hwnas.latency.predictor import LatencyPredictor

        predictor = LatencyPredictor.from_lut(lut)
        predictor.table.check_device(device.fingerprint(), force=force)
        predicted = predictor.predict(arch)
    over = []
    for item in results:
        if item.format != device.format:
            continue
        shape = tuple(int(v) for v in item.card["input"]["shape"]) if "batch" not in item.card["input"]["shape"] else (
            1, *item.card["input"]["shape"][1:])  # fmt: skip
        item.measured_ms = measure_file(device, item.path.read_bytes(), shape)
        item.predicted_ms = predicted if item.precision == "fp32" else None
        item.device = device.spec
        update_card_latency(item)
        if budget_ms is not None and item.measured_ms > budget_ms:
            over.append(f"{item.path.name} measured {item.measured_ms:.3f} ms > {budget_ms:g} ms on {device.spec}")
    return over
