"""What the verb modules share: the console, argparse types, timing options and small helpers."""

from __future__ import annotations

import argparse
import math
import sys
from typing import TYPE_CHECKING

from rich.console import Console

from hwnas.core.errors import HwnasError
from hwnas.core.options import positive_float

if TYPE_CHECKING:
    from hwnas.devices import Device, TimingConfig

console = Console(width=None if sys.stdout.isatty() else 160, soft_wrap=True)


def mega(x: float) -> str:
    return f"{x / 1e6:.3f}"


def size_text(n: int) -> str:
    return f"{n:,}" if n < 10**7 else f"{n:.3e} (10^{math.log10(n):.1f})"


def budget_list(text: str) -> list[float]:
    """One budget, or several separated by commas (train once, search many)."""
    values = [positive_float(part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected a number or numbers separated by commas, got {text!r}")
    return sorted(set(values))


def share(text: str) -> float:
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text!r}")
    return value


def show_default(v: object) -> str:
    return "-" if v is None else ("1" if v is True else "0" if v is False else str(v))


def timing(args: argparse.Namespace) -> TimingConfig:
    from hwnas.devices import TimingConfig

    return TimingConfig(
        warmup_runs=args.warmup_runs, warmup_s=args.warmup_ms / 1e3, min_runs=args.min_runs,
        min_time_s=args.min_time_ms / 1e3, max_time_s=args.max_time_s,
    )  # fmt: skip


def with_precision(spec: str, precision: str | None) -> str:
    """``spec`` with ``precision=`` set from ``--precision`` (which must agree with one in the spec)."""
    if precision is None:
        return spec
    from hwnas.devices import parse_device

    device = parse_device(spec)
    if "precision" not in device.params:
        raise HwnasError(f"--precision: device {device.kind} times fp32 models only; use ort-cpu (fp32, int8) or "
                         "tflite-cpu (fp32, fp16)")  # fmt: skip
    given = "precision=" in spec
    if given and device.precision != precision:
        raise HwnasError(f"--precision {precision} contradicts the device spec's precision={device.precision}")
    return spec if given else spec + ("," if ":" in spec else ":") + f"precision={precision}"


def warn_if_busy(device: Device) -> None:
    """Warn when this machine is busy; a device on another machine reports its own conditions per measurement."""
    from hwnas.workflows import busy_warning

    if not device.runs_here:
        return
    text = busy_warning(device.threads)
    if text:
        print(f"hwnas: warning: {text}", file=sys.stderr)


def warn_about_lut(lut: str | None) -> None:
    """One line per thing the LUT knows makes it less trustworthy (unstable or drifted kernels)."""
    if lut is None:
        return
    from hwnas.latency.stability import lut_warnings
    from hwnas.latency.store import LutStore

    with LutStore.open(lut) as store:
        meta = {name: store.get_meta(name) for name in ("stability", "drift")}
    for line in lut_warnings(meta, lut):
        print(f"hwnas: warning: {line}", file=sys.stderr)


def fit_threads(torch_device: str | None) -> None:
    from hwnas.workflows import fit_torch_threads

    if torch_device in (None, "cpu"):
        text = fit_torch_threads()
        if text:
            print(f"hwnas: note: {text}", file=sys.stderr)


def add_timing_args(p: argparse.ArgumentParser, min_time_ms: float) -> None:
    g = p.add_argument_group("timing (per model, per round)")
    g.add_argument("--warmup-runs", type=int, default=5, help="at least this many warm-up runs (default 5)")
    g.add_argument(
        "--warmup-ms", type=positive_float, default=30.0, help="and at least this long warming up (default 30)"
    )
    g.add_argument("--min-runs", type=int, default=20, help="at least this many timed runs (default 20)")
    g.add_argument(
        "--min-time-ms",
        type=positive_float,
        default=min_time_ms,
        help=f"and at least this long timing (default {min_time_ms:g})",
    )
    g.add_argument(
        "--max-time-s", type=positive_float, default=10.0, help="stop a slow model after this long (default 10)"
    )


def add_statistic_arg(p: argparse.ArgumentParser) -> None:
    """``--statistic``: which run of each timed round a budget means (:mod:`hwnas.latency.statistic`)."""
    from hwnas.latency.statistic import DEFAULT_STATISTIC, STATISTICS

    p.add_argument("--statistic", choices=STATISTICS, default=DEFAULT_STATISTIC,
                   help="what a latency budget means: each round's fastest, median or p90 run (default "
                        "%(default)s); median and p90 predictions use the factor 'hwnas lut validate --fit' "
                        "measured on the device")  # fmt: skip
