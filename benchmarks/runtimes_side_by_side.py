"""One child on ONNX Runtime, LiteRT and ExecuTorch side by side: single thread, fp32 and int8.

Usage:
    python benchmarks/runtimes_side_by_side.py [--space cifar] [--seed 3] [--rounds 7]
        [--data synthetic:n=200,size=32] [--out runtimes.json]

Exports one architecture of ``--space`` (random weights with trained-looking BN statistics: a
latency does not depend on the weights' values) as ONNX, TFLite and ExecuTorch files, fp32 and
int8 (calibrated on ``--data``), through ``hwnas export``'s own pipeline, so each file has passed
its check against PyTorch. Then times the six files on ``ort-cpu:threads=1``,
``tflite-cpu:threads=1`` and ``et-cpu:threads=1`` in ``--rounds`` rounds, each round in a shuffled
order, so a noisy phase touches every file alike. A round's figure is its fastest run (as the
LUT's) and its median run; the table gives the median over rounds and half their range (the noise
floor of this run). Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
from datetime import datetime
from pathlib import Path

import torch

from hwnas.devices import TimingConfig, open_device
from hwnas.devices.host import cpu_model
from hwnas.export.child_file import Child
from hwnas.export.pipeline import export_child, export_images
from hwnas.models.builder import build_model
from hwnas.spaces import get_space

DEVICES = {"onnx": "ort-cpu:threads=1", "tflite": "tflite-cpu:threads=1", "pte": "et-cpu:threads=1"}


def child_of(space: str, seed: int) -> Child:
    arch = get_space(space).sample(seed)
    torch.manual_seed(seed)
    model = build_model(arch).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return Child(arch, model, [0.5] * 3, [0.25] * 3, {})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="cifar")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--data", default="synthetic:n=200,size=32")
    ap.add_argument("--out", default="runtimes.json")
    args = ap.parse_args()
    child = child_of(args.space, args.seed)
    work = Path(tempfile.mkdtemp(prefix="hwnas-runtimes-"))
    check, calibration, labelled = export_images(args.data, child, 32, 100)
    files = export_child(child, work, list(DEVICES), ["fp32", "int8"], check_inputs=check, calibration=calibration,
                         labelled=labelled, stem="m")  # fmt: skip
    timing = TimingConfig()
    per: dict[str, dict[str, list[float]]] = {f.path.name: {"fastest": [], "median": []} for f in files}
    rng = random.Random(0)
    for _ in range(args.rounds):
        order = list(files)
        rng.shuffle(order)
        for f in order:
            device = open_device(DEVICES[f.format])
            runner = device.load(f.path.read_bytes())
            try:
                stats = device.measure(runner, timing)
            finally:
                runner.close()
            per[f.path.name]["fastest"].append(stats.min_ms or stats.median_ms)
            per[f.path.name]["median"].append(stats.median_ms)
    rows = []
    for f in files:
        fast, med = per[f.path.name]["fastest"], per[f.path.name]["median"]
        rows.append({"file": f.path.name, "device": DEVICES[f.format], "precision": f.precision,
                     "fastest_ms": statistics.median(fast), "median_ms": statistics.median(med),
                     "noise_ms": (max(fast) - min(fast)) / 2, "agreement": f.top1_agreement,
                     "max_abs_diff": f.max_abs_diff})  # fmt: skip
    result = {"when": datetime.now().strftime("%Y-%m-%d %H:%M"), "cpu": cpu_model(), "arch": child.arch.to_str(),
              "space": args.space, "seed": args.seed, "rounds": args.rounds, "rows": rows}  # fmt: skip
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['when']}, {args.space} seed {args.seed}, {args.rounds} rounds, {result['cpu']}")
    print("| runtime (threads=1) | fp32 fastest ms | int8 fastest ms | int8 / fp32 | fp32 median ms | int8 median ms |")
    print("|---|---|---|---|---|---|")
    for fmt, spec in DEVICES.items():
        r32 = next(r for r in rows if r["file"] == f"m-fp32.{fmt}")
        r8 = next(r for r in rows if r["file"] == f"m-int8.{fmt}")
        print(f"| {spec} | {r32['fastest_ms']:.3f} +- {r32['noise_ms']:.3f} | {r8['fastest_ms']:.3f} +- "
              f"{r8['noise_ms']:.3f} | {r8['fastest_ms'] / r32['fastest_ms']:.2f} | {r32['median_ms']:.3f} | "
              f"{r8['median_ms']:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
