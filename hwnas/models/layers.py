"""Basic PyTorch layers shared by the child networks (``hwnas.spaces``) and the one-kernel models
that the profiler times (``hwnas.latency``), so both run exactly the same modules."""

from __future__ import annotations

import torch
from torch import nn


def activation(act: str | None) -> nn.Module:
    """ReLU, hard-swish, or nothing (``None`` / ``"none"``)."""
    if act is None or act == "none":
        return nn.Identity()
    if act == "hswish":
        return nn.Hardswish()
    if act == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {act!r}")


class ConvBNAct(nn.Sequential):
    """conv (no bias, 'same' padding) -> BatchNorm -> activation (``act=None``: none)."""

    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1, groups: int = 1, act: str | None = "relu") -> None:
        super().__init__(
            nn.Conv2d(cin, cout, k, s, padding=k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            activation(act),
        )


class SqueezeExcite(nn.Module):
    """``x * gate(expand(act(reduce(avgpool(x)))))`` with a ``mid``-channel bottleneck (1x1 convs with bias)."""

    def __init__(self, channels: int, mid: int, act: str, gate: str) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, mid, 1)
        self.act = activation(act)
        self.expand = nn.Conv2d(mid, channels, 1)
        if gate not in ("sigmoid", "hsigmoid"):
            raise ValueError(f"unknown SE gate {gate!r}")
        self.gate = nn.Hardsigmoid() if gate == "hsigmoid" else nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


def init_weights(module: nn.Module) -> None:
    """Mobile-network initialization (as mobile-vision and timm do): He-normal convs (fan-out), zero
    biases, BatchNorm at identity, small normal linear weights. PyTorch's defaults shrink the signal
    layer after layer in deep inverted-residual stacks."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):  # fan-out per group: torch's own fan ignores groups (depthwise)
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
