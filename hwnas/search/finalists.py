"""Successive halving over the search's finalists: short standalone training as the last judge.

Inside the budget band the supernet's accuracy ranks networks no better than chance (BENCHMARKS
"Search quality"), so ``hwnas search --finalists K`` lets a short standalone training decide among
the K in-band candidates the supernet scores best (Li et al.'s successive halving):

    stage 0: the K finalists each train E epochs; the best half (rounded up) survive
    stage s: the survivors train E * 2**s epochs (from the start again); the best half survive
    ... until one network remains: the search's result.

Each finalist trains on the weights split alone and is scored on the images the weights never saw
(validation and architecture images), the same images selection scores candidates on; the test
split is never touched. Every training starts from the same place: the child's own initialization
(``scratch``) or the supernet's weights sliced to it (``supernet``), with the search's seed, so
finalists differ only in their architecture. Ties go to the higher supernet accuracy, then to
the earlier candidate.

Resuming: ``finalists.json`` in the run folder holds every finished training's score and is
rewritten (atomically) after each one; an unfinished training goes on from its per-epoch
checkpoint in ``finalists/``. A killed search resumed with ``--resume`` therefore ends where an
uninterrupted one ends.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hwnas.core.errors import HwnasError
from hwnas.core.fileio import write_text_atomic
from hwnas.train.config import INITS

FINALIST_INITS = INITS  # where a finalist's training starts: hwnas train's --init choices
STATE_FILE = "finalists.json"
CHECKPOINTS = "finalists"


def schedule(k: int, epochs: int) -> list[tuple[int, int]]:
    """(networks trained, epochs each) per stage of successive halving over ``k`` finalists."""
    stages, n, e = [], k, epochs
    while True:
        stages.append((n, e))
        if n <= 2:
            return stages
        n, e = math.ceil(n / 2), 2 * e


def survivors(scores: dict[int, float], tie_break: Sequence[float]) -> list[int]:
    """The best half (rounded up) of the finalists in ``scores`` (index -> score), best first:
    ties go to the higher ``tie_break[i]`` (the supernet's accuracy), then to the lower index."""
    order = sorted(scores, key=lambda i: (-scores[i], -tie_break[i], i))
    return order[: math.ceil(len(order) / 2)]


def check_finalists(finalists: int, epochs: int, init: str) -> None:
    """One-line errors for bad ``--finalists``, ``--finalist-epochs`` and ``--finalist-init``."""
    if not isinstance(finalists, int) or finalists < 0:
        raise HwnasError(f"--finalists {finalists}: give a whole number >= 0 (0: the supernet alone chooses)")
    if not isinstance(epochs, int) or epochs < 1:
        raise HwnasError(f"--finalist-epochs {epochs}: give a whole number >= 1 (the first stage's epochs)")
    if init not in FINALIST_INITS:
        raise HwnasError(f"--finalist-init {init!r}: choose {' or '.join(FINALIST_INITS)}")


def run_halving(
    out: Path,
    finalists: list[dict[str, Any]],
    settings: dict[str, Any],
    train: Callable[[int, int, Path], tuple[float, float]],
    report: Callable[[str], None] = lambda _: None,
    write: bool = True,
) -> dict[str, Any]:
    """Successive halving over ``finalists`` (rows with ``arch`` and ``val_acc_supernet``, at
    least one). ``train(i, epochs, checkpoint)`` trains finalist ``i`` for ``epochs`` epochs, going
    on from ``checkpoint`` when it exists, and returns (score, seconds). ``settings`` (K, E, init,
    seed) identify the run: a ``finalists.json`` made with others, or for other finalists, is a
    one-line error. Returns the state written to ``out/finalists.json`` (``winner``: an index);
    ``write=False`` (the other ranks under torchrun) reads the file but leaves writing to rank 0."""
    path = out / STATE_FILE
    archs = [f["arch"] for f in finalists]
    state = _load(path, settings, archs) or {
        "settings": settings,
        "finalists": [{**f, "stages": []} for f in finalists],
        "stages": [],
        "winner": None,
    }
    tie = [float(f["val_acc_supernet"]) for f in finalists]
    entrants = list(range(len(finalists)))
    for s, (n, epochs) in enumerate(schedule(len(finalists), settings["finalist_epochs"])):
        assert len(entrants) == n, (entrants, n)
        scores: dict[int, float] = {}
        for i in entrants:
            done = [r for r in state["finalists"][i]["stages"] if r["stage"] == s]
            if done:
                scores[i] = float(done[0]["score"])
                continue
            report(f"stage {s + 1}: finalist {i + 1} of {len(finalists)}, {epochs} epoch(s): {archs[i]}")
            checkpoint = out / CHECKPOINTS / f"finalist-{i + 1}-stage-{s + 1}.ckpt"
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            score, seconds = train(i, epochs, checkpoint)
            scores[i] = score
            state["finalists"][i]["stages"].append({"stage": s, "epochs": epochs, "score": score, "seconds": seconds})
            if write:
                write_text_atomic(path, json.dumps(state, indent=2) + "\n")
                checkpoint.unlink(missing_ok=True)
        kept = survivors(scores, tie)
        state["stages"].append({"stage": s, "epochs": epochs, "entrants": entrants, "kept": kept})
        entrants = kept
    state["winner"] = entrants[0]
    state["training_epochs"] = sum(r["epochs"] for f in state["finalists"] for r in f["stages"])
    state["seconds"] = sum(r["seconds"] for f in state["finalists"] for r in f["stages"])
    if write:
        write_text_atomic(path, json.dumps(state, indent=2) + "\n")
    return state


def _load(path: Path, settings: dict[str, Any], archs: list[str]) -> dict[str, Any] | None:
    """The state of an interrupted halving in ``path``, or None when there is none."""
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
        then = state["settings"]
        then_archs = [f["arch"] for f in state["finalists"]]
        for f in state["finalists"]:  # every finished training's row is whole
            f["stages"] = [{**r, "stage": int(r["stage"]), "score": float(r["score"])} for r in f["stages"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HwnasError(f"{path}: corrupt content ({exc}); delete it to train the finalists again") from None
    if then != settings or then_archs != archs:
        what = "other settings" if then != settings else "other finalists"
        raise HwnasError(f"{path} was made with {what}; resume with the same settings, or delete it (and "
                         f"{path.parent / CHECKPOINTS}) to train the finalists again")  # fmt: skip
    state["stages"], state["winner"] = [], None  # both follow from the scores again
    return state
