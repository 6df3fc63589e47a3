"""Devices: where a model runs and is timed. One interface (:class:`Device`), named by spec strings.

``ort-cpu``, ``tflite-cpu``, ``torch-cpu``, ``torch-cuda``, ``ort-cuda``. This package imports nothing
else of hwnas but its errors and version.
"""

from __future__ import annotations

from hwnas.devices.base import Device, DeviceError, Runner, Stats, TimingConfig, time_calls
from hwnas.devices.spec import DEVICE_KINDS, open_device, parse_device

__all__ = [
    "DEVICE_KINDS",
    "Device",
    "DeviceError",
    "Runner",
    "Stats",
    "TimingConfig",
    "open_device",
    "parse_device",
    "time_calls",
]
