"""Architecture -> ``nn.Module``."""

from __future__ import annotations

import torch
from torch import nn

from hwnas.models.blocks import Classifier, make_block
from hwnas.models.layers import init_weights
from hwnas.spaces.arch import Architecture


class ChildNet(nn.Module):
    """A plain network built from an :class:`Architecture`: ``blocks`` then ``classifier``."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.arch = arch
        self.blocks = nn.Sequential(
            *(make_block(s.block.optype, s.cin, s.cout, s.block.s, s.block.e) for s in arch.shapes())
        )
        self.classifier = Classifier(arch.out_channels, arch.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.blocks(x))


def build_model(arch: Architecture) -> ChildNet:
    """Build the network ``arch`` describes, freshly initialized (:func:`hwnas.models.layers.init_weights`)."""
    model = ChildNet(arch)
    init_weights(model)
    return model
