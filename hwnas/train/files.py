"""Where a dataset's encoded images lie, and their labels, found without decoding them.

:class:`EncodedImages` is an image folder's file list, a CIFAR-10-style JPEG archive's bytes
(memory-mapped from the ``.npz`` when the member is stored uncompressed, as ``numpy.savez`` stores
it), or the byte ranges of the images in WebDataset tar shards (indexed by :mod:`hwnas.train.shards`).
Decoding the whole of it gives the in-memory dataset; reading image ``i`` on demand, in
:class:`torch.utils.data.DataLoader` workers, gives the streamed one (:mod:`hwnas.train.loader`).

An image folder is ``root/<class>/<image>`` (torchvision's ImageFolder), or ``root/train/<class>/...``
with ``root/val/<class>/...`` (or ``test``) beside it, the ImageNet layout, which also gives a test
split. Files whose suffix is not an image's are ignored; an empty class folder, a folder with no
images, and train and test splits with different classes are refused in one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwnas.train.decode import IMAGE_SUFFIXES, DataError, decode_image

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TEST_FOLDERS = ("val", "test")  # beside train/, in the ImageNet layout


@dataclass
class EncodedImages:
    """``len(labels)`` encoded images: files (``paths``), slices of an archive's bytes (``blob``
    between ``offsets[rows[i]]`` and ``offsets[rows[i] + 1]``), or byte ranges of tar shards
    (``spans[i]`` is the shard's index in ``shards``, the offset and the size; ``keys[i]`` names the
    sample). :meth:`read` decodes one to RGB at ``size`` (the first image's, so that a batch stacks)."""

    name: str
    labels: np.ndarray  # int64 [N]
    classes: list[str]
    paths: list[str] | None = None
    blob: np.ndarray | None = None
    offsets: np.ndarray | None = None
    rows: np.ndarray | None = None
    size: tuple[int, int] | None = None  # (H, W)
    shards: list[str] | None = None
    spans: np.ndarray | None = None  # int64 [N, 3]: shard index, byte offset, byte size
    keys: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def where(self, i: int) -> str:
        """Image ``i``'s file, its place in the archive, or its shard and key, for messages."""
        if self.paths is not None:
            return self.paths[i]
        if self.shards is not None:
            assert self.spans is not None and self.keys is not None
            return f"{self.shards[int(self.spans[i, 0])]}: {self.keys[i]}"
        assert self.rows is not None
        return f"{self.name}: image {int(self.rows[i])}"

    def encoded(self, i: int) -> bytes | Path:
        if self.paths is not None:
            return Path(self.paths[i])
        if self.shards is not None:
            assert self.spans is not None
            shard, offset, size = (int(v) for v in self.spans[i])
            return read_span(self.shards[shard], offset, size, self.where(i))
        assert self.blob is not None and self.offsets is not None and self.rows is not None
        r = int(self.rows[i])
        return self.blob[int(self.offsets[r]) : int(self.offsets[r + 1])].tobytes()

    def read(self, i: int) -> np.ndarray:
        """Image ``i`` as ``uint8 [H, W, 3]`` at :attr:`size`."""
        return decode_image(self.encoded(i), self.where(i), self.size)

    def decoded_bytes(self) -> int:
        """What the whole set takes decoded, as ``uint8 [N, 3, H, W]``."""
        h, w = self.size or (0, 0)
        return len(self) * 3 * h * w

    def first_size(self) -> tuple[int, int]:
        """Every image is brought to the first one's size; reading it fixes :attr:`size`."""
        if self.size is None:
            if not len(self):
                raise DataError(f"{self.name}: the dataset is empty")
            h, w = decode_image(self.encoded(0), self.where(0)).shape[:2]
            self.size = (int(h), int(w))
        return self.size


def read_span(path: str, offset: int, size: int, where: str) -> bytes:
    """``size`` bytes of the file ``path`` from ``offset``; a file that ends before them, or cannot
    be read, is a :class:`DataError` naming ``where``."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(size)
    except OSError as exc:
        raise DataError(f"{where}: cannot read the shard ({exc.strerror})") from None
    if len(data) != size:
        raise DataError(f"{where}: the shard ends early (inside this image); re-copy the shard")
    return data


# --- image folders ---------------------------------------------------------------------------
def split_folders(root: Path) -> tuple[Path, Path | None]:
    """The folder of training images, and of test images where ``root`` has the ImageNet layout
    (``train/`` beside ``val/`` or ``test/``); else ``root`` itself and None."""
    train = root / "train"
    test = next((root / t for t in TEST_FOLDERS if (root / t).is_dir()), None)
    if train.is_dir() and test is not None:
        return train, test
    return root, None


def scan_folder(root: Path, classes: list[str] | None = None) -> EncodedImages:
    """The images of ``root/<class>/`` in sorted order; ``classes`` (the training split's) must be
    the folder's own, when given."""
    try:
        found = sorted(e.name for e in os.scandir(root) if e.is_dir())
    except OSError as exc:
        raise DataError(f"{root}: cannot list the folder ({exc.strerror})") from None
    if not found:
        raise DataError(f"{root}: an image folder needs one sub-folder per class; found none")
    if classes is not None and found != classes:
        extra, missing = sorted(set(found) - set(classes)), sorted(set(classes) - set(found))
        raise DataError(f"{root}: its classes differ from the training folder's (only here: {extra[:5]}, "
                        f"missing here: {missing[:5]}); give both splits the same class folders")  # fmt: skip
    paths: list[str] = []
    labels: list[int] = []
    for ci, name in enumerate(found):
        files = sorted(e.path for e in os.scandir(root / name) if e.is_file() and _is_image(e.name))
        if not files:
            raise DataError(f"{root / name}: a class folder with no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                            "add images or remove the folder")  # fmt: skip
        paths += files
        labels += [ci] * len(files)
    return EncodedImages(root.name, np.asarray(labels, dtype=np.int64), found, paths=paths)


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


# --- JPEG archives ---------------------------------------------------------------------------
def open_archive(path: Path, split: str) -> EncodedImages:
    """The ``split`` images of a JPEG archive (``data``, ``offsets``, ``label``, optional ``split``)."""
    from hwnas.train.npz_reader import memmap_member, read_npz

    z = read_npz(path, ["offsets", "label", "split"])
    data = memmap_member(path, "data")
    if data is None:  # compressed: the encoded bytes are read (a tenth of the decoded pixels or less)
        data = read_npz(path, ["data"])["data"]
    offsets, label = z["offsets"], np.asarray(z["label"])
    labels = check_labels(path, label, len(label) if label.ndim == 1 else -1, "label")
    if data.dtype != np.uint8 or data.ndim != 1:
        raise DataError(f"{path}: data must be the uint8 bytes of the images, got {data.dtype} {data.shape}")
    if not np.issubdtype(offsets.dtype, np.integer) or offsets.shape != (len(labels) + 1,):
        raise DataError(
            f"{path}: offsets must be {len(labels) + 1} integers (one more than labels), got {offsets.shape}"
        )
    if len(offsets) and (offsets[0] < 0 or offsets[-1] > len(data) or (np.diff(offsets) < 0).any()):
        raise DataError(f"{path}: offsets must rise from >= 0 to <= {len(data)} (the size of data)")
    rows = np.arange(len(labels))
    if "split" in z:
        flags = z["split"]
        if flags.shape != labels.shape or flags.dtype != np.bool_:
            raise DataError(f"{path}: split must be one bool per image, got {flags.dtype} {flags.shape}")
        rows = np.flatnonzero(flags == (split == "train"))
    if len(rows) == 0:
        raise DataError(f"{path}: no {split} images in the archive")
    n_classes = int(labels.max()) + 1
    classes = CIFAR10_CLASSES if n_classes == 10 else [str(i) for i in range(n_classes)]
    return EncodedImages(f"{path.stem}-{split}", labels[rows], classes, blob=data, offsets=offsets, rows=rows)


MAX_CLASSES = 100_000


def check_labels(path: Path, y: np.ndarray, n: int, name: str = "y") -> np.ndarray:
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
