"""Several processes under torchrun: one process group, each global batch split across the ranks.

``torchrun --nproc_per_node N -m hwnas search ...`` starts N copies of the command; each reads
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR:MASTER_PORT`` from its environment and
joins one :mod:`torch.distributed` group (gloo on a CPU, NCCL on GPUs) in :func:`join`. Without
those variables, or with ``WORLD_SIZE=1``, :class:`Group` is a single process and every method
here does nothing, so a plain run is unchanged.

How the work is split (:mod:`hwnas.search.loop`, :mod:`hwnas.train.training`):

* every rank draws the same global batch order and the same augmentation draws (the generators are
  seeded by the seed and the epoch), and takes its contiguous share of each global batch
  (:meth:`Group.part`): a DistributedSampler at the batch level, whose partition does not depend on
  the world size beyond the share, so a checkpoint resumes on another number of processes at the
  same batch;
* weight gradients are averaged by DistributedDataParallel (:meth:`Group.wrap`), the architecture
  logits' gradients by :meth:`Group.average_grads`; evaluation counts and BatchNorm re-estimates
  are summed over the ranks, so every decision taken from them is the same on every rank;
* :meth:`Group.check_same` compares hashes of the architecture parameters and weights across the
  ranks and stops with a clear error if they ever differ.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from torch import nn

from hwnas.core.errors import HwnasError

DIST_TIMEOUT_S = 300.0  # the default wait for the rendezvous and for each collective


@dataclass
class Group:
    """This process's place in the torchrun group (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The rank that writes files, logs and the progress bar."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def place(self, device: torch.device) -> torch.device:
        """The device this rank computes on: its own GPU (``cuda:LOCAL_RANK``) for a CUDA run."""
        if self.active and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def part(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` items (shares differ by at most one item)."""
        return slice(n * self.rank // self.world, n * (self.rank + 1) // self.world)

    def check_batch(self, batch_size: int, option: str = "--batch-size") -> None:
        """Each rank takes an equal share of a global batch; a batch that does not split is an error."""
        if batch_size % self.world:
            lo, hi = batch_size - batch_size % self.world, batch_size + self.world - batch_size % self.world
            raise HwnasError(f"{option} {batch_size} does not split evenly over {self.world} processes; "
                             f"give a multiple of {self.world} (e.g. {lo or hi} or {hi})")  # fmt: skip

    def wrap(self, model: nn.Module, device: torch.device, ignore: Sequence[str] = (),
             find_unused: bool = True) -> nn.Module:  # fmt: skip
        """``model`` in DistributedDataParallel, or ``model`` itself in one process. Paths that a
        step does not use (skip paths, SE weights, the sampled child's unused options) are found by
        ``find_unused_parameters`` (``find_unused``: a model that uses every parameter at every step
        skips that search); the parameters named in ``ignore`` (the architecture logits,
        whose gradients :meth:`average_grads` averages in their own step) are left out of DDP; rank
        0's buffers are not broadcast at each forward (BatchNorm statistics are re-estimated per
        child and averaged over the ranks instead)."""
        if not self.active:
            return model
        import inspect

        from torch.nn.parallel import DistributedDataParallel as DDP

        if ignore:
            DDP._set_params_and_buffers_to_ignore_for_model(model, list(ignore))
        ids = [device.index] if device.type == "cuda" else None
        # torch 2.13 renamed broadcast_buffers (deprecated) to forward_sync_buffers
        keep = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters
                else "broadcast_buffers")  # fmt: skip
        buffers: dict[str, Any] = {keep: False}
        return DDP(model, device_ids=ids, find_unused_parameters=find_unused, **buffers)

    def no_sync(self, model: nn.Module, sync: bool) -> AbstractContextManager[object]:
        """Gradients of a forward-backward pass inside this context stay local (``sync`` False) and are
        averaged with the next synchronized pass: one all-reduce per step, however many passes it has."""
        if sync or not self.active:
            return nullcontext()
        return model.no_sync()  # type: ignore[operator]

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the ranks (in place)."""
        if self.active:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def sums(self, values: Sequence[float], device: torch.device) -> list[float]:
        """Each of ``values`` summed over the ranks, in one all-reduce."""
        if not self.active:
            return [float(v) for v in values]
        return self.all_sum(torch.tensor(list(values), dtype=torch.float64, device=device)).tolist()

    def average_grads(self, params: Sequence[nn.Parameter]) -> None:
        """The gradients of ``params`` averaged over the ranks, in one all-reduce (equal shares)."""
        grads = [p.grad for p in params if p.grad is not None]
        if not self.active or not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.all_sum(flat).div_(self.world)
        at = 0
        for g in grads:
            g.copy_(flat[at : at + g.numel()].view_as(g))
            at += g.numel()

    def average_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Each tensor replaced by its mean over the ranks, in one all-reduce (floating tensors)."""
        if not self.active or not tensors:
            return
        flat = torch.cat([t.detach().reshape(-1).double() for t in tensors])
        self.all_sum(flat).div_(self.world)
        at = 0
        for t in tensors:
            t.copy_(flat[at : at + t.numel()].view_as(t))
            at += t.numel()

    def check_same(self, what: str, tensors: Iterator[torch.Tensor] | Sequence[torch.Tensor], when: str) -> None:
        """Stop with a clear error if ``tensors`` differ by a single bit between two ranks."""
        if not self.active:
            return
        import torch.distributed as dist

        digest = hashlib.sha256()
        for t in tensors:
            digest.update(t.detach().cpu().numpy().tobytes())  # C order, whatever the memory layout
        mine = int.from_bytes(digest.digest()[:7], "little")  # fits an int64
        dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        gathered = [torch.zeros(1, dtype=torch.int64, device=dev) for _ in range(self.world)]
        dist.all_gather(gathered, torch.tensor([mine], dtype=torch.int64, device=dev))
        hashes = [int(g) for g in gathered]
        if len(set(hashes)) > 1:
            other = next(r for r, h in enumerate(hashes) if h != hashes[0])
            raise HwnasError(f"the {what} differ between rank 0 and rank {other} {when}; the ranks would derive "
                             "different networks, so the run stops (please report this with the command)")  # fmt: skip

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()


def launched() -> bool:
    """Started by torchrun (or by hand with its variables) with more than one process."""
    return world_size() > 1


def restarted() -> bool:
    """This group is an elastic restart (torchrun ``--max-restarts``) of one that failed."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


class RankError(HwnasError):
    """A user error of this rank alone (its rendezvous, its GPU), which every rank reports; the
    errors every rank meets alike (bad options, a resumed folder) are reported by rank 0 only."""


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def join(device_name: str, timeout_s: float = DIST_TIMEOUT_S) -> Group:
    """Join the torchrun group described by the environment: gloo on a CPU, NCCL when
    ``device_name`` is a CUDA device (each rank then computes on ``cuda:LOCAL_RANK``). A rendezvous
    not reached within ``timeout_s`` is a one-line error naming the endpoint."""
    if not launched():
        return Group()
    import torch.distributed as dist

    env = {k: os.environ.get(k, "") for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not env[k]]
    if missing:
        raise RankError(f"WORLD_SIZE is {env['WORLD_SIZE']} but {', '.join(missing)} is not set; start the "
                         "processes with torchrun (torchrun --nproc_per_node N -m hwnas ...)")  # fmt: skip
    me, world, local = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"] or 0)
    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise RankError(f"--torch-device {device_name}: this PyTorch sees no CUDA GPU; use --torch-device cpu")
        if local >= torch.cuda.device_count():
            raise RankError(f"local rank {local} has no GPU of its own ({torch.cuda.device_count()} visible); "
                             "give --nproc_per_node at most the number of GPUs")  # fmt: skip
        torch.cuda.set_device(local)
    endpoint = f"{env['MASTER_ADDR']}:{env['MASTER_PORT']}"
    if not dist.is_initialized():
        from hwnas.core.quiet import quiet

        try:
            with quiet():  # c10d logs every failed connection try, with C++ stacks, on file descriptor 2
                timeout = timedelta(seconds=timeout_s)
                store, _, _ = next(dist.rendezvous("env://", me, world, timeout=timeout))
                # keys of their own for each elastic restart: the agent's store can still hold the
                # failed group's addresses, and a new rank that read them would connect to dead ports
                store = dist.PrefixStore(f"hwnas/life-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
                dist.init_process_group("nccl" if cuda else "gloo", store=store, rank=me, world_size=world,
                                        timeout=timeout)  # fmt: skip
        except (RuntimeError, ValueError, OSError) as exc:  # DistNetworkError, DistStoreError, time-outs
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise RankError(f"rank {me} of {world} could not reach the rendezvous at {endpoint} within "
                             f"{timeout_s:g} s ({first[:120]}); check that every node can reach {endpoint} "
                             "(torchrun --rdzv-endpoint) and that all the processes were started") from None  # fmt: skip
    return Group(me, world, local)


def leave() -> None:
    """Leave the process group (at the end of a command run under torchrun)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
