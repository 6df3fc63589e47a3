"""Export time and size per format for an architecture (default FBNetV2-F1), and its latency.

Usage:
    python benchmarks/export_cost.py [--arch FBNetV2-F1] [--repeat 2] [--device ort-cpu:threads=1 ...]

Builds the architecture (random weights, trained-looking BatchNorm statistics), exports ONNX
fp32, ONNX int8, TFLite fp32, fp16 and int8 with ``hwnas.export.pipeline.export_child``
(conversion plus the numeric check against PyTorch), ``--repeat`` times into fresh folders, and
reports the fastest export time per file (the first repeat pays the imports), the size, and the
median latency of each file on every ``--device`` that runs its format. int8 is calibrated on
32 hwnas-synthetic images resized to the architecture's resolution. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import torch

from hwnas.devices import open_device
from hwnas.export.child_file import Child
from hwnas.export.latency_check import measure_file
from hwnas.export.pipeline import export_child
from hwnas.models.builder import build_model
from hwnas.spaces import get_arch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="FBNetV2-F1")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--device", nargs="*", default=["ort-cpu:threads=1", "tflite-cpu:threads=1"])
    args = ap.parse_args()
    arch = get_arch(args.arch)
    torch.manual_seed(0)
    model = build_model(arch).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    child = Child(arch, model, [0.5] * 3, [0.25] * 3, {})
    rng = np.random.default_rng(0)
    r = arch.resolution
    calibration = [rng.standard_normal((1, 3, r, r)).astype(np.float32) for _ in range(32)]
    best: dict[tuple[str, str], tuple[float, int, float | None, Path]] = {}
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            for fmt in ("onnx", "tflite"):
                precisions = ["fp32", "int8"] if fmt == "onnx" else ["fp32", "fp16", "int8"]
                for item in export_child(child, Path(tmp), [fmt], precisions, calibration=calibration, stem="m"):
                    key = (item.format, item.precision)
                    keep = Path(tempfile.gettempdir()) / f"hwnas-export-cost-{item.path.name}"
                    keep.write_bytes(item.path.read_bytes())
                    if key not in best or item.export_s < best[key][0]:
                        best[key] = (item.export_s, item.size_bytes, item.max_abs_diff, keep)
    devices = [open_device(d) for d in args.device]
    print(f"<!-- {date.today()}, {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.arch} at {r} px, best of {args.repeat} exports -->")  # fmt: skip
    head = " | ".join(f"latency {d.spec.split(',')[0]} (ms)" for d in devices)
    print(f"| file | export + check (s) | size (MB) | max abs diff vs PyTorch | {head} |")
    print("|---|---|---|---|" + "---|" * len(devices))
    for (fmt, precision), (seconds, size, diff, path) in best.items():
        lat = []
        for d in devices:
            lat.append(f"{measure_file(d, path.read_bytes(), (1, 3, r, r))[0]:.2f}" if d.format == fmt else "-")
        diff_text = "-" if diff is None else f"{diff:.1e}"
        print(f"| {fmt} {precision} | {seconds:.1f} | {size / 2**20:.2f} | {diff_text} | {' | '.join(lat)} |")


if __name__ == "__main__":
    main()
