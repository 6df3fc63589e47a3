"""Where an ONNX Runtime int8 (QDQ) network spends its time, beside its fp32 version.

    python benchmarks/ort_int8_profile.py VALIDATION_CSV [--runs 300]

VALIDATION_CSV: the ``validation.csv`` of ``hwnas lut validate`` on an int8 ``ort-cpu`` LUT (as
``benchmarks/lut_accuracy.py --device ort-cpu:threads=1,precision=int8`` writes it). Takes the
network whose measured latency is the largest multiple of its LUT sum, builds it at fp32 and as
hwnas ships int8 (static QDQ), runs each ``--runs`` times on one thread with ONNX Runtime's
profiler, and prints per-operator node time per run and the operators of the optimized graph
(which convolutions ORT fused into ``QLinearConv`` and which it left as float ``Conv``).
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd

from hwnas.latency.network_timing import network_artifacts, network_input_shape
from hwnas.spaces.arch import Architecture


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("validation_csv")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--num-classes", type=int, default=10)
    args = ap.parse_args()
    v = pd.read_csv(args.validation_csv)
    row = v.iloc[int((v["measured_ms"] / v["raw_ms"]).argmax())]
    print(f"{row['arch']}: LUT sum {row['raw_ms']:.3f} ms, measured {row['measured_ms']:.3f} ms")
    arch = Architecture.from_str(row["arch"], num_classes=args.num_classes)
    shape = network_input_shape(arch)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="hwnas-ortprof-") as tmp:
        for precision in ("fp32", "int8"):
            [data] = network_artifacts([arch], "onnx", 1, precision)
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(tmp) / f"profile-{precision}")
            so.optimized_model_filepath = str(Path(tmp) / f"optimized-{precision}.onnx")
            session = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            for _ in range(args.runs):
                session.run(None, {name: x})
            events = json.loads(Path(session.end_profiling()).read_text())
            time_us: collections.Counter[str] = collections.Counter()
            count: collections.Counter[str] = collections.Counter()
            for e in events:
                if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                    time_us[e["args"]["op_name"]] += e["dur"]
                    count[e["args"]["op_name"]] += 1
            print(f"{precision}: node time per run {sum(time_us.values()) / args.runs:.1f} us")
            for op, t in time_us.most_common(12):
                print(f"  {op:28s} {t / args.runs:8.1f} us  x{count[op] // args.runs}")
            graph = onnx.load(so.optimized_model_filepath).graph
            print("  optimized graph:", collections.Counter(n.op_type for n in graph.node).most_common(12))


if __name__ == "__main__":
    main()
