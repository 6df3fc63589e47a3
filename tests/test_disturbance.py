"""Busy-machine detection, re-taking disturbed measurements, and budget verdicts with noise.

The disturbances are real: busy-loop processes started beside (or in the middle of) a real ONNX
Runtime timing. Tests that need a quiet start skip when the machine is already busy.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hwnas.devices import TimingConfig, open_device
from hwnas.devices.conditions import CpuSnapshot, between, others_limit, sample
from hwnas.latency.disturbance import Guard, GuardConfig, outlying_rounds
from hwnas.latency.kernel_models import ARTIFACT_BUILDERS, kernel_input_shape
from hwnas.latency.profiler import profile
from hwnas.latency.store import LutStore
from hwnas.latency.verdict import NOISE, NOISE_FLOOR, OVER, WITHIN, judge, measure_verdict
from hwnas.spaces import get_space

HZ = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count() or 1
# enough busy processes to disturb a one-thread timing on this machine, even overlapping 70% of it
N_BUSY = math.floor(others_limit(CPUS, 1) / 0.7) + 1


def _busy(seconds: float) -> subprocess.Popen[bytes]:
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


@contextmanager
def busy_processes(n: int, seconds: float, delay: float = 0.0) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start ``n`` busy loops of ``seconds`` after ``delay`` (in a thread); reap them on exit only, so
    their CPU time is never counted as this process's own (reaped children count as ours)."""
    procs: list[subprocess.Popen[bytes]] = []
    timer = threading.Timer(delay, lambda: procs.extend(_busy(seconds) for _ in range(n)))
    timer.start()
    try:
        yield procs
    finally:
        timer.join()
        for p in procs:
            p.kill()
            p.wait()


@pytest.fixture
def quiet() -> None:
    cond = sample(0.5)
    if cond.others_cores is None:
        pytest.skip("this OS does not expose /proc/stat; busy-machine detection is off here")
    if cond.disturbed(1):
        pytest.skip(f"the machine is already busy ({cond.describe()}); cannot inject a disturbance into it")


def test_between_is_the_arithmetic_of_the_counters() -> None:
    a = CpuSnapshot(wall=10.0, busy_all=1000, steal_all=50, total_all=5000, busy_self=300)
    b = CpuSnapshot(wall=12.0, busy_all=1000 + 3 * HZ, steal_all=50 + 40, total_all=5000 + 400, busy_self=300 + HZ)
    c = between(a, b)
    # 3 core-seconds busy over 2 s, of which 1 core-second was this process: the others used 1 core
    assert c.seconds == pytest.approx(2.0)
    assert c.others_cores == pytest.approx(1.0)
    assert c.others_slack == pytest.approx((CPUS + 1) / HZ / 2.0)
    assert c.steal == pytest.approx(0.1)
    assert c.disturbed(threads=1) == (1.0 - (CPUS + 1) / HZ / 2.0 > 0.5 * max(1, CPUS - 1))
    unreadable = between(CpuSnapshot(1.0, None, None, None, None), CpuSnapshot(2.0, None, None, None, None))
    assert unreadable.others_cores is None and not unreadable.disturbed()
    stolen = between(a, CpuSnapshot(12.0, 1000, 50 + 100, 5000 + 400, 300))
    assert stolen.steal == pytest.approx(0.25) and any("stole" in r for r in stolen.reasons())


def test_a_short_span_is_not_judged_by_its_rounding() -> None:
    # one jiffy of someone else's work inside a 3 ms span reads as 3.3 cores, but within its slack
    a = CpuSnapshot(wall=0.0, busy_all=0, steal_all=0, total_all=0, busy_self=0)
    c = between(a, CpuSnapshot(wall=0.003, busy_all=1, steal_all=0, total_all=1, busy_self=0))
    assert c.others_cores == pytest.approx(1 / HZ / 0.003)
    assert not c.disturbed(1)


def test_busy_processes_are_seen(quiet: None) -> None:
    with busy_processes(N_BUSY, 2.0):
        cond = sample(0.2)  # let them start
        cond = sample(1.0)
    assert cond.others_cores is not None and cond.others_cores >= 0.7 * N_BUSY
    assert cond.disturbed(1), cond.describe()


def test_own_threads_are_not_counted_as_others(quiet: None) -> None:
    """Busy work in this process (a torch matmul loop on all cores) is not 'other processes'."""
    import time

    import torch

    x = torch.randn(512, 512)
    a = CpuSnapshot.take()
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        x = torch.tanh(x @ x)
    c = between(a, CpuSnapshot.take())
    assert c.others_cores is not None and c.others_cores < 0.5, c.describe()


def _one_kernel_runner(device):  # a conv kernel of the tiny space, ready to run
    kernel = max(get_space("tiny").kernels(), key=lambda k: k.flops)
    [data] = ARTIFACT_BUILDERS["onnx"]([kernel], 1)
    return device.load(data, kernel_input_shape(kernel, 1))


def test_a_disturbance_injected_mid_timing_is_detected_and_retaken(quiet: None) -> None:
    device = open_device("ort-cpu:threads=1")
    runner = _one_kernel_runner(device)
    timing = TimingConfig(min_time_s=0.8, min_runs=5)
    guard = Guard(device, timing, planned=4, config=GuardConfig(retries=3, backoff_s=0.6, max_extra_s=30.0))
    clean = guard.measure(lambda: runner)
    assert clean.attempts == 1 and not clean.disturbed
    # the busy loops start 0.05 s into the next timing and end about 0.9 s later, before the re-take
    with busy_processes(N_BUSY, 0.9, delay=0.05):
        m = guard.measure(lambda: runner)
    assert m.attempts >= 2, "the disturbed timing was not detected"
    assert not m.disturbed and guard.retaken == m.attempts - 1
    assert m.conditions.others_cores is not None and m.conditions.others_cores < 0.5 * N_BUSY
    assert m.record()["attempts"] == m.attempts and m.record()["disturbed"] == 0


def test_the_time_budget_bounds_retakes_and_marks_what_it_kept(quiet: None) -> None:
    device = open_device("ort-cpu:threads=1")
    runner = _one_kernel_runner(device)
    timing = TimingConfig(min_time_s=0.4, min_runs=5)
    guard = Guard(device, timing, planned=4, config=GuardConfig(retries=5, backoff_s=0.05, max_extra_s=0.9))
    with busy_processes(N_BUSY, 8.0):
        sample(0.2)
        first = guard.measure(lambda: runner)
        second = guard.measure(lambda: runner)
    # the first measurement re-takes until 0.9 s of re-takes and pauses are spent; the second gets none
    assert first.attempts >= 2 and guard.retaken == first.attempts - 1 and second.attempts == 1
    assert 0.9 <= guard.extra_s <= 0.9 + first.stats.busy_s + 1.0, guard.extra_s
    assert first.disturbed and second.disturbed and guard.still_disturbed == 2
    assert "kept while still disturbed" in guard.summary()


def _settling(stored: dict[str, dict[int, float]]):
    """A ``save`` for :meth:`Guard.stabilize` that records each (key, round) re-measured and stores
    1.0 for it (a re-measurement that agrees with the others), and the list it records into."""
    taken: list[tuple[str, int]] = []

    def save(item: str, r: int, m: object) -> None:
        taken.append((item, r))
        stored[item][r] = 1.0

    return taken, save


def test_the_default_budget_follows_the_planned_measurements() -> None:
    """Without max_extra_s, the budget is extra_ratio x the planned measurements' time, estimated
    from the first attempts so far (so a re-take early in a run is not starved)."""
    guard = Guard(open_device("ort-cpu:threads=1"), TimingConfig(), planned=100, config=GuardConfig(extra_ratio=0.5))
    assert guard.budget_s == 0.0 and not guard.has_budget
    guard.first_s, guard.firsts = 2.0, 10  # 0.2 s a measurement so far
    assert guard.budget_s == pytest.approx(0.5 * 0.2 * 100)
    guard.extra_s = 9.9
    assert guard.has_budget
    guard.extra_s = 10.0
    assert not guard.has_budget
    off = Guard(guard.device, TimingConfig(), planned=100, config=GuardConfig(enabled=False), first_s=2.0, firsts=10)
    assert off.budget_s == 0.0


def test_a_rerun_counts_what_an_earlier_run_left_unstable_as_planned_work() -> None:
    """A re-run that measures nothing new still re-measures the rounds an earlier run left
    disagreeing: their rounds are its planned work, timed by its first re-measurements; the keys
    this run measured itself are already planned and are not counted twice."""
    device = open_device("ort-cpu:threads=1")
    stored = {"a": {0: 1.0, 1: 1.0, 2: 1.5}, "b": {0: 1.0, 1: 2.0, 2: 1.0}, "c": {0: 1.0, 1: 1.0, 2: 1.0}}
    taken, save = _settling(stored)

    guard = Guard(device, TimingConfig(min_time_s=0.01, min_runs=5), planned=0, config=GuardConfig(pass_gap_s=0.0))
    assert guard.budget_s == 0.0  # nothing planned, nothing known to redo
    load = lambda _: _one_kernel_runner(device)  # noqa: E731
    unstable, _ = guard.stabilize({k: k for k in stored}, load, save, lambda: stored, fresh={"b"})
    assert guard.rework == 3  # a's three rounds; b was measured by this run, c agrees
    assert set(taken) == {("a", 2), ("b", 1)} and unstable == []
    assert guard.budget_s == pytest.approx(guard.redo_s / guard.redos * 3)
    # without a budget of its own (fresh=None: every key is this run's), nothing planned means no time
    stored["a"][2] = 1.5
    idle = Guard(device, TimingConfig(min_time_s=0.01, min_runs=5), planned=0, config=GuardConfig(pass_gap_s=0.0))
    assert idle.stabilize({k: k for k in stored}, load, save, lambda: stored)[0] == ["a"]


def test_outlying_rounds_picks_the_farthest_round_beyond_the_spread() -> None:
    per_key = {
        "a": {0: 1.0, 1: 1.02, 2: 1.5},  # round 2 is 47% off the median 1.02
        "b": {0: 1.0, 1: 1.1, 2: 0.95},  # within 15%
        "c": {0: 3.0, 1: 1.0},  # two rounds: the slower one is the suspect (noise only adds time)
        "d": {0: 0.5, 1: 1.0, 2: 1.0, 3: 0.2},  # median 0.75: round 3 is 73% off, round 0 33%
        "e": {0: 1.0, 1: 1.1},  # two rounds 10% apart
        "f": {0: 1.0},  # one round: nothing to compare
    }
    assert outlying_rounds(per_key, 0.15) == [("a", 2), ("c", 0), ("d", 3)]
    assert outlying_rounds(per_key, 0.05) == [("a", 2), ("b", 1), ("c", 0), ("d", 3), ("e", 1)]
    assert outlying_rounds(per_key, 2.5) == []


def test_the_outlier_rule_is_relative_not_in_milliseconds() -> None:
    """A scale where relative and absolute differ: a 0.02 ms kernel with one round 50% off (0.01 ms)
    is an outlier; a 10 ms network with one round 5% off (0.5 ms) is not (rule in milliseconds:
    the reverse)."""
    per_key = {"kernel": {0: 0.02, 1: 0.02, 2: 0.03}, "network": {0: 10.0, 1: 10.0, 2: 10.5}}
    assert outlying_rounds(per_key, 0.15) == [("kernel", 2)]
    assert outlying_rounds({"kernel": {0: 0.02, 1: 0.02, 2: 0.01}}, 0.15) == [("kernel", 2)]


def test_an_outlying_round_is_remeasured_and_replaced(tmp_path: Path) -> None:
    device = open_device("ort-cpu:threads=1")
    kernels = get_space("tiny").kernels()
    fast = TimingConfig(warmup_runs=2, warmup_s=0.001, min_runs=5, min_time_s=0.005)
    with LutStore.create_or_open(tmp_path / "t.lut", device.fingerprint(), device.spec) as store:
        profile(kernels, device, store, rounds=2, timing=fast, progress=False)
        key = kernels[0].key
        true_ms = statistics.median(r[2] for r in store.rows() if r[0] == key)
        planted = next(r for r in store.rows() if r[0] == key and r[1] == 0)
        from hwnas.devices.base import Stats

        fake = Stats(true_ms * 20, true_ms * 20, true_ms * 20, true_ms * 20, 0.0, 5, 2, 0.01)
        assert store.add(key, 0, fake, replace=True)
        assert planted is not None
        report = profile(kernels, device, store, rounds=3, timing=fast, progress=False)
        rounds = {r[1]: r[2] for r in store.rows() if r[0] == key}
        cond = {(c["key"], c["round"]) for c in store.conditions("kernel")}
    assert report.remeasured >= 1
    assert rounds[0] < true_ms * 5, "the planted outlier survived"
    # every kernel-round has its conditions recorded
    assert cond == {(k.key, r) for k in kernels for r in range(3)}


def test_the_three_verdicts() -> None:
    # median 1.00, noise half the range 0.05
    rounds = [0.95, 1.0, 1.05, 0.98, 1.02]
    assert judge(rounds, 1.2).outcome == WITHIN
    assert judge(rounds, 1.0).outcome == WITHIN  # equal to the budget is within it
    v = judge(rounds, 0.97)
    assert v.outcome == NOISE and v.measured_ms == 1.0 and v.noise_ms == pytest.approx(0.05) and v.exit_code == 3
    over = judge(rounds, 0.9)
    assert over.outcome == OVER and over.exit_code == 1
    # agreeing rounds are still credited with the noise floor
    tight = judge([1.0, 1.0, 1.0], 0.995)
    assert tight.noise_ms == pytest.approx(NOISE_FLOOR) and tight.outcome == NOISE
    assert judge([1.0, 1.0, 1.0], 0.98).outcome == OVER
    with pytest.raises(ValueError):
        judge([], 1.0)


def test_the_least_noise_is_relative_to_the_measurement() -> None:
    """Agreeing rounds are credited with NOISE_FLOOR of their median, not NOISE_FLOOR milliseconds:
    at 10 ms that is 0.1 ms, so 9.95 ms is within noise and 9.85 ms is over; at 0.02 ms it is
    0.0002 ms, so a budget 5% under is over."""
    v = judge([10.0, 10.0, 10.0], 9.95)
    assert v.noise_ms == pytest.approx(NOISE_FLOOR * 10.0) and v.outcome == NOISE
    assert judge([10.0, 10.0, 10.0], 9.85).outcome == OVER
    small = judge([0.02, 0.02, 0.02], 0.019)
    assert small.noise_ms == pytest.approx(NOISE_FLOOR * 0.02) and small.outcome == OVER


def test_a_measurement_near_the_budget_takes_more_rounds() -> None:
    def scripted(values: list[float]):
        it = iter(values)
        calls = []

        def one() -> tuple[float, bool]:
            calls.append(1)
            return next(it), False

        return one, calls

    far, calls = scripted([1.0] * 20)
    assert measure_verdict(far, 2.0, rounds=5, extra_rounds=6).outcome == WITHIN and len(calls) == 5
    # first five land within noise above the budget; the six more show it is over
    near_then_over, calls = scripted([1.0, 1.04, 0.98, 1.02, 1.0] + [1.03] * 6)
    v = measure_verdict(near_then_over, 0.99, rounds=5, extra_rounds=6)
    assert len(calls) == 11 and len(v.rounds_ms) == 11
    assert v.measured_ms == pytest.approx(1.03) and v.noise_ms == pytest.approx(0.03)
    assert v.outcome == OVER  # 1.03 - 0.03 > 0.99
    below, calls = scripted([0.99] * 5 + [0.98] * 6)
    assert measure_verdict(below, 0.995, rounds=5, extra_rounds=6).outcome == WITHIN and len(calls) == 11


def test_the_farthest_round_is_remeasured_first_when_the_budget_is_short() -> None:
    """Three keys disagree, by 30%, 300% and 60%; a budget spent by the first re-measurement takes
    the 300% one (a random or first-come order would leave it two times in three)."""
    device = open_device("ort-cpu:threads=1")
    stored = {"a": {0: 1.0, 1: 1.0, 2: 1.3}, "b": {0: 1.0, 1: 4.0, 2: 1.0}, "c": {0: 1.6, 1: 1.0, 2: 1.0}}
    taken, save = _settling(stored)

    for seed in range(3):
        taken.clear()
        stored.update({"a": {0: 1.0, 1: 1.0, 2: 1.3}, "b": {0: 1.0, 1: 4.0, 2: 1.0}, "c": {0: 1.6, 1: 1.0, 2: 1.0}})
        guard = Guard(device, TimingConfig(min_time_s=0.01, min_runs=5), planned=9,
                      config=GuardConfig(max_extra_s=1e-6, pass_gap_s=0.0))  # fmt: skip
        load = lambda _: _one_kernel_runner(device)  # noqa: E731
        unstable, _ = guard.stabilize({k: k for k in stored}, load, save, lambda: stored, seed=seed)
        assert taken == [("b", 1)] and unstable == ["a", "c"]
