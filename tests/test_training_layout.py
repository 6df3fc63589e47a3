"""Channels-last training on the CPU: the same numbers as NCHW, and an NCHW model handed back."""

from __future__ import annotations

import pytest
import torch

from hwnas.search.supernet import SuperNet
from hwnas.spaces import get_space
from hwnas.train import training
from hwnas.train.data import make_splits, synthetic
from hwnas.train.training import train_child, training_layout

CHANNELS_LAST = torch.channels_last


def _conv_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    # a 1x1 or depthwise kernel is contiguous in both layouts; the others tell them apart
    return [p for p in model.parameters() if p.ndim == 4 and p.shape[1] > 1 and p.shape[-1] > 1]


def test_the_layout_is_channels_last_on_a_cpu_and_unchanged_elsewhere() -> None:
    net = SuperNet(get_space("tiny"))
    assert _conv_weights(net)
    assert not any(w.is_contiguous(memory_format=CHANNELS_LAST) for w in _conv_weights(net))
    same = training_layout(net, torch.device("meta"))
    assert same is net and not any(w.is_contiguous(memory_format=CHANNELS_LAST) for w in _conv_weights(net))
    training_layout(net, torch.device("cpu"))
    assert all(w.is_contiguous(memory_format=CHANNELS_LAST) for w in _conv_weights(net))


def test_channels_last_training_matches_nchw_and_hands_back_an_nchw_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two epochs of the same child from the same seed, once in each layout: the losses agree to
    float rounding (a layout that reorders channels or drops a kernel would not)."""
    space = get_space("tiny")
    arch = space.sample(3)
    k = space.num_classes
    splits = make_splits(synthetic(n=256, size=24, classes=k), synthetic(n=64, size=24, classes=k, split="test"), 3,
                         seed=0)  # fmt: skip
    seen: list[bool] = []
    real = training.training_layout

    def spy(model, device):  # type: ignore[no-untyped-def]
        out = real(model, device)
        seen.append(all(w.is_contiguous(memory_format=CHANNELS_LAST) for w in _conv_weights(out)))
        return out

    monkeypatch.setattr(training, "training_layout", spy)
    fast = train_child(arch, splits, epochs=2, batch_size=32, seed=1, progress=False)
    monkeypatch.setattr(training, "training_layout", lambda model, device: model)
    plain = train_child(arch, splits, epochs=2, batch_size=32, seed=1, progress=False)
    assert seen == [True]  # it trained channels-last
    for a, b in zip(fast.history, plain.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    assert fast.test_acc == pytest.approx(plain.test_acc, abs=2 / 64)  # at most two of 64 images flip
    for name, p in fast.model.state_dict().items():
        assert p.is_contiguous(), f"{name} came back channels-last"
        assert torch.allclose(p, plain.model.state_dict()[name], rtol=1e-3, atol=1e-4), name
