"""`hwnas bench`: time one .onnx, .tflite or .pte file on a device, and judge it against a budget."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from rich.table import Table

from hwnas.cli.common import (
    add_statistic_arg,
    add_timing_args,
    console,
    timing,
)
from hwnas.core.options import positive_float, positive_int

if TYPE_CHECKING:
    pass


def cmd_bench(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from hwnas.devices import open_device
    from hwnas.workflows import bench_file

    device = open_device(args.device)
    path = Path(args.model)
    result = bench_file(path, device, timing(args), args.rounds, budget_ms=args.budget_ms, statistic=args.statistic)
    stats = result["rounds"]
    code = int(result["verdict"]["exit_code"]) if result["verdict"] else 0
    if args.json:
        print(json.dumps(result, indent=2))
        return code
    t = Table(
        "round",
        "fastest (ms)",
        "median",
        "p10",
        "p90",
        "mean",
        "std",
        "runs",
        "warm-up runs",
        title=f"{path.name} on {device.spec}",
    )
    for i, s in enumerate(stats):
        fastest = s["min_ms"] if s.get("min_ms") is not None else s["median_ms"]
        t.add_row(str(i), f"{fastest:.4f}", f"{s['median_ms']:.4f}", f"{s['p10_ms']:.4f}", f"{s['p90_ms']:.4f}", f"{s['mean_ms']:.4f}",
                  f"{s['std_ms']:.4f}", str(s["n"]), str(s["warmup_n"]))  # fmt: skip
    console.print(t)
    cond = result["conditions"]
    figures = ", ".join(f"{name} {ms:.4f}" for name, ms in result["by_statistic_ms"].items())
    console.print(f"latency: {result['latency_ms']:.4f} ms +- {result['noise_ms']:.4f} (the median over rounds of each "
                  f"round's {args.statistic} run; +- half their range; by statistic, ms: {figures})"
                  + (f"; other processes used {cond['others_cores']:.1f} of {cond['cpus']} "
                     "cores meanwhile" if cond["disturbed"] else ""))  # fmt: skip
    v = result["verdict"]
    if v:
        console.print(f"{path.name}: measured {v['measured_ms']:.3f} ms +- {v['noise_ms']:.3f} by its {args.statistic} "
                      f"run ({len(v['rounds_ms'])} rounds) against {v['budget_ms']:g} ms: {v['outcome']} (exit {code})")  # fmt: skip
    return code


def add_parser(sub: Any) -> None:
    """Add the bench command(s) to the subparsers ``sub``."""
    b = sub.add_parser("bench", help="time a whole .onnx, .tflite or .pte model file on a device")
    b.add_argument("model", metavar="MODEL.onnx|MODEL.tflite|MODEL.pte")
    b.add_argument("--device", required=True, metavar="SPEC")
    b.add_argument(
        "--rounds", type=positive_int, default=3, help="timed series; the result is the median of their fastest runs"
    )
    b.add_argument("--budget-ms", type=positive_float, help="judge the file against this budget: exit 0 within, 1 "
                   "over beyond the measured noise, 3 within noise of it (more rounds are taken first)")  # fmt: skip
    add_statistic_arg(b)
    b.add_argument("--json", action="store_true", help="print the result as JSON")
    add_timing_args(b, 1000.0)
    b.set_defaults(func=cmd_bench)
