"""Export of a trained child: ONNX / TFLite files in fp32, fp16 and int8 checked against PyTorch
(``pipeline``), with model cards, and measured on a device against the budget (``latency_check``).
The converters themselves (``convert``) sit low in the layering, so that the LUT's kernel models and
export use the same ONNX exporter and TFLite converter."""
