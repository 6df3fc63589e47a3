"""Search quality on real data: the searched architecture against random and MobileNetV2-style ones.

Usage:
    python benchmarks/search_quality.py --lut CIFAR.lut --data ../shared/data/cifar10-jpeg.npz \
        [--limit 4000] [--search-epochs 8] [--train-epochs 10] [--quantiles 0.25 0.5 0.75] \
        [--device ort-cpu:threads=1] [--workdir DIR]

For each budget B (at the given quantiles of the cifar space's predicted-latency range, from the
LUT, calibrated if it holds a calibration):

* searched: ``hwnas search`` (DMasking, hinge loss) at B, derived architecture;
* random: 5 random architectures with predicted latency in [0.9 B, B]; the best by validation
  accuracy is the contestant;
* MobileNetV2-style: every layer ir_k3 (no SE, ReLU), one expansion for all layers, one channel
  choice pattern for all stages, the same number of layers dropped at the end of every stage;
  the largest such network (by predicted latency) with latency <= B.

All are retrained with one fixed recipe (:func:`hwnas.train.training.train_child`: SGD, cosine,
label smoothing, crop + flip) on the same class-balanced subset of the training images, scored
on the full test set, and timed end to end on ``--device`` at the end (3 rounds, median), alone.
Results are cached in the work folder (re-running resumes). Prints markdown for BENCHMARKS.md
and writes ``pareto.png``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from hwnas.core.fileio import write_text_atomic
from hwnas.devices import TimingConfig, open_device
from hwnas.latency.network_timing import network_artifacts, network_input_shape
from hwnas.search.cost import make_cost
from hwnas.search.loop import Search, SearchConfig
from hwnas.spaces import get_space
from hwnas.spaces.arch import Architecture
from hwnas.spaces.space import Option
from hwnas.train.checkpoints import has_search_checkpoint
from hwnas.train.data import load_images, load_test_images, make_splits
from hwnas.train.training import train_child


def mobilenet_v2_style(space, cost, budget: float) -> Architecture | None:
    """The largest MobileNetV2-style architecture of ``space`` within ``budget`` (see the docstring)."""
    best: tuple[float, Architecture] | None = None
    stages = sorted({layer.stage for layer in space.layers})
    expansions = sorted({e for layer in space.layers for e in layer.expansions if len(layer.expansions) > 1}) or [1.0]
    for res, e, width, drop in itertools.product(space.resolutions, expansions, (0, 1), (0, 1, 2)):
        options = []
        for layer in space.layers:
            same_stage = [other for other in space.layers if other.stage == layer.stage]
            pos = same_stage.index(layer)
            c = layer.channels[min(width, len(layer.channels) - 1)]
            if "skip" in layer.ops and pos >= len(same_stage) - drop:
                options.append(Option("skip", c, 1.0))
            elif "ir_k3" in layer.ops:
                options.append(Option("ir_k3", c, e if e in layer.expansions else layer.expansions[0]))
            else:
                o = layer.options[0]
                options.append(Option(o.op, c if c in layer.channels else o.c, o.e))
        arch = space.architecture(res, options, name="mbv2-style")
        value = cost.of(arch)
        if value <= budget and (best is None or value > best[0]):
            best = (value, arch)
    assert stages
    return best[1] if best else None


def random_in_band(space, cost, budget: float, n: int, seed: int) -> list[Architecture]:
    rng = random.Random(seed)
    found: dict[str, Architecture] = {}
    for _ in range(200_000):
        a = space.sample(rng)
        if 0.9 * budget <= cost.of(a) <= budget:
            found.setdefault(a.to_str(), a)
            if len(found) == n:
                break
    return list(found.values())


def measure(archs: list[Architecture], device_spec: str) -> dict[str, float]:
    device = open_device(device_spec)
    arts = dict(zip([a.to_str() for a in archs], network_artifacts(archs, device.format), strict=True))
    out: dict[str, list[float]] = {a.to_str(): [] for a in archs}
    for r in range(3):
        order = list(archs)
        random.Random(r).shuffle(order)
        for a in order:
            runner = device.load(arts[a.to_str()], network_input_shape(a, device.batch))
            out[a.to_str()].append(device.measure(runner, TimingConfig()).median_ms)
            runner.close()
    return {k: statistics.median(v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lut", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--limit", type=int, default=4000)
    ap.add_argument("--search-epochs", type=int, default=8)
    ap.add_argument("--train-epochs", type=int, default=10)
    ap.add_argument("--quantiles", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    ap.add_argument("--device", default="ort-cpu:threads=1")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="hwnas-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    cache_path = work / "results.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}

    space = get_space("cifar")
    cost = make_cost("latency", space, args.lut)
    _, lo = cost.smallest(space)
    _, hi = cost.largest(space)
    budgets = [round(lo + q * (hi - lo), 4) for q in args.quantiles]
    train, test = load_images(args.data), load_test_images(args.data, 10)
    splits = make_splits(train, test, 3, 10, limit=args.limit, seed=0)
    t_start = time.perf_counter()

    def trained(arch: Architecture) -> dict[str, float]:
        key = arch.to_str()
        if key not in cache:
            r = train_child(arch, splits, epochs=args.train_epochs, seed=0, progress=False)
            cache[key] = {"val": r.val_acc, "test": r.test_acc, "train_s": r.seconds}
            write_text_atomic(cache_path, json.dumps(cache, indent=1))
        return cache[key]

    rows = []
    for b in budgets:
        out = work / f"search-{b:g}"
        cfg = SearchConfig(space="cifar", budget=b, cost="latency", lut=args.lut, data=args.data, limit=args.limit,
                           epochs=args.search_epochs, warmup_epochs=2)  # fmt: skip
        if (out / "arch.json").exists():
            searched = Architecture.load(out / "arch.json")
            summary = json.loads((out / "search.json").read_text())
        else:
            t0 = time.perf_counter()
            Search(cfg, out, resume=has_search_checkpoint(out), progress=False).run()
            searched = Architecture.load(out / "arch.json")
            summary = json.loads((out / "search.json").read_text())
            summary["wall_s"] = time.perf_counter() - t0
            write_text_atomic(out / "search.json", json.dumps(summary, indent=2))
        randoms = random_in_band(space, cost, b, 5, seed=int(b * 1e4))
        mbv2 = mobilenet_v2_style(space, cost, b)
        rand_scores = [(trained(a)["val"], a) for a in randoms]
        best_random = max(rand_scores, key=lambda t: t[0])[1]
        contestants = [("searched", searched), ("best of 5 random", best_random)]
        if mbv2 is not None:
            contestants.append(("MobileNetV2-style", mbv2))
        for name, a in contestants:
            rows.append({"budget": b, "who": name, "arch": a.to_str(), "predicted": cost.of(a), **trained(a),
                         "search_wall_s": summary.get("wall_s") if name == "searched" else None,
                         "random_vals": [round(v, 4) for v, _ in rand_scores] if name.startswith("best") else None})  # fmt: skip
    compute_s = time.perf_counter() - t_start
    latency = measure([Architecture.from_str(r["arch"], num_classes=10) for r in rows], args.device)
    for r in rows:
        r["measured"] = latency[r["arch"]]
    write_text_atomic(work / "rows.json", json.dumps(rows, indent=1))
    print(f"<!-- {date.today()}, {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"CIFAR-10 subset {args.limit} train images (class-balanced; 10% val), full 10,000 test; search "
          f"{args.search_epochs} epochs, retrain {args.train_epochs} epochs; compute {compute_s / 60:.0f} min -->")  # fmt: skip
    print(
        f"| budget (ms) | contestant | predicted (ms) | measured {args.device} (ms) | val acc | test acc | architecture |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['budget']:g} | {r['who']} | {r['predicted']:.4f} | {r['measured']:.4f} | {r['val']:.1%} | "
              f"{r['test']:.1%} | `{r['arch']}` |")  # fmt: skip
    _plot(rows, work / "pareto.png")
    print(f"<!-- plot: {work / 'pareto.png'} -->")


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    for who, marker in (("searched", "o"), ("best of 5 random", "s"), ("MobileNetV2-style", "^")):
        pts = sorted((r["measured"], r["test"]) for r in rows if r["who"] == who)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=who)
    for b in sorted({r["budget"] for r in rows}):
        ax.axvline(b, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("CIFAR-10 test accuracy")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
