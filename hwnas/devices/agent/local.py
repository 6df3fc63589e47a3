"""A device agent in a subprocess on this machine (``python -m hwnas.devices.agent serve``), on a free
loopback port, with a fresh token file: for a farm of agents on one host, benchmarks and tests."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any


class LocalAgent:
    """Start with :meth:`start`; ``port`` is the port it chose (or was given); :meth:`stop` ends it,
    :meth:`kill` is kill -9. The token, cache and log live in ``folder``."""

    def __init__(
        self,
        folder: Path,
        *extra: str,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.token_file = folder / "token"
        if not self.token_file.exists():
            self.token_file.write_text(secrets.token_urlsafe(32) + "\n")
            self.token_file.chmod(0o600)
        self.token = self.token_file.read_text().strip()
        self.cache = folder / "models"
        self.extra, self.python, self.env, self.cwd = extra, python, env, cwd
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.log = folder / "agent.log"
        self.scheme = "http"

    def start(self, port: int | None = None) -> LocalAgent:
        cmd = [self.python, "-m", "hwnas.devices.agent", "serve", "--port", str(port if port is not None else self.port),
               "--token-file", str(self.token_file), "--cache-dir", str(self.cache), *self.extra]  # fmt: skip
        env = self.env if self.env is not None else dict(os.environ)
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self.log.open("a"), text=True, cwd=self.cwd, env=env
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (https?)://[^:]+:(\d+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"agent did not start: {line!r} {self.log.read_text()[-2000:]}")
        self.scheme, self.port = m.group(1), int(m.group(2))
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}" if self.scheme == "http" else f"https://127.0.0.1:{self.port}"

    def spec(self, **params: Any) -> str:
        """The ``remote:`` device spec of this agent, with ``params`` (e.g. ``token_file=...``)."""
        items = "".join(f",{k}={v}" for k, v in params.items())
        return f"remote:{self.address}{items}"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
