"""A device agent (``python -m hwnas.devices.agent serve``) in a subprocess on localhost, for tests."""

from __future__ import annotations

import hashlib
import http.client
import json
import sys
import time
from pathlib import Path
from typing import Any

from hwnas.devices.agent.local import LocalAgent

ROOT = Path(__file__).resolve().parent.parent


class AgentProcess(LocalAgent):
    """:class:`hwnas.devices.agent.local.LocalAgent`, run from the repository root, with raw HTTP
    calls for the security tests."""

    def __init__(self, folder: Path, *extra: str, python: str = sys.executable, env: dict[str, str] | None = None):
        super().__init__(folder, *extra, python=python, env=env, cwd=ROOT)

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
