"""Which run of a round a budget means (hwnas.latency.statistic): a file whose median run is 1.3x
its fastest is over a budget between the two by its median and within it by its fastest."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest

from hwnas.core.errors import HwnasError
from hwnas.devices import open_device
from hwnas.devices.base import Stats, TimingConfig
from hwnas.export.latency_check import measure_file
from hwnas.latency.network_timing import network_artifacts, network_input_shape
from hwnas.latency.statistic import Factor, factor_for, factors_from_rounds, of_stats
from hwnas.latency.verdict import OVER, WITHIN
from hwnas.spaces import get_space

FASTEST_MS, SLOW_MS = 1.0, 1.3  # 5 runs at the fastest, 16 at 1.3x: median and p90 are 1.3x the fastest


def _planted_runs() -> list[int]:
    return [int(FASTEST_MS * 1e6)] * 5 + [int(SLOW_MS * 1e6)] * 16


def test_each_statistic_of_a_round_is_its_own_run() -> None:
    stats = Stats.from_samples([int(ms * 1e6) for ms in (3.0, 1.0, 2.0, 5.0, 4.0, 9.0, 6.0, 7.0, 8.0, 10.0)], 2, 0.1)
    assert of_stats(stats, "fastest") == 1.0 and of_stats(stats, "median") == 5.5
    assert of_stats(stats, "p90") == pytest.approx(np.quantile(np.arange(1.0, 11.0), 0.9))
    assert of_stats(stats.to_dict(), "median") == 5.5  # the dict a LUT or a card holds
    assert of_stats({"median_ms": 2.0, "min_ms": None}, "fastest") == 2.0  # a source without its minimum
    with pytest.raises(HwnasError, match="unknown statistic 'mean'; choose one of fastest, median, p90"):
        of_stats(stats, "mean")


def test_the_factor_is_the_median_over_networks_of_each_networks_median_ratio() -> None:
    rounds = {  # (fastest, median, p90) per round
        "a": [(1.0, 1.2, 1.5), (1.0, 1.4, 1.9), (2.0, 2.2, 2.4)],  # median ratios 1.2, 1.4, 1.1 -> 1.2
        "b": [(1.0, 1.5, 2.0)],  # 1.5
        "c": [(4.0, 4.4, 6.0), (5.0, 5.5, 5.5)],  # 1.1, 1.1 -> 1.1
    }
    f = factors_from_rounds(rounds)
    assert f["median"].factor == pytest.approx(1.2) and f["median"].networks == 3
    assert f["median"].lo == pytest.approx(np.quantile([1.2, 1.5, 1.1], 0.1))
    assert f["median"].hi == pytest.approx(np.quantile([1.2, 1.5, 1.1], 0.9))
    p90 = [statistics.median([1.5, 1.9, 1.2]), 2.0, statistics.median([1.5, 1.1])]
    assert f["p90"].factor == pytest.approx(statistics.median(p90))
    assert factor_for(f, "fastest", "x.lut") == 1.0 and factor_for(f, "p90", "x.lut") == f["p90"].factor
    with pytest.raises(HwnasError, match=r"x\.lut holds no median/fastest factor.*--fit.*--statistic fastest"):
        factor_for({"p90": Factor(1.4, 1.3, 1.5, 3)}, "median", "x.lut")


@pytest.fixture(scope="module")
def planted() -> tuple:
    """A real ONNX Runtime device whose every timed series is the planted runs."""
    real = open_device("ort-cpu:threads=1")

    class Planted(type(real)):  # type: ignore[misc]
        def measure(self, runner, timing: TimingConfig | None = None) -> Stats:  # type: ignore[no-untyped-def]
            runner.run()  # the model is real and runs; its timing is the plant
            return Stats.from_samples(_planted_runs(), 2, 0.01)

    device = Planted(**real.options)
    arch = get_space("tiny").sample(0)
    return device, network_artifacts([arch], "onnx")[0], network_input_shape(arch)


def test_a_budget_between_fastest_and_median_is_over_by_the_median_and_within_by_the_fastest(planted) -> None:
    device, onnx, shape = planted
    budget = (FASTEST_MS + SLOW_MS) / 2
    ms, _, fastest, figures = measure_file(device, onnx, shape, budget, statistic="fastest")
    assert fastest is not None and fastest.outcome == WITHIN and ms == pytest.approx(FASTEST_MS)
    ms, _, median, figures = measure_file(device, onnx, shape, budget, statistic="median")
    assert median is not None and median.outcome == OVER and ms == pytest.approx(SLOW_MS)
    assert "by its median run" in median.text() and median.to_dict()["statistic"] == "median"
    assert figures == pytest.approx({"fastest": FASTEST_MS, "median": SLOW_MS, "p90": SLOW_MS})
    with pytest.raises(HwnasError, match="unknown statistic"):
        measure_file(device, onnx, shape, budget, statistic="typical")


def test_export_cards_name_the_statistic_and_give_all_three(planted, tmp_path: Path) -> None:
    from hwnas.export.child_file import Child
    from hwnas.models.builder import build_model
    from hwnas.workflows import export_and_check

    device, _, _ = planted
    arch = get_space("tiny").sample(0)
    child = Child(arch, build_model(arch).eval())
    outcome = export_and_check(child, tmp_path / "e", ["onnx"], ["fp32"], device=device, budget_ms=1.15,
                               statistic="median", stem="m")  # fmt: skip
    card = outcome.files[0].card["latency"]
    assert card["statistic"] == "median" and card["verdict"]["outcome"] == OVER
    assert card["measured_by_statistic_ms"] == pytest.approx({"fastest": 1.0, "median": 1.3, "p90": 1.3})
    assert card["measured_ms"] == pytest.approx(1.3)
