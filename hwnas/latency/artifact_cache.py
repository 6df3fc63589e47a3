"""On-disk cache of converted models, so a re-run never converts a kernel (or a network) twice.

Location: ``$HWNAS_CACHE``, else ``$XDG_CACHE_HOME/hwnas``, else ``~/.cache/hwnas``. Entries are
keyed by format, the version of hwnas's kernel-model code, converter version, batch, precision
and kernel key; files are written atomically.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from hwnas.core.fileio import write_bytes_atomic
from hwnas.latency.kernel_models import KERNEL_MODELS_VERSION
from hwnas.spaces.kernels import Kernel


def cache_root() -> Path:
    if os.environ.get("HWNAS_CACHE"):
        return Path(os.environ["HWNAS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hwnas"


def _converter_version(fmt: str) -> str:
    dist = {"onnx": "torch", "tflite": "litert-torch", "pte": "executorch"}[fmt]
    try:
        return f"{dist}-{importlib.metadata.version(dist)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{dist}-none"


class ArtifactCache:
    """Converted models of one format and batch size: one-kernel models (``kind="kernels"``, keyed by
    kernel key) or whole networks (``kind="models"``, keyed by a hash of the architecture string)."""

    def __init__(
        self, fmt: str, batch: int = 1, root: Path | None = None, kind: str = "kernels", precision: str = "fp32"
    ) -> None:
        self.fmt = fmt
        self.precision = precision
        tag = f"{fmt}-v{KERNEL_MODELS_VERSION}-{_converter_version(fmt)}-b{batch}"
        tag += "" if precision == "fp32" else f"-{precision}"
        self.dir = (root or cache_root()) / f"{kind}-{tag}"
        self.batch = batch

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.{self.fmt}"

    def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, key: str, data: bytes) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.path(key), data)

    def missing(self, kernels: Sequence[Kernel]) -> list[Kernel]:
        return [k for k in kernels if not self.path(k.key).is_file()]

    def ensure(
        self,
        kernels: Sequence[Kernel],
        build: Callable[[Sequence[Kernel], int], list[bytes]],
        chunk: int = 48,
        on_chunk: Callable[[int], None] | None = None,
    ) -> int:
        """Convert and store every kernel not cached yet, ``chunk`` at a time; returns how many."""
        todo = self.missing(kernels)
        for i in range(0, len(todo), chunk):
            part = todo[i : i + chunk]
            for k, data in zip(part, build(part, self.batch), strict=True):
                self.put(k.key, data)
            if on_chunk:
                on_chunk(len(part))
        return len(todo)
