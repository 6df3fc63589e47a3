"""Architecture + LUT -> predicted latency, raw (the sum of its kernels) or calibrated.

Kernels timed one at a time miss what a whole network adds or saves: a runtime's per-operator
dispatch (ONNX Runtime pays it once per ``session.run`` of a one-kernel model, so the raw sum
over-predicts) and effects between neighbouring operators (caches, layout). A calibration maps
the raw prediction to end-to-end latency, fitted on whole networks measured by
``hwnas lut validate --fit``. Every model it fits is affine in the kernels::

    linear:        t = a * sum_k lut(k)                 + b * n_kernels                   + c
    per-op:        t = a * sum_k lut(k)                 + sum_op b_op * n_kernels(op)     + c
    per-op-scale:  t = sum_op a_op * sum_{k of op} lut(k) + b * n_kernels                 + c
    full:          t = sum_op a_op * sum_{k of op} lut(k) + sum_op b_op * n_kernels(op)   + c
    raw:           t = sum_k lut(k)                                                           (nothing fitted)

so a calibrated prediction is still a sum of per-kernel costs (``a_op(k) * lut(k) + b_op(k)``) plus a
constant, and the search's exact expected cost works on it unchanged (:meth:`kernel_cost`,
:attr:`offset`). Fits minimize the squared *relative* error (rows weighted by 1 / measured). The
model kept is the one with the lowest leave-one-out RMSPE on the fitting set; ``raw`` competes with
its plain RMSPE there (it fits nothing, so that is its leave-one-out error): when the end-to-end
measurements are noisier than the LUT (a GPU at batch 1, a busy hour), fitted models chase the
noise, and keeping the sum is better than a calibration that is worse than none.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.latency.calibration_models import MODEL_SHAPES, MODELS, RAW
from hwnas.latency.store import LutError, LutStore, identity
from hwnas.latency.table import LatencyTable
from hwnas.spaces.arch import Architecture
from hwnas.spaces.kernels import KERNEL_OPS, Kernel, arch_kernels
from hwnas.spaces.space import SearchSpace

CALIBRATION_META = "calibration"
MIN_FIT = 8  # fewest whole networks a calibration is fitted on


@dataclass(frozen=True)
class Calibration:
    """An affine map from per-kernel LUT latencies to end-to-end latency (see the module docstring)."""

    model: str
    scale: dict[str, float]  # multiplies the LUT latency of each op's kernels
    per_kernel_ms: dict[str, float]  # added per kernel of each op
    offset_ms: float
    stats: dict[str, float] = field(default_factory=dict)  # fit statistics
    fit_archs: tuple[str, ...] = ()  # architecture strings it was fitted on (never scored)
    device: dict[str, Any] = field(default_factory=dict)  # identity of the device measured end to end
    fitted_at: float = 0.0

    def kernel_cost(self, kernel: Kernel, lut_ms: float) -> float:
        return self.scale.get(kernel.op, 1.0) * lut_ms + self.per_kernel_ms.get(kernel.op, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "scale": self.scale,
            "per_kernel_ms": self.per_kernel_ms,
            "offset_ms": self.offset_ms,
            "stats": self.stats,
            "fit_archs": list(self.fit_archs),
            "device": self.device,
            "fitted_at": self.fitted_at,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str) -> Calibration:
        try:
            if data["model"] not in MODELS:
                raise ValueError(f"unknown model {data['model']!r}")
            per_kernel = {str(k): float(v) for k, v in dict(data["per_kernel_ms"]).items()}
            scale = {str(k): float(v) for k, v in dict(data["scale"]).items()}
            unknown = (set(per_kernel) | set(scale)) - set(KERNEL_OPS)
            if unknown:
                raise ValueError(f"unknown kernel ops {sorted(unknown)}")
            return cls(
                model=str(data["model"]),
                scale=scale,
                per_kernel_ms=per_kernel,
                offset_ms=float(data["offset_ms"]),
                stats={str(k): float(v) for k, v in dict(data.get("stats", {})).items()},
                fit_archs=tuple(str(a) for a in data.get("fit_archs", [])),
                device=dict(data.get("device", {})),
                fitted_at=float(data.get("fitted_at", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LutError(
                f"{source}: damaged calibration ({type(exc).__name__}: {exc}); refit it with 'hwnas lut validate --fit'"
            ) from None


class LatencyPredictor:
    """Predicted latency of architectures from a LUT, calibrated when the LUT holds a calibration."""

    def __init__(self, table: LatencyTable, calibration: Calibration | None = None) -> None:
        self.table = table
        self.calibration = calibration

    @classmethod
    def from_lut(cls, path: str | Path, calibrated: bool = True) -> LatencyPredictor:
        table = LatencyTable.load(path)
        return cls(table, read_calibration(table) if calibrated else None)

    @property
    def offset(self) -> float:
        """The constant part of a prediction (0 uncalibrated)."""
        return self.calibration.offset_ms if self.calibration else 0.0

    def kernel_cost(self, kernel: Kernel) -> float:
        """One kernel's share of a prediction, in ms (its LUT latency, calibrated)."""
        lut = self.table.lookup(kernel)
        return self.calibration.kernel_cost(kernel, lut) if self.calibration else lut

    def raw(self, arch: Architecture) -> float:
        """The sum of the architecture's kernels in the LUT, in ms."""
        return float(sum(self.table.lookup_many(arch_kernels(arch))))

    def factor(self, statistic: str) -> float:
        """The multiplier from a (fastest-run) prediction to ``statistic`` (:mod:`hwnas.latency.statistic`)."""
        from hwnas.latency.statistic import factor_for, read_factors

        if statistic == "fastest":
            return 1.0
        return factor_for(read_factors(self.table.meta, str(self.table.path)), statistic, str(self.table.path))

    def predict(self, arch: Architecture, statistic: str = "fastest") -> float:
        """Predicted end-to-end latency in ms (calibrated if the predictor has a calibration) of
        each round's fastest run, or of its ``statistic`` run (times the LUT's factor for it)."""
        kernels = arch_kernels(arch)
        self.table.require(kernels)
        return (self.offset + sum(self.kernel_cost(k) for k in kernels)) * self.factor(statistic)


def read_calibration(table: LatencyTable) -> Calibration | None:
    """The calibration stored in a loaded LUT, if any."""
    text = table.meta.get(CALIBRATION_META)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    return Calibration.from_dict(data, str(table.path))


def store_calibration(path: str | Path, calibration: Calibration) -> None:
    with LutStore.open(path) as store:
        store.set_meta(CALIBRATION_META, calibration.to_dict())


def cheapest_prediction(table: LatencyTable, space: SearchSpace, calibration: Calibration | None) -> float:
    """The lowest prediction of any network of ``space`` (exact: the space's extreme over the
    calibrated per-kernel costs, plus the calibration's constant)."""
    predictor = LatencyPredictor(table, calibration)
    return predictor.predict(space.extreme(predictor.kernel_cost))


def design_matrix(table: LatencyTable, archs: Sequence[Architecture], model: str) -> np.ndarray:
    """Feature rows ``[LUT sum(s)..., kernel count(s)..., 1]`` of ``model`` (see :data:`MODEL_SHAPES`)."""
    one_scale, one_count = MODEL_SHAPES[model]
    rows = []
    for arch in archs:
        kernels = arch_kernels(arch)
        lat: dict[str, float] = dict.fromkeys(KERNEL_OPS, 0.0)
        for k, ms in zip(kernels, table.lookup_many(kernels), strict=True):
            lat[k.op] += ms
        counts = Counter(k.op for k in kernels)
        sums = [sum(lat.values())] if one_scale else [lat[op] for op in KERNEL_OPS]
        n = [len(kernels)] if one_count else [counts[op] for op in KERNEL_OPS]
        rows.append([*sums, *n, 1.0])
    return np.asarray(rows, dtype=np.float64)


def _n_scale(model: str) -> int:
    return 1 if MODEL_SHAPES[model][0] else len(KERNEL_OPS)


def _per_op(values: np.ndarray, one: bool) -> dict[str, float]:
    return {op: float(values[0] if one else values[i]) for i, op in enumerate(KERNEL_OPS)}


def _solve(x: np.ndarray, y: np.ndarray, n_scale: int) -> np.ndarray:
    """Least squares of the relative error, the first ``n_scale`` coefficients (LUT scales) kept
    non-negative, so no kernel's LUT latency counts against a network."""
    from scipy.optimize import lsq_linear

    w = x / y[:, None]
    scale = np.maximum(np.abs(w).max(axis=0), 1e-12)  # column scaling for a well-conditioned solve
    lower = np.full(x.shape[1], -np.inf)
    lower[:n_scale] = 0.0
    result = lsq_linear(w / scale, np.ones_like(y), bounds=(lower, np.inf), lsmr_tol="auto", method="bvls")
    coef: np.ndarray = result.x / scale
    return coef


def _loo_rmspe(x: np.ndarray, y: np.ndarray, n_scale: int) -> float:
    errors = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        coef = _solve(x[keep], y[keep], n_scale)
        errors.append((x[i] @ coef - y[i]) / y[i])
    return float(np.sqrt(np.mean(np.square(errors))))


def fit_calibration(
    table: LatencyTable,
    archs: Sequence[Architecture],
    measured_ms: Sequence[float],
    device: dict[str, Any],
    model: str = "auto",
    space: SearchSpace | None = None,
) -> Calibration:
    """Fit a calibration on whole networks ``archs`` measured end to end (``measured_ms``).

    ``model``: one of :data:`MODELS`, or ``auto`` (the lowest leave-one-out RMSPE). With ``space``
    and ``auto``, a model whose prediction for the cheapest network of the space (exact, over the
    calibrated kernel costs) is not positive is passed over for the next best: the measured networks
    rarely reach the ends of a wide space, and per-kernel constants fitted in the middle can
    extrapolate below zero there (``cifar-wide`` on ONNX Runtime: the ``full`` model put its cheapest
    network at -0.009 ms; measured 0.042 ms). The models passed over are in ``stats``.
    """
    y = np.asarray(measured_ms, dtype=np.float64)
    if len(archs) != len(y):
        raise ValueError("one measurement per architecture")
    if len(archs) < MIN_FIT:
        raise LutError(
            f"a calibration needs at least {MIN_FIT} measured architectures, got {len(archs)}; raise --samples"
        )
    if np.any(y <= 0):
        raise ValueError("measured latencies must be positive")
    candidates = MODELS if model == "auto" else (model,)
    fits = {}
    for name in candidates:
        if name == RAW:
            x = design_matrix(table, archs, "linear")[:, :1]  # the LUT sum; no coefficient is fitted
            fits[name] = (x, float(np.sqrt(np.mean(np.square((x[:, 0] - y) / y)))))
        else:
            x = design_matrix(table, archs, name)
            fits[name] = (x, _loo_rmspe(x, y, _n_scale(name)))
    passed_over: dict[str, float] = {}
    for best in sorted(fits, key=lambda name: fits[name][1]):
        x, loo = fits[best]
        if best == RAW:
            n_scale, one_scale, one_count = 1, True, True
            coef = np.array([1.0, 0.0, 0.0])
            pred = x[:, 0]
        else:
            n_scale = _n_scale(best)
            one_scale, one_count = MODEL_SHAPES[best]
            coef = _solve(x, y, n_scale)
            pred = x @ coef
        if space is None or model != "auto" or best == RAW:
            break
        trial = Calibration(
            best, _per_op(coef[:n_scale], one_scale), _per_op(coef[n_scale:-1], one_count), float(coef[-1])
        )
        lowest = cheapest_prediction(table, space, trial)
        if lowest > 0:
            break
        passed_over[best] = lowest
    rel = (pred - y) / y
    stats = {
        "n": float(len(y)),
        "rmse_ms": float(np.sqrt(np.mean(np.square(pred - y)))),
        "rmspe": float(np.sqrt(np.mean(np.square(rel)))),
        "within_10": float(np.mean(np.abs(rel) <= 0.10)),
        "loo_rmspe": loo,
        **{f"loo_rmspe_{name}": v[1] for name, v in fits.items()},
        **{f"passed_over_{name}_cheapest_ms": v for name, v in passed_over.items()},
    }
    return Calibration(
        model=best,
        scale=_per_op(coef[:n_scale], one_scale),
        per_kernel_ms=_per_op(coef[n_scale:-1], one_count),
        offset_ms=float(coef[-1]),
        stats=stats,
        fit_archs=tuple(a.to_str() for a in archs),
        device=identity(device),
        fitted_at=time.time(),
    )
