"""Reading ``.npz`` datasets with bounds: no pickles, no zip bombs, no arrays larger than the file.

``numpy.load(allow_pickle=False)`` already refuses object arrays, but it trusts the archive: a
member's ``.npy`` header may declare a shape far larger than its data (numpy allocates it before
reading), and a member may inflate a thousandfold. Before anything is decompressed, every member
that will be read is checked here:

* its ``.npy`` header parses, and its dtype holds no Python objects;
* the size its header declares (shape x item size) fits in the member's declared size, which the
  zip reader enforces while inflating;
* members larger than :data:`BOMB_MIN_BYTES` inflate at most :data:`MAX_RATIO` times;
* the total is at most half the machine's memory.
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from hwnas.core.errors import HwnasError

MAX_RATIO = 200  # image data does not compress this well; zip bombs do
BOMB_MIN_BYTES = 64 * 2**20


class NpzError(HwnasError):
    """An .npz that cannot be read safely (the message names the file and the member)."""


def _memory_cap() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


# What zipfile, zlib and numpy's header parser raise on damaged input.
_BROKEN = (ValueError, OSError, EOFError, SyntaxError, TypeError, KeyError, zipfile.BadZipFile, NotImplementedError,
           RuntimeError, zlib.error, struct.error, OverflowError, MemoryError)  # fmt: skip


def _open(path: str | Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except _BROKEN as exc:
        raise NpzError(f"{path}: not a readable .npz ({str(exc)[:160]})") from None


def _header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """A member's shape, dtype, and the length of its ``.npy`` header (where its data begins)."""
    try:
        with zf.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"npy format version {version} is not read here")
            header_len = fh.tell()
    except _BROKEN as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise NpzError(f"{source}: member {info.filename!r} is not a readable array ({first[:160]})") from None
    return tuple(int(d) for d in shape), dtype, header_len


def read_npz(path: str | Path, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays ``names`` (all when None) of the ``.npz`` at ``path``, after the checks above."""
    p = Path(path)
    source = str(p)
    with _open(p) as zf:
        members = {i.filename[:-4]: i for i in zf.infolist() if i.filename.endswith(".npy")}
        wanted = list(members) if names is None else [n for n in names if n in members]
        total = 0
        for name in wanted:
            info = members[name]
            shape, dtype, _ = _header(zf, info, source)
            if dtype.hasobject:
                raise NpzError(f"{source}: array {name!r} holds Python objects (pickles), which hwnas does not load")
            if any(d < 0 for d in shape):
                raise NpzError(f"{source}: array {name!r} has a negative dimension {shape}")
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes > info.file_size:
                raise NpzError(f"{source}: array {name!r} declares {shape} ({nbytes:,} bytes) but holds "
                               f"{info.file_size:,} bytes: truncated or forged")  # fmt: skip
            if info.file_size > BOMB_MIN_BYTES and info.file_size > MAX_RATIO * max(1, info.compress_size):
                raise NpzError(f"{source}: array {name!r} inflates {info.file_size / max(1, info.compress_size):.0f}x "
                               f"(to {info.file_size:,} bytes); refused as a zip bomb")  # fmt: skip
            total += info.file_size
        cap = _memory_cap()
        if total > cap:
            raise NpzError(f"{source}: its arrays need {total:,} bytes, more than half this machine's memory")
        out: dict[str, np.ndarray] = {}
        try:
            with np.load(p, allow_pickle=False) as z:
                for name in wanted:
                    out[name] = z[name]
        except _BROKEN as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise NpzError(f"{source}: not a readable .npz ({first[:160]})") from None
        return out


def npz_names(path: str | Path) -> list[str]:
    """The array names in an ``.npz`` (without reading any array)."""
    with _open(path) as zf:
        return [i.filename[:-4] for i in zf.infolist() if i.filename.endswith(".npy")]


def memmap_member(path: str | Path, name: str) -> np.ndarray | None:
    """The 1-D array ``name`` of an ``.npz`` memory-mapped from the file (read-only, nothing read
    into memory), when the member is stored uncompressed; None when it is compressed. The member
    passes :func:`read_npz`'s header checks first."""
    source = str(path)
    with _open(path) as zf:
        info = next((i for i in zf.infolist() if i.filename == name + ".npy"), None)
        if info is None:
            raise NpzError(f"{source}: no array {name!r}")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        shape, dtype, header_len = _header(zf, info, source)
        if dtype.hasobject or len(shape) != 1 or header_len + shape[0] * dtype.itemsize > info.file_size:
            raise NpzError(f"{source}: array {name!r} is not a 1-D array of numbers within its member")
    try:
        with open(path, "rb") as fh:  # the member's data begins after its local file header and .npy header
            fh.seek(info.header_offset)
            local = fh.read(30)
            if len(local) != 30 or local[:4] != b"PK\x03\x04":
                raise ValueError("bad local file header")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
        offset = info.header_offset + 30 + name_len + extra_len + header_len
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    except _BROKEN as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise NpzError(f"{source}: member {name!r} cannot be mapped ({first[:160]})") from None
