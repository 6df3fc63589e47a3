"""A child network with its weights sliced out of the supernet (``hwnas train --init supernet``).

Each child layer takes the first ``c`` rows and columns of the supernet layer's widest weights
(the channels its masks kept on), and the centre ``k x k`` taps of the shared depthwise kernel.
In eval mode the child then computes exactly what the supernet computes with one-hot choice
weights for that architecture (``tests/test_supernet.py`` checks it).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from hwnas.core.errors import HwnasError
from hwnas.models.blocks import InvertedResidual, IRPool, Skip
from hwnas.models.builder import ChildNet, build_model
from hwnas.search.config import PATHS
from hwnas.search.supernet import SuperLayer, SuperNet
from hwnas.spaces.arch import Architecture


def _copy_conv(dst: nn.Conv2d, src: nn.Conv2d) -> None:
    out_c, in_c, k, _ = dst.weight.shape
    c = src.weight.shape[-1] // 2
    lo, hi = c - k // 2, c + k // 2 + 1
    dst.weight.copy_(src.weight[:out_c, :in_c, lo:hi, lo:hi])
    if dst.bias is not None and src.bias is not None:
        dst.bias.copy_(src.bias[:out_c])


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d) -> None:
    n = dst.num_features
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[:n])
    if dst.num_batches_tracked is not None and src.num_batches_tracked is not None:
        dst.num_batches_tracked.copy_(src.num_batches_tracked)


def _conv_bn(seq: nn.Module, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    _copy_conv(seq[0], conv)  # type: ignore[index]
    _copy_bn(seq[1], bn)  # type: ignore[index]


@torch.no_grad()
def slice_child(net: SuperNet, arch: Architecture) -> ChildNet:
    """Build ``arch`` (an architecture of ``net``'s space) with weights sliced from ``net``."""
    if not net.space.contains(arch):
        raise ValueError(f"{arch.to_str()} is not an architecture of the space {net.space.name}")
    child = build_model(arch)
    for block, layer in zip(child.blocks, net.super_layers(), strict=True):
        _slice_layer(block, layer)
    linear = child.classifier[2]
    assert isinstance(linear, nn.Linear)
    linear.weight.copy_(net.classifier.weight[:, : linear.in_features])
    linear.bias.copy_(net.classifier.bias)
    return child


def _slice_layer(block: nn.Module, layer: SuperLayer) -> None:
    if layer.explicit:
        raise ValueError("weights can be sliced from the masked supernet only")
    if isinstance(block, Skip):
        if not isinstance(block.conv, nn.Identity):
            _conv_bn(block.conv, layer.skip_conv, layer.skip_bn)
    elif isinstance(block, InvertedResidual):
        src = layer.ir_weights(gated=not isinstance(block.se, nn.Identity))
        if not isinstance(block.pw, nn.Identity):
            _conv_bn(block.pw, src.pw, src.pw_bn)
        _conv_bn(block.dw, src.dw, src.dw_bn)
        if not isinstance(block.se, nn.Identity):
            _copy_conv(block.se.reduce, src.se_reduce)
            _copy_conv(block.se.expand, src.se_expand)
        _conv_bn(block.pwl, src.pwl, src.pwl_bn)
    elif isinstance(block, IRPool):
        if not isinstance(block[0], nn.Identity):
            _conv_bn(block[0], layer.pw, layer.pw_bn)
        head = block[2]
        assert isinstance(head, nn.Conv2d)
        _copy_conv(head, layer.head)
    else:  # ConvBNAct
        _conv_bn(block, layer.conv, layer.bn)


def sliced_child_of_run(run: str | Path, arch: Architecture) -> ChildNet:
    """``arch`` with its weights sliced from the supernet saved in the search folder ``run``."""
    from hwnas.spaces.space import get_space
    from hwnas.train.checkpoints import checkpoint_path, read_search_checkpoint

    state = read_search_checkpoint(run)
    path, cfg = checkpoint_path(run), state["config"]
    space, paths = cfg.get("space"), cfg.get("paths", "masked")
    if not isinstance(space, str) or paths not in PATHS:
        raise HwnasError(f"{path}: corrupt content (config.space or config.paths)")
    head = state["net"].get("classifier.weight")  # the width the run's data gave the classifier
    classes = int(head.shape[0]) if isinstance(head, torch.Tensor) and head.ndim == 2 else arch.num_classes
    net = SuperNet(replace(get_space(space), num_classes=classes), paths=paths)
    try:
        net.load_state_dict(state["net"])
    except RuntimeError as exc:
        first = (str(exc).splitlines() or ["mismatch"])[0]
        raise HwnasError(f"{path}: the supernet weights do not fit space {space!r} ({first[:160]})") from None
    try:
        return slice_child(net, arch)
    except ValueError as exc:
        raise HwnasError(f"init from the supernet: {exc}") from None
