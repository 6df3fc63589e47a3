"""The numeric precisions a model file can ship in, and which each file format has: one definition,
read by the converters, the devices, the LUT's kernel models, export and the command line."""

from __future__ import annotations

PRECISIONS = ("fp32", "fp16", "int8")
# fp16 is TFLite's fp16 weights; ONNX int8 is static QDQ, TFLite int8 full-integer; torch runs fp32
FORMAT_PRECISIONS: dict[str, tuple[str, ...]] = {
    "onnx": ("fp32", "int8"),
    "tflite": PRECISIONS,
    "torch": ("fp32",),
}
