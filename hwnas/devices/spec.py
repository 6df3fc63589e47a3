"""Device spec strings: ``KIND[:PARAMS]``, e.g. ``ort-cpu:threads=1``, ``tflite-cpu:threads=4,xnnpack=0``,
``torch-cuda:0,batch=8``. A bare value sets the kind's positional parameter (the GPU index)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from hwnas.devices.base import Device, DeviceError, Param

# kind -> (module, class): a kind's module is imported only when the kind is used, so parsing a
# spec imports one runtime, and no device module imports this one back (no cycle through adb).
_KIND_CLASSES: dict[str, tuple[str, str]] = {
    "ort-cpu": ("hwnas.devices.onnxruntime", "OrtCpu"),
    "tflite-cpu": ("hwnas.devices.litert", "TfliteCpu"),
    "et-cpu": ("hwnas.devices.executorch", "EtCpu"),
    "torch-cpu": ("hwnas.devices.torch_devices", "TorchCpu"),
    "torch-cuda": ("hwnas.devices.torch_devices", "TorchCuda"),
    "ort-cuda": ("hwnas.devices.onnxruntime", "OrtCuda"),
    "remote": ("hwnas.devices.remote", "RemoteDevice"),
    "adb": ("hwnas.devices.adb", "AdbDevice"),
}


class _DeviceKinds(Mapping[str, type[Device]]):
    """The device classes by kind, each imported on first use."""

    def __getitem__(self, kind: str) -> type[Device]:
        module, name = _KIND_CLASSES[kind]
        cls: type[Device] = getattr(importlib.import_module(module), name)
        return cls

    def __iter__(self) -> Iterator[str]:
        return iter(_KIND_CLASSES)

    def __len__(self) -> int:
        return len(_KIND_CLASSES)


DEVICE_KINDS: Mapping[str, type[Device]] = _DeviceKinds()


def _value(kind: str, name: str, p: Param, text: str) -> Any:
    try:
        if p.type is bool:
            if text.lower() not in ("0", "1", "true", "false", "on", "off", "yes", "no"):
                raise ValueError
            value: Any = text.lower() in ("1", "true", "on", "yes")
        elif p.type is tuple:
            value = tuple(int(x) for x in text.split("+"))
        else:
            value = p.type(text)
    except ValueError:
        raise DeviceError(f"device {kind}: {name}={text!r} is not a valid {p.type.__name__} ({p.help})") from None
    if p.choices and value not in p.choices:
        raise DeviceError(f"device {kind}: {name}={text!r}; allowed: {', '.join(map(str, p.choices))}")
    if isinstance(value, int) and not isinstance(value, bool) and value < (0 if name in ("device", "pin") else 1):
        raise DeviceError(f"device {kind}: {name}={value} must be positive")
    return value


def parse_device(spec: str) -> Device:
    """A device from its spec string; unknown kinds and parameters raise :class:`DeviceError`."""
    kind, _, rest = spec.strip().partition(":")
    cls = DEVICE_KINDS.get(kind)
    if cls is None:
        raise DeviceError(f"unknown device {kind!r}; valid devices: {', '.join(DEVICE_KINDS)} (e.g. ort-cpu:threads=1)")
    options: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in rest.split(","))):
        name, eq, text = item.partition("=")
        if not eq:
            if cls.positional is None:
                raise DeviceError(
                    f"device {kind}: {item!r} needs a name, as in key=value; parameters: {', '.join(cls.params)}"
                )
            name, text = cls.positional, item
        if name not in cls.params:
            raise DeviceError(f"device {kind}: unknown parameter {name!r}; parameters: {', '.join(cls.params)}")
        options[name] = _value(kind, name, cls.params[name], text)
    return cls(**options)


def open_device(spec: str) -> Device:
    """Parse ``spec`` and check the device is usable here (runtime installed, GPU present)."""
    device = parse_device(spec)
    why = device.availability()
    if why:
        raise DeviceError(f"device {device.kind} is not usable here: {why}")
    return device
