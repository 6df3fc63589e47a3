"""Stages with one channel decision (``tied_channels``): every part of the search keeps a stage's
width, checked against brute force over a space small enough to enumerate."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch
from test_supernet import _randomize_bn

from hwnas.core.errors import SpecError
from hwnas.search.cost import SearchCost, discrete_cost, expected_cost
from hwnas.search.derive import derive
from hwnas.search.evolution import crossover, mutate
from hwnas.search.select import best_in_band, log_ratio_scores, prior
from hwnas.search.slicing import slice_child
from hwnas.search.supernet import SuperNet
from hwnas.spaces import get_space
from hwnas.spaces.arch import Architecture
from hwnas.spaces.kernels import Kernel, arch_kernels
from hwnas.spaces.space import Option, SearchSpace

TIED = {
    "name": "tied-test",
    "resolutions": [16, 24],
    "num_classes": 4,
    "stages": [
        {"name": "stem", "depth": 1, "stride": 2, "channels": [8], "ops": ["conv_k3"]},
        {"depth": 3, "stride": 2, "channels": [8, 16], "ops": ["ir_k3", "skip"], "expansions": [1, 3],
         "min_depth": 1, "tied_channels": True},
        {"depth": 2, "stride": 1, "channels": [16, 24], "ops": ["ir_k3", "ir_k5_se"], "expansions": [2],
         "tied_channels": True},
        {"name": "head", "depth": 1, "stride": 1, "channels": [32], "ops": ["ir_pool_hs"], "expansions": [2]},
    ],
}  # fmt: skip


def _space() -> SearchSpace:
    return SearchSpace.from_dict(TIED, "tied-test")


def _all(space: SearchSpace) -> list[Architecture]:
    """Every architecture of the space: all per-layer option combinations, those with one width per stage."""
    out = []
    for r in space.resolutions:
        for options in itertools.product(*(layer.options for layer in space.layers)):
            widths: dict[int, set[int]] = {}
            for layer, o in zip(space.layers, options, strict=True):
                widths.setdefault(layer.stage, set()).add(o.c)
            if all(len(w) == 1 for w in widths.values()):
                out.append(space.architecture(r, list(options)))
    return out


def _latency(k: Kernel) -> float:
    """A made-up kernel cost that is not proportional to FLOPs (so no shortcut can stand in for it)."""
    return 0.01 + k.flops / 3e6 + 0.02 * math.sqrt(k.params) + 0.003 * (hash(k) % 7)


def test_size_and_membership_are_those_of_one_width_per_stage() -> None:
    space = _space()
    every = _all(space)
    assert space.size() == len(every) == 2 * (4 * 3 * 3) * (4 * 2)
    assert all(space.contains(a) for a in every)
    a = every[0]
    blocks = list(a.blocks)
    blocks[2] = blocks[2].__class__(blocks[2].op, 16 if blocks[2].c == 8 else 8, blocks[2].s, blocks[2].e)
    assert not space.contains(Architecture(tuple(blocks), a.resolution, a.num_classes, a.in_channels))
    rng = random.Random(0)
    assert all(space.contains(space.sample(rng)) for _ in range(200))
    # without the tie the same stages allow more: the tie is what removes them
    untied = SearchSpace.from_dict({**TIED, "stages": [{k: v for k, v in st.items() if k != "tied_channels"}
                                                       for st in TIED["stages"]]})  # fmt: skip
    assert untied.size() > space.size()


def test_kernels_and_extremes_match_brute_force() -> None:
    space = _space()
    every = _all(space)
    assert set(space.kernels()) == {k for a in every for k in arch_kernels(a)}
    costs = [discrete_cost(a, _latency) for a in every]
    assert discrete_cost(space.extreme(_latency), _latency) == pytest.approx(min(costs))
    assert discrete_cost(space.extreme(_latency, largest=True), _latency) == pytest.approx(max(costs))


def test_the_file_form_keeps_the_tie_and_rejects_a_non_boolean() -> None:
    space = _space()
    again = SearchSpace.from_dict(space.to_dict(), "again")
    assert [layer.tied for layer in again.layers] == [layer.tied for layer in space.layers]
    assert [layer.tied for layer in space.layers] == [False, False, True, True, False, True, False]
    bad = {**TIED, "stages": [*TIED["stages"][:1], {**TIED["stages"][1], "tied_channels": "yes"}, *TIED["stages"][2:]]}
    with pytest.raises(SpecError, match=r"stages\[1\]\.tied_channels.*expected true or false"):
        SearchSpace.from_dict(bad, "bad")


def _trained_like(net: SuperNet, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.copy_(torch.randn(a.shape, generator=g))


def test_expected_cost_is_exact_under_one_width_per_stage() -> None:
    space = _space()
    net = SuperNet(space).double()
    _trained_like(net, 3)
    with torch.no_grad():
        res, probs = net.choice_probs()
    # the probability of an architecture, factor by factor: a tied layer has no width factor
    brute = 0.0
    for a in _all(space):
        p = float(net.res_factor.probs()[space.resolutions.index(a.resolution)])
        for layer, sl, b in zip(space.layers, net.super_layers(), a.blocks, strict=True):
            p *= float(sl.op_factor.probs()[list(layer.ops).index(b.op)])
            if b.op != "skip" and len(sl.expansions) > 1:
                p *= float(sl.e_factor.probs()[sl.expansions.index(b.e)])
            if not layer.tied:
                p *= float(sl.c_factor.probs()[layer.channels.index(b.c)])
        brute += p * discrete_cost(a, _latency)
    got = float(expected_cost(space, _latency, dtype=torch.float64)(res, probs))
    assert got == pytest.approx(brute, rel=1e-9)


def _searched(space: SearchSpace, seed: int) -> tuple[SuperNet, torch.Tensor, list[torch.Tensor]]:
    """A supernet with random logits, as a search leaves them, and its choice probabilities."""
    net = SuperNet(space)
    _trained_like(net, seed)
    with torch.no_grad():
        res, probs = net.choice_probs()
    return net, res, probs


def test_selection_is_the_best_scoring_architecture_in_the_band() -> None:
    space = _space()
    cost = SearchCost("latency", "ms", _latency)
    _, res, probs = _searched(space, 5)
    scores = log_ratio_scores(space, res, probs)
    every = _all(space)
    costs = sorted(cost.of(a) for a in every)
    lo, hi = costs[len(costs) // 3], costs[len(costs) // 2]
    in_band = [a for a in every if lo <= cost.of(a) <= hi]
    best = max(scores.of(space, a) for a in in_band)
    got = best_in_band(space, cost, scores, lo, hi, buckets=20_000)
    assert got is not None and space.contains(got)
    assert scores.of(space, got) == pytest.approx(best)
    # the uniform prior of a tied layer has no width factor: its probabilities sum to 1 over one width
    for layer in space.layers:
        one_width = [p for o, p in zip(layer.options, prior(layer), strict=True) if o.c == layer.channels[0]]
        assert sum(one_width if layer.tied else prior(layer)) == pytest.approx(1.0)


def test_the_greedy_derivation_and_evolution_stay_in_the_space() -> None:
    space = _space()
    cost = SearchCost("latency", "ms", _latency)
    net, res, probs = _searched(space, 7)
    costs = sorted(cost.of(a) for a in _all(space))
    for budget in costs[5], costs[len(costs) // 2], costs[-1]:
        d = derive(space, cost, budget, res, probs)
        assert space.contains(d.arch) and cost.of(d.arch) <= budget * (1 + 1e-9)
    assert space.contains(net.derive())
    rng = random.Random(1)
    archs = [space.sample(rng) for _ in range(20)]
    widths_changed = 0
    for a, b in itertools.pairwise(archs):
        m = mutate(space, a, rng)
        assert space.contains(m) and space.contains(crossover(space, a, b, rng))
        widths_changed += [x.c for x in m.blocks] != [x.c for x in a.blocks]
    assert widths_changed > 0  # a mutation of a stage's first layer moves the whole stage


def test_scores_count_a_stages_width_once() -> None:
    """Two networks that differ only in one stage's width differ in score by that width's log-ratio
    at the stage's first layer alone: the tied layers score the same at every width."""
    space = _space()
    net, res, probs = _searched(space, 9)
    scores = log_ratio_scores(space, res, probs)
    leader = next(i for i, layer in enumerate(space.layers) if len(layer.channels) > 1 and not layer.tied)
    a = next(x for x in _all(space) if x.blocks[leader].c == 8 and x.blocks[leader + 1].op != "skip")
    options = [Option(b.op, b.c, b.e) for b in a.blocks]
    options[leader] = Option(options[leader].op, 16, options[leader].e)
    b = space.architecture(a.resolution, space.tie(options))
    assert space.contains(b) and b.blocks[leader + 1].c == 16
    p_c = net.super_layers()[leader].c_factor.probs().detach()
    assert scores.of(space, b) - scores.of(space, a) == pytest.approx(math.log(float(p_c[1]) / float(p_c[0])))


def test_a_tied_child_through_the_supernet_equals_the_sliced_child_with_its_residuals() -> None:
    torch.manual_seed(0)
    for space in (_space(), get_space("cifar-wide-tied")):
        net = SuperNet(space)
        _randomize_bn(net, 1)
        net.eval()
        rng = random.Random(0)
        for arch in [space.smallest(), space.largest(), *(space.sample(rng) for _ in range(4))]:
            child = slice_child(net, arch).eval()
            x = torch.randn(2, 3, arch.resolution, arch.resolution)
            with torch.no_grad():
                torch.testing.assert_close(net(x, arch=arch), child(x), rtol=1e-4, atol=1e-5)


def test_a_tied_layers_width_gradient_reaches_its_stages_first_layer() -> None:
    space = _space()
    net = SuperNet(space)
    layers = net.super_layers()
    assert all(sl.c_factor.alpha.numel() == 1 for sl in layers if sl.tied)
    x = torch.randn(4, 3, 24, 24)
    net(x, tau=1.0, resolution=24).sum().backward()
    leaders = [sl for sl in layers if not sl.tied and len(sl.layer.channels) > 1]
    assert leaders and all(sl.c_factor.alpha.grad is not None and sl.c_factor.alpha.grad.abs().sum() > 0
                           for sl in leaders)  # fmt: skip


def test_a_tied_layers_residual_is_whole_under_soft_channel_weights() -> None:
    """With its block's output zeroed, a tied IR layer passes its input through with weight 1, whatever
    the soft width weights: the residual exists for every width (an untied layer's is weighted by
    the chance that in and out widths match, which would be 0.3^2 + 0.7^2 here)."""
    torch.manual_seed(0)
    space = _space()
    net = SuperNet(space)
    layers = net.super_layers()
    i = next(k for k, sl in enumerate(layers) if sl.tied and sl.skip_index is None)
    tied = layers[i]
    with torch.no_grad():
        tied.pwl_bn.weight.zero_()
        tied.pwl_bn.bias.zero_()
    net.eval()
    x = torch.randn(3, layers[i - 1].cout, 6, 6)
    q = torch.tensor([0.3, 0.7])  # soft weights over the stage's two widths
    mask = (q @ tied.out_masks).view(1, -1, 1, 1)
    x = x * mask  # the previous layer's output is masked by its expected width
    g = tied.sample(1.0)
    with torch.no_grad():
        y, q_out = tied(x, q, g)
    torch.testing.assert_close(q_out, q)
    torch.testing.assert_close(y, x * mask)  # every layer masks its output by its (here: the same) width


def test_a_search_over_a_tied_space_trains_children_of_the_space_and_logs_each_width_once(tmp_path) -> None:
    import pandas as pd

    from hwnas.search.loop import Search, SearchConfig

    path = tmp_path / "tied.yaml"
    path.write_text(_space().to_yaml())
    space = SearchSpace.load(path)
    cfg = SearchConfig(space=str(path), budget=2.0, cost="flops", data="synthetic:n=320,size=24", epochs=2,
                       warmup_epochs=1, batch_size=32, sandwich=True, evolution=4)  # fmt: skip
    search = Search(cfg, tmp_path / "run", progress=False)
    _trained_like(search.net, 11)
    gen = torch.Generator().manual_seed(0)
    children = [search._sample_child(gen) for _ in range(60)]
    assert all(space.contains(c) for c in children)
    leader = next(i for i, layer in enumerate(space.layers) if len(layer.channels) > 1)
    assert {c.blocks[leader].c for c in children} == set(space.layers[leader].channels)
    result = search.run()
    assert space.contains(result.derivation.arch)
    probs = pd.read_csv(tmp_path / "run" / "probs.csv")
    width_rows = probs[(probs.factor == "channels") & (probs.epoch == 2)]
    assert sorted(set(width_rows.layer)) == [i for i, layer in enumerate(space.layers)
                                              if len(layer.channels) > 1 and not layer.tied]  # fmt: skip
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    tied = [i for i, layer in enumerate(space.layers) if layer.tied]
    assert all(0.0 <= metrics[f"entropy_layer_{i}"].iloc[-1] <= 1.0 + 1e-9 for i in tied)
