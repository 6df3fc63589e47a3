"""Reading what ``hwnas train`` wrote (``child.pt``), or an architecture plus a bare state dict.

The weights must fit the architecture exactly: the first tensor that is missing, unexpected or of
another shape is named in the error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hwnas.errors import HwnasError
from hwnas.nas.arch import Architecture
from hwnas.nas.builder import ChildNet, build_model


@dataclass
class Child:
    arch: Architecture
    model: ChildNet  # eval mode
    mean: list[float] | None = None  # input normalization the model was trained with
    std: list[float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def load_child(arch_path: str | Path | None, weights_path: str | Path) -> Child:
    """The trained child in ``weights_path`` (a ``child.pt``, or a state dict with ``arch_path``)."""
    wp = Path(weights_path)
    if not wp.is_file():
        raise HwnasError(f"{wp}: no such weights file; train one with 'hwnas train --arch A.json --data D --out {wp}'")
    try:
        state = torch.load(wp, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated or not a torch file
        raise HwnasError(f"{wp}: not a readable PyTorch file ({type(exc).__name__}); is it truncated?") from None
    meta: dict[str, Any] = {}
    if isinstance(state, dict) and state.get("format") == "hwnas.child":
        meta = {k: v for k, v in state.items() if k not in ("state_dict", "arch")}
        weights = state["state_dict"]
        stored = Architecture.from_dict(state["arch"], str(wp))
    elif isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()):
        weights, stored = state, None
    else:
        raise HwnasError(f"{wp}: neither a child.pt from 'hwnas train' nor a state dict of tensors")
    arch = Architecture.load(arch_path) if arch_path is not None else stored
    if arch is None:
        raise HwnasError(f"{wp} holds bare weights; give the architecture too: --arch ARCH.json")
    model = build_model(arch)
    check_weights(model, weights, str(wp), str(arch_path or wp))
    model.load_state_dict(weights)
    return Child(arch, model.eval(), meta.get("mean"), meta.get("std"), meta)


def check_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str, arch_source: str) -> None:
    """Raise naming the first tensor where ``weights`` and ``model`` disagree."""
    want = model.state_dict()
    for name, tensor in want.items():
        if name not in weights:
            raise HwnasError(f"{source} does not match {arch_source}: the architecture has tensor {name} "
                             f"{tuple(tensor.shape)}, the weights do not")  # fmt: skip
        if tuple(weights[name].shape) != tuple(tensor.shape):
            raise HwnasError(f"{source} does not match {arch_source}: tensor {name} is {tuple(weights[name].shape)} "
                             f"in the weights but {tuple(tensor.shape)} in the architecture")  # fmt: skip
    extra = [k for k in weights if k not in want]
    if extra:
        raise HwnasError(f"{source} does not match {arch_source}: the weights have tensor {extra[0]}, "
                         "the architecture does not")  # fmt: skip
