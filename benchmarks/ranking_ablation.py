"""Does a search setting change how well the supernet ranks networks (the search issue's Kendall tau)?

    python benchmarks/ranking_ablation.py --protocol runs/protocol-v4 --set child_sampling=mixed \
        --seeds 0 1 --workdir runs/child-sampling

Re-runs a finished ``search_protocol.py`` run's searches (its ``search-seed*/config.json``, every
setting kept but those given with ``--set``), then scores that run's ranking networks (the ones
its Kendall tau was computed over) through both the new and the original supernets (BatchNorm
re-estimated per child, on the images selection scores on) and reports Kendall tau against the
standalone test accuracies the protocol measured, per search seed, with the range of tau when one
network is left out. The spread of tau over the original run's seeds is the noise floor of the
comparison; the tau a perfect ranker would reach against those one-retraining accuracies is its
ceiling. ``--original-only`` scores the original supernets alone (no search).

The standalone accuracies are the protocol's own, so a setting chosen with this script has been
chosen on those networks: its tau here is not a held-out figure. The next protocol run, on networks
drawn afresh, is. Resumable: a search that has ended is not run again.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from scipy import stats
from search_protocol import _search_ended, _search_job, _supernet_scores_job, ranking_rows, tau_ceiling

from hwnas.core.errors import HwnasError
from hwnas.core.fileio import write_text_atomic
from hwnas.search.loop import SearchConfig
from hwnas.spaces import get_space
from hwnas.spaces.arch import Architecture


def _scores(folder: Path, ranked: list[str], cached: Path) -> list[float]:
    if cached.exists():
        got = json.loads(cached.read_text())
        if set(got) == set(ranked):
            return [got[a] for a in ranked]
    got = _supernet_scores_job(str(folder), ranked)
    write_text_atomic(cached, json.dumps(got, indent=1) + "\n")
    return [got[a] for a in ranked]


def _parse_set(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or key not in SearchConfig.__dataclass_fields__:
        raise HwnasError(f"--set {item!r}: expected FIELD=VALUE with a SearchConfig field")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare string: child_sampling=mixed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", required=True, help="a finished search_protocol.py workdir")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="a SearchConfig field to change, as JSON (child_sampling=\"mixed\", relaxed_weights=false); "
                         "repeatable")  # fmt: skip
    ap.add_argument("--original-only", action="store_true", help="score the original run's supernets, search nothing")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    if bool(args.set) == args.original_only:
        raise HwnasError("give --set FIELD=VALUE (a search setting to try) or --original-only, not both or neither")
    proto, work = Path(args.protocol), Path(args.workdir)
    results = json.loads((proto / "results.json").read_text())
    ranked: list[str] = results["drawn"]["ranked"]
    standalone = [results["retrained"][f"{a}|seed0"]["test"] for a in ranked]
    work.mkdir(parents=True, exist_ok=True)
    changes = dict(_parse_set(item) for item in args.set)
    cfgs: dict[int, dict[str, Any]] = {}
    for seed in args.seeds:
        saved = json.loads((proto / f"search-seed{seed}" / "config.json").read_text())
        cfg = SearchConfig.from_saved({**saved, **changes})
        cfg.check()
        cfgs[seed] = asdict(cfg)
    label = " ".join(f"{k}={v!r}" for k, v in changes.items())
    todo = [s for s in args.seeds if not _search_ended(work, s)] if changes else []
    threads = max(1, (mp.cpu_count() or 1) // max(1, args.jobs))
    with ProcessPoolExecutor(max_workers=max(1, min(args.jobs, len(todo) or 1)),
                             mp_context=mp.get_context("spawn")) as pool:  # fmt: skip
        for seed, seconds in zip(todo, pool.map(_search_job, [cfgs[s] for s in todo],
                                                [str(work / f"search-seed{s}") for s in todo],
                                                [threads] * len(todo)), strict=True):  # fmt: skip
            print(f"search seed {seed} ({label}) ended in {seconds:.0f} s", flush=True)
    space = get_space(cfgs[args.seeds[0]]["space"])
    archs = [Architecture.from_str(a, num_classes=space.num_classes, in_channels=space.in_channels) for a in ranked]
    rows = []
    for root, name in ((work, label), (proto, "original")) if changes else ((proto, "original"),):
        for seed in args.seeds:
            folder = root / f"search-seed{seed}"
            sc = _scores(folder, ranked, work / f"scores-{'new' if root == work else 'original'}-seed{seed}.json")
            tau = float(stats.kendalltau(sc, standalone).statistic)
            _, lo, hi = ranking_rows(archs, [(s, a, 0.0) for s, a in zip(sc, standalone, strict=True)])
            rows.append({"settings": name, "seed": seed, "kendall_tau": tau, "leave_one_out": [lo, hi], "scores": sc})
            print(f"{name} seed {seed}: Kendall tau {tau:.3f} (one network left out: {lo:.3f} to {hi:.3f})", flush=True)
    mbv2 = results["summary"]["scores"]["MobileNetV2-style"]
    if len(mbv2) > 1:
        sd = statistics.stdev(mbv2)
        c_lo, c_mid, c_hi = tau_ceiling(standalone, sd)
        print(f"noise ceiling: a perfect ranker reaches tau {c_mid:.3f} (10-90%: {c_lo:.3f}-{c_hi:.3f}) at the "
              f"MobileNetV2-style retrain-seed sd {sd:.2%}", flush=True)  # fmt: skip
    out = {"protocol": str(proto), "ranked": ranked, "standalone": standalone, "rows": rows}
    write_text_atomic(work / "tau.json", json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    try:
        main()
    except HwnasError as e:
        raise SystemExit(f"error: {e}") from None
