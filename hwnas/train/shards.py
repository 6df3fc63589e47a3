"""WebDataset tar shards as a dataset: each shard indexed once, then read image by image at its offset.

A WebDataset shard is a plain tar whose members are grouped into samples by name: a member's key is
its path up to the first dot of its file name, the rest is its extension, and consecutive members
with the same key make one sample (``000042.jpg`` and ``000042.cls``). hwnas reads a sample's image
(one extension of :data:`~hwnas.train.decode.IMAGE_SUFFIXES`: ``jpg``, ``png``, ``webp``, ...) and
its label (``cls``: a class index as ASCII digits); other members are ignored.

``--data`` takes a folder of ``*.tar`` shards (and no sub-folders), or one ``.tar``. In a folder,
the training shards are those whose name starts with ``train`` (where none does, every shard that
is not a test shard); the test shards, whose names start with ``val`` or ``test``, give the test
split, as the ImageNet folder layout does. ``classes.txt`` beside the shards names the classes, line
``i`` naming label ``i``; without it they are ``"0"`` to ``"k-1"``. Shards are read in sorted name
order and their members in tar order, so the dataset's order is fixed.

Why hwnas indexes the shards itself instead of reading them through the ``webdataset`` library's
pipeline: that pipeline reads shards from start to end and shuffles through a buffer, which gives an
approximate order, not the in-memory dataset's, and a run stopped mid-epoch cannot go back to its
place in it. hwnas draws every batch's positions and augmentation in the main process
(:mod:`hwnas.train.batches`), so that streamed and in-memory batches are the same and a run resumes
mid-epoch exactly; that needs random access. So each shard's tar headers are read once with
:mod:`tarfile` (no image is read or decoded), and image ``i`` is then read from its byte range in
its shard (:class:`~hwnas.train.files.EncodedImages`). What hwnas shares with WebDataset is the
format: shards written by ``webdataset.ShardWriter`` or ``TarWriter`` are read here (the tests write
theirs with it), and so are shards made with ``tar`` from ``KEY.jpg`` and ``KEY.cls`` files.

A shard that ends early (a copy cut short) stops the run with the shard's name and the number of
complete samples before the cut, or, with ``--bad-images skip``, gives those samples and a note that
the rest of the shard is lost. A sample without an image, without a label, or with a label that is
not an integer is a one-line :class:`~hwnas.train.decode.DataError` naming its shard and key.
"""

from __future__ import annotations

import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from hwnas.train.decode import IMAGE_SUFFIXES, DataError
from hwnas.train.files import EncodedImages, check_labels

TAR = ".tar"
TRAIN_PREFIX = "train"
TEST_PREFIXES = ("val", "test")
CLASSES_FILE = "classes.txt"
LABEL = "cls"
MAX_LABEL_BYTES = 32  # a class index in ASCII digits, with room for whitespace
IMAGE_EXTENSIONS = frozenset(s.lstrip(".") for s in IMAGE_SUFFIXES)
_KEY_AND_EXTENSION = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext


# --- the layout ------------------------------------------------------------------------------
def is_shards(path: Path) -> bool:
    """Whether ``path`` is a ``.tar`` file, or a folder holding ``.tar`` files and no sub-folders."""
    if path.is_file():
        return path.suffix.lower() == TAR
    try:
        entries = list(os.scandir(path))
    except OSError:
        return False
    tars = any(e.is_file() and e.name.lower().endswith(TAR) for e in entries)
    return tars and not any(e.is_dir() and not e.name.startswith(".") for e in entries)


def shard_files(path: Path) -> tuple[list[Path], list[Path]]:
    """The training shards and the test shards of ``path`` (a folder or one shard), in name order."""
    if path.is_file():
        return [path], []
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == TAR)
    test = [p for p in found if p.name.lower().startswith(TEST_PREFIXES)]
    train = [p for p in found if p.name.lower().startswith(TRAIN_PREFIX)]
    return train or [p for p in found if p not in test], test


def has_test_shards(path: Path) -> bool:
    return bool(shard_files(path)[1])


def open_shards(path: Path, split: str = "train", bad_images: str = "stop",
                notes: list[str] | None = None) -> EncodedImages:  # fmt: skip
    """The ``split`` (train or test) of the shards at ``path``: their images' places and labels,
    found by reading the tar headers. A shard that ends early stops with ``bad_images="stop"``; with
    ``skip`` its samples before the cut are kept and ``notes`` says so."""
    notes = notes if notes is not None else []
    train, test = shard_files(path)
    if not train:
        raise DataError(f"{path}: no training shards, only test shards ({test[0].name}, ...); name the training "
                        f"shards train-*{TAR}")  # fmt: skip
    if split == "test" and not test:
        raise DataError(f"{path}: no test split (WebDataset shards have one in shards named val-*{TAR} or "
                        f"test-*{TAR} beside the train-*{TAR} ones)")  # fmt: skip
    folder = path if path.is_dir() else path.parent
    name = path.stem if path.is_file() else path.name if not test else f"{path.name}-{split}"
    files = _read_split(name, train, bad_images, notes)
    classes = _class_names(folder, files)
    if split == "test":
        files = _read_split(name, test, bad_images, notes)
        _within(files, classes, "the training shards' classes; give the test shards the same classes")
    files.classes = classes
    return files


def _class_names(folder: Path, files: EncodedImages) -> list[str]:
    """``classes.txt`` beside the shards (line ``i`` names label ``i``), or ``"0"`` to ``"k-1"``."""
    path = folder / CLASSES_FILE
    if not path.is_file():
        return [str(i) for i in range(int(files.labels.max()) + 1)]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the class names ({exc}); write one name per line, in UTF-8") from None
    names = [line.strip() for line in lines]
    while names and not names[-1]:
        names.pop()
    if "" in names:
        raise DataError(f"{path}: line {names.index('') + 1} is empty; write one class name per line, line i "
                        "naming label i")  # fmt: skip
    _within(files, names, f"the {len(names)} names of {path}; add the missing names")
    return names


def _within(files: EncodedImages, classes: list[str], what: str) -> None:
    """Every label of ``files`` names one of ``classes``; else a one-line error naming the first."""
    beyond = np.flatnonzero(files.labels >= len(classes))
    if len(beyond):
        i = int(beyond[0])
        raise DataError(f"{files.where(i)}: label {int(files.labels[i])} is beyond {what}")


# --- the split -------------------------------------------------------------------------------
@dataclass
class ShardIndex:
    """One shard's usable samples: keys, image byte ranges, labels; the keys of samples without an
    image; and why the shard ends early (None where it ends as a tar does)."""

    keys: list[str] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    imageless: list[str] = field(default_factory=list)
    cut: str | None = None


def _read_split(name: str, shards: list[Path], bad_images: str, notes: list[str]) -> EncodedImages:
    """The samples of ``shards``, in order, as :class:`EncodedImages` (classes set by the caller)."""
    keys: list[str] = []
    spans: list[np.ndarray] = [np.empty((0, 3), dtype=np.int64)]
    labels: list[int] = []
    imageless: list[tuple[Path, str]] = []
    for s, path in enumerate(shards):
        shard = index_shard(path)
        if shard.cut is not None:
            _ends_early(path, shard, bad_images, notes)
        keys += shard.keys
        spans.append(np.column_stack([np.full(len(shard.keys), s), np.asarray(shard.spans).reshape(-1, 2)]))
        labels += shard.labels
        imageless += [(path, key) for key in shard.imageless]
    where = shards[0].parent if len(shards) > 1 else shards[0]
    if imageless and not keys:
        raise DataError(f"{where}: no images in the shards (members KEY.jpg, KEY.png, ...); write each "
                        "sample's image with an image extension")  # fmt: skip
    if imageless:
        path, key = imageless[0]
        raise DataError(f"{path}: {key}: a sample without an image ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                        "add its image or remove the sample")  # fmt: skip
    if not keys:
        raise DataError(f"{where}: no samples in the shards; a WebDataset sample is KEY.jpg with KEY.cls")
    y = check_labels(where, np.asarray(labels, dtype=np.int64), len(labels), LABEL)
    return EncodedImages(name, y, [], shards=[str(p) for p in shards],
                         spans=np.concatenate(spans).astype(np.int64), keys=keys)  # fmt: skip


def _ends_early(path: Path, shard: ShardIndex, bad_images: str, notes: list[str]) -> None:
    n = len(shard.keys) + len(shard.imageless)
    if bad_images == "stop":
        raise DataError(f"{path}: the shard {shard.cut}; {n} complete samples come before the cut; re-copy the "
                        f"shard, or --bad-images skip to use the {n} samples before the cut")  # fmt: skip
    notes.append(f"{path}: the shard {shard.cut}; its {n} complete samples before the cut are used and the rest "
                 f"of {path.name} is lost (--bad-images skip)")  # fmt: skip


# --- one shard -------------------------------------------------------------------------------
def index_shard(path: Path) -> ShardIndex:
    """A shard's samples, from its tar headers and its labels' bytes (no image is read)."""
    members, cut = tar_members(path)
    samples = _group(path, members)
    if cut is not None and samples and not _usable(samples[-1]):
        samples.pop()  # the sample the cut went through: its other members may lie past the cut
    shard = ShardIndex(cut=cut)
    try:
        with path.open("rb") as fh:
            for key, found in samples:
                _add(shard, fh, path, key, found)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the shard ({exc.strerror})") from None
    return shard


def _add(shard: ShardIndex, fh: BinaryIO, path: Path, key: str, found: dict[str, tuple[int, int]]) -> None:
    """The sample ``key`` (its members' byte ranges ``found``) added to ``shard``, its label read."""
    image = _image(path, key, found)
    if image is None:
        shard.imageless.append(key)
        return
    if LABEL not in found:
        raise DataError(f"{path}: {key}: a sample with an image but no .{LABEL} label; give each sample a "
                        f"{key}.{LABEL} holding its class index")  # fmt: skip
    shard.keys.append(key)
    shard.spans.append(found[image])
    shard.labels.append(_label(fh, path, key, *found[LABEL]))


def tar_members(path: Path) -> tuple[list[tuple[str, int, int]], str | None]:
    """The regular files of the tar ``path`` as ``(name, data offset, size)`` in tar order, the
    ones before the cut where it ends early, and why it does (None where it ends as a tar does:
    with an end-of-archive block)."""
    found: list[tuple[str, int, int]] = []
    try:
        length = path.stat().st_size
        with path.open("rb") as fh:
            try:
                return found, _read_headers(fh, length, found)
            except tarfile.ReadError as exc:
                return found, _read_error(path, found, exc, fh.tell() >= length, length)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the shard ({exc.strerror})") from None


def _read_headers(fh: BinaryIO, length: int, found: list[tuple[str, int, int]]) -> str | None:
    """Appends the tar's regular files to ``found``; why the tar ends early, or None."""
    with tarfile.open(fileobj=fh, mode="r:") as tar:
        while (m := tar.next()) is not None:
            tar.members = []  # type: ignore[attr-defined]  # a shard may hold a million members: keep none, as webdataset does
            if m.offset_data + m.size > length:
                return f"ends early (cut at byte {length:,}, inside {m.name})"
            if m.isreg():
                found.append((m.name, m.offset_data, m.size))
        end = tar.offset
    fh.seek(end)
    block = fh.read(tarfile.BLOCKSIZE)
    if len(block) < tarfile.BLOCKSIZE:
        return f"ends early (cut at byte {length:,}, with no end-of-archive block)"
    if block.count(0) != len(block):
        return f"is damaged (no valid tar header at byte {end:,})"
    return None


def _read_error(path: Path, found: list[tuple[str, int, int]], exc: tarfile.ReadError, at_end: bool,
                length: int) -> str:  # fmt: skip
    """Why the tar stops where :mod:`tarfile` could not read a header: the file ends there (a cut),
    or it holds something else (damage; or no tar at all, a one-line error)."""
    if at_end:
        return f"ends early (cut at byte {length:,}{f', after {found[-1][0]}' if found else ''})"
    if not found:
        raise DataError(f"{path}: not a tar file hwnas reads ({exc}); give uncompressed .tar shards, as "
                        "WebDataset writes them")  # fmt: skip
    return f"is damaged after {found[-1][0]} ({exc})"


def _group(path: Path, members: list[tuple[str, int, int]]) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    """Members grouped into samples as WebDataset groups them: consecutive members with one key;
    the extensions (lower case) map to the byte ranges. Names without an extension, and
    ``__meta__`` files at the top, are left out, as WebDataset leaves them out."""
    samples: list[tuple[str, dict[str, tuple[int, int]]]] = []
    for name, offset, size in members:
        match = _KEY_AND_EXTENSION.match(name)
        if match is None or ("/" not in name and name.startswith("__") and name.endswith("__")):
            continue
        key, extension = match.group(1), match.group(2).lower()
        if not samples or samples[-1][0] != key:
            samples.append((key, {}))
        if extension in samples[-1][1]:
            raise DataError(f"{path}: {key}: two .{extension} members in one sample; give each sample one file "
                            "per extension")  # fmt: skip
        samples[-1][1][extension] = (offset, size)
    return samples


def _usable(sample: tuple[str, dict[str, tuple[int, int]]]) -> bool:
    return LABEL in sample[1] and any(e in IMAGE_EXTENSIONS for e in sample[1])


def _image(path: Path, key: str, found: dict[str, tuple[int, int]]) -> str | None:
    """The extension of the sample's image, or None where it has none."""
    images = sorted(e for e in found if e in IMAGE_EXTENSIONS)
    if len(images) > 1:
        raise DataError(f"{path}: {key}: {len(images)} images in one sample (.{', .'.join(images)}); hwnas reads "
                        "one image per sample")  # fmt: skip
    return images[0] if images else None


def _label(fh: BinaryIO, path: Path, key: str, offset: int, size: int) -> int:
    """The class index in a ``.cls`` member: ASCII digits, with optional whitespace around them."""
    text = ""
    if size <= MAX_LABEL_BYTES:
        fh.seek(offset)
        text = fh.read(size).decode("ascii", errors="replace").strip()
    if not (text.isascii() and text.isdigit()):
        shown = repr(text[:20]) if size <= MAX_LABEL_BYTES else f"{size:,} bytes"
        raise DataError(f"{path}: {key}.{LABEL} is not a class index (got {shown}); write each label as an "
                        "integer in ASCII digits, as webdataset writes an int")  # fmt: skip
    return int(text)
