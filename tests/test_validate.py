"""`hwnas lut validate` end to end: a real profile, real networks timed on ONNX Runtime, the real CLI."""

from __future__ import annotations

import json
import random
import sqlite3
import statistics
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

from hwnas.devices import open_device
from hwnas.latency.predictor import LatencyPredictor
from hwnas.latency.store import device_id
from hwnas.spaces import get_space
from hwnas.spaces.arch import Architecture
from hwnas.spaces.kernels import arch_flops

from conftest import FAST_TIMING, run_cli

DEVICE = "ort-cpu:threads=1"


@pytest.fixture(scope="module")
def tiny_lut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("validate") / "tiny.lut"
    proc = run_cli("profile", "--space", "tiny", "--device", DEVICE, "--out", str(path), "--rounds", "1",
                   "--no-progress", *FAST_TIMING)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return path


def _model_rows(path: Path, column: str = "min_ms") -> dict[str, list[float]]:
    per_arch: dict[str, list[float]] = defaultdict(list)
    with sqlite3.connect(path) as conn:
        for arch, ms, fastest, median in conn.execute(f"SELECT arch, {column}, min_ms, median_ms FROM models"):
            assert 0 < fastest <= median  # a round counts by its fastest run
            per_arch[arch].append(ms)
    return per_arch


@pytest.mark.tour  # 24 s on the 2-core VM: in the tour, to keep the default suite under 15 minutes
def test_validate_fit_then_score_held_out(tiny_lut: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = run_cli("lut", "validate", str(tiny_lut), "--space", "tiny", "--device", DEVICE, "--samples", "16",
                   "--fit", "--rounds", "2", "--no-progress", "--out", str(out), *FAST_TIMING)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "8 held-out architectures" in proc.stdout and "Kendall tau" in proc.stdout
    df = pd.read_csv(out / "validation.csv")
    assert len(df) == 16 and (df["role"] == "fit").sum() == 8 and df["arch"].is_unique
    assert (out / "validation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # measured = the median over the stored rounds of their fastest runs; raw = the LUT sum; FLOPs recomputed independently
    stored = _model_rows(tiny_lut)
    space = get_space("tiny")
    pred = LatencyPredictor.from_lut(tiny_lut)
    assert pred.calibration is not None and set(pred.calibration.fit_archs) == set(df.loc[df["role"] == "fit", "arch"])
    for row in df.itertuples():
        assert len(stored[row.arch]) == 2
        assert row.measured_ms == pytest.approx(statistics.median(stored[row.arch]))
        arch = Architecture.from_str(row.arch, num_classes=space.num_classes)
        assert row.raw_ms == pytest.approx(pred.raw(arch), rel=1e-9)
        assert row.calibrated_ms == pytest.approx(pred.predict(arch), rel=1e-9)
        assert row.flops == arch_flops(arch)
    # the run's noise floor, from the same stored rounds
    from hwnas.latency.validate import noise_floor

    nf = noise_floor({a: stored[a] for a in df["arch"]})
    assert f"noise floor of this run: {nf['within_10']:.1%} of single rounds" in proc.stdout
    # the host's conditions over the run, and the drift check: the 32 kernels these 16 networks spend
    # most LUT time in (of those they use, counted here) timed again and compared with the LUT
    assert "conditions of this run: others' CPU" in proc.stdout and "measurements disturbed" in proc.stdout
    from hwnas.spaces.kernels import arch_kernels

    used = {k for a in df["arch"] for k in arch_kernels(Architecture.from_str(a, num_classes=space.num_classes))}
    assert f"drift check: {min(32, len(used))} of the {len(used)} kernels these networks use" in proc.stdout
    drift = json.loads(pred.table.meta["drift"])
    assert drift["checked"] == min(32, len(used)) and set(drift["ratios"]) == {*drift["kernels"], *drift["slower"]}
    # the measurements are keyed by the device's identity
    with sqlite3.connect(tiny_lut) as conn:
        devices = {d for (d,) in conn.execute("SELECT DISTINCT device FROM models")}
    assert devices == {device_id(open_device(DEVICE).fingerprint())}

    # the median/fastest and p90/fastest factors: from the fitting networks' undisturbed rounds alone
    factors = _factors_by_hand(tiny_lut, set(pred.calibration.fit_archs))
    stored_factors = json.loads(LatencyPredictor.from_lut(tiny_lut).table.meta["statistic_factors"])
    for name in ("median", "p90"):
        assert stored_factors[name]["factor"] == pytest.approx(factors[name][0], rel=1e-12)
        assert stored_factors[name]["lo"] == pytest.approx(factors[name][1], rel=1e-12)
        assert stored_factors[name]["networks"] == factors[name][2]
        assert stored_factors[name]["factor"] >= 1.0  # a median (p90) run is never faster than the fastest

    # Scoring again, by the median run: the fitting architectures are never scored, and what is stored
    # is not re-timed; each network's rounds of their median run against the prediction times the factor
    before = sum(len(v) for v in _model_rows(tiny_lut).values())
    proc = run_cli("lut", "validate", str(tiny_lut), "--space", "tiny", "--device", DEVICE, "--samples", "12",
                   "--rounds", "2", "--no-progress", "--out", str(tmp_path / "again"), "--statistic", "median",
                   *FAST_TIMING)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    again = pd.read_csv(tmp_path / "again" / "validation.csv")
    assert not set(again["arch"]) & set(pred.calibration.fit_archs)
    assert (again["role"] == "score").all()
    new = set(again["arch"]) - set(df["arch"])
    assert sum(len(v) for v in _model_rows(tiny_lut).values()) == before + 2 * len(new)
    medians = _model_rows(tiny_lut, "median_ms")
    f = stored_factors["median"]["factor"]
    for row in again.itertuples():
        arch = Architecture.from_str(row.arch, num_classes=space.num_classes)
        assert row.measured_ms == pytest.approx(statistics.median(medians[row.arch]))
        assert row.calibrated_ms == pytest.approx(pred.predict(arch) * f, rel=1e-9)
    assert "by their median run" in proc.stdout and "noise floor +-10%" in proc.stdout
    shown = run_cli("lut", "show", str(tiny_lut))
    assert "calibration (" in shown.stdout and f"median {f:.3f}x" in shown.stdout


def _factors_by_hand(path: Path, fit: set[str]) -> dict[str, tuple[float, float, int]]:
    """(median over networks, 10th percentile, networks) of each network's median over its
    undisturbed rounds of (statistic / fastest), straight from the SQLite rows."""
    import numpy as np

    with sqlite3.connect(path) as conn:
        disturbed = {(k, r) for k, r, d in conn.execute("SELECT key, round, disturbed FROM conditions") if d}
        rows = list(conn.execute("SELECT arch, round, min_ms, median_ms, p90_ms FROM models"))
    out = {}
    for i, name in ((3, "median"), (4, "p90")):
        per = defaultdict(list)
        for row in rows:
            if row[0] in fit and (row[0], row[1]) not in disturbed:
                per[row[0]].append(row[i] / row[2])
        ratios = [float(np.median(v)) for v in per.values()]
        out[name] = (float(np.median(ratios)), float(np.quantile(ratios, 0.1)), len(ratios))
    return out


@pytest.mark.tour  # 15 s on the 2-core VM: in the tour, to keep the default suite under 15 minutes
def test_the_factors_leave_out_rounds_the_guard_flagged_as_disturbed(tiny_lut: Path, tmp_path: Path) -> None:
    """Five of the eight fitting networks get every round flagged disturbed, with a median run 10x
    their fastest: fitted again from the stored rounds (nothing re-timed), the factors come from the
    other three alone; counting the flagged rounds would put the median factor near 10."""
    import shutil

    lut = tmp_path / "flagged.lut"
    shutil.copy(tiny_lut, lut)
    args = ["lut", "validate", str(lut), "--space", "tiny", "--device", DEVICE, "--samples", "16", "--fit",
            "--rounds", "2", "--no-progress", *FAST_TIMING]  # fmt: skip
    assert run_cli(*args, "--out", str(tmp_path / "a")).returncode == 0
    fit = sorted(LatencyPredictor.from_lut(lut).calibration.fit_archs)
    flagged = fit[:5]
    with sqlite3.connect(lut) as conn:
        for arch in flagged:
            conn.execute("UPDATE models SET median_ms = 10 * min_ms, p90_ms = 10 * min_ms WHERE arch = ?", (arch,))
            conn.execute("UPDATE conditions SET disturbed = 1 WHERE key = ?", (arch,))
    assert run_cli(*args, "--out", str(tmp_path / "b")).returncode == 0
    assert sorted(LatencyPredictor.from_lut(lut).calibration.fit_archs) == fit  # the same networks fit again
    stored = json.loads(LatencyPredictor.from_lut(lut).table.meta["statistic_factors"])
    by_hand = _factors_by_hand(lut, set(fit))
    assert stored["median"]["networks"] == by_hand["median"][2] == 3
    assert (
        stored["median"]["factor"] == pytest.approx(by_hand["median"][0], rel=1e-12) and stored["median"]["factor"] < 5
    )


def test_a_median_budget_on_a_lut_without_factors_says_how_to_recalibrate(tiny_lut: Path, tmp_path: Path) -> None:
    import shutil

    old = tmp_path / "old.lut"
    shutil.copy(tiny_lut, old)
    if LatencyPredictor.from_lut(old).calibration is None:  # the module's LUT is calibrated only by the tour's test
        # a calibration as one made before the factors existed: fitted on 10 networks (their "measured"
        # times made up from the LUT's sums), no factors stored beside it
        from hwnas.latency.predictor import fit_calibration, store_calibration
        from hwnas.latency.table import LatencyTable
        from hwnas.search.cost import make_cost
        from hwnas.search.evolution import random_in_band

        space = get_space("tiny")
        table = LatencyTable.load(old)
        cost = make_cost("flops", space)
        archs = random_in_band(space, cost, cost.smallest(space)[1], cost.largest(space)[1], 10, random.Random(0))
        raw = LatencyPredictor(table).raw
        store_calibration(old, fit_calibration(table, archs, [1.1 * raw(a) for a in archs],
                                               open_device(DEVICE).fingerprint(), model="linear"))  # fmt: skip
    with sqlite3.connect(old) as conn:
        conn.execute("DELETE FROM meta WHERE name = 'statistic_factors'")
    proc = run_cli("lut", "validate", str(old), "--space", "tiny", "--device", DEVICE, "--samples", "4",
                   "--statistic", "median", "--no-progress", "--out", str(tmp_path / "x"))  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "no median/fastest factor" in proc.stderr and "--fit" in proc.stderr and "--statistic fastest" in proc.stderr
    assert not (tmp_path / "x").exists()
    search = run_cli("search", "--space", "tiny", "--lut", str(old), "--budget-ms", "1", "--statistic", "p90",
                     "--data", "synthetic:n=64,size=16", "--out", str(tmp_path / "s"), "--no-progress")  # fmt: skip
    assert search.returncode == 2 and "no p90/fastest factor" in search.stderr and not (tmp_path / "s").exists()
    assert "statistic factors: none" in run_cli("lut", "show", str(old)).stdout


def test_validate_on_another_device_fails_loudly_unless_forced(tiny_lut: Path, tmp_path: Path) -> None:
    proc = run_cli("lut", "validate", str(tiny_lut), "--space", "tiny", "--device", "ort-cpu:threads=2",
                   "--samples", "4", "--no-progress", "--out", str(tmp_path / "x"))  # fmt: skip
    assert proc.returncode == 2
    assert "measured on another device (threads: 1 vs 2)" in proc.stderr and "--force" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "x").exists()


def test_validate_bad_inputs(tiny_lut: Path, tmp_path: Path) -> None:
    proc = run_cli("lut", "validate", str(tiny_lut), "--space", "cifar", "--device", DEVICE, "--samples", "4")
    assert proc.returncode == 2 and "lacks" in proc.stderr and "hwnas profile" in proc.stderr
    proc = run_cli("lut", "validate", str(tmp_path / "none.lut"), "--space", "tiny", "--device", DEVICE)
    assert proc.returncode == 2 and "no such LUT file" in proc.stderr
    proc = run_cli("lut", "validate", str(tiny_lut), "--space", "tiny", "--device", DEVICE, "--samples", "4",
                   "--fit", "--fit-share", "1.5")  # fmt: skip
    assert proc.returncode == 2 and "--fit-share" in proc.stderr
    proc = run_cli("lut", "validate", str(tiny_lut), "--space", "tiny", "--device", DEVICE, "--samples", "10", "--fit")
    assert proc.returncode == 2 and "fit on 5 networks" in proc.stderr and "--samples to 16" in proc.stderr
    proc = run_cli("lut", "validate", str(tiny_lut), "--space", "tiny", "--device", DEVICE, "--samples", "0")
    assert proc.returncode == 2 and "must be >= 1" in proc.stderr


def test_noise_floor_is_how_well_each_networks_own_rounds_agree() -> None:
    from hwnas.latency.validate import noise_floor

    nf = noise_floor({"a": [1.0, 1.05, 1.2], "b": [2.0, 2.0], "c": [5.0]})
    # a: median 1.05, rounds off by 4.8%, 0%, 14.3%; b: 0%, 0%; c has one round and is left out
    assert nf["within_10"] == pytest.approx(4 / 5) and nf["within_5"] == pytest.approx(4 / 5)
    assert nf["median_spread"] == pytest.approx((0.2 / 1.05 + 0.0) / 2) and nf["networks"] == 2
    assert noise_floor({"c": [5.0]}) == {}
    # relative, not in milliseconds: a 0.02 ms kernel's 43% off round is outside +-10% (0.009 ms),
    # a 10 ms network's 14% off round too (1.5 ms), its 4.8% off round inside (0.5 ms)
    small = noise_floor({"k": [0.02, 0.021, 0.03]})
    assert small["within_10"] == pytest.approx(2 / 3) and small["median_spread"] == pytest.approx(0.01 / 0.021)
    large = noise_floor({"n": [10.0, 10.5, 12.0]})
    assert large["within_10"] == pytest.approx(2 / 3) and large["within_5"] == pytest.approx(2 / 3)


def test_the_demo_margin_is_the_90th_percentile_of_held_out_errors() -> None:
    import pandas as pd

    from hwnas.demo import MAX_MARGIN, margin_of

    measured = [1.0] * 10 + [1.0, 1.0]
    calibrated = [1.0 + i / 100 for i in range(10)] + [3.0, 3.0]  # errors 0..9%; the last two only fitted
    rows = pd.DataFrame({"role": ["score"] * 10 + ["fit"] * 2, "calibrated_ms": calibrated, "measured_ms": measured})
    assert margin_of(rows) == pytest.approx(0.08 + 0.1 * 0.01)  # 90th percentile, linear between 8% and 9%
    rows["role"] = "score"
    assert margin_of(rows) == MAX_MARGIN  # two networks off by 200% push it past the cap
    # under-predictions count as much as over-predictions: the margin is of |error|
    rows = pd.DataFrame({"role": ["score"] * 10, "calibrated_ms": [1.0 - i / 100 for i in range(10)],
                         "measured_ms": [1.0] * 10})  # fmt: skip
    assert margin_of(rows) == pytest.approx(0.08 + 0.1 * 0.01)
