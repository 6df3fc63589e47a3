"""The one TFLite converter for whole networks: a PyTorch module as TFLite bytes (fp32, fp16, int8).

``litert_torch.convert``; ``nhwc=True`` gives the input in NHWC order, as mobile camera
pipelines produce it. fp16: weights stored as float16 (ai-edge-quantizer's float casting;
LiteRT computes in fp32 or fp16 as the delegate decides). int8: PyTorch 2 export post-training
quantization (per-channel symmetric int8 weights, int8 activations, calibrated on training
images), lowered by litert-torch to integer TFLite kernels; input and output stay float with a
quantize / dequantize at the ends. Many small models (the LUT's kernels) are converted in one
go by :mod:`hwnas.convert.tflite_batch`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hwnas.convert.onnx_export import INPUT, OUTPUT
from hwnas.core.errors import HwnasError
from hwnas.core.extras import require
from hwnas.core.formats import PRECISIONS
from hwnas.core.quiet import quiet


class _Named(nn.Module):
    """``model`` with a keyword input and a dict output, so that the TFLite signature's tensors are
    named as the ONNX file's (``input`` and ``logits``) instead of ``args_0`` and ``output_0``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input: torch.Tensor) -> dict[str, torch.Tensor]:
        return {OUTPUT: self.model(input)}


def tflite_bytes(
    model: nn.Module,
    input_shape: tuple[int, ...],
    precision: str = "fp32",
    nhwc: bool = False,
    calibration: Sequence[np.ndarray] = (),
    nhwc_output: bool = False,
) -> bytes:
    """TFLite bytes of ``model`` (NCHW ``input_shape``); see the module docstring. ``nhwc_output``
    (with ``nhwc``) gives a 4-D output in NHWC order too (a LUT's int8 kernel models, so that no
    layout transpose at their output is timed)."""
    require("tflite", "TFLite export (--format tflite)")
    with quiet():
        import litert_torch

    if precision not in PRECISIONS:
        raise HwnasError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    sample = torch.randn(input_shape)
    model = model.eval()
    kwargs: dict[str, object] = {}
    if precision == "int8":
        model, kwargs["quant_config"] = _pt2e_int8(model, sample, calibration)
    outputs = [0] if nhwc_output else None
    module: nn.Module = litert_torch.to_channel_last_io(model, args=[0], outputs=outputs) if nhwc else model
    x = sample.permute(0, 2, 3, 1).contiguous() if nhwc else sample
    if precision != "int8":  # an exported (pt2e) graph has no eval(); it is in inference form already
        module = module.eval()
    with quiet():  # the signature's input and output take the ONNX file's names
        data = bytes(litert_torch.convert(_Named(module), (), sample_kwargs={INPUT: x}, **kwargs).model_content())
    return fp16_weights(data) if precision == "fp16" else data


def _pt2e_int8(model: nn.Module, sample: torch.Tensor, calibration: Sequence[np.ndarray]) -> tuple[nn.Module, object]:
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    if not calibration:
        raise HwnasError("int8 needs calibration images: give --data (training images)")
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    )
    with quiet():
        exported = torch.export.export(model, (sample,)).module()
        prepared = quantize_pt2e.prepare_pt2e(exported, quantizer)
        with torch.no_grad():
            for x in calibration:
                prepared(torch.from_numpy(x))
        converted: nn.Module = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    return converted, QuantConfig(pt2e_quantizer=quantizer)


def fp16_weights(fp32: bytes) -> bytes:
    """The TFLite model ``fp32`` with its weights stored as float16."""
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer

    with tempfile.TemporaryDirectory(prefix="hwnas-fp16-") as tmp:
        src = Path(tmp) / "fp32.tflite"
        src.write_bytes(fp32)
        qt = quantizer.Quantizer(str(src))
        qt.add_weight_only_config(
            regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
            granularity=qtyping.QuantGranularity.TENSORWISE,
            algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING,
        )  # fmt: skip
        with quiet():
            result = qt.quantize(enable_progress_report=False)
        return bytes(result.quantized_model)
