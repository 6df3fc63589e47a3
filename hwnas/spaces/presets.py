"""The preset search spaces: ``fbnetv2`` (ImageNet scale), ``cifar`` (trainable on a CPU), ``tiny``,
and the benchmark spaces ``cifar-wide`` and ``cifar-wide-tied``.

They are plain data, read by the same parser as a user's file (``hwnas space show NAME --yaml``
prints one as a starting point). Sizes and kernel counts are in BENCHMARKS.md.
"""

from __future__ import annotations

from typing import Any

from hwnas.spaces.space import SearchSpace, register_space

# Per-layer block choices of FBNetV2: kernel 3/5 x SE (hard-sigmoid) x hard-swish, plus skip.
IR_OPS = [
    "ir_k3",
    "ir_k5",
    "ir_k3_sehsig",
    "ir_k5_sehsig",
    "ir_k3_hs",
    "ir_k5_hs",
    "ir_k3_sehsig_hs",
    "ir_k5_sehsig_hs",
]

FBNETV2: dict[str, Any] = {
    "name": "fbnetv2",
    "resolutions": [160, 192, 224],
    "num_classes": 1000,
    "stages": [
        {"name": "stem", "depth": 1, "stride": 2, "channels": [16], "ops": ["conv_k3_hs"]},
        {"depth": 1, "stride": 1, "channels": [16], "ops": ["ir_k3"], "expansions": [1]},
        {
            "depth": 3,
            "stride": 2,
            "channels": [24, 32],
            "ops": [*IR_OPS, "skip"],
            "expansions": [2, 4, 6],
            "min_depth": 1,
        },
        {
            "depth": 3,
            "stride": 2,
            "channels": [32, 48],
            "ops": [*IR_OPS, "skip"],
            "expansions": [2, 4, 6],
            "min_depth": 1,
        },
        {
            "depth": 4,
            "stride": 2,
            "channels": [64, 96],
            "ops": [*IR_OPS, "skip"],
            "expansions": [2, 4, 6],
            "min_depth": 2,
        },
        {
            "depth": 3,
            "stride": 1,
            "channels": [112, 128],
            "ops": [*IR_OPS, "skip"],
            "expansions": [2, 4, 6],
            "min_depth": 1,
        },
        {
            "depth": 3,
            "stride": 2,
            "channels": [184, 224],
            "ops": [*IR_OPS, "skip"],
            "expansions": [2, 4, 6],
            "min_depth": 1,
        },
        {"name": "head", "depth": 1, "stride": 1, "channels": [1600], "ops": ["ir_pool_hs"], "expansions": [6]},
    ],
}

CIFAR: dict[str, Any] = {
    "name": "cifar",
    "resolutions": [24, 32],
    "num_classes": 10,
    "stages": [
        {"name": "stem", "depth": 1, "stride": 1, "channels": [16], "ops": ["conv_k3_hs"]},
        {"depth": 1, "stride": 1, "channels": [16], "ops": ["ir_k3"], "expansions": [1]},
        {
            "depth": 2,
            "stride": 2,
            "channels": [16, 24],
            "ops": [*IR_OPS[:4], "skip"],
            "expansions": [3, 6],
            "min_depth": 1,
        },
        {
            "depth": 3,
            "stride": 2,
            "channels": [32, 48],
            "ops": [*IR_OPS[:4], "skip"],
            "expansions": [3, 6],
            "min_depth": 1,
        },
        {
            "depth": 2,
            "stride": 2,
            "channels": [64, 96],
            "ops": [*IR_OPS[:4], "skip"],
            "expansions": [3, 6],
            "min_depth": 1,
        },
        {"name": "head", "depth": 1, "stride": 1, "channels": [512], "ops": ["ir_pool_hs"], "expansions": [4]},
    ],
}

# CIFAR-sized, in the spirit of FBNetV2's channel search: six out-channel choices in every searchable
# stage, three expansions, searchable depth (skip), two resolutions. For the search-quality benchmark;
# `cifar` stays small for the tests and the demo.
CIFAR_WIDE: dict[str, Any] = {
    "name": "cifar-wide",
    "resolutions": [24, 32],
    "num_classes": 10,
    "stages": [
        {"name": "stem", "depth": 1, "stride": 1, "channels": [16], "ops": ["conv_k3_hs"]},
        {"depth": 1, "stride": 1, "channels": [16], "ops": ["ir_k3"], "expansions": [1]},
        {
            "depth": 3,
            "stride": 2,
            "channels": [8, 12, 16, 20, 24, 32],
            "ops": [*IR_OPS[:4], "skip"],
            "expansions": [2, 4, 6],
            "min_depth": 1,
        },
        {
            "depth": 4,
            "stride": 2,
            "channels": [16, 24, 32, 40, 48, 64],
            "ops": [*IR_OPS[:4], "skip"],
            "expansions": [2, 4, 6],
            "min_depth": 1,
        },
        {
            "depth": 3,
            "stride": 2,
            "channels": [32, 48, 64, 80, 96, 128],
            "ops": [*IR_OPS[:4], "skip"],
            "expansions": [2, 4, 6],
            "min_depth": 1,
        },
        {"name": "head", "depth": 1, "stride": 1, "channels": [512], "ops": ["ir_pool_hs"], "expansions": [4]},
    ],
}

# `cifar-wide` with one channel decision per searchable stage (``tied_channels``): the stage's first
# layer picks the width and the later layers keep it, so they keep their residual connections, as in
# MobileNetV2 and Once-for-All (why: docs/notebook/search-protocol.md, "Fifth run").
CIFAR_WIDE_TIED: dict[str, Any] = {
    **CIFAR_WIDE,
    "name": "cifar-wide-tied",
    "stages": [{**st, "tied_channels": True} if len(st["channels"]) > 1 else st for st in CIFAR_WIDE["stages"]],
}

TINY: dict[str, Any] = {
    "name": "tiny",
    "resolutions": [16, 24],
    "num_classes": 4,
    "stages": [
        {"name": "stem", "depth": 1, "stride": 2, "channels": [8], "ops": ["conv_k3"]},
        {
            "depth": 2,
            "stride": 2,
            "channels": [8, 16],
            "ops": ["ir_k3", "ir_k5_se", "skip"],
            "expansions": [1, 3],
            "min_depth": 1,
        },
        {"depth": 1, "stride": 2, "channels": [16, 24], "ops": ["ir_k3", "ir_k3_sehsig_hs"], "expansions": [2]},
        {"name": "head", "depth": 1, "stride": 1, "channels": [32], "ops": ["ir_pool_hs"], "expansions": [2]},
    ],
}

for _data in (FBNETV2, CIFAR, TINY, CIFAR_WIDE, CIFAR_WIDE_TIED):
    register_space(SearchSpace.from_dict(_data, f"preset {_data['name']}"))
