"""The device agent and the ``remote`` device, over real HTTP on localhost with agents in subprocesses:
security refusals, content addressing, a crash-proof worker, TLS, and profiling through agents."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from agent_process import AgentProcess

from hwnas.devices import DeviceError, TimingConfig, parse_device
from hwnas.devices.remote import RemoteDevice
from hwnas.latency.kernel_models import kernel_artifacts
from hwnas.spaces import get_space

from conftest import run_cli

DATA = Path(__file__).resolve().parent / "data"
QUICK = TimingConfig(warmup_runs=1, warmup_s=0.0, min_runs=3, min_time_s=0.0, max_time_s=2.0)


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    kernels = sorted(set(get_space("tiny").kernels()))[:3]
    onnx = kernel_artifacts(kernels, "onnx", 1, "fp32")
    return {
        "onnx": onnx[0],
        "onnx2": onnx[1],
        "onnx3": onnx[2],
        "tflite": kernel_artifacts(kernels[:1], "tflite", 1, "fp32")[0],
    }


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory):
    a = AgentProcess(tmp_path_factory.mktemp("agent"), "--max-model-mb", "1", "--client-timeout-s", "2").start()
    yield a
    a.stop()


def _remote(agent: AgentProcess, **params: object) -> RemoteDevice:
    device = parse_device(agent.spec(token_file=agent.token_file, **params))
    assert isinstance(device, RemoteDevice)
    return device


# --- the remote device --------------------------------------------------------------------------
def test_a_remote_measurement_is_the_agents_timing_and_a_held_model_is_not_sent_again(agent, models) -> None:
    device = _remote(agent)
    runner = device.load(models["onnx"])
    assert _held(agent, models["onnx"])
    before = agent.health()
    stats, cond = device.measure_watched(runner, QUICK)
    assert stats.n >= 3 and 0 < stats.p10_ms <= stats.median_ms <= stats.p90_ms
    assert stats.min_ms is not None and 0 < stats.min_ms <= stats.p10_ms  # the fastest run crosses HTTP too
    assert cond.cpus >= 1 and cond.seconds > 0
    assert runner.input_shapes and runner.input_shapes[0][0] == 1
    again = _remote(agent)  # a new client: it asks by hash, and the agent has it
    again.measure(again.load(models["onnx"]), QUICK)
    after = agent.health()
    assert after["uploads"] == before["uploads"]
    assert after["jobs"] == before["jobs"] + 2
    with pytest.raises(DeviceError, match="runs on its agent"):
        runner.run()


def _held(agent: AgentProcess, data: bytes) -> bool:
    return any(n.startswith(hashlib.sha256(data).hexdigest()) for n in agent.stored())


def test_uploading_twice_stores_once(agent, models) -> None:
    first = agent.upload(models["onnx2"])
    second = agent.upload(models["onnx2"])
    assert first[0] == second[0] == 201
    assert second[1]["stored"] is False
    assert [n for n in agent.stored() if n.startswith(hashlib.sha256(models["onnx2"]).hexdigest())]


def test_the_fingerprint_is_the_agents_device(agent) -> None:
    remote = _remote(agent, runtime="tflite-cpu", threads=2, xnnpack=0).fingerprint()
    local = parse_device("tflite-cpu:threads=2,xnnpack=0").fingerprint()
    assert remote == local  # the agent runs on this machine here; elsewhere it is that machine's
    assert remote["kind"] == "tflite-cpu" and remote["threads"] == 2 and remote["xnnpack"] is False


def test_a_tflite_model_times_on_a_tflite_agent_and_formats_must_match(agent, models) -> None:
    device = _remote(agent, runtime="tflite-cpu")
    assert device.format == "tflite"
    assert device.measure(device.load(models["tflite"]), QUICK).median_ms > 0
    with pytest.raises(DeviceError, match="is onnx; device tflite-cpu runs tflite"):
        device.measure(device.load(models["onnx"]), QUICK)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("remote", "needs the agent's address"),
        ("remote:localhost", "is not HOST:PORT"),
        ("remote:ftp://h:1", "is not HOST:PORT"),
        ("remote:h:1,runtime=ort-cpu,xnnpack=0", "xnnpack= does not apply to runtime=ort-cpu"),
        ("remote:h:1,runtime=tflite-cpu,precision=int8", "runtime=tflite-cpu times fp32, fp16 models, not int8"),
        ("remote:h:1,runtime=torch-cpu", "allowed: ort-cpu, tflite-cpu"),
    ],
)
def test_bad_remote_specs_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(DeviceError, match=message):
        parse_device(spec)


def test_the_spec_names_the_agent_and_runtime_but_not_where_the_token_lies(tmp_path) -> None:
    device = parse_device(f"remote:10.0.0.2:8765,runtime=tflite-cpu,threads=4,token_file={tmp_path / 't'}")
    assert device.spec == "remote:10.0.0.2:8765,runtime=tflite-cpu,threads=4,batch=1"
    assert isinstance(device, RemoteDevice) and device.agent_spec == "tflite-cpu:threads=4,batch=1"
    assert parse_device(device.spec).spec == device.spec


def test_a_wrong_token_on_the_client_is_refused_at_once(agent, tmp_path, models) -> None:
    bad = tmp_path / "bad"
    bad.write_text("x" * 40)
    device = parse_device(agent.spec(token_file=bad))
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match="wrong token"):
        device.fingerprint()
    assert time.monotonic() - t0 < 5  # not retried: a refusal is final (0.2 s on the agent's side)


def test_no_token_anywhere_says_how_to_give_one(agent, monkeypatch) -> None:
    monkeypatch.delenv("HWNAS_AGENT_TOKEN", raising=False)
    with pytest.raises(DeviceError, match="HWNAS_AGENT_TOKEN or give token_file"):
        parse_device(agent.spec()).fingerprint()


def test_a_gone_agent_is_retried_then_named(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    (tmp_path / "t").write_text("y" * 32)
    device = parse_device(f"remote:127.0.0.1:{port},retries=2,token_file={tmp_path / 't'}")
    with pytest.raises(DeviceError, match=r"did not answer after 2 tries .*hwnas agent serve"):
        device.fingerprint()


def test_bench_runs_a_model_file_through_an_agent(agent, models, tmp_path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(models["onnx3"])
    proc = run_cli("bench", str(path), "--device", agent.spec(token_file=agent.token_file), "--rounds", "2",
                   "--min-time-ms", "2", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    import json

    result = json.loads(proc.stdout)
    assert result["fingerprint"]["kind"] == "ort-cpu" and len(result["rounds"]) == 2
    assert result["latency_ms"] > 0 and result["conditions"]["cpus"] >= 1


# --- security: each refusal is clear, runs nothing and stores nothing ---------------------------
def test_no_token_and_a_wrong_token_are_refused_before_the_body_is_read(agent, models) -> None:
    jobs = agent.health()["jobs"]
    data = models["onnx3"] + b"\0"  # a model nobody uploaded
    status, answer = agent.upload(data, token=None)
    assert status == 401 and "no token" in answer["error"]
    status, answer = agent.upload(data, token="not-the-token-at-all-really")
    assert status == 401 and answer["error"] == "wrong token"
    status, _ = agent.call("GET", "/v1/health", token=agent.token[:-1])
    assert status == 401
    assert not _held(agent, data) and agent.health()["jobs"] == jobs


def test_the_token_is_checked_before_the_declared_length(agent) -> None:
    """No token and a declared length over the cap: 401, not 413 (the token comes first, so an
    unauthenticated client learns nothing of the limits and the agent reads nothing)."""
    data = b"\x08" + bytes(2 * 2**20)  # 2 MiB, over the agent's 1 MiB cap
    status, answer = agent.upload(data, token=None)
    assert status == 401 and "no token" in answer["error"]
    status, answer = agent.upload(data, token="not-the-token-at-all-really")
    assert status == 401 and answer["error"] == "wrong token"


def test_a_tokenless_upload_is_refused_without_waiting_for_its_body(agent) -> None:
    """The headers of a large PUT (under the cap) without a token, and no body: the answer is 401
    at once, not after the agent has waited for the body until its 2 s request deadline."""
    name = "0" * 64
    head = f"PUT /v1/models/{name} HTTP/1.1\r\nHost: x\r\nContent-Length: {512 * 1024}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", agent.port)) as s:
        s.settimeout(1.5)  # under the 2 s deadline, after which the agent would cut the connection
        t0 = time.monotonic()
        s.sendall(head)
        answer = b""
        try:
            while b"\r\n" not in answer:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            pass
        waited = time.monotonic() - t0
    assert answer.startswith(b"HTTP/1.0 401"), f"no 401 within {waited:.1f} s: {answer[:80]!r}"


def test_an_oversized_body_is_refused_by_its_declared_length(agent) -> None:
    data = b"\x08" + bytes(2 * 2**20)  # 2 MiB, over the agent's 1 MiB cap
    status, answer = agent.upload(data)
    assert status == 413 and "over the agent's limit of 1048576 bytes" in answer["error"]
    assert not _held(agent, data)
    status, answer = agent.call("POST", "/v1/measure", body=b"{" + b" " * 70_000 + b"}")
    assert status == 413
    status, answer = agent.call("PUT", "/v1/models/" + "0" * 64, headers={"Transfer-Encoding": "chunked"})
    assert status == 411


def test_a_body_that_is_not_a_model_is_refused(agent) -> None:
    jobs = agent.health()["jobs"]
    status, answer = agent.upload(b"#!/bin/sh\nrm -rf /\n")
    assert status == 415 and "not an ONNX, TFLite or ExecuTorch model" in answer["error"]
    assert agent.health()["jobs"] == jobs  # refused by its first bytes: the runtime never saw it
    looks_onnx = b"\x08\x07" + b"\xff" * 200  # ONNX's first byte, then garbage: the runtime refuses it
    status, answer = agent.upload(looks_onnx)
    assert status == 422 and "cannot" in answer["error"]
    status, answer = agent.call("PUT", "/v1/models/" + "a" * 64, body=b"\x08\x07abc")
    assert status == 400 and "SHA-256 is" in answer["error"]
    assert not [n for n in agent.stored() if n.startswith((".", hashlib.sha256(looks_onnx).hexdigest()))]


def test_a_model_that_crashes_the_runtime_leaves_the_agent_serving(agent, models) -> None:
    crash = (DATA / "crash_model.tflite").read_bytes()  # made by tests/data/make_crash_model.py
    restarts = agent.health()["worker_restarts"]
    status, answer = agent.upload(crash)
    assert status == 422 and "crashed" in answer["error"] and "SIGSEGV" in answer["error"], answer
    health = agent.health()
    assert health["status"] == "ok" and health["worker_restarts"] == restarts + 1
    assert not _held(agent, crash)
    device = _remote(agent)
    assert device.measure(device.load(models["onnx"]), QUICK).median_ms > 0  # the next job runs


def test_a_slow_loris_client_is_cut_off_and_others_are_served_meanwhile(agent) -> None:
    with socket.create_connection(("127.0.0.1", agent.port)) as s:
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        closed = False
        while time.monotonic() - t0 < 20:
            assert agent.health()["status"] == "ok"  # another client meanwhile
            try:
                s.sendall(b"X")  # one header byte every 0.3 s: each read is fast, the request never ends
                s.settimeout(0.3)
                if s.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
        assert closed, "the agent kept a trickling client for 20 s"
        assert time.monotonic() - t0 < 10  # cut at its 2 s request deadline (plus scheduling)


@pytest.mark.parametrize(
    "path",
    ["/v1/models/../../etc/passwd", "/v1/models/..%2F..%2Fx", "/v1/models/" + "A" * 64, "/v1/models/x.onnx"],
)
def test_a_path_like_model_name_is_refused(agent, path: str) -> None:
    before = agent.stored()
    status, answer = agent.call("PUT", path, body=b"\x08\x07")
    assert status in (400, 404) and answer["error"]
    status, answer = agent.call("POST", "/v1/measure", body=b'{"spec": "ort-cpu", "sha256": "../../etc/passwd"}')
    assert status == 400 and "64 lowercase hex" in answer["error"]
    assert agent.stored() == before
    assert not (agent.cache.parent / "etc").exists()


def test_the_agent_serves_only_local_runtimes_and_bounded_timings(agent, models) -> None:
    name = hashlib.sha256(models["onnx"]).hexdigest()
    agent.upload(models["onnx"])
    for spec, message in [("torch-cpu", "times on ort-cpu, tflite-cpu"), ("remote:1.2.3.4:5", "not remote"),
                          ("nonsense", "unknown device")]:  # fmt: skip
        status, answer = agent.call("POST", "/v1/measure", body=f'{{"spec": "{spec}", "sha256": "{name}"}}'.encode())
        assert status == 400 and message in answer["error"], answer
    body = f'{{"spec": "ort-cpu", "sha256": "{name}", "timing": {{"max_time_s": 1e9}}}}'.encode()
    status, answer = agent.call("POST", "/v1/measure", body=body)
    assert status == 400 and "allows" in answer["error"]
    body = f'{{"spec": "ort-cpu", "sha256": "{name}", "timing": {{"__class__": 1}}}}'.encode()
    assert agent.call("POST", "/v1/measure", body=body)[0] == 400


def test_the_token_is_never_taken_from_the_command_line(tmp_path) -> None:
    a = AgentProcess(tmp_path / "a", "--token", "x" * 32)
    with pytest.raises(RuntimeError, match="did not start"):
        a.start()
    assert "unrecognized arguments: --token" in a.log.read_text()
    short = AgentProcess(tmp_path / "b")
    short.token_file.write_text("short\n")
    with pytest.raises(RuntimeError):
        short.start()
    assert "at least 16" in short.log.read_text()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_tls_with_a_self_signed_certificate(tmp_path, models) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)  # fmt: skip
    a = AgentProcess(tmp_path / "agent", "--tls-cert", str(cert), "--tls-key", str(key)).start()
    try:
        assert a.address.startswith("https://")
        device = parse_device(a.spec(token_file=a.token_file, cafile=cert))
        assert device.measure(device.load(models["onnx"]), QUICK).median_ms > 0
        untrusted = parse_device(a.spec(token_file=a.token_file))
        with pytest.raises(DeviceError, match="TLS failed"):
            untrusted.fingerprint()
    finally:
        a.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "ort-cpu", "--device", "tflite-cpu", "--out", "a.lut"], "one --out per --device"),
        (
            ["--device", "ort-cpu", "--device", "tflite-cpu", "--out", "a.lut", "--out", "b.lut"],
            "would time each other",
        ),
        (["--device", "remote:h:1", "--device", "remote:h:2", "--out", "a.lut", "--out", "a.lut"], "the same LUT"),
    ],
)
def test_farm_arguments_that_cannot_work_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run_cli("profile", "--space", "tiny", *args, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("*.lut"))


def test_jobs_run_one_at_a_time(agent, models) -> None:
    """Two clients at once: the agent's two timings never overlap, so together they take at least the
    sum of their spans on the agent (as the agent measured them), and the agent says it is busy."""
    import threading

    devices = [_remote(agent), _remote(agent)]
    runners = [devices[0].load(models["onnx"]), devices[1].load(models["onnx2"])]
    # max_runs lifted: at the default cap a tiny model's 100,000 runs can end before min_time_s on a quick
    # machine (seen in a CI run: a span under 0.6 s), and this test needs spans of at least 0.6 s
    slow = TimingConfig(warmup_runs=1, warmup_s=0.0, min_runs=3, min_time_s=0.6, max_time_s=2.0, max_runs=10**9)
    spans: list[tuple[float, float, float]] = []

    def run(i: int) -> None:
        t0 = time.monotonic()
        _, cond = devices[i].measure_watched(runners[i], slow)
        spans.append((t0, time.monotonic(), cond.seconds))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    busy = False
    while any(t.is_alive() for t in threads):
        busy = busy or agent.health()["busy"]
        time.sleep(0.05)
    assert len(spans) == 2 and busy
    together = max(s[1] for s in spans) - min(s[0] for s in spans)
    assert all(s[2] >= 0.6 for s in spans)
    assert together >= spans[0][2] + spans[1][2]


def test_the_export_latency_check_measures_through_an_agent(agent, models) -> None:
    """Export's check (rounds, noise, verdict) runs unchanged on a remote device."""
    from hwnas.export.latency_check import measure_file
    from hwnas.latency.verdict import OVER, WITHIN

    device = _remote(agent)
    ms, noise, verdict, _ = measure_file(device, models["onnx3"], (1,), budget_ms=1000.0)
    assert verdict is not None and verdict.outcome == WITHIN and 0 < ms < 1000 and noise >= 0
    assert len(verdict.rounds_ms) >= 3 and verdict.measured_ms == ms
    _, _, verdict, _ = measure_file(device, models["onnx3"], (1,), budget_ms=ms / 100)
    assert verdict is not None and verdict.outcome == OVER
