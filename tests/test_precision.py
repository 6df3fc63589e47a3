"""Precision as a LUT dimension: kernels timed in the form export ships (ONNX QDQ int8, TFLite
fp16 weights), LUTs that know their precision, and the errors when precisions are mixed."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import onnx
import pytest

from hwnas.devices import open_device
from hwnas.latency.kernel_models import kernel_artifacts, kernel_input_shape, kernel_module
from hwnas.latency.table import LatencyTable
from hwnas.spaces import get_space

from conftest import FAST_TIMING, run_cli


def _conv_kernel():
    return next(k for k in get_space("tiny").kernels() if k.op == "conv" and k.cin > 3)


def test_int8_kernel_models_are_qdq_and_compute_the_fp32_kernel() -> None:
    import onnxruntime as ort
    import torch

    kernel = _conv_kernel()
    [data] = kernel_artifacts([kernel], "onnx", 1, "int8")
    ops = [n.op_type for n in onnx.load_from_string(data).graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops and "Conv" in ops
    x = np.random.default_rng(1).standard_normal(kernel_input_shape(kernel, 1)).astype(np.float32)
    (y8,) = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    with torch.no_grad():
        y = kernel_module(kernel)(torch.from_numpy(x)).numpy()
    # 8-bit: close to the fp32 kernel, relative to the output's range; not bit-equal
    err = np.abs(y8 - y).max() / np.abs(y).max()
    assert 0 < err < 0.1, err


def test_fp16_kernel_models_store_half_weights_and_compute_the_fp32_kernel() -> None:
    import torch

    from hwnas.devices.litert import open_interpreter

    kernel = _conv_kernel()
    [fp32], [fp16] = kernel_artifacts([kernel], "tflite", 1, "fp32"), kernel_artifacts([kernel], "tflite", 1, "fp16")
    interp = open_interpreter(fp16)
    dtypes = {str(t["dtype"].__name__) for t in interp.get_tensor_details()}
    assert "float16" in dtypes
    interp.allocate_tensors()
    x = np.random.default_rng(2).standard_normal(kernel_input_shape(kernel, 1)).astype(np.float32)
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], x.transpose(0, 2, 3, 1))  # the TFLite kernel models take NHWC
    interp.invoke()
    y16 = interp.get_tensor(interp.get_output_details()[0]["index"])
    with torch.no_grad():
        y = kernel_module(kernel)(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
    assert np.abs(y16 - y).max() <= 1e-2 * max(1.0, np.abs(y).max())
    assert "float16" not in {str(t["dtype"].__name__) for t in open_interpreter(fp32).get_tensor_details()}


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, keeping the default suite under 15 minutes
def test_an_int8_lut_knows_its_precision_and_is_refused_as_fp32(tmp_path: Path) -> None:
    lut = tmp_path / "i8.lut"
    proc = run_cli("profile", "--space", "tiny", "--device", "ort-cpu:threads=1", "--precision", "int8", "--out",
                   str(lut), "--rounds", "1", "--no-progress", *FAST_TIMING)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "precision=int8" in proc.stdout
    table = LatencyTable.load(lut)
    assert table.fingerprint["precision"] == "int8" and len(table) == len(get_space("tiny").kernels())
    # the same LUT through an fp32 device: one line naming the precision
    proc = run_cli("lut", "validate", str(lut), "--space", "tiny", "--device", "ort-cpu:threads=1", "--samples", "4",
                   "--no-progress", *FAST_TIMING)  # fmt: skip
    assert proc.returncode == 2 and "precision: 'int8' vs 'fp32'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    # validated against whole int8 networks, on the int8 device
    proc = run_cli("lut", "validate", str(lut), "--space", "tiny", "--device", "ort-cpu:threads=1", "--precision",
                   "int8", "--samples", "6", "--rounds", "1", "--no-progress", "--out", str(tmp_path / "v"),
                   *FAST_TIMING)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(lut) as conn:
        assert conn.execute("SELECT COUNT(DISTINCT arch) FROM models").fetchone()[0] == 6
    # with the fp32 LUT of the same device: the per-op comparison, and a warning for each slower op
    f32 = tmp_path / "f32.lut"
    assert run_cli("profile", "--space", "tiny", "--device", "ort-cpu:threads=1", "--out", str(f32), "--rounds", "1",
                   "--no-progress", *FAST_TIMING).returncode == 0  # fmt: skip
    proc = run_cli("lut", "show", str(lut), "--compare", str(f32))
    assert proc.returncode == 0, proc.stderr
    a, b = table.df.set_index("key"), LatencyTable.load(f32).df.set_index("key")
    for op in sorted(set(a["op"])):
        ratio = a.loc[a["op"] == op, "latency_ms"].sum() / b.loc[b["op"] == op, "latency_ms"].sum()
        assert f"{ratio:.2f}" in proc.stdout
        warned = f"warning: {op} kernels are predicted slower in i8.lut (int8)" in proc.stderr
        assert warned == (ratio > 1), op


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--device", "ort-cpu", "--precision", "fp8"], ["invalid choice: 'fp8'", "'fp32', 'fp16', 'int8'"]),
        (["--device", "ort-cpu", "--precision", "fp16"], ["precision='fp16'", "allowed: fp32, int8"]),
        (["--device", "tflite-cpu", "--precision", "bf16"], ["invalid choice: 'bf16'"]),
        (
            ["--device", "tflite-cpu:precision=int4", "--precision", "int8"],
            ["precision='int4'", "allowed: fp32, fp16, int8"],
        ),
        (["--device", "torch-cpu", "--precision", "int8"], ["torch-cpu times fp32 models only"]),
        (["--device", "ort-cpu:precision=int8", "--precision", "fp32"], ["contradicts", "precision=int8"]),
    ],
)
def test_bad_precisions_get_one_line(tmp_path: Path, args: list[str], words: list[str]) -> None:
    out = tmp_path / "x.lut"
    proc = run_cli("profile", "--space", "tiny", "--out", str(out), *args)
    assert proc.returncode == 2
    assert all(w in proc.stderr for w in words), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not out.exists()


def test_a_lut_from_another_runtime_version_is_refused(tmp_path: Path) -> None:
    lut = tmp_path / "t.lut"
    assert run_cli("profile", "--space", "tiny", "--device", "ort-cpu:threads=1", "--out", str(lut), "--rounds", "1",
                   "--no-progress", *FAST_TIMING).returncode == 0  # fmt: skip
    with sqlite3.connect(lut) as conn:
        fp = json.loads(conn.execute("SELECT value FROM meta WHERE name = 'fingerprint'").fetchone()[0])
        real = fp["runtime_version"]
        fp["runtime_version"] = "0.0.1"
        conn.execute("UPDATE meta SET value = ? WHERE name = 'fingerprint'", (json.dumps(fp),))
    proc = run_cli("lut", "validate", str(lut), "--space", "tiny", "--device", "ort-cpu:threads=1", "--samples", "4",
                   "--no-progress")  # fmt: skip
    assert proc.returncode == 2 and f"runtime_version: '0.0.1' vs '{real}'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "--force" in proc.stderr
    device = open_device("ort-cpu:threads=1")
    assert device.fingerprint()["runtime_version"] == real


def _run_int8_tflite(data: bytes, x_nhwc: np.ndarray) -> np.ndarray:
    """Run a full-integer TFLite model on a float NHWC input; its output, dequantized, as float."""
    from hwnas.devices.litert import open_interpreter

    interp = open_interpreter(data)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    if inp["dtype"] == np.int8:
        scale, zero = inp["quantization"]
        x_nhwc = np.clip(np.round(x_nhwc / scale + zero), -128, 127).astype(np.int8)
    interp.set_tensor(inp["index"], x_nhwc)
    interp.invoke()
    y = interp.get_tensor(out["index"])
    if out["dtype"] == np.int8:
        scale, zero = out["quantization"]
        y = (y.astype(np.float32) - zero) * scale
    return y


@pytest.mark.parametrize("op", ["conv", "dwconv", "add", "se", "gap"])
def test_tflite_int8_kernel_models_are_integer_and_compute_the_fp32_kernel(op: str) -> None:
    import torch

    from hwnas.devices.litert import open_interpreter

    # SE: a sigmoid-gated one, which litert-torch cannot quantize alone (hence the cut input anchor)
    kernel = next(k for k in get_space("tiny").kernels() if k.op == op and (op != "conv" or k.cin > 3)
                  and (op != "se" or k.gate == "sigmoid") and (op != "gap" or k.h > 1))  # fmt: skip
    [data] = kernel_artifacts([kernel], "tflite", 1, "int8")
    interp = open_interpreter(data)
    ops = [d["op_name"] for d in interp._get_ops_details()]
    main = {"conv": "CONV_2D", "dwconv": "DEPTHWISE_CONV_2D", "add": "ADD", "se": "MEAN", "gap": "MEAN"}[op]
    assert main in ops, ops
    if op in ("se", "gap"):  # what a network runs for them: no anchor left, no layout op
        assert ops == (["MEAN", "CONV_2D", "CONV_2D", "LOGISTIC", "MUL"] if op == "se" else ["MEAN"]), ops
    if op != "add":  # the kernel's tensors are int8, not float (add's second operand is a float constant)
        assert interp.get_input_details()[0]["dtype"] == np.int8
    assert "TRANSPOSE" not in ops and "AVERAGE_POOL_2D" not in ops, ops
    x = np.random.default_rng(3).standard_normal(kernel_input_shape(kernel, 1)).astype(np.float32)
    y8 = _run_int8_tflite(data, x.transpose(0, 2, 3, 1))
    with torch.no_grad():
        y = kernel_module(kernel)(torch.from_numpy(x)).numpy()
    y = y.transpose(0, 2, 3, 1)  # the models answer in NHWC
    assert y8.shape == y.shape
    # 8-bit: close to the fp32 kernel relative to its range (the largest outputs may clip where this
    # input reaches beyond the random calibration's range, so the 99th percentile, not the maximum)
    err = np.percentile(np.abs(y8 - y), 99) / np.abs(y).max()
    assert err < 0.1, err
    assert np.corrcoef(y8.ravel(), y.ravel())[0, 1] > 0.99


@pytest.mark.tour  # 5 minutes of int8 conversions on a slow hour of the 2-core VM: CI runs it with the tour
def test_a_tflite_int8_lut_is_profiled_and_validated_against_whole_int8_networks(tmp_path: Path) -> None:
    from hwnas.devices.litert import open_interpreter
    from hwnas.latency.network_timing import network_artifacts
    from hwnas.spaces.arch import Architecture

    lut = tmp_path / "t8.lut"
    proc = run_cli("profile", "--space", "tiny", "--device", "tflite-cpu:threads=1", "--precision", "int8", "--out",
                   str(lut), "--rounds", "1", "--no-progress", *FAST_TIMING)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    table = LatencyTable.load(lut)
    assert table.fingerprint["precision"] == "int8" and len(table) == len(get_space("tiny").kernels())
    proc = run_cli("lut", "validate", str(lut), "--space", "tiny", "--device", "tflite-cpu:threads=1", "--precision",
                   "int8", "--samples", "4", "--rounds", "1", "--no-progress", "--out", str(tmp_path / "v"),
                   *FAST_TIMING)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(lut) as conn:
        archs = [a for (a,) in conn.execute("SELECT DISTINCT arch FROM models")]
    assert len(archs) == 4
    # the whole networks timed are full-integer int8, as 'hwnas export --int8' ships them
    arch = Architecture.from_str(archs[0], num_classes=get_space("tiny").num_classes)
    [net] = network_artifacts([arch], "tflite", 1, "int8")
    interp = open_interpreter(net)
    kinds = {str(t["dtype"].__name__) for t in interp.get_tensor_details()}
    assert "int8" in kinds and any(d["op_name"] == "CONV_2D" for d in interp._get_ops_details())


def test_whole_int8_networks_run_every_conv_as_qlinearconv(tmp_path: Path) -> None:
    """torch.onnx shares identical constants through Identity nodes (every folded conv bias of a
    network at its initial BatchNorm statistics is the same zeros); quantized as shared, the bias
    scale is wrong for all but one conv and ONNX Runtime leaves those convs float."""
    import onnxruntime as ort

    from hwnas.convert.onnx_export import unshare_initializers
    from hwnas.latency.network_timing import network_artifacts, network_input_shape

    space = get_space("tiny")
    arch = space.architecture(space.resolutions[-1], [layer.options[-1] for layer in space.layers])
    [fp32] = network_artifacts([arch], "onnx", 1, "fp32")
    assert "Identity" in [n.op_type for n in onnx.load_from_string(fp32).graph.node]  # what the pass is for
    x = np.random.default_rng(3).standard_normal(network_input_shape(arch)).astype(np.float32)
    unshared = unshare_initializers(fp32)
    assert "Identity" not in [n.op_type for n in onnx.load_from_string(unshared).graph.node]
    (y_shared,) = ort.InferenceSession(fp32, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    (y_unshared,) = ort.InferenceSession(unshared, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(y_shared, y_unshared)

    [int8] = network_artifacts([arch], "onnx", 1, "int8")
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    (y8,) = ort.InferenceSession(int8, so, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    n_convs = sum(1 for n in onnx.load_from_string(fp32).graph.node if n.op_type == "Conv")
    assert "Conv" not in ops and ops.count("QLinearConv") == n_convs
    assert np.abs(y8 - y_shared).max() <= 0.1 * np.abs(y_shared).max()
