"""The agent's side of its timing worker (:mod:`hwnas.devices.agent.worker`): start it, send it one
request at a time, wait with a deadline, and start a new one when it crashed or ran too long."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from hwnas.devices.base import DeviceError
from hwnas.devices.isolated import limit_child


class JobError(DeviceError):
    """A job the worker could not do (the message is for the client); the agent itself is fine."""


class Supervisor:
    """One worker process; :meth:`call` is one job. Not thread-safe: the agent holds its job lock."""

    def __init__(self, memory_mb: int) -> None:
        self.memory_mb = memory_mb
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._buffer = b""
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen[bytes]:
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self.restarts += 1
            self._buffer = b""
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hwnas.devices.agent.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                preexec_fn=(lambda: limit_child(self.memory_mb)) if os.name == "posix" else None,
            )  # fmt: skip
        return self.proc

    def call(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send one request and return the answer; a crash, a time-out or an error is a :class:`JobError`."""
        with self._lock:
            proc = self._start()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write((json.dumps(request) + "\n").encode())
                proc.stdin.flush()
            except OSError:
                pass  # it died already: reading says how
            line = self._read_line(proc, time.monotonic() + timeout_s)
            if line is None:
                self.stop()
                raise JobError(f"the runtime did not finish within the agent's run-time cap ({timeout_s:.0f} s); "
                               "the agent stopped it")  # fmt: skip
            if not line:
                code = proc.wait()
                self.stop()
                self.restarts += 1
                name = signal.Signals(-code).name if code < 0 and -code in signal.valid_signals() else f"exit {code}"
                raise JobError(f"the runtime crashed on this model ({name}); the file is damaged or hostile "
                               "(the agent survived and started a new worker)")  # fmt: skip
            answer: dict[str, Any] = json.loads(line)
            if "error" in answer:
                raise JobError(str(answer["error"]))
            return answer

    def _read_line(self, proc: subprocess.Popen[bytes], deadline: float) -> bytes | None:
        """The next answer line; ``b""`` at end of file (the worker died), None past the deadline."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return b""
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    pipe.close()
        self.proc = None
