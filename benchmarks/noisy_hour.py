"""One profile + validate run with its noise figures: run it at several hours of the day.

Usage:
    python benchmarks/noisy_hour.py [--space cifar] [--device ort-cpu:threads=1] [--samples 100]
        [--out results.jsonl]

A fresh ``hwnas profile`` (the default guard: rounds re-measured until they agree within 10%,
within as much extra time as the planned measurements take) into a new LUT, then ``hwnas lut
validate --fit`` on ``--samples`` networks (half fit the calibration, half are scored), with the
default drift check (32 reference kernels timed again). Appends one JSON line per run to
``--out`` and prints a markdown row for BENCHMARKS.md: when, the profile's conditions (other
processes' CPU and steal over its measurements, the median round spread), the time it spent
re-measuring, the kernels left unstable, the validation's conditions and noise floor, the drift
check, and the held-out share within +-10%. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from hwnas.devices import open_device
from hwnas.devices.conditions import run_conditions
from hwnas.latency.store import LutStore
from hwnas.latency.table import LatencyTable
from hwnas.latency.validate import validate
from hwnas.spaces import get_space
from hwnas.workflows import profile_space


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="cifar")
    ap.add_argument("--device", default="ort-cpu:threads=1")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--out", default="noisy-hour.jsonl")
    ap.add_argument("--workdir")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="hwnas-noisy-"))
    work.mkdir(parents=True, exist_ok=True)
    lut = work / f"{args.space}.lut"
    space, device = get_space(args.space), open_device(args.device)
    started = datetime.now().strftime("%Y-%m-%d %H:%M")
    t0 = time.perf_counter()
    report = profile_space(space, device, lut, progress=False)
    profile_s = time.perf_counter() - t0
    table = LatencyTable.load(lut)
    with LutStore.open(lut) as store:
        records = store.conditions("kernel")
    rounds = table.measurements.groupby("key")[table.round_column].apply(list).tolist()
    prof_cond = run_conditions(records, rounds)
    t0 = time.perf_counter()
    val = validate(lut, space, device, args.samples, fit=True, progress=False)
    validate_s = time.perf_counter() - t0
    cal = val.calibrated or {}
    drift = val.drift
    row = {
        "started": started,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "space": args.space,
        "device": args.device,
        "profile_s": profile_s,
        "profile_measuring_s": report.busy_s,
        "extra_s": report.extra_s,
        "budget_s": report.budget_s,
        "retaken": report.retaken,
        "remeasured": report.remeasured,
        "unstable": len(report.unstable),
        "profile_conditions": prof_cond.to_dict(),
        "validate_s": validate_s,
        "validation_conditions": val.conditions.to_dict() if val.conditions else None,
        "noise_floor": val.noise,
        "noisy": val.noisy,
        "drift": drift.record() if drift else None,
        "drift_messages": drift.messages(str(lut), args.space, args.device) if drift else [],
        "held_out_within_10": cal.get("within_10"),
        "held_out_within_5": cal.get("within_5"),
        "kendall_tau": cal.get("kendall_tau"),
        "calibration_model": val.calibration.model if val.calibration else None,
        "loo_rmspe": val.calibration.stats.get("loo_rmspe") if val.calibration else None,
    }
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")
    pc, vc = prof_cond, val.conditions
    d = row["drift"] or {}
    warned = "yes" if (val.noisy or row["drift_messages"]) else "no"
    print(
        f"| {started} | {pc.others_median:.2f} / {pc.steal_median:.1%} / {pc.round_spread:.1%} | "
        f"{report.remeasured} rounds, {report.extra_s:.0f} s of {report.budget_s:.0f} s; {len(report.unstable)} unstable | "
        f"{vc.others_median:.2f} / {vc.steal_median:.1%}; floor {val.noise.get('within_10', float('nan')):.0%} | "
        f"{d.get('median_ratio', float('nan')):.2f}x, {len(d.get('kernels', []))} faster / {len(d.get('slower', []))} slower | "
        f"**{cal.get('within_10', float('nan')):.0%}** ({cal.get('within_5', float('nan')):.0%} within +-5%) | {warned} |"
    )
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
