"""The search protocol's p-values and arms (benchmarks/protocol/) against scipy's own tests and brute force."""

from __future__ import annotations

import itertools
import statistics

import numpy as np
import pytest
from scipy import stats

from conftest import benchmark_module

with benchmark_module("protocol.arms") as arms, benchmark_module("protocol.stats") as protocol_stats:
    pass  # imported once; their functions keep working after the path is restored


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([0.7732, 0.7835, 0.7816], [0.7675, 0.7532, 0.755, 0.7738, 0.7756, 0.7913, 0.7805, 0.7636]),
        ([0.4942, 0.5193, 0.4726], [0.4905, 0.4898, 0.4645, 0.4704, 0.4508]),
        ([1.0, 2.0, 3.0], [10.0, 11.0, 12.0, 13.0]),
    ],
)
def test_welch_and_exact_permutation_p_values_match_scipy(a: list[float], b: list[float]) -> None:
    welch, perm = protocol_stats.welch_and_permutation(a, b)
    assert welch == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)

    def abs_diff(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
        return np.abs(np.mean(x, axis=axis) - np.mean(y, axis=axis))

    # two-sided as the protocol defines it: the share of all splits whose |difference of means| is at
    # least the observed one (scipy's own "two-sided" doubles the smaller one-sided p instead, which
    # differs when the groups' sizes differ)
    exact = stats.permutation_test((a, b), abs_diff, permutation_type="independent", alternative="greater",
                                   n_resamples=np.inf, vectorized=True)  # fmt: skip
    assert perm == pytest.approx(exact.pvalue, rel=1e-9)
    assert 0 < perm <= 1 and statistics.fmean(a) != statistics.fmean(b)


def _is_mobilenet_v2_style(space, arch) -> bool:  # type: ignore[no-untyped-def]
    """Independent check of the family: ir_k3 at one expansion, skips only at the ends of stages, and a
    channel choice index that never falls from layer to layer and steps up at most once, by one."""
    expansions, steps, drops = set(), [], {}
    for layer, o in zip(space.layers, arch.blocks, strict=True):
        if o.op == "skip":
            drops[layer.stage] = drops.get(layer.stage, 0) + 1
        elif "ir_k3" in layer.ops:
            if o.op != "ir_k3":
                return False
            if len(layer.expansions) > 1:
                expansions.add(o.e)
        if len(layer.channels) > 1:
            steps.append(layer.channels.index(o.c))
    for stage in drops:  # skipped layers are the last ones of their stage
        ops = [o.op for layer, o in zip(space.layers, arch.blocks, strict=True) if layer.stage == stage]
        if ops[len(ops) - drops[stage] :] != ["skip"] * drops[stage]:
            return False
    ups = [b - a for a, b in itertools.pairwise(steps)]
    return len(expansions) <= 1 and all(u >= 0 for u in ups) and sum(ups) <= 1


def test_mobilenet_v2_style_lies_in_the_band_and_fills_gaps_that_uniform_widths_leave() -> None:
    from hwnas.search.cost import make_cost
    from hwnas.spaces import get_space

    space = get_space("cifar")
    cost = make_cost("flops", space, None)
    lo, hi = cost.smallest(space)[1], cost.largest(space)[1]
    found = 0
    for i in range(1, 41):
        b = lo + (hi - lo) * i / 40
        arch = arms.mobilenet_v2_style(space, cost, 0.9 * b, b)
        if arch is None:
            continue
        found += 1
        assert 0.9 * b <= cost.of(arch) <= b
        assert _is_mobilenet_v2_style(space, arch), arch.to_str()
    assert found >= 30  # most bands of the range hold one
    # a band that holds only a network with the last stage wide and the others narrow (full depth, the
    # largest resolution and expansion): uniform widths alone have no member there
    from hwnas.spaces.space import Option

    last = max(layer.stage for layer in space.layers if len(layer.channels) > 1)
    options = [
        Option("ir_k3", layer.channels[-1 if layer.stage == last else 0], max(layer.expansions))
        if "ir_k3" in layer.ops
        else layer.options[0]
        for layer in space.layers
    ]
    staged = space.architecture(max(space.resolutions), options)
    c = cost.of(staged)
    arch = arms.mobilenet_v2_style(space, cost, c, c)
    assert arch is not None and cost.of(arch) == c
    widths = {layer.channels.index(o.c) for layer, o in zip(space.layers, arch.blocks, strict=True)
              if len(layer.channels) > 1}  # fmt: skip
    assert widths == {0, 1}


def test_spread_puts_one_network_in_every_slice_even_where_sampling_finds_none() -> None:
    import random

    from hwnas.search import evolution
    from hwnas.search.cost import make_cost
    from hwnas.spaces import get_space

    space = get_space("cifar")
    cost = make_cost("flops", space, None)
    lo, hi = cost.smallest(space)[1], cost.largest(space)[1]
    n, tries = 30, 200
    edges = [lo + (hi - lo) * i / n for i in range(n + 1)]
    sampled = [evolution.random_in_band(space, cost, edges[i], edges[i + 1], 1, random.Random(5 + i), tries=tries)
               for i in range(n)]  # fmt: skip
    assert sum(not got for got in sampled) >= 2  # the ends of the range: sampling alone leaves slices empty
    archs = arms.spread(space, cost, n, seed=5, tries=tries)
    assert len(archs) == n
    for i, a in enumerate(archs):
        assert edges[i] <= cost.of(a) <= edges[i + 1] * (1 + 1e-9), (i, cost.of(a))
        if sampled[i]:
            assert a == sampled[i][0]  # a slice that sampling fills keeps the uniform draw


def test_walk_into_reaches_a_narrow_interval_and_refuses_an_impossible_one() -> None:
    import random

    from hwnas.search.cost import make_cost
    from hwnas.spaces import get_space

    space = get_space("cifar")
    cost = make_cost("flops", space, None)
    (cheapest, lo), hi = cost.smallest(space), cost.largest(space)[1]
    target = lo + 0.77 * (hi - lo)
    a = arms.walk_into(space, cost, target * 0.995, target, cheapest, random.Random(0))
    assert target * 0.995 <= cost.of(a) <= target
    with pytest.raises(RuntimeError, match="no architecture found"):
        arms.walk_into(space, cost, hi * 1.5, hi * 2, cheapest, random.Random(0), steps=200)


def _tau_by_pairs(x: list[float], y: list[float]) -> float:
    """Kendall's tau-a by counting pairs (no ties in the data below)."""
    s = sum((x[i] - x[j]) * (y[i] - y[j]) > 0 for i, j in itertools.combinations(range(len(x)), 2))
    d = sum((x[i] - x[j]) * (y[i] - y[j]) < 0 for i, j in itertools.combinations(range(len(x)), 2))
    return (s - d) / (len(x) * (len(x) - 1) / 2)


def test_ranking_rows_put_the_largest_disagreement_first_and_bound_tau_leaving_one_out() -> None:
    import random

    from hwnas.search import evolution
    from hwnas.search.cost import make_cost
    from hwnas.spaces import get_space

    space = get_space("tiny")
    cost = make_cost("flops", space, None)
    lo, hi = cost.smallest(space)[1], cost.largest(space)[1]
    archs = evolution.random_in_band(space, cost, lo, hi, 6, random.Random(3))
    alone = [0.40, 0.42, 0.45, 0.47, 0.50, 0.53]
    supernet = [0.30, 0.31, 0.34, 0.36, 0.38, 0.25]  # the last network: best alone, worst through the supernet
    pairs = [(s, a, float(i)) for i, (s, a) in enumerate(zip(supernet, alone, strict=True))]
    rows, lo_tau, hi_tau = protocol_stats.ranking_rows(archs, pairs)
    assert len(rows) == 6
    assert rows[0].startswith("| 5 |") and rows[0].endswith("| 1 | 6 |")  # rank 1 through the supernet, 6 alone
    loo = [_tau_by_pairs([s for j, s in enumerate(supernet) if j != i], [a for j, a in enumerate(alone) if j != i])
           for i in range(6)]  # fmt: skip
    assert (lo_tau, hi_tau) == pytest.approx((min(loo), max(loo)))
    assert hi_tau == pytest.approx(1.0)  # without the outlier the order agrees
    assert f"| {archs[5].resolution} | {sum(b.op.startswith('skip') for b in archs[5].blocks)} |" in rows[0]


def test_the_tau_ceiling_falls_as_the_retrain_noise_grows() -> None:
    standalone = [0.40 + 0.01 * i for i in range(12)]  # one point apart
    assert protocol_stats.tau_ceiling(standalone, 0.0, draws=50) == pytest.approx((1.0, 1.0, 1.0))  # no noise: perfect
    small = protocol_stats.tau_ceiling(standalone, 0.002, draws=400)
    large = protocol_stats.tau_ceiling(standalone, 0.05, draws=400)
    assert 0.85 < small[1] <= 1.0 and large[1] < small[1] - 0.3
    assert abs(protocol_stats.tau_ceiling(standalone, 10.0, draws=400)[1]) < 0.15  # noise swamps the order
    assert small[0] <= small[1] <= small[2]


def test_relative_iqr_matches_numpys_quartiles_over_the_median() -> None:
    """The noise floor training_layout.py and supernet_cost.py print: numpy's exclusive quartiles
    (the 'weibull' method, statistics.quantiles' default) computed independently."""
    from conftest import benchmark_module

    with benchmark_module("noise") as noise:
        for values in ([3.0, 1.0, 2.0, 10.0], [5.0, 5.2, 4.9, 5.1, 7.5, 5.0, 5.05], list(np.linspace(1, 2, 31))):
            q1, med, q3 = np.percentile(values, [25, 50, 75], method="weibull")
            assert noise.relative_iqr(values) == pytest.approx((q3 - q1) / med)
        assert noise.relative_iqr([4.0] * 9) == 0.0  # identical timings: no spread
