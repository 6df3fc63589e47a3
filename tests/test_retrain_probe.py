"""benchmarks/retrain_probe.py's one-change variants, against variants written out by hand."""

from __future__ import annotations

import pytest

from hwnas.spaces import get_space
from hwnas.spaces.arch import Architecture

from conftest import benchmark_module

MBV2 = (
    "r32 conv_k3_c16_s1_hs ir_k3_e1_c16_s1 ir_k3_e6_c32_s2 ir_k3_e6_c32_s1 skip_c32_s1 ir_k3_e6_c64_s2 "
    "ir_k3_e6_c64_s1 ir_k3_e6_c64_s1 skip_c64_s1 ir_k3_e6_c128_s2 ir_k3_e6_c128_s1 skip_c128_s1 "
    "ir_pool_e4_c512_s1_hs"
)
MIXED = (
    "r24 conv_k3_c16_s1_hs ir_k3_e1_c16_s1 ir_k5_e6_c32_s2_sehsig ir_k3_e6_c24_s1_sehsig skip_c24_s1 "
    "ir_k5_e6_c48_s2_sehsig ir_k5_e2_c64_s1 ir_k3_e6_c48_s1_sehsig skip_c48_s1 ir_k3_e6_c96_s2_sehsig "
    "ir_k3_e6_c128_s1_sehsig ir_k3_e4_c128_s1 ir_pool_e4_c512_s1_hs"
)


@pytest.fixture(scope="module")
def probe():  # type: ignore[no-untyped-def]
    with benchmark_module("retrain_probe") as module:
        yield module


def _strs(probe, text: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    space = get_space("cifar-wide")
    return {k: v.to_str() for k, v in probe.variants(space, Architecture.from_str(text, 10, 3)).items()}


def test_variants_of_a_network_without_se(probe) -> None:  # type: ignore[no-untyped-def]
    got = _strs(probe, MBV2)
    # written by hand: SE on the searchable IR blocks only (not the stem, the fixed first IR block, skips, head)
    se = (
        "r32 conv_k3_c16_s1_hs ir_k3_e1_c16_s1 ir_k3_e6_c32_s2_sehsig ir_k3_e6_c32_s1_sehsig skip_c32_s1 "
        "ir_k3_e6_c64_s2_sehsig ir_k3_e6_c64_s1_sehsig ir_k3_e6_c64_s1_sehsig skip_c64_s1 ir_k3_e6_c128_s2_sehsig "
        "ir_k3_e6_c128_s1_sehsig skip_c128_s1 ir_pool_e4_c512_s1_hs"
    )
    # "no SE" and the MobileNetV2-style blocks are the network itself, so they are left out
    assert got == {"as given": MBV2, "SE on every searchable IR block": se, "at 24 px": "r24" + MBV2[3:]}


def test_variants_of_a_mixed_network(probe) -> None:  # type: ignore[no-untyped-def]
    got = _strs(probe, MIXED)
    assert got["no SE"] == MIXED.replace("_sehsig", "")
    assert got["at 32 px"] == "r32" + MIXED[3:]
    assert (
        "SE on every searchable IR block" in got and got["SE on every searchable IR block"].count("_sehsig") == 8
    )  # the 8 searchable IR blocks
    uniform = (
        "r24 conv_k3_c16_s1_hs ir_k3_e1_c16_s1 ir_k3_e6_c32_s2 ir_k3_e6_c24_s1 skip_c24_s1 ir_k3_e6_c48_s2 "
        "ir_k3_e6_c64_s1 ir_k3_e6_c48_s1 skip_c48_s1 ir_k3_e6_c96_s2 ir_k3_e6_c128_s1 ir_k3_e6_c128_s1 "
        "ir_pool_e4_c512_s1_hs"
    )
    assert got["ir_k3, largest expansion, no SE, same widths"] == uniform
