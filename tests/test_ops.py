from __future__ import annotations

import pytest

from hwnas.spaces.ops import OpType, format_number, make_divisible, mid_channels, parse_op, se_channels


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("conv_k3_hs", OpType("conv", 3, "", "hswish")),
        ("conv_k1", OpType("conv", 1, "", "relu")),
        ("ir_k5", OpType("ir", 5, "", "relu")),
        ("ir_k3_se", OpType("ir", 3, "sigmoid", "relu")),
        ("ir_k5_sehsig_hs", OpType("ir", 5, "hsigmoid", "hswish")),
        ("skip", OpType("skip")),
        ("ir_pool_hs", OpType("ir_pool", 1, "", "hswish")),
    ],
)
def test_parse_op_and_canonical_name(name: str, expected: OpType) -> None:
    t = parse_op(name)
    assert t == expected
    assert t.name == name


@pytest.mark.parametrize(
    "bad", ["ir_k7", "conv_k3_se", "ir_k3_hs_se", "skip_hs", "ir", "", "IR_K3", "ir_k3_sehsig_hs_x"]
)
def test_parse_op_rejects_with_the_grammar(bad: str) -> None:
    with pytest.raises(ValueError, match="allowed"):
        parse_op(bad)


def test_parse_op_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="got int"):
        parse_op(3)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (8 * 5.4566, 48),  # 43.65 -> nearest multiple 40 loses >5% -> 48
        (24 * 4.7912, 112),  # 114.99 -> 112 (within 5%)
        (24 * 5.3501, 128),  # 128.4 -> 128
        (80 * 1.7712, 144),  # 141.7 -> 144
        (144 * 6.8754, 992),  # 990.06 -> 992
        (8, 8),
        (3, 8),  # floor at the divisor
        (20, 24),  # a half rounds up
        (1344, 1344),
    ],
)
def test_make_divisible_matches_hand_computed(value: float, expected: int) -> None:
    assert make_divisible(value) == expected


def test_mid_and_se_channels() -> None:
    assert mid_channels(8, 1) == 8
    assert mid_channels(224, 6) == 1344
    assert se_channels(128) == 32
    assert se_channels(144) == 40  # int(36) -> 40 (nearest multiple of 8, halves up)
    assert se_channels(16) == 8  # 4 -> at least 8


@pytest.mark.parametrize(("x", "text"), [(6.0, "6"), (1, "1"), (5.4566, "5.4566"), (4.5, "4.5"), (0.1, "0.1")])
def test_format_number_round_trips(x: float, text: str) -> None:
    assert format_number(x) == text
    assert float(text) == x
