"""The differentiable cost a search minimizes against its budget, and the cost of one network.

What is costed: LUT latency (ms), FLOPs (M) or parameters (M) (:class:`SearchCost`,
:func:`make_cost`). Each is a per-kernel cost plus a constant (a calibrated LUT's per-network
term), so the same object gives the exact differentiable expectation over the supernet's choices
(:meth:`SearchCost.expected`) and the cost of one architecture (:meth:`SearchCost.of`).

The expectation. Each layer ``l`` picks one option ``j`` (op, expansion, out channels) with
probability ``P_l[j]``; the whole network picks a resolution ``r`` with probability ``p[r]``. A
layer's cost depends on its option, its in-channels (the previous layer's out-channels) and the
resolution: ``T_l[r, i, j]``. With independent choices the expectation of the sum is exact and
cheap ("effective shape propagation", FBNetV2 eqs. 4-10, without interpolation)::

    q_0 = one-hot(input channels)
    q_l[c] = sum_{j : out(j) = c} P_l[j]                      (out-channel distribution of layer l)
    E[cost] = sum_r p[r] * ( sum_l q_{l-1}^T T_l[r] P_l  +  q_L^T H[r] )

where ``H[r, i]`` is the classifier's cost on ``i`` channels. A tied layer (a later layer of a
``tied_channels`` stage) keeps its input's width, so its choice is not independent of the previous
layer's: its ``P_l[j]`` is conditional on the width (``P(op) P(expansion)``, repeated for every
channel choice), its table is zero wherever option ``j``'s out channels differ from in-channel
``i``, and its out-channel distribution is its input's: ``q_l = q_{l-1}``. The expectation stays
exact. Everything is a torch op, so the gradient with respect to every probability comes for
free. The tables ``T_l`` hold, for every layer, resolution, in-channel choice and option, the sum
of the block's per-kernel costs (:func:`expected_cost`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hwnas.core.errors import HwnasError
from hwnas.spaces.arch import Architecture
from hwnas.spaces.kernels import Kernel, arch_kernels, block_kernels, classifier_kernels, kernel_sum
from hwnas.spaces.ops import parse_op
from hwnas.spaces.space import Option, SearchSpace, get_space

KernelCost = Callable[[Kernel], float]


# --- the exact expectation ------------------------------------------------------------------
@dataclass(frozen=True)
class LayerCostTable:
    """``table[r, i, j]``: cost of option ``j`` with in-channel index ``i`` at resolution ``r``;
    ``out_index[j]``: which of the layer's ``n_out`` out-channel choices option ``j`` produces."""

    table: torch.Tensor
    out_index: torch.Tensor
    n_out: int
    tied: bool = False  # out channels = in channels; ``table`` is zero where they differ


class ExpectedCost(nn.Module):
    """``forward(res_probs, option_probs) -> E[cost]`` (a scalar tensor with gradients)."""

    def __init__(self, layers: Sequence[LayerCostTable], head: torch.Tensor) -> None:
        super().__init__()
        if not layers:
            raise ValueError("an expected cost needs at least one layer")
        self.n_out = [layer.n_out for layer in layers]
        self.tied = [layer.tied for layer in layers]
        for i, layer in enumerate(layers):
            n_in = 1 if i == 0 else layers[i - 1].n_out
            if layer.table.shape[1] != n_in or layer.table.shape[2] != layer.out_index.numel():
                raise ValueError(f"layer {i}: table shape {tuple(layer.table.shape)} does not fit {n_in} inputs")
            if layer.tied and n_in != layer.n_out:
                raise ValueError(f"layer {i}: a tied layer needs as many out-channel choices as inputs")
            self.register_buffer(f"table_{i}", layer.table)
            self.register_buffer(f"out_index_{i}", layer.out_index)
        self.register_buffer("head", head)

    def tables(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(self.get_buffer(f"table_{i}"), self.get_buffer(f"out_index_{i}")) for i in range(len(self.n_out))]

    def per_resolution(self, option_probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """E[cost | resolution r] for every r, shape ``[R]``."""
        tables = self.tables()
        if len(option_probs) != len(tables):
            raise ValueError(f"need option probabilities for {len(tables)} layers, got {len(option_probs)}")
        first = tables[0][0]
        q = torch.ones(1, dtype=first.dtype, device=first.device)
        total = torch.zeros(first.shape[0], dtype=first.dtype, device=first.device)
        for (table, out_index), p, n_out, tied in zip(tables, option_probs, self.n_out, self.tied, strict=True):
            p = p.to(table.dtype)
            total = total + torch.einsum("i,rij,j->r", q, table, p)
            if not tied:  # a tied layer's out channels are its input's: q stays
                q = torch.zeros(n_out, dtype=p.dtype, device=p.device).index_add(0, out_index, p)
        head = self.get_buffer("head")
        return total + head.to(q.dtype) @ q

    def forward(self, res_probs: torch.Tensor, option_probs: Sequence[torch.Tensor]) -> torch.Tensor:
        per_res = self.per_resolution(option_probs)
        return (res_probs.to(per_res.dtype) * per_res).sum()


# --- cost tables of a space --------------------------------------------------------------------
def expected_cost(
    space: SearchSpace, kernel_cost: KernelCost, dtype: torch.dtype = torch.float32, offset: float = 0.0
) -> ExpectedCost:
    """The differentiable expected cost of ``space`` under ``kernel_cost``, plus a constant ``offset``
    (a calibrated LUT's per-network constant, :attr:`hwnas.latency.predictor.LatencyPredictor.offset`)."""
    cost = kernel_sum(kernel_cost)

    layers = []
    heights = list(space.resolutions)
    in_channels: tuple[int, ...] = (space.in_channels,)
    for layer in space.layers:
        table = torch.zeros(len(heights), len(in_channels), len(layer.options), dtype=torch.float64)
        for r, h in enumerate(heights):
            for i, cin in enumerate(in_channels):
                for j, o in enumerate(layer.options):
                    if layer.allows(cin, o):
                        table[r, i, j] = cost(block_kernels(parse_op(o.op), cin, o.c, layer.stride, o.e, h, h))
        out_index = torch.tensor([layer.channels.index(o.c) for o in layer.options], dtype=torch.long)
        layers.append(LayerCostTable(table.to(dtype), out_index, len(layer.channels), layer.tied))
        heights = [layer.out_size(h) for h in heights]
        in_channels = layer.channels
    head = torch.tensor(
        [[cost(classifier_kernels(c, h, h, space.num_classes)) + offset for c in in_channels] for h in heights],
        dtype=dtype,
    )
    return ExpectedCost(layers, head)


def one_hot_choices(space: SearchSpace, arch: Architecture) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The probabilities that put all mass on ``arch`` (resolution, then one vector per layer)."""
    if not space.contains(arch):
        raise ValueError(f"{arch} is not an architecture of the space {space.name}")
    res = torch.zeros(len(space.resolutions), dtype=torch.float64)
    res[space.resolutions.index(arch.resolution)] = 1.0
    probs = []
    for layer, b in zip(space.layers, arch.blocks, strict=True):
        p = torch.zeros(len(layer.options), dtype=torch.float64)
        p[layer.options.index(Option(b.op, b.c, b.e))] = 1.0
        probs.append(p)
    return res, probs


def discrete_cost(arch: Architecture, kernel_cost: KernelCost) -> float:
    """The cost of one architecture: the sum of its kernels' costs (the LUT prediction)."""
    return sum(float(kernel_cost(k)) for k in arch_kernels(arch))


# --- the cost a search uses -----------------------------------------------------------------
COSTS = {"latency": "ms", "flops": "MFLOPs", "params": "Mparams"}


@dataclass
class SearchCost:
    name: str
    unit: str
    kernel_cost: Callable[[Kernel], float]
    offset: float = 0.0
    source: str = ""  # the LUT, for latency

    def expected(self, space: SearchSpace, dtype: torch.dtype = torch.float32) -> ExpectedCost:
        return expected_cost(space, self.kernel_cost, dtype=dtype, offset=self.offset)

    def of(self, arch: Architecture) -> float:
        return self.offset + discrete_cost(arch, self.kernel_cost)

    def smallest(self, space: SearchSpace) -> tuple[Architecture, float]:
        arch = space.extreme(self.kernel_cost, largest=False)
        return arch, self.of(arch)

    def largest(self, space: SearchSpace) -> tuple[Architecture, float]:
        arch = space.extreme(self.kernel_cost, largest=True)
        return arch, self.of(arch)

    def fmt(self, value: float) -> str:
        return f"{value:.4g} {self.unit}"


def make_cost(name: str, space: SearchSpace, lut: str | Path | None = None, statistic: str = "fastest") -> SearchCost:
    """The cost ``name`` for ``space``; ``latency`` needs a LUT holding every kernel of the space,
    and predicts each round's ``statistic`` run (the fastest-run prediction times the LUT's factor)."""
    if name not in COSTS:
        raise HwnasError(f"unknown cost {name!r}; choose one of {', '.join(COSTS)}")
    if name == "flops":
        return SearchCost(name, COSTS[name], lambda k: k.flops / 1e6)
    if name == "params":
        return SearchCost(name, COSTS[name], lambda k: k.params / 1e6)
    if lut is None:
        raise HwnasError("--cost latency needs a LUT: --lut FILE (make one with 'hwnas profile')")
    from hwnas.latency.predictor import LatencyPredictor

    predictor = LatencyPredictor.from_lut(lut)
    missing = predictor.table.missing(space.kernels())
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        device = predictor.table.meta.get("device", "DEVICE")
        space_arg = space.source if Path(space.source).is_file() else space.name
        classes = "" if get_space(space_arg).num_classes == space.num_classes else f" --classes {space.num_classes}"
        why = f" (the data has {space.num_classes} classes)" if classes else ""
        raise HwnasError(
            f"{lut} lacks {len(missing)} kernel(s) of the space {space.name}{why} ({shown}); add them with "
            f"'hwnas profile --space {space_arg}{classes} --device {device} --out {lut}'"
        )
    factor = predictor.factor(statistic)
    if factor == 1.0:
        return SearchCost(name, COSTS[name], predictor.kernel_cost, predictor.offset, str(lut))
    return SearchCost(name, COSTS[name], lambda k: predictor.kernel_cost(k) * factor, predictor.offset * factor,
                      str(lut))  # fmt: skip
