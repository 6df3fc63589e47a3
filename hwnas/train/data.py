"""Image data for search and training, in memory or streamed from disk, with the usual augmentation.

Sources (``load_images(spec)``):

* ``synthetic`` or ``synthetic:n=2000,size=32,classes=10,seed=0``: **hwnas-synthetic**, a
  built-in procedural dataset (oriented colour gratings, one orientation and tint per class, with
  random phase, frequency jitter and noise). It needs no download and is learnable in minutes on
  a CPU; it exists for the demo and the tests and says nothing about real accuracy.
* a ``.npz`` with ``x`` (uint8 ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]``) and ``y``,
  and optionally ``classes`` (one name per label, text);
* a ``.npz`` in the CIFAR-10 JPEG archive form (``data``, ``offsets``, ``label``, ``split``: each
  image's JPEG bytes concatenated, with labels and a train/test flag), from any path;
* a folder of class sub-folders holding image files (ImageFolder layout), or ``train/`` and
  ``val/`` (or ``test/``) folders of class sub-folders (the ImageNet layout, with a test split).
* WebDataset tar shards (:mod:`hwnas.train.shards`): a folder of ``*.tar`` files, or one, whose
  samples are ``KEY.jpg`` (or another image extension) with ``KEY.cls`` (the class index); shards
  named ``val*`` or ``test*`` give a test split, and ``classes.txt`` beside them names the classes.

**Memory or stream** (:data:`~hwnas.train.config.DATA_MODES`). In memory, a dataset is decoded once
into a ``uint8 [N, C, H, W]`` tensor. Streamed, an image folder, a JPEG archive or tar shards
stay encoded on disk: :class:`Images` then holds indices into its
:class:`~hwnas.train.files.EncodedImages`, and batches are decoded in DataLoader workers
(:mod:`hwnas.train.loader`). ``auto`` streams when the decoded images would take more than
:data:`MEMORY_SHARE` of the memory available, and says so. Arrays in an ``.npz`` and synthetic data
are arrays already: always in memory. Every image is brought to the first image's size (bilinear),
in both modes.

Batches are drawn by index from a seeded generator, the same draws in both modes, so the two
give the same batches; training batches are augmented (:func:`choose_recipe`: a random crop from a
1/8-padded image and a flip for small images, RandomResizedCrop and a flip from
:data:`LARGE_IMAGE` px) and normalized by the training images' per-channel mean and std.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hwnas.train.decode import DataError
from hwnas.train.files import EncodedImages, check_labels, open_archive, scan_folder, split_folders
from hwnas.train.shards import has_test_shards, is_shards, open_shards

__all__ = ["DataError", "DataSplits", "Images", "load_images", "load_test_images", "make_splits"]

MEMORY_SHARE = 0.25  # auto: in memory while the decoded images take at most this share of the available memory
MEAN_SAMPLE = 4096  # streamed: the normalization's mean and std come from this many training images
LARGE_IMAGE = 128  # px, the shorter side from which --augment auto picks the ImageNet recipe
SOURCES = "an .npz file, an image folder, WebDataset .tar shards (a folder of them, or one), or 'synthetic'"


def choose_recipe(h: int, w: int, requested: str = "auto") -> str:
    """The augmentation recipe (:mod:`hwnas.train.batches`) of images stored at ``h x w``:
    ``requested``, or with ``auto`` the ImageNet one from :data:`LARGE_IMAGE` px and the CIFAR one
    below."""
    if requested != "auto":
        return requested
    return "resized-crop" if min(h, w) >= LARGE_IMAGE else "pad-crop"


@dataclass
class Images:
    """Images with labels ``int64 [N]``: decoded, ``x`` is ``uint8 [N, C, H, W]``; streamed, ``x``
    is None and image ``i`` is ``files.read(index[i])``."""

    x: torch.Tensor | None
    y: torch.Tensor
    classes: list[str]
    name: str
    files: EncodedImages | None = None
    index: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.y.numel())

    @property
    def streamed(self) -> bool:
        return self.x is None

    def subset(self, index: torch.Tensor) -> Images:
        if self.x is not None:
            return Images(self.x[index], self.y[index], self.classes, self.name)
        assert self.index is not None
        return Images(None, self.y[index], self.classes, self.name, self.files, self.index[index])

    def join(self, other: Images) -> Images:
        """These images, then ``other``'s (of the same dataset)."""
        y = torch.cat([self.y, other.y])
        if self.x is not None and other.x is not None:
            return Images(torch.cat([self.x, other.x]), y, self.classes, self.name)
        assert self.index is not None and other.index is not None and self.files is other.files
        return Images(None, y, self.classes, self.name, self.files, torch.cat([self.index, other.index]))

    def pixels(self, idx: torch.Tensor | list[int]) -> torch.Tensor:
        """Images ``idx`` as ``uint8 [B, C, H, W]`` (decoded here when streamed)."""
        if self.x is not None:
            return self.x[idx]
        assert self.files is not None and self.index is not None
        rows = [int(self.index[int(i)]) for i in idx]
        return torch.from_numpy(np.stack([self.files.read(r) for r in rows]).transpose(0, 3, 1, 2).copy())

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        if self.x is not None:
            c, h, w = self.x.shape[1:]
            return int(c), int(h), int(w)
        assert self.files is not None
        return (3, *self.files.first_size())

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
    recipe: str = "pad-crop"  # the augmentation, and the view of the images without it (batches.Batches)

    @property
    def classes(self) -> list[str]:
        """The dataset's class names, one per label: they decide the classifier's width."""
        return list(self.weights.classes)

    def unseen_by_weights(self) -> Images:
        """``val`` and ``alphas`` together: every image the weights never train on. Selection scores
        candidates through the supernet on these (1,400 images instead of 500 in the search issue's
        CPU protocol), since one accuracy on 500 images has a standard error of about 2 points, as
        large as the differences between the candidates it has to order."""
        return self.val.join(self.alphas)

    def judged_on_unseen(self) -> DataSplits:
        """These splits for a short standalone training (the search's finalists): it trains on
        ``weights`` alone (``alphas`` empty) and is scored on :meth:`unseen_by_weights` as ``val``."""
        return DataSplits(self.weights, self.weights.subset(torch.arange(0)), self.unseen_by_weights(), None,
                          self.mean, self.std, recipe=self.recipe)  # fmt: skip


# --- sources --------------------------------------------------------------------------------
def load_images(spec: str, split: str = "train", mode: str = "memory", notes: list[str] | None = None,
                bad_images: str = "stop", progress: bool = False) -> Images:  # fmt: skip
    """Load a dataset (see the module docstring); ``split`` picks train/test where the source has
    both; ``mode`` is memory, stream or auto. What was decided (the mode and why, images skipped) is
    appended to ``notes`` in words. ``bad_images`` (stop or skip) says what an unreadable image
    does while the images are decoded into memory."""
    notes = notes if notes is not None else []
    reading = (mode, notes, bad_images, progress)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        _array_mode(spec, mode, notes)
        return synthetic(**_options(spec.partition(":")[2]), split=split)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{spec}: no such file or folder; give {SOURCES}")
    if is_shards(path):
        return _from_files(open_shards(path, split, bad_images, notes), *reading)
    if path.is_dir():
        train, test = split_folders(path)
        files = scan_folder(train)
        if test is not None:
            test_files = scan_folder(test, files.classes)
            files = test_files if split == "test" else files
        elif split == "test":
            raise DataError(f"{spec}: no test split (an image folder has one in the ImageNet layout: train/ and val/)")
        return _from_files(files, *reading)
    if path.suffix.lower() != ".npz":
        raise DataError(f"{spec}: not a dataset hwnas reads; give {SOURCES}")
    return _npz(path, split, *reading)


def _array_mode(spec: str, mode: str, notes: list[str]) -> None:
    if mode == "stream":
        notes.append(f"{spec}: arrays (synthetic data, x and y in an .npz) are read into memory; --data-mode "
                     "stream applies to image folders and JPEG archives")  # fmt: skip


def available_memory() -> int:
    """Bytes of memory available to a new allocation (``MemAvailable``), or half the machine's."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def choose_mode(files: EncodedImages, mode: str) -> tuple[str, str]:
    """``(memory or stream, why in words)`` for ``files`` and the requested ``mode``."""
    need, avail = files.decoded_bytes(), available_memory()
    size = f"decoded, its {len(files):,} images take {_gb(need)} of the {_gb(avail)} available"
    if mode in ("memory", "stream"):
        return mode, f"{files.name}: {mode} mode (--data-mode {mode}); {size}"
    chosen = "memory" if need <= MEMORY_SHARE * avail else "stream"
    rule = "at most" if chosen == "memory" else "more than"
    return chosen, (f"{files.name}: {chosen} mode: {size}, {rule} {MEMORY_SHARE:.0%} of it "
                    "(--data-mode memory or stream overrides)")  # fmt: skip


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n < 1e11 else f"{n / 1e9:,.0f} GB"


def _from_files(files: EncodedImages, mode: str, notes: list[str], bad_images: str, progress: bool) -> Images:
    files.first_size()
    chosen, why = choose_mode(files, mode)
    notes.append(why)
    y = torch.from_numpy(files.labels)
    if chosen == "stream":
        return Images(None, y, files.classes, files.name, files, torch.arange(len(files)))
    from hwnas.train.loader import decode_all

    skipped: set[str] = set()
    x, kept = decode_all(files, bad_images, progress, skipped)
    if skipped:
        notes.append(f"{files.name}: {len(skipped)} unreadable image(s) skipped (--bad-images skip), "
                     f"e.g. {sorted(skipped)[0]}")  # fmt: skip
    return Images(x, y[kept], files.classes, files.name)


def load_splits(
    data: str,
    num_classes: int,
    in_channels: int,
    *,
    mode: str = "memory",
    bad_images: str = "stop",
    limit: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    alpha_fraction: float = 0.2,
    with_test: bool = False,
    progress: bool = False,
    augment: str = "auto",
) -> DataSplits:
    """The splits (:func:`make_splits`) of the dataset ``data``, read in ``mode``, with its test split
    when ``with_test``. The data decides the classes (:attr:`DataSplits.classes`); ``num_classes``
    (the space's) is only the count synthetic data gets when it names none. Their ``notes`` say how
    the data was read."""
    data = with_classes(data, num_classes)
    notes: list[str] = []
    train = load_images(data, "train", mode, notes, bad_images, progress)
    test = load_test_images(data, num_classes, mode, notes, bad_images) if with_test else None
    return make_splits(train, test, in_channels, val_fraction, alpha_fraction, limit, seed, bad_images,
                       notes, augment)  # fmt: skip


def with_classes(data: str, num_classes: int) -> str:
    """``data``, where it is synthetic without a class count, with ``num_classes`` classes."""
    if data.startswith("synthetic") and "classes=" not in data:
        opts = data.partition(":")[2]
        return f"synthetic:{opts + ',' if opts else ''}classes={num_classes}"
    return data


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


def _npz(path: Path, split: str, mode: str, notes: list[str], bad_images: str, progress: bool) -> Images:
    from hwnas.train.npz_reader import npz_names, read_npz

    keys = set(npz_names(path))
    if {"data", "offsets", "label"} <= keys:
        return _from_files(open_archive(path, split), mode, notes, bad_images, progress)
    if {"x", "y"} <= keys:
        _array_mode(str(path), mode, notes)
        z = read_npz(path, ["x", "y", *(["classes"] if "classes" in keys else [])])
        images = _arrays(path, z["x"], z["y"])
        if "classes" in z:
            images.classes = _class_names(path, z["classes"], images.num_classes)
        return images
    raise DataError(
        f"{path}: an .npz needs arrays x and y, or data/offsets/label (JPEG archive); it has {sorted(keys)}"
    )


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
    labels_np = check_labels(path, np.asarray(y), len(x))
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


# --- splits ---------------------------------------------------------------------------------
def make_splits(
    train: Images,
    test: Images | None,
    in_channels: int,
    val_fraction: float = 0.1,
    alpha_fraction: float = 0.2,
    limit: int | None = None,
    seed: int = 0,
    bad_images: str = "stop",
    notes: list[str] | None = None,
    augment: str = "auto",
) -> DataSplits:
    """Shuffle (seeded), optionally keep ``limit`` training images (class-balanced), hold out
    ``val_fraction`` for validation, and split the rest ``1 - alpha_fraction`` / ``alpha_fraction``.
    A split is a list of indices into the dataset, never a copy of streamed images. ``notes`` (how
    the data was read) lead the splits' own notes."""
    if len(train) == 0:
        raise DataError(f"{train.name}: the dataset is empty")
    n_classes = int(train.y.max()) + 1
    if n_classes > train.num_classes:
        raise DataError(f"{train.name}: labels go up to {n_classes - 1} but it names {train.num_classes} classes; "
                        "give one class name per label")  # fmt: skip
    notes = list(notes or [])
    channels = train.shape[0]
    if channels != in_channels:
        notes.append(f"{train.name}: {channels}-channel images repeated to the space's {in_channels} channels")
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
    mean, std = _mean_std(train.subset(weights), bad_images, notes)
    _, h, w = train.shape
    recipe = choose_recipe(h, w, augment)
    if recipe == "resized-crop":
        how = "--augment resized-crop" if augment != "auto" else f"--augment auto: {w}x{h} images"
        notes.append(f"{train.name}: ImageNet augmentation ({how}): RandomResizedCrop + flip for training, the "
                     "centre 7/8 of each image for evaluation")  # fmt: skip
    return DataSplits(train.subset(weights), train.subset(alpha), train.subset(val), test, mean, std, notes, recipe)


def _mean_std(images: Images, bad_images: str, notes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std in [0, 1] units: of every image in memory; streamed, of the first
    :data:`MEAN_SAMPLE` (the split is shuffled already), the same figure when there are no more.
    Summed as integers chunk by chunk: exact whatever the chunks, and no float copy of the images
    (which took 4x their memory)."""
    total = torch.zeros(3, dtype=torch.int64)
    squares = torch.zeros(3, dtype=torch.int64)
    pixels = 0
    for chunk in _chunks(images, bad_images):
        c = chunk.to(torch.int64)
        total, squares = total[: c.shape[1]] + c.sum(dim=(0, 2, 3)), squares[: c.shape[1]] + (c * c).sum(dim=(0, 2, 3))
        pixels += c.shape[0] * c.shape[2] * c.shape[3]
    s, q = total.double() / 255, squares.double() / 255**2
    mean = s / max(1, pixels)
    var = (q - s * s / max(1, pixels)) / max(1, pixels - 1)
    if images.x is None and len(images) > MEAN_SAMPLE:
        notes.append(f"{images.name}: the input normalization is estimated on {MEAN_SAMPLE:,} of the "
                     f"{len(images):,} training images")  # fmt: skip
    return mean.float(), var.clamp_min(0).sqrt().float().clamp_min(1e-3)


def _chunks(images: Images, bad_images: str, size: int = 256) -> Iterator[torch.Tensor]:
    """The images whose statistics normalize the inputs, ``uint8 [B, C, H, W]`` a chunk at a time."""
    if images.x is not None:
        for i in range(0, len(images), size):
            yield images.x[i : i + size]
        return
    from hwnas.train.loader import check_decoded, decoded_batches

    assert images.files is not None and images.index is not None
    rows = images.index[:MEAN_SAMPLE].tolist()
    for batch in decoded_batches(images.files, [rows[i : i + size] for i in range(0, len(rows), size)]):
        check_decoded(batch, bad_images, None)
        yield batch.x


def fit_notes(splits: DataSplits, resolution: int) -> list[str]:
    """What is done to the data to fit a network of ``resolution`` px, in words (empty: nothing)."""
    _, h, w = splits.weights.shape
    size = [] if (h, w) == (resolution, resolution) else [
        f"{w}x{h} images are resized to {resolution}x{resolution} (bilinear) for the network"]  # fmt: skip
    return [*splits.notes, *size]


def _channels(images: Images, in_channels: int) -> Images:
    c = images.shape[0]
    if c == in_channels:
        return images
    if c == 1 and images.x is not None:
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


def load_test_images(spec: str, num_classes: int, mode: str = "memory", notes: list[str] | None = None,
                     bad_images: str = "stop") -> Images | None:  # fmt: skip
    """The test split of a source that has one (synthetic data, a CIFAR-10 JPEG archive, an image
    folder in the ImageNet layout, shards with ``val*`` or ``test*`` shards), else None."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        opts = _options(spec.partition(":")[2])
        opts.setdefault("classes", num_classes)
        opts["n"] = max(opts.get("classes", num_classes), opts.get("n", 2000) // 5)
        return synthetic(**opts, split="test")
    path = Path(spec)
    if path.exists() and is_shards(path):
        return load_images(spec, "test", mode, notes, bad_images) if has_test_shards(path) else None
    if path.suffix.lower() == ".npz" and path.is_file():
        from hwnas.train.npz_reader import npz_names

        if not {"split", "data", "offsets", "label"} <= set(npz_names(path)):
            return None
        return load_images(spec, "test", mode, notes, bad_images)
    if path.is_dir() and split_folders(path)[1] is not None:
        return load_images(spec, "test", mode, notes, bad_images)
    return None
