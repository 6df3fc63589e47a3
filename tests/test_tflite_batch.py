"""Batched litert-torch conversion and flatbuffer splitting (hwnas.convert.tflite_batch).

One batched conversion of a dozen modules, shared by the tests through module-scoped fixtures,
and one conversion per module alone to compare against; one batched conversion of the profiler's
kernel modules (``kernel_module``), and one converted network to compare those against.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

litert_torch = pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")
flatbuffers = pytest.importorskip("flatbuffers")

from ai_edge_litert import schema_py_generated as schema  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from hwnas.convert import tflite_batch  # noqa: E402
from hwnas.convert.tflite_batch import convert_batch  # noqa: E402
from hwnas.convert.tflite_surgery import operator_types, split_tflite  # noqa: E402
from hwnas.latency.kernel_models import kernel_input_shape, kernel_module  # noqa: E402
from hwnas.models.builder import build_model  # noqa: E402
from hwnas.spaces import Architecture, Block  # noqa: E402
from hwnas.spaces.kernels import Kernel, arch_kernels  # noqa: E402

TOL = 1e-4


class SE(nn.Module):
    """Squeeze-and-excitation: pool -> 1x1 conv -> hswish -> 1x1 conv -> hsigmoid, times the input."""

    def __init__(self, c: int, mid: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, mid, 1), nn.Hardswish(), nn.Conv2d(mid, c, 1), nn.Hardsigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class Residual(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x * 0.5


def _bn(c: int) -> nn.BatchNorm2d:
    """BatchNorm with non-trivial statistics, so that folding it is actually tested."""
    bn = nn.BatchNorm2d(c)
    assert bn.running_mean is not None and bn.running_var is not None
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


def _kernels() -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    torch.manual_seed(0)
    shared = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), _bn(8), nn.ReLU())
    kernels: list[tuple[str, nn.Module, tuple[int, ...]]] = [
        ("conv1x1_bn_relu", nn.Sequential(nn.Conv2d(8, 16, 1, bias=False), _bn(16), nn.ReLU()), (1, 8, 14, 14)),
        (
            "conv3x3_s2_bn_hswish",
            nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), _bn(16), nn.Hardswish()),
            (1, 8, 14, 14),
        ),
        (
            "dwconv5x5_s2_bn_relu",
            nn.Sequential(nn.Conv2d(16, 16, 5, stride=2, padding=2, groups=16, bias=False), _bn(16), nn.ReLU()),
            (1, 16, 14, 14),
        ),
        ("se", SE(16, 8), (1, 16, 7, 7)),
        ("residual_add", Residual(), (1, 16, 7, 7)),
        ("gap_linear", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)), (1, 16, 7, 7)),
    ]
    # More than ten branches, so that the signature's string-sorted names (args_0, args_1, args_10, ...)
    # differ from the branch order; one module twice (shared weights), one parameter-free module twice.
    kernels += [
        (f"conv3x3_c{c}", nn.Sequential(nn.Conv2d(c, c + 1, 3, padding=1), nn.ReLU6()), (1, c, 9, 9)) for c in (3, 5, 7)
    ]
    kernels += [("shared_a", shared, (1, 8, 7, 7)), ("shared_b", shared, (1, 8, 10, 10))]
    kernels += [("residual_add_2", Residual(), (1, 16, 7, 7))]
    for _, module, _ in kernels:
        module.eval()
    return kernels


KERNELS = _kernels()
CORE = [name for name, _, _ in KERNELS[:6]]
CONV_KERNELS = ["conv1x1_bn_relu", "conv3x3_s2_bn_hswish", "dwconv5x5_s2_bn_relu"]
ANCHORED = [name for name in CORE if name not in CONV_KERNELS]  # not conv stacks: converted between anchors


def _standalone(module: nn.Module, shape: tuple[int, ...]) -> bytes:
    """A plain litert_torch.convert of one module, with the same channel-last treatment as convert_batch."""
    with torch.no_grad():
        out_rank = module(torch.zeros(shape)).ndim
    in_4d, out_4d = len(shape) == 4, out_rank == 4
    wrapped = litert_torch.to_channel_last_io(module, args=[0] if in_4d else [], outputs=[0] if out_4d else [])
    wrapped.training = False
    sample = torch.randn(shape)
    if in_4d:
        sample = sample.permute(0, 2, 3, 1).contiguous()
    return bytes(litert_torch.convert(wrapped, (sample,)).model_content())


@pytest.fixture(scope="module")
def batch() -> dict[str, bytes]:
    models = convert_batch([(module, shape) for _, module, shape in KERNELS])
    return {name: model for (name, _, _), model in zip(KERNELS, models, strict=True)}


@pytest.fixture(scope="module")
def standalone() -> dict[str, bytes]:
    """Each core module converted alone: conv stacks plainly (convert_batch does not anchor them),
    the others by convert_batch with one item (between anchors, as in the batch)."""
    out = {name: _standalone(module, shape) for name, module, shape in KERNELS if name in CONV_KERNELS}
    out.update({name: convert_batch([(module, shape)])[0] for name, module, shape in KERNELS if name in ANCHORED})
    return out


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    interpreter.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=np.float32))
    interpreter.invoke()
    return np.asarray(interpreter.get_tensor(out["index"]))


def _check_numerics(module: nn.Module, shape: tuple[int, ...], model: bytes) -> float:
    x = torch.randn(shape)
    with torch.no_grad():
        ref = module(x)
    x_np = x.permute(0, 2, 3, 1).numpy() if x.ndim == 4 else x.numpy()
    ref_np = ref.permute(0, 2, 3, 1).numpy() if ref.ndim == 4 else ref.numpy()
    got = _run(model, x_np)
    assert got.shape == ref_np.shape
    return float(np.abs(got - ref_np).max())


@pytest.mark.parametrize("index", range(len(KERNELS)), ids=[name for name, _, _ in KERNELS])
def test_split_model_matches_pytorch(batch: dict[str, bytes], index: int) -> None:
    name, module, shape = KERNELS[index]
    torch.manual_seed(100 + index)
    assert _check_numerics(module, shape, batch[name]) <= TOL


def _model(model: bytes) -> Any:
    return schema.ModelT.InitFromPackedBuf(model, 0)


def _executed(model: bytes) -> list[tuple[Any, ...]]:
    """What the runtime executes: per operator, its type, options and input/output shapes and types."""
    mt = _model(model)
    sg = mt.subgraphs[0]
    ops = []
    for op_type, op in zip(operator_types(model), sg.operators, strict=True):
        options = vars(op.builtinOptions) if op.builtinOptions is not None else {}
        options = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in options.items()}
        inputs = [(tuple(sg.tensors[t].shape), int(sg.tensors[t].type)) if t >= 0 else None for t in op.inputs]
        outputs = [(tuple(sg.tensors[t].shape), int(sg.tensors[t].type)) for t in op.outputs]
        ops.append((op_type, op.builtinOptionsType, sorted(options.items()), inputs, outputs))
    return ops


@pytest.mark.parametrize("name", CORE)
def test_split_model_executes_what_a_standalone_conversion_does(
    batch: dict[str, bytes], standalone: dict[str, bytes], name: str
) -> None:
    assert operator_types(batch[name]) == operator_types(standalone[name])
    assert _executed(batch[name]) == _executed(standalone[name])


@pytest.mark.parametrize("name", [name for name, _, shape in KERNELS if len(shape) == 4])
def test_channel_last_models_have_no_layout_ops(batch: dict[str, bytes], name: str) -> None:
    ops = operator_types(batch[name])
    assert "TRANSPOSE" not in ops and "RESHAPE" not in ops, ops


def test_convert_batch_leaves_the_modules_unchanged(batch: dict[str, bytes]) -> None:
    """BatchNorm is folded into the conv on a copy: the caller's module keeps its BN and its results."""
    _, module, shape = KERNELS[0]
    assert isinstance(module[1], nn.BatchNorm2d) and module[0].bias is None
    assert _check_numerics(module, shape, batch[KERNELS[0][0]]) <= TOL


@pytest.mark.parametrize("index", range(len(KERNELS)), ids=[name for name, _, _ in KERNELS])
def test_split_model_is_self_contained(batch: dict[str, bytes], index: int) -> None:
    name, _, shape = KERNELS[index]
    mt = _model(batch[name])
    assert len(mt.subgraphs) == 1
    sg = mt.subgraphs[0]
    assert len(sg.inputs) == 1 and len(sg.outputs) == 1
    nhwc = (shape[0], *shape[2:], shape[1])
    assert tuple(sg.tensors[sg.inputs[0]].shape) == nhwc
    # Buffer 0 is the empty sentinel; every other buffer and every operator code is used.
    assert mt.buffers[0].data is None or len(mt.buffers[0].data) == 0
    used_buffers = {int(t.buffer) for t in sg.tensors} | {int(m.buffer) for m in mt.metadata or []}
    assert used_buffers | {0} == set(range(len(mt.buffers)))
    assert {int(op.opcodeIndex) for op in sg.operators} == set(range(len(mt.operatorCodes)))
    # Every tensor is an operator's input or output, or the model input.
    touched = {int(t) for op in sg.operators for t in [*op.inputs, *op.outputs] if t >= 0} | {int(sg.inputs[0])}
    assert touched == set(range(len(sg.tensors)))
    (sig,) = mt.signatureDefs
    assert [(m.name, m.tensorIndex) for m in sig.inputs] == [(b"args_0", sg.inputs[0])]
    assert [(m.name, m.tensorIndex) for m in sig.outputs] == [(b"output_0", sg.outputs[0])]
    assert mt.version == 3


def test_split_tflite_of_a_single_branch_model_is_the_same_model(batch: dict[str, bytes]) -> None:
    model = batch["se"]
    (again,) = split_tflite(model, 1)
    assert _executed(again) == _executed(model)


def _with_offset_buffers(model: bytes) -> bytes:
    """``model`` rewritten as TFLite writes models over 2 GB: buffer data after the flatbuffer."""
    mt = _model(model)
    blobs = [bytes(b.data) if b.data is not None else b"" for b in mt.buffers]

    def pack(offsets: list[int]) -> bytes:
        for b, blob, offset in zip(mt.buffers, blobs, offsets, strict=True):
            b.data = None
            b.offset, b.size = (offset, len(blob)) if blob else (0, 0)
        builder = flatbuffers.Builder(1024)
        builder.Finish(mt.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    head = pack([1] * len(blobs))  # placeholders: the offset fields have the same size either way
    offsets, tail, pos = [], b"", -(-len(head) // 16) * 16
    for blob in blobs:
        offsets.append(pos + len(tail) if blob else 0)
        tail += blob + b"\0" * (-len(blob) % 16)
    packed = pack(offsets)
    assert len(packed) == len(head)
    return packed + b"\0" * (pos - len(packed)) + tail


def test_split_tflite_reads_offset_buffers(batch: dict[str, bytes]) -> None:
    name, module, shape = KERNELS[1]
    external = _with_offset_buffers(batch[name])
    assert any(int(b.offset) > 1 for b in _model(external).buffers)
    (inline,) = split_tflite(external, 1)
    assert all(int(b.offset) == 0 for b in _model(inline).buffers)
    assert _executed(inline) == _executed(batch[name])
    assert _check_numerics(module, shape, inline) <= TOL
    with pytest.raises(ValueError, match="after the flatbuffer"):
        split_tflite(external[: len(external) - 64], 1)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"TFL3", b"\x00" * 64, b"not a tflite model at all, just some bytes", bytes(range(256)) * 4],
    ids=["empty", "short", "zeros", "text", "noise"],
)
def test_split_tflite_rejects_garbage(garbage: bytes) -> None:
    with pytest.raises(ValueError, match="not a TFLite model"):
        split_tflite(garbage, 1)


def test_split_tflite_rejects_corrupt_flatbuffer(batch: dict[str, bytes]) -> None:
    model = batch["conv1x1_bn_relu"]
    corrupt = model[:8] + b"\xff" * (len(model) - 8)
    with pytest.raises(ValueError, match="corrupt TFLite model"):
        split_tflite(corrupt, 1)


@pytest.mark.parametrize("n", [0, -1, 2, 7])
def test_split_tflite_rejects_wrong_n(batch: dict[str, bytes], n: int) -> None:
    with pytest.raises(ValueError, match="branches"):
        split_tflite(batch["conv1x1_bn_relu"], n)


class _Pair(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.relu(x), y * 2.0


@pytest.fixture(scope="module")
def pair() -> bytes:
    """A raw two-branch litert-torch model, converted without convert_batch."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LITERT_TORCH_SHOW_PROGRESS", "n")
        return bytes(litert_torch.convert(_Pair().eval(), (torch.randn(1, 3), torch.randn(1, 5))).model_content())


def test_split_tflite_splits_a_raw_litert_model(pair: bytes) -> None:
    relu, double = split_tflite(pair, 2)
    assert operator_types(relu) == ["RELU"]
    assert operator_types(double) == ["MUL"]
    x, y = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    np.testing.assert_allclose(_run(relu, x[None, :3]), np.maximum(x[None, :3], 0))
    np.testing.assert_allclose(_run(double, y[None]), 2 * y[None])


def test_split_tflite_rejects_signature_disagreeing_with_subgraph_order(pair: bytes) -> None:
    mt = _model(pair)
    (sig,) = mt.signatureDefs
    for tensor_map in sig.inputs:
        tensor_map.name = {b"args_0": b"args_1", b"args_1": b"args_0"}[tensor_map.name]
    builder = flatbuffers.Builder(1024)
    builder.Finish(mt.Pack(builder), file_identifier=b"TFL3")
    with pytest.raises(ValueError, match="ambiguous branch order"):
        split_tflite(bytes(builder.Output()), 2)


def test_split_tflite_rejects_dependent_branches() -> None:
    class Crossed(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.relu(x + y), torch.relu(y)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LITERT_TORCH_SHOW_PROGRESS", "n")
        model = bytes(litert_torch.convert(Crossed().eval(), (torch.randn(1, 4), torch.randn(1, 4))).model_content())
    with pytest.raises(ValueError, match=r"branch 0: .* depends on inputs"):
        split_tflite(model, 2)


def test_convert_batch_rejects_bad_items() -> None:
    with pytest.raises(ValueError, match="at least one"):
        convert_batch([])
    with pytest.raises(ValueError, match="training mode"):
        convert_batch([(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)), (1, 3, 8, 8))])


# ---------------------------------------------------------------------------------------------
# The profiler's kernel modules, against a converted network
# ---------------------------------------------------------------------------------------------

NETWORK = Architecture(
    (Block("conv_k3_hs", 16, 2), Block("ir_k3_sehsig_hs", 16, 1, 4), Block("ir_pool_hs", 64, 1, 4)), 32, 10
)
SE_KERNEL = Kernel("se", 32, 8, 1, 1, 5, 5, "hswish", "hsigmoid")
GAP_KERNEL = Kernel("gap", 64, h=7, w=7)
SPEC_KERNELS = [
    *(
        Kernel("conv", 8, 16, k, s, 9, 9, act)
        for k, s, act in [(1, 1, "relu"), (3, 1, "hswish"), (3, 2, "none"), (5, 2, "relu")]
    ),
    *(
        Kernel("dwconv", 24, k=k, s=s, h=10, w=10, act=act)
        for k, s, act in [(3, 1, "relu"), (3, 2, "hswish"), (5, 2, "none")]
    ),
    SE_KERNEL,
    *(Kernel("se", 24, 8, h=4, w=4, act=act, gate=gate) for act, gate in [("relu", "sigmoid"), ("relu", "hsigmoid")]),
    Kernel("add", 16, h=6, w=6),
    GAP_KERNEL,
    Kernel("gap", 64, h=1, w=1),  # an identity: converted without anchors
    Kernel("linear", 64, 10),
]
# Every kernel of the network too, so that their models can be laid end to end.
PROFILED = list(dict.fromkeys([*SPEC_KERNELS, *arch_kernels(NETWORK)]))
# A global pool of a 1x1 map is an identity in a channel-last graph: it keeps its plain conversion.
IDENTITY_POOLS = ["gap_c64_h1_w1"]
PROFILED_4D = [k for k in PROFILED if k.op != "linear" and k.key not in IDENTITY_POOLS]


@pytest.fixture(scope="module")
def network() -> bytes:
    """The network converted as a mobile app would: NHWC input."""
    model = build_model(NETWORK).eval()
    wrapped = litert_torch.to_channel_last_io(model, args=[0])
    wrapped.training = False
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LITERT_TORCH_SHOW_PROGRESS", "n")
        return bytes(litert_torch.convert(wrapped, (torch.randn(1, 32, 32, 3),)).model_content())


@pytest.fixture(scope="module")
def profiled() -> dict[str, bytes]:
    models = convert_batch([(kernel_module(k), kernel_input_shape(k)) for k in PROFILED])
    return {k.key: model for k, model in zip(PROFILED, models, strict=True)}


def _network_ops(network: bytes) -> tuple[list[str], list[Any]]:
    return operator_types(network), _model(network).subgraphs[0].operators


def _in_network_se(network: bytes) -> list[str]:
    """The SE of the network: from the MEAN of the depthwise output x to the MUL that scales x."""
    types, ops = _network_ops(network)
    for i, (op_type, op) in enumerate(zip(types, ops, strict=True)):
        if op_type != "MEAN":
            continue
        x = int(op.inputs[0])
        scale = [j for j in range(i + 1, len(ops)) if types[j] == "MUL" and x in [int(t) for t in ops[j].inputs]]
        if scale:
            return types[i : scale[0] + 1]
    raise AssertionError(f"no SE in the network: {types}")


def _in_network_gap(network: bytes) -> list[str]:
    """The ir_pool head's global pool: from the MEAN of a tensor that only it reads (the SE's MEAN
    shares x with the SE's MUL) to the head's 1x1 conv."""
    types, ops = _network_ops(network)
    readers = Counter(int(t) for op in ops for t in set(op.inputs))
    (i,) = [i for i, op in enumerate(ops) if types[i] == "MEAN" and readers[int(op.inputs[0])] == 1]
    j = types.index("CONV_2D", i)
    return types[i:j]


def test_se_kernel_converts_to_its_in_network_ops(network: bytes, profiled: dict[str, bytes]) -> None:
    expected = _in_network_se(network)
    assert expected[0] == "MEAN" and "HARD_SWISH" in expected and expected[-1] == "MUL"
    assert operator_types(profiled[SE_KERNEL.key]) == expected


def test_gap_kernel_converts_to_its_in_network_ops(network: bytes, profiled: dict[str, bytes]) -> None:
    expected = _in_network_gap(network)
    assert "MEAN" in expected
    assert operator_types(profiled[GAP_KERNEL.key]) == expected
    assert operator_types(profiled["gap_c64_h16_w16"]) == expected  # the network's own


def test_kernel_models_laid_end_to_end_are_the_network(network: bytes, profiled: dict[str, bytes]) -> None:
    """The network runs exactly its kernels' models, one after the other, except the classifier's
    pool: a 1x1 map, pooled and flattened to a SUM in the network, and a SUM between reshapes alone."""
    kernels = arch_kernels(NETWORK)
    assert kernels[-2].key in IDENTITY_POOLS and kernels[-1].op == "linear"
    assert operator_types(profiled[kernels[-2].key]) == ["RESHAPE", "SUM", "RESHAPE"]
    laid = [op for k in kernels[:-2] for op in operator_types(profiled[k.key])]
    laid += ["SUM", *operator_types(profiled[kernels[-1].key])]
    assert laid == operator_types(network)


@pytest.mark.parametrize("kernel", PROFILED, ids=[k.key for k in PROFILED])
def test_kernel_model_matches_pytorch(profiled: dict[str, bytes], kernel: Kernel) -> None:
    torch.manual_seed(7)
    assert _check_numerics(kernel_module(kernel), kernel_input_shape(kernel), profiled[kernel.key]) <= TOL


@pytest.mark.parametrize("kernel", PROFILED_4D, ids=[k.key for k in PROFILED_4D])
def test_kernel_model_has_no_layout_ops(profiled: dict[str, bytes], kernel: Kernel) -> None:
    ops = operator_types(profiled[kernel.key])
    assert "TRANSPOSE" not in ops and "RESHAPE" not in ops, ops
    mt = _model(profiled[kernel.key])
    (inp,) = mt.subgraphs[0].inputs
    n, c, h, w = kernel_input_shape(kernel)
    assert tuple(mt.subgraphs[0].tensors[inp].shape) == (n, h, w, c)
    assert mt.subgraphs[0].tensors[inp].type == schema.TensorType.FLOAT32


def test_anchors_change_nothing_for_conv_stacks(
    monkeypatch: pytest.MonkeyPatch, batch: dict[str, bytes], profiled: dict[str, bytes]
) -> None:
    """Conv stacks are converted without anchors: with them, their models would be the same."""
    convs = [k for k in SPEC_KERNELS if k.op == "conv"][:3] + [k for k in SPEC_KERNELS if k.op == "dwconv"][:2]
    modules = [(name, module, shape) for name, module, shape in KERNELS if name in [*CONV_KERNELS, "conv3x3_c3"]]
    items = [(kernel_module(k), kernel_input_shape(k)) for k in convs] + [(m, s) for _, m, s in modules]
    assert all(tflite_batch._is_conv_stack(tflite_batch._fold_batch_norms(m)) for m, _ in items)
    others = [kernel_module(k) for k in PROFILED if k.op in ("se", "add", "gap")]
    assert not any(tflite_batch._is_conv_stack(m) for m in others)
    monkeypatch.setattr(tflite_batch, "_is_conv_stack", lambda module: False)
    anchored = convert_batch(items)
    unanchored = [profiled[k.key] for k in convs] + [batch[name] for name, _, _ in modules]
    for with_anchors, without in zip(anchored, unanchored, strict=True):
        assert _executed(with_anchors) == _executed(without)


def test_anchors_that_cannot_be_cut_off_are_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two modules whose anchors cannot be cut off, converted once more without them: one starts
    with an activation (fused into the input anchor), one is an identity that the check before the
    conversion misses here (nothing is left between its anchors)."""
    torch.manual_seed(3)
    relu_pool = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1)).eval()
    pool_1x1 = kernel_module(Kernel("gap", 64, h=1, w=1))
    items = [(relu_pool, (1, 8, 5, 5)), (pool_1x1, (1, 64, 1, 1))]
    calls: list[list[bool]] = []
    convert = tflite_batch._convert

    def spy(prepared: Any) -> Any:
        calls.append([item.anchored for item in prepared])
        return convert(prepared)

    monkeypatch.setattr(tflite_batch, "_convert", spy)
    monkeypatch.setattr(tflite_batch, "_is_identity", lambda x, y: False)
    models = convert_batch(items)
    assert calls == [[True, True], [False, False]]
    assert "MEAN" in operator_types(models[0])
    assert operator_types(models[1]) == ["RESHAPE", "SUM", "RESHAPE"]
    for (module, shape), model in zip(items, models, strict=True):
        assert _check_numerics(module, shape, model) <= TOL
