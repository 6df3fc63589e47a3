"""Converters: PyTorch modules to ONNX and TFLite bytes, one of each, for the LUT and for export.

Layer: above the models (:mod:`hwnas.models`), below the devices' users (latency, export).
"""
