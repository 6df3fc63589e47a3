"""A streamed 224-px search of the ``fbnetv2`` space on a GPU: images/s, the share of the training
loop spent waiting for data, GPU utilisation and peak GPU memory (BENCHMARKS.md, "Data at scale").

    python benchmarks/gpu_stream_search.py --out /tmp/gpu-stream            # on the GPU machine
    python benchmarks/gpu_stream_search.py --out /tmp/s --device cpu --space tiny --images 48 \\
        --size 32 --batch-size 8 --precision fp32                           # a dry run on a CPU

1. Writes a folder of hwnas-synthetic images as JPEG (quality 90) at ``--size`` px, 10 classes,
   encoding with every core (no ImageNet is reachable; the decode cost per image is ImageNet's at
   224 px, the content is simpler).
2. Searches it streamed (``--data-mode stream``, ``--workers`` decoding processes) with the
   ``imagenet`` recipe at ``--batch-size`` and ``--precision`` for ``--epochs`` epochs (the first
   trains weights only), FLOPs as the cost (no LUT of this GPU needed), no evolution.
3. Reports, from the search's own timing (``search.json``'s ``compute_time``): images per second of
   the training loop, the share of its wall time spent waiting for a batch; and from the GPU:
   ``nvidia-smi`` utilisation sampled every 0.5 s during the search, peak memory allocated by torch.
   Writes ``gpu_stream_search.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

from PIL import Image

CLASSES, CHUNK = 10, 200


def _write_chunk(root: str, start: int, n: int, size: int) -> None:
    from hwnas.train.data import synthetic

    part = synthetic(n=n, size=size, classes=CLASSES, seed=start)
    for i in range(n):
        arr = part.x[i].permute(1, 2, 0).numpy()
        Image.fromarray(arr).save(Path(root) / f"class{int(part.y[i])}" / f"{start + i:06d}.jpg", quality=90)


def write_folder(root: Path, n: int, size: int) -> Path:
    """``n`` JPEGs of ``size`` px in class folders, written once (a ``done`` file marks it)."""
    done = root / "done"
    if done.exists() and done.read_text() == f"{n} {size}":
        return root
    shutil.rmtree(root, ignore_errors=True)
    for c in range(CLASSES):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        jobs = [pool.submit(_write_chunk, str(root), k, min(CHUNK, n - k), size) for k in range(0, n, CHUNK)]
        for job in jobs:
            job.result()
    done.write_text(f"{n} {size}")
    return root


class GpuSampler:
    """``nvidia-smi``'s utilisation of GPU 0, sampled every 0.5 s while running (none without it)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "-i", "0"], capture_output=True, text=True, timeout=5).stdout  # fmt: skip
                self.samples.append(float(out.strip().splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                return

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--space", default="fbnetv2")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--precision", default="bf16", choices=("fp32", "bf16", "fp16"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=None, help="decoding processes (default: one per core, at most 8)")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()

    import torch

    from hwnas.search.config import SearchConfig
    from hwnas.search.cost import make_cost
    from hwnas.search.loop import Search
    from hwnas.search.recipes import RECIPES
    from hwnas.spaces import get_space
    from hwnas.train.loader import default_workers

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    folder = write_folder(args.out / f"images-{args.images}-{args.size}", args.images, args.size)
    write_s = time.perf_counter() - t0
    space = get_space(args.space)
    space = replace(space, num_classes=CLASSES)  # the data's classes
    cost = make_cost("flops", space)
    lo, hi = cost.smallest(space)[1], cost.largest(space)[1]
    recipe = {**RECIPES["imagenet"](args.epochs), "warmup_epochs": 1, "batch_size": args.batch_size,
              "precision_train": args.precision}  # fmt: skip
    cfg = SearchConfig(space=args.space, budget=round(lo + 0.5 * (hi - lo), 3), cost="flops", data=str(folder),
                       data_mode="stream", workers=args.workers, torch_device=args.device, evolution=0,
                       checkpoint_every=1e9, **recipe)  # fmt: skip
    run = args.out / "run"
    shutil.rmtree(run, ignore_errors=True)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with GpuSampler() as gpu:
        search = Search(cfg, run, progress=False)
        result = search.run()
    times = json.loads((run / "search.json").read_text())["compute_time"]
    report = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "space": args.space, "images": args.images, "size": args.size, "batch_size": args.batch_size,
        "precision": args.precision, "epochs": args.epochs, "workers": default_workers() if args.workers is None else args.workers,
        "cores": os.cpu_count(), "write_folder_s": round(write_s, 1), "search_s": round(result.seconds, 1),
        "weight_steps": search.timing["weight_steps"], "arch_steps": search.timing["arch_steps"],
        "images_per_s": times["images_per_s"], "data_wait_share": times["data_wait_share"],
        "gpu_util_mean": statistics.mean(gpu.samples) if gpu.samples else None,
        "gpu_util_samples": len(gpu.samples),
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "arch": result.derivation.arch.to_str(),
        "command": " ".join(sys.argv),
    }  # fmt: skip
    (args.out / "gpu_stream_search.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
