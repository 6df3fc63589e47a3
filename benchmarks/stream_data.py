"""Streamed data at 224 px: peak memory of a search epoch against the dataset's size, and decode
throughput against a plain ImageFolder + DataLoader loop, side by side (BENCHMARKS.md, "Data at scale").

    python benchmarks/stream_data.py --small 2000 --large 20000 --out /tmp/stream-bench

1. Writes two folders of hwnas-synthetic images at 224 px as JPEG (quality 90), 4 classes.
2. Runs one search epoch (``hwnas search --space tiny --epochs 1 --warmup-epochs 0``, 2 workers)
   on each, streamed and in memory, in a fresh process, and samples the whole process tree's
   proportional set size (PSS, from /proc/PID/smaps_rollup, so pages the forked workers share with
   the main process count once) every 0.1 s; reports the peak.
3. Times decoding the small folder into uint8 batches of 64, with 1 and 2 workers: hwnas's loader
   (:func:`hwnas.train.loader.decoded_batches`) against the loop torchvision's ImageFolder runs
   (PIL open, convert to RGB, to a tensor, default collate; torchvision itself has no CPU wheel for
   this torch here, so the loop is written out), interleaved, 3 rounds, the median of each.

Nothing else may run on the machine meanwhile (2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from hwnas.train.data import synthetic
from hwnas.train.files import scan_folder
from hwnas.train.loader import decoded_batches

SIZE, CLASSES, CHUNK = 224, 4, 250  # 4: the tiny space's classes


def write_folder(root: Path, n: int) -> Path:
    if (root / "done").exists():
        return root
    for c in range(CLASSES):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    for k in range(0, n, CHUNK):
        part = synthetic(n=min(CHUNK, n - k), size=SIZE, classes=CLASSES, seed=k)
        for i in range(len(part)):
            arr = part.x[i].permute(1, 2, 0).numpy()
            Image.fromarray(arr).save(root / f"class{int(part.y[i])}" / f"{k + i:06d}.jpg", quality=90)
    (root / "done").write_text(str(n))
    return root


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return out


def _pss(pid: int) -> int:
    total = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def search_epoch(data: Path, mode: str, out: Path) -> dict[str, float]:
    cmd = [sys.executable, "-m", "hwnas", "search", "--space", "tiny", "--budget-mflops", "0.6", "--data", str(data),
           "--epochs", "1", "--warmup-epochs", "0", "--evolution", "0", "--batch-size", "64", "--data-mode", mode,
           "--workers", "2", "--out", str(out), "--no-progress"]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _pss(proc.pid))
            time.sleep(0.1)

    t = threading.Thread(target=sample)
    t.start()
    _, err = proc.communicate()
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"search failed: {err[-2000:]}")
    return {"peak_pss_mb": peak[0] / 1e6, "seconds": time.perf_counter() - start}


class _Plain(Dataset[tuple[torch.Tensor, int]]):
    """What torchvision.datasets.ImageFolder with transforms.PILToTensor() does per image."""

    def __init__(self, paths: list[str], labels: list[int]) -> None:
        self.paths, self.labels = paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with open(self.paths[i], "rb") as fh:
            img = Image.open(fh).convert("RGB")
        return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous(), self.labels[i]


def decode_rate(data: Path, workers: int, rounds: int = 3) -> dict[str, float]:
    files = scan_folder(data)
    files.first_size()
    assert files.paths is not None
    n = len(files)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    tasks = [order[i : i + 64] for i in range(0, n, 64)]
    plain = _Plain([files.paths[i] for i in order], [int(files.labels[i]) for i in order])
    times: dict[str, list[float]] = {"hwnas": [], "plain": []}
    for _ in range(rounds):
        t = time.perf_counter()
        count = sum(len(b.x) for b in decoded_batches(files, tasks, workers))
        times["hwnas"].append(time.perf_counter() - t)
        assert count == n
        t = time.perf_counter()
        loader = DataLoader(plain, batch_size=64, num_workers=workers, prefetch_factor=4)
        count = sum(len(x) for x, _ in loader)
        times["plain"].append(time.perf_counter() - t)
        assert count == n
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"workers": workers, "images": n, "hwnas_img_s": n / med["hwnas"], "plain_img_s": n / med["plain"],
            "ratio": med["plain"] / med["hwnas"], "rounds_hwnas_s": times["hwnas"], "rounds_plain_s": times["plain"]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--large", type=int, default=20000)
    ap.add_argument("--out", type=Path, default=Path("/tmp/stream-bench"))
    ap.add_argument("--skip-memory-large", action="store_true", help="leave out the in-memory run on the large set")
    ap.add_argument("--part", choices=("all", "epochs", "decode"), default="all",
                    help="only the search epochs' memory, or only the (timed) decode throughput")  # fmt: skip
    args = ap.parse_args()
    folders = {n: write_folder(args.out / f"jpeg-{n}", n) for n in (args.small, args.large)}
    result: dict[str, object] = {"machine": os.uname().nodename, "cores": os.cpu_count(),
                                 "date": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
    epochs = []
    for n, folder in folders.items() if args.part != "decode" else []:
        for mode in ("stream", "memory"):
            if mode == "memory" and n == args.large and args.skip_memory_large:
                continue
            row = {
                "images": n,
                "mode": mode,
                **search_epoch(folder, mode, args.out / f"run-{n}-{mode}-{time.time_ns()}"),
            }
            print(json.dumps(row), flush=True)
            epochs.append(row)
    result["search_epoch"] = epochs
    result["decode"] = [decode_rate(folders[args.small], w) for w in (1, 2)] if args.part != "epochs" else []
    for row in result["decode"]:  # type: ignore[attr-defined]
        print(json.dumps(row), flush=True)
    (args.out / f"result-{args.part}.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / f'result-{args.part}.json'}")


if __name__ == "__main__":
    main()
