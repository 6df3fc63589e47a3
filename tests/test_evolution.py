"""The evolutionary search at selection: in the band always, selection pressure, its operators."""

from __future__ import annotations

import random

import pytest

from hwnas.search.cost import make_cost
from hwnas.search.evolution import crossover, evolve, mutate, random_in_band
from hwnas.spaces import get_space
from hwnas.spaces.arch import Architecture
from hwnas.spaces.kernels import arch_flops

SPACE = get_space("cifar")
COST = make_cost("flops", SPACE)
LO_SPACE, HI_SPACE = COST.smallest(SPACE)[1], COST.largest(SPACE)[1]
HI = LO_SPACE + 0.5 * (HI_SPACE - LO_SPACE)
LO = 0.9 * HI


def _k5_count(arch: Architecture) -> float:
    """A fitness computed here, independently of the search: kernel-5 layers, then wider networks."""
    return sum(b.op.startswith("ir_k5") for b in arch.blocks) + arch.resolution / 1000


def test_every_evaluated_architecture_is_distinct_and_inside_the_band() -> None:
    calls: list[str] = []

    def fitness(a: Architecture) -> float:
        calls.append(a.to_str())
        return _k5_count(a)

    out = evolve(SPACE, COST, LO, HI, fitness, evaluations=40, seed=3)
    assert len(out) == len(calls) == len(set(calls)) == 40  # each distinct architecture evaluated once
    for e in out:
        flops = arch_flops(e.arch) / 1e6  # the exact cost, not the search's cost model
        assert LO <= flops <= HI * (1 + 1e-9)
        assert e.cost == pytest.approx(flops) and e.fitness == _k5_count(e.arch)
    assert [e.fitness for e in out] == sorted((e.fitness for e in out), reverse=True)


def test_evolution_beats_the_same_number_of_random_draws_in_the_band() -> None:
    """Selection pressure: a run without it (random in-band draws) ends lower on every seed."""
    for seed in range(3):
        best = evolve(SPACE, COST, LO, HI, _k5_count, evaluations=80, seed=seed)[0].fitness
        rand = random_in_band(SPACE, COST, LO, HI, 80, random.Random(100 + seed))
        assert best > max(map(_k5_count, rand)), seed


def test_seeds_inside_the_band_start_the_population_and_others_are_dropped() -> None:
    inside = random_in_band(SPACE, COST, LO, HI, 2, random.Random(1))
    outside = COST.largest(SPACE)[0]
    seen: list[str] = []
    evolve(SPACE, COST, LO, HI, lambda a: seen.append(a.to_str()) or 0.0, evaluations=5, seeds=[outside, *inside])
    assert seen[:2] == [a.to_str() for a in inside] and outside.to_str() not in seen


def test_an_empty_band_evaluates_nothing_and_bad_settings_are_refused() -> None:
    assert evolve(SPACE, COST, 0.5 * LO_SPACE, 0.9 * LO_SPACE, _k5_count, evaluations=10) == []
    with pytest.raises(ValueError):
        evolve(SPACE, COST, LO, HI, _k5_count, evaluations=0)


def test_mutation_changes_one_slot_and_crossover_takes_each_layer_from_a_parent() -> None:
    rng = random.Random(0)
    for _ in range(50):
        a, b = SPACE.sample(rng), SPACE.sample(rng)
        m = mutate(SPACE, a, rng)
        changed = sum(x != y for x, y in zip(a.blocks, m.blocks, strict=True)) + (a.resolution != m.resolution)
        assert changed == 1 and SPACE.contains(m)
        c = crossover(SPACE, a, b, rng)
        assert SPACE.contains(c) and c.resolution in (a.resolution, b.resolution)
        assert all(z in (x, y) for x, y, z in zip(a.blocks, b.blocks, c.blocks, strict=True))


def test_asking_for_no_networks_draws_none() -> None:
    """n = 0 returns at once: it used to spend every try (500,000 in the protocol) looking for a count
    it had already passed, which stalled the protocol's start for minutes on a run without in-band ranking."""
    rng = random.Random(5)
    state = rng.getstate()
    assert random_in_band(SPACE, COST, LO, HI, 0, rng, tries=20_000) == []
    assert rng.getstate() == state  # not one architecture drawn
