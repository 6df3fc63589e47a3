"""A noisy phase during a profile: re-measured until the rounds agree, or named, never kept silently.

The device is a real ONNX Runtime device whose timings are inflated for a while (a neighbour VM,
a frequency drop: noise the CPU snapshots cannot see, so only the rounds' disagreement shows it).
The checks read the LUT file itself, independently of what the profiler reports.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hwnas.devices import TimingConfig, open_device
from hwnas.devices.base import Device, Runner, Stats
from hwnas.latency.artifact_cache import ArtifactCache
from hwnas.latency.disturbance import STABLE_WITHIN, GuardConfig
from hwnas.latency.profiler import profile
from hwnas.latency.stability import lut_warnings, unstable_kernels
from hwnas.latency.store import ROW_COLUMNS, LutStore
from hwnas.spaces import get_space

from conftest import run_cli

TIMING = TimingConfig(warmup_runs=2, warmup_s=0.002, min_runs=5, min_time_s=0.02)
KERNELS = sorted(set(get_space("tiny").kernels()))[:30]
INFLATION = 3.0


def inflated_device(factor_of: Callable[[int], float]) -> Device:
    """A real ``ort-cpu:threads=1`` device whose n-th measurement is multiplied by ``factor_of(n)``."""
    device = open_device("ort-cpu:threads=1")
    base = type(device)

    class Inflated(base):  # type: ignore[valid-type,misc]
        count = 0
        inflated = 0
        loaded = b""
        inflated_models: list[bytes]  # set per device below

        def load(self, data: bytes, shape: Any) -> Runner:
            self.loaded = data
            return base.load(self, data, shape)

        def measure(self, runner: Runner, timing: TimingConfig | None = None) -> Stats:
            stats = base.measure(self, runner, timing)
            f = factor_of(self.count)
            self.count += 1
            if f == 1.0:
                return stats
            self.inflated += 1
            self.inflated_models.append(self.loaded)
            times = {k: getattr(stats, k) * f for k in ("median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms")}
            return dataclasses.replace(stats, **times, min_ms=None if stats.min_ms is None else stats.min_ms * f)

    device.__class__ = Inflated
    device.inflated_models = []
    return device


def inflated_kernels(device: Any) -> set[str]:
    """The kernels the device inflated at least one measurement of (from the models it loaded)."""
    cache = ArtifactCache("onnx")
    key_of = {cache.get(k.key): k.key for k in KERNELS}
    return {key_of[data] for data in device.inflated_models}


def stored_rounds(path: Path) -> dict[str, dict[int, float]]:
    per_key: dict[str, dict[int, float]] = {}
    with LutStore.open(path) as store:
        for row in store.rows():
            values = dict(zip(ROW_COLUMNS, row, strict=True))
            per_key.setdefault(row[0], {})[row[1]] = values["min_ms"]
    return per_key


def disagreeing(per_key: dict[str, dict[int, float]], within: float) -> set[str]:
    """Kernels whose rounds do not all lie within ``within`` of their median (computed here)."""
    out = set()
    for key, rounds in per_key.items():
        med = statistics.median(rounds.values())
        if any(abs(x / med - 1) > within for x in rounds.values()):
            out.add(key)
    return out


def run(path: Path, device: Any, guard: GuardConfig) -> Any:
    with LutStore.create_or_open(path, device.fingerprint(), device.spec) as store:
        return profile(KERNELS, device, store, rounds=3, timing=TIMING, progress=False, guard=guard, seed=1)


def test_a_noisy_phase_is_remeasured_until_the_rounds_agree(tmp_path: Path) -> None:
    n = len(KERNELS)
    # a third of round 2 (by measurement order) runs 3x slow; nothing else is inflated
    device = inflated_device(lambda i: INFLATION if n + 5 <= i < n + 5 + n // 3 else 1.0)
    report = run(tmp_path / "a.lut", device, GuardConfig(max_extra_s=120.0))
    per_key = stored_rounds(tmp_path / "a.lut")
    planted = inflated_kernels(device)
    assert device.inflated == n // 3 and len(planted) == n // 3
    assert report.remeasured >= device.inflated  # each inflated round needed at least one re-measurement
    # the inflated kernels' rounds agree now (checked from the file), and none kept a 3x round
    assert not planted & disagreeing(per_key, STABLE_WITHIN) and not planted & set(report.unstable)
    assert all(max(per_key[k].values()) < 2 * min(per_key[k].values()) for k in planted)
    # what is still unstable (the host's own noise, if any) is what the file shows, and named in it
    assert set(report.unstable) == disagreeing(per_key, STABLE_WITHIN)
    with LutStore.open(tmp_path / "a.lut") as store:
        assert unstable_kernels({"stability": store.get_meta("stability")}) == report.unstable
    assert report.extra_s <= 120.0


def test_without_time_to_remeasure_the_inflated_kernels_are_named_not_kept_silently(tmp_path: Path) -> None:
    n = len(KERNELS)
    device = inflated_device(lambda i: INFLATION if n + 5 <= i < n + 5 + n // 3 else 1.0)
    report = run(tmp_path / "b.lut", device, GuardConfig(max_extra_s=0.0))
    per_key = stored_rounds(tmp_path / "b.lut")
    assert report.remeasured == 0
    # every kernel that kept an inflated round is named, in the report and in the LUT
    kept_inflated = inflated_kernels(device)
    assert len(kept_inflated) == n // 3
    assert kept_inflated <= set(report.unstable)
    assert set(report.unstable) == disagreeing(per_key, STABLE_WITHIN)
    with LutStore.open(tmp_path / "b.lut") as store:
        meta = {"stability": store.get_meta("stability")}
    assert set(unstable_kernels(meta)) == set(report.unstable)
    [line] = lut_warnings(meta, "b.lut")
    assert f"{len(report.unstable)} kernel(s) never agreed" in line and report.unstable[0] in line
    # 'hwnas lut show' says so in one line
    shown = run_cli("lut", "show", str(tmp_path / "b.lut"))
    assert shown.returncode == 0, shown.stderr
    assert "never agreed within +-10%" in shown.stderr and report.unstable[0] in shown.stderr
    # the same command again (a quiet device now) re-measures them, and the warning goes away
    quiet = open_device("ort-cpu:threads=1")
    again = run(tmp_path / "b.lut", quiet, GuardConfig(max_extra_s=120.0))
    assert again.measured == 0 and again.remeasured >= len(kept_inflated)
    assert not kept_inflated & set(again.unstable)
    assert set(again.unstable) == disagreeing(stored_rounds(tmp_path / "b.lut"), STABLE_WITHIN)


def test_a_noise_that_never_ends_stops_at_the_time_budget(tmp_path: Path) -> None:
    n = len(KERNELS)
    # from the middle of round 2 on, every other measurement (re-measurements included) is 3x slow
    device = inflated_device(lambda i: INFLATION if i >= n + n // 2 and i % 2 else 1.0)
    report = run(tmp_path / "c.lut", device, GuardConfig(max_extra_s=1.0, pass_gap_s=0.0))
    assert report.remeasured > 0 and report.unstable
    assert 1.0 <= report.extra_s < 1.0 + 1.0, report.extra_s  # one re-measurement past the budget at most
    assert set(report.unstable) == disagreeing(stored_rounds(tmp_path / "c.lut"), STABLE_WITHIN)


@pytest.mark.parametrize("bad", ["0", "1", "150%", "x", "-0.1"])
def test_stable_within_refuses_what_is_not_a_share(tmp_path: Path, bad: str) -> None:
    out = run_cli("profile", "--space", "tiny", "--device", "ort-cpu", "--out", str(tmp_path / "x.lut"),
                  "--stable-within", bad)  # fmt: skip
    assert out.returncode == 2 and "--stable-within" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "x.lut").exists()
