"""The agent's model store: model files named by the SHA-256 of their bytes, in one folder.

A name is never taken from a client: an upload's name must be 64 lowercase hex digits and equal
the hash of its body, so no name can reach outside the folder. Files are written under a temporary
name and renamed once the runtime has loaded them, so a refused or interrupted upload leaves
nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from hwnas.core.formats import FILE_FORMATS
from hwnas.devices.agent.protocol import SHA256

EXTENSIONS = {fmt: f".{fmt}" for fmt in FILE_FORMATS}


def is_model_name(name: str) -> bool:
    return SHA256.fullmatch(name) is not None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ModelStore:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def find(self, name: str) -> tuple[Path, str] | None:
        """The stored file and its format, or None."""
        if not is_model_name(name):
            return None
        for fmt, ext in EXTENSIONS.items():
            path = self.folder / f"{name}{ext}"
            if path.is_file():
                return path, fmt
        return None

    def stage(self, data: bytes) -> Path:
        """Write ``data`` under a temporary name in the folder; :meth:`commit` or delete it afterwards."""
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".upload-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return Path(tmp)

    def commit(self, staged: Path, name: str, fmt: str) -> Path:
        final = self.folder / f"{name}{EXTENSIONS[fmt]}"
        os.replace(staged, final)
        return final

    def names(self) -> list[str]:
        return sorted(
            p.stem for p in self.folder.iterdir() if p.suffix in EXTENSIONS.values() and is_model_name(p.stem)
        )
