"""Which kernels a block runs, against lists written out by hand from the block definitions (the LUT
keys are what a profile measures and a prediction sums, so a wrong activation, stride or a
missing residual add is a wrong latency)."""

from __future__ import annotations

import pytest

from hwnas.spaces.kernels import Kernel, block_kernels, classifier_kernels
from hwnas.spaces.ops import parse_op

# (op, cin, cout, stride, expansion, h, w) -> the keys, in execution order. Worked by hand:
# mid = make_divisible(cin * e, 8); SE width = make_divisible(mid / 4, 8); h, w of each kernel are
# its input size; a residual add only when cin == cout and stride 1; the projection conv has no act.
HAND = [
    (("conv_k3_hs", 3, 16, 2, 1, 32, 32), ["conv_i3_o16_k3_s2_h32_w32_hswish"]),
    (("conv_k5", 8, 16, 1, 1, 8, 8), ["conv_i8_o16_k5_s1_h8_w8_relu"]),
    (("skip", 16, 16, 1, 1, 8, 8), []),
    (("skip", 16, 24, 1, 1, 8, 8), ["conv_i16_o24_k1_s1_h8_w8_relu"]),
    (("skip", 16, 16, 2, 1, 8, 8), ["conv_i16_o16_k1_s2_h8_w8_relu"]),
    (
        ("ir_k3", 16, 24, 2, 6, 32, 32),
        ["conv_i16_o96_k1_s1_h32_w32_relu", "dwconv_c96_k3_s2_h32_w32_relu", "conv_i96_o24_k1_s1_h16_w16_none"],
    ),
    (
        ("ir_k5_sehsig_hs", 24, 24, 1, 4, 16, 16),
        [
            "conv_i24_o96_k1_s1_h16_w16_hswish",
            "dwconv_c96_k5_s1_h16_w16_hswish",
            "se_c96_m24_h16_w16_hswish_hsigmoid",
            "conv_i96_o24_k1_s1_h16_w16_none",
            "add_c24_h16_w16",
        ],
    ),
    # 72 / 4 = 18 rounds to 16, which loses more than 5%, so the SE width is bumped to 24
    (
        ("ir_k3_se", 24, 32, 1, 3, 16, 16),
        [  # stride 1 but a new width: no add
            "conv_i24_o72_k1_s1_h16_w16_relu",
            "dwconv_c72_k3_s1_h16_w16_relu",
            "se_c72_m24_h16_w16_relu_sigmoid",
            "conv_i72_o32_k1_s1_h16_w16_none",
        ],
    ),
    (
        ("ir_k3_hs", 32, 32, 2, 1, 16, 16),
        [  # e = 1: no expansion conv; stride 2: no add
            "dwconv_c32_k3_s2_h16_w16_hswish",
            "conv_i32_o32_k1_s1_h8_w8_none",
        ],
    ),
    (
        ("ir_pool_hs", 64, 512, 1, 4, 4, 4),
        ["conv_i64_o256_k1_s1_h4_w4_hswish", "gap_c256_h4_w4", "conv_i256_o512_k1_s1_h1_w1_hswish"],
    ),
    (
        ("ir_pool", 64, 512, 1, 4, 4, 4),
        ["conv_i64_o256_k1_s1_h4_w4_relu", "gap_c256_h4_w4", "conv_i256_o512_k1_s1_h1_w1_relu"],
    ),
]


@pytest.mark.parametrize(("block", "keys"), HAND, ids=[f"{b[0]}-{b[1]}-{b[2]}-s{b[3]}" for b, _ in HAND])
def test_block_kernels_are_the_hand_written_list(block: tuple, keys: list[str]) -> None:
    op, cin, cout, s, e, h, w = block
    got = block_kernels(parse_op(op), cin, cout, s, e, h, w)
    assert [k.key for k in got] == keys
    # and each key reads back as the same kernel
    assert [Kernel.from_key(k) for k in keys] == got


def test_unknown_ops_and_activations_are_named_in_the_error() -> None:
    with pytest.raises(ValueError, match=r"unknown kernel op 'pool'; known: conv, dwconv, se, add, gap, linear"):
        Kernel("pool", 8)
    with pytest.raises(ValueError, match=r"unknown activation 'gelu'; known: relu, hswish, none"):
        Kernel("conv", 8, 8, act="gelu")


def test_classifier_kernels_pool_the_whole_map_then_classify() -> None:
    keys = [k.key for k in classifier_kernels(1280, 7, 5, 1000)]
    assert keys == ["gap_c1280_h7_w5", "linear_i1280_o1000"]
