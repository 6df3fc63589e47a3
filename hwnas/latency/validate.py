"""How good is a LUT? Predict, measure whole networks end to end, score, and optionally calibrate.

:func:`validate` samples architectures of a space stratified over the LUT's predicted latency
(so fast and slow networks are scored alike, not only the crowded middle of the range), measures
them on the device (:mod:`hwnas.latency.network_timing`), and scores the predictions: RMSE,
RMSPE, the share within +-5/10/15 %, Kendall tau and Spearman rho, for the raw sum and for the
calibrated prediction, plus the rank correlation of FLOPs for comparison. With ``fit=True`` a
share of the samples (every other one in predicted order, by default) fits a new calibration
and only the rest are scored; a calibration's fitting architectures are never scored later.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hwnas.core.errors import HwnasError
from hwnas.core.fileio import write_bytes_atomic, write_text_atomic
from hwnas.devices.base import Device, TimingConfig
from hwnas.devices.conditions import RunConditions, run_conditions
from hwnas.latency.drift import DriftCheck, check_drift
from hwnas.latency.network_timing import measure_networks
from hwnas.latency.predictor import (
    MIN_FIT,
    Calibration,
    LatencyPredictor,
    fit_calibration,
    read_calibration,
    store_calibration,
)
from hwnas.latency.stability import DRIFT_KERNELS, DRIFT_LIMIT, DRIFT_META
from hwnas.latency.statistic import (
    DEFAULT_STATISTIC,
    FACTORS_META,
    STATISTICS,
    check_statistic,
    factor_for,
    factors_from_rounds,
    factors_to_meta,
    read_factors,
)
from hwnas.latency.store import LutStore, device_id, identity
from hwnas.latency.table import LatencyTable
from hwnas.spaces.arch import Architecture
from hwnas.spaces.kernels import arch_flops, arch_kernels
from hwnas.spaces.space import SearchSpace

WITHIN = (0.05, 0.10, 0.15)


def stratified_sample(
    space: SearchSpace,
    predict: Any,
    n: int,
    seed: int = 0,
    exclude: frozenset[str] = frozenset(),
    pool: int | None = None,
) -> list[Architecture]:
    """``n`` distinct random architectures spread evenly over the predicted latency range.

    Draws a pool of random architectures (``pool``, default ``max(20 n, 200)``), then for ``n``
    targets evenly spaced between the pool's fastest and slowest prediction takes the unused
    pool member nearest each target. Architectures whose string is in ``exclude`` are never taken.
    Returned in increasing predicted latency.
    """
    rng = random.Random(seed)
    found: dict[str, tuple[float, Architecture]] = {}
    draws = pool or max(20 * n, 200)
    for _ in range(draws):
        arch = space.sample(rng)
        key = arch.to_str()
        if key not in exclude and key not in found:
            found[key] = (float(predict(arch)), arch)
    if len(found) < n:
        raise HwnasError(
            f"only {len(found)} distinct architectures of {space.name} could be drawn for scoring; ask for fewer --samples"
        )
    items = sorted(found.values(), key=lambda t: t[0])
    values = np.array([t[0] for t in items])
    lo, hi = float(values[0]), float(values[-1])
    used = np.zeros(len(items), dtype=bool)
    chosen = []
    for i in range(n):
        target = lo + (i + 0.5) * (hi - lo) / n
        dist = np.where(used, np.inf, np.abs(values - target))
        j = int(np.argmin(dist))
        used[j] = True
        chosen.append(j)
    return [items[j][1] for j in sorted(chosen)]


def split_fit_score(archs: Sequence[Architecture], fit_share: float) -> tuple[list[int], list[int]]:
    """Indices for fitting and for scoring, interleaved along ``archs`` (sorted by prediction) so
    both cover the whole range: item ``i`` fits when ``floor((i+1) s) > floor(i s)``."""
    if not 0.0 < fit_share < 1.0:
        raise HwnasError(f"--fit-share must be between 0 and 1 (exclusive), got {fit_share}")
    fit = [i for i in range(len(archs)) if math.floor((i + 1) * fit_share) > math.floor(i * fit_share)]
    chosen = set(fit)
    return fit, [i for i in range(len(archs)) if i not in chosen]


def scores(predicted: Sequence[float] | np.ndarray, measured: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Accuracy of ``predicted`` against ``measured`` latencies (ms)."""
    p, m = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    rel = (p - m) / m
    out = {
        "n": float(len(m)),
        "rmse_ms": float(np.sqrt(np.mean(np.square(p - m)))),
        "rmspe": float(np.sqrt(np.mean(np.square(rel)))),
        "mean_error": float(np.mean(rel)),
    }
    for w in WITHIN:
        out[f"within_{round(w * 100)}"] = float(np.mean(np.abs(rel) <= w + 1e-12))
    out.update(rank_scores(p, m))
    return out


def noise_floor(per_arch: dict[str, list[float]]) -> dict[str, float]:
    """The noise floor of a validation run: how well a network's own rounds agree.

    ``within_10`` / ``within_5``: the share of the rounds (of networks timed in at least 2 rounds)
    that lie within +-10% / +-5% of their network's median, i.e. what a perfect predictor could
    reach against single rounds; ``median_spread``: the median over networks of (max - min) /
    median of its rounds; ``rms``: the root mean square of the rounds' relative deviations from
    their network's median (comparable with an RMSPE).
    """
    devs, spreads = [], []
    for rounds in per_arch.values():
        if len(rounds) < 2:
            continue
        med = float(np.median(rounds))
        devs += [abs(x / med - 1) for x in rounds]
        spreads.append((max(rounds) - min(rounds)) / med)
    if not devs:
        return {}
    d = np.asarray(devs)
    return {"within_10": float(np.mean(d <= 0.10 + 1e-12)), "within_5": float(np.mean(d <= 0.05 + 1e-12)),
            "median_spread": float(np.median(spreads)), "networks": float(len(spreads)),
            "rms": float(np.sqrt(np.mean(np.square(d))))}  # fmt: skip


def rank_scores(x: Sequence[float] | np.ndarray, measured: Sequence[float] | np.ndarray) -> dict[str, float]:
    from scipy import stats

    if len(measured) < 3:
        return {"kendall_tau": float("nan"), "spearman": float("nan")}
    return {
        "kendall_tau": float(stats.kendalltau(x, measured).statistic),
        "spearman": float(stats.spearmanr(x, measured).statistic),
    }


@dataclass
class Validation:
    """The outcome of :func:`validate`: one row per architecture, and the scores."""

    rows: pd.DataFrame  # arch, role, flops, kernels, raw_ms, calibrated_ms, measured_ms
    raw: dict[str, float]
    calibrated: dict[str, float] | None
    flops: dict[str, float]
    calibration: Calibration | None
    fitted: bool
    meta: dict[str, Any] = field(default_factory=dict)
    noise: dict[str, float] = field(default_factory=dict)  # the same run's noise floor, see noise_floor
    # per statistic whose factor the LUT holds: the calibrated prediction's scores against that
    # statistic's measurements and that statistic's noise floor, from the same rounds
    by_statistic: dict[str, dict[str, Any]] = field(default_factory=dict)
    drift: DriftCheck | None = None  # reference kernels timed again (hwnas.latency.drift)
    conditions: RunConditions | None = None  # the host's noise while the networks were timed
    noisy: list[str] = field(default_factory=list)  # why this run was noisier than its own thresholds


# the share of single rounds within +-10% of their network's median below which a validation cannot
# show the accuracy bar (>= 95% of held-out networks within +-10%) and is labelled noisy
NOISY_FLOOR = 0.95


def validate(
    lut: str | Path,
    space: SearchSpace,
    device: Device,
    samples: int,
    fit: bool = False,
    fit_share: float = 0.5,
    model: str = "auto",
    rounds: int = 3,
    timing: TimingConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
    before_timing: Callable[[], None] | None = None,
    statistic: str = DEFAULT_STATISTIC,
    drift_kernels: int | None = DRIFT_KERNELS,
) -> Validation:
    """Measure ``samples`` architectures of ``space`` on ``device`` and score the LUT ``lut``.

    The LUT must come from ``device`` (same identity), unless ``force``. With ``fit``, a new
    calibration is fitted on a ``fit_share`` of the samples and stored in the LUT, with the
    device's median/fastest and p90/fastest factors (:mod:`hwnas.latency.statistic`) measured on
    the same networks. ``statistic``: what is scored, each network's rounds of that statistic
    against the prediction times its factor, beside that statistic's own noise floor.
    ``drift_kernels``: reference kernels timed again beside the networks, to tell whether the LUT
    was measured under the validation's conditions (:mod:`hwnas.latency.drift`; None: every kernel
    of the space, 0: none); what it finds goes into the LUT's ``drift`` record.
    """
    check_statistic(statistic)
    if fit:  # a bad share, or too few networks to fit, fails before anything is measured
        n_fit = len(split_fit_score([None] * samples, fit_share)[0])  # type: ignore[list-item]
        if n_fit < MIN_FIT:
            raise HwnasError(f"--fit would fit on {n_fit} networks; a calibration needs at least {MIN_FIT}: "
                             f"raise --samples to {math.ceil(MIN_FIT / fit_share)} or more")  # fmt: skip
    table = LatencyTable.load(lut)
    table.check_device(device.fingerprint(), force=force)
    table.require(space.kernels())
    old = None if fit else read_calibration(table)  # --fit replaces a calibration, even a damaged one
    factors = {} if fit else read_factors(table.meta, str(lut))
    if not fit:
        factor_for(factors, statistic, str(lut))  # a LUT without the factor fails before anything is timed
    raw = LatencyPredictor(table)
    if old is not None and old.device and old.device != identity(device.fingerprint()) and not force:
        raise HwnasError(f"{lut}: its calibration was fitted on another device; refit with --fit, or pass --force")
    exclude = frozenset(old.fit_archs) if old else frozenset()
    archs = stratified_sample(space, raw.raw, samples, seed=seed, exclude=exclude)
    if before_timing is not None:
        before_timing()
    with LutStore.open(lut) as store:
        store.conn.execute("PRAGMA journal_mode=WAL")
        measured = measure_networks(archs, device, store, rounds=rounds, timing=timing, seed=seed, progress=progress)
        wanted = {a.to_str() for a in archs}
        dev = device_id(device.fingerprint())
        per_arch: dict[str, list[float]] = {}
        for arch_str, r, ms in store.model_rows(dev):
            if arch_str in wanted and r < rounds:
                per_arch.setdefault(arch_str, []).append(ms)
        records = [c for c in store.conditions(dev) if c["key"] in wanted and c["round"] < rounds]
        disturbed = {(c["key"], c["round"]) for c in records if c["disturbed"]}
        three: dict[str, list[tuple[float, float, float, bool]]] = {}
        for arch_str, r, fastest, median, p90 in store.model_statistics(dev):
            if arch_str in wanted and r < rounds:
                three.setdefault(arch_str, []).append((fastest, median, p90, (arch_str, r) in disturbed))
    drift = None
    if drift_kernels != 0:
        drift = check_drift(table, archs, device, drift_kernels, every=space.kernels(), rounds=rounds, timing=timing,
                            seed=seed, progress=progress)  # fmt: skip
    y = [measured[a.to_str()] for a in archs]
    roles = ["score"] * len(archs)
    calibration = old
    if fit:
        fit_idx, _ = split_fit_score(archs, fit_share)
        for i in fit_idx:
            roles[i] = "fit"
        calibration = fit_calibration(
            table,
            [archs[i] for i in fit_idx],
            [y[i] for i in fit_idx],
            device.fingerprint(),
            model=model,
            space=space,
        )
        store_calibration(lut, calibration)
        # the factors from the same networks' own runs, in rounds the guard did not flag
        factors = factors_from_rounds({archs[i].to_str(): [t[:3] for t in three.get(archs[i].to_str(), []) if not t[3]]
                                       for i in fit_idx})  # fmt: skip
        with LutStore.open(lut) as store:
            store.set_meta(FACTORS_META, factors_to_meta(factors, identity(device.fingerprint())))
    factor = factor_for(factors, statistic, str(lut))
    cal = LatencyPredictor(table, calibration) if calibration else None
    score_idx = [i for i, role in enumerate(roles) if role == "score"]
    by_statistic: dict[str, dict[str, Any]] = {}
    for name in STATISTICS:  # each network's rounds of that statistic, against the prediction times its factor
        if name != "fastest" and name not in factors:
            continue
        column = STATISTICS.index(name)
        rounds_of = {a: [t[column] for t in ts] for a, ts in three.items()}
        if any(a.to_str() not in rounds_of for a in archs):
            continue  # rows stored before the fastest run was kept
        f = factor_for(factors, name, str(lut))
        measured_stat = [float(np.median(rounds_of[archs[i].to_str()])) for i in score_idx]
        predicted = [(cal.predict(archs[i]) if cal else raw.raw(archs[i])) * f for i in score_idx]
        by_statistic[name] = {"factor": f, "scores": scores(predicted, measured_stat),
                              "noise": noise_floor(rounds_of)}  # fmt: skip
        if name == statistic and name != "fastest":
            per_arch = rounds_of
            y = [float(np.median(rounds_of[a.to_str()])) for a in archs]
    if statistic != "fastest" and statistic not in by_statistic:  # never a median prediction against fastest runs
        raise HwnasError(f"{lut}: some networks' stored rounds predate hwnas keeping every statistic of a round; "
                         f"score them with --statistic fastest, or validate in a new LUT")  # fmt: skip
    rows = pd.DataFrame(
        {
            "arch": [a.to_str() for a in archs],
            "role": roles,
            "resolution": [a.resolution for a in archs],
            "flops": [arch_flops(a) for a in archs],
            "kernels": [len(arch_kernels(a)) for a in archs],
            "raw_ms": [raw.raw(a) * factor for a in archs],
            "calibrated_ms": [cal.predict(a) * factor if cal else float("nan") for a in archs],
            "measured_ms": y,
        }
    )
    scored = rows[rows["role"] == "score"]
    if len(scored) < 3:
        raise HwnasError(f"only {len(scored)} architectures are left to score; raise --samples")
    noise = noise_floor(per_arch)
    conditions = run_conditions(records, list(per_arch.values()))
    noisy = conditions.noisy()
    if noise and noise["within_10"] < NOISY_FLOOR:
        noisy.append(f"only {noise['within_10']:.0%} of single rounds lie within +-10% of their network's median, "
                     f"below the {NOISY_FLOOR:.0%} the accuracy bar asks")  # fmt: skip
    if drift is not None:
        drift.noise_rms = noise.get("rms")
        drift.loo_rmspe = calibration.stats.get("loo_rmspe") if (fit and calibration) else None
        if drift.slower:
            noisy.append(f"{len(drift.slower)} reference kernels ran over {DRIFT_LIMIT:.1f}x slower than the LUT says")
        with LutStore.open(lut) as store:
            store.set_meta(DRIFT_META, drift.record())
    return Validation(
        rows=rows,
        raw=scores(scored["raw_ms"], scored["measured_ms"]),
        calibrated=scores(scored["calibrated_ms"], scored["measured_ms"]) if cal else None,
        flops=rank_scores(scored["flops"], scored["measured_ms"]),
        calibration=calibration,
        fitted=fit,
        noise=noise,
        by_statistic=by_statistic,
        drift=drift,
        conditions=conditions,
        noisy=noisy,
        meta={
            "lut": str(lut),
            "space": space.name,
            "device": device.spec,
            "samples": samples,
            "rounds": rounds,
            "seed": seed,
            "statistic": statistic,
            "factors": {k: vars(f) for k, f in factors.items()},
            "conditions": conditions.to_dict(),
            "drift": drift.record() if drift else None,
        },
    )


def write_report(result: Validation, out_dir: Path) -> tuple[Path, Path]:
    """Write ``validation.csv`` and ``validation.png`` (predicted against measured) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out_dir / "validation.csv", out_dir / "validation.png"
    write_text_atomic(csv_path, result.rows.to_csv(index=False))
    write_bytes_atomic(png_path, scatter_png(result))
    return csv_path, png_path


def scatter_png(result: Validation) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = result.rows
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=110)
    lo = float(min(rows["measured_ms"].min(), rows["raw_ms"].min()))
    hi = float(max(rows["measured_ms"].max(), rows["raw_ms"].max()))
    if result.calibration is not None:
        lo, hi = min(lo, float(rows["calibrated_ms"].min())), max(hi, float(rows["calibrated_ms"].max()))
    line = np.linspace(lo * 0.95, hi * 1.05, 50)
    ax.plot(line, line, color="black", lw=1, label="measured")
    ax.fill_between(line, line * 0.9, line * 1.1, color="grey", alpha=0.2, label="+-10%")
    scored = rows["role"] == "score"
    ax.scatter(rows.loc[scored, "measured_ms"], rows.loc[scored, "raw_ms"], s=14, marker="o",
               label=f"LUT sum (within 10%: {result.raw['within_10']:.0%}, tau {result.raw['kendall_tau']:.3f})")  # fmt: skip
    if result.calibrated is not None:
        ax.scatter(rows.loc[scored, "measured_ms"], rows.loc[scored, "calibrated_ms"], s=14, marker="x",
                   label=f"calibrated (within 10%: {result.calibrated['within_10']:.0%}, "
                         f"tau {result.calibrated['kendall_tau']:.3f})")  # fmt: skip
    if (~scored).any():
        ax.scatter(rows.loc[~scored, "measured_ms"], rows.loc[~scored, "calibrated_ms"], s=10, marker="+",
                   color="grey", label="fitting set (not scored)")  # fmt: skip
    ax.set_xlabel("measured end to end (ms)")
    ax.set_ylabel("predicted (ms)")
    meta = result.meta
    ax.set_title(f"{meta.get('space')} on {meta.get('device')}: {int(result.raw['n'])} scored architectures",
                 fontsize=10)  # fmt: skip
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
