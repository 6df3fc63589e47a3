"""Does `hwnas export --simplify` (onnxscript's optimizer) make ONNX Runtime faster?

Usage:
    python benchmarks/onnx_simplify.py [--rounds 5]

For FBNetV2-F1 and one random `cifar` architecture (seed 3), random weights: export with and
without ``simplify``, count graph nodes, and time both on ``ort-cpu:threads=1`` in interleaved
rounds (at least 0.3 s of timing each); prints the medians. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import warnings
from datetime import date

import onnx

from hwnas.convert.onnx_export import onnx_bytes
from hwnas.devices import TimingConfig, open_device
from hwnas.models.builder import build_model
from hwnas.spaces import get_arch, get_space


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    device = open_device("ort-cpu:threads=1")
    print(f"<!-- {date.today()}, {platform.machine()}, {os.cpu_count()} cores, median of {args.rounds} rounds -->")
    print("| network | ONNX nodes | ORT latency (ms) |")
    print("|---|---|---|")
    for name, arch in [("FBNetV2-F1", get_arch("FBNetV2-F1")), ("cifar random (seed 3)", get_space("cifar").sample(3))]:
        model = build_model(arch).eval()
        shape = (1, 3, arch.resolution, arch.resolution)
        files = {"plain": onnx_bytes(model, shape), "simplified": onnx_bytes(model, shape, simplify=True)}
        times: dict[str, list[float]] = {k: [] for k in files}
        for _ in range(args.rounds):
            for label, data in files.items():
                runner = device.load(data, shape)
                times[label].append(device.measure(runner, TimingConfig(min_time_s=0.3)).median_ms)
                runner.close()
        nodes = {k: len(onnx.load_from_string(v).graph.node) for k, v in files.items()}
        p, s = statistics.median(times["plain"]), statistics.median(times["simplified"])
        print(
            f"| {name} | {nodes['plain']} -> {nodes['simplified']} | {p:.3f} -> {s:.3f} ({(s / p - 1) * 100:+.1f}%) |"
        )


if __name__ == "__main__":
    main()
