"""Batches of one split, in memory or streamed, seeded and resumable at any batch.

:class:`Batches` draws the order from its generator when it is made, then per batch the
augmentation's draws, all in this process and on the CPU generator: the same batches in memory and
streamed, on every device, with any number of decoding workers. Two recipes (:func:`~hwnas.train.data.choose_recipe`):

* ``pad-crop`` for small images (CIFAR-sized): a random crop from a 1/8-padded image, and a
  horizontal flip;
* ``resized-crop`` for large ones (ImageNet-sized, at least :data:`~hwnas.train.data.LARGE_IMAGE` px): torchvision's
  ``RandomResizedCrop`` (a random 8-100% of the area at an aspect ratio of 3/4 to 4/3, resized back
  to the stored size) and a flip; evaluation then sees the centre :data:`EVAL_CROP` of each image,
  resized back (``Resize(256)`` + ``CenterCrop(224)`` at 224 px).
 Its :meth:`~Batches.state` (the order and the batches already given)
goes into a search checkpoint with the generator's state, so a search killed mid-epoch resumes
at the next batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.nn import functional as F

from hwnas.train.config import RECIPES
from hwnas.train.data import Images
from hwnas.train.distributed import Group
from hwnas.train.loader import check_decoded, decoded_batches

EVAL_CROP = 0.875  # 224 / 256
RRC_SCALE, RRC_RATIO, RRC_TRIES = (0.08, 1.0), (3 / 4, 4 / 3), 10  # torchvision's RandomResizedCrop defaults


class Batches:
    """``(x float [B, C, H, W] normalized, y)`` batches of ``images``, shuffled when ``generator``
    is given. ``recipe`` (of :data:`RECIPES`) says what ``augment`` does, and what the images look
    like without it: as stored after ``pad-crop``, the centre crop after ``resized-crop``.

    With ``device``, the uint8 images move there first (pinned, when streamed to a GPU) and are
    augmented and normalized there. Streamed images are decoded by ``workers`` processes (None: the
    default, 0: this one); an unreadable one stops the run (``bad_images="stop"``) or is left out of
    its batch and added to ``skipped`` (``"skip"``); the batch's draws are made for the full batch
    either way, so the batches after it are unchanged.
    """

    def __init__(
        self,
        images: Images,
        batch_size: int,
        mean: torch.Tensor,
        std: torch.Tensor,
        generator: torch.Generator | None = None,
        augment: bool = False,
        drop_last: bool = False,
        device: torch.device | None = None,
        workers: int | None = None,
        bad_images: str = "stop",
        skipped: set[str] | None = None,
        state: dict[str, Any] | None = None,
        recipe: str = "pad-crop",
        group: Group | None = None,
    ) -> None:
        if recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
        self.images, self.batch_size, self.generator = images, batch_size, generator
        self.augment, self.recipe = augment, recipe
        self.group = group if group is not None and group.active else None
        self.device = device or (images.x.device if images.x is not None else torch.device("cpu"))
        self.mean = mean.to(self.device).view(1, -1, 1, 1)
        self.std = std.to(self.device).view(1, -1, 1, 1)
        self.workers, self.bad_images, self.skipped = workers, bad_images, skipped
        n = len(images)
        if state is not None:  # resumed: the order of the interrupted pass, and where it stopped
            self.order, self.given = state["order"].long(), int(state["given"])
            if len(self.order) != n:
                raise ValueError(f"a checkpoint's batch order covers {len(self.order)} images, this split {n}")
        else:
            self.order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
            self.given = 0
        self.stop = n - n % batch_size if drop_last and n >= batch_size else n

    def __len__(self) -> int:
        return -(-self.stop // self.batch_size)

    def state(self) -> dict[str, Any]:
        """What :class:`Batches` needs (with the generator's state) to go on from here."""
        return {"order": self.order.int(), "given": self.given}

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        starts = range(self.given * self.batch_size, self.stop, self.batch_size)
        picks = [self.order[i : i + self.batch_size] for i in starts]
        sizes = [len(p) for p in picks]  # the global batches' sizes: the augmentation draws are made for them
        shares: list[slice | None] = [None] * len(picks)
        if self.group is not None:  # this rank's share of each global batch
            shares = [self.group.part(n) for n in sizes]
            picks = [p[share] for p, share in zip(picks, shares, strict=True)]
        if self.images.x is not None:
            pixels: Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = (
                (self.images.x[idx], idx, None) for idx in picks)  # fmt: skip
        else:
            pixels = self._streamed(picks)
        for (x_u8, idx, kept), size, share in zip(pixels, sizes, shares, strict=True):
            x = x_u8.to(self.device, non_blocking=True).float() / 255
            at = kept  # the positions of x's images among the global batch's draws
            if share is not None:
                where = torch.arange(share.start, share.stop)
                at = where if kept is None else where[kept]
            if self.recipe == "resized-crop":
                x = resized_crop(x, self.generator, size, at) if self.augment else centre_crop(x)
            elif self.augment:
                x = augment(x, self.generator, size, at)
            self.given += 1
            if len(x):
                y = self.images.y[idx if kept is None else idx[kept]]
                yield (x - self.mean) / self.std, y.to(self.device, non_blocking=True)

    def _streamed(self, picks: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        images = self.images
        assert images.files is not None and images.index is not None
        tasks = [images.index[idx].tolist() for idx in picks]
        pin = self.device.type == "cuda"
        for idx, batch in zip(picks, decoded_batches(images.files, tasks, self.workers, pin), strict=True):
            check_decoded(batch, self.bad_images, self.skipped)
            yield batch.x, idx, (batch.kept if len(batch.kept) < len(idx) else None)


def batches(images: Images, batch_size: int, mean: torch.Tensor, std: torch.Tensor,
            generator: torch.Generator | None = None, augment: bool = False, drop_last: bool = False,
            device: torch.device | None = None, **streaming: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """The batches of :class:`Batches` as a plain iterator."""
    return iter(Batches(images, batch_size, mean, std, generator, augment, drop_last, device, **streaming))


def augment(x: torch.Tensor, generator: torch.Generator | None, drawn_for: int | None = None,
            kept: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """Random crop from a zero-padded image (pad = size / 8) and random horizontal flip. The draws
    are made for ``drawn_for`` images (a batch's full size, where unreadable images were left out
    of ``x``); ``x`` holds the images at the positions ``kept`` (all when None)."""
    b, _, h, w = x.shape
    n = b if drawn_for is None else drawn_for
    use = slice(None) if kept is None else kept
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)[use]
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)[use]
    out = _crop(padded, dy, dx, h, w)
    flip = (torch.rand(n, generator=generator)[use] < 0.5).to(out.device)
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def _crop(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``padded[i, :, dy[i]:dy[i]+h, dx[i]:dx[i]+w]`` for every image at once (one gather, no loop)."""
    b, c = padded.shape[:2]
    dev = padded.device
    rows = (dy.to(dev)[:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (dx.to(dev)[:, None] + torch.arange(w, device=dev))[:, None, None, :]
    return padded[torch.arange(b, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                  rows, cols]  # fmt: skip


def resized_crop(x: torch.Tensor, generator: torch.Generator | None, drawn_for: int | None = None,
                 kept: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """torchvision's ``RandomResizedCrop`` (scale 0.08-1, ratio 3/4-4/3, 10 tries, then the whole
    image clamped to the ratio) back to ``x``'s size, and a random horizontal flip, for a batch at
    once. The draws are made for ``drawn_for`` images whatever their outcome (as in :func:`augment`),
    so a batch's draws never depend on which images could be read."""
    b, _, h, w = x.shape
    n = b if drawn_for is None else drawn_for
    use = slice(None) if kept is None else kept
    area = torch.empty(n, RRC_TRIES, dtype=torch.float64).uniform_(*RRC_SCALE, generator=generator) * (h * w)
    log_ratio = torch.empty(n, RRC_TRIES, dtype=torch.float64).uniform_(
        math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1]), generator=generator)  # fmt: skip
    where = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    flip = torch.rand(n, generator=generator) < 0.5
    cw = torch.round(torch.sqrt(area * torch.exp(log_ratio)))
    ch = torch.round(torch.sqrt(area / torch.exp(log_ratio)))
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.where(fits.any(1), fits.double().argmax(1), torch.full((n,), -1))
    pick = first.clamp_min(0)[:, None]
    cw, ch = cw.gather(1, pick)[:, 0], ch.gather(1, pick)[:, 0]
    # no try fits: the whole image, cut to the nearest allowed aspect ratio, centred
    if w / h < RRC_RATIO[0]:
        fw, fh = float(w), float(round(w / RRC_RATIO[0]))
    elif w / h > RRC_RATIO[1]:
        fw, fh = float(round(h * RRC_RATIO[1])), float(h)
    else:
        fw, fh = float(w), float(h)
    none = first < 0
    cw, ch = torch.where(none, fw, cw), torch.where(none, fh, ch)
    top = torch.where(none, ((h - ch) / 2).floor(), (where[:, 0] * (h - ch + 1)).floor().clamp_max(h - ch))
    left = torch.where(none, ((w - cw) / 2).floor(), (where[:, 1] * (w - cw + 1)).floor().clamp_max(w - cw))
    out = crop_resize(x, top[use], left[use], ch[use], cw[use])
    flip = flip[use].to(out.device)
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def centre_crop(x: torch.Tensor, fraction: float = EVAL_CROP) -> torch.Tensor:
    """The centre ``fraction`` of each image's height and width, resized back to its size."""
    b, _, h, w = x.shape
    ch, cw = float(round(h * fraction)), float(round(w * fraction))
    top, left = torch.full((b,), float((h - ch) // 2)), torch.full((b,), float((w - cw) // 2))
    return crop_resize(x, top, left, torch.full((b,), ch), torch.full((b,), cw))


def crop_resize(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, ch: torch.Tensor,
                cw: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """``F.interpolate(x[i, :, top:top+ch, left:left+cw], size=x's, mode="bilinear",
    align_corners=False)`` for every image ``i`` at once: the sampling positions of a half-pixel
    bilinear resize, clamped to the crop as interpolate clamps to its input, sampled by one
    ``grid_sample``."""
    b, _, h, w = x.shape
    dev = x.device

    def axis(start: torch.Tensor, size: torch.Tensor, out: int) -> torch.Tensor:
        start, size = start.to(dev, torch.float64)[:, None], size.to(dev, torch.float64)[:, None]
        src = ((torch.arange(out, device=dev, dtype=torch.float64) + 0.5) * size / out - 0.5).clamp_min(0)
        pos = (start + src).minimum(start + size - 1)
        return (2 * pos / max(1, out - 1) - 1).to(x.dtype) if out > 1 else torch.zeros_like(pos, dtype=x.dtype)

    ys, xs = axis(top, ch, h), axis(left, cw, w)
    grid = torch.stack([xs[:, None, :].expand(b, h, w), ys[:, :, None].expand(b, h, w)], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
