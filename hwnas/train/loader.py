"""Decoding encoded images in :class:`torch.utils.data.DataLoader` worker processes.

The main process decides everything random (the order, the augmentation draws); the workers only
decode, so a batch is the same whatever the number of workers, and a resumed run reads exactly
the batches an uninterrupted one would. The loader gets a generator of its own: by default it
draws its workers' base seed from torch's global generator, which would move the Gumbel noise of
a streamed search away from the same search in memory. Each task is one batch (a list of image positions), decoded
into one ``uint8 [B, 3, H, W]`` tensor, pinned when the batch goes to a GPU.

An image that cannot be decoded never raises inside a worker (a worker's traceback is many lines):
its batch comes back without it, with its place and the reason, and the caller stops with a
one-line message naming the file (``--bad-images stop``, the default) or skips and counts it
(``--bad-images skip``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hwnas.core.progress import progress_bar
from hwnas.train.decode import DataError
from hwnas.train.files import EncodedImages

MAX_DEFAULT_WORKERS = 8
PREFETCH = 2  # batches each worker decodes ahead (torch's default): enough to keep a step fed, and what is
# in flight stays a few batches whatever the dataset (4 held 8 evaluation batches of 256 at 224 px, 300 MB)


def default_workers() -> int:
    """Decoding workers when ``--workers`` is not given: one per CPU core, at most 8."""
    return max(1, min(MAX_DEFAULT_WORKERS, os.cpu_count() or 1))


@dataclass
class Decoded:
    """A decoded batch: ``x`` ``uint8 [k, 3, H, W]`` for the positions ``kept`` (indices into the
    batch's list) and, for the others, ``(file, reason)``."""

    x: torch.Tensor
    kept: torch.Tensor
    bad: list[tuple[str, str]]


class _DecodeBatches(Dataset[Decoded]):
    def __init__(self, files: EncodedImages) -> None:
        self.files = files

    def __len__(self) -> int:  # only lists of positions are asked for
        return len(self.files)

    def __getitem__(self, rows: list[int]) -> Decoded:
        h, w = self.files.first_size()
        out = np.empty((len(rows), h, w, 3), dtype=np.uint8)
        kept: list[int] = []
        bad: list[tuple[str, str]] = []
        for i, r in enumerate(rows):
            try:
                out[len(kept)] = self.files.read(r)
            except DataError as exc:
                bad.append((self.files.where(r), str(exc)))
                continue
            kept.append(i)
        x = torch.from_numpy(out[: len(kept)]).permute(0, 3, 1, 2).contiguous()
        return Decoded(x, torch.tensor(kept, dtype=torch.long), bad)


def _pin(batch: Any) -> Any:
    return Decoded(batch.x.pin_memory(), batch.kept, batch.bad)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
MMAP_FROM = 1024 * 1024  # bytes: a decoded batch is mapped, and unmapped when freed


def _fixed_mmap_threshold() -> None:
    """Have glibc map every allocation of :data:`MMAP_FROM` bytes or more (elsewhere, nothing).

    By default glibc raises its mmap threshold each time a mapped block is freed, up to 32 MB, so
    a worker's later batches come from its heap, whose freed holes it keeps: a worker's private
    memory grew with the epoch, from 40 to 420 MB over 150 batches of 64 at 224 px, and the peak
    with the dataset's size. A fixed threshold ends that (setting it turns the raising off). At
    1 MB the workers stay at about 15 MB; at 64 KB they did too, but mapping every 150 KB image
    cost 30% of the decode rate (BENCHMARKS.md, "Data at scale")."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_FROM)
    except (OSError, AttributeError):  # not glibc
        pass


def _init_worker(_: int) -> None:
    torch.set_num_threads(1)  # a worker decodes; torch's threads would only compete with the others
    _fixed_mmap_threshold()


def decoded_batches(
    files: EncodedImages, tasks: Iterable[list[int]], workers: int | None = None, pin: bool = False
) -> Iterator[Decoded]:
    """The batches ``tasks`` (lists of positions in ``files``), in order, decoded by ``workers``
    processes (0: in this one), each of them a few batches ahead."""
    files.first_size()  # fixed before the workers fork, so each brings images to the same size
    n = default_workers() if workers is None else workers
    tasks = list(tasks)
    if n == 0 or len(tasks) <= 1:
        for t in tasks:
            yield _pin(_DecodeBatches(files)[t]) if pin else _DecodeBatches(files)[t]
        return
    loader = DataLoader(_DecodeBatches(files), sampler=tasks, batch_size=None, num_workers=min(n, len(tasks)),
                        collate_fn=_pin if pin else None, prefetch_factor=PREFETCH, worker_init_fn=_init_worker,
                        multiprocessing_context="fork" if os.name == "posix" else None,
                        generator=torch.Generator())  # its seed draw must not move the global generator  # fmt: skip
    yield from loader


def check_decoded(batch: Decoded, bad_images: str, skipped: set[str] | None) -> None:
    """Stop on the batch's first unreadable image (``stop``), or note them in ``skipped``."""
    if not batch.bad:
        return
    if bad_images == "stop":
        where, why = batch.bad[0]
        raise DataError(f"{why}; replace or remove it, or add --bad-images skip to skip unreadable images"
                        + ("" if why.startswith(where) else f" ({where})"))  # fmt: skip
    if skipped is not None:
        skipped.update(where for where, _ in batch.bad)


def decode_all(files: EncodedImages, bad_images: str = "stop", progress: bool = False,
               skipped: set[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Every image of ``files`` as ``uint8 [N, 3, H, W]``, and the positions decoded (all but the
    skipped ones, with ``bad_images="skip"``); decoded by the workers into one preallocated tensor."""
    h, w = files.first_size()
    n = len(files)
    chunk = 256
    tasks = [list(range(i, min(n, i + chunk))) for i in range(0, n, chunk)]
    x = torch.empty((n, 3, h, w), dtype=torch.uint8)
    keep = torch.zeros(n, dtype=torch.bool)
    filled = 0
    with progress_bar(progress and n > 4 * chunk) as bar:
        job = bar.add_task(f"decoding {files.name}", total=n)
        for task, batch in zip(tasks, decoded_batches(files, tasks), strict=True):
            check_decoded(batch, bad_images, skipped)
            rows = torch.tensor(task)[batch.kept]
            x[filled : filled + len(rows)] = batch.x
            keep[rows] = True
            filled += len(rows)
            bar.advance(job, len(task))
    return x[:filled], torch.nonzero(keep).flatten()
