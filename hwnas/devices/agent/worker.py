"""The agent's timing worker: a child process that loads and times models, one request at a time.

The agent's HTTP side never loads a model itself. A runtime is a large C++ program, and a hostile
or damaged file can crash it; here that ends only this worker, whose address space is capped like
:mod:`hwnas.devices.isolated`'s child, and the agent starts a new one. Requests and answers are
JSON lines (stdin, and a private copy of stdout: anything a runtime prints goes to stderr). The
model is read from the file the agent stored under its SHA-256, never from the request.

Timing is the same code as for a local device (:meth:`Device.measure_watched`): the statistics and
the machine's conditions over the same span. The last loaded model stays loaded, so a re-take of
a disturbed measurement does not load it again.

    python -m hwnas.devices.agent.worker      (started by the agent; not a user command)
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, Any

from hwnas.devices.base import Device, DeviceError, Runner, TimingConfig
from hwnas.devices.spec import parse_device


class _Loaded:
    """The model loaded last: (spec, path) -> device and runner."""

    def __init__(self) -> None:
        self.key: tuple[str, str] | None = None
        self.device: Device | None = None
        self.runner: Runner | None = None

    def get(self, spec: str, path: str) -> tuple[Device, Runner]:
        if self.key != (spec, path) or self.device is None or self.runner is None:
            self.drop()
            device = parse_device(spec)
            with open(path, "rb") as f:
                data = f.read()
            self.runner = device.load(data)
            self.device, self.key = device, (spec, path)
        return self.device, self.runner

    def drop(self) -> None:
        if self.runner is not None:
            self.runner.close()
        self.key = self.device = self.runner = None


def handle(request: dict[str, Any], loaded: _Loaded) -> dict[str, Any]:
    """One request: ``fingerprint``, ``check`` (load and run once) or ``measure``."""
    op = request.get("op")
    if op == "fingerprint":
        return {"fingerprint": parse_device(request["spec"]).fingerprint()}
    if op == "check":
        loaded.drop()
        device, runner = loaded.get(request["spec"], request["path"])
        runner.run()
        loaded.drop()
        return {"format": device.format}
    if op == "measure":
        device, runner = loaded.get(request["spec"], request["path"])
        stats, conditions = device.measure_watched(runner, TimingConfig(**request["timing"]))
        return {"stats": stats.to_dict(), "conditions": conditions.to_dict(),
                "input_shapes": [list(s) for s in runner.input_shapes]}  # fmt: skip
    raise DeviceError(f"unknown worker request {op!r}")


def serve(requests: IO[str], answers: IO[str]) -> None:
    loaded = _Loaded()
    for line in requests:
        try:
            answer = handle(json.loads(line), loaded)
        except DeviceError as exc:
            answer = {"error": str(exc)}
        except MemoryError:
            loaded.drop()
            answer = {"error": "the runtime ran out of the agent's memory cap on this model (damaged or hostile file?)"}
        except Exception as exc:  # the runtimes' own exception types: one line for the client
            loaded.drop()
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            answer = {"error": f"the runtime cannot run this model: {first[:200]}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def main() -> int:
    answers = os.fdopen(os.dup(1), "w")  # the private channel to the agent
    os.dup2(2, 1)  # what runtimes print goes to stderr, never into an answer
    serve(sys.stdin, answers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
