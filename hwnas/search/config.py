"""A search's settings (:class:`SearchConfig`) and their choices, each defined once; torch-free, so
the command line builds ``hwnas search``'s options from them without importing the search.

Every field with an :func:`~hwnas.core.options.option` is also ``hwnas search --field-name``, with the
field's default; the budget, its kind and the budgets come from ``--budget-ms`` /
``--budget-mflops`` / ``--budget-mparams``. Library callers and benchmarks build the same dataclass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hwnas.core.errors import HwnasError
from hwnas.core.options import nonnegative_float, nonnegative_int, option, positive_float, positive_int, required
from hwnas.latency.statistic import DEFAULT_STATISTIC, STATISTICS
from hwnas.search.finalists import FINALIST_INITS, check_finalists
from hwnas.train.config import (
    AUGMENT_HELP,
    AUGMENTS,
    BAD_IMAGES,
    BAD_IMAGES_HELP,
    DATA_MODE_HELP,
    DATA_MODES,
    PRECISION_TRAIN_HELP,
    TRAIN_PRECISIONS,
    WORKERS_HELP,
    check_data_settings,
    check_training_settings,
)

# how the ops of a layer hold their weights (hwnas.search.supernet's module docstring)
PATHS = ("masked", "masked-se", "explicit")
# the budget term of the loss (hwnas.search.penalty)
PENALTIES = ("target", "hinge", "fbnet")
# What a run made before these settings existed did: a checkpoint or config.json without them
# resumes (and compares) as these values, not as today's defaults.
BEFORE_FIELD_EXISTED: dict[str, Any] = {
    "sampled_child": False,
    "evolution": 0,
    "child_sampling": "alpha",
    "relaxed_weights": True,
    "selection_resolution": "supernet",
    "augment": "pad-crop",
    "precision_train": "fp32",
    "finalists": 0,
    "finalist_epochs": 2,
    "finalist_init": "scratch",
}
# Settings that change how a run reads its data or saves itself, never what it computes: a resumed
# run may change them (--epochs too, to extend a run).
HOW_IT_RUNS = ("epochs", "data_mode", "workers", "bad_images", "checkpoint_every")
# How the trained child (the sampled-child step, and the sandwich's third child) is drawn: from the
# choice probabilities (alpha), uniformly per factor (uniform), or the two on alternate weight steps
# (mixed). alpha is the default: mixed did not rank better (docs/notebook/search-protocol.md,
# "Child sampling and the ranking").
CHILD_SAMPLING = ("alpha", "mixed", "uniform")
# Which resolutions selection considers: every one, the supernet's accuracy deciding (supernet), or
# only the one the searched distribution prefers (distribution; every one at a tie). Measured in
# docs/notebook/search-protocol.md ("Sixth run: results", "Seventh run, reduced: results").
SELECTION_RESOLUTION = ("supernet", "distribution")


@dataclass
class SearchConfig:
    """A search's settings (the module docstring says how they reach the command line)."""

    space: str = field(metadata=required(help="a preset name or a space file", metavar="NAME|FILE"))
    budget: float
    cost: str = "latency"
    budgets: list[float] = field(default_factory=list)  # train once, search many: one result per budget
    lut: str | None = option(None, help="the LUT for --cost latency (calibrated if it holds a calibration)")
    statistic: str = option(DEFAULT_STATISTIC, choices=STATISTICS,
                            help="what a latency budget means: each round's fastest, median or p90 run (default "
                                 "%(default)s; median and p90: the LUT's prediction times the factor 'hwnas lut "
                                 "validate --fit' measured on the device)")  # fmt: skip
    data: str = option("synthetic", help="synthetic[:n=,size=,seed=,classes=], an .npz (x, y or a CIFAR-10 JPEG "
                       "archive), an image folder, or WebDataset .tar shards (a folder of them, or one)")  # fmt: skip
    limit: int | None = option(None, type=positive_int, help="use this many training images (class-balanced)")
    loss: str = option("target", choices=PENALTIES, parser_checks_choices=False,
                       help="target: CE + lambda |E/B - 1| (default); hinge: CE + lambda max(0, E/B - 1); "
                            "fbnet: CE a log(E)^b")  # fmt: skip
    epochs: int = option(10, type=positive_int, help="search epochs, warm-up included")
    warmup_epochs: int | None = option(None, type=int, help="epochs training weights only (default: a fifth of "
                                       "--epochs, at most --epochs - 1)")  # fmt: skip
    batch_size: int = option(64, type=positive_int, help="images per weight and architecture step")
    lr: float = option(0.05, type=positive_float, help="weights: SGD learning rate, cosine decay")
    weight_decay: float = 5e-4
    arch_lr: float | None = option(None, type=positive_float,
                                   help="architecture logits: Adam learning rate (default 3 / architecture steps, "
                                        "within 0.001..0.1, so a logit can move about 3 over the search)")  # fmt: skip
    arch_weight_decay: float = 0.0
    tau_start: float = option(5.0, type=positive_float, help="Gumbel temperature at the first epoch")
    tau_end: float = option(0.5, type=positive_float, help="and at the last (geometric annealing)")
    lambda_init: float = 1.0
    lambda_lr: float = 0.05
    val_fraction: float = 0.1
    alpha_fraction: float = 0.2
    paths: str = option("masked", choices=PATHS,
                        help="masked: DMasking; masked-se: DMasking with the SE ops on weights of their own; explicit: "
                             "one block per choice (FBNet-style baseline, memory hungry)")  # fmt: skip
    sandwich: bool = option(False, help="each weight step also trains the largest, the smallest and one sampled "
                            "child, the last two distilled from the largest (BigNAS / OFA); 1.4-2.0x the default "
                            "search's time")  # fmt: skip
    sampled_child: bool = option(True, help="each weight step also trains one sampled child (see --child-sampling) "
                                 "on the labels, so the networks selection scores have run alone (about 1.5x the "
                                 "cost of a step); on by default")  # fmt: skip
    child_sampling: str = option("alpha", choices=CHILD_SAMPLING, parser_checks_choices=False,
                                 help="how the trained child is drawn: from the choice probabilities (alpha, the "
                                      "default), uniformly per choice (uniform), or the two on alternate steps "
                                      "(mixed)")  # fmt: skip
    relaxed_weights: bool = True  # the weights also learn through the relaxed (Gumbel-weighted) supernet
    evolution: int = option(24, type=nonnegative_int, help="supernet evaluations of the evolutionary search in "
                            "the budget band at selection (0: none; default 24)")  # fmt: skip
    selection_resolution: str = option("supernet", choices=SELECTION_RESOLUTION,
                                       help="candidates at every resolution, the supernet's accuracy deciding "
                                            "(supernet, default), or only at the resolution the searched "
                                            "distribution prefers (distribution)")  # fmt: skip
    finalists: int = option(0, type=int, help="successive halving among the K in-band candidates the supernet "
                            "scores best: each trains --finalist-epochs epochs standalone, the better half train "
                            "twice as long, until one is left (hwnas.search.finalists; 0: the supernet alone "
                            "chooses, the default)", metavar="K")  # fmt: skip
    finalist_epochs: int = option(2, type=int, help="epochs of the first stage of --finalists (default %(default)s)",
                                  metavar="E")  # fmt: skip
    finalist_init: str = option("scratch", choices=FINALIST_INITS, parser_checks_choices=False,
                                help="where each finalist's training starts: its own initialization (scratch, the "
                                     "default) or the supernet's weights sliced to it (supernet)")  # fmt: skip
    seed: int = option(0, type=int, help="initialization, Gumbel noise and batch order (default 0)")
    split_seed: int = option(0, type=int, help="which images are held out for the alphas and validation; fixed "
                             "across --seed (default 0)")  # fmt: skip
    torch_device: str = option("cpu", help="cpu, cuda, cuda:N or auto")
    data_mode: str = option("auto", choices=DATA_MODES, help=DATA_MODE_HELP)
    workers: int | None = option(None, type=nonnegative_int, help=WORKERS_HELP)
    bad_images: str = option("stop", choices=BAD_IMAGES, help=BAD_IMAGES_HELP)
    augment: str = option("auto", choices=AUGMENTS, help=AUGMENT_HELP)
    precision_train: str = option("fp32", choices=TRAIN_PRECISIONS, help=PRECISION_TRAIN_HELP)
    checkpoint_every: float = option(600.0, type=nonnegative_float,
                                     help="seconds between checkpoints inside an epoch, besides the one at each "
                                          "epoch's end (default 600; 0: after every step)")  # fmt: skip

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> SearchConfig:
        """The config a run folder's ``config.json`` (or a checkpoint) describes; a field added after
        that run was made takes the value that reproduces what the run did then."""
        return cls(**{**BEFORE_FIELD_EXISTED, **saved})

    def check(self) -> None:
        check_data_settings(self.data_mode, self.bad_images)
        check_training_settings(self.augment, self.precision_train)
        for b in [self.budget, *self.budgets]:
            if not (isinstance(b, (int, float)) and math.isfinite(b) and b > 0):
                raise HwnasError(f"the budget must be a finite number > 0, got {b}")
        for name in ("lr", "arch_lr", "tau_start", "tau_end"):
            value = getattr(self, name)
            if value is None and name == "arch_lr":
                continue
            if not (math.isfinite(value) and value > 0):
                raise HwnasError(f"{name} must be a finite number > 0, got {value}")
        if not (isinstance(self.evolution, int) and self.evolution >= 0):
            raise HwnasError(f"evolution must be a whole number >= 0, got {self.evolution!r}")
        if self.selection_resolution not in SELECTION_RESOLUTION:
            raise HwnasError(f"unknown selection resolution {self.selection_resolution!r}; "
                             f"choose {', '.join(SELECTION_RESOLUTION)}")  # fmt: skip
        check_finalists(self.finalists, self.finalist_epochs, self.finalist_init)
        if self.paths not in PATHS:
            raise HwnasError(f"unknown paths {self.paths!r}; choose {', '.join(PATHS)}")
        if self.child_sampling not in CHILD_SAMPLING:
            raise HwnasError(f"unknown child sampling {self.child_sampling!r}; choose {', '.join(CHILD_SAMPLING)}")
        if not self.relaxed_weights and not (self.sandwich or self.sampled_child):
            raise HwnasError("without the relaxed weight step the weights learn only from children: "
                             "add --sandwich or --sampled-child")  # fmt: skip
        if self.loss not in PENALTIES:
            raise HwnasError(f"unknown loss {self.loss!r}; choose {', '.join(PENALTIES)}")
        if self.warmup_epochs is None and self.epochs >= 1:
            self.warmup_epochs = min(self.epochs - 1, round(0.2 * self.epochs))
        if self.epochs < 1 or self.warmup_epochs is None or not 0 <= self.warmup_epochs < self.epochs:
            raise HwnasError(
                f"--warmup-epochs {self.warmup_epochs} must be at least 0 and below --epochs {self.epochs} (the warm-up "
                "epochs count inside the epochs; leave --warmup-epochs out for 20% of them)"
            )
        if not (0 < self.tau_end <= self.tau_start):
            raise HwnasError("need 0 < --tau-end <= --tau-start")

    def tau(self, epoch: int) -> float:
        frac = epoch / max(1, self.epochs - 1)
        return self.tau_start * (self.tau_end / self.tau_start) ** frac
