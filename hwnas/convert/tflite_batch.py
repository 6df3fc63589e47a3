"""Batched TFLite conversion: many one-kernel models from one litert-torch conversion.

Converting a kernel with ``litert_torch.convert`` costs about a second, most of it fixed cost
(``torch.export``, the FX passes, the MLIR lowering), whatever the size of the model. Profiling
a latency table needs about a thousand one-kernel models, so :func:`convert_batch` converts many
kernels at once: it wraps them in one module with one input and one output per kernel, each
branch independent of the others, converts that module once, and cuts the resulting flatbuffer
into one standalone ``.tflite`` per kernel with :func:`split_tflite`.

The cut is graph surgery on the TFLite object API (``ai_edge_litert.schema_py_generated``): a
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

import contextlib
import copy
import functools
import itertools
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["convert_batch", "operator_types", "split_tflite"]

_FILE_IDENTIFIER = b"TFL3"
# TFLite's own converter aligns constant data to 16 bytes; some kernels and delegates rely on it.
_BUFFER_ALIGNMENT = 16
# A flatbuffer addresses at most 2 GiB; leave room for everything that is not constant data.
_INLINE_LIMIT = 2**31 - 2**24
_PROGRESS_ENV = "LITERT_TORCH_SHOW_PROGRESS"
_ARG_NAME = re.compile(r"args_(\d+)")
_OUT_NAME = re.compile(r"output_(\d+)")


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("TFLite batch conversion needs ai-edge-litert: pip install ai-edge-litert") from e
    return schema_py_generated


def _litert_torch() -> Any:
    try:
        import litert_torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("TFLite batch conversion needs litert-torch: pip install litert-torch") from e
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


@contextlib.contextmanager
def _quiet_litert() -> Iterator[None]:
    """Turn off litert-torch's progress printing (its ``config.show_progress``) for a block."""
    before = os.environ.get(_PROGRESS_ENV)
    os.environ[_PROGRESS_ENV] = "n"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_PROGRESS_ENV, None)
        else:
            os.environ[_PROGRESS_ENV] = before


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
    with _quiet_litert():
        converted = litert_torch.convert(wrapper, samples)
        flatbuffer = bytes(converted.model_content())
    return _split(flatbuffer, len(items), [(item.in_shape, item.out_shape) for item in items], anchors)


# ---------------------------------------------------------------------------------------------
# Splitting
# ---------------------------------------------------------------------------------------------


def split_tflite(model: bytes, n: int) -> list[bytes]:
    """Split a model whose first subgraph holds n independent branches (input i -> output i) into n models.

    Branch ``i`` is the subgraph's ``i``-th input and ``i``-th output. Where the model has a
    signature named as litert-torch names it (``args_{i}``, ``output_{i}``), the numbers in the
    names must give the same order. Each split model has one subgraph with exactly the
    operators that the branch output depends on, the tensors, buffers and operator codes they
    use (renumbered; buffer 0 stays the empty sentinel), the branch input and output, and one
    ``serving_default`` signature (``args_0`` -> ``output_0``). The model version, description
    and metadata are kept, except debug metadata, which describes the whole graph.

    Parameters
    ----------
    model
        A ``.tflite`` flatbuffer.
    n
        The number of branches: the number of inputs and of outputs of the first subgraph.

    Returns
    -------
    list[bytes]
        ``n`` standalone ``.tflite`` flatbuffers, branch ``i`` at index ``i``.

    Raises
    ------
    ValueError
        If ``model`` is not a TFLite flatbuffer, ``n`` does not match its inputs and outputs,
        the signature names disagree with the subgraph order, the branches are not independent (an output depends on another branch's input, or on
        no input), the model has control-flow subgraphs or stateful tensors, or its weights
        live in an external file.
    """
    # Without anchors every branch gives a model (None only comes from anchors).
    return [m for m in _split(model, n, None) if m is not None]


def cut_input_anchor(model: bytes) -> bytes | None:
    """A one-branch model converted with an input anchor (a 1x1 stride-1 average pool on its NHWC
    input, see the module docstring), without it: the anchor's output becomes the model's input.
    ``None`` where it cannot be cut cleanly (as :func:`_split`). Used for int8 kernel models, which
    are quantized and converted one at a time rather than by :func:`convert_batch`."""
    return _split(model, 1, None, [(True, False)])[0]


def operator_types(model: bytes) -> list[str]:
    """Operator types of a ``.tflite`` model's first subgraph, in execution order.

    Builtin operators are named as in the TFLite schema (``CONV_2D``, ``MEAN``, ...); custom
    operators by their custom code.
    """
    schema = _schema()
    mt = _parse(model, schema)
    return [_op_name(schema, mt, op) for op in mt.subgraphs[0].operators or []]


def _op_name(schema: Any, mt: Any, op: Any) -> str:
    code = mt.operatorCodes[op.opcodeIndex]
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    if builtin == schema.BuiltinOperator.CUSTOM:
        return _text(code.customCode)
    return _builtin_names(schema).get(builtin, f"BUILTIN_{builtin}")


@functools.cache
def _builtin_names(schema: Any) -> dict[int, str]:
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _text(name: bytes | str | None) -> str:
    if name is None:
        return ""
    return name.decode() if isinstance(name, bytes) else name


def _parse(model: bytes, schema: Any) -> Any:
    if not isinstance(model, bytes | bytearray | memoryview):
        raise TypeError(f"expected the model as bytes, got {type(model).__name__}")
    buf = bytes(model)
    if len(buf) < 8 or buf[4:8] != _FILE_IDENTIFIER:
        raise ValueError(
            f"not a TFLite model: {len(buf)} bytes without the {_FILE_IDENTIFIER.decode()!r} file identifier"
        )
    try:
        mt = schema.ModelT.InitFromPackedBuf(buf, 0)
    except Exception as e:
        raise ValueError(f"corrupt TFLite model ({len(buf)} bytes): {type(e).__name__}: {e}") from e
    if not mt.subgraphs:
        raise ValueError("TFLite model has no subgraph")
    return mt


def _ints(values: Any) -> list[int]:
    return [] if values is None else [int(v) for v in values]


def _branch_order(mt: Any, n: int) -> tuple[list[int], list[int]]:
    """The input and output tensor of each branch, by branch number."""
    sg = mt.subgraphs[0]
    inputs, outputs = _ints(sg.inputs), _ints(sg.outputs)
    if len(inputs) != n or len(outputs) != n:
        raise ValueError(
            f"asked for {n} branches, but the model's first subgraph has {len(inputs)} inputs and "
            f"{len(outputs)} outputs; a model of n branches has n of each"
        )
    sigs = [s for s in mt.signatureDefs or [] if s.subgraphIndex == 0]
    if len(sigs) != 1:
        return inputs, outputs

    def by_name(maps: Any, pattern: re.Pattern[str], graph_side: list[int]) -> list[int] | None:
        slots: dict[int, int] = {}
        for m in maps or []:
            match = pattern.fullmatch(_text(m.name))
            if match is None:
                return None
            slots[int(match.group(1))] = int(m.tensorIndex)
        if sorted(slots) != list(range(n)) or sorted(slots.values()) != sorted(graph_side):
            return None
        return [slots[i] for i in range(n)]

    sig_in = by_name(sigs[0].inputs, _ARG_NAME, inputs)
    sig_out = by_name(sigs[0].outputs, _OUT_NAME, outputs)
    if sig_in is None or sig_out is None:
        return inputs, outputs  # not litert-torch's args_{i}/output_{i} naming
    if (sig_in, sig_out) != (inputs, outputs):
        # litert-torch keeps both in argument order; if they disagree, neither can be trusted.
        raise ValueError(
            "ambiguous branch order: the signature's args_{i}/output_{i} names number the inputs and outputs "
            "differently from the subgraph's input/output order"
        )
    return inputs, outputs


def _walk_back(start: int, producer: dict[int, int], operators: list[Any], stop: int = -1) -> tuple[set[int], set[int]]:
    """Operators that tensor ``start`` depends on, and the tensors they read (with ``start``),
    not walking past tensor ``stop`` (the operator that makes ``stop`` is left out)."""
    ops: set[int] = set()
    tensors: set[int] = set()
    stack = [start]
    while stack:
        t = stack.pop()
        if t < 0 or t in tensors:
            continue
        tensors.add(t)
        p = None if t == stop else producer.get(t)
        if p is not None and p not in ops:
            ops.add(p)
            stack.extend(_ints(operators[p].inputs))
    return ops, tensors


class _AlignedBufferT:
    """A ``BufferT`` stand-in that packs its data 16-byte aligned, as TFLite's converter does."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def Pack(self, builder: Any) -> int:
        schema = _schema()
        vector = None
        if self.data:
            size = len(self.data)
            builder.StartVector(1, size, _BUFFER_ALIGNMENT)
            builder.head = builder.head - size
            builder.Bytes[builder.head : builder.head + size] = self.data
            vector = builder.EndVector()
        schema.BufferStart(builder)
        if vector is not None:
            schema.BufferAddData(builder, vector)
        return int(schema.BufferEnd(builder))


def _file_slice(buf: bytes, offset: int, size: int, what: str) -> bytes:
    """Bytes stored after the flatbuffer (models over 2 GB), ``offset`` from the start of the file."""
    if offset + size > len(buf):
        raise ValueError(
            f"{what} is stored at bytes {offset}..{offset + size} after the flatbuffer, but the model has only "
            f"{len(buf)} bytes; pass the whole .tflite file"
        )
    return buf[offset : offset + size]


def _split(
    model: bytes,
    n: int,
    io_shapes: Sequence[tuple[tuple[int, ...], tuple[int, ...]]] | None,
    anchors: Sequence[tuple[bool, bool]] | None = None,
) -> list[bytes | None]:
    """Split ``model`` into its ``n`` branches; where ``anchors[i]`` says so, cut branch ``i``'s
    input and/or output anchor off too (``None`` where that cannot be done cleanly: an activation
    fused into the input anchor, or nothing left between the anchors)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of branches must be a positive int, got {n!r}")
    schema = _schema()
    buf = bytes(model) if isinstance(model, bytearray | memoryview) else model
    mt = _parse(buf, schema)
    if len(mt.subgraphs) > 1:
        raise ValueError(
            f"the model has {len(mt.subgraphs)} subgraphs; only single-subgraph models can be split "
            "(control flow and composite decompositions live in other subgraphs)"
        )
    if mt.externalBuffers or mt.externalBufferGroups:
        raise ValueError("the model keeps its weights in external files (Model.external_buffers); cannot split it")
    inputs, outputs = _branch_order(mt, n)
    tensors = mt.subgraphs[0].tensors
    splitter = _Splitter(schema, mt, buf)
    graph_inputs = set(inputs)
    models: list[bytes | None] = []
    for i, (t_in, t_out) in enumerate(zip(inputs, outputs, strict=True)):
        if io_shapes is not None:
            want = (tuple(io_shapes[i][0]), tuple(io_shapes[i][1]))
            got = (tuple(_ints(tensors[t_in].shape)), tuple(_ints(tensors[t_out].shape)))
            if got != want:
                raise ValueError(
                    f"branch {i}: converted input/output shapes {got[0]} -> {got[1]} do not match the module's "
                    f"{want[0]} -> {want[1]}; cannot map the converted model back to the items"
                )
        a_in, a_out = anchors[i] if anchors is not None else (False, False)
        c_in = splitter.after_anchor(i, t_in) if a_in else t_in
        c_out = splitter.before_anchor(i, t_out) if a_out else t_out
        if c_in is None or (c_in == c_out and (a_in or a_out)):
            models.append(None)  # an activation fused into the input anchor, or nothing between the anchors
            continue
        ops, used = splitter.branch(i, c_in, c_out, graph_inputs)
        models.append(splitter.pack(i, ops, used, c_in, c_out, names={c_in: t_in, c_out: t_out}))
    return models


class _Splitter:
    """Cuts single-branch models out of one parsed model (``ModelT``)."""

    def __init__(self, schema: Any, mt: Any, buf: bytes) -> None:
        import flatbuffers

        self.schema, self.mt, self.buf, self.flatbuffers = schema, mt, buf, flatbuffers
        self.sg = mt.subgraphs[0]
        self.tensors: list[Any] = self.sg.tensors or []
        self.operators: list[Any] = self.sg.operators or []
        self.producer: dict[int, int] = {}
        self.consumers: dict[int, list[int]] = {}
        for p, op in enumerate(self.operators):
            for t in _ints(op.outputs):
                self.producer[t] = p
            for t in set(_ints(op.inputs)):
                self.consumers.setdefault(t, []).append(p)
        # Debug metadata indexes per-operator debug info of the whole graph: drop it.
        debug = {int(op.debugMetadataIndex) for op in self.operators if op.debugMetadataIndex is not None}
        if self.sg.debugMetadataIndex is not None:
            debug.add(int(self.sg.debugMetadataIndex))
        self.metadata = [
            md
            for i, md in enumerate(mt.metadata or [])
            if i not in debug and _text(md.name) != "debug_metadata" and 0 < int(md.buffer) < len(mt.buffers)
        ]
        self._buffers: dict[int, _AlignedBufferT] = {}

    def _buffer(self, index: int) -> _AlignedBufferT:
        if index not in self._buffers:
            b = self.mt.buffers[index]
            offset, size = int(b.offset or 0), int(b.size or 0)
            if offset > 1:  # 0 and 1 both mean "inline" (1 is the exporter's placeholder)
                data = _file_slice(self.buf, offset, size, f"buffer {index}")
            else:
                data = b"" if b.data is None else np.asarray(b.data, dtype=np.uint8).tobytes()
            self._buffers[index] = _AlignedBufferT(data)
        return self._buffers[index]

    def _anchor(self, p: int | None) -> Any:
        """Operator ``p`` if it is an anchor (a 1x1 stride-1 AVERAGE_POOL_2D, same input and output
        shape), else ``None``."""
        if p is None:
            return None
        op, schema = self.operators[p], self.schema
        code = self.mt.operatorCodes[op.opcodeIndex]
        options = op.builtinOptions
        ins, outs = _ints(op.inputs), _ints(op.outputs)
        if (
            max(int(code.builtinCode), int(code.deprecatedBuiltinCode)) != schema.BuiltinOperator.AVERAGE_POOL_2D
            or not isinstance(options, schema.Pool2DOptionsT)
            or (options.filterHeight, options.filterWidth, options.strideH, options.strideW) != (1, 1, 1, 1)
            or len(ins) != 1
            or len(outs) != 1
            or _ints(self.tensors[ins[0]].shape) != _ints(self.tensors[outs[0]].shape)
        ):
            return None
        return op

    def after_anchor(self, i: int, t_in: int) -> int | None:
        """The output of branch ``i``'s input anchor, which must be the only reader of ``t_in``;
        ``None`` if the converter fused an activation into it (the module starts with one)."""
        readers = self.consumers.get(t_in, [])
        anchor = self._anchor(readers[0]) if len(readers) == 1 else None
        if anchor is None:
            found = [_op_name(self.schema, self.mt, self.operators[p]) for p in readers]
            raise ValueError(
                f"branch {i}: expected the input {_text(self.tensors[t_in].name)!r} to be read only by its anchor "
                f"(a 1x1 AVERAGE_POOL_2D), found {found}; cannot cut the anchor off"
            )
        if anchor.builtinOptions.fusedActivationFunction != self.schema.ActivationFunctionType.NONE:
            return None
        return _ints(anchor.outputs)[0]

    def before_anchor(self, i: int, t_out: int) -> int:
        """The input of branch ``i``'s output anchor, which must make ``t_out``."""
        p = self.producer.get(t_out)
        anchor = self._anchor(p)
        if anchor is None or anchor.builtinOptions.fusedActivationFunction != self.schema.ActivationFunctionType.NONE:
            found = "nothing" if p is None else _op_name(self.schema, self.mt, self.operators[p])
            raise ValueError(
                f"branch {i}: expected the output {_text(self.tensors[t_out].name)!r} to be made by its anchor "
                f"(a 1x1 AVERAGE_POOL_2D without activation), found {found}; cannot cut the anchor off"
            )
        return _ints(anchor.inputs)[0]

    def branch(self, i: int, t_in: int, t_out: int, graph_inputs: set[int]) -> tuple[list[int], list[int]]:
        """The operators (in execution order) and tensors of branch ``i`` from tensor ``t_in`` (a graph
        input, or an input anchor's output) to ``t_out``, checked to depend on ``t_in`` alone."""
        ops, reached = _walk_back(t_out, self.producer, self.operators, stop=t_in)
        used_inputs = reached & (graph_inputs | {t_in})
        if used_inputs != {t_in}:
            names = sorted(_text(self.tensors[t].name) for t in used_inputs)
            raise ValueError(
                f"branch {i}: output {_text(self.tensors[t_out].name)!r} depends on inputs {names}, expected exactly "
                f"[{_text(self.tensors[t_in].name)!r}]; the branches are not independent or their order is ambiguous"
            )
        used = {t_in, t_out}
        for p in ops:
            op = self.operators[p]
            used.update(t for t in _ints(op.inputs) + _ints(op.outputs) + _ints(op.intermediates) if t >= 0)
        if any(self.tensors[t].isVariable for t in used):
            raise ValueError(f"branch {i} uses variable (stateful) tensors; cannot split it")
        if any(int(getattr(self.tensors[t], "externalBuffer", 0) or 0) for t in used):
            raise ValueError(f"branch {i} keeps weights in external files (Tensor.external_buffer); cannot split it")
        return sorted(ops), sorted(used)

    def pack(
        self, i: int, ops: list[int], used: list[int], t_in: int, t_out: int, names: dict[int, int] | None = None
    ) -> bytes:
        """Build and pack the standalone model of one branch; tensor ``k`` of ``names`` is given the
        name of tensor ``names[k]`` (a cut-off anchor's tensor, renamed as the branch input or output)."""
        schema = self.schema
        tensor_map = {old: new for new, old in enumerate(used)}
        buffers: list[_AlignedBufferT] = [_AlignedBufferT(b"")]  # buffer 0: the empty sentinel
        buffer_map = {0: 0}

        def remap_buffer(old: int) -> int:
            if old not in buffer_map:
                buffer_map[old] = len(buffers)
                buffers.append(self._buffer(old))
            return buffer_map[old]

        tensors = []
        for old in used:
            t = copy.copy(self.tensors[old])
            t.buffer = remap_buffer(int(t.buffer))
            if names and old in names:
                t.name = self.tensors[names[old]].name
            tensors.append(t)

        codes = sorted({int(self.operators[p].opcodeIndex) for p in ops})
        code_map = {old: new for new, old in enumerate(codes)}
        operators = []
        size = 0  # constant bytes: custom options stored after the flatbuffer, then buffers
        for p in ops:
            op = copy.copy(self.operators[p])
            op.opcodeIndex = code_map[int(op.opcodeIndex)]
            op.inputs = [tensor_map[t] if t >= 0 else t for t in _ints(op.inputs)]
            op.outputs = [tensor_map[t] for t in _ints(op.outputs)]
            if op.intermediates is not None:
                op.intermediates = [tensor_map[t] for t in _ints(op.intermediates) if t >= 0]
            op.debugMetadataIndex = -1
            if int(op.largeCustomOptionsOffset or 0) > 1:  # custom options stored after the flatbuffer
                start, length = int(op.largeCustomOptionsOffset), int(op.largeCustomOptionsSize or 0)
                options = _file_slice(self.buf, start, length, f"custom options of operator {p}")
                op.customOptions = np.frombuffer(options, dtype=np.uint8)
                op.largeCustomOptionsOffset = op.largeCustomOptionsSize = 0
                size += length
            operators.append(op)

        sub = schema.SubGraphT()
        sub.tensors, sub.operators, sub.name = tensors, operators, self.sg.name
        sub.inputs, sub.outputs = [tensor_map[t_in]], [tensor_map[t_out]]
        sub.debugMetadataIndex = -1

        metadata = []
        for md in self.metadata:
            m = schema.MetadataT()
            m.name, m.buffer = md.name, remap_buffer(int(md.buffer))
            metadata.append(m)

        out = schema.ModelT()
        out.version, out.description = self.mt.version, self.mt.description
        out.operatorCodes = [self.mt.operatorCodes[c] for c in codes]
        out.subgraphs = [sub]
        out.buffers = buffers
        out.metadata = metadata or None
        out.signatureDefs = [self._signature(tensor_map[t_in], tensor_map[t_out])]

        size += sum(len(b.data) for b in buffers)
        if size > _INLINE_LIMIT:
            raise ValueError(f"branch {i} has {size} bytes of constants, too many for one flatbuffer (2 GiB)")
        builder = self.flatbuffers.Builder(size + 4096)
        builder.Finish(out.Pack(builder), file_identifier=_FILE_IDENTIFIER)
        return bytes(builder.Output())

    def _signature(self, t_in: int, t_out: int) -> Any:
        """One signature, ``args_0 -> output_0``, keyed like the original's (``serving_default``)."""
        schema = self.schema
        sigs = [s for s in self.mt.signatureDefs or [] if s.subgraphIndex == 0]
        key = sigs[0].signatureKey if len(sigs) == 1 and sigs[0].signatureKey else b"serving_default"
        arg, res = schema.TensorMapT(), schema.TensorMapT()
        arg.name, arg.tensorIndex = b"args_0", t_in
        res.name, res.tensorIndex = b"output_0", t_out
        sig = schema.SignatureDefT()
        sig.signatureKey, sig.subgraphIndex, sig.inputs, sig.outputs = key, 0, [arg], [res]
        return sig
