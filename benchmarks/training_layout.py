"""Training step time in NCHW against channels-last on the CPU, side by side (BENCHMARKS.md,
"Training memory layout").

    python benchmarks/training_layout.py [--space cifar-wide-tied] [--threads 1] [--repeats 9]

For the space's smallest child, a random one and its largest (by FLOPs, each at its own resolution)
and for the supernet (a relaxed step at the largest resolution, and the largest child through it),
the median time of one training step (forward, backward, SGD; batch 64) in each layout, the two
layouts alternated step by step so that drift in the machine's speed hits both. The protocol trains
one network per core, so the default is one thread. Also checks that both layouts compute the same
loss from the same weights, and gives each layout's step spread (interquartile range over the
median) as the noise floor. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from collections.abc import Callable
from datetime import date

import torch
from noise import relative_iqr
from torch import nn
from torch.nn import functional as F

from hwnas.models.builder import build_model
from hwnas.search.supernet import SuperNet
from hwnas.spaces.space import get_space

BATCH = 64


def _pair(model: nn.Module, run: Callable[[nn.Module, torch.Tensor], torch.Tensor], x: torch.Tensor,
          y: torch.Tensor, repeats: int) -> dict[str, float]:  # fmt: skip
    nchw = copy.deepcopy(model).train()
    last = copy.deepcopy(model).to(memory_format=torch.channels_last).train()  # type: ignore[call-overload]
    with torch.no_grad():
        torch.manual_seed(0)
        a = float(F.cross_entropy(run(nchw, x), y))
        torch.manual_seed(0)
        b = float(F.cross_entropy(run(last, x), y))
    times: dict[str, list[float]] = {"nchw": [], "channels_last": []}
    opts = {m: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for m in (nchw, last)}
    for i in range(repeats + 1):
        for name, m in (("nchw", nchw), ("channels_last", last)):
            torch.manual_seed(i)
            t = time.perf_counter()
            opts[m].zero_grad(set_to_none=True)
            F.cross_entropy(run(m, x), y).backward()
            opts[m].step()
            if i:  # the first step of each warms up
                times[name].append(time.perf_counter() - t)
    med = {k: 1000 * statistics.median(v) for k, v in times.items()}
    # noise floor: the interquartile range of each layout's steps, relative to its median
    spread = {k: relative_iqr(v) for k, v in times.items()}
    return {"nchw_ms": med["nchw"], "channels_last_ms": med["channels_last"], "spread_nchw": spread["nchw"],
            "spread_channels_last": spread["channels_last"],
            "speedup": med["nchw"] / med["channels_last"], "loss_nchw": a, "loss_channels_last": b}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="cifar-wide-tied")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # the models' initial weights
    space = get_space(args.space)
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, space.num_classes, (BATCH,), generator=gen)
    rows = []
    children = (space.smallest(), space.sample(0), space.largest())
    for label, arch in zip(("smallest child", "a random child", "largest child"), children, strict=True):
        x = torch.randn(BATCH, 3, arch.resolution, arch.resolution, generator=gen)
        rows.append({"what": label, "arch": arch.to_str(),
                     **_pair(build_model(arch), lambda m, x: m(x), x, y, args.repeats)})  # fmt: skip
    net = SuperNet(space)
    res = max(space.resolutions)
    x = torch.randn(BATCH, 3, res, res, generator=gen)
    rows.append({"what": "supernet, relaxed step", **_pair(net, lambda m, x: m(x, 1.0, resolution=res), x, y,
                                                            args.repeats)})  # fmt: skip
    big = space.largest()
    xb = torch.randn(BATCH, 3, big.resolution, big.resolution, generator=gen)
    rows.append({"what": "supernet, largest child", **_pair(net, lambda m, x: m(x, arch=big), xb, y, args.repeats)})
    print(f"{args.space}, {args.threads} thread(s), batch {BATCH}, median of {args.repeats} steps each, "
          f"{platform.node()}, {date.today()}")  # fmt: skip
    print("| step | NCHW (ms) | channels-last (ms) | speedup | step IQR / median, NCHW / channels-last | "
          "loss NCHW / channels-last |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['what']} | {r['nchw_ms']:.1f} | {r['channels_last_ms']:.1f} | {r['speedup']:.2f}x | "
              f"{r['spread_nchw']:.1%} / {r['spread_channels_last']:.1%} | "
              f"{r['loss_nchw']:.5f} / {r['loss_channels_last']:.5f} |")  # fmt: skip
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
