"""Devices: where a model runs and is timed (ONNX Runtime, LiteRT, PyTorch, adb, remote agents).

Imports nothing else of hwnas. Arrives with the profile issue.
"""
