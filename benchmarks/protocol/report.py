"""The protocol's markdown tables: the partial one after every retraining, the final one."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from datetime import date
from typing import Any

import torch

from hwnas.search.cost import SearchCost
from hwnas.spaces.arch import Architecture
from hwnas.spaces.space import SearchSpace
from protocol.jobs import job_key
from protocol.stats import welch_and_permutation


def partial_table(done: dict[str, Any], arms: dict[str, list[tuple[Architecture, int]]]) -> str:
    """The table so far (written after every retrained network)."""
    keys = {job_key(a, sd) for items in arms.values() for a, sd in items}
    lines = [f"{len([k for k in keys if k in done])} of the arms' {len(keys)} networks retrained so far",
             "| arm | test accuracies so far |", "|---|---|"]  # fmt: skip
    for arm, items in arms.items():
        got = [done[job_key(a, sd)]["test"] for a, sd in items if job_key(a, sd) in done]
        lines.append(f"| {arm} | {', '.join(f'{v:.2%}' for v in got) or '-'} |")
    return "\n".join(lines) + "\n"


def final_table(args: argparse.Namespace, space: SearchSpace, cost: SearchCost, budget: float,
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
             f"{args.evolution if args.evolution is not None else 'default'}{_finalists(args)}; retrain {args.retrain_epochs} epochs -->",
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


def _finalists(args: argparse.Namespace) -> str:
    """The finalists' settings for the table's header, where the run has them."""
    if not getattr(args, "finalists", 0):
        return ""
    return (f", finalists {args.finalists} ({args.finalist_epochs} epoch(s) first, from {args.finalist_init}), "
            f"{args.inband_archs} in-band networks ranked")  # fmt: skip
