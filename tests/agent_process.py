"""A device agent (``python -m hwnas.devices.agent serve``) in a subprocess on localhost, for tests."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class AgentProcess:
    """Start with :meth:`start`; ``port`` is the port it chose (or was given); :meth:`kill` is kill -9."""

    def __init__(self, folder: Path, *extra: str, python: str = sys.executable, env: dict[str, str] | None = None):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.token_file = folder / "token"
        if not self.token_file.exists():
            self.token_file.write_text(secrets.token_urlsafe(32) + "\n")
            self.token_file.chmod(0o600)
        self.token = self.token_file.read_text().strip()
        self.cache = folder / "models"
        self.extra = extra
        self.python = python
        self.env = env
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.log = folder / "agent.log"
        self.scheme = "http"

    def start(self, port: int | None = None) -> AgentProcess:
        cmd = [self.python, "-m", "hwnas.devices.agent", "serve", "--port", str(port if port is not None else self.port),
               "--token-file", str(self.token_file), "--cache-dir", str(self.cache), *self.extra]  # fmt: skip
        env = self.env if self.env is not None else dict(os.environ)
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self.log.open("a"), text=True, cwd=ROOT, env=env
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

    # --- raw HTTP, for the security tests -----------------------------------------------------
    def call(self, method: str, path: str, body: bytes | None = None, token: str | None = "",
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:  # fmt: skip
        """One request; ``token=""`` sends the agent's token, ``None`` none."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + (token or self.token)
        try:
            try:
                conn.request(method, path, body=body, headers=h)
            except (BrokenPipeError, ConnectionResetError):
                pass
            r = conn.getresponse()
            raw = r.read()
            return r.status, (json.loads(raw) if raw else {})
        finally:
            conn.close()

    def health(self) -> dict[str, Any]:
        status, answer = self.call("GET", "/v1/health")
        assert status == 200, answer
        return answer

    def upload(self, data: bytes, token: str | None = "") -> tuple[int, dict[str, Any]]:
        return self.call("PUT", f"/v1/models/{hashlib.sha256(data).hexdigest()}", body=data, token=token)

    def stored(self) -> list[str]:
        return sorted(p.name for p in self.cache.iterdir()) if self.cache.exists() else []


def wait_for(predicate: Any, timeout_s: float = 120.0, every_s: float = 0.1) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every_s)
    return False
