"""The networks each arm of the protocol retrains: searched, null derivation, MobileNetV2-style,
random in band, and the ranking networks spread over the cost range; timed alone at the end."""

from __future__ import annotations

import argparse
import itertools
import json
import random
from pathlib import Path

from hwnas.search import evolution
from hwnas.search.cost import SearchCost
from hwnas.spaces.arch import Architecture
from hwnas.spaces.space import Option, SearchSpace

RANDOM_SEED = 12345  # the random-in-band draw of every run before --random-seed existed


def null_derivation(folder: Path, space: SearchSpace) -> Architecture:
    """What the selection picks from uniform alphas, as a search's ``candidates.json`` records it."""
    candidates = json.loads((folder / "candidates.json").read_text())
    row = next(c for c in candidates if c["how"].startswith("null"))
    return Architecture.from_str(row["arch"], space.num_classes, space.in_channels)


def supernet_pick(folder: Path, space: SearchSpace) -> Architecture:
    """What a search's supernet alone would select (``--finalists 0``): the candidate with the best
    supernet accuracy, then score, as ``candidates.json`` records them (the null derivation is never one)."""
    rows = [c for c in json.loads((folder / "candidates.json").read_text()) if not c["how"].startswith("null")]
    best = max(rows, key=lambda c: (c["val_acc_supernet"], c["score"]))
    return Architecture.from_str(best["arch"], space.num_classes, space.in_channels)


def search_folders(work: Path) -> list[Path]:
    """A run's ``search-seed*`` folders in seed order (not name order: seed 10 after seed 2)."""
    return sorted(work.glob("search-seed*"), key=lambda p: int(p.name.removeprefix("search-seed")))


def search_ended(work: Path, seed: int) -> bool:
    return (work / f"search-seed{seed}" / "arch.json").exists()


def searched(args: argparse.Namespace, work: Path, space: SearchSpace, seed: int) -> list[tuple[Architecture, int]]:
    """What a finished search adds to the arms: its selection, retrained with the retrain seed of the
    same index, and for the first search seed also the null derivation."""
    folder = work / f"search-seed{seed}"
    index = args.search_seeds.index(seed)
    jobs = [(Architecture.load(folder / "arch.json"), args.retrain_seeds[index % len(args.retrain_seeds)])]
    if index == 0:
        jobs.append((null_derivation(folder, space), args.retrain_seeds[0]))
    return jobs


def arms_so_far(args: argparse.Namespace, work: Path, space: SearchSpace,
          baselines: dict[str, list[tuple[Architecture, int]]]) -> dict[str, list[tuple[Architecture, int]]]:  # fmt: skip
    """Every arm, with the searches that have ended so far."""
    ended = [searched(args, work, space, seed) for seed in args.search_seeds if search_ended(work, seed)]
    first_ended = search_ended(work, args.search_seeds[0])
    return {
        "searched": [jobs[0] for jobs in ended],
        "null derivation": ended[0][1:] if first_ended else [],
        **baselines,
    }


def mobilenet_v2_style(space: SearchSpace, cost: SearchCost, lo: float, hi: float) -> Architecture | None:
    """The costliest MobileNetV2-style architecture with cost in ``[lo, hi]``.

    The family a designer scales by hand: every searchable layer ``ir_k3`` at one expansion, the
    input resolution, layers dropped from the ends of stages (depth), and the width: one width
    step (the i-th channel choice of every layer) up to one stage and the next step from it on
    (widening the later stages first), which includes every uniform width. With uniform widths
    alone the family can leave a gap around a budget (in the cifar space, with its two channel
    choices per stage, at the latency LUT of 2026-11-28: nothing between 0.216 and 0.328 ms around
    a band of [0.236, 0.262]).
    """
    best: tuple[float, Architecture] | None = None
    expansions = sorted({e for layer in space.layers for e in layer.expansions if len(layer.expansions) > 1}) or [1.0]
    widths = range(max(len(layer.channels) for layer in space.layers))
    wide_from: list[int | None] = [None, *sorted({layer.stage for layer in space.layers if len(layer.channels) > 1})]
    depth = max(sum(1 for other in space.layers if other.stage == layer.stage) for layer in space.layers)
    for res, e, width, first_wide, drop in itertools.product(
        space.resolutions, expansions, widths, wide_from, range(depth)
    ):
        options = []
        for layer in space.layers:
            same_stage = [other for other in space.layers if other.stage == layer.stage]
            pos = same_stage.index(layer)
            step = width + (first_wide is not None and layer.stage >= first_wide)
            c = layer.channels[min(step, len(layer.channels) - 1)]
            if "skip" in layer.ops and pos >= len(same_stage) - drop and pos > 0:
                options.append(Option("skip", c, 1.0))
            elif "ir_k3" in layer.ops:
                options.append(Option("ir_k3", c, e if e in layer.expansions else layer.expansions[0]))
            else:
                o = layer.options[0]
                options.append(Option(o.op, c if c in layer.channels else o.c, o.e))
        arch = space.architecture(res, options, name="mbv2-style")
        value = cost.of(arch)
        if lo <= value <= hi and (best is None or value > best[0]):
            best = (value, arch)
    return best[1] if best else None


def random_in_band(space: SearchSpace, cost: SearchCost, lo: float, hi: float, n: int, seed: int) -> list[Architecture]:
    return evolution.random_in_band(space, cost, lo, hi, n, random.Random(seed), tries=500_000)


def spread(space: SearchSpace, cost: SearchCost, n: int, seed: int, tries: int = 500_000) -> list[Architecture]:
    """``n`` architectures, one from each of ``n`` equal slices of the cost range.

    Each is drawn uniformly among the slice's architectures; where rejection sampling finds none
    (the ends of the range hold few networks: in the fourth CPU run the costliest twelfth of the
    range got none in 500,000 draws, and the ranking had 11 networks instead of 12), it is reached
    by :func:`walk_into` from the cheapest or the costliest architecture, whichever end is nearer.
    """
    (cheapest, lo), (costliest, hi) = cost.smallest(space), cost.largest(space)
    edges = [lo + (hi - lo) * i / n for i in range(n + 1)]
    out: list[Architecture] = []
    for i in range(n):
        rng = random.Random(seed + i)
        got = evolution.random_in_band(space, cost, edges[i], edges[i + 1], 1, rng, tries=tries)
        out += got or [walk_into(space, cost, edges[i], edges[i + 1], cheapest if 2 * i < n else costliest, rng)]
    return out


def walk_into(space: SearchSpace, cost: SearchCost, lo: float, hi: float, start: Architecture,
              rng: random.Random, steps: int = 20_000) -> Architecture:  # fmt: skip
    """An architecture with cost in ``[lo, hi]``, by random single-option mutations from ``start``,
    each kept unless it moves the cost further from the interval."""

    def gap(a: Architecture) -> float:
        c = cost.of(a)
        return max(lo - c, c - hi * (1 + 1e-9), 0.0)

    current, g = start, gap(start)
    for _ in range(steps):
        if g == 0.0:
            return current
        candidate = evolution.mutate(space, current, rng)
        if (gc := gap(candidate)) <= g:
            current, g = candidate, gc
    raise RuntimeError(f"no architecture found with cost in [{lo:.6g}, {hi:.6g}] after {steps} mutations")


def measure_alone(archs: list[Architecture], spec: str, rounds: int = 3) -> dict[str, float]:
    """Latency (ms) of each whole network on ``spec``, timed as ``hwnas lut validate`` times them
    (:func:`hwnas.latency.network_timing.measure_networks`: shuffled rounds, each counted by its
    fastest run, disturbed measurements re-taken; the median of the rounds), in a throwaway store."""
    import tempfile

    from hwnas.devices import open_device
    from hwnas.latency.network_timing import measure_networks
    from hwnas.latency.store import LutStore

    device = open_device(spec)
    with (
        tempfile.TemporaryDirectory() as tmp,
        LutStore.create_or_open(Path(tmp) / "networks.lut", device.fingerprint(), device.spec) as store,
    ):
        return measure_networks(archs, device, store, rounds=rounds, progress=False)
