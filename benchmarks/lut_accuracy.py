"""LUT accuracy against end-to-end measurement, before and after calibration, and the noise floor.

Usage:
    python benchmarks/lut_accuracy.py --lut FILE --space cifar --device ort-cpu:threads=1 \
        [--samples 100] [--repeats 20] [--workdir DIR]
    python benchmarks/lut_accuracy.py --profile --space cifar --device ort-cpu:threads=1 [--busy]

``--profile`` first profiles the space on the device into the work folder (instead of copying
``--lut``). ``--busy`` starts a bounded busy loop (a child process spinning on the last core, at
most ``--busy-max-s`` seconds) before anything is timed and stops it at the end, so the whole
table, profile included, is measured beside a neighbour that holds one core.

Copies the LUT into the work folder, runs ``hwnas lut validate COPY --fit`` (half the samples fit
the calibration, the other half are scored), then measures the architecture with the median
measured latency ``--repeats`` times (a fresh load and a full timed series each, as validation
does) for the noise floor. Prints markdown rows for BENCHMARKS.md. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from hwnas.devices import TimingConfig, open_device
from hwnas.latency.network_timing import network_artifacts, network_input_shape, network_module
from hwnas.spaces import get_space
from hwnas.spaces.arch import Architecture


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lut")
    ap.add_argument("--profile", action="store_true", help="profile the space into the work folder first")
    ap.add_argument("--busy", action="store_true", help="a busy loop on the last core while everything is timed")
    ap.add_argument("--busy-max-s", type=float, default=3600.0)
    ap.add_argument("--space", required=True)
    ap.add_argument("--device", required=True)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="hwnas-acc-"))
    work.mkdir(parents=True, exist_ok=True)
    lut = work / f"{args.space}-{args.device.replace(':', '_').replace(',', '_')}.lut"
    busy = _start_busy(args.busy_max_s) if args.busy else None
    try:
        _run(args, work, lut)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def _start_busy(max_s: float) -> subprocess.Popen[bytes]:
    """A child process spinning on the last core for at most ``max_s`` seconds."""
    core = (os.cpu_count() or 1) - 1
    code = (f"import os, time\nos.sched_setaffinity(0, {{{core}}})\nend = time.monotonic() + {max_s}\n"
            "while time.monotonic() < end: pass\n")  # fmt: skip
    return subprocess.Popen([sys.executable, "-c", code])


def _run(args: argparse.Namespace, work: Path, lut: Path) -> None:
    import time

    t0 = time.perf_counter()
    if args.profile:
        lut.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "hwnas", "profile", "--space", args.space, "--device", args.device, "--out",
               str(lut), "--no-progress"]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, COLUMNS="160"))
        sys.stderr.write(res.stdout[-2000:] + res.stderr[-2000:])
        if res.returncode:
            raise SystemExit(res.returncode)
    else:
        if not args.lut:
            raise SystemExit("give --lut FILE, or --profile")
        shutil.copyfile(args.lut, lut)
    out = work / f"{lut.stem}-validation"
    cmd = [sys.executable, "-m", "hwnas", "lut", "validate", str(lut), "--space", args.space, "--device", args.device,
           "--samples", str(args.samples), "--fit", "--no-progress", "--out", str(out)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, COLUMNS="160"))
    sys.stderr.write(res.stdout[-4000:])
    if res.returncode:
        sys.stderr.write(res.stderr[-4000:])
        raise SystemExit(res.returncode)
    df = pd.read_csv(out / "validation.csv")
    scored = df[df["role"] == "score"]
    from hwnas.latency.validate import rank_scores, scores

    raw = scores(scored["raw_ms"], scored["measured_ms"])
    cal = scores(scored["calibrated_ms"], scored["measured_ms"])
    flops = rank_scores(scored["flops"], scored["measured_ms"])
    rel = ((scored["calibrated_ms"] - scored["measured_ms"]) / scored["measured_ms"]).abs()

    # Noise floor: the scored architecture with the median measured latency, timed `repeats` times.
    space = get_space(args.space)
    mid = scored.iloc[(scored["measured_ms"] - scored["measured_ms"].median()).abs().argsort().iloc[0]]
    arch = Architecture.from_str(mid["arch"], num_classes=space.num_classes, in_channels=space.in_channels)
    device = open_device(args.device)
    shape = network_input_shape(arch, device.batch)
    artifact = (network_module(arch) if device.format == "torch"
                else network_artifacts([arch], device.format, device.batch, device.precision)[0])  # fmt: skip
    reps = []
    for _ in range(args.repeats):
        runner = device.load(artifact, shape)
        reps.append(device.measure(runner, TimingConfig(min_time_s=0.1)).round_ms)  # as validation counts a round
        runner.close()
    reps_a = np.array(reps)
    med = float(np.median(reps_a))
    dev_rel = np.abs(reps_a - med) / med
    print(f"<!-- {date.today()}, {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"busy loop on the last core: {'yes' if args.busy else 'no'}, {time.perf_counter() - t0:.0f} s -->")  # fmt: skip
    print("| space | device | scored | within 10% raw -> cal | within 5% cal | RMSPE raw -> cal | "
          "Kendall tau raw -> cal | Spearman cal | FLOPs tau | model |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    model = res.stdout.split("calibration (")[1].split(",")[0] if "calibration (" in res.stdout else "?"
    print(f"| {args.space} | {args.device} | {int(raw['n'])} | {raw['within_10']:.0%} -> {cal['within_10']:.0%} | "
          f"{cal['within_5']:.0%} | {raw['rmspe']:.1%} -> {cal['rmspe']:.1%} | "
          f"{raw['kendall_tau']:.3f} -> {cal['kendall_tau']:.3f} | {cal['spearman']:.3f} | "
          f"{flops['kendall_tau']:.3f} | {model} |")  # fmt: skip
    print()
    print("| space | device | noise arch (ms) | repeats | (max-min)/median | std/median | p95 abs dev | "
          "within 10% of own median | calibrated abs error p50 / p95 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.space} | {args.device} | {med:.3f} | {len(reps)} | {(reps_a.max() - reps_a.min()) / med:.1%} | "
          f"{reps_a.std() / med:.1%} | {np.percentile(dev_rel, 95):.1%} | {np.mean(dev_rel <= 0.10):.0%} | "
          f"{rel.median():.1%} / {rel.quantile(0.95):.1%} |")  # fmt: skip
    floor = [line.strip() for line in res.stdout.splitlines() if line.startswith("noise floor of this run")]
    print(f"<!-- validation's {floor[0] if floor else 'noise floor: not reported'} -->")
    print(f"<!-- outputs in {out} -->")


if __name__ == "__main__":
    main()
