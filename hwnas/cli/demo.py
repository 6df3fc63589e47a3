"""`hwnas demo`: the whole pipeline on the cifar space and built-in data."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from rich.table import Table

from hwnas.cli.common import (
    add_statistic_arg,
    console,
)
from hwnas.core.options import positive_int

if TYPE_CHECKING:
    pass


def cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hwnas.demo import DemoConfig, run_demo

    cfg = DemoConfig(out=Path(args.out), device=args.device, search_epochs=args.search_epochs,
                     train_epochs=args.train_epochs, progress=not args.no_progress, statistic=args.statistic)  # fmt: skip
    try:
        report = run_demo(cfg, say=console.print)
    except KeyboardInterrupt:
        print(f"hwnas: interrupted; run the same command again to resume from {args.out}", file=sys.stderr)
        return 130
    t = Table("step", "seconds", "result", title="hwnas demo")
    for step, seconds, result in report.steps:
        t.add_row(step, f"{seconds:.0f}", result)
    console.print(t)
    s = report.summary
    verdict = (s.get("verdict") or {}).get("outcome", "not judged")
    figures = ", ".join(f"{k} {ms:.3f}" for k, ms in (s.get("measured_by_statistic_ms") or {}).items())
    console.print(f"budget {s['budget_ms']:g} ms by each round's {s['statistic']} run on {s['device']} (searched under "
                  f"{s['search_budget_ms']:g} ms): predicted {s['predicted_ms']:.3f} ms, measured {s['measured_ms']:.3f} "
                  f"+- {s['noise_ms']:.3f} ms (ONNX; ms by statistic: {figures}): {verdict}")  # fmt: skip
    conditions = (s.get("verdict") or {}).get("conditions")
    if conditions:
        noisy = conditions.get("noisy") or []
        console.print(f"conditions of that measurement: {conditions['text']}"
                      + (f" [noisy run: {'; '.join(noisy)}]" if noisy else ""))  # fmt: skip
    console.print("files: " + ", ".join(f"{k}: {v}" for k, v in report.files.items()))
    if report.within_noise:
        console.print("the file is over the budget by less than the noise of its measurement; the demo counts that "
                      "as a pass (exit 0); 'hwnas export' exits 3 for it")  # fmt: skip
    return 1 if report.over_budget else 0


def add_parser(sub: Any) -> None:
    """Add the demo command(s) to the subparsers ``sub``."""
    dm = sub.add_parser("demo", help="the whole pipeline on the cifar space and built-in data, in minutes")
    dm.add_argument("--out", default="hwnas-demo", help="working folder (default ./hwnas-demo); re-run to resume")
    dm.add_argument("--device", default="ort-cpu:threads=1", metavar="SPEC", help="an ONNX Runtime CPU device")
    dm.add_argument("--search-epochs", type=positive_int, default=6, help="epochs of the search (2 of them warm-up)")
    dm.add_argument("--train-epochs", type=positive_int, default=5, help="epochs of retraining the derived network")
    add_statistic_arg(dm)
    dm.add_argument("--no-progress", action="store_true", help="no progress bars (plain lines, for logs)")
    dm.set_defaults(func=cmd_demo)
