"""The one ONNX exporter: a PyTorch module as ONNX bytes, used by the LUT's kernel models and by export.

``torch.onnx.export`` (TorchScript exporter, opset 17), one file, input ``input`` (NCHW float)
and output ``logits`` unless named otherwise (the LUT's one-kernel models use ``x`` / ``y``),
optionally a dynamic batch dimension. ``simplify`` runs onnxscript's optimizer; the LUT's kernels
are always exported without it, so a LUT predicts the plain export and ``--simplify``'s 2-3%
gain shows up only in the measured latency of the shipped file. int8: static QDQ quantization
by ``onnxruntime.quantization`` (per-channel int8 weights in 7-bit range, uint8 activations with
percentile ranges), calibrated on training images.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hwnas.core.quiet import quiet

ONNX_OPSET = 17
INPUT, OUTPUT = "input", "logits"


def onnx_bytes(
    model: nn.Module,
    input_shape: tuple[int, ...],
    dynamic_batch: bool = False,
    simplify: bool = False,
    input_name: str = INPUT,
    output_name: str = OUTPUT,
) -> bytes:
    """ONNX bytes; ``simplify`` runs onnxscript's optimizer (constant folding, fusions): 2-3% lower
    ONNX Runtime CPU latency on FBNetV2-F1 and a cifar network (BENCHMARKS.md)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (torch.randn(input_shape),), buf,  # type: ignore[arg-type]  # BytesIO works
            dynamo=False, opset_version=ONNX_OPSET, input_names=[input_name],
            output_names=[output_name], do_constant_folding=True,
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None,
        )  # fmt: skip
    if not simplify:
        return buf.getvalue()
    import onnx
    import onnxscript.optimizer

    with quiet():
        optimized = onnxscript.optimizer.optimize(onnx.load_from_string(buf.getvalue()))
    return bytes(optimized.SerializeToString())


def unshare_initializers(model: bytes) -> bytes:
    """The model with every ``Identity`` of an initializer replaced by a copy of the initializer.

    ``torch.onnx.export`` stores identical constants once and feeds the other users through
    ``Identity`` nodes: in a network with BatchNorm at its initial statistics every folded conv
    bias of one width is the same zero vector. ONNX Runtime's quantizer then quantizes that bias
    once, at the first conv's input scale times weight scale, and hands it to the others through
    the ``Identity``; their bias scale no longer matches their own scales, so ONNX Runtime does not
    fuse them into ``QLinearConv`` and runs them as float ``Conv`` between dequantize and quantize
    nodes. Measured on a cifar network (benchmarks/ort_int8_profile.py): 23 of 34 convs left float,
    the int8 network 4x slower than fp32 and 2-3x the sum of its int8 kernels."""
    import onnx

    m = onnx.load_from_string(model)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    keep = []
    for node in g.node:
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            g.initializer.append(copy)
        else:
            keep.append(node)
    if len(keep) == len(g.node):
        return model
    del g.node[:]
    g.node.extend(keep)
    return bytes(m.SerializeToString())


def onnx_int8(fp32: bytes, calibration: Sequence[np.ndarray], input_name: str = INPUT) -> bytes:
    """Static QDQ int8 quantization of an ONNX model, calibrated on ``calibration`` batches (NCHW)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.items, None)
            return None if x is None else {input_name: x.astype(np.float32)}

    with tempfile.TemporaryDirectory(prefix="hwnas-q-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(unshare_initializers(fp32))
        with quiet():
            # Percentile (99.999th) activation ranges, and 7-bit weights (reduce_range, which ONNX
            # Runtime recommends on x86 CPUs without VNNI, where u8 x s8 products can saturate). On a
            # CIFAR-10 child (69% accuracy, 500 test images) top-1 agreement with fp32: 98.0%, against
            # 97.8% without reduce_range and 96.4% with min-max ranges (benchmarks/int8_accuracy.py).
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True,
                            calibrate_method=CalibrationMethod.Percentile)  # fmt: skip
        return dst.read_bytes()
