"""TFLite flatbuffer surgery, torch-free: cut a converted model of independent branches into one
standalone model per branch (:func:`split_tflite`, :func:`split_branches` with anchors), cut off an
input anchor (:func:`cut_input_anchor`), and list a model's operators (:func:`operator_types`).

It works on the TFLite object API (``ai_edge_litert.schema_py_generated``): a branch is every
operator its output depends on, found by walking back from the output tensor, with the tensors,
buffers and operator codes those operators use, renumbered. What litert-torch's output looks like
(the signature's names and order, constants after the flatbuffer in models over 2 GB, constants
shared by branches) and how anchors are chosen: :mod:`hwnas.convert.tflite_batch`.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from hwnas.core.extras import require
from hwnas.core.formats import TFLITE_IDENTIFIER

__all__ = ["cut_input_anchor", "operator_types", "split_branches", "split_tflite"]

# TFLite's own converter aligns constant data to 16 bytes; some kernels and delegates rely on it.
_BUFFER_ALIGNMENT = 16
# A flatbuffer addresses at most 2 GiB; leave room for everything that is not constant data.
_INLINE_LIMIT = 2**31 - 2**24
_ARG_NAME = re.compile(r"args_(\d+)")
_OUT_NAME = re.compile(r"output_(\d+)")


def _schema() -> Any:
    require("tflite", "TFLite kernel models (tflite-cpu)")
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


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
    return [m for m in split_branches(model, n, None) if m is not None]


def cut_input_anchor(model: bytes) -> bytes | None:
    """A one-branch model converted with an input anchor (a 1x1 stride-1 average pool on its NHWC
    input, see the module docstring), without it: the anchor's output becomes the model's input.
    ``None`` where it cannot be cut cleanly (as :func:`_split`). Used for int8 kernel models, which
    are quantized and converted one at a time rather than by :func:`convert_batch`."""
    return split_branches(model, 1, None, [(True, False)])[0]


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
    if len(buf) < 8 or buf[4:8] != TFLITE_IDENTIFIER:
        raise ValueError(
            f"not a TFLite model: {len(buf)} bytes without the {TFLITE_IDENTIFIER.decode()!r} file identifier"
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


def split_branches(
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
        builder.Finish(out.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
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
