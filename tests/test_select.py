"""Selection inside a budget band: the dynamic program against brute force over the tiny space."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from hwnas.search.cost import make_cost
from hwnas.search.select import (
    Scores,
    best_in_band,
    best_per_resolution,
    log_ratio_scores,
    prior,
    uniform_scores,
)
from hwnas.spaces import get_space
from hwnas.spaces.kernels import arch_flops

SPACE = get_space("tiny")
COST = make_cost("flops", SPACE)


def _all_archs():
    for r in SPACE.resolutions:
        for options in itertools.product(*(layer.options for layer in SPACE.layers)):
            yield SPACE.architecture(r, list(options))


ALL = [(a, arch_flops(a) / 1e6) for a in _all_archs()]
COSTS = sorted({round(c, 9) for _, c in ALL})


def _gap_budget(quantile: float) -> float:
    """A budget halfway between two neighbouring distinct costs (so rounding cannot matter)."""
    i = max(1, int(quantile * (len(COSTS) - 1)))
    return (COSTS[i - 1] + COSTS[i]) / 2


def _random_scores(seed: int) -> Scores:
    g = torch.Generator().manual_seed(seed)
    res = torch.randn(len(SPACE.resolutions), generator=g).softmax(0)
    probs = [torch.randn(len(layer.options), generator=g).mul(2).softmax(0) for layer in SPACE.layers]
    return log_ratio_scores(SPACE, res, probs)


@pytest.mark.parametrize("quantile", [0.1, 0.45, 0.8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_program_finds_the_best_scoring_architecture_in_the_band(quantile: float, seed: int) -> None:
    hi = _gap_budget(quantile)
    lo = 0.9 * hi
    scores = _random_scores(seed)
    arch = best_in_band(SPACE, COST, scores, lo, hi, buckets=20000)
    feasible = [(scores.of(SPACE, a), a) for a, c in ALL if lo <= c <= hi]
    if not feasible:
        assert arch is None
        return
    best = max(s for s, _ in feasible)
    assert arch is not None
    assert lo <= COST.of(arch) <= hi
    assert scores.of(SPACE, arch) == pytest.approx(best, abs=1e-9)


def test_the_null_derivation_is_the_costliest_in_the_band() -> None:
    """With every score 0 the selection only breaks ties, towards the costlier architecture."""
    hi = _gap_budget(0.6)
    arch = best_in_band(SPACE, COST, uniform_scores(SPACE), 0.9 * hi, hi, buckets=20000)
    assert arch is not None
    assert COST.of(arch) == pytest.approx(max(c for _, c in ALL if c <= hi), rel=1e-9)


def test_an_empty_band_gives_none() -> None:
    lo, hi = COSTS[-1] * 1.5, COSTS[-1] * 2
    assert best_in_band(SPACE, COST, uniform_scores(SPACE), lo, hi) is None


def test_scores_are_zero_at_the_prior_and_make_skip_and_ir_comparable() -> None:
    """At uniform factors every option scores 0, although a skip has n_e times an IR option's mass."""
    from hwnas.search.supernet import SuperNet

    space = get_space("cifar")
    net = SuperNet(space)
    res, probs = net.choice_probs()
    scores = log_ratio_scores(space, res, probs)
    assert all(abs(v) < 1e-9 for v in scores.res)
    assert all(abs(v) < 1e-6 for layer in scores.options for v in layer)
    layer = next(layer for layer in space.layers if "skip" in layer.ops and len(layer.expansions) > 1)
    p0 = prior(layer)
    skip = next(j for j, o in enumerate(layer.options) if o.op == "skip")
    ir = next(j for j, o in enumerate(layer.options) if o.op != "skip")
    assert p0[skip] == pytest.approx(p0[ir] * len(layer.expansions))
    assert math.isclose(sum(p0), 1.0)


def test_several_candidates_are_distinct_in_the_band_and_best_first() -> None:
    from hwnas.search.select import top_in_band

    hi = _gap_budget(0.5)
    scores = _random_scores(4)
    found = top_in_band(SPACE, COST, scores, 0.9 * hi, hi, 4, buckets=20000)
    assert 1 < len(found) <= 4 and len(set(found)) == len(found)
    assert all(0.9 * hi <= COST.of(a) <= hi for a in found)
    values = [scores.of(SPACE, a) for a in found]
    assert values == sorted(values, reverse=True)
    assert values[0] == pytest.approx(max(scores.of(SPACE, a) for a, c in ALL if 0.9 * hi <= c <= hi))


def test_negative_calibration_terms_are_counted_not_clamped() -> None:
    """A calibrated LUT's per-network constant can be negative (ONNX Runtime's raw sum over-counts a
    small network): the band must still be found, exactly as brute force finds it."""
    import dataclasses

    hi0 = _gap_budget(0.5)
    shifted = dataclasses.replace(COST, offset=-0.8 * hi0)
    hi, lo = hi0 - 0.8 * hi0, 0.9 * (hi0 - 0.8 * hi0)
    scores = _random_scores(5)
    arch = best_in_band(SPACE, shifted, scores, lo, hi, buckets=20000)
    feasible = [(scores.of(SPACE, a), a) for a, c in ALL if lo <= c - 0.8 * hi0 <= hi]
    assert feasible and arch is not None
    assert lo <= shifted.of(arch) <= hi
    assert scores.of(SPACE, arch) == pytest.approx(max(v for v, _ in feasible), abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_best_at_each_resolution_matches_brute_force(seed: int) -> None:
    """The most probable networks can all share one resolution (the score has a term per layer and one
    for the resolution); selection also takes the best in the band at every other resolution."""
    hi = _gap_budget(0.45)
    lo = 0.9 * hi
    scores = _random_scores(seed)
    got = best_per_resolution(SPACE, COST, scores, lo, hi)
    for r in SPACE.resolutions:
        feasible = [(scores.of(SPACE, a), a) for a, c in ALL if lo <= c <= hi and a.resolution == r]
        if not feasible:
            assert r not in got
            continue
        assert got[r].resolution == r and lo <= COST.of(got[r]) <= hi
        assert scores.of(SPACE, got[r]) == pytest.approx(max(s for s, _ in feasible), abs=1e-9)
    assert len(got) > 1  # the band at this budget has networks at more than one resolution


def test_an_architectures_score_is_its_resolutions_plus_every_layers_option_score() -> None:
    """Scores.of against a hand sum (the selection tests compare the program with brute force through
    Scores.of itself, so a wrong sum there would go unseen)."""
    scores = _random_scores(7)
    for arch, _ in ALL[:: max(1, len(ALL) // 40)]:
        want = scores.res[SPACE.resolutions.index(arch.resolution)]
        for layer, block, option_scores in zip(SPACE.layers, arch.blocks, scores.options, strict=True):
            j = next(i for i, o in enumerate(layer.options) if (o.op, o.c, o.e) == (block.op, block.c, block.e))
            want += option_scores[j]
        assert scores.of(SPACE, arch) == pytest.approx(want, abs=1e-12)


def test_uniform_scores_are_all_zero() -> None:
    u = uniform_scores(SPACE)
    assert u.res == [0.0] * len(SPACE.resolutions)
    assert u.options == [[0.0] * len(layer.options) for layer in SPACE.layers]


# --- the derivation's repair, in cases whose answer is known by construction (mutation survivors) ---------
def _peaked(space, arch, mass: float = 0.9):
    """Choice probabilities with ``mass`` on ``arch``'s resolution and options, the rest spread evenly."""
    res = torch.full((len(space.resolutions),), (1 - mass) / max(1, len(space.resolutions) - 1), dtype=torch.float64)
    res[space.resolutions.index(arch.resolution)] = mass
    probs = []
    for layer, b in zip(space.layers, arch.blocks, strict=True):
        p = torch.full((len(layer.options),), (1 - mass) / max(1, len(layer.options) - 1), dtype=torch.float64)
        p[next(i for i, o in enumerate(layer.options) if (o.op, o.c, o.e) == (b.op, b.c, b.e))] = mass
        probs.append(p)
    return res, probs


def test_a_start_no_single_change_can_cheapen_restarts_from_the_cheapest_network() -> None:
    """A cost under which every single change of the start adds new, dear kernels: the repair cannot
    move, so the derivation must start again from the cheapest network (the space's exact minimum)."""
    from hwnas.search.cost import SearchCost
    from hwnas.search.derive import derive
    from hwnas.spaces.kernels import arch_kernels

    space = get_space("tiny")
    start = space.largest()
    own, cheap = set(arch_kernels(start)), set(arch_kernels(space.smallest()))
    # skipping layer 2 (tiny's one skippable layer) drops its kernels: make those free, so it saves nothing
    options = [layer.options[[(o.op, o.c, o.e) for o in layer.options].index((b.op, b.c, b.e))]
               for layer, b in zip(space.layers, start.blocks, strict=True)]  # fmt: skip
    options[2] = next(o for o in space.layers[2].options if o.op == "skip" and o.c == start.blocks[2].c)
    free = own - set(arch_kernels(space.architecture(start.resolution, options))) | cheap
    cost = SearchCost("toy", "u", lambda k: 0.0 if k in free else 1.0 if k in own else 10.0)
    lowest, lowest_cost = cost.smallest(space)
    assert cost.of(start) > lowest_cost + 1
    d = derive(space, cost, lowest_cost + 0.5, *_peaked(space, start))
    assert d.argmax == start and d.argmax_cost == cost.of(start)
    assert d.steps[0].startswith("repair: no single change helps; start from the cheapest architecture")
    assert d.arch == lowest and d.cost == lowest_cost


def test_the_first_repair_step_loses_the_least_probability_per_unit_saved() -> None:
    """The first repair move, found again by enumerating every single change of the start."""
    from hwnas.search.derive import derive

    space = get_space("tiny")
    cost = make_cost("flops", space)
    start = space.largest()
    res, probs = _peaked(space, start, mass=0.6)
    g = torch.Generator().manual_seed(3)
    probs = [(p + 0.3 * torch.rand(len(p), generator=g, dtype=torch.float64)).softmax(0) for p in probs]
    d = derive(space, cost, cost.of(start) * 0.97, res, probs)
    choice = [int(p.argmax()) for p in probs]
    now = cost.of(d.argmax)
    best = None
    for i, layer in enumerate(space.layers):
        for j in range(len(layer.options)):
            if j == choice[i]:
                continue
            ch = list(choice)
            ch[i] = j
            saved = now - cost.of(
                space.architecture(d.argmax.resolution, [space.layers[k].options[c] for k, c in enumerate(ch)])
            )
            if saved > 0:
                lost = math.log(float(probs[i][choice[i]])) - math.log(float(probs[i][j]))
                if best is None or lost / saved < best[0]:
                    best = (lost / saved, i)
    for r in range(len(space.resolutions)):  # a resolution change is a move too
        if space.resolutions[r] != d.argmax.resolution:
            arch = space.architecture(space.resolutions[r], [space.layers[k].options[c] for k, c in enumerate(choice)])
            saved = now - cost.of(arch)
            if saved > 0:
                lost = math.log(float(res[space.resolutions.index(d.argmax.resolution)])) - math.log(float(res[r]))
                if best is None or lost / saved < best[0]:
                    best = (lost / saved, -1)
    assert best is not None and d.steps and d.steps[0].startswith("repair: ")
    want = "resolution" if best[1] == -1 else f"layer {best[1]}:"
    assert d.steps[0].startswith(f"repair: {want}"), (d.steps[0], best)
    assert d.cost <= cost.of(start) * 0.97 * (1 + 1e-9)


@pytest.mark.parametrize("seed", [3, 4])
def test_the_top_of_the_band_is_distinct_in_band_and_in_score_order_beginning_with_the_best(seed: int) -> None:
    """top_in_band against brute force over all of tiny's architectures: every answer lies in the
    band (below as well as above), none twice, best first, and the first is the band's best."""
    from hwnas.search.select import top_in_band

    hi = _gap_budget(0.7)
    lo = _gap_budget(0.4)
    scores = _random_scores(seed)
    top = top_in_band(SPACE, COST, scores, lo, hi, k=12, buckets=20000)
    feasible = sorted((scores.of(SPACE, a) for a, c in ALL if lo <= c <= hi), reverse=True)
    cheaper = max(scores.of(SPACE, a) for a, c in ALL if c < lo)
    assert cheaper > feasible[0]  # the scenario: the band's floor excludes better-scoring networks
    assert 3 <= len(top) <= 12 and len(set(top)) == len(top)
    assert all(lo <= COST.of(a) <= hi for a in top)
    got = [scores.of(SPACE, a) for a in top]
    assert got == sorted(got, reverse=True)
    assert got[0] == pytest.approx(feasible[0], abs=1e-9)
    assert top_in_band(SPACE, COST, scores, lo, hi, k=2, buckets=20000) == top[:2]


def test_the_name_given_reaches_every_selected_architecture_and_none_is_invented() -> None:
    hi = _gap_budget(0.45)
    scores = _random_scores(1)
    assert best_in_band(SPACE, COST, scores, 0.9 * hi, hi, name="pick").name == "pick"  # type: ignore[union-attr]
    assert best_in_band(SPACE, COST, scores, 0.9 * hi, hi).name == ""  # type: ignore[union-attr]
    per_res = best_per_resolution(SPACE, COST, scores, 0.9 * hi, hi, name="res")
    assert per_res and {a.name for a in per_res.values()} == {"res"}
    assert {a.name for a in best_per_resolution(SPACE, COST, scores, 0.9 * hi, hi).values()} == {""}


def test_probabilities_of_the_wrong_length_are_refused_not_cut_short() -> None:
    res = torch.full((len(SPACE.resolutions),), 1 / len(SPACE.resolutions))
    probs = [torch.full((len(layer.options),), 1 / len(layer.options)) for layer in SPACE.layers]
    with pytest.raises(ValueError):  # one layer short: zip would silently leave the last layer unscored
        log_ratio_scores(SPACE, res, probs[:-1])
    probs[1] = probs[1][:-1]  # one option short: zip would silently drop the last option's score
    with pytest.raises(ValueError):
        log_ratio_scores(SPACE, res, probs)


# --- the derivation: the budget check, exact budgets, and the grow step (mutation survivors) -----------
def test_the_budget_check_refuses_zero_and_accepts_exactly_the_cheapest_cost() -> None:
    from hwnas.search.derive import InfeasibleBudget, check_budget

    with pytest.raises(InfeasibleBudget, match="the budget must be positive, got 0"):
        check_budget(SPACE, COST, 0.0)
    cheapest = COST.smallest(SPACE)[1]  # the cost's own arithmetic: brute force's sum may differ in the last bit
    assert cheapest == pytest.approx(min(c for _, c in ALL), rel=1e-12)
    assert check_budget(SPACE, COST, cheapest) == pytest.approx((cheapest, max(c for _, c in ALL)), rel=1e-12)
    with pytest.raises(InfeasibleBudget, match="below the cheapest architecture"):
        check_budget(SPACE, COST, cheapest * (1 - 1e-6))


def test_an_argmax_that_costs_exactly_the_budget_is_kept_as_it_is() -> None:
    from hwnas.search.derive import derive

    start = SPACE.architecture(
        SPACE.resolutions[-1], [layer.options[len(layer.options) // 2] for layer in SPACE.layers]
    )
    budget = COST.of(start)
    d = derive(SPACE, COST, budget, *_peaked(SPACE, start))
    assert d.argmax == start and d.arch == start and d.cost == budget and d.steps == []


def _option_text(arch, i: int) -> str:
    """Layer ``i``'s option as the derivation's steps name it: the block in the architecture's string
    without its stride (a step names the option, which has no stride of its own)."""
    import re

    return re.sub(r"_s\d+", "", arch.to_str().split()[1 + i])


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5, 6])
def test_the_first_grow_step_loses_the_least_probability_per_unit_added_and_names_it(seed: int) -> None:
    """The first grow move, found again by enumerating every single change of a cheap argmax that fits.
    Seed 6 makes the resolutions almost equally likely, so its first move is to a larger resolution."""
    from hwnas.search.derive import derive

    g = torch.Generator().manual_seed(seed)
    start = SPACE.architecture(SPACE.resolutions[0 if seed == 6 else seed % len(SPACE.resolutions)],
                               [layer.options[int(torch.randint(len(layer.options), (1,), generator=g))]
                                for layer in SPACE.layers])  # fmt: skip
    res, probs = _peaked(SPACE, start, mass=0.5)
    res = (res + 0.4 * torch.rand(len(res), generator=g, dtype=torch.float64)).softmax(0)
    if seed == 6:
        res = torch.tensor([1.0 + 1e-3 * (r == 0) for r in range(len(SPACE.resolutions))], dtype=torch.float64)
        res = res / res.sum()
        probs = _peaked(SPACE, start, mass=0.9)[1]  # and every layer's change dear
    probs = [(p + 0.4 * torch.rand(len(p), generator=g, dtype=torch.float64)).softmax(0) for p in probs]
    r0 = int(res.argmax())
    choice = [int(p.argmax()) for p in probs]
    argmax = SPACE.architecture(SPACE.resolutions[r0], [SPACE.layers[i].options[j] for i, j in enumerate(choice)])
    now = COST.of(argmax)
    budget = max(now * (2.5 if seed == 6 else 1.6), min(c for _, c in ALL) * 1.01)  # 24 px costs 2.25x 16 px
    assert now < 0.9 * budget  # so the derivation must grow
    best = None  # (lost per unit added, step text, architecture after the move)
    for r in range(len(SPACE.resolutions)):
        if r != r0:
            arch = SPACE.architecture(SPACE.resolutions[r], [SPACE.layers[i].options[j] for i, j in enumerate(choice)])
            added = COST.of(arch) - now
            if added > 0 and now + added <= budget:
                lost = math.log(float(res[r0])) - math.log(float(res[r]))
                text = f"resolution {SPACE.resolutions[r0]} -> {SPACE.resolutions[r]}"
                if best is None or lost / added < best[0]:
                    best = (lost / added, text, arch)
    for i, layer in enumerate(SPACE.layers):
        for j in range(len(layer.options)):
            if j == choice[i]:
                continue
            options = [SPACE.layers[k].options[c] for k, c in enumerate(choice)]
            options[i] = layer.options[j]
            arch = SPACE.architecture(SPACE.resolutions[r0], options)
            added = COST.of(arch) - now
            if added > 0 and now + added <= budget:
                lost = math.log(float(probs[i][choice[i]])) - math.log(float(probs[i][j]))
                text = f"layer {i}: {_option_text(argmax, i)} -> {_option_text(arch, i)}"
                if best is None or lost / added < best[0]:
                    best = (lost / added, text, arch)
    assert best is not None
    d = derive(SPACE, COST, budget, res, probs)
    assert d.argmax == argmax and d.steps, d.steps
    assert seed != 6 or best[1].startswith("resolution")
    assert d.steps[0] == f"grow: {best[1]} ({COST.fmt(COST.of(best[2]))})"
