"""The differentiable cost: the exact expected cost of a network under independent choices.

Each layer ``l`` picks one option ``j`` (op, expansion, out channels) with probability
``P_l[j]``; the whole network picks a resolution ``r`` with probability ``p[r]``. A layer's cost
depends on its option, its in-channels (the previous layer's out-channels) and the resolution:
``T_l[r, i, j]``. With independent choices the expectation of the sum is exact and cheap
("effective shape propagation", FBNetV2 eqs. 4-10, without interpolation)::

    q_0 = one-hot(input channels)
    q_l[c] = sum_{j : out(j) = c} P_l[j]                      (out-channel distribution of layer l)
    E[cost] = sum_r p[r] * ( sum_l q_{l-1}^T T_l[r] P_l  +  q_L^T H[r] )

where ``H[r, i]`` is the classifier's cost on ``i`` channels. Everything is a torch op, so the
gradient with respect to every probability comes for free. Costs come from any per-kernel cost:
LUT latency, FLOPs or params. The tables are built by :mod:`hwnas.nas.cost_tables`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LayerCostTable:
    """``table[r, i, j]``: cost of option ``j`` with in-channel index ``i`` at resolution ``r``;
    ``out_index[j]``: which of the layer's ``n_out`` out-channel choices option ``j`` produces."""

    table: torch.Tensor
    out_index: torch.Tensor
    n_out: int


class ExpectedCost(nn.Module):
    """``forward(res_probs, option_probs) -> E[cost]`` (a scalar tensor with gradients)."""

    def __init__(self, layers: Sequence[LayerCostTable], head: torch.Tensor) -> None:
        super().__init__()
        if not layers:
            raise ValueError("an expected cost needs at least one layer")
        self.n_out = [layer.n_out for layer in layers]
        for i, layer in enumerate(layers):
            n_in = 1 if i == 0 else layers[i - 1].n_out
            if layer.table.shape[1] != n_in or layer.table.shape[2] != layer.out_index.numel():
                raise ValueError(f"layer {i}: table shape {tuple(layer.table.shape)} does not fit {n_in} inputs")
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
        for (table, out_index), p, n_out in zip(tables, option_probs, self.n_out, strict=True):
            p = p.to(table.dtype)
            total = total + torch.einsum("i,rij,j->r", q, table, p)
            q = torch.zeros(n_out, dtype=p.dtype, device=p.device).index_add(0, out_index, p)
        head = self.get_buffer("head")
        return total + head.to(q.dtype) @ q

    def forward(self, res_probs: torch.Tensor, option_probs: Sequence[torch.Tensor]) -> torch.Tensor:
        per_res = self.per_resolution(option_probs)
        return (res_probs.to(per_res.dtype) * per_res).sum()
