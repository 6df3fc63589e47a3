#!/usr/bin/env python3
"""A stand-in ``adb`` for the tests of the ``adb`` device: one attached phone, replayed outputs.

It answers the calls the device makes the way adb and the phone's toybox do:

* ``adb devices``: the attached serials;
* ``adb -s SERIAL push LOCAL REMOTE``: copies LOCAL into the fake phone's file tree (folders made as needed);
* ``adb -s SERIAL shell ARGS``: the arguments are joined with spaces, as adb does, and the phone's
  shell splits them again; ``getprop``, ``mkdir -p``, ``cat`` (``/proc/loadavg``, ``/proc/stat``
  with counters that advance on every read, cpu0's governor), ``sha256sum``, ``nproc`` and
  ``[taskset MASK] .../benchmark_model --graph=...`` (prints the file ``HWNAS_FAKE_BM_OUTPUT``);
* an unknown serial: adb's "device not found" error, exit status 1.

Every call's arguments are appended as one JSON line to ``HWNAS_FAKE_ADB_LOG``. Settings, all
environment variables: ``HWNAS_FAKE_PHONE`` (a folder holding the phone's files and counters;
required), ``HWNAS_FAKE_ADB_SERIALS`` (comma-separated, default ``emulator-5554``),
``HWNAS_FAKE_ADB_STATE`` (``device``, ``unauthorized`` or ``offline``), ``HWNAS_FAKE_ADB_OLD``
(``1``: the error texts of adb before platform-tools 29, ``error:`` instead of ``adb:``),
``HWNAS_FAKE_BM_RC`` (benchmark_model's exit status; default 1 when the output says it failed).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "benchmark_model"
BINARY = "/data/local/tmp/benchmark_model"
BINARY_BYTES = b"\x7fELF stand-in benchmark_model"


def _phone_path(remote: str) -> Path:
    return Path(os.environ["HWNAS_FAKE_PHONE"]) / remote.lstrip("/")


def _reads() -> int:
    """How many times /proc/stat was read so far (its counters advance by one step per read)."""
    counter = Path(os.environ["HWNAS_FAKE_PHONE"]) / "stat_reads"
    n = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(n + 1))
    return n


def proc_stat(k: int) -> str:
    """8 CPUs; per read every CPU adds 50 user, 12 system, 175 idle and 3 steal jiffies."""
    lines = []
    for name, cpus in [("cpu", 8)] + [(f"cpu{i}", 1) for i in range(8)]:
        user, system, idle, steal = (1000 + 50 * k) * cpus, (400 + 12 * k) * cpus, (9000 + 175 * k) * cpus, 3 * k * cpus
        lines.append(f"{name} {user} 7 {system} {idle} 31 0 5 {steal} 0 0")
    lines += ["intr 123456 0 0", "ctxt 987654", "btime 1717000000", "processes 4321", "procs_running 2",
              "procs_blocked 0", "softirq 55555 0 1 2 3 4 5 6 7 8 9"]  # fmt: skip
    return "\n".join(lines) + "\n"


def shell(words: list[str]) -> int:
    if not words:
        print("interactive shells are not supported by the stand-in", file=sys.stderr)
        return 1
    cmd, args = words[0], words[1:]
    if cmd == "getprop":
        sys.stdout.write((DATA / "getprop.txt").read_text())
        return 0
    if cmd == "mkdir" and args[:1] == ["-p"]:
        for d in args[1:]:
            _phone_path(d).mkdir(parents=True, exist_ok=True)
        return 0
    if cmd == "nproc":
        print(8)
        return 0
    if cmd == "cat":
        rc = 0
        for f in args:
            if f == "/proc/loadavg":
                print("1.21 0.97 0.88 3/1642 23411")
            elif f == "/proc/stat":
                sys.stdout.write(proc_stat(_reads()))
            elif f.endswith("cpu0/cpufreq/scaling_governor"):
                print("sched_pixel")
            else:
                print(f"cat: {f}: No such file or directory", file=sys.stderr)
                rc = 1
        return rc
    if cmd == "sha256sum":
        for f in args:
            if f == BINARY and not os.environ.get("HWNAS_FAKE_BM_MISSING"):
                print(f"{hashlib.sha256(BINARY_BYTES).hexdigest()}  {f}")
            else:
                print(f"sha256sum: {f}: No such file or directory", file=sys.stderr)
                return 1
        return 0
    if cmd == "taskset":
        if len(args) < 2:
            print("usage: taskset [-ap] [mask] [PID | cmd [args...]]", file=sys.stderr)
            return 1
        cmd, args = args[1], args[2:]
    if cmd.endswith("/benchmark_model"):
        return benchmark_model(cmd, args)
    print(f"/system/bin/sh: {cmd}: inaccessible or not found", file=sys.stderr)
    return 127


def benchmark_model(cmd: str, args: list[str]) -> int:
    if cmd != BINARY or os.environ.get("HWNAS_FAKE_BM_MISSING"):
        print(f"/system/bin/sh: {cmd}: inaccessible or not found", file=sys.stderr)
        return 127
    graph = next((a.split("=", 1)[1] for a in args if a.startswith("--graph=")), "")
    if not _phone_path(graph).is_file():
        text = (DATA / "litert_missing_model.txt").read_text()
    else:
        text = Path(os.environ["HWNAS_FAKE_BM_OUTPUT"]).read_text()
    for line in text.splitlines():
        err = line.startswith(("ERROR:", "FATAL:"))
        print(line, file=sys.stderr if err else sys.stdout)
    failed = "Benchmarking failed" in text or "FATAL:" in text
    return int(os.environ.get("HWNAS_FAKE_BM_RC", "1" if failed else "0"))


def main(argv: list[str]) -> int:
    log = os.environ.get("HWNAS_FAKE_ADB_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps(argv) + "\n")
    serials = os.environ.get("HWNAS_FAKE_ADB_SERIALS", "emulator-5554").split(",")
    state = os.environ.get("HWNAS_FAKE_ADB_STATE", "device")
    prefix = "error:" if os.environ.get("HWNAS_FAKE_ADB_OLD") else "adb:"
    if argv[:1] == ["devices"]:
        print("List of devices attached")
        for s in serials:
            print(f"{s}\t{state}")
        print()
        return 0
    if len(argv) < 3 or argv[0] != "-s":
        print(f"stand-in adb: unsupported call {argv}", file=sys.stderr)
        return 1
    serial, verb, rest = argv[1], argv[2], argv[3:]
    if serial not in serials:
        print(f"{prefix} device '{serial}' not found", file=sys.stderr)
        return 1
    if state == "unauthorized":
        print(f"{prefix} device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set\n"
              "Try 'adb kill-server' if that seems wrong.\nOtherwise check for a confirmation dialog on your device.",
              file=sys.stderr)  # fmt: skip
        return 1
    if state == "offline":
        print(f"{prefix} device offline", file=sys.stderr)
        return 1
    if verb == "push" and len(rest) == 2:
        local, remote = Path(rest[0]), rest[1]
        if not local.is_file():
            print(f"adb: error: cannot stat '{local}': No such file or directory", file=sys.stderr)
            return 1
        target = _phone_path(remote)
        target.parent.mkdir(parents=True, exist_ok=True)  # adb push creates missing folders
        shutil.copyfile(local, target)
        size = local.stat().st_size
        print(f"{local}: 1 file pushed, 0 skipped. 31.4 MB/s ({size} bytes in 0.000s)")
        return 0
    if verb == "shell":
        return shell(" ".join(rest).split())
    print(f"stand-in adb: unsupported verb {verb!r}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
