"""Published architectures, registered by name (FBNetV2 from mobile-vision's model definitions).

mobile-vision writes an expansion on its ``skip`` blocks too, but its skip ignores it; here it is
dropped. Figures in the comments are the ones mobile-vision publishes beside each model.
"""

from __future__ import annotations

from pathlib import Path

from hwnas.core.errors import HwnasError
from hwnas.spaces.arch import Architecture, Block
from hwnas.spaces.registry import Registry

ARCHS: Registry[Architecture] = Registry("architecture")


def _arch(name: str, resolution: int, rows: list[tuple[str, int, int, float]]) -> Architecture:
    return Architecture(tuple(Block(op, c, s, e) for op, c, s, e in rows), resolution, 1000, 3, name)


_F1_BODY = [
    ("ir_k5", 24, 2, 5.4566),
    ("ir_k5", 24, 1, 4.7912),
    ("ir_k5_sehsig", 32, 2, 5.3501),
    ("ir_k5_sehsig", 24, 1, 4.5379),
    ("ir_k5_hs", 56, 2, 5.7133),
    ("ir_k3_hs", 56, 1, 4.1212),
    ("ir_k3_sehsig_hs", 56, 1, 5.1246),
    ("skip", 80, 1, 1),
    ("ir_k5_sehsig_hs", 80, 1, 4.5070),
    ("ir_k5_sehsig_hs", 80, 1, 1.7712),
    ("ir_k3_sehsig_hs", 144, 2, 4.5685),
    ("ir_k5_sehsig_hs", 144, 1, 5.8400),
    ("ir_k5_sehsig_hs", 144, 1, 6.8754),
    ("skip", 224, 1, 1),
]
_F_STEM = [("conv_k3_hs", 8, 2, 1), ("ir_k5", 8, 1, 1)]

# FBNetV2-F1, 128 px. Published: 5.999408M params, 56.41056M FLOPs (multiply-adds), 68.3% top-1.
ARCHS.register("FBNetV2-F1", _arch("FBNetV2-F1", 128, _F_STEM + _F1_BODY + [("ir_pool_hs", 1600, 1, 6)]))
# FBNetV2-F2: F1's blocks at 160 px. Published: 5.999408M params, 85.441392M FLOPs, 71.1% top-1.
ARCHS.register("FBNetV2-F2", _arch("FBNetV2-F2", 160, _F_STEM + _F1_BODY + [("ir_pool_hs", 1600, 1, 6)]))
# FBNetV2-F3: F1's blocks, a wider head, 192 px. Published: 6.899504M params, 121.824M FLOPs, 73.1% top-1.
ARCHS.register("FBNetV2-F3", _arch("FBNetV2-F3", 192, _F_STEM + _F1_BODY + [("ir_pool_hs", 1984, 1, 6)]))


def list_archs() -> list[str]:
    return ARCHS.names()


def get_arch(name_or_path: str) -> Architecture:
    """A registered architecture by name, or an architecture file (JSON / YAML) by path."""
    if name_or_path in ARCHS:
        return ARCHS.get(name_or_path)
    if Path(name_or_path).exists() or name_or_path.endswith((".json", ".yaml", ".yml")):
        return Architecture.load(name_or_path)
    raise HwnasError(f"unknown architecture {name_or_path!r}: not a file, nor one of: {', '.join(ARCHS.names())}")
