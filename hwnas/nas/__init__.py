"""Search spaces and architectures as data, the child-network builder, FLOP/param counting.

Importing this package registers the preset spaces (``fbnetv2``, ``cifar``, ``tiny``) and the
published architectures (``FBNetV2-F1`` ...). Torch is imported only by ``builder``/``counting``.
"""

from __future__ import annotations

from hwnas.nas import presets as _presets  # noqa: F401  (registers the preset spaces)
from hwnas.nas.arch import Architecture, Block
from hwnas.nas.space import SearchSpace, get_space, list_spaces, register_space
from hwnas.nas.zoo import ARCHS, get_arch, list_archs

__all__ = [
    "ARCHS",
    "Architecture",
    "Block",
    "SearchSpace",
    "get_arch",
    "get_space",
    "list_archs",
    "list_spaces",
    "register_space",
]
