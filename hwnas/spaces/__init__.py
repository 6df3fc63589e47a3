"""The data layer of the search: no torch, nothing above it imported.

``ops`` (block vocabulary), ``arch`` (architectures as data), ``space`` (search spaces),
``specfile`` (reading and checking description files), ``registry``, ``presets`` (the built-in
spaces), ``zoo`` (published architectures), ``kernels`` (the LUT's units and keys, and which
kernels a block or a network runs). Importing it registers the presets and the zoo.
"""

from __future__ import annotations

from hwnas.spaces import presets as _presets  # noqa: F401  (registers the preset spaces)
from hwnas.spaces.arch import Architecture, Block
from hwnas.spaces.space import SearchSpace, get_space, list_spaces, register_space
from hwnas.spaces.zoo import ARCHS, get_arch, list_archs

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
