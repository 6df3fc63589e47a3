"""Named search recipes (``hwnas search --recipe NAME``): the settings a kind of dataset is
searched with, applied to the options the command line leaves out.

``imagenet`` is FBNet's published DNAS setting, which FBNetV2's DMaskingNAS follows, as far as
hwnas's options express it: 90 epochs of which 10 train the weights only, SGD at 0.1 with a cosine
decay, Adam at 0.01 with a 5e-4 weight decay for the architecture logits, and a Gumbel temperature
from 5.0 down by ``exp(-0.045)`` per epoch. The batch is 192 (FBNet's, on 8 GPUs), the ImageNet
augmentation, bf16 autocast. Neither paper's code or text is reachable from here to re-check;
the values are from the FBNet paper's section on the search (Wu et al., CVPR 2019).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from hwnas.core.errors import HwnasError

IMAGENET_EPOCHS, IMAGENET_WARMUP = 90, 10


def imagenet(epochs: int = IMAGENET_EPOCHS) -> dict[str, Any]:
    """The ``imagenet`` recipe over ``epochs`` epochs: the warm-up keeps its share (10 of 90), and
    the temperature falls by ``exp(-0.045)`` per epoch from 5.0 (to 0.0911 after 90)."""
    return {
        "epochs": epochs,
        "warmup_epochs": min(epochs - 1, round(epochs * IMAGENET_WARMUP / IMAGENET_EPOCHS)),
        "batch_size": 192,
        "lr": 0.1,
        "arch_lr": 0.01,
        "arch_weight_decay": 5e-4,
        "tau_start": 5.0,
        "tau_end": round(5.0 * math.exp(-0.045 * (epochs - 1)), 4),
        "augment": "resized-crop",
        "precision_train": "bf16",
    }


RECIPES: dict[str, Callable[[int], dict[str, Any]]] = {"imagenet": imagenet}
RECIPE_EPOCHS = {"imagenet": IMAGENET_EPOCHS}


def with_recipe(name: str | None, values: dict[str, Any], given: set[str] | None) -> dict[str, Any]:
    """``values`` (a search's settings by field name) with recipe ``name`` filling each setting not
    in ``given`` (the options named on the command line; None: all of ``values`` count as given).
    ``--epochs`` given rescales the recipe's warm-up and temperature to that many epochs."""
    if name is None:
        return values
    if name not in RECIPES:
        raise HwnasError(f"unknown recipe {name!r}; choose {', '.join(RECIPES)}")
    given = set(values) if given is None else given
    epochs = int(values["epochs"]) if "epochs" in given else RECIPE_EPOCHS[name]
    return {**values, **{k: v for k, v in RECIPES[name](epochs).items() if k not in given}}
