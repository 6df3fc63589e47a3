"""Atomic file writes: readers see the old content or the new, never half of it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hwnas.core.errors import HwnasError


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file so that readers see the old or the new content, never half of it."""
    write_bytes_atomic(path, text.encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a file atomically (temporary file in the same folder, fsync, rename), with the mode a
    plain ``open`` would give it under the process's umask (0644 under umask 022)."""
    p = Path(path)
    if not p.parent.is_dir():
        raise HwnasError(f"{p}: cannot write, the folder {p.parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    except OSError as exc:
        raise HwnasError(f"{p}: cannot write ({exc.strerror})") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes the file private; give it the usual mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
