"""Optional routes and the extra that installs each: one place that says which package a route
needs and how to get it, so a command that needs a missing one fails in one line naming the extra.

The base install exports and times ONNX. ``hwnas[tflite]``, ``hwnas[executorch]`` and
``hwnas[coreml]`` add one route each, and ``hwnas[all]`` adds every route.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

from hwnas.core.errors import HwnasError

# route -> (the extra that installs it, the modules it imports); the extras are in pyproject.toml
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "tflite": ("tflite", ("ai_edge_litert", "litert_torch")),
    "pte": ("executorch", ("executorch",)),
    "mlpackage": ("coreml", ("coremltools",)),
}


def missing(route: str) -> str | None:
    """The extra to install for ``route``, or None when every module it needs is importable."""
    extra, modules = EXTRAS[route]
    return extra if any(importlib.util.find_spec(m) is None for m in modules) else None


def require(route: str, what: str) -> None:
    """Raise a one-line error naming the extra when ``route`` is not installed (``what``: the
    thing asked for, as the user wrote it, e.g. ``--format pte``)."""
    extra = missing(route)
    if extra is not None:
        raise HwnasError(f"{what} needs the {extra!r} extra, which is not installed: pip install 'hwnas[{extra}]'")


def version(dist: str) -> str | None:
    """The installed version of distribution ``dist`` (None when it is not installed)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
