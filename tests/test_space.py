from __future__ import annotations

import itertools
import json
import random

import pytest
import yaml

from hwnas.core.errors import HwnasError, SpecError
from hwnas.spaces import Architecture, get_space, list_spaces, register_space
from hwnas.spaces.kernels import arch_flops, arch_kernels
from hwnas.spaces.ops import parse_op
from hwnas.spaces.presets import TINY
from hwnas.spaces.space import SearchSpace


def _brute_force(space: SearchSpace) -> list[Architecture]:
    """Every architecture of ``space``, enumerated from the stage lists (not from Layer.options)."""
    per_layer = []
    for st in space.stages:
        for j in range(st.depth):
            stride = st.stride if j == 0 else 1
            choices = set()
            for op in st.ops:
                if op == "skip" and j < st.min_depth:
                    continue
                es = st.expansions if parse_op(op).uses_expansion else (1.0,)
                choices |= {(op, c, stride, e) for c in st.channels for e in es}
            per_layer.append(sorted(choices))
    out = []
    for res in space.resolutions:
        for combo in itertools.product(*per_layer):
            d = {
                "resolution": res,
                "num_classes": space.num_classes,
                "blocks": [
                    {"op": op, "c": c, "s": s, **({"e": e} if parse_op(op).uses_expansion else {})}
                    for op, c, s, e in combo
                ],
            }
            out.append(Architecture.from_dict(d))
    return out


@pytest.fixture(scope="module")
def tiny_all() -> list[Architecture]:
    return _brute_force(get_space("tiny"))


def test_size_counts_distinct_architectures(tiny_all: list[Architecture]) -> None:
    space = get_space("tiny")
    assert len(set(tiny_all)) == len(tiny_all) == space.size() == 640
    assert all(space.contains(a) for a in tiny_all)


def test_kernels_are_exactly_the_union_over_all_architectures(tiny_all: list[Architecture]) -> None:
    union = {k for a in tiny_all for k in arch_kernels(a)}
    kernels = get_space("tiny").kernels()
    assert len(kernels) == len(set(kernels))
    assert set(kernels) == union


def test_smallest_and_largest_are_the_flop_extremes(tiny_all: list[Architecture]) -> None:
    space = get_space("tiny")
    flops = [arch_flops(a) for a in tiny_all]
    assert arch_flops(space.smallest()) == min(flops)
    assert arch_flops(space.largest()) == max(flops)
    assert space.contains(space.smallest()) and space.contains(space.largest())


def test_extremes_exact_where_greedy_fails() -> None:
    """A narrower layer can make the next skip a conv: the exact search must see past it."""
    space = SearchSpace.from_dict(
        {
            "name": "trap",
            "resolutions": [8],
            "num_classes": 2,
            "stages": [
                {"depth": 1, "stride": 1, "channels": [24], "ops": ["conv_k3"]},
                {"depth": 1, "stride": 1, "channels": [16, 24], "ops": ["skip"], "min_depth": 0},
                {"depth": 1, "stride": 1, "channels": [24], "ops": ["skip"], "min_depth": 0},
            ],
        }
    )
    archs = _brute_force(space)
    assert arch_flops(space.smallest()) == min(map(arch_flops, archs))
    assert space.smallest().blocks[1].c == 24  # identity twice beats two 1x1 convs


@pytest.mark.parametrize("name", ["fbnetv2", "cifar", "tiny"])
def test_presets_sample_inside_themselves_and_seed_is_deterministic(name: str) -> None:
    space = get_space(name)
    a, b = space.sample(7), space.sample(7)
    assert a == b
    assert any(space.sample(s) != a for s in range(1, 5))
    for s in range(20):
        assert space.contains(space.sample(s))
    sizes = {"fbnetv2": 3.58e27, "cifar": 8.6e8, "tiny": 640}
    assert space.size() == pytest.approx(sizes[name], rel=0.01)
    # a kernel list covers the kernels of samples, of the extremes, at every resolution
    kernels = set(space.kernels())
    rng = random.Random(0)
    for arch in [space.smallest(), space.largest(), *(space.sample(rng) for _ in range(10))]:
        assert set(arch_kernels(arch)) <= kernels


def test_size_formula_on_a_preset() -> None:
    """Size from the stage lists: per layer (ops x expansions + skip) x channels."""
    space = get_space("cifar")
    expected = len(space.resolutions)
    for st in space.stages:
        per_channel = sum(len(st.expansions) if parse_op(o).uses_expansion else 1 for o in st.ops if o != "skip")
        fixed = st.min_depth if "skip" in st.ops else st.depth  # layers that may not skip
        expected *= (per_channel * len(st.channels)) ** fixed
        expected *= ((per_channel + 1) * len(st.channels)) ** (st.depth - fixed)
    assert space.size() == expected == 2 * (16 * 18) * (16 * 18 * 18) * (16 * 18)  # = 859,963,392


@pytest.mark.parametrize("name", ["fbnetv2", "cifar", "tiny"])
def test_yaml_and_json_files_load_to_the_same_space(name: str, tmp_path) -> None:
    space = get_space(name)
    y = tmp_path / "s.yaml"
    y.write_text(space.to_yaml())
    j = tmp_path / "s.json"
    j.write_text(json.dumps(space.to_dict()))
    for path in (y, j):
        loaded = get_space(str(path))
        assert loaded == space
        assert loaded.kernels() == space.kernels()


def test_registry_refuses_duplicates_and_lists_names() -> None:
    assert list_spaces()[:3] == ["fbnetv2", "cifar", "tiny"]
    with pytest.raises(ValueError, match="already registered"):
        register_space(SearchSpace.from_dict(TINY))
    with pytest.raises(HwnasError, match="fbnetv2, cifar, tiny"):
        get_space("nope")


def _tiny_with(**stage_changes) -> dict:
    d = yaml.safe_load(yaml.safe_dump(TINY))
    d["stages"][1].update(stage_changes)
    return d


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        (_tiny_with(ops=["ir_k9"]), "stages[1].ops[0]", "allowed"),
        (_tiny_with(channels=[0, 8]), "stages[1].channels[0]", ">= 1"),
        (_tiny_with(channels=[8, 8]), "stages[1].channels", "distinct"),
        (_tiny_with(stride=3), "stages[1].stride", "allowed: 1, 2"),
        (_tiny_with(depth="two"), "stages[1].depth", "integer"),
        (_tiny_with(min_depth=5), "stages[1].min_depth", "exceeds"),
        (_tiny_with(expansions=None), "stages[1].expansions", "list"),
        (_tiny_with(kernel=3), "stages[1].kernel", "unknown field"),
        ({**TINY, "resolutions": []}, "resolutions", "non-empty list"),
        ({k: v for k, v in TINY.items() if k != "num_classes"}, "num_classes", "missing"),
        ({**TINY, "format": "hwnas.arch"}, "format", "not a search space"),
    ],
)
def test_space_errors_name_the_field(data: dict, field: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        SearchSpace.from_dict(data, "s.yaml")
    assert info.value.field == field
    assert words in info.value.problem


def test_missing_expansions_for_ir_ops() -> None:
    d = _tiny_with()
    del d["stages"][1]["expansions"]
    with pytest.raises(SpecError, match=r"stages\[1\]\.expansions: missing required field"):
        SearchSpace.from_dict(d, "s.yaml")


def test_the_wide_cifar_space_searches_channels_and_depth() -> None:
    """At least 6 out-channel choices in every searchable stage, searchable depth, a wide cost range."""
    from hwnas.spaces.kernels import arch_flops

    space = get_space("cifar-wide")
    searchable = [st for st in space.stages if len(st.ops) > 1]
    assert len(searchable) >= 3
    for st in searchable:
        assert len(st.channels) >= 6 and "skip" in st.ops and st.min_depth < st.depth
    assert arch_flops(space.largest()) >= 5 * arch_flops(space.smallest())
    assert space.num_classes == 10 and max(space.resolutions) == 32
