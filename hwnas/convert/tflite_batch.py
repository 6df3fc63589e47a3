"""Batched TFLite conversion: many one-kernel models from one litert-torch conversion.

Converting a kernel with ``litert_torch.convert`` costs about a second, most of it fixed cost
(``torch.export``, the FX passes, the MLIR lowering), whatever the size of the model. Profiling
a latency table needs about a thousand one-kernel models, so :func:`convert_batch` converts many
kernels at once: it wraps them in one module with one input and one output per kernel, each
branch independent of the others, converts that module once, and cuts the resulting flatbuffer
into one standalone ``.tflite`` per kernel (:mod:`hwnas.convert.tflite_surgery`).

The cut (:mod:`hwnas.convert.tflite_surgery`, torch-free) is graph surgery on the TFLite object API
(``ai_edge_litert.schema_py_generated``): a
branch is every operator its output depends on, found by walking back from the output tensor,
with the tensors, buffers and operator codes those operators use, renumbered. Batching does not
change what the runtime executes: the operators of a split model are the ones a conversion of
the same module alone produces (``tests/test_tflite_batch.py`` checks this).

Anchors
-------
A one-kernel model must hold exactly the operators that the runtime executes for the kernel
inside a converted network. litert-torch's layout pass (``optimize_layout_transposes_pass``, a
min cut between channel-first and channel-last nodes) picks each node's layout from its
neighbours. In a network, a kernel sits between convolutions, which must be channel-last, so it
runs channel-last too. Converted alone with channel-last IO, its neighbours are the IO permutes,
which count as channel-first: a kernel that starts with a convolution is still converted
channel-last (``CONV_2D`` / ``DEPTHWISE_CONV_2D``, + ``PAD``, + activation), but others get
layout ops around them. Squeeze-excite (hswish, hsigmoid) becomes ``TRANSPOSE, MEAN, RESHAPE,
CONV_2D, HARD_SWISH, CONV_2D, MUL, RESHAPE, MUL, TRANSPOSE`` where a network runs ``MEAN, CONV_2D,
HARD_SWISH, CONV_2D, MUL, MUL``; a global average pool ``TRANSPOSE, MEAN, RESHAPE`` where the
``ir_pool`` head runs ``MEAN``.

So with ``channel_last=True``, :func:`convert_batch` converts such a module between anchors that
stand for a network's neighbouring convolutions: a 1x1 stride-1 average pool on its 4-D input,
and one on its 4-D output. They are identities, and the layout pass must make them channel-last
(as a convolution). The split cuts them off again: the model's input is the input anchor's
output tensor (renamed as the branch input), its output is the output anchor's input tensor, and
its operators are those strictly between. Each anchor is checked (the only reader of the branch
input, or the maker of the branch output; a 1x1 stride-1 ``AVERAGE_POOL_2D`` with the same shape
in and out); anything else is a ``ValueError``. SE and global-pool models then hold the in-network
operators, with no ``TRANSPOSE`` or ``RESHAPE`` (the tests derive the expected sequences from a
converted network). Why an average pool: a 1x1 depthwise conv also pins the layout, but the
converter folds a following per-channel multiply or add into it, and a leading activation; a
1x1 max pool leaves ``RESHAPE`` ops around a global pool. Into an average pool the converter fuses
only a following activation: a module that starts with one is converted again without anchors.

Which modules are anchored: those with a 4-D input or output, except

* conv stacks (a ``Conv2d``, then only convs, BatchNorm, ReLU, ReLU6 and hard-swish, in plain
  ``nn.Sequential`` containers; conv and dwconv kernels): their convolutions pin the layout
  already and anchors change nothing in their models (tested). Anchors are not free: each costs
  about 0.05 s of conversion (``torch.export`` and FX work per graph node), and conv stacks are
  most kernels. On 50 mixed kernels (conv 23, dwconv 18, se 5, add 3, gap 1) anchoring all
  4-D modules cost 0.32 s a kernel, anchoring all but conv stacks 0.21 to 0.23 s (BN folded in
  both; 0.25 to 0.26 s before anchors and folding).
* identities (output equal to the input for the sample: a global pool of a 1x1 map), which
  would leave nothing between the anchors. They are converted without anchors, like anything
  else that leaves nothing between its anchors (found after the conversion, then converted once
  more). A global pool of a 1x1 map becomes ``RESHAPE, SUM, RESHAPE``; in a network it is a
  ``SUM`` (before the classifier's flatten) or nothing.

Modules with 2-D input and output (linear) have no layout to pin and are never anchored.

What litert-torch 0.10 does, as found when this module was written:

* Subgraph inputs and outputs follow the wrapper's argument and return order; tensors are
  named ``serving_default_args_{i}`` and ``serving_default_output_{i}_output``. The signature
  def names them ``args_{i}`` and ``output_{i}`` but lists them sorted as *strings*
  (``args_0, args_1, args_10, ...``), so its list order is not the branch order. Branch ``i``
  is the subgraph's ``i``-th input and output, cross-checked three ways: the numbers in the
  signature names must give the same order, output ``i`` must depend on input ``i`` and on no
  other input (data flow), and in :func:`convert_batch` the shapes must be the module's.
  Any disagreement is a ``ValueError``, never a guess.
* Constants are stored inline in the flatbuffer. Models over 2 GB store them after the
  flatbuffer instead (``Buffer.offset``/``size``, offsets from the start of the file); those
  are read back and stored inline in the split models. Weights in a separate file
  (``Model.external_buffers``) are refused with a ``ValueError``.
* Identical constants may be shared by several branches; each split model gets its own copy.
* The layout pass uses its min-cut partitioner up to about a thousand graph nodes and a greedy
  one beyond (large batches); anchored SE, pool and add kernels convert the same with both.
* Conv-BatchNorm pairs are folded by the converter anyway; :func:`convert_batch` folds them
  before the conversion (on a copy of the module), which saves ``torch.export`` and FX work
  (0.05 to 0.07 s a kernel) and changes the results only by rounding.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from hwnas.convert.tflite_surgery import split_branches
from hwnas.core.extras import require
from hwnas.core.quiet import litert_progress_off

__all__ = ["convert_batch"]


def _litert_torch() -> Any:
    require("tflite", "TFLite kernel models (tflite-cpu)")
    import litert_torch

    return litert_torch


# ---------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------


class _Branches(nn.Module):
    """``forward(x_0, ..., x_{n-1}) -> (branch_0(x_0), ..., branch_{n-1}(x_{n-1}))``."""

    def __init__(self, branches: Sequence[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(branch(x) for branch, x in zip(self.branches, xs, strict=True))


def _nhwc(shape: Sequence[int]) -> tuple[int, ...]:
    return (shape[0], *shape[2:], shape[1])


class _Anchored(nn.Module):
    """``module`` between identity anchors: 1x1 stride-1 average pools on its input and/or output."""

    def __init__(self, module: nn.Module, anchor_in: bool, anchor_out: bool) -> None:
        super().__init__()
        self.module = module
        self.anchor_in, self.anchor_out = anchor_in, anchor_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.anchor_in:
            x = F.avg_pool2d(x, 1)
        y = self.module(x)
        if self.anchor_out:
            y = F.avg_pool2d(y, 1)
        return y


def _fold_batch_norms(module: nn.Module) -> nn.Module:
    """``module`` with each eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` in a
    sequential container folded into the conv's weights and bias (the BN becomes ``nn.Identity``).

    The converter folds these anyway; folding them first keeps them out of ``torch.export`` and the
    FX passes, which cost time per graph node. Only exact ``nn.Conv2d``/``nn.BatchNorm2d`` pairs in
    containers that run ``nn.Sequential.forward`` are folded. Returns a copy when anything is
    folded (the caller's module is never changed), else ``module`` itself.
    """
    pairs = []
    for name, m in module.named_modules():
        if not isinstance(m, nn.Sequential) or type(m).forward is not nn.Sequential.forward:
            continue
        keys = list(m._modules)
        for a, b in itertools.pairwise(keys):
            conv, bn = m._modules[a], m._modules[b]
            if (
                type(conv) is nn.Conv2d
                and type(bn) is nn.BatchNorm2d
                and bn.track_running_stats
                and bn.running_mean is not None
                and bn.running_var is not None
                and bn.num_features == conv.out_channels
            ):
                pairs.append((name, a, b))
    if not pairs:
        return module
    folded = copy.deepcopy(module)
    for name, a, b in pairs:
        seq = folded.get_submodule(name)
        fold_conv, fold_bn = seq.get_submodule(a), seq.get_submodule(b)
        assert isinstance(fold_conv, nn.Conv2d) and isinstance(fold_bn, nn.BatchNorm2d)
        seq._modules[a] = fuse_conv_bn_eval(fold_conv, fold_bn)
        seq._modules[b] = nn.Identity()
    return folded


# The layers of a conv stack: convs, and after the first one BN (folded) and the activations that
# the tests check to convert the same with and without anchors.
_CONV_STACK_LAYERS = (nn.Conv2d, nn.BatchNorm2d, nn.Identity, nn.ReLU, nn.ReLU6, nn.Hardswish)


def _is_conv_stack(module: nn.Module) -> bool:
    """Whether ``module`` is a sequential stack that starts with a ``Conv2d`` and has only convs and
    elementwise layers after it (conv-BN-activation): converted channel-last, it needs no anchors
    (a convolution pins the layout at both ends; ``tests/test_tflite_batch.py`` checks that anchors
    change nothing for these)."""
    leaves: list[nn.Module] = []

    def walk(m: nn.Module) -> bool:
        if isinstance(m, nn.Sequential):
            return type(m).forward is nn.Sequential.forward and all(walk(c) for c in m)
        leaves.append(m)
        return type(m) in _CONV_STACK_LAYERS

    return walk(module) and bool(leaves) and type(leaves[0]) is nn.Conv2d


def _is_identity(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether a module gave its input back (for the sample input ``x``)."""
    return x.shape == y.shape and torch.equal(x, y)


class _Item(NamedTuple):
    module: nn.Module
    sample: torch.Tensor  # NCHW (as the module takes it)
    in_shape: tuple[int, ...]  # as converted: NHWC where channel-last
    out_shape: tuple[int, ...]
    cl_in: bool
    cl_out: bool
    anchored: bool  # convert between anchors (on the channel-last sides)


def convert_batch(items: Sequence[tuple[nn.Module, tuple[int, ...]]], channel_last: bool = True) -> list[bytes]:
    """Convert several modules in one litert-torch conversion; return one standalone .tflite per module.

    Each item is (module in eval mode, NCHW input shape incl. batch). With ``channel_last=True``,
    4-D inputs and outputs are NHWC (each branch is wrapped with ``litert_torch.to_channel_last_io``),
    and modules that are not conv stacks are converted between anchors that are cut off again, so
    that each model holds the operators a channel-last network runs for the module, with no
    boundary TRANSPOSE or RESHAPE (see the module docstring); the module input shape given is still
    NCHW. Inputs and outputs of other ranks keep their layout. Conv-BatchNorm pairs are folded
    before the conversion (on a copy; the caller's module is not changed).

    The cost is one litert-torch conversion for all items, plus one more only if some anchors
    cannot be cut off (see the module docstring): on a 2-core x86 host, about 0.2 s a kernel in a
    batch of 50 (0.18 to 0.23 s, best of two runs), against about 1 s per kernel converted alone.
    Most of it is ``torch.export`` and FX work per graph node.

    Parameters
    ----------
    items
        ``(module, input_shape)`` pairs. Each module takes one tensor and returns one tensor,
        and is in eval mode (a module in training mode would be converted with batch statistics).
    channel_last
        Give 4-D inputs and outputs in NHWC order, and convert 4-D modules between anchors.

    Returns
    -------
    list[bytes]
        One ``.tflite`` flatbuffer per item, in the order of ``items``, each with one input and
        one output.

    Raises
    ------
    ValueError
        If ``items`` is empty, a module is in training mode, or the converted model cannot be
        mapped back to the items (see :func:`split_tflite`), or the anchors cannot be found in it.
    TypeError
        If a module does not return a single tensor.
    """
    if not items:
        raise ValueError("convert_batch needs at least one (module, input_shape) item")
    generator = torch.Generator().manual_seed(0)  # sample inputs, without touching the global RNG
    prepared: list[_Item] = []
    for i, (module, shape) in enumerate(items):
        shape = tuple(int(d) for d in shape)
        if any(m.training for m in module.modules()):
            raise ValueError(f"item {i}: {type(module).__name__} is in training mode; call .eval() before converting")
        module = _fold_batch_norms(module)
        x = torch.randn(shape, generator=generator)
        with torch.no_grad():
            y = module(x)
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"item {i}: {type(module).__name__} returned {type(y).__name__}, expected one tensor")
        out_shape = tuple(y.shape)
        cl_in, cl_out = channel_last and len(shape) == 4, channel_last and len(out_shape) == 4
        # An identity (a global pool of a 1x1 map) would vanish between anchors: convert it without them.
        identity = _is_identity(x, y)
        anchored = not identity and not _is_conv_stack(module)
        in_shape, out_shape = _nhwc(shape) if cl_in else shape, _nhwc(out_shape) if cl_out else out_shape
        prepared.append(_Item(module, x, in_shape, out_shape, cl_in, cl_out, anchored))
    models = _convert(prepared)
    uncut = [i for i, m in enumerate(models) if m is None]
    if uncut:  # anchors that cannot be cut off cleanly: convert those modules again, without anchors
        again = _convert([prepared[i]._replace(anchored=False) for i in uncut])
        for i, m in zip(uncut, again, strict=True):
            models[i] = m
    return [m for m in models if m is not None]


def _convert(items: Sequence[_Item]) -> list[bytes | None]:
    """One litert-torch conversion of all ``items``, split; ``None`` for an anchored item whose
    anchors cannot be cut off cleanly (see :func:`_split`)."""
    litert_torch = _litert_torch()
    branches: list[nn.Module] = []
    anchors: list[tuple[bool, bool]] = []
    for item in items:
        a_in, a_out = (item.cl_in, item.cl_out) if item.anchored else (False, False)
        branch = _Anchored(item.module, a_in, a_out) if a_in or a_out else item.module
        if item.cl_in or item.cl_out:
            branch = litert_torch.to_channel_last_io(
                branch, args=[0] if item.cl_in else [], outputs=[0] if item.cl_out else []
            )
        branch.training = False  # only the wrappers themselves: the caller's module is already in eval mode
        branches.append(branch)
        anchors.append((a_in, a_out))
    samples = tuple(item.sample.permute(0, 2, 3, 1).contiguous() if item.cl_in else item.sample for item in items)
    wrapper = _Branches(branches)
    wrapper.training = wrapper.branches.training = False
    with litert_progress_off():
        converted = litert_torch.convert(wrapper, samples)
        flatbuffer = bytes(converted.model_content())
    return split_branches(flatbuffer, len(items), [(item.in_shape, item.out_shape) for item in items], anchors)
