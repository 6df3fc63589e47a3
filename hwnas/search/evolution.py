"""Evolutionary search over a trained supernet, with the cost model as a hard constraint.

The population lives entirely inside the band ``[lo, hi]``: a child made by mutation (one layer's
option or the resolution redrawn) or crossover (each layer and the resolution taken from one of
two parents) that the cost model puts outside the band is thrown away and made again, never
repaired or penalised. Fitness is whatever ``fitness`` returns (in a search: the supernet's
validation accuracy of the child with BatchNorm re-estimated for it); it is evaluated once per
distinct architecture, and the number of evaluations is the budget of the run.

This is the regularised-evolution flavour used by Once-for-All's and HardCoRe-NAS's evolutionary
stages, kept small: tournament selection from the current population, the oldest member retired
when a child joins.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hwnas.search.cost import SearchCost
from hwnas.spaces.arch import Architecture
from hwnas.spaces.space import Option, SearchSpace

TRIES = 200  # attempts to make one in-band child before the run stops early
TOP_UP_TRIES = 5_000  # uniform draws to top the first population up (a narrow band may hold few)


@dataclass(frozen=True)
class Evaluated:
    arch: Architecture
    fitness: float
    cost: float


def random_in_band(space: SearchSpace, cost: SearchCost, lo: float, hi: float, n: int, rng: random.Random,
                   tries: int = 50_000) -> list[Architecture]:  # fmt: skip
    """Up to ``n`` distinct uniformly drawn architectures with cost in ``[lo, hi]`` (rejection sampling)."""
    if n <= 0:  # nothing asked: no draws (the loop below would spend every try looking for a count it passed)
        return []
    found: dict[str, Architecture] = {}
    for _ in range(tries):
        a = space.sample(rng)
        if lo <= cost.of(a) <= hi * (1 + 1e-9):
            found.setdefault(a.to_str(), a)
            if len(found) == n:
                break
    return list(found.values())


def _options(arch: Architecture) -> list[Option]:
    return [Option(b.op, b.c, b.e) for b in arch.blocks]


def mutate(space: SearchSpace, arch: Architecture, rng: random.Random) -> Architecture:
    """``arch`` with the resolution or one layer's option (among those with a choice) redrawn to another
    value; a new width at a ``tied_channels`` stage's first layer carries over to the whole stage."""
    options, res = _options(arch), arch.resolution
    cins = [space.in_channels, *(o.c for o in options)]
    slots = [i for i, layer in enumerate(space.layers) if len(layer.allowed(cins[i])) > 1]
    slots += [len(space.layers)] if len(space.resolutions) > 1 else []
    if not slots:
        return arch
    slot = rng.choice(slots)
    if slot == len(space.layers):
        res = rng.choice([r for r in space.resolutions if r != res])
    else:
        options[slot] = rng.choice([o for o in space.layers[slot].allowed(cins[slot]) if o != options[slot]])
    return space.architecture(res, space.tie(options), arch.name)


def crossover(space: SearchSpace, a: Architecture, b: Architecture, rng: random.Random) -> Architecture:
    """Each layer's option and the resolution from ``a`` or ``b``, with equal odds (tied layers then take
    the width of their stage's first layer)."""
    options = [x if rng.random() < 0.5 else y for x, y in zip(_options(a), _options(b), strict=True)]
    res = a.resolution if rng.random() < 0.5 else b.resolution
    return space.architecture(res, space.tie(options), a.name)


def evolve(
    space: SearchSpace,
    cost: SearchCost,
    lo: float,
    hi: float,
    fitness: Callable[[Architecture], float],
    evaluations: int,
    seeds: Sequence[Architecture] = (),
    population: int = 8,
    tournament: int = 3,
    seed: int = 0,
) -> list[Evaluated]:
    """Every architecture evaluated (at most ``evaluations``), best first. The first population is
    ``seeds`` that lie in the band, topped up with random in-band architectures."""
    if evaluations < 1 or population < 2 or tournament < 1:
        raise ValueError("need evaluations >= 1, population >= 2 and tournament >= 1")
    rng = random.Random(seed)
    seen: dict[str, Evaluated] = {}

    def evaluate(arch: Architecture) -> Evaluated | None:
        key = arch.to_str()
        if key in seen or len(seen) >= evaluations:
            return None
        seen[key] = Evaluated(arch, float(fitness(arch)), cost.of(arch))
        return seen[key]

    start = [a for a in seeds if lo <= cost.of(a) <= hi * (1 + 1e-9)][:population]
    start += random_in_band(space, cost, lo, hi, population - len(start), rng, tries=TOP_UP_TRIES)
    alive: deque[Evaluated] = deque(e for e in map(evaluate, start) if e is not None)
    while len(seen) < evaluations and len(alive) >= 2:
        child = None
        for _ in range(TRIES):
            pool = list(alive)
            parent = max(rng.sample(pool, min(tournament, len(pool))), key=lambda e: e.fitness)
            if rng.random() < 0.5:
                other = max(rng.sample(pool, min(tournament, len(pool))), key=lambda e: e.fitness)
                cand = mutate(space, crossover(space, parent.arch, other.arch, rng), rng)
            else:
                cand = mutate(space, parent.arch, rng)
            if cand.to_str() not in seen and lo <= cost.of(cand) <= hi * (1 + 1e-9):
                child = evaluate(cand)
                break
        if child is None:  # the band around this population is exhausted
            break
        alive.append(child)
        if len(alive) > population:
            alive.popleft()
    return sorted(seen.values(), key=lambda e: (-e.fitness, -e.cost))
