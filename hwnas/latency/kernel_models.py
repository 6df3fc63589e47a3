"""One-kernel models: each LUT entry is timed as a tiny network that runs exactly that kernel.

The modules come from :mod:`hwnas.nas.models.layers`, the same layers the child networks are built from, so
a runtime fuses and executes them the same way (conv + BN + activation as one conv, etc.).
Artifacts per device format: the module itself (``torch``), ONNX bytes (``onnx``, through the
TorchScript-based ``torch.onnx.export``: ~5 ms a kernel) or TFLite bytes (``tflite``, through
litert-torch in batches, see :mod:`hwnas.export.convert.tflite_batch`). TFLite kernel models take NHWC
input and hold exactly the ops the kernel has inside a converted network (no layout transposes
at their boundaries; anchors cut away, see that module).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from hwnas.nas.models.layers import ConvBNAct, SqueezeExcite
from hwnas.nas.spaces.kernels import Kernel

ONNX_OPSET = 17
# Bump when a kernel's module or its conversion changes, so cached artifacts are rebuilt.
KERNEL_MODELS_VERSION = 2


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
    from hwnas.export.convert.onnx_export import onnx_bytes

    return onnx_bytes(module, input_shape, input_name="x", output_name="y")


def onnx_artifacts(kernels: Sequence[Kernel], batch: int = 1) -> list[bytes]:
    return [to_onnx(kernel_module(k), kernel_input_shape(k, batch)) for k in kernels]


def tflite_artifacts(kernels: Sequence[Kernel], batch: int = 1) -> list[bytes]:
    from hwnas.quiet import quiet

    with quiet():  # litert-torch's import and conversion log to stderr (absl, torchao, oneDNN)
        from hwnas.export.convert.tflite_batch import convert_batch

        return convert_batch([(kernel_module(k), kernel_input_shape(k, batch)) for k in kernels])


ARTIFACT_BUILDERS: dict[str, Callable[[Sequence[Kernel], int], list[bytes]]] = {
    "onnx": onnx_artifacts,
    "tflite": tflite_artifacts,
}
# The precisions a LUT can be profiled in, per format, in the form export produces them.
PRECISIONS = {"onnx": ("fp32", "int8"), "tflite": ("fp32", "fp16"), "torch": ("fp32",)}
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
    (:func:`hwnas.export.convert.onnx_export.onnx_int8`), TFLite float16 weights
    (:func:`hwnas.export.convert.tflite_export.fp16_weights`)."""
    if precision not in PRECISIONS.get(fmt, ()):
        raise ValueError(f"no {precision} form for {fmt} models; choose from {', '.join(PRECISIONS.get(fmt, ()))}")
    if precision == "fp32":
        return list(fp32)
    if fmt == "onnx":
        from hwnas.export.convert.onnx_export import onnx_int8

        return [onnx_int8(d, random_calibration(s, zlib.crc32(d[:4096])), input_name=input_name)
                for d, s in zip(fp32, shapes, strict=True)]  # fmt: skip
    from hwnas.export.convert.tflite_export import fp16_weights

    return [fp16_weights(d) for d in fp32]


def kernel_artifacts(kernels: Sequence[Kernel], fmt: str, batch: int = 1, precision: str = "fp32") -> list[bytes]:
    """The timing models of ``kernels`` in format ``fmt`` at ``precision``."""
    fp32 = ARTIFACT_BUILDERS[fmt](kernels, batch)
    return at_precision(fp32, fmt, precision, [kernel_input_shape(k, batch) for k in kernels], "x")
