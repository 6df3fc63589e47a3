"""Regenerate ``crash_model.tflite``: a 428-byte TFLite model that crashes LiteRT with SIGSEGV.

Run: ``python tests/data/make_crash_model.py`` (writes the file next to this script; needs
ai-edge-litert for its schema module and the ``flatbuffers`` package; the output is the same
bytes every run).

What is wrong with it: the model has one subgraph (inputs ``cond`` bool[1] and ``x`` float32[1],
output ``y`` float32[1]) that holds a single ``IF`` operator, ``y = IF(cond, cond, x)``, whose
``then`` and ``else`` branches are both subgraph 0: the subgraph that holds the ``IF`` itself. ``IF``
passes its inputs after the first, here ``(cond, x)``, to the branch, so the branch's input count
and types match and every structural check passes. But ``if_kernel::Prepare`` calls
``Subgraph::AllocateTensors`` on each branch, which prepares that branch's ops, which is this same
``IF`` again: an unbounded recursion (``IF Prepare -> AllocateTensors -> PrepareOpsAndTensors ->
IF Prepare -> ...``) that ends when the native stack is exhausted (about 61,000 frames with the
8 MiB default stack), i.e. SIGSEGV inside ``interpreter.allocate_tensors()``. LiteRT refuses the
same trick for ``WHILE`` and ``CALL_ONCE`` (``cond != body``, ``init != this subgraph``) but has no
such check for ``IF``, so no Python exception is raised: the process dies.

It crashes the same way with and without the XNNPACK delegate (``tflite-cpu:threads=1`` and
``tflite-cpu:threads=1,xnnpack=0``); seen with ai-edge-litert 2.3.0. It is not a memory-cap kill:
the stack runs out long before hwnas's 4 GiB ``RLIMIT_AS``, and with ``ulimit -s unlimited`` the
stack grows into the address-space cap and the result is still SIGSEGV.

Use it to check that a hostile model kills only the isolated child (``hwnas.devices.isolated``),
never the process that asked for the measurement.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import flatbuffers
from ai_edge_litert import schema_py_generated as S

OUT = Path(__file__).with_name("crash_model.tflite")


def _tensor(name: str, ttype: int) -> S.TensorT:
    t = S.TensorT()
    t.name = name
    t.shape = [1]
    t.type = ttype
    t.buffer = 0  # the empty buffer: not a constant
    return t


def crash_model() -> bytes:
    cond = _tensor("cond", S.TensorType.BOOL)
    x = _tensor("x", S.TensorType.FLOAT32)
    y = _tensor("y", S.TensorType.FLOAT32)

    options = S.IfOptionsT()
    options.thenSubgraphIndex = 0  # the corruption: both branches are this very subgraph
    options.elseSubgraphIndex = 0

    op = S.OperatorT()
    op.opcodeIndex = 0
    op.inputs = [0, 0, 1]  # IF(cond, cond, x): the branch receives (cond, x), as the subgraph expects
    op.outputs = [2]
    op.builtinOptionsType = S.BuiltinOptions.IfOptions
    op.builtinOptions = options

    graph = S.SubGraphT()
    graph.name = "main"
    graph.tensors = [cond, x, y]
    graph.inputs = [0, 1]
    graph.outputs = [2]
    graph.operators = [op]

    code = S.OperatorCodeT()
    code.builtinCode = S.BuiltinOperator.IF
    code.deprecatedBuiltinCode = S.BuiltinOperator.IF
    code.version = 1

    model = S.ModelT()
    model.version = 3
    model.description = "hwnas test fixture: IF whose branches are its own subgraph"
    model.operatorCodes = [code]
    model.subgraphs = [graph]
    model.buffers = [S.BufferT()]  # buffer 0: the required empty buffer

    builder = flatbuffers.Builder(512)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def main() -> int:
    data = crash_model()
    OUT.write_bytes(data)
    print(f"{OUT}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
