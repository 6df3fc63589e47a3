"""Retrain architectures, or one-change variants of one, with the search protocol's recipe.

    python benchmarks/retrain_probe.py --space cifar-wide --data ../shared/data/cifar10-jpeg.npz \
        --out runs/probe.json --variants-of "r32 conv_k3_c16_s1_hs ..." ARCH ...

Each architecture is retrained as ``search_protocol.py`` retrains (same data limit, split seed,
epochs, batch size and learning rate; retrain seed ``--seed``), so its test accuracy sits beside
that run's. ``--variants-of A`` adds A and A with one change each: SE on every searchable IR block,
SE on none, the other input resolutions, and A's widths with every searchable IR block made
``ir_k3`` at the largest expansion without SE (the MobileNetV2-style blocks). It is a probe of which
structural difference carries a gap, chosen after the accuracies it explains were seen: a lead,
never a result. Resumable: a network already in ``--out`` is not retrained.
"""

from __future__ import annotations

import argparse
import inspect
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from search_protocol import _retrain_job, _worker_init

from hwnas.core.fileio import write_text_atomic
from hwnas.spaces import get_space
from hwnas.spaces.arch import Architecture, Block
from hwnas.spaces.ops import parse_op
from hwnas.spaces.space import SearchSpace
from hwnas.train.training import train_child


def _searchable(space: SearchSpace, i: int) -> bool:
    return len(space.layers[i].options) > 1


def _with_se(space: SearchSpace, i: int, b: Block, se: bool) -> Block:
    """``b`` with SE added (the space's SE form of its op: ``_sehsig`` or ``_se``) or removed; ``b`` itself
    where the layer offers no such op (or ``b`` already is that form)."""
    if parse_op(b.op).kind != "ir":
        return b
    names = [b.op + "_sehsig", b.op + "_se"] if se else [b.op.replace("_sehsig", "").replace("_se", "")]
    ops = space.layers[i].ops
    return next((Block(n, b.c, b.s, b.e) for n in names if n in ops), b)


def variants(space: SearchSpace, arch: Architecture) -> dict[str, Architecture]:
    """``arch`` and its one-change variants (see the module docstring), each in ``space``."""

    def rebuild(blocks: list[Block], res: int | None = None) -> Architecture:
        return Architecture(tuple(blocks), res or arch.resolution, arch.num_classes, arch.in_channels)

    blocks = list(arch.blocks)
    out = {"as given": arch}
    for se in (True, False):
        out["SE on every searchable IR block" if se else "no SE"] = rebuild(
            [_with_se(space, i, b, se) if _searchable(space, i) else b for i, b in enumerate(blocks)]
        )
    for r in space.resolutions:
        if r != arch.resolution:
            out[f"at {r} px"] = rebuild(blocks, r)
    e = max(max(space.layers[i].expansions) for i in range(len(blocks)) if _searchable(space, i))
    out["ir_k3, largest expansion, no SE, same widths"] = rebuild(
        [
            Block("ir_k3", b.c, b.s, e) if _searchable(space, i) and parse_op(b.op).kind == "ir" else b
            for i, b in enumerate(blocks)
        ]
    )
    return {k: v for k, v in out.items() if space.contains(v) and (k == "as given" or v != arch)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("archs", nargs="*", help="architecture strings to retrain")
    ap.add_argument("--variants-of", action="append", default=[], help="an architecture; adds it and its variants")
    ap.add_argument("--space", default="cifar")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--limit", type=int, default=5000)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    recipe = inspect.signature(train_child).parameters  # the protocol's retraining defaults are train_child's
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=recipe["batch_size"].default)
    ap.add_argument("--lr", type=float, default=recipe["lr"].default)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    space = get_space(args.space)

    def read(text: str) -> Architecture:
        return Architecture.from_str(text, space.num_classes, space.in_channels)

    todo: dict[str, str] = {a: "as given" for a in args.archs}
    for base in args.variants_of:
        for label, v in variants(space, read(base)).items():
            todo.setdefault(v.to_str(), label)
    out = Path(args.out)
    done = json.loads(out.read_text()) if out.exists() else {}
    todo = {a: label for a, label in todo.items() if a not in done}
    with ProcessPoolExecutor(
        args.jobs, initializer=_worker_init, initargs=(args.data, args.space, args.limit, args.split_seed, 1)
    ) as pool:
        futures = {
            pool.submit(_retrain_job, a, args.seed, args.epochs, "cpu", False, args.batch_size, args.lr): a
            for a in todo
        }
        for f, a in futures.items():
            _, row = f.result()
            done[a] = {"label": todo[a], **row}
            write_text_atomic(out, json.dumps(done, indent=1) + "\n")
            print(f"{todo[a]}: test {row['test']:.2%}  {a}", flush=True)


if __name__ == "__main__":
    main()
