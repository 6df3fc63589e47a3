"""``remote:HOST:PORT``: a device timed by an agent (``hwnas agent serve``) on another machine.

The spec names the agent and the runtime on it, e.g. ``remote:192.168.1.20:8765,runtime=tflite-cpu,
threads=4`` or ``remote:https://pi.local:8765,cafile=pi.pem``. The token comes from
``token_file=PATH`` or ``$HWNAS_AGENT_TOKEN``. Everything that takes a device (``hwnas profile``,
``lut validate``, ``bench``, export's latency check) works through it unchanged: ``load`` uploads
the model once (content-addressed: the agent is asked by SHA-256 first), ``measure_watched``
asks the agent to time it and returns the agent's statistics and the agent's machine conditions,
and ``fingerprint`` is the agent's device, so a LUT describes the device, not this client.

Connection failures and a busy agent (503) are retried with exponential backoff; a refusal
(4xx) is a one-line :class:`DeviceError` at once.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import ssl
import time
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from hwnas.core.formats import FLOATS, FORMAT_PRECISIONS, PRECISIONS
from hwnas.devices.agent.protocol import API, SERVED_KINDS, TOKEN_ENV
from hwnas.devices.base import (
    BATCH,
    PIN,
    Device,
    DeviceError,
    Param,
    Runner,
    Stats,
    TimingConfig,
    _fmt,
    precision_param,
)
from hwnas.devices.conditions import Conditions
from hwnas.devices.onnxruntime import OPT_LEVELS

RUNTIME_PARAMS = {"ort-cpu": ("threads", "opt", "batch", "pin", "precision"),
                  "tflite-cpu": ("threads", "xnnpack", "batch", "pin", "precision"),
                  "et-cpu": ("threads", "batch", "pin", "precision")}  # fmt: skip
RUNTIME_FORMAT = {"ort-cpu": "onnx", "tflite-cpu": "tflite", "et-cpu": "pte"}
RUNTIME_PRECISIONS = {"ort-cpu": FORMAT_PRECISIONS["onnx"], "tflite-cpu": FLOATS,
                      "et-cpu": FORMAT_PRECISIONS["pte"]}  # fmt: skip
RETRY_STATUSES = {502, 503, 504}


class RemoteRunner(Runner):
    """A model held by the agent; it runs there, so ``run()`` here is an error."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self.data = data
        self.input_shapes = []

    def run(self) -> object:
        raise DeviceError("a remote model runs on its agent; time it with device.measure()")


class RemoteDevice(Device):
    """A runtime on a machine that runs ``hwnas agent serve``."""

    kind = "remote"
    format = "onnx|tflite|pte"  # the instance's runtime= decides
    summary = "a device agent on another machine (hwnas agent serve), over HTTP(S)"
    positional = "address"
    runs_here = False
    params: ClassVar[dict[str, Param]] = {
        "address": Param(str, None, "HOST:PORT or https://HOST:PORT of the agent"),
        "runtime": Param(str, "ort-cpu", "the device on the agent", choices=SERVED_KINDS),
        "threads": Param(int, 1, "runtime threads on the agent"),
        "opt": Param(str, None, "ONNX Runtime graph optimization level (runtime=ort-cpu)", OPT_LEVELS),
        "xnnpack": Param(bool, None, "XNNPACK delegate on or off (runtime=tflite-cpu)"),
        "batch": BATCH,
        "pin": PIN,
        "precision": precision_param(*PRECISIONS),
        "token_file": Param(str, None, f"file holding the agent's token (else ${TOKEN_ENV})"),
        "cafile": Param(str, None, "CA certificate that signed an https agent's certificate"),
        "retries": Param(int, 5, "tries of a request before the agent counts as gone"),
    }
    backoff_s = 0.5  # first wait between tries; doubles each time

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        runtime = self.options["runtime"]
        if not self.options["address"]:
            raise DeviceError("device remote needs the agent's address, e.g. remote:192.168.1.20:8765")
        for name in ("opt", "xnnpack"):
            if self.options[name] is not None and name not in RUNTIME_PARAMS[runtime]:
                raise DeviceError(f"device remote: {name}= does not apply to runtime={runtime}")
        if self.precision not in RUNTIME_PRECISIONS[runtime]:
            raise DeviceError(f"device remote: runtime={runtime} times {', '.join(RUNTIME_PRECISIONS[runtime])} "
                              f"models, not {self.precision}")  # fmt: skip
        self.format = RUNTIME_FORMAT[runtime]  # type: ignore[misc]
        url = urlsplit(self.options["address"] if "//" in self.options["address"] else "//" + self.options["address"])
        if url.scheme not in ("", "http", "https") or not url.hostname or url.port is None:
            raise DeviceError(f"device remote: address {self.options['address']!r} is not HOST:PORT or "
                              "https://HOST:PORT")  # fmt: skip
        self.https = url.scheme == "https"
        self.host, self.port = url.hostname, url.port
        self._token: bytes | None = None
        self._known: set[str] = set()
        self._fingerprint: dict[str, Any] | None = None

    @property
    def spec(self) -> str:
        """The canonical spec, without where the token or CA file lie (not part of what the device is)."""
        items = ",".join(f"{k}={_fmt(v)}" for k, v in self.options.items()
                         if v is not None and k not in ("address", "token_file", "cafile", "retries")
                         and not (k == "precision" and v == "fp32"))  # fmt: skip
        return f"remote:{self.options['address']}" + (f",{items}" if items else "")

    @property
    def agent_spec(self) -> str:
        """The device spec the agent times on."""
        runtime = self.options["runtime"]
        items = []
        for name in RUNTIME_PARAMS[runtime]:
            value = self.options[name]
            if value is None or (name == "precision" and value == "fp32"):
                continue
            items.append(f"{name}={_fmt(value)}")
        return runtime + (":" + ",".join(items) if items else "")

    @classmethod
    def availability(cls) -> str | None:
        return None  # the agent is asked when first used; an unreachable one is a DeviceError then

    # --- the wire -----------------------------------------------------------------------------
    def _token_bytes(self) -> bytes:
        if self._token is None:
            path = self.options["token_file"]
            if path:
                try:
                    text = Path(path).read_text().strip()
                except OSError as exc:
                    raise DeviceError(f"device remote: token_file={path}: {exc.strerror}") from None
            else:
                text = os.environ.get(TOKEN_ENV, "").strip()
                if not text:
                    raise DeviceError(f"device remote: no token for the agent at {self.options['address']}: set "
                                      f"{TOKEN_ENV} or give token_file=PATH (the agent's token file)")  # fmt: skip
            self._token = text.encode()
        return self._token

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.https:
            context = ssl.create_default_context(cafile=self.options["cafile"])
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None, timeout: float = 60.0,
                missing_ok: bool = False) -> tuple[int, dict[str, Any]]:  # fmt: skip
        """One request, retried with backoff on connection failures and 502/503/504."""
        headers = {"Authorization": "Bearer " + self._token_bytes().decode()}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        where = f"agent {self.options['address']}"
        last = ""
        for attempt in range(self.options["retries"]):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            conn = self._connection(timeout)
            try:
                try:
                    conn.request(method, path, body=body, headers=headers)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the agent refused before reading the body: its answer says why
                response = conn.getresponse()
                status, raw = response.status, response.read()
            except ssl.SSLError as exc:
                raise DeviceError(f"{where}: TLS failed ({exc.reason}); give cafile= for a self-signed "
                                  "certificate") from None  # fmt: skip
            except (OSError, http.client.HTTPException) as exc:
                last = str(exc) or type(exc).__name__
                continue
            finally:
                conn.close()
            answer = _json(raw)
            if status in RETRY_STATUSES:
                last = answer.get("error", f"HTTP {status}")
                continue
            if status == 404 and missing_ok:
                return status, answer
            if status >= 400:
                raise DeviceError(f"{where}: {answer.get('error', f'HTTP {status}')}")
            return status, answer
        raise DeviceError(f"{where} did not answer after {self.options['retries']} tries ({last}); is "
                          "'hwnas agent serve' running there?")  # fmt: skip

    # --- the device interface -----------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        if self._fingerprint is None:
            _, answer = self.request("GET", f"{API}/fingerprint?spec={quote(self.agent_spec)}")
            self._fingerprint = dict(answer["fingerprint"])
        return dict(self._fingerprint)

    def _upload(self, name: str, data: bytes) -> None:
        status, _ = self.request("HEAD", f"{API}/models/{name}", missing_ok=True)
        if status == 404:
            self.request("PUT", f"{API}/models/{name}", body=data, timeout=300.0)
        self._known.add(name)

    def load(self, artifact: Any, input_shape: tuple[int, ...] | None = None) -> Runner:
        if not isinstance(artifact, (bytes, bytearray)):
            raise DeviceError(f"{self.kind} runs {self.format} files; got {type(artifact).__name__}")
        data = bytes(artifact)
        name = hashlib.sha256(data).hexdigest()
        if name not in self._known:
            self._upload(name, data)
        return RemoteRunner(name, data)

    def measure(self, runner: Runner, timing: TimingConfig | None = None) -> Stats:
        return self.measure_watched(runner, timing)[0]

    def measure_watched(self, runner: Runner, timing: TimingConfig | None = None) -> tuple[Stats, Conditions]:
        if not isinstance(runner, RemoteRunner):
            raise DeviceError("a remote device times models it loaded itself")
        cfg = timing or TimingConfig()
        body = json.dumps({"spec": self.agent_spec, "sha256": runner.name, "timing": cfg.__dict__}).encode()
        timeout = 120.0 + 4 * (cfg.warmup_s + cfg.max_time_s)
        status, answer = self.request("POST", f"{API}/measure", body=body, timeout=timeout, missing_ok=True)
        if status == 404:  # the agent lost it (another cache folder, or cleaned): send it again
            self._known.discard(runner.name)
            self._upload(runner.name, runner.data)
            _, answer = self.request("POST", f"{API}/measure", body=body, timeout=timeout)
        runner.input_shapes = [tuple(s) for s in answer.get("input_shapes", [])]
        return Stats.from_dict(answer["stats"]), Conditions(**answer["conditions"])

    def health(self) -> dict[str, Any]:
        return self.request("GET", f"{API}/health")[1]


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"error": "the agent's answer is not JSON"}
    return value if isinstance(value, dict) else {"error": "the agent's answer is not a JSON object"}
