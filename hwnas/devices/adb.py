"""An Android phone over adb: ``adb:SERIAL``, timed by TFLite's native ``benchmark_model``.

Nothing of Python runs on the phone. :meth:`AdbDevice.load` pushes the ``.tflite`` file to
``/data/local/tmp/hwnas/<sha256>.tflite`` (once per file and device object); :meth:`AdbDevice.measure`
runs ``benchmark_model`` there (the binary is the user's: push it to the phone first, see
``benchmark_model``) and reads its summary (:mod:`hwnas.devices.benchmark_model`).

``adb`` is found on PATH or named by ``HWNAS_ADB``. It is always run with an argument list, never
through a local shell. ``adb shell`` joins its arguments into one command line for the phone's
shell, so every argument sent that way must match a strict set of characters (letters, digits and
``_./=+:,-``); anything else (a space, ``;``, ``$``, a quote or a backtick) is refused before adb
runs. Nothing needs root.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from hwnas import __version__
from hwnas.core.formats import PRECISIONS
from hwnas.devices.base import (
    BATCH,
    Device,
    DeviceError,
    Param,
    Runner,
    Stats,
    TimingConfig,
    model_format,
    precision_param,
)
from hwnas.devices.benchmark_model import BenchmarkOutput, parse_output
from hwnas.devices.conditions import Conditions

REMOTE_DIR = "/data/local/tmp/hwnas"
DEFAULT_BINARY = "/data/local/tmp/benchmark_model"
SAFE = re.compile(r"^[A-Za-z0-9_./=+:,-]+$")
MASK = re.compile(r"^(0x)?[0-9a-fA-F]{1,16}$")
SHELL_TIMEOUT_S = 30.0
_GOVERNOR = "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"
_PROPS = {
    "manufacturer": "ro.product.manufacturer",
    "model": "ro.product.model",
    "platform": "ro.board.platform",
    "soc": "ro.soc.model",  # Android 12+
    "abi": "ro.product.cpu.abi",
}
_PROP_LINE = re.compile(r"^\[([^\]]+)\]: \[(.*)\]$")
_LOADAVG = re.compile(r"^(\d+\.\d+) \d+\.\d+ \d+\.\d+ \d+/\d+ \d+$")


def find_adb() -> tuple[str | None, str | None]:
    """The adb executable (``HWNAS_ADB``, else ``adb`` on PATH), or None and why not."""
    named = os.environ.get("HWNAS_ADB")
    if named:
        if os.path.isfile(named) and os.access(named, os.X_OK):
            return named, None
        return None, f"HWNAS_ADB={named} is not an executable file"
    found = shutil.which("adb")
    if found is None:
        return None, "adb is not on PATH: install Android platform-tools (or set HWNAS_ADB to the adb executable)"
    return found, None


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _last_line(*texts: str) -> str:
    lines = [ln.strip() for t in texts for ln in t.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "(no output)"


def _seconds(x: float) -> str:
    """A float flag value in plain decimals (no exponent), e.g. 0.03 -> '0.03'."""
    return f"{x:.6f}".rstrip("0").rstrip(".") or "0"


class AdbRunner(Runner):
    """A model pushed to the phone; it is timed there by ``benchmark_model``, not run from here."""

    def __init__(self, remote_path: str, sha256: str) -> None:
        self.remote_path = remote_path
        self.sha256 = sha256
        self.input_shapes = []  # benchmark_model uses the file's own input shapes; not read here

    def run(self) -> object:
        raise DeviceError("an adb model is timed on the phone by benchmark_model; use device.measure")


@dataclass(frozen=True)
class _PhoneSnapshot:
    wall: float
    load1: float | None
    busy: int | None  # all CPUs, jiffies (user nice system irq softirq steal)
    steal: int | None
    total: int | None
    cpus: int | None
    governor: str | None


class AdbDevice(Device):
    """An Android phone over adb, models timed on it by TFLite's ``benchmark_model``.

    ``batch`` and ``precision`` name the artifacts this device times (as exported); the tool runs
    each file with its own input shapes and types. ``taskset`` is a hex CPU mask (``f0``: the
    big cores of many phones) for toybox ``taskset``; without it the phone's scheduler decides.
    """

    kind = "adb"
    format = "tflite"
    summary = "Android phone over adb, timed by TFLite's benchmark_model on the phone"
    positional = "serial"
    runs_here = False
    params: ClassVar[dict[str, Param]] = {
        "serial": Param(str, None, "the phone's adb serial (see adb devices)"),
        "benchmark_model": Param(str, DEFAULT_BINARY, "path of the benchmark_model binary on the phone"),
        "threads": Param(int, 1, "benchmark_model --num_threads"),
        "xnnpack": Param(bool, True, "use the XNNPACK delegate (0: builtin kernels)"),
        "taskset": Param(str, None, "hex CPU mask to run benchmark_model on, e.g. f0 (default: no pinning)"),
        "batch": BATCH,
        "precision": precision_param(*PRECISIONS),
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        for name in ("serial", "benchmark_model"):
            value = self.options[name]
            if value is not None and not SAFE.match(str(value)):
                raise DeviceError(f"device adb: {name}={value!r} has characters adb shell can't pass safely; "
                                  "allowed: letters, digits and _./=+:,-")  # fmt: skip
        mask = self.options["taskset"]
        if mask is not None and not MASK.match(str(mask)):
            raise DeviceError(f"device adb: taskset={mask!r} is not a hex CPU mask such as f0")
        self._pushed: set[str] = set()
        self._dir_made = False
        self._cpus: int | None = None

    # --- adb ------------------------------------------------------------------------------
    @classmethod
    def availability(cls) -> str | None:
        return find_adb()[1]

    @property
    def serial(self) -> str:
        serial = self.options["serial"]
        if not serial:
            raise DeviceError(
                "device adb needs the phone's serial, e.g. adb:emulator-5554 (list them with adb devices)"
            )
        return str(serial)

    def _adb(self, args: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
        """``adb -s SERIAL ARGS``; a phone that is not there, not authorized or offline is a DeviceError."""
        adb, why = find_adb()
        if adb is None:
            raise DeviceError(f"device adb is not usable here: {why}")
        serial = self.serial
        if not SAFE.match(serial):  # checked at construction; options may have been changed since
            raise DeviceError(f"device adb: serial={serial!r} has characters adb shell can't pass safely")
        try:
            proc = subprocess.run([adb, "-s", serial, *args], capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"adb {args[0]} on {serial} timed out after {timeout:.0f} s") from None
        except OSError as exc:
            raise DeviceError(f"cannot run {adb}: {exc.strerror or exc}") from None
        _check_phone(serial, _text(proc.stderr))
        return proc

    def _shell(self, args: list[str], timeout: float = SHELL_TIMEOUT_S) -> subprocess.CompletedProcess[bytes]:
        """``adb shell ARGS``, every argument checked against :data:`SAFE` first."""
        for arg in args:
            if not SAFE.match(arg):
                raise DeviceError(f"refusing to send {arg!r} through adb shell: only letters, digits and _./=+:,-")
        return self._adb(["shell", *args], timeout)

    # --- loading ----------------------------------------------------------------------------
    def load(self, artifact: Any, input_shape: tuple[int, ...] | None = None) -> Runner:
        """Push the ``.tflite`` bytes to the phone (once per file); ``input_shape`` is not used:
        benchmark_model runs the file with its own input shapes."""
        if not isinstance(artifact, (bytes, bytearray)):
            raise DeviceError(f"{self.kind} runs .tflite files; got {type(artifact).__name__}")
        data = bytes(artifact)
        if model_format(data) != "tflite":
            raise DeviceError(f"{self.kind} runs .tflite files; these {len(data)} bytes are not one (no TFL3 magic)")
        sha = hashlib.sha256(data).hexdigest()
        remote = f"{REMOTE_DIR}/{sha}.tflite"
        if sha not in self._pushed:
            if not self._dir_made:
                proc = self._shell(["mkdir", "-p", REMOTE_DIR])
                if proc.returncode != 0:
                    raise DeviceError(f"cannot create {REMOTE_DIR} on {self.serial}: "
                                      f"{_last_line(_text(proc.stderr), _text(proc.stdout))}")  # fmt: skip
                self._dir_made = True
            with tempfile.TemporaryDirectory(prefix="hwnas-adb-") as tmp:
                local = Path(tmp) / f"{sha}.tflite"
                local.write_bytes(data)
                proc = self._adb(["push", str(local), remote], timeout=120.0 + len(data) / 1e6)  # >= 1 MB/s
            if proc.returncode != 0:
                raise DeviceError(
                    f"adb push to {self.serial} failed: {_last_line(_text(proc.stderr), _text(proc.stdout))}"
                )
            self._pushed.add(sha)
        return AdbRunner(remote, sha)

    # --- timing -----------------------------------------------------------------------------
    def benchmark_args(self, remote_path: str, timing: TimingConfig) -> list[str]:
        """The ``adb shell`` arguments of one benchmark_model run.

        ``TimingConfig`` maps onto the tool's flags: ``warmup_runs``/``warmup_s`` to
        ``--warmup_runs``/``--warmup_min_secs``, ``min_runs``/``min_time_s`` to
        ``--num_runs``/``--min_secs``, ``max_time_s`` to ``--max_secs`` (the tool caps the
        warm-up and the timed series by it separately, and stops even before the third run);
        ``max_runs`` has no counterpart.
        """
        args = ["taskset", str(self.options["taskset"])] if self.options["taskset"] else []
        return [
            *args,
            str(self.options["benchmark_model"]),
            f"--graph={remote_path}",
            f"--num_threads={self.threads}",
            f"--use_xnnpack={'true' if self.options['xnnpack'] else 'false'}",
            "--use_gpu=false",
            f"--warmup_runs={timing.warmup_runs}",
            f"--warmup_min_secs={_seconds(timing.warmup_s)}",
            f"--num_runs={timing.min_runs}",
            f"--min_secs={_seconds(timing.min_time_s)}",
            f"--max_secs={_seconds(timing.max_time_s)}",
        ]

    def run_benchmark(self, runner: Runner, timing: TimingConfig | None = None) -> BenchmarkOutput:
        """One benchmark_model run of a loaded model, parsed; failures are one-line DeviceErrors."""
        if not isinstance(runner, AdbRunner):
            raise DeviceError(f"{self.kind} times models it loaded itself; got {type(runner).__name__}")
        timing = timing or TimingConfig()
        proc = self._shell(self.benchmark_args(runner.remote_path, timing), timeout=timing.max_time_s * 2 + 60)
        out, err = _text(proc.stdout), _text(proc.stderr)
        try:
            result = parse_output(out + "\n" + err)
        except DeviceError as exc:  # names the error line, or the last line when there is none
            raise DeviceError(f"{exc} (phone {self.serial}, exit status {proc.returncode})") from None
        if proc.returncode != 0:
            raise DeviceError(f"benchmark_model on {self.serial} exited with {proc.returncode}: {_last_line(out, err)}")
        ignored = [f for f in result.unconsumed_flags if f.startswith("--num_threads")
                   or (f.startswith("--use_xnnpack") and self.options["xnnpack"])]  # fmt: skip
        if ignored:
            raise DeviceError(f"the benchmark_model on {self.serial} does not know {ignored[0].split('=')[0]}; "
                              "push a newer build (a recent LiteRT or TensorFlow release)")  # fmt: skip
        return result

    def measure(self, runner: Runner, timing: TimingConfig | None = None) -> Stats:
        """Time a loaded model with one benchmark_model run; :class:`Stats` in milliseconds.

        benchmark_model prints a summary, not the runs: ``mean_ms``, ``std_ms`` (population),
        ``n`` are the tool's ``avg``, ``std``, ``count`` of the timed series. Where it prints
        percentiles (recent LiteRT builds), ``median_ms`` is its median and ``p10_ms``/``p90_ms``
        carry its p5/p95 (it prints no p10/p90, so the band is wider than elsewhere). Where it
        does not, ``median_ms`` is the mean, ``p10_ms`` the minimum and ``p90_ms`` the maximum:
        the tool's summary, not quantiles of per-run samples. ``min_ms`` is its ``min``. ``busy_s`` is count x avg of the
        warm-up and the timed series.
        """
        result = self.run_benchmark(runner, timing)
        s, w = result.inference, result.warmup
        median = s.median_us if s.median_us is not None else s.avg_us
        p10 = s.p5_us if s.p5_us is not None else s.min_us
        p90 = s.p95_us if s.p95_us is not None else s.max_us
        warm_n = w.count if w is not None else 0
        warm_us = w.count * w.avg_us if w is not None and w.count else 0.0
        return Stats(
            median_ms=median / 1e3,
            p10_ms=p10 / 1e3,
            p90_ms=p90 / 1e3,
            mean_ms=s.avg_us / 1e3,
            std_ms=s.std_us / 1e3,
            n=s.count,
            warmup_n=warm_n,
            busy_s=(s.count * s.avg_us + warm_us) / 1e6,
            min_ms=s.min_us / 1e3,
        )

    def measure_watched(self, runner: Runner, timing: TimingConfig | None = None) -> tuple[Stats, Conditions]:
        """:meth:`measure`, and the phone's conditions over the same span.

        One ``adb shell cat`` of ``/proc/loadavg``, ``/proc/stat`` and cpu0's governor before and
        one after. ``others_cores`` is None: ``/proc/stat`` counts benchmark_model's own CPU time
        with everyone else's, and its process is gone before it could be read apart, so only
        steal and the load average can judge the span.
        """
        before = self._snapshot()
        stats = self.measure(runner, timing)
        after = self._snapshot()
        steal = None
        if None not in (before.steal, after.steal, before.total, after.total):
            total = after.total - before.total  # type: ignore[operator]
            steal = (after.steal - before.steal) / total if total > 0 else 0.0  # type: ignore[operator]
        cpus = after.cpus or before.cpus or self._nproc()
        cond = Conditions(max(after.wall - before.wall, 1e-9), cpus, after.load1, None, None, steal, after.governor)
        return stats, cond

    def _snapshot(self) -> _PhoneSnapshot:
        proc = self._shell(["cat", "/proc/loadavg", "/proc/stat", _GOVERNOR])  # a missing file: rc 1, the rest read
        wall = time.monotonic()
        load1 = busy = steal = total = governor = None
        cpus = 0
        for line in _text(proc.stdout).splitlines():
            fields = line.split()
            if m := _LOADAVG.match(line.strip()):
                load1 = float(m.group(1))
            elif fields and fields[0] == "cpu":
                try:
                    v = [int(x) for x in fields[1:9]]
                except ValueError:
                    continue
                v += [0] * (8 - len(v))  # user nice system idle iowait irq softirq steal
                total = sum(v)
                busy = total - v[3] - v[4]
                steal = v[7]
            elif fields and re.fullmatch(r"cpu\d+", fields[0]):
                cpus += 1
            elif len(fields) == 1 and re.fullmatch(r"[a-z][a-z0-9_]*", fields[0]):
                governor = fields[0]
        if cpus:
            self._cpus = cpus
        return _PhoneSnapshot(wall, load1, busy, steal, total, cpus or None, governor)

    def _nproc(self) -> int:
        if self._cpus is None:
            proc = self._shell(["nproc"])
            text = _text(proc.stdout).strip()
            self._cpus = int(text) if text.isdigit() else 1
        return self._cpus

    # --- identity ---------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """The phone (getprop), the benchmark_model binary (sha256) and the settings.

        benchmark_model reports no version of itself or of its runtime (no release read while
        writing this prints one), so the binary's sha256 identifies it.
        """
        proc = self._shell(["getprop"])
        props = {}
        for line in _text(proc.stdout).splitlines():
            if m := _PROP_LINE.match(line.strip()):
                props[m.group(1)] = m.group(2)
        if proc.returncode != 0 or not props:
            raise DeviceError(f"adb shell getprop on {self.serial} failed: {_last_line(_text(proc.stderr))}")
        binary = str(self.options["benchmark_model"])
        return {
            "kind": self.kind,
            "serial": self.serial,
            **{key: props.get(prop) for key, prop in _PROPS.items()},
            "os": f"Android {props.get('ro.build.version.release', '?')} (SDK {props.get('ro.build.version.sdk', '?')})",
            "runtime": "tflite benchmark_model",
            "benchmark_model": binary,
            "benchmark_model_sha256": self._binary_sha256(binary),
            "threads": self.threads,
            "xnnpack": bool(self.options["xnnpack"]),
            "taskset": self.options["taskset"],
            "precision": self.precision,
            "batch": self.batch,
            "hwnas_version": __version__,
        }

    def _binary_sha256(self, binary: str) -> str | None:
        proc = self._shell(["sha256sum", binary])
        out, err = _text(proc.stdout), _text(proc.stderr)
        first = out.split()[0] if out.split() else ""
        if proc.returncode == 0 and re.fullmatch(r"[0-9a-f]{64}", first):
            return first
        if "No such file" in out + err:
            raise DeviceError(f"there is no benchmark_model at {binary} on {self.serial}: adb push it there and "
                              f"adb shell chmod +x {binary} (or give benchmark_model=PATH)")  # fmt: skip
        return None  # a phone without toybox sha256sum


def _check_phone(serial: str, stderr: str) -> None:
    """Raise a DeviceError naming the fix when adb itself says the phone is not usable."""
    for line in stderr.splitlines():
        line = line.strip()
        if not line.startswith(("error:", "adb:")):
            continue
        low = line.lower()
        if ("not found" in low and "device" in low) or "no devices" in low:
            raise DeviceError(f"no phone with serial {serial} is attached: connect it and check `adb devices`")
        if "unauthorized" in low:
            raise DeviceError(f"phone {serial} has not authorized this computer: unlock it, accept the "
                              "'Allow USB debugging' prompt, then check `adb devices`")  # fmt: skip
        if "offline" in low:
            raise DeviceError(
                f"phone {serial} is offline: reconnect it (or run `adb reconnect`) and check `adb devices`"
            )
        if "daemon" in low and ("cannot" in low or "failed" in low):
            raise DeviceError(f"the adb server does not start: {line[:160]}; try `adb kill-server; adb devices`")
