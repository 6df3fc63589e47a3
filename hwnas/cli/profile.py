"""`hwnas profile`: time every kernel of a space on one device, or on a farm, into LUTs."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from rich.table import Table

from hwnas.cli.common import (
    add_timing_args,
    console,
    timing,
    warn_if_busy,
    with_precision,
)
from hwnas.core.errors import HwnasError
from hwnas.core.formats import PRECISIONS
from hwnas.core.options import fraction, nonnegative_float, positive_int
from hwnas.latency.disturbance import STABLE_WITHIN

if TYPE_CHECKING:
    pass


def cmd_profile(args: argparse.Namespace) -> int:
    from hwnas.devices import open_device
    from hwnas.spaces import get_space
    from hwnas.workflows import ProfileInterrupted, profile_space

    space = get_space(args.space)
    if args.classes is not None:
        space = replace(space, num_classes=args.classes)
    if len(args.device) > 1 or len(args.out) > 1:
        return _profile_farm(args, space)
    device = open_device(with_precision(args.device[0], args.precision))
    args.out = args.out[0]
    try:
        report = profile_space(space, device, args.out, rounds=args.rounds, timing=timing(args), seed=args.seed,
                               progress=not args.no_progress, force=args.force,
                               before_timing=lambda: warn_if_busy(device), guard=guard(args),
                               remeasure=args.remeasure)  # fmt: skip
    except ProfileInterrupted as stop:
        print(
            f"hwnas: interrupted; {stop.saved} measurements are saved in {args.out} ({stop.new} from this run); "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    console.print(
        f"{args.out}: {report.kernels} kernels x {args.rounds} rounds on {device.spec}; measured {report.measured}, "
        f"already there {report.skipped}; converted {report.converted} models in {report.convert_s:.1f} s"
    )
    if report.measured:
        console.print(
            f"wall {report.wall_s:.1f} s, measuring {report.busy_s:.1f} s, overhead ratio {report.overhead_ratio:.2f}"
        )
    if report.retaken or report.remeasured or report.still_disturbed:
        console.print(f"disturbed: re-took {report.retaken} measurement(s) taken while other processes competed for "
                      f"the CPU and re-measured {report.remeasured} round(s) that disagreed, in {report.extra_s:.1f} s "
                      f"of a {report.budget_s:.1f} s budget; {report.still_disturbed} kept although disturbed "
                      "('hwnas lut show' lists the noisiest kernels)")  # fmt: skip
    if report.unstable:
        print(f"hwnas: warning: {len(report.unstable)} kernel(s) still disagree by more than "
              f"+-{report.stable_within:.0%} across rounds when the re-measuring time ran out: "
              f"{', '.join(report.unstable)}; they are marked in {args.out}: run the same command again (or raise "
              "--max-extra-time) to re-measure them", file=sys.stderr)  # fmt: skip
    if args.remeasure and not report.measured:
        print(f"hwnas: note: nothing to re-measure: {args.out} names no {args.remeasure} kernels", file=sys.stderr)
    elif args.remeasure:
        print(f"hwnas: note: kernels were re-measured; refit the calibration of {args.out} with 'hwnas lut validate "
              f"{args.out} --space {args.space} --device {args.device[0]} --fit'", file=sys.stderr)  # fmt: skip
    return 0


def guard(args: argparse.Namespace) -> Any:
    from hwnas.latency.disturbance import GuardConfig

    return GuardConfig(stable_within=args.stable_within, max_extra_s=args.max_extra_time)


def _profile_farm(args: argparse.Namespace, space: Any) -> int:
    from hwnas.devices import open_device
    from hwnas.workflows import profile_farm

    devices = [open_device(with_precision(spec, args.precision)) for spec in args.device]
    if args.remeasure:
        raise HwnasError("--remeasure works on one device's LUT at a time; give one --device and one --out")
    results = profile_farm(space, devices, args.out, rounds=args.rounds, timing=timing(args), seed=args.seed,
                           progress=not args.no_progress, force=args.force, guard=guard(args))  # fmt: skip
    t = Table(
        "device",
        "LUT",
        "status",
        "measured now",
        "in the LUT",
        title=f"profile of {space.name} on {len(devices)} devices",
    )
    for r in results:
        status = "finished" if r.error is None else "stopped"
        t.add_row(r.device, str(r.lut), status, str(r.report.measured if r.report else "-"), str(r.saved))
    console.print(t)
    failed = [r for r in results if r.error is not None]
    for r in failed:
        print(f"hwnas: {r.device} stopped: {r.error}", file=sys.stderr)
    if failed:
        print(f"hwnas: {len(failed)} of {len(results)} devices did not finish; what they measured is saved: run the "
              "same command again to resume them (finished devices are skipped)", file=sys.stderr)  # fmt: skip
        return 3
    return 0


def add_parser(sub: Any) -> None:
    """Add the profile command(s) to the subparsers ``sub``."""
    pr = sub.add_parser("profile", help="time every kernel of a search space on a device into a LUT")
    pr.add_argument("--space", required=True, metavar="NAME|FILE", help="search space (preset name or YAML/JSON file)")
    pr.add_argument("--device", required=True, action="append", metavar="SPEC",
                    help="device spec, e.g. ort-cpu:threads=1 or remote:HOST:PORT (see 'hwnas devices'); repeat it to "
                    "profile several devices at once (a farm), each into its own --out")  # fmt: skip
    pr.add_argument("--out", required=True, action="append", metavar="FILE",
                    help="the LUT file; an existing one is resumed or extended; one per --device, in the same order")  # fmt: skip
    pr.add_argument("--classes", type=positive_int, metavar="N",
                    help="time the classifier for N classes: those of the dataset you will search on (default: the "
                    "space's count); a LUT extended this way serves both")  # fmt: skip
    pr.add_argument(
        "--rounds",
        type=positive_int,
        default=3,
        help="shuffled passes over the kernels; a kernel's latency is the median (default 3)",
    )
    pr.add_argument("--seed", type=int, default=0, help="seed of the shuffles")
    pr.add_argument("--precision", choices=PRECISIONS, help="time the kernels in the form export ships "
                    "at this precision (ort-cpu: fp32, int8 QDQ; tflite-cpu: fp32, fp16 weights, full-integer int8); the same as the "
                    "device's precision= parameter (default: the device's, fp32)")  # fmt: skip
    pr.add_argument("--stable-within", type=fraction, default=STABLE_WITHIN, metavar="P",
                    help="re-measure a kernel until its rounds agree within +-P of their median, e.g. 0.1 or 10%% "
                    "(default %(default)s)")  # fmt: skip
    pr.add_argument("--max-extra-time", type=nonnegative_float, metavar="SECONDS",
                    help="time allowed for re-taking disturbed measurements and re-measuring rounds that disagree "
                    "(default: as long as the planned measurements take); the kernels still unstable are named")  # fmt: skip
    pr.add_argument("--remeasure", metavar="WHICH",
                    help="measure these kernels again in every round, replacing what the LUT holds: drifted (found by "
                    "'hwnas lut validate'), unstable (rounds that never agreed), all, or comma-separated keys")  # fmt: skip
    pr.add_argument("--force", action="store_true", help="add to a LUT measured on another device")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_timing_args(pr, 100.0)
    pr.set_defaults(func=cmd_profile)
