"""From the searched distribution to one architecture that meets the budget.

Start from the argmax of every choice. If its cost is over the budget ``B``, *repair*: take,
one at a time, the single change (one layer's option, or the resolution) that saves cost at the
smallest loss of log-probability per unit of cost saved, until the cost is ``<= B``. If it is
under ``0.9 B``, *grow*: take the single change that adds cost at the smallest loss of
log-probability per unit added, among those that keep the cost ``<= B``, until it reaches
``0.9 B`` or nothing fits. Costs are the search's own (LUT latency, FLOPs or params), so the
guarantee is on the predicted cost. A budget below the cheapest architecture is an error that
names the cheapest cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from hwnas.core.errors import HwnasError
from hwnas.search.cost import SearchCost
from hwnas.spaces.arch import Architecture
from hwnas.spaces.space import Option, SearchSpace

GROW_TO = 0.9


class InfeasibleBudget(HwnasError):
    """A budget below the cheapest architecture of the space."""


@dataclass
class Derivation:
    arch: Architecture
    cost: float
    argmax: Architecture
    argmax_cost: float
    steps: list[str] = field(default_factory=list)


def check_budget(space: SearchSpace, cost: SearchCost, budget: float) -> tuple[float, float]:
    """(cheapest, costliest) cost of the space; an :class:`InfeasibleBudget` when ``budget`` < cheapest."""
    if not budget > 0:
        raise InfeasibleBudget(f"the budget must be positive, got {budget}")
    small, small_cost = cost.smallest(space)
    _, large_cost = cost.largest(space)
    if budget < small_cost:
        raise InfeasibleBudget(
            f"a budget of {cost.fmt(budget)} is below the cheapest architecture of {space.name} "
            f"({cost.fmt(small_cost)}: {small.to_str()}); raise the budget to at least {small_cost:.4g}"
        )
    return small_cost, large_cost


def derive(
    space: SearchSpace,
    cost: SearchCost,
    budget: float,
    res_probs: torch.Tensor,
    option_probs: Sequence[torch.Tensor],
    name: str = "",
) -> Derivation:
    """The architecture for ``budget`` from the choice probabilities (see the module docstring)."""
    check_budget(space, cost, budget)
    logp_res = [math.log(max(float(p), 1e-30)) for p in res_probs]
    logp = [[math.log(max(float(p), 1e-30)) for p in probs] for probs in option_probs]
    r = max(range(len(logp_res)), key=lambda i: logp_res[i])
    choice: list[int] = []
    cin = space.in_channels
    for layer, lp in zip(space.layers, logp, strict=True):  # a tied layer: the best at its input's width
        best = max((j for j, o in enumerate(layer.options) if layer.allows(cin, o)), key=lambda j: lp[j])
        choice.append(best)
        cin = layer.options[best].c

    def build(r_: int, ch: Sequence[int]) -> Architecture:
        options = [space.layers[i].options[j] for i, j in enumerate(ch)]
        return space.architecture(space.resolutions[r_], options, name=name)

    current = build(r, choice)
    start, start_cost = current, cost.of(current)
    now = start_cost
    steps: list[str] = []

    def moves() -> list[tuple[float, float, int, list[int], str]]:
        """(delta log p, delta cost, resolution, choice, description) of every single change."""
        out = []
        for r2 in range(len(space.resolutions)):
            if r2 != r:
                c2 = cost.of(build(r2, choice))
                out.append((logp_res[r2] - logp_res[r], c2 - now, r2, list(choice),
                            f"resolution {space.resolutions[r]} -> {space.resolutions[r2]}"))  # fmt: skip
        for i, layer in enumerate(space.layers):
            for j in range(len(layer.options)):
                if j != choice[i]:
                    ch = _tied(space, choice, i, j)
                    if ch is None:
                        continue
                    c2 = cost.of(build(r, ch))
                    out.append((logp[i][j] - logp[i][choice[i]], c2 - now, r, ch,
                                f"layer {i}: {_opt(layer.options[choice[i]])} -> {_opt(layer.options[j])}"))  # fmt: skip
        return out

    while now > budget:  # repair: save cost, losing as little probability per unit saved as possible
        cands = [m for m in moves() if m[1] < 0]
        if not cands:
            break
        _, dcost, r, choice, what = min(cands, key=lambda m: (-m[0]) / (-m[1]))
        now += dcost
        steps.append(f"repair: {what} ({cost.fmt(now)})")
    if now > budget:  # stuck in a local minimum of single changes: restart from the cheapest network
        cheapest, now = cost.smallest(space)
        r = space.resolutions.index(cheapest.resolution)
        choice = [
            layer.options.index(Option(b.op, b.c, b.e)) for layer, b in zip(space.layers, cheapest.blocks, strict=True)
        ]
        steps.append(f"repair: no single change helps; start from the cheapest architecture ({cost.fmt(now)})")
    while now < GROW_TO * budget:  # grow towards the budget, never past it
        cands = [m for m in moves() if m[1] > 0 and now + m[1] <= budget]
        if not cands:
            break
        _, dcost, r, choice, what = min(cands, key=lambda m: (-m[0]) / m[1])
        now += dcost
        steps.append(f"grow: {what} ({cost.fmt(now)})")
    arch = build(r, choice)
    final = cost.of(arch)
    if final > budget * (1 + 1e-9):  # cannot happen while the budget is feasible; guard the guarantee
        raise HwnasError(f"derivation ended over budget ({cost.fmt(final)} > {cost.fmt(budget)})")
    return Derivation(arch, final, start, start_cost, steps)


def _tied(space: SearchSpace, choice: Sequence[int], i: int, j: int) -> list[int] | None:
    """``choice`` with layer ``i`` set to option ``j``, and the tied layers after it moved to its width
    (their op and expansion kept); None where ``i`` is a tied layer and ``j`` another width. A tied
    layer's probabilities do not depend on the width, so the move's change of log-probability is
    layer ``i``'s alone."""
    layers = space.layers
    options = [layers[k].options[c] for k, c in enumerate(choice)]
    new = layers[i].options[j]
    if layers[i].tied and new.c != options[i - 1].c:
        return None
    options[i] = new
    tied = space.tie(options)
    return [layer.options.index(o) for layer, o in zip(layers, tied, strict=True)]


def _opt(o: Option) -> str:
    return o.block(1).to_str().replace("_s1", "")
