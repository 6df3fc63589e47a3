"""Search throughput on 1 and N processes (torchrun, DDP) at the same global batch, and the cost of
DDP's ``find_unused_parameters``, measured side by side in one run.

    python benchmarks/ddp_throughput.py --out bench-ddp                       # this CPU: 1 vs 2 processes (gloo)
    python benchmarks/ddp_throughput.py --out bench-ddp --torch-device cuda \\
        --nproc 8 --space fbnetv2 --size 224 --images 4096 --batch-size 192    # a GPU node: 1 vs 8 GPUs (NCCL)

Throughput: each round runs ``hwnas search`` for one epoch (no warm-up, so every step is a weight
step plus an architecture step) once in one process and once under ``torchrun --nproc_per_node N``,
alternating, and reads ``compute_time.images_per_s`` from ``search.json`` (global images per second
of the training loop). On a CPU the machine's cores are split evenly between the processes
(``OMP_NUM_THREADS``), so 1 process uses every core too.

find_unused_parameters: N processes (spawned, gloo or NCCL) train the relaxed supernet (every
parameter used) in DDP with the flag on and off, alternating per round; the median step time of
each is reported. The search needs the flag on (a sampled child leaves paths unused).

Writes ``OUT/ddp_throughput.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def search_rate(n: int, args: argparse.Namespace, out: Path, budget: float) -> float:
    threads = max(1, (os.cpu_count() or 1) // n) if args.torch_device == "cpu" else 1
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    hwnas = ["search", "--space", args.space, "--budget-mflops", f"{budget:.6g}", "--data",
             f"synthetic:n={args.images},size={args.size}", "--epochs", "1", "--warmup-epochs", "0",
             "--batch-size", str(args.batch_size), "--evolution", "0", "--no-progress", "--workers", "0",
             "--torch-device", args.torch_device, "--out", str(out)]  # fmt: skip
    if n == 1:
        cmd = [sys.executable, "-m", "hwnas", *hwnas]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
               "-m", "hwnas", *hwnas]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return float(json.loads((out / "search.json").read_text())["compute_time"]["images_per_s"])


def _unused_worker(rank: int, world: int, port: int, args: argparse.Namespace, result: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn import functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP

    from hwnas.search.supernet import SuperNet
    from hwnas.spaces import get_space

    cuda = args.torch_device == "cuda"
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if cuda:
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    dev = torch.device("cuda", rank) if cuda else torch.device("cpu")
    space = get_space(args.space)
    torch.manual_seed(0)
    per_rank = args.batch_size // world
    x = torch.randn(per_rank, space.in_channels, args.size, args.size, device=dev)
    y = torch.randint(0, space.num_classes, (per_rank,), device=dev)
    times: dict[str, list[float]] = {"on": [], "off": []}
    models = {}
    for flag in ("on", "off"):
        net = SuperNet(space).to(dev)
        alphas = [name for name, _ in net.named_parameters() if name.endswith("alpha")]
        DDP._set_params_and_buffers_to_ignore_for_model(net, alphas)
        models[flag] = DDP(net, device_ids=[rank] if cuda else None, find_unused_parameters=flag == "on")
    for _ in range(args.unused_rounds):
        for flag, model in models.items():
            for step in range(args.unused_steps + 1):
                if cuda:
                    torch.cuda.synchronize()
                t = time.perf_counter()
                F.cross_entropy(model(x, 1.0), y).backward()
                if cuda:
                    torch.cuda.synchronize()
                if step:  # the first step of a round warms up
                    times[flag].append(time.perf_counter() - t)
                model.zero_grad(set_to_none=True)
    if rank == 0:
        Path(result).write_text(json.dumps(times))
    dist.destroy_process_group()


def unused_cost(args: argparse.Namespace) -> dict[str, float]:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        result = str(Path(tmp) / "times.json")
        mp.spawn(_unused_worker, args=(args.nproc, port, args, result), nprocs=args.nproc)
        times = json.loads(Path(result).read_text())
    on, off = statistics.median(times["on"]), statistics.median(times["off"])
    return {"step_ms_find_unused_on": 1e3 * on, "step_ms_find_unused_off": 1e3 * off, "ratio_on_over_off": on / off,
            "steps_each": len(times["on"])}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--torch-device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--space", default="cifar")
    p.add_argument("--size", type=int, default=32, help="image side in pixels")
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=64, help="the global batch, split over the processes")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--unused-rounds", type=int, default=3)
    p.add_argument("--unused-steps", type=int, default=10)
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from hwnas.search.cost import make_cost
    from hwnas.search.derive import check_budget
    from hwnas.spaces import get_space

    space = get_space(args.space)
    lo, hi = check_budget(space, make_cost("flops", space, None), 1e12)
    budget = (lo + hi) / 2
    args.out.mkdir(parents=True, exist_ok=True)
    rates: dict[int, list[float]] = {1: [], args.nproc: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for n in rates:
                rates[n].append(search_rate(n, args, Path(tmp) / f"n{n}-r{r}", budget))
                print(f"round {r + 1}: {n} process(es): {rates[n][-1]:.1f} images/s", flush=True)
    unused = unused_cost(args)
    one, many = statistics.median(rates[1]), statistics.median(rates[args.nproc])
    report = {
        "device": args.torch_device, "nproc": args.nproc, "space": args.space, "size": args.size,
        "images": args.images, "global_batch": args.batch_size, "cpus": os.cpu_count(),
        "images_per_s": {str(n): v for n, v in rates.items()},
        "median_images_per_s": {"1": one, str(args.nproc): many}, "speedup": many / one,
        "find_unused_parameters": unused, "date": time.strftime("%Y-%m-%d %H:%M"),
    }  # fmt: skip
    (args.out / "ddp_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"1 process: {one:.1f} images/s; {args.nproc} processes: {many:.1f} images/s "
          f"({many / one:.2f}x), global batch {args.batch_size}, {args.space} at {args.size} px, {args.torch_device}")  # fmt: skip
    print(f"DDP step with find_unused_parameters: {unused['step_ms_find_unused_on']:.1f} ms, without: "
          f"{unused['step_ms_find_unused_off']:.1f} ms ({unused['ratio_on_over_off']:.3f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
