"""Timing a model file the user handed in, in a child process with bounded memory and time.

A model file is data, but the runtimes that read it are large C++ programs: a few flipped bytes
in a valid ``.tflite`` file made LiteRT allocate until the machine's out-of-memory killer ended
the whole process (seen while fuzzing ``hwnas bench``). So a file from outside is checked by its
magic bytes, then loaded and timed in a child Python process (``python -m
hwnas.devices.isolated``) whose address space is capped (``RLIMIT_AS``, default 4 GiB, or
``HWNAS_SANDBOX_MEMORY_MB``) and whose run time is capped. A crash, a refused allocation or a
time-out there is a one-line :class:`~hwnas.devices.base.DeviceError` here; the caller survives.

The child imports only the devices package (no torch), reads the model from stdin and the
request as JSON from its arguments, and answers JSON on stdout. Timing inside it is the same code
as everywhere else (:meth:`Device.measure`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict
from typing import Any

from hwnas.devices.base import DeviceError, Stats, TimingConfig

DEFAULT_MEMORY_MB = 4096


def limit_child(memory_mb: int) -> None:
    """In a child process before exec: cap its address space at ``memory_mb`` MiB, no core dumps."""
    import resource

    cap = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def measure_isolated(spec: str, data: bytes, timing: TimingConfig, rounds: int, source: str,
                     timeout_s: float | None = None) -> tuple[list[Stats], list[list[int]]]:  # fmt: skip
    """``rounds`` timed series of the model ``data`` on device ``spec``, and its input shapes."""
    memory_mb = int(os.environ.get("HWNAS_SANDBOX_MEMORY_MB", DEFAULT_MEMORY_MB))
    if timeout_s is None:
        timeout_s = 60.0 + rounds * (timing.max_time_s + timing.warmup_s + 5.0)
    request = json.dumps({"spec": spec, "timing": asdict(timing), "rounds": rounds})
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "hwnas.devices.isolated", request], input=data, capture_output=True,
            timeout=timeout_s, preexec_fn=(lambda: limit_child(memory_mb)) if os.name == "posix" else None,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise DeviceError(f"{source}: the runtime did not finish loading and timing it in {timeout_s:.0f} s") from None
    out = proc.stdout.decode("utf-8", "replace").strip().splitlines()
    answer: dict[str, Any] = {}
    if out:
        try:
            answer = json.loads(out[-1])
        except json.JSONDecodeError:
            answer = {}
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else "?"
        raise DeviceError(f"{source}: the runtime crashed on this model ({name}); the file is damaged or hostile")
    if "error" in answer:
        raise DeviceError(f"{source}: {answer['error']}")
    if proc.returncode != 0 or "rounds" not in answer:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        last = err[-1][:160] if err else f"exit code {proc.returncode}"
        raise DeviceError(f"{source}: the runtime failed on this model ({last})")
    stats = [Stats(**r) for r in answer["rounds"]]
    return stats, answer["input_shapes"]


def _child(request_text: str) -> int:
    from hwnas.devices.spec import parse_device

    request = json.loads(request_text)
    data = sys.stdin.buffer.read()
    try:
        device = parse_device(request["spec"])
        runner = device.load(data)
        try:
            stats = [device.measure(runner, TimingConfig(**request["timing"])) for _ in range(int(request["rounds"]))]
        finally:
            runner.close()
        shapes = [list(s) for s in runner.input_shapes]
    except DeviceError as exc:
        print(json.dumps({"error": str(exc)}))
        return 0
    except MemoryError:
        print(json.dumps({"error": "the runtime ran out of its memory cap on this model (damaged or hostile file?)"}))
        return 0
    except Exception as exc:  # the runtime's own exception types; one line for the parent
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        print(json.dumps({"error": f"the runtime cannot run this model: {first[:200]}"}))
        return 0
    print(json.dumps({"rounds": [s.to_dict() for s in stats], "input_shapes": shapes}))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
