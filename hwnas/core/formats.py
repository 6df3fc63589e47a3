"""Facts about model file formats, each defined once: the numeric precisions a file can ship in, which
each format has (read by the converters, the devices, the LUT's kernel models, export and the
command line), and the TFLite and ExecuTorch file identifiers (written by the converters, checked by the devices)."""

from __future__ import annotations

PRECISIONS = ("fp32", "fp16", "int8")
# fp16 is TFLite's fp16 weights; ONNX int8 is static QDQ, TFLite int8 full-integer, ExecuTorch (pte)
# int8 XNNPACK's quantized kernels; torch runs fp32
FLOAT_AND_INT8 = ("fp32", "int8")
FLOATS = ("fp32", "fp16")
FORMAT_PRECISIONS: dict[str, tuple[str, ...]] = {
    "onnx": FLOAT_AND_INT8,
    "tflite": PRECISIONS,
    "pte": FLOAT_AND_INT8,
    "mlpackage": FLOATS,  # Core ML ML Program: fp16 weights and compute
    "torch": ("fp32",),
}
TFLITE_IDENTIFIER = b"TFL3"  # a TFLite FlatBuffer's file identifier, at bytes 4-8
# the model files hwnas writes, times and serves, each named by its file suffix (``model.onnx``)
FILE_FORMATS = ("onnx", "tflite", "pte")
# what ``hwnas export --format`` writes: the files above, and Core ML packages (folders), which
# run only on macOS, so nothing here times or serves them
EXPORT_FORMATS = (*FILE_FORMATS, "mlpackage")
PTE_IDENTIFIER = b"ET12"  # an ExecuTorch program's (.pte) FlatBuffer file identifier, at bytes 4-8
