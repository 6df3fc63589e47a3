"""PyTorch devices: ``torch-cpu`` and ``torch-cuda`` (timed with CUDA events)."""

from __future__ import annotations

from typing import Any, ClassVar

from hwnas import __version__
from hwnas.devices.base import (
    BATCH,
    GPU_INDEX,
    PIN,
    Device,
    DeviceError,
    Param,
    Runner,
    Stats,
    TimingConfig,
    time_calls,
)
from hwnas.devices.host import host_facts


class TorchRunner(Runner):
    def __init__(self, module: Any, input_shape: tuple[int, ...], device: str) -> None:
        import torch

        self.torch = torch
        self.module = module.eval().to(device)
        self.input_shapes = [input_shape]
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(input_shape, generator=gen).to(device)

    def run(self) -> object:
        with self.torch.inference_mode():
            return self.module(self.x)


class _TorchDevice(Device):
    format = "torch"

    def load(self, artifact: Any, input_shape: tuple[int, ...] | None = None) -> Runner:
        import torch

        if not isinstance(artifact, torch.nn.Module):
            raise DeviceError(
                f"{self.kind} runs PyTorch modules; for an .onnx, .tflite or .pte file use ort-cpu, tflite-cpu or et-cpu"
            )
        if input_shape is None:
            raise DeviceError(f"{self.kind} needs the input shape of the module")
        shape = (self.batch, *input_shape[1:])
        return TorchRunner(artifact, shape, self._torch_device())

    def _torch_device(self) -> str:
        return "cpu"

    def fingerprint(self) -> dict[str, Any]:
        import torch

        return {
            "kind": self.kind,
            "runtime": "torch",
            "runtime_version": torch.__version__,
            "precision": "fp32",
            "batch": self.batch,
            "hwnas_version": __version__,
            **host_facts(),
        }


class TorchCpu(_TorchDevice):
    """PyTorch eager mode on the CPU."""

    kind = "torch-cpu"
    summary = "PyTorch eager mode on the CPU"
    params: ClassVar[dict[str, Param]] = {
        "threads": Param(int, 1, "torch.set_num_threads"),
        "batch": BATCH,
        "pin": PIN,
    }

    @classmethod
    def availability(cls) -> str | None:
        return None

    def measure(self, runner: Runner, timing: TimingConfig | None = None) -> Stats:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.options["threads"])
        try:
            return super().measure(runner, timing)
        finally:
            torch.set_num_threads(before)

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "threads": self.options["threads"]}


class TorchCuda(_TorchDevice):
    """PyTorch eager mode on an NVIDIA GPU; each run is timed with CUDA events."""

    kind = "torch-cuda"
    summary = "PyTorch eager mode on a CUDA GPU, timed with CUDA events"
    positional = "device"
    params: ClassVar[dict[str, Param]] = {
        "device": GPU_INDEX,
        "batch": BATCH,
    }

    @classmethod
    def availability(cls) -> str | None:
        import torch

        if not torch.cuda.is_available():
            return f"no CUDA GPU visible to torch {torch.__version__} (a CPU build, or no GPU here)"
        return None

    def _torch_device(self) -> str:
        return f"cuda:{self.options['device']}"

    def measure(self, runner: Runner, timing: TimingConfig | None = None) -> Stats:
        """Warm up and time like the CPU devices, but each sample is the GPU time between two events."""
        import torch

        cfg = timing or TimingConfig()
        dev = torch.device(self._torch_device())
        samples: list[int] = []
        start_ev = torch.cuda.Event(enable_timing=True)
        end_ev = torch.cuda.Event(enable_timing=True)

        def timed() -> None:
            start_ev.record()
            runner.run()
            end_ev.record()
            end_ev.synchronize()
            samples.append(int(start_ev.elapsed_time(end_ev) * 1e6))

        with torch.cuda.device(dev):
            stats = time_calls(timed, cfg)
        # time_calls measured wall time per call; replace the samples with the GPU event times
        gpu = samples[stats.warmup_n :]
        return Stats.from_samples(gpu, stats.warmup_n, stats.busy_s)

    def fingerprint(self) -> dict[str, Any]:
        import torch

        idx = self.options["device"]
        props = torch.cuda.get_device_properties(idx)
        return {
            **super().fingerprint(),
            "gpu": props.name,
            "gpu_memory_gb": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
            "device_index": idx,
        }
