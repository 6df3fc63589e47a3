"""One-kernel models: each LUT entry is timed as a tiny network that runs exactly that kernel.

The modules come from :mod:`hwnas.models.layers`, the same layers the child networks are built from, so
a runtime fuses and executes them the same way (conv + BN + activation as one conv, etc.).
Artifacts per device format: the module itself (``torch``), ONNX bytes (``onnx``, through the
TorchScript-based ``torch.onnx.export``: ~5 ms a kernel), TFLite bytes (``tflite``, through
litert-torch in batches, see :mod:`hwnas.convert.tflite_batch`) or ExecuTorch programs (``pte``,
one ``torch.export`` and XNNPACK lowering each, see :mod:`hwnas.convert.pte_export`). TFLite kernel models take NHWC
input and hold exactly the ops the kernel has inside a converted network (no layout transposes
at their boundaries; anchors cut away, see that module).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from hwnas.core.formats import FORMAT_PRECISIONS
from hwnas.models.layers import ConvBNAct, SqueezeExcite
from hwnas.spaces.kernels import Kernel

# Bump when a kernel's module or its conversion changes, so cached artifacts are rebuilt.
KERNEL_MODELS_VERSION = 3  # 3: int8 ONNX networks quantized with unshared biases (all convs fuse)


class AddKernel(nn.Module):
    """A residual add: the input plus a second tensor of the same shape."""

    other: torch.Tensor

    def __init__(self, c: int, h: int, w: int) -> None:
        super().__init__()
        self.register_buffer("other", torch.randn(1, c, h, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.other


def kernel_module(kernel: Kernel) -> nn.Module:
    """The module that runs ``kernel``: eval mode, random weights and BN statistics, seeded by the
    key, so the same kernel always gets the same module (reproducible, and checkable against its
    converted forms)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(zlib.crc32(kernel.key.encode()))
        return _build(kernel)


def _build(k: Kernel) -> nn.Module:
    module: nn.Module
    if k.op == "conv":
        module = ConvBNAct(k.cin, k.cout, k.k, k.s, act=k.act)
    elif k.op == "dwconv":
        module = ConvBNAct(k.cin, k.cin, k.k, k.s, groups=k.cin, act=k.act)
    elif k.op == "se":
        module = SqueezeExcite(k.cin, k.cout, k.act, k.gate)
    elif k.op == "add":
        module = AddKernel(k.cin, k.h, k.w)
    elif k.op == "gap":
        module = nn.AdaptiveAvgPool2d(1)
    else:
        module = nn.Linear(k.cin, k.cout)
    for m in module.modules():  # non-trivial BN statistics, so nothing folds to a constant
        if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None and m.running_var is not None:
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return module.eval()


def kernel_input_shape(kernel: Kernel, batch: int = 1) -> tuple[int, ...]:
    """NCHW input shape of the kernel's model (``(batch, cin)`` for linear)."""
    if kernel.op == "linear":
        return (batch, kernel.cin)
    return (batch, kernel.cin, kernel.h, kernel.w)


def to_onnx(module: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """ONNX bytes of one kernel's module (input ``x``, output ``y``), by the one ONNX exporter."""
    from hwnas.convert.onnx_export import onnx_bytes

    return onnx_bytes(module, input_shape, input_name="x", output_name="y")


def onnx_artifacts(kernels: Sequence[Kernel], batch: int = 1) -> list[bytes]:
    return [to_onnx(kernel_module(k), kernel_input_shape(k, batch)) for k in kernels]


def tflite_artifacts(kernels: Sequence[Kernel], batch: int = 1) -> list[bytes]:
    from hwnas.core.quiet import quiet

    with quiet():  # litert-torch's import and conversion log to stderr (absl, torchao, oneDNN)
        from hwnas.convert.tflite_batch import convert_batch

        return convert_batch([(kernel_module(k), kernel_input_shape(k, batch)) for k in kernels])


ARTIFACT_BUILDERS: dict[str, Callable[[Sequence[Kernel], int], list[bytes]]] = {
    "onnx": onnx_artifacts,
    "tflite": tflite_artifacts,
}
# The precisions a LUT can be profiled in, per format, in the form export produces them.
# int8 TFLite kernel models converted behind an input anchor that is cut off again (see tflite_int8_kernel)
ANCHORED_INT8 = ("se", "gap")
CALIBRATION_BATCHES = 4  # random-normal batches that calibrate an int8 model's ranges for timing


def random_calibration(input_shape: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """Batches of standard-normal inputs, seeded: the ranges int8 timing models are quantized with
    (latency does not depend on the ranges, only on the ops, which are those of export's form)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(input_shape).astype(np.float32) for _ in range(CALIBRATION_BATCHES)]


def at_precision(
    fp32: Sequence[bytes], fmt: str, precision: str, shapes: Sequence[tuple[int, ...]], input_name: str
) -> list[bytes]:
    """Models converted at fp32 in the form export ships at ``precision``: ONNX static QDQ int8
    (:func:`hwnas.convert.onnx_export.onnx_int8`), TFLite float16 weights
    (:func:`hwnas.convert.tflite_export.fp16_weights`). TFLite int8 is quantized from the
    module, not from fp32 bytes: :func:`tflite_int8_kernel`."""
    if precision not in FORMAT_PRECISIONS.get(fmt, ()):
        raise ValueError(
            f"no {precision} form for {fmt} models; choose from {', '.join(FORMAT_PRECISIONS.get(fmt, ()))}"
        )
    if fmt == "tflite" and precision == "int8":
        raise ValueError("TFLite int8 models are quantized from the module (tflite_int8_kernel), not from fp32 bytes")
    if precision == "fp32":
        return list(fp32)
    if fmt == "onnx":
        from hwnas.convert.onnx_export import onnx_int8

        return [onnx_int8(d, random_calibration(s, zlib.crc32(d[:4096])), input_name=input_name)
                for d, s in zip(fp32, shapes, strict=True)]  # fmt: skip
    from hwnas.convert.tflite_export import fp16_weights

    return [fp16_weights(d) for d in fp32]


def tflite_int8(module: nn.Module, input_shape: tuple[int, ...], seed: int, nhwc_output: bool = True) -> bytes:
    """``module`` as a full-integer int8 TFLite model, the way ``hwnas export --int8`` quantizes a
    network (PyTorch 2 export, per-channel symmetric weights, int8 activations, lowered by
    litert-torch), calibrated on :func:`random_calibration` inputs; a 4-D input in NHWC order, and
    with ``nhwc_output`` a 4-D output too (give False for a 2-D output)."""
    from hwnas.convert.tflite_export import tflite_bytes

    nhwc = len(input_shape) == 4
    calibration = random_calibration(input_shape, seed)
    return tflite_bytes(module, input_shape, "int8", nhwc=nhwc, calibration=calibration,
                        nhwc_output=nhwc and nhwc_output)  # fmt: skip


def tflite_int8_kernel(kernel: Kernel, batch: int = 1) -> bytes:
    """The int8 TFLite timing model of ``kernel``: the operators an int8 network runs for it.

    Unlike the fp32 kernels (:mod:`hwnas.convert.tflite_batch`) these are quantized and
    converted one model at a time (quantization runs on the whole exported graph). Convolutions
    pin the layout themselves: conv, depthwise conv and add convert with no layout op. Converted
    alone, squeeze-excite and global pool would run a ``TRANSPOSE`` that a network does not, and
    litert-torch cannot quantize a sigmoid-gated squeeze-excite alone at all (its ``RESHAPE``
    breaks a same-scale constraint); both are converted behind an input anchor (a 1x1 average
    pool, as the batch converter does), which is then cut off, leaving ``MEAN, CONV_2D, ..., MUL``
    as in a network. Each model keeps int8 input and output, what a kernel inside an int8 network
    reads and writes; where an op has no int8 kernel (hard-swish, hard-sigmoid's add) the
    ``DEQUANTIZE`` / ``QUANTIZE`` around it are those a network runs too. The calibration
    (``lut validate --fit``) absorbs what is left (the network's own quantize and dequantize)."""
    from hwnas.convert.tflite_surgery import cut_input_anchor

    module, shape, seed = kernel_module(kernel), kernel_input_shape(kernel, batch), zlib.crc32(kernel.key.encode())
    if kernel.op in ANCHORED_INT8:
        cut = cut_input_anchor(tflite_int8(nn.Sequential(nn.AvgPool2d(1), module).eval(), shape, seed))
        if cut is not None:  # None: nothing left between the anchor and the output (a pool of a 1x1 map)
            return cut
    return tflite_int8(module, shape, seed)


def pte_model(module: nn.Module, input_shape: tuple[int, ...], precision: str, seed: int) -> bytes:
    """``module`` as an ExecuTorch program lowered to XNNPACK, the way ``hwnas export --format pte``
    converts a network (int8: calibrated on :func:`random_calibration` inputs)."""
    from hwnas.convert.pte_export import pte_bytes

    calibration = random_calibration(input_shape, seed) if precision == "int8" else ()
    return pte_bytes(module, input_shape, precision, calibration)[0]


def kernel_artifacts(kernels: Sequence[Kernel], fmt: str, batch: int = 1, precision: str = "fp32") -> list[bytes]:
    """The timing models of ``kernels`` in format ``fmt`` at ``precision``."""
    if fmt == "pte":  # one program per kernel; int8 quantized from the module, as export does
        return [pte_model(kernel_module(k), kernel_input_shape(k, batch), precision, zlib.crc32(k.key.encode()))
                for k in kernels]  # fmt: skip
    if fmt == "tflite" and precision == "int8":
        from hwnas.core.quiet import quiet

        with quiet():
            return [tflite_int8_kernel(k, batch) for k in kernels]
    fp32 = ARTIFACT_BUILDERS[fmt](kernels, batch)
    return at_precision(fp32, fmt, precision, [kernel_input_shape(k, batch) for k in kernels], "x")
