"""Training a child network (``hwnas train``), and the pieces the search shares with it.

The recipe is fixed and plain, so architectures are compared on the architecture alone: SGD
(momentum 0.9, Nesterov), cosine learning-rate decay to zero, weight decay on weights (not on
BatchNorm or biases), label smoothing 0.1, random crop and flip. A child starts from scratch
(:func:`hwnas.models.builder.build_model`'s initialization) or from the supernet's weights sliced to
its channels (``init="supernet"``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn
from torch.nn import functional as F

from hwnas.core.errors import HwnasError
from hwnas.core.progress import progress_bar
from hwnas.models.builder import ChildNet, build_model
from hwnas.spaces.arch import Architecture
from hwnas.train.batches import batches
from hwnas.train.data import DataSplits, Images
from hwnas.train.distributed import Group
from hwnas.train.precision import Precision

LABEL_SMOOTHING = 0.1
ModuleT = TypeVar("ModuleT", bound=nn.Module)


def torch_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when there is a GPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HwnasError(f"--torch-device {name}: this PyTorch sees no CUDA GPU; use --torch-device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise HwnasError(f"--torch-device {name!r}: expected cpu, cuda, cuda:N or auto") from None


def training_layout(model: ModuleT, device: torch.device) -> ModuleT:
    """``model`` in the memory layout it trains fastest in on ``device``: channels-last on a CPU,
    where PyTorch's convolutions (depthwise ones most of all) train about 1.4-1.9x faster in it than
    in NCHW (docs/notebook/supernet.md, "Training memory layout"); unchanged elsewhere (not measured on a GPU).
    Inputs can stay NCHW: a convolution with channels-last weights computes channels-last."""
    if device.type != "cpu":
        return model
    return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # (torch's stubs lack it)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv and linear weights only."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if name.endswith("alpha"):
            continue
        (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def cosine(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))
    )


EVAL_BATCH, EVAL_BATCH_BYTES = 256, 40e6  # images per evaluation batch, at most this many bytes of float pixels


def eval_batch_size(images: Images) -> int:
    """Images per evaluation batch: 256, fewer for large images so that a batch's float pixels
    stay under 40 MB (66 at 224 px), or the evaluation's few float copies of 256 images (600 MB at
    224 px) would set the run's peak memory."""
    c, h, w = images.shape
    return max(1, min(EVAL_BATCH, int(EVAL_BATCH_BYTES // (4 * c * h * w))))


@torch.no_grad()
def evaluate(model: nn.Module, images: Images, mean: torch.Tensor, std: torch.Tensor, device: torch.device,
             batch_size: int | None = None, streaming: dict[str, Any] | None = None, group: Group | None = None,
             **forward: Any) -> float:  # fmt: skip
    """Top-1 accuracy of ``model`` (eval mode) on ``images`` (``streaming``: how streamed images are
    read, :class:`~hwnas.train.batches.Batches`' keywords; skipped images count as neither), in
    batches of :func:`eval_batch_size` unless ``batch_size`` says. Under torchrun (``group``) each
    rank scores its share of the images and the counts are summed: every rank gets the same figure."""
    model.eval()
    correct, seen = 0, 0
    size = batch_size or eval_batch_size(images)
    if group is not None and group.active:
        images = images.subset(torch.arange(len(images))[group.part(len(images))])
    for x, y in batches(images, size, mean, std, device=device, **(streaming or {})):
        correct += int((model(x, **forward).argmax(1) == y).sum())
        seen += len(y)
    if group is not None:
        correct, seen = (int(v) for v in group.sums([correct, seen], device))
    return correct / max(1, seen)


@dataclass
class TrainResult:
    model: ChildNet
    val_acc: float
    test_acc: float | None
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # conversions of the data (see data.fit_notes)


def train_child(
    arch: Architecture,
    splits: DataSplits,
    epochs: int = 10,
    lr: float = 0.05,
    batch_size: int = 64,
    weight_decay: float = 5e-4,
    init: ChildNet | None = None,
    seed: int = 0,
    device: torch.device | None = None,
    progress: bool = True,
    precision: str = "fp32",
    streaming: dict[str, Any] | None = None,
    group: Group | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train ``arch`` on ``splits.weights + splits.alphas`` (all the training images but val), at
    the architecture's resolution, augmented by ``splits.recipe``; report val (and test) accuracy.
    ``precision`` (fp32, bf16, fp16) runs the forward passes under autocast
    (:class:`~hwnas.train.precision.Precision`; weights and optimizer stay fp32). ``streaming``: how
    streamed images are read (``workers``, ``bad_images``); images skipped are noted in the result.
    Under torchrun (``group``) each rank trains on its share of every global batch of ``batch_size``
    in DistributedDataParallel; BatchNorm statistics are averaged over the ranks before each
    evaluation, and only rank 0 shows progress. ``checkpoint``: a file that rank 0 rewrites after
    every epoch (:func:`~hwnas.train.checkpoints.write_train_checkpoint`); with ``resume`` the
    training goes on from it, on any number of ranks, and ends as the uninterrupted one would."""
    group = group or Group()
    group.check_batch(batch_size)
    progress = progress and group.main
    device = group.place(device or torch.device("cpu"))
    torch.manual_seed(seed)
    model = training_layout((init or build_model(arch)).to(device), device)
    net = group.wrap(model, device, find_unused=False)  # a child uses every parameter at every step
    train = splits.weights.join(splits.alphas)
    skipped: set[str] = set()
    streaming = {**(streaming or {}), "skipped": skipped, "recipe": splits.recipe}
    amp = Precision(precision, device)
    steps_per_epoch = max(1, len(train) // batch_size)
    opt = torch.optim.SGD(param_groups(model, weight_decay), lr=lr, momentum=0.9, nesterov=True)
    sched = cosine(opt, epochs * steps_per_epoch)
    res = arch.resolution
    history: list[dict[str, Any]] = []
    identity = {"arch": arch.to_str(), "images": len(train), "epochs": epochs, "lr": lr, "batch_size": batch_size,
                "weight_decay": weight_decay, "seed": seed, "precision": precision}  # fmt: skip
    first, earlier = 0, 0.0
    if checkpoint is not None and resume:
        first, history, earlier = _resume_training(checkpoint, identity, model, opt, sched, amp)
    start = time.perf_counter()
    with progress_bar(progress, status=True) as bar:
        # a short description: a long architecture name squeezed the bar and its counts out of the line
        name = arch.name if arch.name and len(arch.name) <= 20 else "child"
        task = bar.add_task(f"training {name}", total=epochs * steps_per_epoch, completed=first * steps_per_epoch,
                            status="")  # fmt: skip
        for epoch in range(first, epochs):
            model.train()
            gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            loss_sum, n = torch.zeros((), device=device), 0  # summed on the device: no sync per step
            for x, y in batches(train, batch_size, splits.mean, splits.std, gen, augment=True, drop_last=True,
                                device=device, group=group, **streaming):  # fmt: skip
                x = _resize(x, res).to(device)
                with amp.autocast():
                    loss = F.cross_entropy(net(x), y.to(device), label_smoothing=LABEL_SMOOTHING)
                opt.zero_grad(set_to_none=True)
                amp.backward(loss)
                amp.step(opt)
                sched.step()
                loss_sum, n = loss_sum + loss.detach().float() * len(y), n + len(y)
                bar.advance(task)
            total, seen = group.sums([float(loss_sum), n], device)  # over every rank's share
            average_batchnorm(model, group)
            val = evaluate(_Resized(model, res), splits.val, splits.mean, splits.std, device, streaming=streaming,
                           group=group)  # fmt: skip
            history.append({"epoch": epoch + 1, "loss": total / max(1, seen), "val_acc": val})
            bar.update(task, status=f"loss {total / max(1, seen):.3f} val {val:.1%}")
            if checkpoint is not None and group.main and epoch + 1 < epochs:
                from hwnas.train.checkpoints import rng_states, write_train_checkpoint

                write_train_checkpoint(checkpoint, {
                    "identity": identity, "epoch": epoch + 1, "model": model.state_dict(), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "amp": amp.state(), "history": history,
                    "seconds": earlier + time.perf_counter() - start, "rng": rng_states()})  # fmt: skip
    test = (evaluate(_Resized(model, res), splits.test, splits.mean, splits.std, device, streaming=streaming,
                     group=group) if splits.test else None)  # fmt: skip
    # back to NCHW: what export, slicing and timing expect of a model
    model = model.cpu().to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    notes = [f"{len(skipped)} unreadable image(s) skipped while training (--bad-images skip), e.g. "
             f"{sorted(skipped)[0]}"] if skipped else []  # fmt: skip
    return TrainResult(model, history[-1]["val_acc"] if history else 0.0, test, history,
                       earlier + time.perf_counter() - start, notes)  # fmt: skip


def _resume_training(path: str | Path, identity: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer,
                     sched: Any, amp: Precision) -> tuple[int, list[dict[str, Any]], float]:  # fmt: skip
    """Load an interrupted training's state into ``model``, ``opt``, ``sched`` and ``amp``; its
    epochs done, history and seconds spent. One started otherwise is a one-line error."""
    from hwnas.train.checkpoints import read_train_checkpoint, set_rng_states

    state = read_train_checkpoint(path)
    for key, value in identity.items():
        if state["identity"].get(key) != value:
            raise HwnasError(f"{path}: an interrupted training with {key} {state['identity'].get(key)!r}, not "
                             f"{value!r}; give the same settings to go on, or delete it to start again")  # fmt: skip
    if state["epoch"] >= identity["epochs"]:
        raise HwnasError(f"{path}: corrupt content (epoch {state['epoch']} of {identity['epochs']})")
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        amp.load(state["amp"] or None)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise HwnasError(f"{path}: corrupt content ({str(exc).splitlines()[0][:160]})") from None
    set_rng_states(state["rng"], str(path))
    return state["epoch"], list(state["history"]), float(state["seconds"])


def average_batchnorm(model: nn.Module, group: Group) -> None:
    """Under torchrun: every BatchNorm's running statistics replaced by their mean over the ranks
    (each rank's saw only its share of the batches), so every rank evaluates the same network."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    group.average_([t for m in bns for t in (m.running_mean, m.running_var) if t is not None])


def _resize(x: torch.Tensor, res: int) -> torch.Tensor:
    if x.shape[-1] == res and x.shape[-2] == res:
        return x
    return F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False)


class _Resized(nn.Module):
    """Feeds the model its architecture's resolution (the data may be stored at another size)."""

    def __init__(self, model: nn.Module, res: int) -> None:
        super().__init__()
        self.model, self.res = model, res

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(_resize(x, self.res))


def save_child(
    path: str | Path, result: TrainResult, arch: Architecture, splits: DataSplits, meta: dict[str, Any]
) -> None:
    """A child file (:mod:`hwnas.train.checkpoints`): architecture, weights, input normalization, scores."""
    from hwnas.train.checkpoints import write_child

    info = {"mean": splits.mean.tolist(), "std": splits.std.tolist(), "val_acc": result.val_acc,
            "test_acc": result.test_acc, "history": result.history, "classes": list(splits.weights.classes),
            "image_size": list(splits.weights.shape[-2:]), "augment": splits.recipe, **meta}  # fmt: skip
    write_child(path, arch, result.model.state_dict(), info)
