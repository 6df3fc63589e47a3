"""The agent's HTTP server (standard library only): tokens, limits, the model store, one job at a time.

Security, in the order a request meets it:

* the listening address is 127.0.0.1 unless ``--host`` says otherwise; TLS when given a certificate;
* at most ``max_connections`` connections at once; each must send its whole request within
  ``client_timeout_s`` (a deadline for the request, not only per read, so a client that trickles
  one byte at a time is cut off too) — measuring afterwards is not counted;
* every request needs ``Authorization: Bearer TOKEN``, compared in constant time, checked before
  any body is read; the token comes from a file or the environment, never the command line;
* a body must declare its length, and a model may not exceed ``max_model_bytes``;
* a model's name is the SHA-256 of its bytes; its magic bytes must be ONNX, TFLite or ExecuTorch and the
  runtime must load it (in the worker) before it is stored;
* a job (a check, a measurement, a fingerprint) runs in the worker process, under a memory cap
  and ``max_run_s``; a crash or a time-out there is an error for that client, and the agent goes on;
* one job at a time, so measurements never overlap; a client that waits too long gets 503 (busy).

Nothing is pickled and no shell runs: answers are JSON, the worker is started from an argument list.
"""

from __future__ import annotations

import hmac
import json
import os
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hwnas import __version__
from hwnas.devices.agent.models import ModelStore, is_model_name, sha256
from hwnas.devices.agent.protocol import API, MAX_JSON_BYTES, SERVED_KINDS
from hwnas.devices.agent.supervisor import JobError, Supervisor
from hwnas.devices.base import DeviceError, TimingConfig, model_format
from hwnas.devices.spec import parse_device

DEFAULT_DEVICE = {"onnx": "ort-cpu:threads=1", "tflite": "tflite-cpu:threads=1", "pte": "et-cpu:threads=1"}


@dataclass
class AgentConfig:
    token: bytes
    host: str = "127.0.0.1"
    port: int = 8765
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "hwnas-agent" / "models")
    max_model_bytes: int = 256 * 2**20
    max_run_s: float = 300.0
    client_timeout_s: float = 30.0
    max_connections: int = 16
    memory_mb: int = 4096
    tls_cert: Path | None = None
    tls_key: Path | None = None


class Refused(Exception):
    """An HTTP error answer: status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class AgentServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.models = ModelStore(config.cache_dir)
        self.worker = Supervisor(config.memory_mb)
        self.job_lock = threading.Lock()
        self.jobs = 0
        self.uploads = 0
        self.started = time.time()
        self._slots = threading.BoundedSemaphore(config.max_connections)
        self.tls: ssl.SSLContext | None = None
        if config.tls_cert is not None:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(config.tls_cert, config.tls_key)
        super().__init__((config.host, config.port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host!s}:{port}"

    # --- connection cap -----------------------------------------------------------------------
    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the cap: closed at once, nothing read
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        print(f"hwnas agent: connection from {client_address[0]} dropped: {exc}", file=sys.stderr)

    def server_close(self) -> None:
        super().server_close()
        self.worker.stop()

    # --- jobs -----------------------------------------------------------------------------------
    def job(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run one job in the worker, after any job in progress (503 when that takes too long)."""
        if not self.job_lock.acquire(timeout=self.config.max_run_s):
            raise Refused(503, "the agent is busy with another job; retry later")
        try:
            self.jobs += 1
            return self.worker.call(request, self.config.max_run_s)
        except JobError as exc:
            raise Refused(422, str(exc)) from None
        finally:
            self.job_lock.release()


def served_device(spec: str) -> Any:
    """The device ``spec`` names, if this agent serves it (a local runtime that loads model bytes)."""
    try:
        device = parse_device(spec)
    except DeviceError as exc:
        raise Refused(400, str(exc)) from None
    if device.kind not in SERVED_KINDS:
        raise Refused(400, f"the agent times on {', '.join(SERVED_KINDS)}, not {device.kind}")
    why = device.availability()
    if why:
        raise Refused(400, f"device {device.kind} is not usable on the agent: {why}")
    return device


class Handler(BaseHTTPRequestHandler):
    server: AgentServer
    protocol_version = "HTTP/1.0"  # one request per connection: each has its own deadline
    server_version = f"hwnas-agent/{__version__}"

    # --- connection: TLS, socket time-out and the request deadline ------------------------------
    def setup(self) -> None:
        cfg = self.server.config
        self._deadline = threading.Timer(cfg.client_timeout_s, self._cut)
        self._deadline.daemon = True
        self._deadline.start()
        self.request.settimeout(cfg.client_timeout_s)  # per read; the timer bounds the whole request
        if self.server.tls is not None:
            self.request = self.server.tls.wrap_socket(self.request, server_side=True)
        super().setup()

    def _cut(self) -> None:
        try:
            self.request.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def finish(self) -> None:
        self._deadline.cancel()
        try:
            super().finish()
        except OSError:
            pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if isinstance(code, int) and code < 400 and self.command != "PUT":
            return  # a profile makes thousands of requests: log uploads and refusals only
        super().log_request(code, size)

    def log_message(self, format: str, *args: Any) -> None:
        print(f"hwnas agent: {self.client_address[0]} {format % args}", file=sys.stderr)

    # --- answers --------------------------------------------------------------------------------
    def _send(self, status: int, body: dict[str, Any] | None, head_only: bool = False) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head_only:
            self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        try:
            self._authorize()
            url = urlsplit(self.path)
            parts = url.path.rstrip("/").split("/")
            if url.path == f"{API}/health" and method == "GET":
                self._request_read()
                self._send(200, self._health())
            elif url.path == f"{API}/fingerprint" and method == "GET":
                self._request_read()
                spec = parse_qs(url.query).get("spec", [""])[0]
                device = served_device(spec)
                self._send(200, self.server.job({"op": "fingerprint", "spec": device.spec}))
            elif url.path.startswith(f"{API}/models/") and len(parts) == 4 and method in ("HEAD", "PUT"):
                name = parts[3]
                if not is_model_name(name):
                    raise Refused(400, "a model's name is the SHA-256 of its bytes (64 lowercase hex digits)")
                if method == "HEAD":
                    self._request_read()
                    found = self.server.models.find(name)
                    self._send(200 if found else 404, None, head_only=True)
                else:
                    self._send(201, self._upload(name))
            elif url.path == f"{API}/measure" and method == "POST":
                self._send(200, self._measure(self._json_body()))
            else:
                raise Refused(404, f"no such endpoint: {method} {url.path}")
        except Refused as exc:
            self.close_connection = True
            self._send(exc.status, {"error": str(exc)}, head_only=method == "HEAD")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # --- request parts --------------------------------------------------------------------------
    def _authorize(self) -> None:
        given = self.headers.get("Authorization", "")
        if not given:
            raise Refused(401, "no token: send 'Authorization: Bearer TOKEN' with the agent's token")
        expected = b"Bearer " + self.server.config.token
        if not hmac.compare_digest(given.encode("utf-8", "replace"), expected):
            time.sleep(0.2)  # slows guessing; constant-time compare above
            raise Refused(401, "wrong token")

    def _request_read(self) -> None:
        """The whole request is in: the deadline no longer applies (a job may take long)."""
        self._deadline.cancel()
        self.request.settimeout(None)

    def _body(self, cap: int, what: str) -> bytes:
        length_text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or length_text is None:
            raise Refused(411, "send the body with a Content-Length")
        try:
            length = int(length_text)
        except ValueError:
            raise Refused(400, "Content-Length is not a number") from None
        if length < 0 or length > cap:
            raise Refused(413, f"{what} of {length} bytes is over the agent's limit of {cap} bytes")
        chunks, left = [], length
        while left:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                raise Refused(400, f"the connection closed {left} bytes before the end of the body")
            chunks.append(chunk)
            left -= len(chunk)
        self._request_read()
        return b"".join(chunks)

    def _json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self._body(MAX_JSON_BYTES, "a request"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise Refused(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise Refused(400, "the body is not a JSON object")
        return body

    # --- endpoints ------------------------------------------------------------------------------
    def _health(self) -> dict[str, Any]:
        from hwnas.devices.conditions import cpu_count

        try:
            load1: float | None = os.getloadavg()[0]
        except (OSError, AttributeError):
            load1 = None
        runtimes = {kind: parse_device(kind).availability() or "ok" for kind in SERVED_KINDS}
        srv = self.server
        return {"status": "ok", "hwnas_version": __version__, "busy": srv.job_lock.locked(), "jobs": srv.jobs, "uploads": srv.uploads,
                "worker_restarts": srv.worker.restarts, "uptime_s": round(time.time() - srv.started, 1),
                "cpus": cpu_count(), "load1": load1, "models": len(srv.models.names()), "runtimes": runtimes}  # fmt: skip

    def _upload(self, name: str) -> dict[str, Any]:
        data = self._body(self.server.config.max_model_bytes, "a model")
        actual = sha256(data)
        if actual != name:
            raise Refused(400, f"the body's SHA-256 is {actual}, not the name it was sent under")
        fmt = model_format(data)
        if fmt is None:
            raise Refused(
                415, "not an ONNX, TFLite or ExecuTorch model (checked by its first bytes); the agent runs only those"
            )
        if self.server.models.find(name):
            return {"sha256": name, "format": fmt, "bytes": len(data), "stored": False}
        staged = self.server.models.stage(data)
        try:
            self.server.job({"op": "check", "spec": DEFAULT_DEVICE[fmt], "path": str(staged)})
            self.server.models.commit(staged, name, fmt)
            self.server.uploads += 1
        finally:
            staged.unlink(missing_ok=True)
        return {"sha256": name, "format": fmt, "bytes": len(data), "stored": True}

    def _measure(self, body: dict[str, Any]) -> dict[str, Any]:
        name, spec, timing = body.get("sha256"), body.get("spec"), body.get("timing", {})
        if not isinstance(name, str) or not is_model_name(name):
            raise Refused(400, "'sha256' must name a model (64 lowercase hex digits)")
        if not isinstance(spec, str):
            raise Refused(400, "'spec' must be a device spec string, e.g. ort-cpu:threads=1")
        device = served_device(spec)
        found = self.server.models.find(name)
        if found is None:
            raise Refused(404, f"unknown model {name}: upload it first (PUT {API}/models/{name})")
        path, fmt = found
        if fmt != device.format:
            raise Refused(400, f"model {name[:12]} is {fmt}; device {device.kind} runs {device.format}")
        return self.server.job({"op": "measure", "spec": device.spec, "path": str(path),
                                "timing": self._timing(timing)})  # fmt: skip

    def _timing(self, given: Any) -> dict[str, Any]:
        if not isinstance(given, dict):
            raise Refused(400, "'timing' must be an object")
        names = {f.name: f.type for f in fields(TimingConfig)}
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise Refused(400, f"unknown timing field(s) {unknown}; fields: {sorted(names)}")
        out: dict[str, Any] = {}
        for key, value in given.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise Refused(400, f"timing field {key!r} must be a non-negative number")
            out[key] = int(value) if names[key] in ("int", int) else float(value)
        cfg = TimingConfig(**out)
        budget = self.server.config.max_run_s / 2
        if cfg.max_time_s + cfg.warmup_s > budget:
            raise Refused(400, f"timing asks for up to {cfg.max_time_s + cfg.warmup_s:.0f} s; this agent allows "
                               f"{budget:.0f} s per measurement")  # fmt: skip
        return out
