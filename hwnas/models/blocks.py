"""PyTorch modules for the block vocabulary of :mod:`hwnas.spaces.ops`.

Built from :mod:`hwnas.models.layers`. The structure follows mobile-vision's FBNetV2 blocks (written from
their description, not copied):
conv layers have no bias and are followed by BatchNorm; SE is avgpool -> 1x1 conv (bias) -> the
block's activation -> 1x1 conv (bias) -> gate, multiplied into the depthwise output; the
``ir_pool`` head's last 1x1 conv has no BatchNorm but keeps its activation.
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.models.layers import ConvBNAct, SqueezeExcite, activation
from hwnas.spaces.ops import Act, OpType, mid_channels, se_channels


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when mid == in) -> kxk depthwise -> [SE] -> 1x1 project [+ x]."""

    def __init__(self, cin: int, cout: int, op: OpType, stride: int, expansion: float) -> None:
        super().__init__()
        mid = mid_channels(cin, expansion)
        self.pw = ConvBNAct(cin, mid, 1, act=op.act) if mid != cin else nn.Identity()
        self.dw = ConvBNAct(mid, mid, op.k, stride, groups=mid, act=op.act)
        self.se = SqueezeExcite(mid, se_channels(mid), op.act, op.gate) if op.gate else nn.Identity()
        self.pwl = ConvBNAct(mid, cout, 1, act=None)
        self.residual = cin == cout and stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pwl(self.se(self.dw(self.pw(x))))
        return y + x if self.residual else y


class Skip(nn.Module):
    """Identity, or a 1x1 conv-bn-relu when the channels or the stride change."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv = ConvBNAct(cin, cout, 1, stride, act="relu") if (cin != cout or stride != 1) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class IRPool(nn.Sequential):
    """FBNet head block: 1x1 expand-bn-act -> global avgpool -> 1x1 conv (no BN, no bias) -> act."""

    def __init__(self, cin: int, cout: int, act: Act, expansion: float) -> None:
        mid = mid_channels(cin, expansion)
        super().__init__(
            ConvBNAct(cin, mid, 1, act=act) if mid != cin else nn.Identity(),
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(mid, cout, 1, bias=False),
            activation(act),
        )


class Classifier(nn.Sequential):
    """Global average pool -> flatten -> linear (with bias) to the classes."""

    def __init__(self, cin: int, num_classes: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(cin, num_classes))


def make_block(op: OpType, cin: int, cout: int, stride: int, expansion: float) -> nn.Module:
    """The module for one block."""
    if op.kind == "conv":
        return ConvBNAct(cin, cout, op.k, stride, act=op.act)
    if op.kind == "ir":
        return InvertedResidual(cin, cout, op, stride, expansion)
    if op.kind == "skip":
        return Skip(cin, cout, stride)
    return IRPool(cin, cout, op.act, expansion)
