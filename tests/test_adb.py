"""The ``adb`` device and the ``benchmark_model`` output parser, against a stand-in adb.

The samples in tests/data/benchmark_model/ follow the output of benchmark_model releases (the
formats are described in hwnas/devices/benchmark_model.py); the expected numbers below are read
off them by hand. tests/adb_standin.py replays them as a phone would.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import sys
from pathlib import Path

import pytest

from hwnas.devices.adb import AdbDevice, AdbRunner, find_adb
from hwnas.devices.base import DeviceError, TimingConfig
from hwnas.devices.benchmark_model import parse_output

DATA = Path(__file__).resolve().parent / "data" / "benchmark_model"
STANDIN = Path(__file__).resolve().parent / "adb_standin.py"
SERIAL = "emulator-5554"
BINARY = "/data/local/tmp/benchmark_model"
TIMING = TimingConfig(warmup_runs=5, warmup_s=0.03, min_runs=20, min_time_s=0.1, max_time_s=10.0)


def sample(name: str) -> str:
    return (DATA / name).read_text()


def tflite(tag: bytes = b"a") -> bytes:
    """Bytes that pass the TFLite magic check (a FlatBuffer root offset, then ``TFL3``)."""
    return b"\x1c\x00\x00\x00TFL3" + bytes(24) + tag


class FakeAdb:
    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log = root / "adb-calls.jsonl"
        self.phone = root / "phone"
        self.phone.mkdir()
        self.monkeypatch = monkeypatch
        bindir = root / "bin"
        bindir.mkdir()
        launcher = bindir / "adb"
        launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n')
        launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        self.launcher = launcher
        monkeypatch.delenv("HWNAS_ADB", raising=False)
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
        monkeypatch.setenv("HWNAS_FAKE_PHONE", str(self.phone))
        monkeypatch.setenv("HWNAS_FAKE_ADB_LOG", str(self.log))
        self.output("litert_percentiles.txt")

    def output(self, name: str) -> None:
        """The sample the phone's benchmark_model prints from now on."""
        self.monkeypatch.setenv("HWNAS_FAKE_BM_OUTPUT", str(DATA / name))

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def shell_calls(self, first: str) -> list[list[str]]:
        return [c[3:] for c in self.calls() if c[2:3] == ["shell"] and first in c[3:5]]


@pytest.fixture
def adb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeAdb:
    return FakeAdb(tmp_path, monkeypatch)


# --- the parser, sample by sample ---------------------------------------------------------------


def test_oldest_format_average_timings_without_prefix_or_percentiles() -> None:
    out = parse_output(sample("tf2.1_average_timings.txt"))
    s = out.inference
    assert (s.count, s.min_us, s.max_us, s.avg_us, s.std_us, s.first_us) == (55, 1768, 2014, 1816.53, 49, 1811)
    assert (s.p5_us, s.median_us, s.p95_us) == (None, None, None) and not s.has_percentiles
    assert out.warmup is not None and (out.warmup.count, out.warmup.avg_us) == (17, 1874.06)
    assert out.init_us == 1874  # "Init: 1874" of the summary line, in us
    assert out.runtime_version is None and out.unconsumed_flags == ()
    assert out.params["Num threads"] == "2" and out.params["Use nnapi"] == "0"


def test_tf2_format_summary_and_peak_memory() -> None:
    out = parse_output(sample("tf2.8_peak_memory.txt"))
    s = out.inference
    assert (s.count, s.min_us, s.max_us, s.avg_us, s.std_us) == (247, 381, 733, 410.062, 31)
    assert not s.has_percentiles
    assert out.warmup is not None and (out.warmup.count, out.warmup.first_us) == (72, 1203)
    assert (out.init_us, out.model_size_mb) == (3417, 0.041872)
    assert (out.init_mem_mb, out.overall_mem_mb, out.peak_mem_mb) == (2.78125, 3.51562, None)
    assert out.params["Use xnnpack"] == "1" and out.params["#threads used for CPU inference"] == "2"


def test_litert_format_with_info_prefix_and_percentiles() -> None:
    out = parse_output(sample("litert_percentiles.txt"))
    s = out.inference
    assert (s.count, s.min_us, s.max_us, s.avg_us, s.std_us) == (41, 2409, 3062, 2468.37, 103)
    assert (s.p5_us, s.median_us, s.p95_us) == (2414, 2446, 2593) and s.has_percentiles
    assert out.warmup is not None and (out.warmup.count, out.warmup.median_us) == (12, 2487)
    assert out.init_us == 28604
    assert (out.init_mem_mb, out.overall_mem_mb) == (7.10938, 9.26562)  # "Memory footprint delta ..."


def test_slow_model_exponent_notation_and_a_warmup_of_one_run() -> None:
    out = parse_output(sample("litert_slow_model.txt"))
    s = out.inference
    assert s.avg_us == 1243730.0  # printed "avg=1.24373e+06" (6 significant digits)
    assert (s.count, s.min_us, s.median_us, s.max_us, s.std_us) == (3, 1238814, 1241073, 1251306, 5435)
    w = out.warmup
    assert w is not None  # "count=1 curr=1402877 ...": the all-same form, no min/max/avg/std printed
    assert (w.count, w.min_us, w.max_us, w.avg_us, w.std_us, w.first_us) == (1, 1402877, 1402877, 1402877, 0, 1402877)


def test_op_profile_timings_lines_are_not_the_timed_series() -> None:
    out = parse_output(sample("tf2.8_op_profiling.txt"))
    # the profiler's "Timings (microseconds): count=6322 ... avg=147.012" sums op times; the series is wall time
    assert (out.inference.count, out.inference.avg_us, out.inference.max_us) == (6322, 157.601, 402)
    assert out.warmup is not None and out.warmup.count == 3115


def test_all_same_series_with_more_runs_and_crlf_line_ends() -> None:
    text = sample("tf2.8_peak_memory.txt").replace(
        "count=247 first=405 curr=398 min=381 max=733 avg=410.062 std=31", "count=20 curr=400(all same)"
    )
    text = text.replace("Inference (avg): 410.062", "Inference (avg): 400").replace("\n", "\r\n")
    s = parse_output(text).inference
    assert (s.count, s.min_us, s.max_us, s.avg_us, s.std_us) == (20, 400, 400, 400, 0)


def test_unconsumed_flags_and_a_version_line_are_read() -> None:
    text = "WARN: Unconsumed cmdline flags: --use_xnnpack=true --warmup_min_secs=0.03\n"
    text += "INFO: TfLite version: 2.16.1\n" + sample("litert_percentiles.txt")
    out = parse_output(text)
    assert out.unconsumed_flags == ("--use_xnnpack=true", "--warmup_min_secs=0.03")
    assert out.runtime_version == "2.16.1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (sample("litert_missing_model.txt"), "failed: Could not open '/data/local/tmp/hwnas/5d41"),
        (sample("tf2.8_prepare_failed.txt"), "failed: tensorflow/lite/kernels/conv.cc:349 input->dims->size != 4"),
        ("STARTING!\nNum threads: [1]\nFailed to mmap model /data/local/tmp/x.tflite\n", "Failed to mmap model"),
        ("", "printed nothing"),
        ("  \r\n\n", "printed nothing"),
        ("INFO: STARTING!\nINFO: Log parameter values verbosely: [0]\n", "no timed series, no inference timings"),
        ("/system/bin/sh: /data/local/tmp/benchmark_model: inaccessible or not found\n", "inaccessible or not found"),
        (
            'CANNOT LINK EXECUTABLE "/data/local/tmp/benchmark_model": library "libc++_shared.so" not found\n',
            "CANNOT LINK EXECUTABLE",
        ),
    ],
)
def test_error_outputs_are_one_line_device_errors(text: str, message: str) -> None:
    with pytest.raises(DeviceError, match=r"^benchmark_model") as exc:
        parse_output(text)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_a_run_that_failed_after_printing_timings_is_an_error() -> None:
    # an Invoke() error in the timed series: the tool prints the statistics, then fails
    text = (
        sample("litert_percentiles.txt")
        + "ERROR: Node number 3 (CONV_2D) failed to invoke.\nERROR: Benchmarking failed.\n"
    )
    with pytest.raises(DeviceError, match=r"failed: Node number 3 \(CONV_2D\) failed to invoke"):
        parse_output(text)


def test_only_the_warmup_series_or_no_runs_or_a_mismatched_summary_is_an_error() -> None:
    text = sample("tf2.8_peak_memory.txt")
    warm_only = text.split("Running benchmark for at least 20")[0]
    with pytest.raises(DeviceError, match=r"only the warm-up series"):
        parse_output(warm_only)
    with pytest.raises(DeviceError, match=r"count=0"):
        parse_output(text.replace("count=247 first=405 curr=398 min=381 max=733 avg=410.062 std=31", "count=0"))
    with pytest.raises(DeviceError, match=r"inconsistent"):
        parse_output(text.replace("Inference (avg): 410.062", "Inference (avg): 511.5"))


def test_a_harmless_unprefixed_warning_does_not_fail_a_run() -> None:
    text = sample("tf2.8_peak_memory.txt").replace(
        "The input model file size (MB): 0.041872", "Failed to get the input model file size."
    )
    assert parse_output(text).inference.count == 247


# --- the device, end to end through the stand-in adb ---------------------------------------------


def test_availability_names_what_is_missing(adb: FakeAdb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert AdbDevice.availability() is None
    assert find_adb()[0] == str(adb.launcher)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert AdbDevice.availability() == (
        "adb is not on PATH: install Android platform-tools (or set HWNAS_ADB to the adb executable)"
    )
    monkeypatch.setenv("HWNAS_ADB", str(adb.launcher))
    assert AdbDevice.availability() is None
    monkeypatch.setenv("HWNAS_ADB", str(tmp_path / "no-such-adb"))
    assert "is not an executable file" in (AdbDevice.availability() or "")


def test_load_pushes_each_model_once_and_measure_gives_stats_in_ms(adb: FakeAdb) -> None:
    dev = AdbDevice(serial=SERIAL, threads=4)
    a, b = tflite(b"a"), tflite(b"b")
    r1 = dev.load(a)
    r2 = dev.load(a)
    r3 = dev.load(b)
    sha_a, sha_b = hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest()
    assert isinstance(r1, AdbRunner) and r1.remote_path == f"/data/local/tmp/hwnas/{sha_a}.tflite"
    assert r2.remote_path == r1.remote_path and r3.remote_path.endswith(f"/{sha_b}.tflite")  # type: ignore[attr-defined]
    pushes = [c for c in adb.calls() if c[2] == "push"]
    assert [c[4] for c in pushes] == [r1.remote_path, r3.remote_path]  # type: ignore[attr-defined]
    assert [Path(c[3]).name for c in pushes] == [f"{sha_a}.tflite", f"{sha_b}.tflite"]
    assert all(c[:2] == ["-s", SERIAL] for c in adb.calls())
    assert adb.shell_calls("mkdir") == [["mkdir", "-p", "/data/local/tmp/hwnas"]]  # once per device object
    assert (adb.phone / r1.remote_path.lstrip("/")).read_bytes() == a

    assert r1.input_shapes == []
    with pytest.raises(DeviceError, match=r"timed on the phone by benchmark_model; use device.measure"):
        r1.run()

    stats = dev.measure(r1, TIMING)
    assert stats.n == 41 and stats.warmup_n == 12
    assert stats.median_ms == pytest.approx(2.446) and stats.mean_ms == pytest.approx(2.46837)
    assert stats.p10_ms == pytest.approx(2.414) and stats.p90_ms == pytest.approx(2.593)  # the tool's p5 / p95
    assert stats.min_ms == pytest.approx(2.409) and stats.round_ms == stats.min_ms  # the tool's min
    assert stats.std_ms == pytest.approx(0.103)
    assert stats.busy_s == pytest.approx((41 * 2468.37 + 12 * 2711.5) / 1e6)
    [call] = adb.shell_calls(BINARY)
    assert call == [
        BINARY,
        f"--graph={r1.remote_path}",
        "--num_threads=4",
        "--use_xnnpack=true",
        "--use_gpu=false",
        "--warmup_runs=5",
        "--warmup_min_secs=0.03",
        "--num_runs=20",
        "--min_secs=0.1",
        "--max_secs=10",
    ]


def test_without_percentiles_median_is_the_mean_and_the_band_is_min_to_max(adb: FakeAdb) -> None:
    adb.output("tf2.8_peak_memory.txt")
    dev = AdbDevice(serial=SERIAL)
    stats = dev.measure(dev.load(tflite()), TIMING)
    assert (stats.n, stats.warmup_n) == (247, 72)
    assert stats.median_ms == pytest.approx(0.410062) and stats.mean_ms == pytest.approx(0.410062)
    assert stats.p10_ms == pytest.approx(0.381) and stats.p90_ms == pytest.approx(0.733)
    assert stats.min_ms == pytest.approx(0.381)
    assert stats.std_ms == pytest.approx(0.031)


def test_xnnpack_off_and_taskset_mask_come_first(adb: FakeAdb) -> None:
    dev = AdbDevice(serial=SERIAL, threads=2, xnnpack=False, taskset="f0", benchmark_model=BINARY)
    runner = dev.load(tflite())
    dev.measure(runner, TimingConfig(warmup_runs=1, warmup_s=0.5, min_runs=50, min_time_s=1.0, max_time_s=150.0))
    [call] = adb.shell_calls("taskset")
    assert call[:3] == ["taskset", "f0", BINARY]
    assert "--num_threads=2" in call and "--use_xnnpack=false" in call
    assert call[-5:] == ["--warmup_runs=1", "--warmup_min_secs=0.5", "--num_runs=50", "--min_secs=1", "--max_secs=150"]


def test_measure_watched_reads_the_phone_before_and_after(adb: FakeAdb) -> None:
    dev = AdbDevice(serial=SERIAL, threads=4)
    runner = dev.load(tflite())
    stats, cond = dev.measure_watched(runner, TIMING)
    assert stats.n == 41
    cats = adb.shell_calls("cat")
    assert len(cats) == 2 and all(c[1:3] == ["/proc/loadavg", "/proc/stat"] for c in cats)
    # the stand-in's counters: per read, 8 cpus x (50 user + 12 system + 175 idle + 3 steal)
    assert cond.steal == pytest.approx(24 / 1920)
    assert (cond.cpus, cond.load1, cond.governor) == (8, 1.21, "sched_pixel")
    assert cond.others_cores is None and cond.others_slack is None
    assert cond.seconds > 0 and not cond.disturbed(dev.threads)


def test_fingerprint_reads_getprop_and_the_binary(adb: FakeAdb) -> None:
    dev = AdbDevice(serial=SERIAL, threads=2, xnnpack=False, taskset="f0", precision="fp16")
    fp = dev.fingerprint()
    assert fp["kind"] == "adb" and fp["serial"] == SERIAL
    assert (fp["manufacturer"], fp["model"], fp["platform"], fp["soc"], fp["abi"]) == (
        "Google",
        "Pixel 7",
        "gs201",
        "GS201",
        "arm64-v8a",
    )
    assert fp["os"] == "Android 14 (SDK 34)"
    assert fp["runtime"] == "tflite benchmark_model" and fp["benchmark_model"] == BINARY
    assert fp["benchmark_model_sha256"] == hashlib.sha256(b"\x7fELF stand-in benchmark_model").hexdigest()
    assert (fp["threads"], fp["xnnpack"], fp["taskset"], fp["precision"], fp["batch"]) == (2, False, "f0", "fp16", 1)
    assert "hwnas_version" in fp
    assert adb.shell_calls("getprop") == [["getprop"]]  # one call for all properties


def test_a_missing_benchmark_model_binary_names_the_fix(adb: FakeAdb, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_FAKE_BM_MISSING", "1")
    dev = AdbDevice(serial=SERIAL)
    with pytest.raises(DeviceError, match=r"no benchmark_model at /data/local/tmp/benchmark_model .* adb push"):
        dev.fingerprint()
    with pytest.raises(DeviceError, match=r"inaccessible or not found .*phone emulator-5554, exit status 127"):
        dev.measure(dev.load(tflite()), TIMING)


@pytest.mark.parametrize(
    "options",
    [
        {"serial": "emulator-5554;reboot"},
        {"serial": "emulator 5554"},
        {"serial": "$(reboot)"},
        {"serial": "`reboot`"},
        {"serial": SERIAL, "benchmark_model": "/data/local/tmp/bm;rm -rf /sdcard"},
        {"serial": SERIAL, "benchmark_model": "/data/local/tmp/bench mark"},
        {"serial": SERIAL, "benchmark_model": "/data/local/tmp/'bm'"},
        {"serial": SERIAL, "taskset": "f0;reboot"},
    ],
)
def test_shell_metacharacters_are_refused_before_any_adb_call(adb: FakeAdb, options: dict[str, str]) -> None:
    with pytest.raises(DeviceError, match=r"can't pass safely|not a hex CPU mask"):
        AdbDevice(**options)
    assert adb.calls() == []


def test_options_changed_after_construction_are_checked_again(adb: FakeAdb) -> None:
    dev = AdbDevice(serial=SERIAL)
    runner = dev.load(tflite())
    n = len(adb.calls())
    dev.options["benchmark_model"] = "/data/local/tmp/bm&&reboot"
    with pytest.raises(DeviceError, match=r"refusing to send"):
        dev.measure(runner, TIMING)
    dev.options["serial"] = "x|y"
    with pytest.raises(DeviceError, match=r"can't pass safely"):
        dev.fingerprint()
    assert len(adb.calls()) == n


@pytest.mark.parametrize("artifact", [b"\x08\x07\x12\x04onnx" + bytes(40), b"not a model at all", b"", "model.tflite"])
def test_a_non_tflite_artifact_is_refused(adb: FakeAdb, artifact: object) -> None:
    with pytest.raises(DeviceError, match=r"runs .tflite files"):
        AdbDevice(serial=SERIAL).load(artifact)
    assert adb.calls() == []


@pytest.mark.parametrize("old_adb", [False, True])
def test_an_unknown_serial_names_adb_devices(adb: FakeAdb, monkeypatch: pytest.MonkeyPatch, old_adb: bool) -> None:
    if old_adb:
        monkeypatch.setenv("HWNAS_FAKE_ADB_OLD", "1")  # "error: device 'X' not found"
    dev = AdbDevice(serial="R58M12ABCDE")
    with pytest.raises(DeviceError) as exc:
        dev.load(tflite())
    text = str(exc.value)
    assert "R58M12ABCDE" in text and "`adb devices`" in text and "\n" not in text
    with pytest.raises(DeviceError, match=r"adb devices"):
        dev.fingerprint()


@pytest.mark.parametrize(("state", "words"), [("unauthorized", "Allow USB debugging"), ("offline", "is offline")])
def test_an_unauthorized_or_offline_phone_names_the_fix(
    adb: FakeAdb, monkeypatch: pytest.MonkeyPatch, state: str, words: str
) -> None:
    monkeypatch.setenv("HWNAS_FAKE_ADB_STATE", state)
    with pytest.raises(DeviceError, match=words) as exc:
        AdbDevice(serial=SERIAL).fingerprint()
    assert "`adb devices`" in str(exc.value)


def test_a_model_missing_on_the_phone_is_a_device_error(adb: FakeAdb) -> None:
    dev = AdbDevice(serial=SERIAL)
    gone = AdbRunner("/data/local/tmp/hwnas/" + "0" * 64 + ".tflite", "0" * 64)
    with pytest.raises(DeviceError, match=r"failed: Could not open .* exit status 1\)$"):
        dev.measure(gone, TIMING)


def test_a_nonzero_exit_with_timings_is_still_an_error(adb: FakeAdb, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_FAKE_BM_RC", "139")
    dev = AdbDevice(serial=SERIAL)
    with pytest.raises(DeviceError, match=r"exited with 139: INFO: Memory footprint delta"):
        dev.measure(dev.load(tflite()), TIMING)


def test_a_build_that_ignores_num_threads_is_refused(adb: FakeAdb, tmp_path: Path) -> None:
    out = tmp_path / "old.txt"
    out.write_text(
        "Unconsumed cmdline flags: --num_threads=4 --use_xnnpack=false\n" + sample("tf2.1_average_timings.txt")
    )
    adb.monkeypatch.setenv("HWNAS_FAKE_BM_OUTPUT", str(out))
    dev = AdbDevice(serial=SERIAL, threads=4)
    with pytest.raises(DeviceError, match=r"does not know --num_threads"):
        dev.measure(dev.load(tflite()), TIMING)


def test_a_build_without_xnnpack_flag_times_builtin_kernels_when_asked(adb: FakeAdb, tmp_path: Path) -> None:
    out = tmp_path / "old.txt"
    out.write_text(
        "Unconsumed cmdline flags: --use_xnnpack=false --use_gpu=false\n" + sample("tf2.1_average_timings.txt")
    )
    adb.monkeypatch.setenv("HWNAS_FAKE_BM_OUTPUT", str(out))
    runner = AdbDevice(serial=SERIAL).load(tflite())
    stats = AdbDevice(serial=SERIAL, xnnpack=False).measure(runner, TIMING)
    assert stats.n == 55 and math.isclose(stats.mean_ms, 1.81653)
    with pytest.raises(DeviceError, match=r"does not know --use_xnnpack"):
        AdbDevice(serial=SERIAL, xnnpack=True).measure(runner, TIMING)


def test_no_serial_is_a_clear_error(adb: FakeAdb) -> None:
    dev = AdbDevice()
    with pytest.raises(DeviceError, match=r"needs the phone's serial, e.g. adb:emulator-5554"):
        dev.load(tflite())
    assert adb.calls() == []
