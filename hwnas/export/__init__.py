"""Export of a child network to ONNX / TFLite with numeric and latency checks (export issue)."""
