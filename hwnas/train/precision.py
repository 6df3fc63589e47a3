"""Mixed-precision training (``--precision-train``): the forward passes under ``torch.autocast`` in
bf16 or fp16, the weights and the optimizers' state in fp32. fp16 has a gradient scaler (its
range underflows small gradients); each optimizer gets its own, since the weight and the
architecture steps are separate backward passes. Evaluation stays fp32."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """The autocast and, for fp16, the gradient scaler of one optimizer's steps."""

    def __init__(self, precision: str, device: torch.device) -> None:
        if precision not in DTYPES:
            raise ValueError(f"precision must be one of {', '.join(DTYPES)}, got {precision!r}")
        self.name, self.dtype, self.device = precision, DTYPES[precision], device
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def autocast(self) -> AbstractContextManager[Any]:
        """The context of a forward pass (and its loss)."""
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer's step (skipped by the scaler when an fp16 gradient overflowed), then the
        scaler's update."""
        self.scaler.step(optimizer)
        self.scaler.update()

    def state(self) -> dict[str, Any]:
        """The scaler's state, for a checkpoint (empty unless fp16)."""
        return dict(self.scaler.state_dict())

    def load(self, state: dict[str, Any] | None) -> None:
        if state:
            self.scaler.load_state_dict(state)
