"""The predictor and its calibration, on a LUT with known per-kernel latencies."""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.devices import Stats
from hwnas.latency.predictor import (
    KERNEL_OPS,
    Calibration,
    LatencyPredictor,
    cheapest_prediction,
    fit_calibration,
    read_calibration,
    store_calibration,
)
from hwnas.latency.store import LutError, LutStore
from hwnas.latency.table import LatencyTable
from hwnas.latency.validate import rank_scores, scores, split_fit_score, stratified_sample
from hwnas.search.cost import expected_cost, one_hot_choices
from hwnas.spaces import get_space
from hwnas.spaces.kernels import Kernel, arch_kernels

FP = {"kind": "ort-cpu", "runtime": "onnxruntime", "runtime_version": "1.0", "threads": 1, "batch": 1,
      "cpu_model": "X", "hwnas_version": "0.1.0", "os": "Linux 1"}  # fmt: skip


def fake_latency(k: Kernel) -> float:
    return 0.002 + (zlib.crc32(k.key.encode()) % 10_000) / 2e4


@pytest.fixture
def lut(tmp_path: Path) -> Path:
    path = tmp_path / "fake.lut"
    with LutStore.create_or_open(path, FP, "ort-cpu:threads=1") as store:
        for k in get_space("cifar").kernels():
            ms = fake_latency(k)
            store.add(k.key, 0, Stats(ms, ms, ms, ms, 0.0, 10, 2, 0.01))
    return path


# A "device" whose networks cost a known affine function of their kernels.
TRUE_SCALE = {"conv": 0.7, "dwconv": 1.3, "se": 1.1, "add": 0.5, "gap": 2.0, "linear": 1.0}
TRUE_CONST = {"conv": -0.004, "dwconv": 0.002, "se": 0.001, "add": -0.001, "gap": 0.0, "linear": 0.0}
TRUE_OFFSET = 0.05


def true_latency(arch) -> float:
    return TRUE_OFFSET + sum(TRUE_SCALE[k.op] * fake_latency(k) + TRUE_CONST[k.op] for k in arch_kernels(arch))


def test_raw_prediction_is_the_sum_of_the_kernels(lut: Path) -> None:
    pred = LatencyPredictor.from_lut(lut)
    assert pred.calibration is None
    for seed in range(5):
        arch = get_space("cifar").sample(seed)
        expected = sum(fake_latency(k) for k in arch_kernels(arch))
        assert pred.raw(arch) == pytest.approx(expected, rel=1e-12)
        assert pred.predict(arch) == pytest.approx(expected, rel=1e-12)


def test_fit_recovers_a_known_affine_device_and_survives_the_lut(lut: Path) -> None:
    space = get_space("cifar")
    table = LatencyTable.load(lut)
    rng = random.Random(1)
    archs = [space.sample(rng) for _ in range(40)]
    measured = [true_latency(a) for a in archs]
    cal = fit_calibration(table, archs, measured, FP, model="full")
    assert cal.model == "full" and cal.stats["rmspe"] < 1e-6
    assert cal.fit_archs == tuple(a.to_str() for a in archs)
    store_calibration(lut, cal)
    pred = LatencyPredictor.from_lut(lut)
    assert pred.calibration is not None
    for seed in range(100, 110):  # architectures not used to fit
        arch = space.sample(seed)
        assert pred.predict(arch) == pytest.approx(true_latency(arch), rel=1e-6)
    uncalibrated = LatencyPredictor.from_lut(lut, calibrated=False)
    assert uncalibrated.predict(archs[0]) == pytest.approx(uncalibrated.raw(archs[0]))


def test_auto_picks_the_model_that_generalizes(lut: Path) -> None:
    space = get_space("cifar")
    table = LatencyTable.load(lut)
    rng = random.Random(2)
    archs = [space.sample(rng) for _ in range(30)]
    # A device that is exactly "linear" (one scale, one constant per kernel) plus 1% noise.
    noise = np.random.default_rng(0).normal(0, 0.01, len(archs))
    measured = [
        (0.8 * sum(fake_latency(k) for k in arch_kernels(a)) + 0.003 * len(arch_kernels(a)) + 0.02) * (1 + e)
        for a, e in zip(archs, noise, strict=True)
    ]
    cal = fit_calibration(table, archs, measured, FP)
    assert cal.stats["loo_rmspe"] == min(
        cal.stats[f"loo_rmspe_{m}"] for m in ("linear", "per-op", "per-op-scale", "full")
    )
    assert cal.stats["rmspe"] < 0.02
    # without the noise, the linear model recovers the device exactly
    exact = [m / (1 + e) for m, e in zip(measured, noise, strict=True)]
    linear = fit_calibration(table, archs, exact, FP, model="linear")
    assert list(linear.scale.values()) == [pytest.approx(0.8, rel=1e-6)] * len(KERNEL_OPS)
    assert list(linear.per_kernel_ms.values()) == [pytest.approx(0.003, rel=1e-4)] * len(KERNEL_OPS)
    assert linear.offset_ms == pytest.approx(0.02, rel=1e-4)


def test_scales_are_never_negative(lut: Path) -> None:
    space = get_space("cifar")
    table = LatencyTable.load(lut)
    archs = [space.sample(s) for s in range(20)]
    # A device where adds cost nothing and everything is noisy: an unconstrained fit may go negative.
    noise = np.random.default_rng(1).normal(0, 0.2, len(archs))
    measured = [abs(true_latency(a)) * (1 + abs(e)) for a, e in zip(archs, noise, strict=True)]
    cal = fit_calibration(table, archs, measured, FP, model="full")
    assert all(v >= 0 for v in cal.scale.values())


def test_calibrated_expected_cost_equals_the_calibrated_prediction(lut: Path) -> None:
    space = get_space("cifar")
    table = LatencyTable.load(lut)
    archs = [space.sample(s) for s in range(30)]
    cal = fit_calibration(table, archs, [true_latency(a) for a in archs], FP, model="full")
    pred = LatencyPredictor(table, cal)
    cost = expected_cost(space, pred.kernel_cost, dtype=torch.float64, offset=pred.offset)
    for arch in [space.smallest(), space.largest(), space.sample(99)]:
        res, probs = one_hot_choices(space, arch)
        assert float(cost(res, probs)) == pytest.approx(pred.predict(arch), rel=1e-9)


def test_fewer_than_8_networks_cannot_be_fitted(lut: Path) -> None:
    table = LatencyTable.load(lut)
    archs = [get_space("cifar").sample(s) for s in range(5)]
    with pytest.raises(LutError, match="at least 8"):
        fit_calibration(table, archs, [1.0] * 5, FP)


def test_damaged_calibration_is_a_clear_error(lut: Path) -> None:
    with sqlite3.connect(lut) as conn:
        conn.execute("INSERT INTO meta(name, value) VALUES ('calibration', ?)", (json.dumps({"model": "cubic"}),))
    with pytest.raises(LutError, match=r"damaged calibration.*--fit"):
        LatencyPredictor.from_lut(lut)
    with pytest.raises(LutError, match="unknown kernel ops"):
        Calibration.from_dict({"model": "linear", "scale": {"qconv": 1.0}, "per_kernel_ms": {}, "offset_ms": 0}, "x")
    with pytest.raises(LutError, match="damaged calibration"):
        read_calibration(LatencyTable.load(lut))


def test_stratified_sample_spreads_over_the_range_and_excludes(lut: Path) -> None:
    space = get_space("cifar")
    pred = LatencyPredictor.from_lut(lut)
    archs = stratified_sample(space, pred.raw, 10, seed=3)
    values = [pred.raw(a) for a in archs]
    assert values == sorted(values) and len({a.to_str() for a in archs}) == 10
    pool = [space.sample(r) for r in [random.Random(3)] for _ in range(200)]
    lo, hi = min(map(pred.raw, pool)), max(map(pred.raw, pool))
    assert values[0] <= lo + (hi - lo) * 0.1 and values[-1] >= hi - (hi - lo) * 0.1  # both ends are covered
    gaps = np.diff(values)
    assert gaps.max() < (hi - lo) * 0.3  # no big hole
    again = stratified_sample(space, pred.raw, 10, seed=3, exclude=frozenset(a.to_str() for a in archs[:5]))
    assert not {a.to_str() for a in again} & {a.to_str() for a in archs[:5]}


def test_split_fit_score_interleaves() -> None:
    archs = list(range(10))
    fit, score = split_fit_score(archs, 0.5)  # type: ignore[arg-type]
    assert fit == [1, 3, 5, 7, 9] and score == [0, 2, 4, 6, 8]
    fit, score = split_fit_score(archs, 0.3)  # type: ignore[arg-type]
    assert len(fit) == 3 and sorted(fit + score) == archs


def test_scores_against_an_independent_computation() -> None:
    rng = np.random.default_rng(0)
    measured = rng.uniform(1, 10, 40)
    predicted = measured * (1 + rng.normal(0, 0.08, 40))
    s = scores(predicted, measured)
    rel = np.abs(predicted - measured) / measured
    assert s["within_10"] == pytest.approx(np.mean(rel <= 0.10))
    assert s["rmspe"] == pytest.approx(np.sqrt(np.mean(rel**2)))
    pairs = list(itertools.combinations(range(40), 2))
    concordant = sum(np.sign(predicted[i] - predicted[j]) == np.sign(measured[i] - measured[j]) for i, j in pairs)
    assert s["kendall_tau"] == pytest.approx((2 * concordant - len(pairs)) / len(pairs))
    ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    assert rank_scores(predicted, measured)["spearman"] == pytest.approx(
        np.corrcoef(ranks(predicted), ranks(measured))[0, 1]
    )
    assert set(KERNEL_OPS) == set(TRUE_SCALE)


def _synthetic_design(rng: np.random.Generator, n: int = 24) -> np.ndarray:
    """Columns: two LUT sums, one kernel count, the constant."""
    return np.column_stack([rng.uniform(0.5, 2.0, n), rng.uniform(0.1, 1.0, n), rng.integers(5, 40, n), np.ones(n)])


def test_leave_one_out_error_against_an_independent_computation() -> None:
    """Where no bound is active, each fold is an ordinary weighted least squares without sample i."""
    from hwnas.latency.predictor import _loo_rmspe

    rng = np.random.default_rng(3)
    x = _synthetic_design(rng)
    y = x @ np.array([0.9, 1.4, 0.002, 0.05]) * (1 + rng.normal(0, 0.03, len(x)))
    errors = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        w = x[keep] / y[keep, None]  # minimise the relative error: rows divided by the target
        coef, *_ = np.linalg.lstsq(w, np.ones(keep.sum()), rcond=None)
        assert (coef[:2] > 0).all()  # so the non-negativity bound is inactive in this scenario
        errors.append((x[i] @ coef - y[i]) / y[i])
    want = float(np.sqrt(np.mean(np.square(errors))))
    assert _loo_rmspe(x, y, 2) == pytest.approx(want, rel=1e-6)
    in_sample_coef, *_ = np.linalg.lstsq(x / y[:, None], np.ones(len(y)), rcond=None)
    in_sample = float(np.sqrt(np.mean(np.square((x @ in_sample_coef - y) / y))))
    assert want > in_sample * 1.02  # a "fold" that keeps sample i would score visibly better


def test_the_scale_bound_binds_where_an_unconstrained_fit_goes_negative() -> None:
    from hwnas.latency.predictor import _solve

    rng = np.random.default_rng(4)
    x = _synthetic_design(rng)
    y = x @ np.array([1.2, -0.4, 0.003, 0.1])  # the second kernel type "saves" time: unphysical
    y = np.abs(y) + 0.05
    free, *_ = np.linalg.lstsq(x / y[:, None], np.ones(len(y)), rcond=None)
    assert free[1] < 0  # the scenario exercises the bound
    coef = _solve(x, y, 2)
    assert (coef[:2] >= 0).all() and coef[1] == pytest.approx(0.0, abs=1e-9)
    free_rel = np.sqrt(np.mean(np.square((x @ free - y) / y)))
    bound_rel = np.sqrt(np.mean(np.square((x @ coef - y) / y)))
    assert bound_rel >= free_rel - 1e-12  # the bound costs fit, as it must


# --- written from the mutation run's survivors (TESTING.md): every field, default and statistic ------
def _calibration() -> Calibration:
    return Calibration(model="per-op", scale={"conv": 1.5, "se": 0.25}, per_kernel_ms={"conv": 0.01, "add": -0.002},
                       offset_ms=0.03, stats={"n": 9.0, "rmspe": 0.04}, fit_archs=("r32 a", "r24 b"),
                       device={"kind": "ort-cpu", "threads": 1}, fitted_at=1234.5)  # fmt: skip


def test_a_calibration_reads_back_field_by_field_with_its_names() -> None:
    cal = _calibration()
    data = json.loads(json.dumps(cal.to_dict()))
    assert set(data) == {"model", "scale", "per_kernel_ms", "offset_ms", "stats", "fit_archs", "device", "fitted_at"}
    assert data["stats"] == {"n": 9.0, "rmspe": 0.04} and data["fit_archs"] == ["r32 a", "r24 b"]
    assert data["device"] == {"kind": "ort-cpu", "threads": 1} and data["fitted_at"] == 1234.5
    back = Calibration.from_dict(data, "x.lut")
    assert back == cal  # every field, by value
    minimal = {k: data[k] for k in ("model", "scale", "per_kernel_ms", "offset_ms")}
    bare = Calibration.from_dict(minimal, "x.lut")
    assert (bare.stats, bare.fit_archs, bare.device, bare.fitted_at) == ({}, (), {}, 0.0)
    assert bare.model == "per-op" and bare.offset_ms == 0.03


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        ({"model": "quadratic"}, "unknown model 'quadratic'"),
        ({"scale": {"warp": 1.0}}, "unknown kernel ops ['warp']"),
        ({"per_kernel_ms": {"conv": 0.1, "zz": 0.0}}, "unknown kernel ops ['zz']"),
        ({"offset_ms": "fast"}, "ValueError"),
    ],
)
def test_a_damaged_calibration_names_what_is_wrong(edit: dict, words: str) -> None:
    data = {**_calibration().to_dict(), **edit}
    with pytest.raises(LutError, match=r"^x\.lut: damaged calibration .*refit it with 'hwnas lut validate --fit'") as e:
        Calibration.from_dict(data, "x.lut")
    assert words in str(e.value)
    missing = {k: v for k, v in _calibration().to_dict().items() if k != "offset_ms"}
    with pytest.raises(LutError, match="KeyError: 'offset_ms'"):
        Calibration.from_dict(missing, "x.lut")


def test_an_op_the_calibration_does_not_name_costs_its_lut_latency() -> None:
    cal = _calibration()
    kernels = {k.op: k for k in get_space("cifar").kernels()}
    assert cal.kernel_cost(kernels["conv"], 2.0) == pytest.approx(1.5 * 2.0 + 0.01)
    assert cal.kernel_cost(kernels["se"], 2.0) == pytest.approx(0.25 * 2.0)  # scaled, no per-kernel term
    assert cal.kernel_cost(kernels["add"], 2.0) == pytest.approx(2.0 - 0.002)  # scale 1, its per-kernel term
    assert cal.kernel_cost(kernels["dwconv"], 2.0) == 2.0  # not named at all: the LUT latency itself


def test_the_design_matrix_against_a_hand_count(lut: Path) -> None:
    from hwnas.latency.predictor import design_matrix

    table = LatencyTable.load(lut)
    arch = get_space("cifar").sample(7)
    kernels = arch_kernels(arch)
    per_op = {op: sum(fake_latency(k) for k in kernels if k.op == op) for op in KERNEL_OPS}
    counts = {op: sum(1 for k in kernels if k.op == op) for op in KERNEL_OPS}
    full = design_matrix(table, [arch], "full")[0]
    assert full.tolist() == pytest.approx([*per_op.values(), *counts.values(), 1.0], rel=1e-12)
    linear = design_matrix(table, [arch], "linear")[0]
    assert linear.tolist() == pytest.approx([sum(per_op.values()), len(kernels), 1.0], rel=1e-12)
    per_op_row = design_matrix(table, [arch, arch], "per-op")
    assert per_op_row.shape == (2, 1 + len(KERNEL_OPS) + 1)
    assert per_op_row[1].tolist() == pytest.approx([sum(per_op.values()), *counts.values(), 1.0], rel=1e-12)


def test_the_fit_statistics_against_an_independent_computation(lut: Path) -> None:
    import time

    space = get_space("cifar")
    table = LatencyTable.load(lut)
    archs = [space.sample(s) for s in range(200, 214)]
    noise = np.random.default_rng(5).normal(0, 0.08, len(archs))
    measured = [true_latency(a) * (1 + e) for a, e in zip(archs, noise, strict=True)]
    t0 = time.time()
    cal = fit_calibration(table, archs, measured, FP, model="linear")
    t1 = time.time()
    pred = LatencyPredictor(table, cal)
    y = np.array(measured)
    p = np.array([pred.predict(a) for a in archs])  # the calibration as the search uses it
    rel = (p - y) / y
    assert cal.stats["n"] == len(archs)
    assert cal.stats["rmse_ms"] == pytest.approx(float(np.sqrt(np.mean((p - y) ** 2))), rel=1e-9)
    assert cal.stats["rmspe"] == pytest.approx(float(np.sqrt(np.mean(rel**2))), rel=1e-9)
    assert cal.stats["within_10"] == pytest.approx(float(np.mean(np.abs(rel) <= 0.10)))
    assert 0 < cal.stats["within_10"] < 1  # the noise puts some networks on each side of 10%
    assert set(cal.stats) == {"n", "rmse_ms", "rmspe", "within_10", "loo_rmspe", "loo_rmspe_linear"}
    assert cal.stats["loo_rmspe"] == cal.stats["loo_rmspe_linear"] > cal.stats["rmspe"]
    assert cal.fit_archs == tuple(a.to_str() for a in archs)
    assert cal.device == {k: v for k, v in FP.items() if k not in ("hwnas_version", "os")}
    assert t0 <= cal.fitted_at <= t1
    assert set(cal.scale) == set(cal.per_kernel_ms) == set(KERNEL_OPS)
    assert len(set(cal.scale.values())) == 1  # linear: one scale for every op


def test_a_lut_without_a_calibration_reads_none_and_a_garbled_one_is_refused(lut: Path) -> None:
    assert read_calibration(LatencyTable.load(lut)) is None
    with LutStore.open(lut) as store:
        store.set_meta("calibration", "not json {")
    with pytest.raises(LutError, match="damaged calibration"):
        read_calibration(LatencyTable.load(lut))


def test_the_fit_checks_its_input_and_takes_exactly_min_fit_networks(lut: Path) -> None:
    from hwnas.latency.predictor import MIN_FIT

    space = get_space("cifar")
    table = LatencyTable.load(lut)
    archs = [space.sample(s) for s in range(300, 300 + MIN_FIT)]
    small = [0.4 + 0.01 * i for i in range(MIN_FIT)]  # sub-millisecond networks are ordinary
    cal = fit_calibration(table, archs, small, FP, model="linear")
    assert cal.stats["n"] == MIN_FIT == 8
    with pytest.raises(LutError, match="at least 8 measured architectures, got 7; raise --samples"):
        fit_calibration(table, archs[:-1], small[:-1], FP, model="linear")
    with pytest.raises(ValueError, match=r"^one measurement per architecture$"):
        fit_calibration(table, archs, small[:-1], FP)
    for bad in (0.0, -0.1):
        with pytest.raises(ValueError, match=r"^measured latencies must be positive$"):
            fit_calibration(table, archs, [*small[:-1], bad], FP)


def test_the_reported_leave_one_out_error_is_that_of_refits_without_each_network(lut: Path) -> None:
    """Computed again through the public fit: each network predicted by a calibration fitted on the
    others. The device saves time per kernel (a negative constant), so a fold that bounded every
    coefficient at zero would differ."""
    space = get_space("cifar")
    table = LatencyTable.load(lut)
    archs = [space.sample(s) for s in range(400, 412)]
    noise = np.random.default_rng(6).normal(0, 0.05, len(archs))
    measured = [(0.8 * sum(fake_latency(k) for k in arch_kernels(a)) - 0.02 * len(arch_kernels(a)) + 0.5) * (1 + e)
                for a, e in zip(archs, noise, strict=True)]  # fmt: skip
    cal = fit_calibration(table, archs, measured, FP, model="linear")
    assert min(cal.per_kernel_ms.values()) < 0  # a coefficient the fit must leave unbounded
    errors = []
    for i in range(len(archs)):
        rest = [j for j in range(len(archs)) if j != i]
        fold = fit_calibration(table, [archs[j] for j in rest], [measured[j] for j in rest], FP, model="linear")
        errors.append((LatencyPredictor(table, fold).predict(archs[i]) - measured[i]) / measured[i])
    assert cal.stats["loo_rmspe"] == pytest.approx(float(np.sqrt(np.mean(np.square(errors)))), rel=1e-6)


def test_a_calibration_that_is_not_json_is_refused_naming_the_lut(lut: Path) -> None:
    with sqlite3.connect(lut) as conn:
        conn.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('calibration', 'not json {')")
    with pytest.raises(LutError, match=rf"^{lut}: damaged calibration"):
        read_calibration(LatencyTable.load(lut))


def test_raw_wins_when_the_measurements_are_noisier_than_the_lut(lut: Path) -> None:
    # A device whose networks cost exactly the LUT sum, measured with large noise (a GPU at batch 1):
    # every fitted model chases the noise; the LUT sum, fitting nothing, generalizes best.
    space = get_space("cifar")
    table = LatencyTable.load(lut)
    archs = [space.sample(s) for s in range(12)]
    noise = np.random.default_rng(0).normal(0, 0.3, len(archs)).clip(-0.6, 1.0)
    raw = [sum(fake_latency(k) for k in arch_kernels(a)) for a in archs]
    measured = [r * (1 + e) for r, e in zip(raw, noise, strict=True)]
    cal = fit_calibration(table, archs, measured, FP)
    rel = (np.asarray(raw) - measured) / np.asarray(measured)
    assert cal.stats["loo_rmspe_raw"] == pytest.approx(float(np.sqrt(np.mean(rel**2))), rel=1e-12)
    assert cal.model == "raw", cal.stats
    assert cal.stats["loo_rmspe_raw"] < min(cal.stats[f"loo_rmspe_{m}"] for m in ("linear", "per-op", "full"))
    assert cal.stats["rmspe"] == pytest.approx(cal.stats["loo_rmspe_raw"], rel=1e-12)
    store_calibration(lut, cal)
    pred = LatencyPredictor.from_lut(lut)
    assert pred.calibration is not None and pred.calibration.model == "raw"
    for a in [space.smallest(), space.largest(), space.sample(77)]:
        assert pred.predict(a) == pytest.approx(pred.raw(a), rel=1e-12)


def test_the_command_line_offers_every_calibration_model() -> None:
    import argparse

    from hwnas.cli import build_parser
    from hwnas.latency.predictor import MODEL_SHAPES, MODELS

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    lut = next(a for a in sub.choices["lut"]._actions if isinstance(a, argparse._SubParsersAction))
    model = next(a for a in lut.choices["validate"]._actions if a.dest == "model")
    assert tuple(model.choices) == ("auto", *MODELS) and set(MODELS) == {*MODEL_SHAPES, "raw"}


def test_auto_passes_over_models_that_predict_a_network_of_the_space_at_or_below_zero(lut: Path) -> None:
    space = get_space("cifar")
    table = LatencyTable.load(lut)
    raw = LatencyPredictor(table)
    cheapest = space.extreme(raw.kernel_cost)
    s0, n0 = raw.raw(cheapest), len(arch_kernels(cheapest))
    per_kernel = (s0 + 0.01) / n0  # a device on which the space's cheapest network would take -0.01 ms

    def device_ms(a) -> float:  # type: ignore[no-untyped-def]
        return raw.raw(a) - per_kernel * len(arch_kernels(a))

    rng = random.Random(7)
    archs = [a for a in (space.sample(rng) for _ in range(400)) if device_ms(a) > 0.02][:30]
    assert len(archs) == 30
    measured = [device_ms(a) for a in archs]
    # every fitted model recovers this device on the networks it sees, so each extrapolates below zero
    blind = fit_calibration(table, archs, measured, FP)
    assert blind.model != "raw" and blind.stats["rmspe"] < 1e-6
    assert cheapest_prediction(table, space, blind) < 0
    guarded = fit_calibration(table, archs, measured, FP, space=space)
    assert guarded.model == "raw" and cheapest_prediction(table, space, guarded) > 0
    passed = {k for k in guarded.stats if k.startswith("passed_over_")}
    assert passed == {f"passed_over_{m}_cheapest_ms" for m in ("linear", "per-op", "per-op-scale", "full")}
    assert all(guarded.stats[k] <= 0 for k in passed)
    # an explicit model is kept as asked
    assert fit_calibration(table, archs, measured, FP, model="linear", space=space).model == "linear"
