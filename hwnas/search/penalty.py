"""How the cost enters the architecture loss: the penalty, kept apart from the cost model (as NNI
keeps ``ProfilerPenalty`` apart from its profiler).

``target`` (default)
    ``CE + lambda * |E[cost] / B - 1|``, two-sided as in TF-NAS: the budget pulls the expected cost
    towards ``B`` from either side, so a loose budget does not leave the term at zero from the
    first step (with a ceiling, the searches for every budget above the space's expected cost
    under uniform alphas were the same search). ``lambda`` moves by dual ascent,
    ``lambda <- max(0, lambda + lambda_lr * (|E[cost] / B - 1| - TOLERANCE))``: it grows while
    the expected cost is more than ``TOLERANCE`` from ``B`` and relaxes inside.
``hinge``
    ``CE + lambda * max(0, E[cost] / B - 1)``, with ``lambda`` moved by dual ascent after every
    architecture step, ``lambda <- max(0, lambda + lambda_lr * (E[cost] / B - 1))``: it grows
    while over budget and relaxes when under.
``fbnet``
    FBNet's multiplicative ``CE * a * log(s * E[cost]) ** b`` (a = 0.2, b = 0.6), with the cost
    rescaled by ``s = 30 / B`` so that the budget sits where FBNet's milliseconds did.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from hwnas.core.errors import HwnasError
from hwnas.search.config import PENALTIES

FBNET_A, FBNET_B, FBNET_SCALE = 0.2, 0.6, 30.0
TOLERANCE = 0.05  # half the width of the band [0.9 B, B] that selection aims for


class Penalty:
    """``penalty(ce, e_cost) -> loss``; ``penalty.update(e_cost)`` after each architecture step.

    ``lam`` is the dual variable (the hinge's weight); it is part of a search's checkpoint.
    """

    def __init__(self, kind: str, budget: float, lambda_init: float = 1.0, lambda_lr: float = 0.05) -> None:
        if kind not in PENALTIES:
            raise HwnasError(f"unknown loss {kind!r}; choose {', '.join(PENALTIES)}")
        self.kind, self.budget, self.lam, self.lambda_lr = kind, budget, lambda_init, lambda_lr

    def __call__(self, ce: torch.Tensor, e_cost: torch.Tensor) -> torch.Tensor:
        if self.kind == "target":
            return ce + self.lam * (e_cost / self.budget - 1).abs()
        if self.kind == "hinge":
            return ce + self.lam * F.relu(e_cost / self.budget - 1)
        return ce * FBNET_A * torch.log(e_cost * (FBNET_SCALE / self.budget)).clamp_min(1e-3) ** FBNET_B

    def update(self, e_cost: float) -> None:
        """Dual ascent on ``lam`` (target and hinge)."""
        if self.kind == "target":
            self.lam = max(0.0, self.lam + self.lambda_lr * (abs(e_cost / self.budget - 1) - TOLERANCE))
        elif self.kind == "hinge":
            self.lam = max(0.0, self.lam + self.lambda_lr * (e_cost / self.budget - 1))
