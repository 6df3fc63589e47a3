"""FLOPs and params of a built network, per block, with fvcore.

The convention is the one mobile-vision's published FBNetV2 figures use (checked exactly against
FBNetV2-F1/F2/F3): a multiply-add is one FLOP; convs and linears count their multiply-adds and
each adaptive average pool one FLOP per input element; BatchNorm (folded into the conv at
inference), activations, the SE multiply and residual adds count nothing. ``params`` counts conv
and linear weights only; ``params_all`` is every trainable parameter (biases and BN included).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from fvcore.nn.jit_analysis import JitModelAnalysis
from fvcore.nn.jit_handles import addmm_flop_jit, conv_flop_jit, elementwise_flop_counter, linear_flop_jit
from torch import nn

from hwnas.models.builder import build_model
from hwnas.spaces.arch import Architecture


@dataclass(frozen=True)
class BlockCount:
    """One row of :func:`count_arch`: a block (or the classifier) and its cost."""

    name: str
    label: str
    out_shape: tuple[int, int, int]
    flops: int
    params: int
    params_all: int


@dataclass(frozen=True)
class ArchCount:
    rows: list[BlockCount]

    @property
    def flops(self) -> int:
        return sum(r.flops for r in self.rows)

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def params_all(self) -> int:
        return sum(r.params_all for r in self.rows)


def weight_params(module: nn.Module) -> int:
    """Conv and linear weights in ``module`` (mobile-vision's params convention)."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


# The convention as fvcore handles: every other op (BatchNorm, activations, mul, add) is ignored.
CONVENTION_HANDLES = {
    "aten::_convolution": conv_flop_jit,
    "aten::linear": linear_flop_jit,
    "aten::addmm": addmm_flop_jit,
    "aten::adaptive_avg_pool2d": elementwise_flop_counter(1, 0),
}


def flop_analysis(model: nn.Module, resolution: int, in_channels: int = 3) -> JitModelAnalysis:
    """An fvcore analysis that counts exactly the ops of the convention above."""
    x = torch.zeros(1, in_channels, resolution, resolution)
    fa = JitModelAnalysis(model.eval(), x).set_op_handle(**CONVENTION_HANDLES)
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    return fa


def count_arch(arch: Architecture) -> ArchCount:
    """Build ``arch`` and count FLOPs (fvcore) and params per block, classifier last."""
    model = build_model(arch)
    fa = flop_analysis(model, arch.resolution, arch.in_channels)
    by_module = fa.by_module()
    rows = []
    for s, module in zip(arch.shapes(), model.blocks, strict=True):
        name = f"blocks.{s.index}"
        rows.append(
            BlockCount(
                name,
                s.block.to_str(),
                (s.cout, s.ho, s.wo),
                int(by_module.get(name, 0)),
                weight_params(module),
                sum(p.numel() for p in module.parameters()),
            )
        )
    rows.append(
        BlockCount(
            "classifier",
            f"classifier_c{arch.num_classes}",
            (arch.num_classes, 1, 1),
            int(by_module.get("classifier", 0)),
            weight_params(model.classifier),
            sum(p.numel() for p in model.classifier.parameters()),
        )
    )
    return ArchCount(rows)
