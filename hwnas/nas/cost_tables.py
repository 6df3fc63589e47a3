"""Cost tables of a search space for :class:`hwnas.latency.expected.ExpectedCost`.

For every layer, resolution, in-channel choice and option, the sum of the per-kernel costs of
the block (``kernel_cost`` is e.g. a LUT's lookup, or ``lambda k: k.flops``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from hwnas.latency.expected import ExpectedCost, LayerCostTable
from hwnas.latency.kernels import Kernel
from hwnas.nas.arch import Architecture
from hwnas.nas.kernels import arch_kernels, block_kernels, classifier_kernels, kernel_sum
from hwnas.nas.ops import parse_op
from hwnas.nas.space import Option, SearchSpace

KernelCost = Callable[[Kernel], float]


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
                    table[r, i, j] = cost(block_kernels(parse_op(o.op), cin, o.c, layer.stride, o.e, h, h))
        out_index = torch.tensor([layer.channels.index(o.c) for o in layer.options], dtype=torch.long)
        layers.append(LayerCostTable(table.to(dtype), out_index, len(layer.channels)))
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
