"""Does the search beat its baselines? The protocol of the search issue, one command, resumable.

    python benchmarks/search_protocol.py --data ../shared/data/cifar10-jpeg.npz --lut cifar-ort.lut \
        --workdir runs/protocol                                   # CPU protocol (about 60-90 minutes)
    python benchmarks/search_protocol.py --space tiny --data synthetic:n=600,size=24 --cost flops \
        --search-epochs 2 --retrain-epochs 1 --random 3 --tau-archs 4 --workdir /tmp/p   # dry run, ~3 min
    torchrun --nproc_per_node 8 benchmarks/search_protocol.py --torch-device cuda ...  # each job on 8 GPUs

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

With ``--finalists K`` (issue 37) the searches run ``hwnas search --finalists K --finalist-epochs E``
(the searched arm is the halving's winner) and two arms join:

* supernet's pick: what each search's supernet alone selects (``--finalists 0``), from its
  ``candidates.json``, retrained with the same retrain seed as that search's result;
* random search at equal compute: per search seed, K networks drawn uniformly in the band go
  through the same successive halving (same epochs, seed, learning rate and images), and the winner
  is retrained (``protocol/halving.py``; state in ``random-halving-i/``).

With ``--inband-archs N``, N more networks drawn uniformly in the band are retrained and scored by
every ranker: the first search's supernet (BatchNorm re-estimated) and a short standalone training
for each stage's epochs (E, 2E, 4E, ...); the table gives each ranker's in-band Kendall tau against
standalone test accuracy beside the noise ceiling. Both run without torchrun only, for now.

Every final network is timed alone on ``--device`` at the end (rounds counted by their fastest
run). Statistics: mean +- sd per arm; searched against random with Welch's t-test and the exact
permutation p-value (every split of the pooled scores); searched against MobileNetV2-style paired
by retrain seed. Ranking: Kendall tau between supernet accuracy (the first search's supernet,
BatchNorm re-estimated per child) and standalone test accuracy over ``--tau-archs`` architectures,
one from each equal slice of the whole cost range.
Under torchrun the searches, the supernet's scores and the retrainings run one after another, each
over every rank (DDP: each rank takes its share of every global batch, as ``hwnas search`` and
``hwnas train`` do under torchrun); the work folder must be one that every node sees, rank 0 writes
it and times the networks at the end. Without torchrun ``--jobs`` runs several jobs side by side.
Results go to ``WORKDIR/results.json`` as they come (a re-run skips what is done) and the
markdown table to ``WORKDIR/table.md``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from protocol.arms import (
    RANDOM_SEED,
    arms_so_far,
    measure_alone,
    mobilenet_v2_style,
    random_in_band,
    search_ended,
    searched,
    spread,
    supernet_pick,
)
from protocol.halving import halving_job, short_scores_job
from protocol.jobs import elapsed, job_key, retrain_job, search_job, supernet_scores_job, unique, worker_init
from protocol.report import final_table, partial_table
from protocol.stats import kendall_tau, ranking_rows, tau_ceiling, welch_and_permutation

from hwnas.core.fileio import write_text_atomic
from hwnas.search.config import CHILD_SAMPLING, PATHS, SELECTION_RESOLUTION
from hwnas.search.cost import make_cost
from hwnas.search.finalists import FINALIST_INITS, schedule
from hwnas.search.loop import SearchConfig
from hwnas.spaces import get_space
from hwnas.spaces.arch import Architecture
from hwnas.train.distributed import join, launched, leave, rank
from hwnas.train.training import torch_device, train_child


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
    ap.add_argument("--finalists", type=int, default=0,
                    help="search with --finalists K (successive halving judges the supernet's K best in-band "
                         "candidates); adds two arms: the supernet's own pick, and random search at equal compute "
                         "(K random in-band networks through the same halving, one per search seed)")  # fmt: skip
    ap.add_argument("--finalist-epochs", type=int, default=SearchConfig.finalist_epochs)
    ap.add_argument("--finalist-init", choices=FINALIST_INITS, default=SearchConfig.finalist_init)
    ap.add_argument("--inband-archs", type=int, default=0,
                    help="N random in-band networks, retrained standalone and scored by every ranker (the first "
                         "search's supernet; short training for each stage's epochs): each ranker's in-band tau")  # fmt: skip
    ap.add_argument("--device", default="ort-cpu:threads=1", help="where the final networks are timed ('' to skip)")
    ap.add_argument("--torch-device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="retrain under bfloat16 autocast (GPU)")
    ap.add_argument("--jobs", type=int, default=1, help="run this many searches and retrainings at once (processes)")
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    if launched() and args.jobs > 1:
        if rank() == 0:
            ap.error("under torchrun every search and retraining runs over all the ranks, one at a time; drop --jobs")
        sys.exit(2)
    if launched() and (args.finalists or args.inband_archs):
        if rank() == 0:
            ap.error(
                "--finalists and --inband-archs run without torchrun for now (their jobs are not spread over ranks)"
            )
        sys.exit(2)
    group = join(args.torch_device)
    if not group.main:
        sys.stdout = open(os.devnull, "w")  # rank 0 reports
    work = Path(args.workdir)
    if group.main:
        work.mkdir(parents=True, exist_ok=True)
    group.barrier()
    results_path = work / "results.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    group.barrier()  # every rank has read the results before rank 0 writes them again
    if args.reuse and "retrained" not in results:
        results["retrained"] = json.loads(Path(args.reuse).read_text())["retrained"]
        results["reused_from"] = args.reuse

    def save() -> None:
        if group.main:  # only rank 0 writes
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
                               selection_resolution=args.selection_resolution, finalists=args.finalists,
                               finalist_epochs=args.finalist_epochs, finalist_init=args.finalist_init,
                               **({"evolution": args.evolution} if args.evolution is not None else {}))
            for seed in args.search_seeds}  # fmt: skip
    # the baselines and the ranking networks are drawn once and kept: drawing them costs minutes on a
    # large space (rejection sampling), and a resumed run must retrain the same networks
    drawn_for = f"{space.name} {args.cost} budget {budget!r}, {args.random} random, {args.tau_archs} ranked"
    if args.random_seed != RANDOM_SEED:  # the default keeps the key older run folders were written with
        drawn_for += f", random seed {args.random_seed}"
    if args.finalists:
        drawn_for += f", {args.finalists} finalists"
    if args.inband_archs:
        drawn_for += f", {args.inband_archs} in band"
    if results.get("drawn", {}).get("for") == drawn_for:

        def parse(text: str) -> Architecture:
            return Architecture.from_str(text, num_classes=space.num_classes, in_channels=space.in_channels)

        mbv2 = parse(results["drawn"]["mbv2"]) if results["drawn"]["mbv2"] else None
        randoms = [parse(t) for t in results["drawn"]["random"]]
        ranked = [parse(t) for t in results["drawn"]["ranked"]]
        inband = [parse(t) for t in results["drawn"].get("inband", [])]
        halving = [[parse(t) for t in draw] for draw in results["drawn"].get("halving", [])]
    else:
        mbv2 = mobilenet_v2_style(space, cost, *band)
        randoms = random_in_band(space, cost, *band, args.random, seed=args.random_seed)
        ranked = spread(space, cost, args.tau_archs, seed=777) if args.tau_archs > 1 else []
        inband = random_in_band(space, cost, *band, args.inband_archs, seed=args.random_seed + 4242)
        halving = [random_in_band(space, cost, *band, args.finalists, seed=args.random_seed + 1000 + i)
                   for i in range(len(args.search_seeds))] if args.finalists else []  # fmt: skip
        results["drawn"] = {"for": drawn_for, "mbv2": mbv2.to_str() if mbv2 else None,
                            "random": [a.to_str() for a in randoms], "ranked": [a.to_str() for a in ranked],
                            "inband": [a.to_str() for a in inband],
                            "halving": [[a.to_str() for a in draw] for draw in halving]}  # fmt: skip
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
    baseline_jobs += [(a, args.retrain_seeds[0]) for a in ranked + inband]
    stage_epochs = [e for _, e in schedule(args.finalists or 5, args.finalist_epochs)]  # the short trainings

    def how(index: int) -> dict[str, Any]:
        """How search ``index``'s finalists train: random search at equal compute trains alike."""
        return {"seed": args.search_seeds[index], "lr": args.search_lr, "batch_size": args.search_batch_size,
                "torch_device": args.torch_device}  # fmt: skip

    def retrain_seed(index: int) -> int:
        return args.retrain_seeds[index % len(args.retrain_seeds)]

    def extra_arms() -> dict[str, list[tuple[Architecture, int]]]:
        """Issue 37's arms so far: each search's supernet pick, random search at equal compute."""
        if not args.finalists:
            return {}
        picks = [(supernet_pick(work / f"search-seed{seed}", space), retrain_seed(i))
                 for i, seed in enumerate(args.search_seeds) if search_ended(work, seed)]  # fmt: skip
        won = results.get("random_halving", {})
        randoms_won = [(Architecture.from_str(won[str(i)]["winner_arch"], space.num_classes, space.in_channels),
                        retrain_seed(i)) for i in range(len(halving)) if str(i) in won]  # fmt: skip
        return {"supernet's pick": picks, "random search at equal compute": randoms_won}

    def unscored() -> list[str]:
        """The ranking's networks not yet scored through the first search's supernet."""
        return [a.to_str() for a in ranked + inband if a.to_str() not in results.get("supernet_scores", {})]

    short_done = results.setdefault("short_scores", {})
    short_jobs = [a.to_str() for a in inband if a.to_str() not in short_done]
    halving_jobs = [i for i in range(len(halving)) if str(i) not in results.get("random_halving", {})]

    pending = [seed for seed in args.search_seeds if not search_ended(work, seed)]
    queue: list[tuple[Architecture, int]] = []
    for seed in args.search_seeds:
        if seed not in pending:
            queue += searched(args, work, space, seed)
    queue += baseline_jobs
    queue += [j for jobs in extra_arms().values() for j in jobs]
    queue = unique([(a, sd) for a, sd in queue if job_key(a, sd) not in done])
    print(f"{len(pending)} searches and {len(queue)} retrainings to run (more once the searches end); "
          f"{args.jobs} at a time", flush=True)  # fmt: skip
    if group.active and (pending or queue):
        # torchrun: each search, scoring and retraining in turn, over every rank (DDP); the
        # same order on every rank, as each reads the same files
        threads = max(1, (os.cpu_count() or 1) // group.world) if dev.type == "cpu" else 1
        worker_init(args.data, args.space, args.limit, args.split_seed, threads)
        for seed in pending:
            seconds = search_job(asdict(cfgs[seed]), str(work / f"search-seed{seed}"), threads, group)
            results.setdefault("search_seconds", {})[str(seed)] = seconds
            save()
            print(f"searched seed {seed} on {group.world} processes ({seconds:.0f} s, {elapsed(started)})", flush=True)
            skip = set(done) | {job_key(*q) for q in queue}
            queue[:0] = [j for j in searched(args, work, space, seed) if job_key(*j) not in skip]
        if unscored() and search_ended(work, args.search_seeds[0]):
            results.setdefault("supernet_scores", {}).update(supernet_scores_job(str(first), unscored(), group))
            save()
        while queue:
            a, sd = queue.pop(0)
            key, row = retrain_job(a.to_str(), sd, args.retrain_epochs, args.torch_device, args.bf16,
                                   args.retrain_batch_size, args.retrain_lr, group)  # fmt: skip
            done[key] = row
            save()
            print(f"retrained {key} on {group.world} processes: test {row['test']:.2%} ({row['seconds']:.0f} s, "
                  f"{elapsed(started)})", flush=True)  # fmt: skip
    leave()
    if not group.main:
        return  # rank 0 times the networks and writes the tables
    if pending or queue or short_jobs or halving_jobs:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

        n_jobs = max(1, args.jobs)
        threads = max(1, (os.cpu_count() or 1) // n_jobs) if dev.type == "cpu" else 1
        with ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context("spawn"), initializer=worker_init,
                                 initargs=(args.data, args.space, args.limit, args.split_seed, threads)) as pool:  # fmt: skip
            running: dict[Future[Any], tuple[str, Any]] = {}
            for seed in pending:
                f = pool.submit(search_job, asdict(cfgs[seed]), str(work / f"search-seed{seed}"), threads)
                running[f] = ("search", seed)

            def fill() -> None:
                while queue and len(running) < n_jobs:
                    a, sd = queue.pop(0)
                    f = pool.submit(retrain_job, a.to_str(), sd, args.retrain_epochs, args.torch_device, args.bf16,
                                    args.retrain_batch_size, args.retrain_lr)  # fmt: skip
                    running[f] = ("retrain", job_key(a, sd))

            def score_ranked() -> None:
                if unscored() and search_ended(work, args.search_seeds[0]):
                    f = pool.submit(supernet_scores_job, str(first), unscored())
                    running[f] = ("ranking", None)

            for i in halving_jobs:
                f = pool.submit(halving_job, [a.to_str() for a in halving[i]], args.finalist_epochs, how(i),
                                str(work / f"random-halving-{i}"))  # fmt: skip
                running[f] = ("halving", i)
            for arch_str in short_jobs:
                running[pool.submit(short_scores_job, arch_str, stage_epochs, how(0))] = ("short", arch_str)
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
                        print(f"searched seed {what} ({seconds:.0f} s, {elapsed(started)})", flush=True)
                        skip = set(done) | {job_key(*q) for q in queue}
                        new_jobs = searched(args, work, space, what)
                        if args.finalists:
                            index = args.search_seeds.index(what)
                            new_jobs.append((supernet_pick(work / f"search-seed{what}", space), retrain_seed(index)))
                        queue[:0] = unique([j for j in new_jobs if job_key(*j) not in skip])
                        if what == args.search_seeds[0]:
                            score_ranked()
                    elif kind == "halving":
                        state = f.result()
                        results.setdefault("random_halving", {})[str(what)] = state
                        save()
                        print(f"random search at equal compute {what}: {state['winner_arch']} ({elapsed(started)})",
                              flush=True)  # fmt: skip
                        winner = (Architecture.from_str(state["winner_arch"], space.num_classes, space.in_channels),
                                  retrain_seed(int(what)))  # fmt: skip
                        if job_key(*winner) not in done and all(job_key(*q) != job_key(*winner) for q in queue):
                            queue.insert(0, winner)
                    elif kind == "short":
                        arch_str, by_epochs = f.result()
                        short_done[arch_str] = by_epochs
                        save()
                    elif kind == "ranking":
                        new = f.result()
                        results.setdefault("supernet_scores", {}).update(new)
                        save()
                        print(f"scored {len(new)} networks through the supernet ({elapsed(started)})", flush=True)
                    else:
                        key, row = cast(tuple[str, dict[str, float]], f.result())
                        done[key] = row
                        save()
                        print(f"retrained {key}: test {row['test']:.2%} ({row['seconds']:.0f} s, {elapsed(started)})",
                              flush=True)  # fmt: skip
                fill()
                write_text_atomic(work / "table.md", partial_table(done, {**arms_so_far(args, work, space,
                                                                                       baseline_arms), **extra_arms()}))  # fmt: skip

    arms = {**arms_so_far(args, work, space, baseline_arms), **extra_arms()}

    def test_acc(a: Architecture, sd: int) -> float:
        return float(done[job_key(a, sd)]["test"])

    scores = {arm: [test_acc(a, sd) for a, sd in items] for arm, items in arms.items()}

    # ranking: supernet accuracy against standalone accuracy
    if unscored():
        results.setdefault("supernet_scores", {}).update(supernet_scores_job(str(first), unscored()))
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
    table = final_table(args, space, cost, budget, arms, scores, tau, len(pairs), latency)
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
    if args.finalists:
        table += finalist_lines(scores)
    if inband:
        standalone = [test_acc(a, args.retrain_seeds[0]) for a in inband]
        m = scores["MobileNetV2-style"]
        rankers = {"supernet (BatchNorm re-estimated)": [via[a.to_str()] for a in inband]}
        for e in stage_epochs:
            rankers[f"short training, {e} epoch(s)"] = [short_done[a.to_str()][str(e)] for a in inband]
        taus = {name: kendall_tau(v, standalone) for name, v in rankers.items()}
        table += inband_lines(taus, standalone, statistics.stdev(m) if len(m) > 1 else None)
        results["summary"]["inband_tau"] = taus
        save()
    write_text_atomic(work / "table.md", table)
    print(table)


def finalist_lines(scores: dict[str, list[float]]) -> str:
    """Issue 37's comparisons: the finalists' winner against random search at equal compute (Welch,
    exact permutation) and against the supernet's own pick of the same search (paired by seed)."""
    s, r, p = scores["searched"], scores["random search at equal compute"], scores["supernet's pick"]
    lines = []
    if s and r:
        welch, perm = welch_and_permutation(s, r)
        lines.append(f"searched (finalists) vs random search at equal compute: difference "
                     f"{statistics.fmean(s) - statistics.fmean(r):+.2%}, Welch p = {welch:.3f}, exact permutation "
                     f"p = {perm:.3f}")  # fmt: skip
    if s and p:
        diffs = [a - b for a, b in zip(s, p, strict=False)]
        lines.append(f"searched (finalists) vs the supernet's pick, paired by search seed: differences "
                     f"{', '.join(f'{d:+.2%}' for d in diffs)} (mean {statistics.fmean(diffs):+.2%})")  # fmt: skip
    return "\n".join(lines) + "\n" if lines else ""


def inband_lines(taus: dict[str, float | None], standalone: list[float], retrain_sd: float | None) -> str:
    """Each ranker's Kendall tau against standalone accuracy over the in-band networks (``taus``),
    beside the noise ceiling (a perfect ranker against one retraining per network, at ``retrain_sd``)."""
    ceiling = ""
    if retrain_sd is not None:
        lo, mid, hi = tau_ceiling(standalone, retrain_sd)
        ceiling = f"; noise ceiling {mid:.3f} (10-90%: {lo:.3f}-{hi:.3f}) at retrain sd {retrain_sd:.2%}"
    lines = [f"\nIn-band Kendall tau against standalone test accuracy, {len(standalone)} random networks in the "
             f"band{ceiling}", "| ranker | in-band tau |", "|---|---|"]  # fmt: skip
    for name, tau in taus.items():
        lines.append(f"| {name} | {'-' if tau is None else f'{tau:.3f}'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
