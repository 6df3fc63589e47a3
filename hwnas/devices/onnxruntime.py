"""ONNX Runtime devices: ``ort-cpu`` and, where onnxruntime-gpu is installed, ``ort-cuda``."""

from __future__ import annotations

import importlib.util
from typing import Any, ClassVar

import numpy as np

from hwnas import __version__
from hwnas.core.formats import FORMAT_PRECISIONS
from hwnas.devices.base import BATCH, GPU_INDEX, PIN, Device, DeviceError, Param, Runner, precision_param
from hwnas.devices.host import host_facts

OPT_LEVELS = ("disable", "basic", "extended", "all")
OPT = Param(str, "all", "graph optimization level", OPT_LEVELS)


def _ort() -> Any:
    import onnxruntime

    return onnxruntime


def _np_dtype(ort_type: str) -> Any:
    return {
        "tensor(float)": np.float32,
        "tensor(float16)": np.float16,
        "tensor(int8)": np.int8,
        "tensor(uint8)": np.uint8,
        "tensor(int64)": np.int64,
        "tensor(int32)": np.int32,
    }.get(ort_type, np.float32)


class OrtRunner(Runner):
    def __init__(self, session: Any, batch: int, input_shape: tuple[int, ...] | None) -> None:
        self.session = session
        rng = np.random.default_rng(0)
        self.feeds: dict[str, np.ndarray] = {}
        self.input_shapes = []
        for i, inp in enumerate(session.get_inputs()):
            shape = tuple(d if isinstance(d, int) else batch if j == 0 else None for j, d in enumerate(inp.shape))
            if None in shape:
                if input_shape is None or i > 0:
                    raise DeviceError(f"input {inp.name!r} has a dynamic shape {inp.shape}; give the input shape")
                shape = input_shape
            self.input_shapes.append(tuple(int(d) for d in shape))  # type: ignore[arg-type]
            self.feeds[inp.name] = rng.standard_normal(shape).astype(_np_dtype(inp.type))  # type: ignore[arg-type]
        self.outputs = [o.name for o in session.get_outputs()]

    def run(self) -> object:
        return self.session.run(self.outputs, self.feeds)


class _OrtDevice(Device):
    format = "onnx"
    provider: str

    def _session_options(self) -> Any:
        ort = _ort()
        so = ort.SessionOptions()
        level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        so.graph_optimization_level = level[self.options["opt"]]
        so.log_severity_level = 3
        return so

    def load(self, artifact: Any, input_shape: tuple[int, ...] | None = None) -> Runner:
        if not isinstance(artifact, (bytes, bytearray)):
            raise DeviceError(f"{self.kind} runs ONNX files; got {type(artifact).__name__}")
        try:
            session = _ort().InferenceSession(
                bytes(artifact), sess_options=self._session_options(), providers=self._providers()
            )
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise DeviceError(f"{self.kind} cannot load the model: {str(exc).splitlines()[0][:200]}") from None
        return OrtRunner(session, self.batch, input_shape)

    def _providers(self) -> list[Any]:
        return [self.provider]

    def fingerprint(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "runtime": "onnxruntime",
            "runtime_version": _ort().__version__,
            "provider": self.provider,
            "graph_optimization": self.options["opt"],
            "precision": self.precision,
            "batch": self.batch,
            "hwnas_version": __version__,
            **self._hardware(),
        }

    def _hardware(self) -> dict[str, Any]:
        return host_facts()


class OrtCpu(_OrtDevice):
    """ONNX Runtime on the CPU (CPUExecutionProvider)."""

    kind = "ort-cpu"
    summary = "ONNX Runtime, CPU execution provider"
    provider = "CPUExecutionProvider"
    params: ClassVar[dict[str, Param]] = {
        "threads": Param(int, 1, "intra-op threads"),
        "opt": OPT,
        "batch": BATCH,
        "pin": PIN,
        "precision": precision_param(*FORMAT_PRECISIONS["onnx"]),
    }

    @classmethod
    def availability(cls) -> str | None:
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed: pip install onnxruntime"
        return None

    def _session_options(self) -> Any:
        so = super()._session_options()
        so.intra_op_num_threads = self.options["threads"]
        so.inter_op_num_threads = 1
        so.execution_mode = _ort().ExecutionMode.ORT_SEQUENTIAL
        return so

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "threads": self.options["threads"]}


class OrtCuda(_OrtDevice):
    """ONNX Runtime on an NVIDIA GPU (CUDAExecutionProvider, from onnxruntime-gpu)."""

    kind = "ort-cuda"
    summary = "ONNX Runtime, CUDA execution provider (onnxruntime-gpu)"
    provider = "CUDAExecutionProvider"
    positional = "device"
    params: ClassVar[dict[str, Param]] = {
        "device": GPU_INDEX,
        "opt": OPT,
        "batch": BATCH,
    }

    @classmethod
    def availability(cls) -> str | None:
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime-gpu is not installed: pip install onnxruntime-gpu"
        if "CUDAExecutionProvider" not in _ort().get_available_providers():
            return "this onnxruntime has no CUDA provider: pip install onnxruntime-gpu (and a CUDA GPU)"
        return None

    def _providers(self) -> list[Any]:
        return [("CUDAExecutionProvider", {"device_id": self.options["device"]})]

    def _hardware(self) -> dict[str, Any]:
        facts = host_facts()
        try:
            import torch

            facts["gpu"] = torch.cuda.get_device_name(self.options["device"])
        except Exception:
            facts["gpu"] = "unknown"
        return facts
