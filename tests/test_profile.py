from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hwnas.devices import TimingConfig, open_device
from hwnas.latency.profiler import profile
from hwnas.latency.store import LutStore
from hwnas.latency.table import LatencyTable
from hwnas.spaces import get_space

from conftest import FAST_TIMING, ROOT, run_cli

FAST = TimingConfig(warmup_runs=2, warmup_s=0.001, min_runs=5, min_time_s=0.002)
SMALL_SPACE = {
    "name": "small",
    "resolutions": [16],
    "num_classes": 3,
    "stages": [
        {"depth": 1, "stride": 2, "channels": [8], "ops": ["conv_k3_hs"]},
        {"depth": 2, "stride": 2, "channels": [8, 16], "ops": ["ir_k3", "ir_k5_se", "skip"], "expansions": [2]},
    ],
}


def _pairs(path: Path) -> list[tuple[str, int]]:
    """Read-only, so polling never creates the file under the profiler."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT key, round FROM measurements").fetchall()


def test_profile_covers_every_kernel_and_round_and_resumes(tmp_path: Path) -> None:
    device = open_device("ort-cpu:threads=1")
    kernels = get_space("tiny").kernels()
    path = tmp_path / "t.lut"
    with LutStore.create_or_open(path, device.fingerprint(), device.spec) as store:
        report = profile(kernels, device, store, rounds=2, timing=FAST, progress=False)
        assert (report.kernels, report.measured, report.skipped) == (len(kernels), 2 * len(kernels), 0)
        assert report.busy_s > 0 and report.wall_s >= report.busy_s
        again = profile(kernels, device, store, rounds=2, timing=FAST, progress=False)
        assert (again.measured, again.skipped, again.converted) == (0, 2 * len(kernels), 0)
        third = profile(kernels, device, store, rounds=3, timing=FAST, progress=False)
        assert third.measured == len(kernels)  # only round 2 is new
    pairs = _pairs(path)
    assert sorted(pairs) == sorted((k.key, r) for k in kernels for r in range(3))
    table = LatencyTable.load(path)
    assert set(table.df["key"]) == {k.key for k in kernels}
    assert (table.df["rounds"] == 3).all()
    # rounds are timed in different shuffled orders
    with sqlite3.connect(path) as conn:
        orders = [
            [k for (k,) in conn.execute("SELECT key FROM measurements WHERE round = ? ORDER BY measured_at", (r,))]
            for r in range(2)
        ]
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1])


def _profile_cmd(out: Path, space: str = "tiny", rounds: int = 2, min_time_ms: str = "2") -> list[str]:
    timing = list(FAST_TIMING)
    timing[timing.index("--min-time-ms") + 1] = min_time_ms
    return [sys.executable, "-m", "hwnas", "profile", "--space", space, "--device", "ort-cpu:threads=1",
            "--out", str(out), "--rounds", str(rounds), "--no-progress", *timing]  # fmt: skip


def _wait_for_rows(path: Path, proc: subprocess.Popen[bytes], n: int) -> int:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the profile ended before it could be interrupted"
        try:
            rows = len(_pairs(path))
        except sqlite3.Error:
            rows = 0
        if rows >= n:
            return rows
        time.sleep(0.05)
    raise AssertionError("the profile made no progress")


@pytest.mark.tour  # 22 s on the 2-core VM: in the tour, to keep the default suite under 15 minutes
def test_kill_9_halfway_then_resume_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    kernels = {k.key for k in get_space("tiny").kernels()}
    full = tmp_path / "full.lut"
    assert subprocess.run(_profile_cmd(full), cwd=ROOT, capture_output=True, timeout=600).returncode == 0

    path = tmp_path / "killed.lut"
    proc = subprocess.Popen(
        _profile_cmd(path, min_time_ms="20"), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    seen = _wait_for_rows(path, proc, len(kernels) // 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    partial = _pairs(path)
    assert seen <= len(partial) < 2 * len(kernels)  # committed rows survived the kill
    resumed = subprocess.run(
        _profile_cmd(path, min_time_ms="20"), cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"already there {len(partial)}" in resumed.stdout
    pairs = _pairs(path)
    assert len(pairs) == len(set(pairs)) == 2 * len(kernels)  # nothing lost, nothing twice
    assert set(pairs) >= set(partial)
    assert set(pairs) == set(_pairs(full))  # exactly what an uninterrupted run covers
    assert {k for k, _ in pairs} == kernels


def test_ctrl_c_stops_cleanly_and_keeps_measurements(tmp_path: Path) -> None:
    path = tmp_path / "int.lut"
    # A shell that starts this test run in the background makes SIGINT ignored for its children,
    # and Python keeps an inherited SIG_IGN: restore the default so the child gets Ctrl-C.
    proc = subprocess.Popen(
        _profile_cmd(path, min_time_ms="20"), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    _wait_for_rows(path, proc, 10)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "Traceback" not in err and "run the same command again to resume" in err
    rows = len(_pairs(path))
    assert f"{rows} measurements are saved" in err


@pytest.mark.tour  # 20 s on the 2-core VM: in the tour, to keep the default suite under 15 minutes
def test_tflite_profile_of_a_small_space(tmp_path: Path) -> None:
    pytest.importorskip("litert_torch")
    space_file = tmp_path / "small.yaml"
    space_file.write_text(yaml.safe_dump(SMALL_SPACE))
    out = tmp_path / "small.lut"
    proc = run_cli("profile", "--space", str(space_file), "--device", "tflite-cpu:threads=1", "--out", str(out),
                   "--rounds", "2", "--no-progress", *FAST_TIMING)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    table = LatencyTable.load(out)
    assert set(table.df["key"]) == {k.key for k in get_space(str(space_file)).kernels()}
    assert table.fingerprint["kind"] == "tflite-cpu" and table.fingerprint["xnnpack"] is True
    assert (table.df["latency_ms"] > 0).all()


def test_profile_bad_inputs(tmp_path: Path) -> None:
    out = tmp_path / "a.lut"
    proc = run_cli("profile", "--space", "tiny", "--device", "npu", "--out", str(out))
    assert (
        proc.returncode == 2
        and "valid devices: ort-cpu, tflite-cpu, et-cpu, torch-cpu, torch-cuda, ort-cuda" in proc.stderr
    )
    bad_space = tmp_path / "bad.yaml"
    bad_space.write_text(
        "name: x\nresolutions: [32]\nnum_classes: 10\nstages: [{depth: 1, stride: 2, channels: [8], ops: [ir_k9]}]\n"
    )
    proc = run_cli("profile", "--space", str(bad_space), "--device", "ort-cpu", "--out", str(out))
    assert proc.returncode == 2 and "stages[0].ops[0]" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()  # nothing half-written
    (tmp_path / "text.lut").write_text("hello")
    proc = run_cli("profile", "--space", "tiny", "--device", "ort-cpu", "--out", str(tmp_path / "text.lut"))
    assert proc.returncode == 2 and "not a LUT file, or a corrupt one" in proc.stderr
    proc = run_cli("lut", "show", str(tmp_path / "text.lut"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.tour  # 12 s on the 2-core VM: in the tour, to keep the default suite under 15 minutes
def test_another_device_needs_force(tmp_path: Path) -> None:
    space_file = tmp_path / "small.yaml"
    space_file.write_text(yaml.safe_dump(SMALL_SPACE))
    out = tmp_path / "a.lut"
    base = ("profile", "--space", str(space_file), "--out", str(out), "--rounds", "1", "--no-progress", *FAST_TIMING)
    assert run_cli(*base, "--device", "ort-cpu:threads=1").returncode == 0
    proc = run_cli(*base, "--device", "ort-cpu:threads=2")
    assert proc.returncode == 2 and "another device (threads: 1 vs 2)" in proc.stderr and "--force" in proc.stderr
    assert run_cli(*base, "--device", "ort-cpu:threads=2", "--force").returncode == 0


def test_missing_runtime_says_what_to_install(tmp_path: Path) -> None:
    """Hide the runtimes from a real subprocess, as on a machine where they are not installed."""
    code = (
        "import sys, importlib.util\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n.split('.')[0] in ('onnxruntime', 'ai_edge_litert', 'tflite_runtime') else real(n, *a)\n"
        "from hwnas.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    for device, hint in (("ort-cpu", "pip install onnxruntime"), ("tflite-cpu", "pip install 'hwnas[tflite]'")):
        proc = subprocess.run([sys.executable, "-c", code, "profile", "--space", "tiny", "--device", device, "--out", str(tmp_path / "x.lut")],
                              capture_output=True, text=True, cwd=ROOT, timeout=300)  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert hint in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.tour  # 21 s on the 2-core VM: in the tour, to keep the default suite under 15 minutes
def test_lut_show_and_export(tmp_path: Path) -> None:
    out = tmp_path / "t.lut"
    assert (
        run_cli(
            "profile",
            "--space",
            "tiny",
            "--device",
            "ort-cpu",
            "--out",
            str(out),
            "--rounds",
            "1",
            "--no-progress",
            *FAST_TIMING,
        ).returncode
        == 0
    )
    table = LatencyTable.load(out)
    proc = run_cli("lut", "show", str(out), "--top", "3")
    assert proc.returncode == 0
    slowest = table.df.nlargest(3, "latency_ms")["key"].tolist()
    assert all(k in proc.stdout for k in slowest)
    assert f"{len(table.df)} kernels" in proc.stdout
    # a fresh profile stores each round's fastest run, and the LUT counts by it
    assert table.statistic == "min" and "fastest run of each round" in proc.stdout
    assert (table.measurements["min_ms"] <= table.measurements["p10_ms"]).all()
    # the LUT's noise: the median spread across rounds, and the noisiest kernels by name
    assert f"median {table.df['round_spread'].median():.1%}" in proc.stdout
    noisiest = table.df.nlargest(3, "round_spread")["key"].tolist()
    assert "noisiest 3 kernels" in proc.stdout and all(k in proc.stdout for k in noisiest)
    assert f"conditions of {len(table.measurements)} measurements" in proc.stdout
    import pandas as pd

    csv = tmp_path / "t.csv"
    assert run_cli("lut", "export", str(out), "--csv", str(csv)).returncode == 0
    df = pd.read_csv(csv, keep_default_na=False)
    assert df["key"].tolist() == table.df["key"].tolist()
    assert df["latency_ms"].tolist() == pytest.approx(table.df["latency_ms"].tolist())
    pq = tmp_path / "t.parquet"
    assert run_cli("lut", "export", str(out), "--parquet", str(pq), "--raw").returncode == 0
    assert len(pd.read_parquet(pq)) == len(table.measurements)
    proc = run_cli("lut", "export", str(out), "--csv", str(tmp_path / "no" / "dir.csv"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr


@pytest.mark.tour  # 19 s on the 2-core VM: in the tour, to keep the default suite under 15 minutes
def test_bench_a_model_file(tmp_path: Path) -> None:
    from hwnas.latency.kernel_models import onnx_artifacts
    from hwnas.spaces.kernels import Kernel

    model = tmp_path / "m.onnx"
    model.write_bytes(onnx_artifacts([Kernel("conv", 8, 16, 3, 1, 16, 16, "relu")])[0])
    proc = run_cli("bench", str(model), "--device", "ort-cpu:threads=1", "--json", "--rounds", "2", *FAST_TIMING)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["input_shapes"] == [[1, 8, 16, 16]] and len(result["rounds"]) == 2
    assert result["latency_ms"] > 0 and result["fingerprint"]["kind"] == "ort-cpu"
    # a round's latency is its fastest run: below its median, and the latency is their median (of 2: the mean)
    fastest = [r["min_ms"] for r in result["rounds"]]
    assert all(0 < f <= r["p10_ms"] <= r["median_ms"] for f, r in zip(fastest, result["rounds"], strict=True))
    assert result["latency_ms"] == pytest.approx(sum(fastest) / 2)
    assert result["noise_ms"] == pytest.approx(max(abs(fastest[0] - fastest[1]) / 2, 0.01 * result["latency_ms"]))
    assert result["conditions"]["cpus"] == os.cpu_count() and result["verdict"] is None
    # budget verdicts: far above the file's latency is within (0), far below is over (1)
    for budget, code, outcome in ((1000.0, 0, "within budget"), (1e-5, 1, "over budget")):
        proc = run_cli("bench", str(model), "--device", "ort-cpu:threads=1", "--rounds", "3", "--budget-ms",
                       str(budget), *FAST_TIMING)  # fmt: skip
        assert proc.returncode == code, proc.stderr
        assert f"against {budget:g} ms: {outcome} (exit {code})" in proc.stdout
    proc = run_cli("bench", str(model), "--device", "ort-cpu", "--rounds", "0")
    assert proc.returncode == 2 and "must be >= 1" in proc.stderr
    proc = run_cli("bench", str(model), "--device", "tflite-cpu")
    assert proc.returncode == 2 and "runs tflite models, not onnx" in proc.stderr
    truncated = tmp_path / "t.onnx"
    truncated.write_bytes(model.read_bytes()[:200])
    proc = run_cli("bench", str(truncated), "--device", "ort-cpu")
    assert proc.returncode == 2 and "cannot load the model" in proc.stderr and "Traceback" not in proc.stderr
    assert os.path.exists(model)
