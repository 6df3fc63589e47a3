"""int8 export on a CIFAR-10-trained child: top-1 agreement with fp32 and the accuracy drop.

Usage:
    python benchmarks/int8_accuracy.py --data ../shared/data/cifar10-jpeg.npz [--arch-seed 11] \
        [--limit 5000] [--epochs 10] [--images 500] [--workdir DIR]

Trains a random ``cifar`` architecture with ``hwnas train`` on a class-balanced subset of the
training images, exports it with ``hwnas export --format onnx,tflite --int8`` (calibrated on 200
training images), and reads the model cards: top-1 agreement of each int8 file with the fp32
PyTorch model, and accuracy of both, on ``--images`` test images the calibration never saw.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

from hwnas.spaces import get_space


def run(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "hwnas", *args], capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-2000:])
        raise SystemExit(proc.returncode)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--arch-seed", type=int, default=11)
    ap.add_argument("--limit", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="hwnas-int8-"))
    work.mkdir(parents=True, exist_ok=True)
    arch = get_space("cifar").sample(args.arch_seed)
    arch.save(work / "arch.json")
    run("train", "--arch", str(work / "arch.json"), "--data", args.data, "--limit", str(args.limit), "--epochs",
        str(args.epochs), "--out", str(work / "child.safetensors"), "--no-progress")  # fmt: skip
    run("export", "--weights", str(work / "child.safetensors"), "--format", "onnx,tflite", "--int8", "--data", args.data,
        "--check-images", str(args.images), "--out", str(work / "export"), "--name", "m")  # fmt: skip
    print(f"<!-- {date.today()}, {platform.machine()}, {os.cpu_count()} cores; cifar architecture "
          f"`{arch.to_str()}`; trained {args.epochs} epochs on {args.limit} CIFAR-10 images; "
          f"{args.images} test images -->")  # fmt: skip
    print("| file | top-1 agreement with fp32 | accuracy | fp32 PyTorch accuracy | drop |")
    print("|---|---|---|---|---|")
    for fmt in ("onnx", "tflite"):
        c = json.loads((work / "export" / f"m-int8.{fmt}.json").read_text())["checks"]
        print(f"| {fmt} int8 | {c['top1_agreement_vs_fp32']:.1%} | {c['accuracy']:.1%} | {c['accuracy_fp32_pytorch']:.1%} "
              f"| {100 * (c['accuracy_fp32_pytorch'] - c['accuracy']):+.1f} points |")  # fmt: skip


if __name__ == "__main__":
    main()
