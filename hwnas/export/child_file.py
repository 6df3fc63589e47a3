"""The trained child to export: a child file from ``hwnas train`` (``child.safetensors``), or an
architecture plus a bare safetensors state dict. The file is read by :mod:`hwnas.train.checkpoints`
(no pickles).

The weights must fit the architecture exactly: the first tensor that is missing, unexpected or of
another shape is named in the error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hwnas.core.errors import HwnasError
from hwnas.models.builder import ChildNet, build_model
from hwnas.spaces.arch import Architecture


@dataclass
class Child:
    arch: Architecture
    model: ChildNet  # eval mode
    mean: list[float] | None = None  # input normalization the model was trained with
    std: list[float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def load_child(arch_path: str | Path | None, weights_path: str | Path) -> Child:
    """The trained child in ``weights_path`` (a child file, or a bare state dict with ``arch_path``)."""
    from hwnas.train.checkpoints import read_child

    wp = Path(weights_path)
    stored = read_child(wp)
    arch = Architecture.load(arch_path) if arch_path is not None else stored.arch
    if arch is None:
        raise HwnasError(f"{wp} holds bare weights; give the architecture too: --arch ARCH.json")
    model = build_model(arch)
    check_weights(model, stored.weights, str(wp), str(arch_path or wp))
    model.load_state_dict(stored.weights)
    meta = stored.meta
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
        got = weights[name]
        if got.dtype.is_complex or got.dtype == torch.bool:
            raise HwnasError(f"{source}: tensor {name} is of type {got.dtype}, not a real number type")
        if got.dtype.is_floating_point and not bool(torch.isfinite(got).all()):
            raise HwnasError(f"{source}: tensor {name} holds NaN or infinite values")
    extra = [k for k in weights if k not in want]
    if extra:
        raise HwnasError(f"{source} does not match {arch_source}: the weights have tensor {extra[0]}, "
                         "the architecture does not")  # fmt: skip
