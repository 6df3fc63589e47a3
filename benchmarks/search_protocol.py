"""Does the search beat its baselines? The protocol of the search issue, one command, resumable.

    python benchmarks/search_protocol.py --data ../shared/data/cifar10-jpeg.npz --lut cifar-ort.lut \
        --workdir runs/protocol                                   # CPU protocol (about 60-90 minutes)
    python benchmarks/search_protocol.py --space tiny --data synthetic:n=600,size=24 --cost flops \
        --search-epochs 2 --retrain-epochs 1 --random 3 --tau-archs 4 --workdir /tmp/p   # dry run, ~3 min

One budget ``B`` at ``--budget-quantile`` of the space's cost range. Arms, each retrained with one
recipe (:func:`hwnas.train.training.train_child`) on the same class-balanced training subset
(``--limit``, fixed ``--split-seed``) and scored on the full test split:

* searched: one search per ``--search-seeds`` (same data split), its selected architecture,
  retrained with the retrain seed of the same index;
* null: the selection at uniform alphas (from the first search's ``candidates.json``);
* MobileNetV2-style: ir_k3, one expansion, one width step up to a stage and the next from it
  on, layers dropped from the stage ends, the costliest such network in ``[0.9 B, B]``, retrained
  with every ``--retrain-seeds`` (none in the band: the run says so at its start and in its table);
* random: ``--random`` architectures drawn uniformly among those with cost in ``[0.9 B, B]``
  (``--random-seed`` picks the draw).

Every final network is timed alone on ``--device`` at the end (rounds counted by their fastest
run). Statistics: mean +- sd per arm; searched against random with Welch's t-test and the exact
permutation p-value (every split of the pooled scores); searched against MobileNetV2-style paired
by retrain seed. Ranking: Kendall tau between supernet accuracy (the first search's supernet,
BatchNorm re-estimated per child) and standalone test accuracy over ``--tau-archs`` architectures,
one from each equal slice of the whole cost range.
Results go to ``WORKDIR/results.json`` as they come (a re-run skips what is done) and the
markdown table to ``WORKDIR/table.md``.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import math
import os
import platform
import random
import statistics
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any, cast

import torch

from hwnas.core.fileio import write_text_atomic
from hwnas.search import evolution
from hwnas.search.config import CHILD_SAMPLING, PATHS, SELECTION_RESOLUTION
from hwnas.search.cost import SearchCost, make_cost
from hwnas.search.loop import Search, SearchConfig, load_images_for
from hwnas.spaces import get_space
from hwnas.spaces.arch import Architecture
from hwnas.spaces.space import Option, SearchSpace
from hwnas.train.checkpoints import has_search_checkpoint
from hwnas.train.data import load_test_images, make_splits
from hwnas.train.training import evaluate, torch_device, train_child

_WORKER: dict[str, Any] = {}
RANDOM_SEED = 12345  # the random-in-band draw of every run before --random-seed existed


def _worker_init(data: str, space_name: str, limit: int, split_seed: int, threads: int) -> None:
    """Load the data once per worker process."""
    torch.set_num_threads(threads)
    space = get_space(space_name)
    train = load_images_for(data, space.num_classes)
    _WORKER["splits"] = make_splits(train, load_test_images(data, space.num_classes), space.in_channels,
                                    space.num_classes, limit=limit, seed=split_seed)  # fmt: skip
    _WORKER["space"] = space


def _retrain_job(arch_str: str, seed: int, epochs: int, torch_device: str, bf16: bool, batch_size: int,
                 lr: float) -> tuple[str, dict[str, float]]:  # fmt: skip
    space = _WORKER["space"]
    arch = Architecture.from_str(arch_str, space.num_classes, space.in_channels)
    r = train_child(arch, _WORKER["splits"], epochs=epochs, seed=seed, device=torch_device_of(torch_device),
                    progress=False, bf16=bf16, batch_size=batch_size, lr=lr)  # fmt: skip
    return _key(arch, seed), {"val": r.val_acc, "test": r.test_acc or 0.0, "seconds": r.seconds}


def _key(a: Architecture, seed: int) -> str:
    return f"{a.to_str()}|seed{seed}"


def _unique(jobs: list[tuple[Architecture, int]]) -> list[tuple[Architecture, int]]:
    out: dict[str, tuple[Architecture, int]] = {}
    for job in jobs:
        out.setdefault(_key(*job), job)
    return list(out.values())


def _elapsed(started: float) -> str:
    return f"{(time.perf_counter() - started) / 60:.1f} min in"


def null_derivation(folder: Path, space: SearchSpace) -> Architecture:
    """What the selection picks from uniform alphas, as a search's ``candidates.json`` records it."""
    candidates = json.loads((folder / "candidates.json").read_text())
    row = next(c for c in candidates if c["how"].startswith("null"))
    return Architecture.from_str(row["arch"], space.num_classes, space.in_channels)


def search_folders(work: Path) -> list[Path]:
    """A run's ``search-seed*`` folders in seed order (not name order: seed 10 after seed 2)."""
    return sorted(work.glob("search-seed*"), key=lambda p: int(p.name.removeprefix("search-seed")))


def _search_ended(work: Path, seed: int) -> bool:
    return (work / f"search-seed{seed}" / "arch.json").exists()


def _searched(args: argparse.Namespace, work: Path, space: SearchSpace, seed: int) -> list[tuple[Architecture, int]]:
    """What a finished search adds to the arms: its selection, retrained with the retrain seed of the
    same index, and for the first search seed also the null derivation."""
    folder = work / f"search-seed{seed}"
    index = args.search_seeds.index(seed)
    jobs = [(Architecture.load(folder / "arch.json"), args.retrain_seeds[index % len(args.retrain_seeds)])]
    if index == 0:
        jobs.append((null_derivation(folder, space), args.retrain_seeds[0]))
    return jobs


def _arms(args: argparse.Namespace, work: Path, space: SearchSpace,
          baselines: dict[str, list[tuple[Architecture, int]]]) -> dict[str, list[tuple[Architecture, int]]]:  # fmt: skip
    """Every arm, with the searches that have ended so far."""
    ended = [_searched(args, work, space, seed) for seed in args.search_seeds if _search_ended(work, seed)]
    first_ended = _search_ended(work, args.search_seeds[0])
    return {
        "searched": [jobs[0] for jobs in ended],
        "null derivation": ended[0][1:] if first_ended else [],
        **baselines,
    }


def _search_job(cfg: dict[str, Any], out: str, threads: int) -> float:
    torch.set_num_threads(threads)
    start = time.perf_counter()
    Search(SearchConfig(**cfg), out, resume=has_search_checkpoint(out), progress=False).run()
    return time.perf_counter() - start


def _supernet_scores_job(folder: str, arch_strs: list[str]) -> dict[str, float]:
    """Each architecture's accuracy through a finished search's supernet, BatchNorm re-estimated for
    it, on the images selection scores candidates on (the supernet side of the ranking's Kendall tau)."""
    cfg = SearchConfig.from_saved(json.loads((Path(folder) / "config.json").read_text()))
    supernet = Search(cfg, folder, resume=True, progress=False)
    out = {}
    images = supernet.selection_images
    for arch_str in arch_strs:
        a = Architecture.from_str(arch_str, supernet.space.num_classes, supernet.space.in_channels)
        supernet._recalibrate_bn(a)
        out[arch_str] = evaluate(supernet.net, images, supernet.splits.mean, supernet.splits.std, supernet.device,
                                 arch=a)  # fmt: skip
    return out


def torch_device_of(name: str) -> torch.device:
    return torch_device(name)


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


def welch_and_permutation(a: list[float], b: list[float]) -> tuple[float, float]:
    """(Welch's two-sided p, exact two-sided permutation p of the difference of means)."""
    from scipy import stats

    welch = float(stats.ttest_ind(a, b, equal_var=False).pvalue) if len(a) > 1 and len(b) > 1 else math.nan
    pooled, k = a + b, len(a)
    observed = abs(statistics.fmean(a) - statistics.fmean(b))
    total = hits = 0
    for idx in itertools.combinations(range(len(pooled)), k):
        x = [pooled[i] for i in idx]
        y = [pooled[i] for i in range(len(pooled)) if i not in idx]
        total += 1
        hits += abs(statistics.fmean(x) - statistics.fmean(y)) >= observed - 1e-12
    return welch, hits / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="cifar", help="a preset name or a space file (YAML/JSON)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--cost", default="latency", choices=("latency", "flops", "params"))
    ap.add_argument("--lut", help="the LUT, for --cost latency")
    ap.add_argument("--limit", type=int, default=5000)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--budget-quantile", type=float, default=0.5)
    ap.add_argument("--search-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--search-epochs", type=int, default=10)
    ap.add_argument("--sandwich", action="store_true")
    ap.add_argument("--paths", choices=[p for p in PATHS if p != "explicit"], default=SearchConfig.paths,
                    help="the searches' supernet (default: hwnas search's); masked-se keeps SE ops on their own weights")  # fmt: skip
    ap.add_argument(
        "--sampled-child",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="search with (or --no-sampled-child: without) hwnas search's child step (default: with)",
    )
    ap.add_argument("--child-sampling", choices=CHILD_SAMPLING, default=SearchConfig.child_sampling,
                    help="how the searches draw the child they train (default: hwnas search's)")  # fmt: skip
    ap.add_argument("--evolution", type=int, default=None, help="search with this --evolution (default: hwnas's)")
    ap.add_argument("--selection-resolution", choices=SELECTION_RESOLUTION, default=SearchConfig.selection_resolution,
                    help="search with this --selection-resolution (default: hwnas search's)")  # fmt: skip
    ap.add_argument("--reuse", help="results.json of another protocol run (same data, split, recipe): networks it "
                                    "retrained are not retrained again")  # fmt: skip
    ap.add_argument("--retrain-epochs", type=int, default=10)
    retrain_defaults = inspect.signature(train_child).parameters
    ap.add_argument("--search-batch-size", type=int, default=SearchConfig.batch_size,
                    help="the search's batch size (default: hwnas search's)")  # fmt: skip
    ap.add_argument("--search-lr", type=float, default=SearchConfig.lr,
                    help="the search's weight learning rate (default: hwnas search's)")  # fmt: skip
    ap.add_argument("--retrain-batch-size", type=int, default=retrain_defaults["batch_size"].default,
                    help="every retrained network's batch size (default: hwnas train's)")  # fmt: skip
    ap.add_argument("--retrain-lr", type=float, default=retrain_defaults["lr"].default,
                    help="every retrained network's learning rate (default: hwnas train's)")  # fmt: skip
    ap.add_argument("--retrain-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--random", type=int, default=5)
    ap.add_argument(
        "--random-seed",
        type=int,
        default=RANDOM_SEED,
        help="seed of the random-in-band draw (another value draws other networks, for a replication)",
    )
    ap.add_argument("--tau-archs", type=int, default=12)
    ap.add_argument("--device", default="ort-cpu:threads=1", help="where the final networks are timed ('' to skip)")
    ap.add_argument("--torch-device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="retrain under bfloat16 autocast (GPU)")
    ap.add_argument("--jobs", type=int, default=1, help="run this many searches and retrainings at once (processes)")
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    results_path = work / "results.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    if args.reuse and "retrained" not in results:
        results["retrained"] = json.loads(Path(args.reuse).read_text())["retrained"]
        results["reused_from"] = args.reuse

    def save() -> None:
        write_text_atomic(results_path, json.dumps(results, indent=1) + "\n")

    space = get_space(args.space)
    cost = make_cost(args.cost, space, args.lut)
    lo_space, hi_space = cost.smallest(space)[1], cost.largest(space)[1]
    budget = round(lo_space + args.budget_quantile * (hi_space - lo_space), 6)
    band = (0.9 * budget, budget)
    dev = torch_device(args.torch_device)
    started = time.perf_counter()

    # One pool runs the searches and the retraining side by side (several runs at once on one GPU):
    # the baselines need no search, so they train while the searches run; a searched network is
    # retrained as soon as its search ends, ahead of any baseline still waiting.
    cfgs = {seed: SearchConfig(space=args.space, budget=budget, cost=args.cost, lut=args.lut, data=args.data,
                               limit=args.limit, epochs=args.search_epochs, seed=seed, split_seed=args.split_seed,
                               sandwich=args.sandwich, paths=args.paths, sampled_child=args.sampled_child, torch_device=args.torch_device,
                               child_sampling=args.child_sampling, batch_size=args.search_batch_size, lr=args.search_lr,
                               selection_resolution=args.selection_resolution,
                               **({"evolution": args.evolution} if args.evolution is not None else {}))
            for seed in args.search_seeds}  # fmt: skip
    # the baselines and the ranking networks are drawn once and kept: drawing them costs minutes on a
    # large space (rejection sampling), and a resumed run must retrain the same networks
    drawn_for = f"{space.name} {args.cost} budget {budget!r}, {args.random} random, {args.tau_archs} ranked"
    if args.random_seed != RANDOM_SEED:  # the default keeps the key older run folders were written with
        drawn_for += f", random seed {args.random_seed}"
    if results.get("drawn", {}).get("for") == drawn_for:

        def parse(text: str) -> Architecture:
            return Architecture.from_str(text, num_classes=space.num_classes, in_channels=space.in_channels)

        mbv2 = parse(results["drawn"]["mbv2"]) if results["drawn"]["mbv2"] else None
        randoms = [parse(t) for t in results["drawn"]["random"]]
        ranked = [parse(t) for t in results["drawn"]["ranked"]]
    else:
        mbv2 = mobilenet_v2_style(space, cost, *band)
        randoms = random_in_band(space, cost, *band, args.random, seed=args.random_seed)
        ranked = spread(space, cost, args.tau_archs, seed=777) if args.tau_archs > 1 else []
        results["drawn"] = {"for": drawn_for, "mbv2": mbv2.to_str() if mbv2 else None,
                            "random": [a.to_str() for a in randoms], "ranked": [a.to_str() for a in ranked]}  # fmt: skip
        save()
    if mbv2 is None:
        print(f"no MobileNetV2-style network lies in the band [{band[0]:.6g}, {band[1]:.6g}]: that arm stays "
              "empty; another --budget-quantile may have one", flush=True)  # fmt: skip
    first = work / f"search-seed{args.search_seeds[0]}"
    baseline_arms: dict[str, list[tuple[Architecture, int]]] = {
        "MobileNetV2-style": [(mbv2, s) for s in args.retrain_seeds] if mbv2 is not None else [],
        "random in band": [(a, args.retrain_seeds[0]) for a in randoms],
    }
    done = results.setdefault("retrained", {})
    baseline_jobs = [(a, sd) for items in baseline_arms.values() for a, sd in items]
    baseline_jobs += [(a, args.retrain_seeds[0]) for a in ranked]

    def unscored() -> list[str]:
        """The ranking's networks not yet scored through the first search's supernet."""
        return [a.to_str() for a in ranked if a.to_str() not in results.get("supernet_scores", {})]

    pending = [seed for seed in args.search_seeds if not _search_ended(work, seed)]
    queue: list[tuple[Architecture, int]] = []
    for seed in args.search_seeds:
        if seed not in pending:
            queue += _searched(args, work, space, seed)
    queue += baseline_jobs
    queue = _unique([(a, sd) for a, sd in queue if _key(a, sd) not in done])
    print(f"{len(pending)} searches and {len(queue)} retrainings to run (more once the searches end); "
          f"{args.jobs} at a time", flush=True)  # fmt: skip
    if pending or queue:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

        n_jobs = max(1, args.jobs)
        threads = max(1, (os.cpu_count() or 1) // n_jobs) if dev.type == "cpu" else 1
        with ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                                 initargs=(args.data, args.space, args.limit, args.split_seed, threads)) as pool:  # fmt: skip
            running: dict[Future[Any], tuple[str, Any]] = {}
            for seed in pending:
                f = pool.submit(_search_job, asdict(cfgs[seed]), str(work / f"search-seed{seed}"), threads)
                running[f] = ("search", seed)

            def fill() -> None:
                while queue and len(running) < n_jobs:
                    a, sd = queue.pop(0)
                    f = pool.submit(_retrain_job, a.to_str(), sd, args.retrain_epochs, args.torch_device, args.bf16,
                                    args.retrain_batch_size, args.retrain_lr)  # fmt: skip
                    running[f] = ("retrain", _key(a, sd))

            def score_ranked() -> None:
                if unscored() and _search_ended(work, args.search_seeds[0]):
                    f = pool.submit(_supernet_scores_job, str(first), unscored())
                    running[f] = ("ranking", None)

            score_ranked()
            fill()
            while running:
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for f in finished:
                    kind, what = running.pop(f)
                    if kind == "search":
                        seconds = f.result()
                        results.setdefault("search_seconds", {})[str(what)] = seconds
                        save()
                        print(f"searched seed {what} ({seconds:.0f} s, {_elapsed(started)})", flush=True)
                        skip = set(done) | {_key(*q) for q in queue}
                        queue[:0] = [j for j in _searched(args, work, space, what) if _key(*j) not in skip]
                        if what == args.search_seeds[0]:
                            score_ranked()
                    elif kind == "ranking":
                        new = f.result()
                        results.setdefault("supernet_scores", {}).update(new)
                        save()
                        print(f"scored {len(new)} networks through the supernet ({_elapsed(started)})", flush=True)
                    else:
                        key, row = cast(tuple[str, dict[str, float]], f.result())
                        done[key] = row
                        save()
                        print(f"retrained {key}: test {row['test']:.2%} ({row['seconds']:.0f} s, {_elapsed(started)})",
                              flush=True)  # fmt: skip
                fill()
                write_text_atomic(work / "table.md", _partial(done, _arms(args, work, space, baseline_arms)))

    arms = _arms(args, work, space, baseline_arms)

    def test_acc(a: Architecture, sd: int) -> float:
        return float(done[_key(a, sd)]["test"])

    scores = {arm: [test_acc(a, sd) for a, sd in items] for arm, items in arms.items()}

    # ranking: supernet accuracy against standalone accuracy
    if unscored():
        results.setdefault("supernet_scores", {}).update(_supernet_scores_job(str(first), unscored()))
        save()
    via = results.get("supernet_scores", {})
    pairs = [(via[a.to_str()], test_acc(a, args.retrain_seeds[0]), cost.of(a)) for a in ranked]
    from scipy import stats

    tau = (
        float(stats.kendalltau([p[0] for p in pairs], [p[1] for p in pairs]).statistic) if len(pairs) > 1 else math.nan
    )

    # timing, alone, at the end
    latency: dict[str, float] = {}
    if args.device:
        archs = {a.to_str(): a for items in arms.values() for a, _ in items}
        latency = measure_alone(list(archs.values()), args.device)
    results["summary"] = {
        "budget": budget, "band": band, "scores": scores, "kendall_tau": tau, "tau_pairs": pairs,
        "latency": latency, "compute_min": (time.perf_counter() - started) / 60,
    }  # fmt: skip
    save()
    table = _table(args, space, cost, budget, arms, scores, tau, len(pairs), latency)
    if len(pairs) > 1:
        rows, lo, hi = ranking_rows(ranked, pairs)
        m = scores["MobileNetV2-style"]
        ceiling = ""
        if len(m) > 1:
            sd = statistics.stdev(m)
            c_lo, c_mid, c_hi = tau_ceiling([p[1] for p in pairs], sd)
            ceiling = (f"Noise ceiling: a perfect ranker would reach tau {c_mid:.3f} (10-90%: {c_lo:.3f}-{c_hi:.3f}) "
                       f"against one retraining per network, at the MobileNetV2-style network's retrain-seed sd "
                       f"({sd:.2%})\n")  # fmt: skip
        table += (f"Kendall tau with one network left out: {lo:.3f} to {hi:.3f}\n{ceiling}\n"
                  f"| {cost.unit} | resolution | skips | supernet | standalone | rank, supernet | rank, standalone |\n"
                  "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")  # fmt: skip
    write_text_atomic(work / "table.md", table)
    print(table)


def ranking_rows(ranked: list[Architecture], pairs: list[tuple[float, float, float]]) -> tuple[list[str], float, float]:
    """The ranking per network, largest rank disagreement first (markdown rows), and the range of
    Kendall tau with each network left out in turn: how much one network decides the figure."""
    from scipy import stats

    n = len(pairs)

    def ranks(values: list[float]) -> list[float]:
        return [float(r) for r in stats.rankdata(values)]  # 1 = lowest; ties share the mean rank

    r_super, r_alone = ranks([p[0] for p in pairs]), ranks([p[1] for p in pairs])
    rows = []
    for i in sorted(range(n), key=lambda i: (-abs(r_super[i] - r_alone[i]), pairs[i][2])):
        a = ranked[i]
        skips = sum(b.op.startswith("skip") for b in a.blocks)
        rows.append(f"| {pairs[i][2]:.4g} | {a.resolution} | {skips} | {pairs[i][0]:.2%} | {pairs[i][1]:.2%} | "
                    f"{r_super[i]:g} | {r_alone[i]:g} |")  # fmt: skip
    if n < 4:
        return rows, math.nan, math.nan
    loo = [float(stats.kendalltau([p[0] for j, p in enumerate(pairs) if j != i],
                                  [p[1] for j, p in enumerate(pairs) if j != i]).statistic) for i in range(n)]  # fmt: skip
    return rows, min(loo), max(loo)


def tau_ceiling(standalone: list[float], sd: float, draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """The Kendall tau a perfect ranker would reach against standalone accuracies measured once,
    when each retraining moves a network's accuracy by noise of ``sd`` (the retrain-seed spread of
    one network): tau between ``standalone`` taken as the truth and one noisy re-measurement of it,
    10th, 50th and 90th percentile over ``draws`` simulations. ``standalone`` itself holds that
    noise, which widens its spread, so this ceiling errs high."""
    import numpy as np
    from scipy import stats

    truth = np.asarray(standalone, dtype=float)
    rng = np.random.default_rng(seed)
    taus = [float(stats.kendalltau(truth, truth + rng.normal(0.0, sd, truth.size)).statistic) for _ in range(draws)]
    lo, mid, hi = np.percentile(taus, [10, 50, 90])
    return float(lo), float(mid), float(hi)


def _partial(done: dict[str, Any], arms: dict[str, list[tuple[Architecture, int]]]) -> str:
    """The table so far (written after every retrained network)."""
    keys = {_key(a, sd) for items in arms.values() for a, sd in items}
    lines = [f"{len([k for k in keys if k in done])} of the arms' {len(keys)} networks retrained so far",
             "| arm | test accuracies so far |", "|---|---|"]  # fmt: skip
    for arm, items in arms.items():
        got = [done[_key(a, sd)]["test"] for a, sd in items if _key(a, sd) in done]
        lines.append(f"| {arm} | {', '.join(f'{v:.2%}' for v in got) or '-'} |")
    return "\n".join(lines) + "\n"


def _table(args: argparse.Namespace, space: SearchSpace, cost: SearchCost, budget: float,
           arms: dict[str, list[tuple[Architecture, int]]], scores: dict[str, list[float]], tau: float,
           n_ranked: int, latency: dict[str, float]) -> str:  # fmt: skip
    def ms(values: list[float]) -> str:
        if not values:
            return "-"
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.fmean(values):.2%} +- {sd:.2%} (n={len(values)})"

    lines = [f"<!-- {date.today()}, {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
             f"space {space.name}, {args.cost} budget {budget:g} {cost.unit} (band [0.9 B, B]); data {args.data}, "
             f"{args.limit} training images, split seed {args.split_seed}; search {args.search_epochs} epochs, "
             f"seeds {args.search_seeds}, sandwich {args.sandwich}, sampled child {args.sampled_child} ({args.child_sampling}), evolution "
             f"{args.evolution if args.evolution is not None else 'default'}; retrain {args.retrain_epochs} epochs -->",
             "| arm | test accuracy, mean +- sd | predicted cost | measured latency (ms) |", "|---|---|---|---|"]  # fmt: skip
    for arm, items in arms.items():
        costs = ", ".join(f"{cost.of(a):.4g}" for a, _ in items[:3]) + (" ..." if len(items) > 3 else "")
        lat = ", ".join(f"{latency[a.to_str()]:.4f}" for a, _ in items[:3] if a.to_str() in latency)
        lines.append(f"| {arm} | {ms(scores[arm])} | {costs} | {lat or '-'} |")
    s, r, m = scores["searched"], scores["random in band"], scores["MobileNetV2-style"]
    if len(s) > 0 and len(r) > 0:
        welch, perm = welch_and_permutation(s, r)
        lines.append(f"\nsearched vs random in band: difference {statistics.fmean(s) - statistics.fmean(r):+.2%}, "
                     f"Welch p = {welch:.3f}, exact permutation p = {perm:.3f}")  # fmt: skip
    if s and m:
        diffs = [a - b for a, b in zip(s, m, strict=False)]
        lines.append(f"searched vs MobileNetV2-style, paired by retrain seed: differences "
                     f"{', '.join(f'{d:+.2%}' for d in diffs)} (mean {statistics.fmean(diffs):+.2%})")  # fmt: skip
    elif not arms["MobileNetV2-style"]:
        lines.append("no MobileNetV2-style network lies in the band: that arm is empty")
    lines.append(f"Kendall tau, supernet vs standalone accuracy over {n_ranked} architectures spread over the "
                 f"cost range: {tau:.3f}")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
