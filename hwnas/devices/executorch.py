"""ExecuTorch on the CPU: ``.pte`` programs run by ``executorch.runtime`` (XNNPACK delegate inside).

The one place a program is opened: :func:`open_method` loads bytes with the runtime's internal
consistency check, so a truncated or random file is refused with a one-line error instead of
being run.
"""

from __future__ import annotations

import weakref
from typing import Any, ClassVar

import numpy as np

from hwnas import __version__
from hwnas.core.extras import missing, require, version
from hwnas.core.formats import FORMAT_PRECISIONS, PTE_IDENTIFIER
from hwnas.core.quiet import quiet
from hwnas.devices.base import BATCH, PIN, Device, DeviceError, Param, Runner, precision_param
from hwnas.devices.host import host_facts

_LIVE: weakref.WeakSet[EtRunner] = weakref.WeakSet()  # runners whose program may still be open
# ExecuTorch's ScalarType codes (c10's numbering) -> torch dtype names, for a program's inputs
_SCALAR_TYPES = {0: "uint8", 1: "int8", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 11: "bool"}


def _runtime() -> Any:
    require("pte", "ExecuTorch (.pte)")
    with quiet():  # torchao's optional kernels and cpuinfo log to stderr on import and first use
        from executorch.runtime import Runtime

        return Runtime.get()


def open_method(data: bytes, name: str = "forward") -> tuple[Any, Any]:
    """The ``.pte`` program ``data`` and its ``name`` method, ready to execute. Keep the program
    while the method runs: a method does not keep its program (and its bytes) alive, and running
    one whose program was freed crashed the process."""
    runtime = _runtime()
    from executorch.runtime import Verification

    if bytes(data[4:8]) != PTE_IDENTIFIER:
        raise DeviceError(f"not an ExecuTorch program (no {PTE_IDENTIFIER.decode()} identifier); "
                          "give a .pte file written by ExecuTorch")  # fmt: skip
    try:
        with quiet():
            program = runtime.load_program(bytes(data), verification=Verification.InternalConsistency)
            return program, program.load_method(name)
    except (RuntimeError, ValueError) as exc:
        why = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise DeviceError(f"ExecuTorch cannot load the program ({why}); "
                          "the .pte file is damaged or truncated: export it again") from None  # fmt: skip


def run_pte(data: bytes, x: np.ndarray) -> np.ndarray:
    """The outputs of the ``.pte`` program ``data`` for the NCHW float batch ``x``, one image at a time."""
    import torch

    program, method = open_method(data)
    rows = []
    with quiet():
        for i in range(len(x)):
            rows.append(method.execute([torch.from_numpy(np.ascontiguousarray(x[i : i + 1]))])[0].numpy().copy())
    del method, program
    return np.concatenate(rows)


class EtRunner(Runner):
    """A program's ``forward`` with random inputs of the shapes the program declares."""

    def __init__(self, program: Any, method: Any) -> None:
        import torch

        meta = method.metadata
        gen = torch.Generator().manual_seed(0)
        self.inputs = []
        for i in range(meta.num_inputs()):
            info = meta.input_tensor_meta(i)
            dtype = getattr(torch, _SCALAR_TYPES.get(int(info.dtype()), "float32"))
            x = torch.randn(tuple(info.sizes()), generator=gen)
            self.inputs.append(x.to(dtype) if dtype.is_floating_point else x.mul(8).clamp(-8, 8).to(dtype))
        self.input_shapes = [tuple(int(d) for d in x.shape) for x in self.inputs]
        self.program, self.method = program, method  # the method needs its program alive

    def run(self) -> object:
        if self.method is None:
            raise DeviceError("et-cpu: this program was closed")
        return self.method.execute(self.inputs)

    def close(self) -> None:
        self.method = self.program = None


class EtCpu(Device):
    """ExecuTorch's runtime on the CPU, the XNNPACK delegate running what the program delegates."""

    kind = "et-cpu"
    format = "pte"
    summary = "ExecuTorch runtime on the CPU, XNNPACK delegate (pip install 'hwnas[executorch]')"
    params: ClassVar[dict[str, Param]] = {
        "threads": Param(int, 1, "XNNPACK threadpool threads"),
        "batch": BATCH,
        "pin": PIN,
        "precision": precision_param(*FORMAT_PRECISIONS["pte"]),
    }

    @classmethod
    def availability(cls) -> str | None:
        extra = missing("pte")
        return None if extra is None else f"executorch is not installed: pip install 'hwnas[{extra}]'"

    def load(self, artifact: Any, input_shape: tuple[int, ...] | None = None) -> Runner:
        if not isinstance(artifact, (bytes, bytearray)):
            raise DeviceError(f"{self.kind} runs .pte files; got {type(artifact).__name__}")
        _set_threads(self.options["threads"])  # before loading: a delegate keeps the pool it was loaded with
        runner = EtRunner(*open_method(bytes(artifact)))
        _LIVE.add(runner)
        return runner

    def fingerprint(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "runtime": "executorch",
            "runtime_version": version("executorch"),
            "delegate": "xnnpack",
            "threads": self.options["threads"],
            "precision": self.precision,
            "batch": self.batch,
            "hwnas_version": __version__,
            **host_facts(),
        }


def _set_threads(n: int) -> None:
    """Size ExecuTorch's process-wide threadpool (XNNPACK's threads) to ``n``. Programs loaded
    before keep a pointer to the old pool (resetting under them crashed the process), so a
    different size while any is still open is refused."""
    _runtime()
    from executorch.extension.pybindings import portable_lib

    with quiet():  # cpuinfo logs to stderr when the pool is first sized
        current = portable_lib._threadpool_get_thread_count()
    if current == n:
        return
    if any(r.method is not None for r in _LIVE):
        raise DeviceError(f"et-cpu: ExecuTorch's threadpool is process-wide and has {current} thread(s) while "
                          f"programs are open; close them before timing with threads={n}")  # fmt: skip
    with quiet():  # "[threadpool.cpp] Resetting threadpool to N threads." on stderr
        portable_lib._unsafe_reset_threadpool(n)
