"""Image data for search and training: in memory, as uint8 tensors, with the usual augmentation.

Sources (``load_images(spec)``):

* ``synthetic`` or ``synthetic:n=2000,size=32,classes=10,seed=0``: **hwnas-synthetic**, a
  built-in procedural dataset (oriented colour gratings, one orientation and tint per class, with
  random phase, frequency jitter and noise). It needs no download and is learnable in minutes on
  a CPU; it exists for the demo and the tests and says nothing about real accuracy.
* a ``.npz`` with ``x`` (uint8 ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]``) and ``y``,
  and optionally ``classes`` (one name per label, text);
* a ``.npz`` in the CIFAR-10 JPEG archive form (``data``, ``offsets``, ``label``, ``split``: each
  image's JPEG bytes concatenated, with labels and a train/test flag), from any path;
* a folder of class sub-folders holding image files (ImageFolder layout).

Everything is decoded once into a ``uint8 [N, C, H, W]`` tensor. Batches are drawn by index from
a seeded generator; training batches are augmented on the fly (random crop from a 1/8-padded
image and horizontal flip) and normalized by the training images' per-channel mean and std.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from hwnas.core.errors import HwnasError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


class DataError(HwnasError):
    """A dataset that is missing, empty or in a form hwnas does not read."""


@dataclass
class Images:
    """Images ``uint8 [N, C, H, W]`` with labels ``int64 [N]``."""

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    name: str

    def __len__(self) -> int:
        return int(self.y.numel())

    def subset(self, index: torch.Tensor) -> Images:
        return Images(self.x[index], self.y[index], self.classes, self.name)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass
class DataSplits:
    """Disjoint parts of the training images: ``weights`` (trains weights), ``alphas`` (trains the
    architecture), ``val`` (held out, for accuracy); ``test`` where the source has a test split."""

    weights: Images
    alphas: Images
    val: Images
    test: Images | None
    mean: torch.Tensor  # per channel, of the training images, in [0, 1] units
    std: torch.Tensor
    notes: list[str] = field(default_factory=list)  # conversions applied to fit the space, in words

    def unseen_by_weights(self) -> Images:
        """``val`` and ``alphas`` together: every image the weights never train on. Selection scores
        candidates through the supernet on these (1,400 images instead of 500 in the search issue's
        CPU protocol), since one accuracy on 500 images has a standard error of about 2 points, as
        large as the differences between the candidates it has to order."""
        return Images(torch.cat([self.val.x, self.alphas.x]), torch.cat([self.val.y, self.alphas.y]),
                      self.val.classes, self.val.name)  # fmt: skip


# --- sources --------------------------------------------------------------------------------
def load_images(spec: str, split: str = "train") -> Images:
    """Load a dataset (see the module docstring); ``split`` picks train/test where the source has both."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return synthetic(**_options(spec.partition(":")[2]), split=split)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{spec}: no such file or folder; give an .npz file, an image folder, or 'synthetic'")
    if path.is_dir():
        return _image_folder(path)
    if path.suffix.lower() != ".npz":
        raise DataError(f"{spec}: not a dataset hwnas reads; give an .npz file, an image folder, or 'synthetic'")
    return _npz(path, split)


def _options(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in ("n", "size", "classes", "seed") or not value.isdigit():
            raise DataError(f"synthetic: bad option {item!r}; use n=, size=, classes=, seed= with integers")
        out[key] = int(value)
    return out


def synthetic(n: int = 2000, size: int = 32, classes: int = 10, seed: int = 0, split: str = "train") -> Images:
    """hwnas-synthetic: ``n`` images of ``size`` px in ``classes`` classes (see the module docstring)."""
    if n < classes or classes < 2 or size < 8:
        raise DataError("synthetic: need n >= classes >= 2 and size >= 8")
    g = torch.Generator().manual_seed(seed * 2 + (split == "test"))
    y = torch.arange(n) % classes
    y = y[torch.randperm(n, generator=g)]
    angle = math.pi * y.float() / classes + 0.15 * torch.randn(n, generator=g)
    freq = (2.0 + 2.0 * (y % 3).float() + 0.3 * torch.randn(n, generator=g)) * 2 * math.pi / size
    phase = 2 * math.pi * torch.rand(n, generator=g)
    coords = torch.arange(size).float()
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    proj = xx[None] * torch.cos(angle)[:, None, None] + yy[None] * torch.sin(angle)[:, None, None]
    wave = torch.sin(proj * freq[:, None, None] + phase[:, None, None])
    hue = 2 * math.pi * y.float() / classes
    tint = torch.stack([torch.cos(hue + k * 2 * math.pi / 3) for k in range(3)], 1) * 0.35 + 0.5
    img = tint[:, :, None, None] * (0.6 + 0.4 * wave[:, None]) + 0.12 * torch.randn(n, 3, size, size, generator=g)
    x = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return Images(x, y.long(), [f"class{i}" for i in range(classes)], f"hwnas-synthetic-{split}")


def _npz(path: Path, split: str) -> Images:
    from hwnas.train.npz_reader import npz_names, read_npz

    keys = set(npz_names(path))
    if {"data", "offsets", "label"} <= keys:
        z = read_npz(path, ["data", "offsets", "label", "split"])
        return _jpeg_archive(path, z, split)
    if {"x", "y"} <= keys:
        z = read_npz(path, ["x", "y", *(["classes"] if "classes" in keys else [])])
        images = _arrays(path, z["x"], z["y"])
        if "classes" in z:
            images.classes = _class_names(path, z["classes"], images.num_classes)
        return images
    raise DataError(
        f"{path}: an .npz needs arrays x and y, or data/offsets/label (JPEG archive); it has {sorted(keys)}"
    )


MAX_CLASSES = 100_000


def _labels(path: Path, y: np.ndarray, n: int, name: str = "y") -> np.ndarray:
    """Integer class indices in ``[0, MAX_CLASSES)``, one per image."""
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{path}: {name} must hold one label per image ({n}), got shape {y.shape}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            raise DataError(f"{path}: {name} must hold integer class indices, got non-integer numbers")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {name} must hold integer class indices, got {y.dtype}")
    if n and (y.min() < 0 or y.max() >= MAX_CLASSES):
        raise DataError(f"{path}: {name} must hold class indices in [0, {MAX_CLASSES}), got {y.min()}..{y.max()}")
    return y.astype(np.int64)


def _class_names(path: Path, names: np.ndarray, needed: int) -> list[str]:
    """An npz's optional ``classes``: one name per class index, as text."""
    if names.ndim != 1 or names.dtype.kind not in "US" or len(names) < needed:
        raise DataError(f"{path}: classes must be a 1-D array of at least {needed} names (text), one per label; "
                        f"got {names.dtype} of shape {names.shape}")  # fmt: skip
    out = [str(n.decode() if isinstance(n, bytes) else n)[:200] for n in names.tolist()]
    return out


def _arrays(path: Path, x: np.ndarray, y: np.ndarray) -> Images:
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{path}: x must hold numbers (uint8 pixels, or floats in [0, 1]), got {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DataError(
            f"{path}: x must be [N, H, W], [N, H, W, C] or [N, C, H, W] with 1 or 3 channels; got {x.shape}"
        )
    if len(x) == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise DataError(f"{path}: the dataset is empty")
    if y.ndim == 1 and len(y) != len(x):
        raise DataError(f"{path}: x has {len(x)} images but y has {len(y)} labels")
    labels_np = _labels(path, np.asarray(y), len(x))
    if x.dtype != np.uint8:
        if np.issubdtype(x.dtype, np.floating):
            if not np.isfinite(x).all():
                raise DataError(f"{path}: x holds NaN or infinite values")
            if float(x.max()) <= 1.0:
                x = x * 255.0
        x = np.clip(x, 0, 255).astype(np.uint8)
    labels = torch.from_numpy(labels_np)
    return Images(torch.from_numpy(np.ascontiguousarray(x)), labels,
                  [str(i) for i in range(int(labels.max()) + 1)], path.stem)  # fmt: skip


def _decode_image(data: bytes | Path, source: str) -> np.ndarray:
    """An RGB image as ``uint8 [H, W, 3]``; anything PIL cannot decode is a one-line :class:`DataError`."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, KeyError, struct.error,
            ZeroDivisionError, Image.DecompressionBombError) as exc:  # fmt: skip
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{source}: cannot read the image ({first[:160]})") from None


def _jpeg_archive(path: Path, z: dict[str, np.ndarray], split: str) -> Images:
    data, offsets = z["data"], z["offsets"]
    label = _labels(path, np.asarray(z["label"]), len(z["label"]) if z["label"].ndim == 1 else -1, "label")
    if data.dtype != np.uint8 or data.ndim != 1:
        raise DataError(f"{path}: data must be the uint8 bytes of the images, got {data.dtype} {data.shape}")
    if not np.issubdtype(offsets.dtype, np.integer) or offsets.shape != (len(label) + 1,):
        raise DataError(
            f"{path}: offsets must be {len(label) + 1} integers (one more than labels), got {offsets.shape}"
        )
    if len(offsets) and (offsets[0] < 0 or offsets[-1] > len(data) or (np.diff(offsets) < 0).any()):
        raise DataError(f"{path}: offsets must rise from >= 0 to <= {len(data)} (the size of data)")
    keep = np.arange(len(label))
    if "split" in z:
        flags = z["split"]
        if flags.shape != label.shape or flags.dtype != np.bool_:
            raise DataError(f"{path}: split must be one bool per image, got {flags.dtype} {flags.shape}")
        keep = np.flatnonzero(flags == (split == "train"))
    if len(keep) == 0:
        raise DataError(f"{path}: no {split} images in the archive")
    images = []
    size: tuple[int, ...] | None = None
    for i in keep:
        a, b = int(offsets[i]), int(offsets[i + 1])
        arr = _decode_image(data[a:b].tobytes(), f"{path}: image {i}")
        if size is None:
            size = arr.shape
        elif arr.shape != size:
            raise DataError(f"{path}: image {i} is {arr.shape[1]}x{arr.shape[0]} px, but the first is "
                            f"{size[1]}x{size[0]}; all images must have one size")  # fmt: skip
        images.append(arr)
    x = np.stack(images).transpose(0, 3, 1, 2)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    n_classes = int(label.max()) + 1
    names = classes if n_classes == 10 else [str(i) for i in range(n_classes)]
    return Images(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(label[keep]), names,
                  f"{path.stem}-{split}")  # fmt: skip


def _image_folder(root: Path) -> Images:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{root}: an image folder needs one sub-folder per class; found none")
    xs, ys = [], []
    size: tuple[int, int] | None = None
    for ci, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            arr = _decode_image(f, str(f))
            if size is None:
                size = arr.shape[:2]
            elif arr.shape[:2] != size:
                raise DataError(f"{f}: {arr.shape[1]}x{arr.shape[0]} px, but the first image is {size[1]}x{size[0]}; "
                                "resize the folder to one size")  # fmt: skip
            xs.append(arr)
            ys.append(ci)
    if not xs:
        raise DataError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in its class folders")
    x = np.stack(xs).transpose(0, 3, 1, 2)
    return Images(torch.from_numpy(np.ascontiguousarray(x)), torch.tensor(ys), classes, root.name)


# --- splits ---------------------------------------------------------------------------------
def make_splits(
    train: Images,
    test: Images | None,
    in_channels: int,
    num_classes: int,
    val_fraction: float = 0.1,
    alpha_fraction: float = 0.2,
    limit: int | None = None,
    seed: int = 0,
) -> DataSplits:
    """Shuffle (seeded), optionally keep ``limit`` training images (class-balanced), hold out
    ``val_fraction`` for validation, and split the rest ``1 - alpha_fraction`` / ``alpha_fraction``."""
    if len(train) == 0:
        raise DataError(f"{train.name}: the dataset is empty")
    n_classes = int(train.y.max()) + 1
    if n_classes > num_classes:
        raise DataError(f"{train.name} has {n_classes} classes but the space classifies {num_classes}; "
                        "use a space with as many classes")  # fmt: skip
    notes = []
    if train.x.shape[1] != in_channels:
        notes.append(f"{train.name}: {train.x.shape[1]}-channel images repeated to the space's {in_channels} channels")
    train = _channels(train, in_channels)
    test = _channels(test, in_channels) if test is not None else None
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=g)
    if limit is not None and limit < len(train):
        order = _balanced(train.y, order, limit)
    n_val = max(1, round(len(order) * val_fraction))
    n_alpha = max(1, round((len(order) - n_val) * alpha_fraction))
    if len(order) - n_val - n_alpha < 1:
        raise DataError(f"{train.name}: {len(order)} images are too few to split for search; use more")
    val, alpha, weights = order[:n_val], order[n_val : n_val + n_alpha], order[n_val + n_alpha :]
    x = train.x[weights].float() / 255
    mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return DataSplits(train.subset(weights), train.subset(alpha), train.subset(val), test, mean, std, notes)


def fit_notes(splits: DataSplits, resolution: int) -> list[str]:
    """What is done to the data to fit a network of ``resolution`` px, in words (empty: nothing)."""
    h, w = splits.weights.x.shape[-2:]
    size = [] if (h, w) == (resolution, resolution) else [
        f"{w}x{h} images are resized to {resolution}x{resolution} (bilinear) for the network"]  # fmt: skip
    return [*splits.notes, *size]


def _channels(images: Images, in_channels: int) -> Images:
    c = images.x.shape[1]
    if c == in_channels:
        return images
    if c == 1:
        return Images(images.x.expand(-1, in_channels, -1, -1).contiguous(), images.y, images.classes, images.name)
    raise DataError(f"{images.name}: {c}-channel images, but the space takes {in_channels} channels")


def _balanced(y: torch.Tensor, order: torch.Tensor, limit: int) -> torch.Tensor:
    """The first ``limit`` of ``order`` taken round-robin over classes (equal counts per class)."""
    per_class: dict[int, list[int]] = {}
    for i in order.tolist():
        per_class.setdefault(int(y[i]), []).append(i)
    out: list[int] = []
    queues = [iter(v) for v in per_class.values()]
    while len(out) < limit and queues:
        alive = []
        for q in queues:
            item = next(q, None)
            if item is not None and len(out) < limit:
                out.append(item)
                alive.append(q)
        queues = alive
    return torch.tensor(out)


# --- batches --------------------------------------------------------------------------------
def batches(
    images: Images,
    batch_size: int,
    mean: torch.Tensor,
    std: torch.Tensor,
    generator: torch.Generator | None = None,
    augment: bool = False,
    drop_last: bool = False,
    device: torch.device | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x float [B, C, H, W] normalized, y)`` batches, shuffled when ``generator`` is given.

    With ``device``, the uint8 images move there first and are augmented and normalized there
    (the random draws stay on the CPU generator, so a batch is the same on every device).
    """
    n = len(images)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    dev = device or images.x.device
    mean, std = mean.to(dev).view(1, -1, 1, 1), std.to(dev).view(1, -1, 1, 1)
    for i in range(0, stop, batch_size):
        idx = order[i : i + batch_size]
        x = images.x[idx].to(dev, non_blocking=True).float() / 255
        if augment:
            x = _augment(x, generator)
        yield (x - mean) / std, images.y[idx].to(dev, non_blocking=True)


def _augment(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Random crop from a zero-padded image (pad = size / 8) and random horizontal flip."""
    b, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    out = _crop(padded, dy, dx, h, w)
    flip = (torch.rand(b, generator=generator) < 0.5).to(out.device)
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def _crop(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``padded[i, :, dy[i]:dy[i]+h, dx[i]:dx[i]+w]`` for every image at once (one gather, no loop)."""
    b, c = padded.shape[:2]
    dev = padded.device
    rows = (dy.to(dev)[:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (dx.to(dev)[:, None] + torch.arange(w, device=dev))[:, None, None, :]
    return padded[torch.arange(b, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                  rows, cols]  # fmt: skip


def load_test_images(spec: str, num_classes: int) -> Images | None:
    """The test split of a source that has one (synthetic data, a CIFAR-10 JPEG archive), else None."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        opts = _options(spec.partition(":")[2])
        opts.setdefault("classes", num_classes)
        opts["n"] = max(opts.get("classes", num_classes), opts.get("n", 2000) // 5)
        return synthetic(**opts, split="test")
    path = Path(spec)
    if path.suffix.lower() == ".npz" and path.is_file():
        from hwnas.train.npz_reader import npz_names

        if not {"split", "data", "offsets", "label"} <= set(npz_names(path)):
            return None
        return load_images(spec, "test")
    return None
