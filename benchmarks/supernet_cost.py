"""Supernet cost: memory against the number of channel choices, and step time against a child.

Usage:
    python benchmarks/supernet_cost.py memory [--choices 2 4 8 16 32] [--width 64] [--size 16] [--batch 32]
    python benchmarks/supernet_cost.py compute [--space cifar] [--batch 64] [--repeats 20] [--paths masked]

memory: a space of 8 searchable 3x3 conv layers of up to ``--width`` channels, each with K evenly
spaced out-channel choices (the paper's setup, scaled to a CPU; docs/design.md, "Method notes"), one training step
(forward, backward, SGD) at batch ``--batch``; each (mode, K) runs in a fresh subprocess that
reports the growth of its peak resident memory over the step (``ru_maxrss`` after minus before)
and the step time. Modes: ``masked`` (DMasking) and ``explicit`` (one conv per choice, FBNet).
On a CUDA machine (``--torch-device cuda``) it reports ``torch.cuda.max_memory_allocated``.

compute: the median time of a supernet weight step (at the largest resolution), of an
architecture step, and of one evaluation of the expected cost (forward + backward), against a
training step of the space's largest child (by FLOPs), same batch, both in the memory layout the
search trains in (channels-last on a CPU since 2026-11-29; the rows before that date ran NCHW).
``--paths masked-se`` measures the supernet with the SE ops on their own weights. Run it alone on
the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import date

import torch
from noise import relative_iqr
from torch.nn import functional as F

from hwnas.search.config import PATHS


def _space(k: int, width: int, size: int):
    from hwnas.spaces.space import SearchSpace

    channels = sorted({max(1, round(width * (i + 1) / k)) for i in range(k)})
    return SearchSpace.from_dict(
        {
            "name": f"mem-k{k}",
            "resolutions": [size],
            "num_classes": 10,
            "stages": [
                {"name": "stem", "depth": 1, "stride": 1, "channels": [width], "ops": ["conv_k3"]},
                {"depth": 8, "stride": 1, "channels": channels, "ops": ["conv_k3"]},
            ],
        },
        "benchmark",
    )


def _one_step(mode: str, k: int, width: int, size: int, batch: int, device: str) -> dict[str, float]:
    from hwnas.search.supernet import SuperNet

    torch.manual_seed(0)
    dev = torch.device(device)
    net = SuperNet(_space(k, width, size), paths=mode).to(dev).train()
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 3, size, size, device=dev), torch.randint(0, 10, (batch,), device=dev)

    def step() -> None:
        loss = F.cross_entropy(net(x, tau=1.0), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if dev.type == "cuda":
        step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        return {"peak_mb": torch.cuda.max_memory_allocated() / 2**20, "step_s": time.perf_counter() - t0}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    step()
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    params = sum(p.numel() for p in net.weight_parameters())
    return {"peak_mb": (after - before) / 1024, "step_s": seconds, "params_m": params / 1e6}


def memory(args: argparse.Namespace) -> None:
    print(f"<!-- {date.today()}, {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"device {args.torch_device}, width {args.width}, {args.size}x{args.size}, batch {args.batch} -->")  # fmt: skip
    print("| channel choices K | DMasking step memory (MB) | DMasking step (s) | explicit step memory (MB) | "
          "explicit step (s) | explicit / DMasking memory |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    rows = {}
    for k in args.choices:
        out = {}
        for mode in ("masked", "explicit"):
            cmd = [sys.executable, __file__, "_one", mode, str(k), str(args.width), str(args.size), str(args.batch),
                   args.torch_device]  # fmt: skip
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                out[mode] = None
                sys.stderr.write(res.stderr[-2000:])
            else:
                out[mode] = json.loads(res.stdout.strip().splitlines()[-1])
        rows[k] = out
        m, e = out["masked"], out["explicit"]
        e_text = f"{e['peak_mb']:.0f} | {e['step_s']:.2f}" if e else "failed (out of memory?) | -"
        ratio = f"{e['peak_mb'] / m['peak_mb']:.1f}x" if e and m else "-"
        print(f"| {k} | {m['peak_mb']:.0f} | {m['step_s']:.2f} | {e_text} | {ratio} |", flush=True)
    first, last = rows[args.choices[0]], rows[args.choices[-1]]
    if first["masked"] and last["masked"]:
        print(f"\nDMasking memory K={args.choices[-1]} / K={args.choices[0]}: "
              f"{last['masked']['peak_mb'] / first['masked']['peak_mb']:.2f}x")  # fmt: skip
    if first["explicit"] and last["explicit"]:
        print(f"explicit memory K={args.choices[-1]} / K={args.choices[0]}: "
              f"{last['explicit']['peak_mb'] / first['explicit']['peak_mb']:.2f}x")  # fmt: skip


def _median_time(fn, repeats: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compute(args: argparse.Namespace) -> None:
    from hwnas.models.builder import build_model
    from hwnas.search.cost import make_cost
    from hwnas.search.supernet import SuperNet
    from hwnas.spaces import get_space
    from hwnas.train.training import training_layout

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = get_space(args.space)
    res = max(space.resolutions)
    x = torch.randn(args.batch, 3, res, res)
    y = torch.randint(0, space.num_classes, (args.batch,))
    dev = torch.device("cpu")
    net = training_layout(SuperNet(space, paths=args.paths), dev).train()  # as the search trains it
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=0.01)
    expected = make_cost("flops", space).expected(space)
    child = training_layout(build_model(space.largest()), dev).train()
    c_opt = torch.optim.SGD(child.parameters(), lr=0.01, momentum=0.9)

    def super_step() -> None:
        loss = F.cross_entropy(net(x, tau=1.0, resolution=res), y)
        w_opt.zero_grad(set_to_none=True)
        loss.backward()
        w_opt.step()

    def arch_step() -> None:
        for p in net.weight_parameters():
            p.requires_grad_(False)
        loss = F.cross_entropy(net(x, tau=1.0, resolution=res), y) + 0.1 * expected(*net.choice_probs())
        a_opt.zero_grad(set_to_none=True)
        loss.backward()
        a_opt.step()
        for p in net.weight_parameters():
            p.requires_grad_(True)

    def cost_eval() -> None:
        a_opt.zero_grad(set_to_none=True)
        expected(*net.choice_probs()).backward()

    def child_step() -> None:
        loss = F.cross_entropy(child(x), y)
        c_opt.zero_grad(set_to_none=True)
        loss.backward()
        c_opt.step()

    # interleave the measurements so drift hits all alike
    times: dict[str, list[float]] = {"child": [], "supernet": [], "arch": [], "cost": []}
    fns = {"child": child_step, "supernet": super_step, "arch": arch_step, "cost": cost_eval}
    for fn in fns.values():
        fn()
    for _ in range(args.repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    # noise floor: each kind's interquartile range over its median, from the same steps
    iqr = {k: relative_iqr(v) for k, v in times.items()}
    print(f"<!-- {date.today()}, {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, space {space.name} at {res} px, paths {args.paths}, "
          f"channels-last, batch {args.batch}, "
          f"median of {args.repeats}; step IQR / median: "
          + ", ".join(f"{k} {v:.1%}" for k, v in iqr.items()) + " -->")  # fmt: skip
    print("| space | largest child step (ms) | supernet weight step (ms) | ratio | architecture step (ms) | "
          "expected cost fwd+bwd (ms) | cost / supernet step |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    print(f"| {space.name} | {med['child']:.1f} | {med['supernet']:.1f} | {med['supernet'] / med['child']:.2f}x | "
          f"{med['arch']:.1f} | {med['cost']:.2f} | {med['cost'] / med['supernet']:.3f} |")  # fmt: skip


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        mode, k, width, size, batch, device = sys.argv[2:8]
        print(json.dumps(_one_step(mode, int(k), int(width), int(size), int(batch), device)))
        return
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    m = sub.add_parser("memory")
    m.add_argument("--choices", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    m.add_argument("--width", type=int, default=64)
    m.add_argument("--size", type=int, default=16)
    m.add_argument("--batch", type=int, default=32)
    m.add_argument("--torch-device", default="cpu")
    c = sub.add_parser("compute")
    c.add_argument("--space", default="cifar")
    c.add_argument("--batch", type=int, default=64)
    c.add_argument("--repeats", type=int, default=20)
    c.add_argument("--paths", default="masked", choices=[p for p in PATHS if p != "explicit"])
    c.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    memory(args) if args.what == "memory" else compute(args)


if __name__ == "__main__":
    main()
