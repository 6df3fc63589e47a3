"""The protocol's jobs: a search, a retraining, the supernet's scores. They run in worker processes
(``--jobs``), or one after another over every rank of a torchrun group (``group``: DDP)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from hwnas.search.loop import Search, SearchConfig
from hwnas.spaces import get_space
from hwnas.spaces.arch import Architecture
from hwnas.train.checkpoints import has_search_checkpoint
from hwnas.train.data import load_splits
from hwnas.train.distributed import Group
from hwnas.train.training import evaluate, torch_device, train_child

WORKER: dict[str, Any] = {}  # the data a worker process loads once (worker_init)


def worker_init(data: str, space_name: str, limit: int, split_seed: int, threads: int) -> None:
    """Load the data once per worker process."""
    torch.set_num_threads(threads)
    space = get_space(space_name)
    WORKER["splits"] = load_splits(data, space.num_classes, space.in_channels, limit=limit, seed=split_seed,
                                   with_test=True)  # fmt: skip
    WORKER["space"] = space


def retrain_job(arch_str: str, seed: int, epochs: int, torch_device: str, bf16: bool, batch_size: int,
                 lr: float, group: Group | None = None) -> tuple[str, dict[str, float]]:  # fmt: skip
    space = WORKER["space"]
    arch = Architecture.from_str(arch_str, space.num_classes, space.in_channels)
    r = train_child(arch, WORKER["splits"], epochs=epochs, seed=seed, device=torch_device_of(torch_device),
                    progress=False, precision="bf16" if bf16 else "fp32", batch_size=batch_size, lr=lr,
                    group=group)  # fmt: skip
    return job_key(arch, seed), {"val": r.val_acc, "test": r.test_acc or 0.0, "seconds": r.seconds}


def job_key(a: Architecture, seed: int) -> str:
    return f"{a.to_str()}|seed{seed}"


def unique(jobs: list[tuple[Architecture, int]]) -> list[tuple[Architecture, int]]:
    out: dict[str, tuple[Architecture, int]] = {}
    for job in jobs:
        out.setdefault(job_key(*job), job)
    return list(out.values())


def elapsed(started: float) -> str:
    return f"{(time.perf_counter() - started) / 60:.1f} min in"


def search_job(cfg: dict[str, Any], out: str, threads: int, group: Group | None = None) -> float:
    torch.set_num_threads(threads)
    start = time.perf_counter()
    Search(SearchConfig(**cfg), out, resume=has_search_checkpoint(out), progress=False, group=group).run()
    if group is not None:
        group.barrier()  # the other ranks read the architecture rank 0 has just written
    return time.perf_counter() - start


def supernet_scores_job(folder: str, arch_strs: list[str], group: Group | None = None) -> dict[str, float]:
    """Each architecture's accuracy through a finished search's supernet, BatchNorm re-estimated for
    it, on the images selection scores candidates on (the supernet side of the ranking's Kendall tau)."""
    cfg = SearchConfig.from_saved(json.loads((Path(folder) / "config.json").read_text()))
    supernet = Search(cfg, folder, resume=True, progress=False, group=group)
    out = {}
    images = supernet.selection_images
    for arch_str in arch_strs:
        a = Architecture.from_str(arch_str, supernet.space.num_classes, supernet.space.in_channels)
        supernet._recalibrate_bn(a)
        out[arch_str] = evaluate(supernet.net, images, supernet.splits.mean, supernet.splits.std, supernet.device,
                                 group=group, arch=a)  # fmt: skip
    return out


def torch_device_of(name: str) -> torch.device:
    return torch_device(name)
