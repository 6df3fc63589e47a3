"""Neural architecture search, in three layers (imports flow downwards only; see the README):

``hwnas.nas.spaces``
    data, no torch: block vocabulary, architectures, search spaces and their presets, the
    published architectures, and the kernels (LUT keys) a network runs;
``hwnas.nas.models``
    the PyTorch modules built from that data: layers, blocks, the child-network builder, and
    FLOP / parameter counting;
``hwnas.nas.search``
    DMaskingNAS: the supernet, the differentiable cost, the search loop, derivation of the
    child, training data and training, and the weights files.

Importing this package registers the preset spaces (``fbnetv2``, ``cifar``, ``tiny``) and the
published architectures (``FBNetV2-F1`` ...), and imports no torch.
"""

from __future__ import annotations

from hwnas.nas.spaces import (
    ARCHS,
    Architecture,
    Block,
    SearchSpace,
    get_arch,
    get_space,
    list_archs,
    list_spaces,
    register_space,
)

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
