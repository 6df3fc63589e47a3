"""`hwnas search` and `hwnas train`: options built from SearchConfig and TrainConfig."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from hwnas.cli.common import (
    budget_list,
    console,
    fit_threads,
    warn_about_lut,
)
from hwnas.core.errors import HwnasError
from hwnas.core.options import add_options, options_of
from hwnas.search.config import SearchConfig
from hwnas.search.recipes import RECIPES, with_recipe
from hwnas.train.config import TrainConfig

if TYPE_CHECKING:
    from hwnas.train.distributed import Group


_BUDGET_FLAGS = {"budget_ms": "latency", "budget_mflops": "flops", "budget_mparams": "params"}
_SEARCH_OPTIONS_BEFORE_THE_BUDGET = ("space", "lut")  # hwnas search --help lists them first


def _budget(args: argparse.Namespace) -> tuple[str, list[float]]:
    given = [(flag, getattr(args, flag)) for flag in _BUDGET_FLAGS if getattr(args, flag) is not None]
    if len(given) != 1:
        raise HwnasError("give exactly one budget: --budget-ms (latency), --budget-mflops or --budget-mparams")
    flag, value = given[0]
    cost = args.cost or _BUDGET_FLAGS[flag]
    if cost in _BUDGET_FLAGS.values() and cost != _BUDGET_FLAGS[flag]:
        raise HwnasError(f"--cost {cost} does not go with --{flag.replace('_', '-')}")
    return cost, value


def cmd_search(args: argparse.Namespace) -> int:
    from hwnas.train.distributed import Group, join, leave, world_size

    cost, budgets = _budget(args)
    budget = budgets[(len(budgets) - 1) // 2]  # the supernet trains towards the middle budget
    values = with_recipe(args.recipe, options_of(SearchConfig, args), getattr(args, "given_options", None))
    cfg = SearchConfig(budget=budget, budgets=budgets if len(budgets) > 1 else [], cost=cost, **values)
    Group(world=world_size()).check_batch(cfg.batch_size)  # before waiting for the other processes
    group = join(cfg.torch_device, args.dist_timeout)
    try:
        return _search(args, cfg, budget, group)
    finally:
        leave()


def _search(args: argparse.Namespace, cfg: SearchConfig, budget: float, group: Group) -> int:
    from hwnas.search.loop import Search
    from hwnas.train.checkpoints import has_search_checkpoint
    from hwnas.train.distributed import restarted

    # an elastic restart (torchrun --max-restarts) goes on from the failed group's last checkpoint
    resume = args.resume or (restarted() and has_search_checkpoint(Path(args.out)))
    search = Search(cfg, args.out, resume=resume, progress=not args.no_progress, group=group)
    fit_threads(args.torch_device)
    if not group.main:  # rank 0 reports; the other ranks compute their shares
        search.run()
        return 0
    from hwnas.train.data import fit_notes

    for note in fit_notes(search.splits, max(search.space.resolutions)):
        print(f"hwnas: note: {note}", file=sys.stderr)
    if cfg.cost == "latency":
        warn_about_lut(cfg.lut)
    console.print(
        f"searching {search.space.name} for {cfg.cost} <= {search.cost.fmt(budget)} (space spans "
        f"{search.cost.fmt(search.cheapest)} to {search.cost.fmt(search.costliest)}); "
        f"{len(search.splits.weights)} weight / {len(search.splits.alphas)} arch / {len(search.splits.val)} val images"
    )
    try:
        result = search.run()
    except KeyboardInterrupt:
        print(
            f"hwnas: interrupted; finished epochs are saved in {args.out}; add --resume to the same command to go on",
            file=sys.stderr,
        )
        return 130
    if search.skipped:
        print(f"hwnas: note: {len(search.skipped)} unreadable image(s) skipped (--bad-images skip), e.g. "
              f"{sorted(search.skipped)[0]}; all of them are listed in {args.out}/search.json", file=sys.stderr)  # fmt: skip
    d = result.derivation
    t = Table("", "architecture", f"{cfg.cost} ({search.cost.unit})", title=f"search result ({result.seconds:.0f} s)")
    t.add_row("argmax", d.argmax.to_str(), f"{d.argmax_cost:.4g}")
    t.add_row("derived", d.arch.to_str(), f"{d.cost:.4g} (budget {budget:g})")
    for c in result.candidates:
        t.add_row(("* " if c["selected"] else "") + c["how"], c["arch"],
                  f"{c['cost']:.4g}, supernet val {c['val_acc_supernet']:.1%}")  # fmt: skip
    console.print(t)
    _print_finalists(result.candidates, search.finalist_cost)
    null = next((c for c in result.candidates if c["how"].startswith("null")), None)
    if null is not None:
        console.print(f"the derived network differs from the null derivation in {null['layers_differing_from_selected']} "
                      "layers (resolution counted as one)")  # fmt: skip
    for step in d.steps:
        console.print(f"  {step}")
    if result.per_budget:
        t = Table("budget", "architecture", f"{cfg.cost} ({search.cost.unit})", "supernet val", "vs null",
                  title="one supernet, one architecture per budget (budgets.json, budget-B/)")  # fmt: skip
        for row in result.per_budget:
            t.add_row(f"{row['budget']:g}", row["arch"], f"{row['cost']:.4g}", f"{row['val_acc_supernet']:.1%}",
                      f"{row['layers_differing_from_null']} layers differ")  # fmt: skip
        console.print(t)
    last = result.metrics[-1] if result.metrics else {}
    console.print(f"supernet val accuracy of the argmax: {last.get('val_acc', float('nan')):.1%}")
    finalists = "finalists.json, " if search.finalist_cost is not None else ""
    console.print(f"wrote {args.out}/arch.json, arch.txt, candidates.json, {finalists}metrics.csv, probs.csv, "
                  "progress.png, choices.png")  # fmt: skip
    same_data = (f" --limit {args.limit}" if args.limit else "") + (
        f" --split-seed {args.split_seed}" if args.split_seed else "")  # fmt: skip
    console.print(f"next: hwnas train --arch {args.out}/arch.json --data {args.data}{same_data} "
                  f"--out {args.out}/child.safetensors")  # fmt: skip
    return 0


def _print_finalists(candidates: list[dict[str, Any]], cost: dict[str, Any] | None) -> None:
    finalists = sorted((c for c in candidates if "finalist" in c), key=lambda c: c["finalist"])
    if not finalists or cost is None:
        return
    t = Table("", "finalist", "supernet val", "score per stage (images the weights never saw)",
              title="successive halving (finalists.json)")  # fmt: skip
    for c in finalists:
        t.add_row("*" if c["selected"] else "", f"{c['finalist']}: {c['arch']}", f"{c['val_acc_supernet']:.1%}",
                  ", ".join(f"{v:.1%}" for v in c["finalist_scores"]))  # fmt: skip
    console.print(t)
    if cost.get("in_retrainings") is not None:
        console.print(f"finalists' cost: {cost['training_epochs']} epochs of training in {cost['seconds']:.0f} s = "
                      f"{cost['in_retrainings']:.2f}x one retraining ({cost['retraining_seconds_estimate']:.0f} s, "
                      f"estimated from the winner's epochs); the whole search: {cost['search_in_retrainings']:.2f}x")  # fmt: skip


def cmd_train(args: argparse.Namespace) -> None:
    from hwnas.spaces.arch import Architecture
    from hwnas.train.checkpoints import train_checkpoint_path
    from hwnas.train.distributed import Group, join, leave, restarted, world_size
    from hwnas.workflows import train_and_save

    arch = Architecture.load(args.arch)
    cfg = TrainConfig(**options_of(TrainConfig, args))
    Group(world=world_size()).check_batch(cfg.batch_size)  # before waiting for the other processes
    # an elastic restart (torchrun --max-restarts) goes on from the failed group's last epoch
    resume = args.resume or (restarted() and train_checkpoint_path(args.out).is_file())
    group = join(cfg.torch_device, args.dist_timeout)
    try:
        result = train_and_save(arch, cfg, args.out, progress=not args.no_progress,
                                before_training=lambda: fit_threads(args.torch_device), group=group,
                                resume=resume)  # fmt: skip
    finally:
        leave()
    if not group.main:
        return
    for note in result.notes:
        print(f"hwnas: note: {note}", file=sys.stderr)
    test_text = f", test accuracy {result.test_acc:.2%}" if result.test_acc is not None else ""
    console.print(f"{arch.to_str()}: val accuracy {result.val_acc:.2%}{test_text} after {args.epochs} epochs "
                  f"({result.seconds:.0f} s); wrote {args.out}")  # fmt: skip


def add_dist_timeout(p: argparse.ArgumentParser) -> None:
    from hwnas.train.distributed import DIST_TIMEOUT_S

    p.add_argument("--dist-timeout", type=float, default=DIST_TIMEOUT_S, metavar="S",
                   help=f"under torchrun: seconds to wait for the other processes at the rendezvous and at each "
                        f"exchange (default {DIST_TIMEOUT_S:g})")  # fmt: skip


def add_parser(sub: Any) -> None:
    """Add the search command(s) to the subparsers ``sub``."""
    se = sub.add_parser("search", help="DMaskingNAS under a latency (or FLOPs, params) budget; derives an architecture")
    add_options(se, SearchConfig, only=_SEARCH_OPTIONS_BEFORE_THE_BUDGET)
    se.add_argument("--cost", help="latency (default with --budget-ms), flops or params")
    bg = se.add_argument_group("budget (exactly one)")
    bg.add_argument("--budget-ms", type=budget_list,
                    help="predicted latency budget in ms (LUT); several, e.g. 0.15,0.2,0.25, train one supernet "
                         "and derive one architecture per budget")  # fmt: skip
    bg.add_argument("--budget-mflops", type=budget_list, help="FLOPs budget(s) in millions of multiply-adds")
    bg.add_argument("--budget-mparams", type=budget_list, help="parameter budget(s) in millions")
    se.add_argument("--recipe", choices=list(RECIPES),
                    help="imagenet: FBNet's ImageNet search setting (90 epochs, 10 warm-up, batch 192, SGD 0.1, "
                         "Adam 0.01, tau 5.0 x exp(-0.045) per epoch, RandomResizedCrop, bf16) for the options "
                         "you leave out")  # fmt: skip
    add_options(se, SearchConfig, exclude=_SEARCH_OPTIONS_BEFORE_THE_BUDGET)
    se.add_argument("--out", default="run", metavar="RUN", help="the run folder (default ./run)")
    se.add_argument("--resume", action="store_true", help="continue the search saved in --out")
    add_dist_timeout(se)
    se.add_argument("--no-progress", action="store_true")
    se.set_defaults(func=cmd_search)

    tr = sub.add_parser("train", help="train an architecture (from scratch, or from the supernet's weights)")
    tr.add_argument("--arch", required=True, metavar="ARCH.json")
    add_options(tr, TrainConfig)
    tr.add_argument(
        "--out", default="child.safetensors", help="where to write the trained child (default child.safetensors)"
    )
    tr.add_argument("--resume", action="store_true",
                    help="go on from OUT.checkpoint, which an interrupted training left (written after every epoch)")  # fmt: skip
    tr.add_argument("--no-progress", action="store_true")
    add_dist_timeout(tr)
    tr.set_defaults(func=cmd_train)
