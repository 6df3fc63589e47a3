"""`hwnas export`: files checked against PyTorch, model cards, the budget verdict."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from rich.table import Table

from hwnas.cli.common import (
    add_statistic_arg,
    console,
    share,
    warn_about_lut,
)
from hwnas.core.options import positive_float, positive_int

if TYPE_CHECKING:
    pass


def cmd_export(args: argparse.Namespace) -> int:
    from hwnas.devices import open_device
    from hwnas.export.child_file import load_child
    from hwnas.export.pipeline import parse_formats
    from hwnas.export.request import ExportRequest
    from hwnas.workflows import export_and_check

    formats = parse_formats(args.format)
    precisions = ["fp32"] + (["fp16"] if args.fp16 else []) + (["int8"] if args.int8 else [])
    gates = None if args.budget_gates is None else [g.strip() for g in args.budget_gates.split(",") if g.strip()]
    nhwc = False if args.nchw else True if args.nhwc else None
    ExportRequest(formats, precisions, data=args.data, has_device=bool(args.device), lut=args.lut,
                  budget_ms=args.budget_ms, gates=gates, allow_over_budget=args.allow_over_budget, nhwc=nhwc,
                  dynamic_batch=args.dynamic_batch, simplify=args.simplify).check()  # fmt: skip
    device = open_device(args.device) if args.device else None
    child = load_child(args.arch, args.weights)
    outcome = export_and_check(child, args.out, formats, precisions, data=args.data, gates=gates,
                               calibration_images=args.calibration_images, check_images=args.check_images,
                               device=device, lut=args.lut, budget_ms=args.budget_ms, force=args.force,
                               stem=args.name or (child.arch.name or "model"),
                               **({} if nhwc is None else {"nhwc": nhwc}),
                               dynamic_batch=args.dynamic_batch, simplify=args.simplify,
                               progress=not args.no_progress, statistic=args.statistic,
                               on_checked=lambda: warn_about_lut(args.lut))  # fmt: skip
    results, over, noisy = outcome.files, outcome.over_budget, outcome.within_noise
    console.print(export_table(results, f"exported {child.arch.to_str()}"))
    console.print(f"model cards: <file>.json beside each file, in {results[0].path.parent if results else args.out}")
    figures = {r.path.name: r.figures_ms for r in results if r.figures_ms}
    for name, v in outcome.verdicts.items():
        also = ", ".join(f"{k} {ms:.3f}" for k, ms in figures.get(name, {}).items())
        console.print(f"{name}: {v.text()}" + (f" (ms by statistic: {also})" if also else ""))
        if v.conditions is not None:
            console.print(f"  conditions of that measurement: {v.conditions.text()}")
    if outcome.not_gated:
        console.print(f"reported, not gated (the budget gates {', '.join(outcome.gates)}; --budget-gates): "
                      + "; ".join(outcome.not_gated))  # fmt: skip
    _warn_int8_agreement(results, args.min_int8_agreement)
    if over or noisy:
        msg = "; ".join(over + noisy)
        if args.allow_over_budget:
            console.print(f"not within budget (allowed by --allow-over-budget): {msg}")
            return 0
        if over:
            print(f"hwnas: over budget: {msg}; pass --allow-over-budget to accept", file=sys.stderr)
            return 1
        print(f"hwnas: within noise of the budget (exit 3): {msg}; the measurement cannot tell whether it is over; "
              "re-measure on a quieter machine ('hwnas bench FILE --budget-ms B'), or pass --allow-over-budget",
              file=sys.stderr)  # fmt: skip
        return 3
    return 0


def _warn_int8_agreement(results: list[Any], threshold: float) -> None:
    for r in results:
        if r.precision == "int8" and r.top1_agreement is not None and r.top1_agreement < threshold:
            print(f"hwnas: warning: {r.path.name} agrees with fp32 PyTorch on {r.top1_agreement:.1%} of the check "
                  f"images, under {threshold:.0%} (--min-int8-agreement): int8 changes this model's answers; "
                  "check its accuracy before shipping it, or calibrate on more images (--calibration-images)",
                  file=sys.stderr)  # fmt: skip


def export_table(results: list[Any], title: str) -> Table:
    """The export summary: whole file names (never cut), the folder once, compact numbers."""
    from rich import box

    folder = results[0].path.parent if results else ""
    fp32 = next((r.accuracy_fp32 for r in results if r.accuracy_fp32 is not None), None)
    caption = f"in {folder}" + (f"; PyTorch fp32 top-1 {fp32:.1%}" if fp32 is not None else "")
    t = Table("file", "KB", "|diff|", "agree", "top-1", "pred ms", "meas ms", title=title,
              caption=caption + "; int8 agreement with fp32, all checks and export times in each file's card",
              box=box.SIMPLE_HEAD, pad_edge=False)  # fmt: skip
    t.columns[0].no_wrap = True
    for r in results:
        t.add_row(
            r.path.name, f"{r.size_bytes / 1024:.0f}", "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.0e}",
            f"{r.top1_agreement:.1%}" if r.precision == "int8" and r.top1_agreement is not None else "-",
            "-" if r.accuracy is None else f"{r.accuracy:.1%}",
            "-" if r.predicted_ms is None else f"{r.predicted_ms:.3f}",
            "-" if r.measured_ms is None else f"{r.measured_ms:.3f}",
        )  # fmt: skip
    return t


def add_parser(sub: Any) -> None:
    """Add the export command(s) to the subparsers ``sub``."""
    ex = sub.add_parser(
        "export", help="ONNX / TFLite / ExecuTorch / Core ML files checked against PyTorch, model cards, budget check"
    )
    ex.add_argument(
        "--arch", metavar="ARCH.json", help="the architecture (optional with a child file from hwnas train)"
    )
    ex.add_argument(
        "--weights",
        required=True,
        metavar="CHILD",
        help="trained weights: a child file (hwnas train --out), or a bare safetensors state dict with --arch",
    )
    ex.add_argument(
        "--format",
        default="onnx,tflite",
        help="comma-separated: onnx, tflite, pte (ExecuTorch with the XNNPACK delegate), mlpackage (Core ML image "
        "classifier; fp32 and --fp16) (default onnx,tflite)",
    )
    ex.add_argument("--fp16", action="store_true", help="also fp16 files: TFLite float16 weights, Core ML fp16")
    ex.add_argument(
        "--int8",
        action="store_true",
        help="also int8 files (post-training, calibrated on --data; onnx, tflite and pte)",
    )
    layout = ex.add_mutually_exclusive_group()
    layout.add_argument("--nhwc", action="store_true", help="TFLite input in NHWC order, camera frames' layout and "
                        "TFLite's convention (the default; the LUT's TFLite kernels are NHWC too)")  # fmt: skip
    layout.add_argument("--nchw", action="store_true", help="TFLite input in NCHW order, as PyTorch and the ONNX file "
                        "(adds layout transposes on a phone)")  # fmt: skip
    ex.add_argument("--dynamic-batch", action="store_true", help="ONNX input with a dynamic batch dimension")
    ex.add_argument("--simplify", action="store_true",
                    help="optimize the ONNX graph with onnxscript (2-3%% faster on ONNX Runtime CPU)")  # fmt: skip
    ex.add_argument("--data", help="images for int8 calibration and the agreement check (as for hwnas search)")
    ex.add_argument("--calibration-images", type=positive_int, default=500, help="training images for int8 (500)")
    ex.add_argument(
        "--check-images",
        type=positive_int,
        default=500,
        help="images the files are checked on against PyTorch (and int8 agreement, with --data)",
    )
    ex.add_argument("--device", metavar="SPEC", help="measure the files of its format there")
    ex.add_argument("--lut", help="LUT of --device, for the predicted latency")
    ex.add_argument("--budget-ms", type=positive_float,
                    help="judge the measured files against it: exit 1 over beyond the noise, 3 within noise of it")  # fmt: skip
    add_statistic_arg(ex)
    ex.add_argument("--allow-over-budget", action="store_true", help="report an over-budget file, exit 0")
    ex.add_argument("--budget-gates", metavar="P,P", help="precisions the budget gates; files of others are reported "
                    "only (default: fp32,int8 on a CPU device, where fp16 weights are dequantized; all elsewhere)")  # fmt: skip
    ex.add_argument("--min-int8-agreement", type=share, default=0.95, help="warn when an int8 file's top-1 agrees "
                    "with fp32 PyTorch on fewer of the check images")  # fmt: skip
    ex.add_argument("--force", action="store_true", help="use a LUT measured on another device")
    ex.add_argument("--name", help="file name stem (default: the architecture's name, or 'model')")
    ex.add_argument("--out", default="export", help="output folder (default ./export)")
    ex.add_argument("--no-progress", action="store_true", help="no progress bar")
    ex.set_defaults(func=cmd_export)
