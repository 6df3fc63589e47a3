"""The budget penalties, against hand computation, and their dual ascent."""

from __future__ import annotations

import math

import pytest
import torch

from hwnas.core.errors import HwnasError
from hwnas.search.penalty import FBNET_A, FBNET_B, FBNET_SCALE, TOLERANCE, Penalty

CE = torch.tensor(2.0)


@pytest.mark.parametrize("e_cost", [5.0, 10.0, 13.0])
def test_the_formulas(e_cost: float) -> None:
    budget, lam = 10.0, 0.7
    e = torch.tensor(e_cost, requires_grad=True)
    assert float(Penalty("target", budget, lam)(CE, e)) == pytest.approx(2.0 + 0.7 * abs(e_cost / 10 - 1))
    assert float(Penalty("hinge", budget, lam)(CE, e)) == pytest.approx(2.0 + 0.7 * max(0.0, e_cost / 10 - 1))
    fb = 2.0 * FBNET_A * math.log(e_cost * FBNET_SCALE / 10) ** FBNET_B
    assert float(Penalty("fbnet", budget, lam)(CE, e)) == pytest.approx(fb)


def test_the_target_pulls_from_both_sides_and_the_hinge_only_from_above() -> None:
    def grad(kind: str, e_cost: float) -> float:
        e = torch.tensor(e_cost, requires_grad=True)
        Penalty(kind, 10.0, 1.0)(CE, e).backward()
        assert e.grad is not None
        return float(e.grad)

    assert grad("target", 13.0) > 0 and grad("target", 5.0) < 0  # descent lowers 13 and raises 5
    assert grad("hinge", 13.0) > 0 and grad("hinge", 5.0) == 0


def test_dual_ascent() -> None:
    target = Penalty("target", 10.0, 1.0, lambda_lr=0.5)
    target.update(13.0)  # 30% off: grows by 0.5 * (0.3 - tolerance)
    assert target.lam == pytest.approx(1.0 + 0.5 * (0.3 - TOLERANCE))
    target.update(10.2)  # inside the tolerance: relaxes
    assert target.lam < 1.0 + 0.5 * (0.3 - TOLERANCE)
    under = Penalty("target", 10.0, 1.0, lambda_lr=0.5)
    under.update(7.0)  # 30% under: the target is two-sided, so it grows as much as 30% over
    assert under.lam == pytest.approx(1.0 + 0.5 * (0.3 - TOLERANCE))
    hinge = Penalty("hinge", 10.0, 0.1, lambda_lr=0.5)
    hinge.update(5.0)  # under budget: relaxes, never below 0
    assert hinge.lam == 0.0
    fbnet = Penalty("fbnet", 10.0, 1.0)
    fbnet.update(50.0)
    assert fbnet.lam == 1.0


def test_unknown_penalty() -> None:
    with pytest.raises(HwnasError, match="unknown loss 'l2'"):
        Penalty("l2", 1.0)
