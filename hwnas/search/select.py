"""Selecting one architecture from the searched distribution, exactly inside a budget band.

Scores. A layer's option is a product of factors (op, out channels, and expansion for ops that
have one), so under the uniform prior a ``skip`` option carries ``n_e`` times the mass of each
inverted-residual option, and a joint argmax prefers skips for no reason the search gave. Each
option is therefore scored by how much the search moved it away from that prior::

    score(option) = log P(option) - log P0(option)        (P0: every factor uniform)

and the resolution likewise. A tied layer (a later layer of a ``tied_channels`` stage) has no
channel factor: its probabilities and its prior are those of op and expansion alone, so the
stage's width is scored once, at its first layer. At uniform alphas every score is 0: selection
then says nothing, and what it picks is the *null derivation*, the network the selection alone
produces.

Selection. :func:`best_in_band` maximises the summed score over whole architectures subject to
``lo <= cost(arch) <= hi`` with an exact dynamic program: per resolution, layer by layer, the
state is the previous layer's out-channel choice and the cost spent so far (each layer's costs shifted by their minimum, so that negative calibration
terms count correctly), in ``buckets`` steps rounded up (so a state's cost never under-counts, and
every architecture the program accepts is within ``hi``); the best end states are rebuilt and checked against the exact
cost (:meth:`SearchCost.of`) until one lands in the band. Ties go to the costlier architecture.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hwnas.search.cost import SearchCost
from hwnas.spaces.arch import Architecture, Block
from hwnas.spaces.ops import parse_op
from hwnas.spaces.space import Layer, Option, SearchSpace

BUCKETS = 2000
MAX_REBUILDS = 500


@dataclass
class Scores:
    """Log-ratio scores: ``res[r]`` per resolution, ``options[l][j]`` per layer and option."""

    res: list[float]
    options: list[list[float]]

    def of(self, space: SearchSpace, arch: Architecture) -> float:
        """The total score of ``arch`` (an architecture of ``space``)."""
        total = self.res[space.resolutions.index(arch.resolution)]
        for layer, block, scores in zip(space.layers, arch.blocks, self.options, strict=True):
            total += scores[_option_index(layer, block)]
        return total


def _option_index(layer: Layer, b: Block) -> int:
    return layer.options.index(Option(b.op, b.c, b.e))


def prior(layer: Layer) -> list[float]:
    """P0 of each option of ``layer`` when every factor is uniform."""
    n_ops, n_c, n_e = len(layer.ops), 1 if layer.tied else len(layer.channels), len(layer.expansions)
    return [1.0 / (n_ops * n_c * (n_e if parse_op(o.op).uses_expansion else 1)) for o in layer.options]


def log_ratio_scores(space: SearchSpace, res_probs: torch.Tensor, option_probs: Sequence[torch.Tensor]) -> Scores:
    """:class:`Scores` of the searched probabilities against the uniform prior."""
    n_res = len(space.resolutions)
    res = [math.log(max(float(p), 1e-30) * n_res) for p in res_probs]
    options = []
    for layer, probs in zip(space.layers, option_probs, strict=True):
        options.append([math.log(max(float(p), 1e-30) / p0) for p, p0 in zip(probs, prior(layer), strict=True)])
    return Scores(res, options)


def uniform_scores(space: SearchSpace) -> Scores:
    """All-zero scores: what selection sees when the search has learned nothing."""
    return Scores([0.0] * len(space.resolutions), [[0.0] * len(layer.options) for layer in space.layers])


def best_in_band(
    space: SearchSpace,
    cost: SearchCost,
    scores: Scores,
    lo: float,
    hi: float,
    buckets: int = BUCKETS,
    name: str = "",
) -> Architecture | None:
    """The highest-scoring architecture with ``lo <= cost <= hi``, or None when none is found."""
    found = top_in_band(space, cost, scores, lo, hi, 1, buckets, name)
    return found[0] if found else None


def best_per_resolution(
    space: SearchSpace, cost: SearchCost, scores: Scores, lo: float, hi: float, name: str = ""
) -> dict[int, Architecture]:
    """The highest-scoring architecture in the band at each resolution that has one."""
    out: dict[int, Architecture] = {}
    for r in space.resolutions:
        only_r = Scores([v if rr == r else -math.inf for rr, v in zip(space.resolutions, scores.res, strict=True)],
                        scores.options)  # fmt: skip
        best = best_in_band(space, cost, only_r, lo, hi, name=name)
        if best is not None:
            out[r] = best
    return out


def top_in_band(
    space: SearchSpace,
    cost: SearchCost,
    scores: Scores,
    lo: float,
    hi: float,
    k: int,
    buckets: int = BUCKETS,
    name: str = "",
) -> list[Architecture]:
    """Up to ``k`` distinct architectures in the band, best-scoring first: the best end state of
    every (resolution, last channels, cost bucket) of the program, in score order."""
    expected = cost.expected(space, dtype=torch.float64)
    tables = [(t.cpu().numpy(), idx.cpu().numpy()) for t, idx in expected.tables()]
    head = expected.get_buffer("head").cpu().numpy()  # [R, n_out of the last layer], offset included
    # A calibrated LUT may hold negative terms (a per-kernel or per-network constant): shift every
    # layer's costs by its minimum so the program counts from 0, and the band by the total shift.
    shifts = [float(t.min()) for t, _ in tables]
    tables = [(t - m, idx) for (t, idx), m in zip(tables, shifts, strict=True)]
    head_shift = float(head.min())
    head = head - head_shift
    total_shift = sum(shifts) + head_shift
    if hi - total_shift <= 0:
        return []
    step = (hi - total_shift) / buckets
    ends: list[tuple[float, int, int, int, int]] = []  # (score, bucket, r, out index, head bucket)
    backs: dict[int, list[np.ndarray]] = {}
    for r in range(len(space.resolutions)):
        dp = np.full((1, buckets + 1), -np.inf)
        dp[0, 0] = scores.res[r]
        back_r = []
        for (table, out_index), layer, layer_scores in zip(tables, space.layers, scores.options, strict=True):
            n_out = len(layer.channels)
            new = np.full((n_out, buckets + 1), -np.inf)
            arg = np.full((n_out, buckets + 1), -1, dtype=np.int64)  # ci * n_options + j
            n_opt = table.shape[2]
            for ci in range(table.shape[1]):
                row = dp[ci]
                if not np.isfinite(row).any():
                    continue
                for j in range(n_opt):
                    if layer.tied and int(out_index[j]) != ci:  # a tied layer keeps its input's width
                        continue
                    b = _bucket(table[r, ci, j], step)
                    if b > buckets:
                        continue
                    cand = row[: buckets + 1 - b] + layer_scores[j]
                    co = int(out_index[j])
                    target = new[co, b:]
                    better = cand > target
                    target[better] = cand[better]
                    arg[co, b:][better] = ci * n_opt + j
            back_r.append(arg)
            dp = new
        backs[r] = back_r
        for co in range(dp.shape[0]):
            hb = _bucket(head[r, co], step)
            if hb > buckets:
                continue
            for kk in np.flatnonzero(np.isfinite(dp[co, : buckets + 1 - hb])):
                ends.append((float(dp[co, kk]), int(kk) + hb, r, co, int(kk)))
    ends.sort(key=lambda e: (-e[0], -e[1]))
    found: list[Architecture] = []
    for _score, _total, r, co, end_k in ends[:MAX_REBUILDS]:
        choice = _rebuild(tables, backs[r], r, co, end_k, step)
        options = [layer.options[j] for layer, j in zip(space.layers, choice, strict=True)]
        arch = space.architecture(space.resolutions[r], options, name=name)
        if lo <= cost.of(arch) <= hi * (1 + 1e-9) and arch not in found:
            found.append(arch)
            if len(found) == k:
                break
    return found


def _bucket(value: float, step: float) -> int:
    return max(0, math.ceil(float(value) / step - 1e-9))


def _rebuild(tables: list[tuple[np.ndarray, np.ndarray]], back: list[np.ndarray], r: int, co: int, k: int,
             step: float) -> list[int]:  # fmt: skip
    """The option index of every layer on the back-pointer path ending in state ``(co, k)``."""
    choice: list[int] = []
    for (table, _), arg in zip(reversed(tables), reversed(back), strict=True):
        code = int(arg[co, k])
        n_opt = table.shape[2]
        ci, j = divmod(code, n_opt)
        choice.append(j)
        k -= _bucket(table[r, ci, j], step)
        co = ci
    return choice[::-1]
