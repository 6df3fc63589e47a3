"""The protocol's jobs for issue 37's arms: successive halving over random in-band networks (random
search at equal compute: the same halving ``hwnas search --finalists`` runs, over K random networks
instead of the supernet's K best), and short standalone trainings that score in-band networks for
the ranking (each ranker's in-band Kendall tau against the 10-epoch standalone accuracies).

Both train on the weights split alone and score on the images the weights never saw (validation and
architecture images), exactly as the search's finalists are judged; the test split stays for the
retrainings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwnas.search.finalists import run_halving
from hwnas.spaces.arch import Architecture
from hwnas.train.data import DataSplits
from hwnas.train.training import train_child
from protocol.jobs import WORKER, torch_device_of


def judged_splits() -> DataSplits:
    """The worker's splits as the finalists see them: train on ``weights``, judged on ``val`` +
    ``alphas`` (the search's split fractions: the protocol loads its data with the same seed)."""
    splits: DataSplits = WORKER["splits"]
    return splits.judged_on_unseen()


def _short(arch_str: str, epochs: int, how: dict[str, Any], checkpoint: Path | None = None) -> tuple[float, float]:
    """``how``: seed, lr, batch_size and torch_device, those of the searches' finalists."""
    space = WORKER["space"]
    arch = Architecture.from_str(arch_str, space.num_classes, space.in_channels)
    r = train_child(arch, judged_splits(), epochs=epochs, lr=how["lr"], batch_size=how["batch_size"],
                    seed=how["seed"], device=torch_device_of(how["torch_device"]), progress=False, checkpoint=checkpoint,
                    resume=checkpoint is not None and checkpoint.exists())  # fmt: skip
    return r.val_acc, r.seconds


def halving_job(arch_strs: list[str], epochs: int, how: dict[str, Any], folder: str) -> dict[str, Any]:
    """Successive halving over ``arch_strs`` from scratch (``hwnas.search.finalists.run_halving``),
    its state kept in ``folder`` (a re-run goes on from it); the state, with the winner's string."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"arch": a, "val_acc_supernet": 0.0} for a in arch_strs]  # no supernet: ties go to the earlier draw
    settings = {"finalists": len(arch_strs), "finalist_epochs": epochs, "finalist_init": "scratch",
                "seed": how["seed"]}  # fmt: skip

    def train(i: int, e: int, checkpoint: Path) -> tuple[float, float]:
        return _short(arch_strs[i], e, how, checkpoint)

    state = run_halving(out, rows, settings, train)
    state["winner_arch"] = arch_strs[state["winner"]]
    return state


def short_scores_job(arch_str: str, epochs: list[int], how: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """The network's score after each of ``epochs`` epochs of training (one training per value)."""
    return arch_str, {str(e): _short(arch_str, e, how)[0] for e in epochs}
