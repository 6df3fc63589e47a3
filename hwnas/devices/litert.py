"""LiteRT (TFLite) on the CPU: ``tflite-cpu``, through ai-edge-litert's Interpreter.

Falls back to the ``tflite_runtime`` package (same Interpreter API) where that is what is
installed. XNNPACK is LiteRT's default CPU delegate; ``xnnpack=0`` runs the builtin kernels.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from typing import Any, ClassVar

import numpy as np

from hwnas import __version__
from hwnas.core.formats import PRECISIONS
from hwnas.core.quiet import quiet
from hwnas.devices.base import BATCH, PIN, Device, DeviceError, Param, Runner, precision_param
from hwnas.devices.host import host_facts

_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


def _interpreter_module() -> tuple[Any, str]:
    for name in _MODULES:
        root = name.split(".")[0]
        if importlib.util.find_spec(root) is not None:
            dist = "ai-edge-litert" if root == "ai_edge_litert" else "tflite-runtime"
            return importlib.import_module(name), dist
    raise DeviceError("no TFLite interpreter is installed: pip install 'hwnas[tflite]'")


def open_interpreter(data: bytes, threads: int | None = None) -> Any:
    """A LiteRT ``Interpreter`` over the model bytes ``data`` (the one place one is opened)."""
    module, _ = _interpreter_module()
    kwargs: dict[str, Any] = {"model_content": bytes(data)}
    if threads is not None:
        kwargs["num_threads"] = threads
    with quiet():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on stderr
        return module.Interpreter(**kwargs)


class TfliteRunner(Runner):
    def __init__(self, interpreter: Any, batch: int) -> None:
        self.interpreter = interpreter
        interpreter.allocate_tensors()
        rng = np.random.default_rng(0)
        self.input_shapes = []
        for d in interpreter.get_input_details():
            shape = tuple(int(x) for x in d["shape"])
            if batch != 1 and shape and shape[0] != batch:
                interpreter.resize_tensor_input(d["index"], (batch, *shape[1:]))
        interpreter.allocate_tensors()
        for d in interpreter.get_input_details():
            shape = tuple(int(x) for x in d["shape"])
            self.input_shapes.append(shape)
            dtype = d["dtype"]
            data = rng.standard_normal(shape) if np.issubdtype(dtype, np.floating) else rng.integers(-8, 8, shape)
            interpreter.set_tensor(d["index"], data.astype(dtype))
        self.invoke = interpreter.invoke

    def run(self) -> object:
        return self.invoke()


class TfliteCpu(Device):
    """LiteRT Interpreter on the CPU."""

    kind = "tflite-cpu"
    format = "tflite"
    summary = "LiteRT (TFLite) Interpreter on the CPU, XNNPACK by default"
    params: ClassVar[dict[str, Param]] = {
        "threads": Param(int, 1, "interpreter threads"),
        "xnnpack": Param(bool, True, "use the XNNPACK delegate (0: builtin kernels)"),
        "batch": BATCH,
        "pin": PIN,
        "precision": precision_param(*PRECISIONS),
    }

    @classmethod
    def availability(cls) -> str | None:
        try:
            _interpreter_module()
        except DeviceError as exc:
            return str(exc)
        return None

    def load(self, artifact: Any, input_shape: tuple[int, ...] | None = None) -> Runner:
        if not isinstance(artifact, (bytes, bytearray)):
            raise DeviceError(f"{self.kind} runs .tflite files; got {type(artifact).__name__}")
        module, _ = _interpreter_module()
        kwargs: dict[str, Any] = {"model_content": bytes(artifact), "num_threads": self.options["threads"]}
        if not self.options["xnnpack"]:
            kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            with quiet():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on stderr
                interpreter = module.Interpreter(**kwargs)
                return TfliteRunner(interpreter, self.batch)
        except (ValueError, RuntimeError) as exc:
            raise DeviceError(f"{self.kind} cannot load the model: {str(exc).splitlines()[0][:200]}") from None

    def fingerprint(self) -> dict[str, Any]:
        _, dist = _interpreter_module()
        return {
            "kind": self.kind,
            "runtime": dist,
            "runtime_version": importlib.metadata.version(dist),
            "threads": self.options["threads"],
            "xnnpack": bool(self.options["xnnpack"]),
            "precision": self.precision,
            "batch": self.batch,
            "hwnas_version": __version__,
            **host_facts(),
        }
