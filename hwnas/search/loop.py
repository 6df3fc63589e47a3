"""The DMaskingNAS search loop (``hwnas search``).

Per epoch (FBNet/FBNetV2): the Gumbel temperature ``tau`` anneals geometrically from
``tau_start`` to ``tau_end``; every weight step (SGD, cosine schedule, on the weights split) is
followed, after the warm-up epochs, by one architecture step (Adam on the ``alpha`` logits, on
the disjoint alphas split) on the cross-entropy plus the cost penalty (:mod:`hwnas.search.penalty`:
``target``, the default, two-sided, and ``hinge``, each with dual ascent on its weight, or FBNet's
multiplicative ``fbnet``).

``E[cost]`` is the exact expected cost under the current choice probabilities (softmax of the
alphas), from :mod:`hwnas.search.cost`. At the end of every epoch: BatchNorm statistics are
re-estimated for the argmax architecture and its validation accuracy is measured through the
supernet; a row goes to ``metrics.csv``, the choice probabilities to ``probs.csv``, and a
checkpoint (weights, optimizers, schedule, lambda, RNG states) is written atomically, so a
killed search resumes from its last finished epoch with ``--resume`` and ends where an
uninterrupted run would. After the last epoch the architecture is derived for the budget
(:mod:`hwnas.search.derive`) and the run folder gets ``arch.json``, ``arch.txt``, ``search.json``
and plots.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from hwnas.core.errors import HwnasError
from hwnas.core.fileio import write_text_atomic
from hwnas.core.progress import progress_bar
from hwnas.search.config import BEFORE_FIELD_EXISTED, HOW_IT_RUNS, SearchConfig
from hwnas.search.cost import SearchCost, make_cost
from hwnas.search.derive import GROW_TO, Derivation, check_budget, derive
from hwnas.search.evolution import evolve
from hwnas.search.finalists import run_halving
from hwnas.search.penalty import Penalty
from hwnas.search.select import (
    Scores,
    best_in_band,
    best_per_resolution,
    log_ratio_scores,
    top_in_band,
    uniform_scores,
)
from hwnas.search.slicing import slice_child
from hwnas.search.supernet import SuperNet
from hwnas.spaces.arch import Architecture
from hwnas.spaces.space import Option, SearchSpace, get_space
from hwnas.train.batches import Batches
from hwnas.train.checkpoints import (
    checkpoint_path,
    has_search_checkpoint,
    read_search_checkpoint,
    rng_states,
    set_rng_states,
    write_search_checkpoint,
)
from hwnas.train.config import TrainConfig
from hwnas.train.data import DataSplits, Images, load_splits
from hwnas.train.distributed import Group
from hwnas.train.precision import Precision
from hwnas.train.training import cosine, evaluate, param_groups, torch_device, train_child, training_layout

BN_BATCHES = 8  # batches to re-estimate BatchNorm statistics of the argmax architecture
# Adam moves a parameter by about its learning rate per step while the gradient keeps its sign, so
# lr = ALPHA_TRAVEL / steps lets a logit travel about 3 over the search: enough to take one of three
# choices from 1/3 to about 0.9, whatever the number of steps (a fixed 0.01 over ~90 CPU steps
# could move a logit by 0.9 at most, and the distribution stayed near uniform).
ALPHA_TRAVEL, ARCH_LR_MIN, ARCH_LR_MAX = 3.0, 1e-3, 0.1
BAND_CANDIDATES = 4  # the most probable architectures in the band, each scored through the supernet
EVOLVED_CANDIDATES = 3  # the best new architectures of the evolutionary search that join the candidates


@dataclass
class SearchResult:
    derivation: Derivation
    metrics: list[dict[str, Any]]
    out: Path
    seconds: float
    candidates: list[dict[str, Any]] = field(default_factory=list)  # see candidates.json
    per_budget: list[dict[str, Any]] = field(default_factory=list)  # see budgets.json (train once, search many)


def entropy(p: torch.Tensor) -> float:
    p = p.detach().clamp_min(1e-12)
    return float(-(p * p.log()).sum())


class Search:
    """One search run in a folder; see the module docstring."""

    def __init__(self, cfg: SearchConfig, out: str | Path, resume: bool = False, progress: bool = True,
                 group: Group | None = None) -> None:  # fmt: skip
        cfg.check()
        self.cfg = cfg
        self.out = Path(out)
        self.group = group or Group()  # under torchrun: this process's rank; only rank 0 writes
        self.group.check_batch(cfg.batch_size)
        self.progress = progress and self.group.main
        preset = get_space(cfg.space)
        cost = make_cost(
            cfg.cost, preset, cfg.lut, cfg.statistic
        )  # a missing or unreadable LUT fails before the data is read
        self.device = self.group.place(torch_device(cfg.torch_device))
        if has_search_checkpoint(self.out) and not resume:
            raise HwnasError(f"{self.out} already holds a search; pass --resume to continue it, or use another --out")
        if resume and not has_search_checkpoint(self.out):
            raise HwnasError(f"{self.out}: no checkpoint to resume from; run without --resume to start")
        self.skipped: set[str] = set()  # unreadable images skipped (--bad-images skip)
        self._streaming: dict[str, Any] = {
            "workers": cfg.workers,
            "bad_images": cfg.bad_images,
            "skipped": self.skipped,
        }
        self._resume_point: dict[str, Any] | None = None  # where a checkpoint taken inside an epoch stopped
        self._saved_at = time.perf_counter()
        self.splits = self._data(preset)
        self._streaming["recipe"] = self.splits.recipe  # how batches of these images are augmented and viewed
        # the data decides the classifier's width; the space's class count is a default for profiling
        self.space: SearchSpace = replace(preset, num_classes=len(self.splits.classes))
        self.cost: SearchCost = (
            cost if self.space == preset else make_cost(cfg.cost, self.space, cfg.lut, cfg.statistic)
        )
        for b in cfg.budgets:
            check_budget(self.space, self.cost, b)
        self.cheapest, self.costliest = check_budget(self.space, self.cost, cfg.budget)
        self.smallest, self.largest = self.cost.smallest(self.space)[0], self.cost.largest(self.space)[0]
        if cfg.finalists:
            self._check_band_holds_finalists()
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.net = training_layout(SuperNet(self.space, paths=cfg.paths).to(self.device), self.device)
        with torch.no_grad():  # the alphas start at zero: these are the per-factor uniform probabilities
            res, probs = self.net.choice_probs()
            self._uniform = (res.detach().cpu().double(), [p.detach().cpu().double() for p in probs])
        self.expected = self.cost.expected(self.space).to(self.device)
        self.steps_per_epoch = max(1, len(self.splits.weights) // cfg.batch_size)
        self.w_opt = torch.optim.SGD(param_groups(self.net, cfg.weight_decay), lr=cfg.lr, momentum=0.9, nesterov=True)
        self.w_sched = cosine(self.w_opt, cfg.epochs * self.steps_per_epoch)
        self.warmup = int(cfg.warmup_epochs or 0)  # resolved by cfg.check()
        arch_steps = max(1, (cfg.epochs - self.warmup) * self.steps_per_epoch)
        self.arch_lr = cfg.arch_lr or min(ARCH_LR_MAX, max(ARCH_LR_MIN, ALPHA_TRAVEL / arch_steps))
        self.a_opt = torch.optim.Adam(self.net.arch_parameters(), lr=self.arch_lr, betas=(0.9, 0.999),
                                      weight_decay=cfg.arch_weight_decay)  # fmt: skip
        self.penalty = Penalty(cfg.loss, cfg.budget, cfg.lambda_init, cfg.lambda_lr)
        self.w_precision = Precision(cfg.precision_train, self.device)  # autocast, and fp16's gradient scalers
        self.a_precision = Precision(cfg.precision_train, self.device)
        self.epoch = 0
        self.metrics: list[dict[str, Any]] = []
        self.candidates: list[dict[str, Any]] = []
        self.per_budget: list[dict[str, Any]] = []
        self.finalist_cost: dict[str, Any] | None = None  # the finalists' cost (search.json), when there are any
        self._alpha_start: torch.Tensor | None = None  # the logits at the start of the running epoch
        self.probs: list[dict[str, Any]] = []
        self.timing = {
            "weight_step_s": 0.0,
            "arch_step_s": 0.0,
            "cost_s": 0.0,
            "weight_steps": 0,
            "arch_steps": 0,
            "data_wait_s": 0.0,
            "loop_s": 0.0,
        }  # waiting for batches, of the training loop's wall time
        if resume:
            self._load()
        elif self.group.main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.out / "config.json", json.dumps(asdict(cfg), indent=2) + "\n")
        # the weight steps' passes go through DDP under torchrun (the supernet itself in one process)
        alphas = [name for name, _ in self.net.named_parameters() if name.endswith("alpha")]
        self.ddp = self.group.wrap(self.net, self.device, ignore=alphas)
        self._passes_left = 0  # forward-backward passes left in the running weight step

    # --- data --------------------------------------------------------------------------------
    @property
    def selection_images(self) -> Images:
        """The images candidates are scored on: validation and architecture images, which the
        weights never see (the architecture steps fit alphas, not the child networks' weights)."""
        return self.splits.unseen_by_weights()

    def _data(self, space: SearchSpace) -> DataSplits:
        cfg = self.cfg
        return load_splits(cfg.data, space.num_classes, space.in_channels, mode=cfg.data_mode,
                           bad_images=cfg.bad_images, limit=cfg.limit, seed=cfg.split_seed,
                           val_fraction=cfg.val_fraction, alpha_fraction=cfg.alpha_fraction,
                           progress=self.progress, augment=cfg.augment)  # fmt: skip

    # --- checkpoint --------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "config": asdict(self.cfg),
            "epoch": self.epoch,
            "net": self.net.state_dict(),
            "w_opt": self.w_opt.state_dict(),
            "w_sched": self.w_sched.state_dict(),
            "a_opt": self.a_opt.state_dict(),
            "lambda": self.penalty.lam,
            "metrics": self.metrics,
            "probs": self.probs,
            "timing": self.timing,
            "rng": rng_states(),
            "data": {"mean": self.splits.mean, "std": self.splits.std, "labels": _split_labels(self.splits)},
            "scalers": {"weights": self.w_precision.state(), "alphas": self.a_precision.state()},
        }

    def _save(self, mid_epoch: dict[str, Any] | None = None) -> None:
        """A checkpoint at the end of an epoch, or inside one (``mid_epoch``: where the epoch's
        batches, generators and sums stood after its last finished step)."""
        self._saved_at = time.perf_counter()
        if not self.group.main:
            return
        state = self._state()
        if mid_epoch is not None:
            state["mid_epoch"] = mid_epoch
        write_search_checkpoint(checkpoint_path(self.out), state)
        self._saved_at = time.perf_counter()

    def _load(self) -> None:
        path = checkpoint_path(self.out)
        state = read_search_checkpoint(self.out)
        saved = state["config"]
        saved = {**BEFORE_FIELD_EXISTED, **saved}
        changed = [
            f.name
            for f in fields(SearchConfig)
            if f.name not in HOW_IT_RUNS and saved.get(f.name) != getattr(self.cfg, f.name)
        ]
        if changed:
            diffs = ", ".join(f"{k}: {saved.get(k)!r} vs {getattr(self.cfg, k)!r}" for k in changed)
            raise HwnasError(f"{path} was made with other settings ({diffs}); resume with the same ones")
        try:
            self.net.load_state_dict(state["net"])
            self.w_opt.load_state_dict(state["w_opt"])
            self.w_sched.load_state_dict(state["w_sched"])
            self.a_opt.load_state_dict(state["a_opt"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise HwnasError(f"{path}: corrupt content ({first[:160]}); start a new --out") from None
        self.penalty.lam, self.epoch = float(state["lambda"]), int(state["epoch"])
        self.metrics, self.probs = state["metrics"], state["probs"]
        self.timing = {**self.timing, **state["timing"]}  # a run made before a figure existed lacks it
        set_rng_states(state["rng"], str(path))
        scalers = state.get("scalers") or {}
        try:
            self.w_precision.load(scalers.get("weights"))
            self.a_precision.load(scalers.get("alphas"))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise HwnasError(f"{path}: corrupt content (scalers: {exc}); start a new --out") from None
        self._same_data(state.get("data"), str(path))
        point = state.get("mid_epoch")
        if point is not None:
            try:
                self._resume_point = _checked_point(point, self.splits, self._alphas().shape)
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                first = (str(exc).splitlines() or [type(exc).__name__])[0]
                raise HwnasError(f"{path}: corrupt content (mid-epoch position: {first[:160]}); "
                                 "start a new --out") from None  # fmt: skip

    def _same_data(self, saved: Any, path: str) -> None:
        """A resumed run reads the images it began with, normalized as it began (a streamed run's
        normalization is estimated, and an image skipped since would move the estimate)."""
        if saved is None:  # made before checkpoints held their data's fingerprint
            return
        try:
            then, mean, std = saved["labels"], saved["mean"], saved["std"]
            same = isinstance(then, torch.Tensor) and torch.equal(then, _split_labels(self.splits))
            if not (isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor) and mean.shape == std.shape
                    == self.splits.mean.shape):  # fmt: skip
                raise ValueError("normalization")
        except (KeyError, TypeError, ValueError) as exc:
            raise HwnasError(f"{path}: corrupt content (data: {exc}); start a new --out") from None
        if not same:
            raise HwnasError(f"{path}: the dataset differs from the one this search began with ({len(then)} images in "
                             f"its splits then, {len(_split_labels(self.splits))} now, or other labels); resume with "
                             "the same --data, --limit and --split-seed, or start a new --out")  # fmt: skip
        self.splits.mean, self.splits.std = mean.float(), std.float()

    # --- loop --------------------------------------------------------------------------------
    def run(self) -> SearchResult:
        start = time.perf_counter()
        cfg = self.cfg
        with progress_bar(self.progress, status=True) as bar:
            done = self.epoch * self.steps_per_epoch + (self._resume_point or {}).get("step", 0)
            task = bar.add_task("searching", total=cfg.epochs * self.steps_per_epoch, completed=done,
                                status="")  # fmt: skip
            while self.epoch < cfg.epochs:
                t0 = time.perf_counter() - (self._resume_point or {}).get("seconds", 0.0)
                row = self._epoch(lambda: bar.advance(task))
                row["seconds"] = time.perf_counter() - t0
                self.metrics.append(row)
                self.epoch += 1
                self._check_ranks(f"after epoch {self.epoch}")
                self._save()
                self._write_logs()
                rate = self.steps_per_epoch * cfg.batch_size / max(1e-9, row["seconds"])  # all ranks' images
                bar.update(task, status=f"ep {self.epoch}: E[{cfg.cost}] {row['expected_cost']:.4g} "
                                        f"lambda {row['lambda']:.2f} val {row['val_acc']:.1%} {rate:.0f} img/s")  # fmt: skip
        d = self._select(cfg.budget)
        self._write_result(d)
        main = self.candidates  # the per-budget selections below replace self.candidates
        if cfg.budgets:
            self.per_budget = self._search_many()
            self.candidates = main
        return SearchResult(d, self.metrics, self.out, time.perf_counter() - start, main, self.per_budget)

    # --- train once, search many -----------------------------------------------------------
    def _search_many(self) -> list[dict[str, Any]]:
        """For every budget: from the trained alphas, one pass of architecture steps over the
        alphas split with that budget's penalty and the weights frozen (as HardCoRe-NAS searches
        many budgets on one supernet), then selection in its band; written to ``budget-B/``."""
        cfg = self.cfg
        trained = [a.detach().clone() for a in self.net.arch_parameters()]
        rows = []
        for i, budget in enumerate(sorted(cfg.budgets)):
            with torch.no_grad():
                for a, t in zip(self.net.arch_parameters(), trained, strict=True):
                    a.copy_(t)
            penalty = Penalty(cfg.loss, budget, cfg.lambda_init, cfg.lambda_lr)
            opt = torch.optim.Adam(self.net.arch_parameters(), lr=self.arch_lr)
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 900_000 + i)
            weights = self.net.weight_parameters()
            amp = Precision(cfg.precision_train, self.device)
            self.net.train()  # batch statistics, as in the search's own architecture steps
            for step, (x, y) in enumerate(Batches(self.splits.alphas, cfg.batch_size, self.splits.mean,
                                                  self.splits.std, gen, drop_last=True, device=self.device,
                                                  group=self.group, **self._streaming)):  # fmt: skip
                self._reseed_noise(100_000 + i, step, 2)
                self._arch_step(x, y, cfg.tau_end, weights, penalty, opt, amp)
            d = self._select(budget)
            self._check_ranks(f"after the search for budget {budget:g}")
            if self.group.main:
                folder = self.out / f"budget-{budget:g}"
                folder.mkdir(exist_ok=True)
                d.arch.save(folder / "arch.json")
                write_text_atomic(folder / "arch.txt", d.arch.to_str() + "\n")
                write_text_atomic(folder / "candidates.json", json.dumps(self.candidates, indent=2) + "\n")
            chosen = next(c for c in self.candidates if c["selected"])
            null = next((c for c in self.candidates if c["how"].startswith("null")), None)
            rows.append({"budget": budget, "arch": d.arch.to_str(), "cost": d.cost, "in_band": GROW_TO * budget <= d.cost
                         <= budget * (1 + 1e-9), "how": chosen["how"], "val_acc_supernet": chosen["val_acc_supernet"],
                         "layers_differing_from_null": null["layers_differing_from_selected"] if null else None})  # fmt: skip
        with torch.no_grad():
            for a, t in zip(self.net.arch_parameters(), trained, strict=True):
                a.copy_(t)
        if self.group.main:
            write_text_atomic(self.out / "budgets.json", json.dumps(rows, indent=2) + "\n")
        return rows

    # --- selection ---------------------------------------------------------------------------
    def _select(self, budget: float) -> Derivation:
        """Candidates in the band ``[0.9 B, B]``: the most probable ones (exact program over the
        log-ratio scores), the most probable at each resolution not yet among them, the greedy one
        (only when it lands in the band, or when the band holds no other), and the best ones of an evolutionary search seeded with them
        (:mod:`hwnas.search.evolution`, ``cfg.evolution`` evaluations). Each is scored by its
        supernet accuracy (BatchNorm re-estimated for it); the best is the result. The null
        derivation (the same program at uniform alphas) is scored and reported beside them, never
        selected. With ``selection_resolution="distribution"`` every candidate but the null
        derivation is at the resolution the distribution prefers (:meth:`_selection_space`)."""
        cfg, full = self.cfg, self.space
        name = f"searched-{cfg.space}-{cfg.cost}-{budget:g}"
        res, probs = self.net.choice_probs()
        res, probs = res.detach().cpu(), [p.detach().cpu() for p in probs]
        full_scores = log_ratio_scores(full, res, probs)
        space, scores = self._selection_space(res, full_scores, budget)
        greedy = derive(space, self.cost, budget, res[[full.resolutions.index(r) for r in space.resolutions]],
                        probs, name=name)  # fmt: skip
        lo = GROW_TO * budget
        found: list[tuple[str, Architecture]] = []
        most_probable = max(BAND_CANDIDATES, cfg.finalists)  # --finalists comes with one budget only
        for rank, arch in enumerate(top_in_band(space, self.cost, scores, lo, budget, most_probable, name=name)):
            found.append((f"most probable in [0.9 B, B], #{rank + 1}", arch))
        # The score sums one resolution term and a term per layer, so wider layers at a lower
        # resolution can out-score every network at the resolution the search prefers: the most
        # probable network at each resolution joins, and the supernet decides between them.
        for r, best_r in best_per_resolution(space, self.cost, scores, lo, budget, name=name).items():
            if not any(a.resolution == r for _, a in found):
                found.append((f"most probable in [0.9 B, B] at resolution {r}", best_r))
        in_band = lo <= greedy.cost <= budget * (1 + 1e-9)
        if all(a != greedy.arch for _, a in found) and (in_band or not found):  # the band first, when it has any
            found.append(("joint argmax, repaired / grown", greedy.arch))
        accuracy: dict[str, float] = {}
        images = self.selection_images  # joined once for every candidate

        def supernet_accuracy(arch: Architecture) -> float:
            key = arch.to_str()
            if key not in accuracy:
                self._recalibrate_bn(arch)
                accuracy[key] = evaluate(self.net, images, self.splits.mean, self.splits.std, self.device,
                                         streaming=self._streaming, group=self.group, arch=arch)  # fmt: skip
            return accuracy[key]

        if cfg.evolution > 0 and found:
            evolved = evolve(space, self.cost, lo, budget, supernet_accuracy, cfg.evolution + len(found),
                             seeds=[a for _, a in found], seed=cfg.seed)  # fmt: skip
            known = {a.to_str() for _, a in found}
            new = [e.arch for e in evolved if e.arch.to_str() not in known][:EVOLVED_CANDIDATES]
            found += [(f"evolution over the supernet, #{i + 1}", a) for i, a in enumerate(new)]
        rows = [self._candidate_row(how, arch, full_scores, supernet_accuracy) for how, arch in found]
        best = max(range(len(rows)), key=lambda i: (rows[i]["val_acc_supernet"], rows[i]["score"]))
        finalists = ""
        if cfg.finalists:
            best, finalists = self._finalists(rows, [a for _, a in found])
        rows[best]["selected"] = True
        arch = found[best][1]
        null = best_in_band(full, self.cost, uniform_scores(full), lo, budget, name=name)  # uniform: every resolution
        if null is not None:
            row = self._candidate_row("null derivation (uniform alphas)", null, full_scores, supernet_accuracy)
            row["layers_differing_from_selected"] = _differences(null, arch)
            rows.append(row)
        self.candidates = rows
        evaluated = f"; {len(accuracy)} architectures evaluated" if cfg.evolution > 0 else ""
        judge = finalists or f"best of {len(found)} candidates{evaluated}"
        steps = [*greedy.steps, f"selected: {rows[best]['how']} (supernet val accuracy "
                                f"{rows[best]['val_acc_supernet']:.1%}, {judge})"]  # fmt: skip
        return Derivation(arch, self.cost.of(arch), greedy.argmax, greedy.argmax_cost, steps)

    # --- finalists -------------------------------------------------------------------------
    def _check_band_holds_finalists(self) -> None:
        cfg = self.cfg
        if cfg.budgets:
            raise HwnasError("--finalists works with one budget; give one --budget-ms (or run one search per budget)")
        lo = GROW_TO * cfg.budget
        found = top_in_band(self.space, self.cost, uniform_scores(self.space), lo, cfg.budget, cfg.finalists)
        if len(found) < cfg.finalists:
            raise HwnasError(f"--finalists {cfg.finalists}: the band [{self.cost.fmt(lo)}, {self.cost.fmt(cfg.budget)}] "
                             f"holds only {len(found)} distinct networks; give --finalists {len(found)} or fewer")  # fmt: skip

    def _finalists(self, rows: list[dict[str, Any]], archs: list[Architecture]) -> tuple[int, str]:
        """Successive halving (:mod:`hwnas.search.finalists`) over the ``cfg.finalists`` candidates
        the supernet scores best; the winner's index in ``rows``, and a line for the derivation."""
        cfg = self.cfg
        order = sorted(range(len(rows)), key=lambda i: (-rows[i]["val_acc_supernet"], -rows[i]["score"], i))
        picked = order[: cfg.finalists]
        splits = self.splits
        judged = splits.judged_on_unseen()

        def train(i: int, epochs: int, checkpoint: Path) -> tuple[float, float]:
            arch = replace(archs[picked[i]], name=f"finalist {i + 1}/{len(picked)}")
            init = None
            if cfg.finalist_init == "supernet":
                self._recalibrate_bn(arch)
                init = slice_child(self.net, arch)
            result = train_child(arch, judged, epochs=epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                                 weight_decay=cfg.weight_decay, init=init, seed=cfg.seed, device=self.device,
                                 progress=self.progress, precision=cfg.precision_train, streaming=self._streaming,
                                 group=self.group, checkpoint=checkpoint, resume=checkpoint.exists())  # fmt: skip
            return result.val_acc, result.seconds

        def report(line: str) -> None:
            if self.progress:
                print(f"hwnas: finalists: {line}", file=sys.stderr)

        settings = {"finalists": cfg.finalists, "finalist_epochs": cfg.finalist_epochs,
                    "finalist_init": cfg.finalist_init, "seed": cfg.seed}  # fmt: skip
        state = run_halving(self.out, [rows[i] for i in picked], settings, train, report, write=self.group.main)
        for k, i in enumerate(picked):
            rows[i]["finalist"] = k + 1
            rows[i]["finalist_scores"] = [r["score"] for r in state["finalists"][k]["stages"]]
        winner = picked[state["winner"]]
        won = state["finalists"][state["winner"]]["stages"][-1]
        # one retraining: hwnas train's default epochs of the winner on every training image but val
        per_epoch = won["seconds"] / won["epochs"]
        share = (len(splits.weights) + len(splits.alphas)) / max(1, len(splits.weights))
        retraining = per_epoch * TrainConfig.epochs * share
        searching = sum(float(m.get("seconds", 0.0)) for m in self.metrics)
        self.finalist_cost = {"training_epochs": state["training_epochs"], "seconds": state["seconds"],
                              "retraining_seconds_estimate": retraining,
                              "in_retrainings": state["seconds"] / retraining if retraining else None,
                              "search_in_retrainings": (searching + state["seconds"]) / retraining if retraining
                              else None}  # fmt: skip
        line = (f"successive halving over {len(picked)} finalists from {cfg.finalist_init}, "
                f"{state['training_epochs']} epochs of training, score {won['score']:.1%} after {won['epochs']} "
                f"epoch(s) on the images the weights never saw")  # fmt: skip
        return winner, line

    def _selection_space(self, res: torch.Tensor, scores: Scores, budget: float) -> tuple[SearchSpace, Scores]:
        """The space selection draws its candidates from, and their scores: the whole space, or with
        ``selection_resolution="distribution"`` the space at the most probable resolution alone (the
        whole space at a tie, or where that resolution has no network within the budget)."""
        full = self.space
        top = int(res.argmax())
        if self.cfg.selection_resolution == "supernet" or int((res == res[top]).sum()) > 1:
            return full, scores
        one = replace(full, resolutions=(full.resolutions[top],))
        if self.cost.smallest(one)[1] > budget:
            return full, scores
        return one, Scores([scores.res[top]], scores.options)

    def _candidate_row(self, how: str, arch: Architecture, scores: Scores,
                       accuracy: Callable[[Architecture], float]) -> dict[str, Any]:  # fmt: skip
        return {"how": how, "arch": arch.to_str(), "cost": self.cost.of(arch), "score": scores.of(self.space, arch),
                "val_acc_supernet": accuracy(arch), "selected": False}  # fmt: skip

    def _alphas(self) -> torch.Tensor:
        return torch.cat([a.detach().flatten().cpu() for a in self.net.arch_parameters()])

    def _check_ranks(self, when: str) -> None:
        """Under torchrun: stop if the architecture parameters or the weights differ between ranks."""
        self.group.check_same("architecture parameters", self.net.arch_parameters(), when)
        self.group.check_same("supernet weights", self.net.weight_parameters(), when)

    def _reseed_noise(self, epoch: int, step: int, phase: int) -> None:
        """Seed torch's CPU generator, which draws the Gumbel noise, from (seed, epoch, step, phase):
        every rank draws the same noise by construction, whatever else drew numbers before, and
        a resumed run draws what the uninterrupted one drew."""
        key = ((self.cfg.seed * 1_000_003 + epoch) * 1_000_003 + step) * 4 + phase
        torch.default_generator.manual_seed(key % (2**63))

    def _epoch(self, advance: Any) -> dict[str, Any]:
        cfg, net, dev = self.cfg, self.net, self.device
        point, self._resume_point = self._resume_point, None
        tau = cfg.tau(self.epoch)
        search_arch = self.epoch >= self.warmup
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.epoch)
        gen_a = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.epoch + 500_000)
        data = self.splits
        alpha_batches = _Cycle(lambda state: Batches(data.alphas, cfg.batch_size, data.mean, data.std, gen_a,
                                                     drop_last=True, device=dev, state=state, group=self.group,
                                                     **self._streaming),
                               point["alphas"] if point else None)  # fmt: skip
        weight_batches = Batches(data.weights, cfg.batch_size, data.mean, data.std, gen, augment=True, drop_last=True,
                                 device=dev, state=point["weights"] if point else None, group=self.group,
                                 **self._streaming)  # fmt: skip
        sums = {"w_loss": 0.0, "w_acc": 0.0, "a_ce": 0.0, "n": 0, "na": 0}
        self._alpha_start = self._alphas()
        if point is not None:  # resumed inside this epoch: go on from its last finished step
            gen.set_state(point["gen"])
            gen_a.set_state(point["gen_a"])
            sums, self._alpha_start = {**sums, **point["sums"]}, point["alpha_start"]
        started = time.perf_counter() - (point["seconds"] if point else 0.0)
        weights = net.weight_parameters()
        batches_in = iter(weight_batches)
        while True:
            fetch = time.perf_counter()  # the time a step waits for its batch is the data's share of the loop
            pair = next(batches_in, None)
            if pair is None:
                break
            x, y = pair
            self.timing["data_wait_s"] += time.perf_counter() - fetch
            step = weight_batches.given - 1
            net.train()
            uniform = cfg.child_sampling == "uniform" or (cfg.child_sampling == "mixed" and step % 2 == 0)
            t = time.perf_counter()
            x, y = x.to(dev), y.to(dev)
            self.w_opt.zero_grad(set_to_none=True)
            self.a_opt.zero_grad(set_to_none=True)
            amp = self.w_precision
            self._reseed_noise(self.epoch, step, 0)
            # one forward-backward pass per trained network; under torchrun the gradients are averaged
            # over the ranks once, with the step's last pass
            self._passes_left = int(cfg.relaxed_weights) + (3 if cfg.sandwich else int(cfg.sampled_child))
            if cfg.relaxed_weights:
                with self._weight_pass():
                    with amp.autocast():
                        logits = self.ddp(x, tau)
                        loss = F.cross_entropy(logits, y)
                    amp.backward(loss)
            if cfg.sandwich:
                big = self._sandwich_step(x, y, gen, uniform)
            elif cfg.sampled_child:
                with self._weight_pass():
                    with amp.autocast():
                        child = self.ddp(x, arch=self._sample_child(gen, uniform))
                        child_loss = F.cross_entropy(child, y)
                    amp.backward(child_loss)
            if not cfg.relaxed_weights:  # the training figures are then the largest's (or the child's)
                logits = (big if cfg.sandwich else child).detach().float()
                loss = F.cross_entropy(logits, y)
            amp.step(self.w_opt)
            self.w_sched.step()
            self.timing["weight_step_s"] += time.perf_counter() - t
            self.timing["weight_steps"] += 1
            w_loss, w_acc, a_ce = float(loss.detach()), float((logits.argmax(1) == y).float().mean()), 0.0
            if search_arch:
                fetch_a = time.perf_counter()
                xa, ya = next(alpha_batches)
                self.timing["data_wait_s"] += time.perf_counter() - fetch_a
                self._reseed_noise(self.epoch, step, 1)
                a_ce = self._arch_step(xa.to(dev), ya.to(dev), tau, weights)
            last = weight_batches.given >= len(weight_batches)
            save = not last and time.perf_counter() - self._saved_at >= cfg.checkpoint_every
            if self.group.active:  # the step's figures over the whole global batch; rank 0's clock decides the save
                w_loss, w_acc, a_ce, votes = self.group.sums(
                    [w_loss, w_acc, a_ce, float(save and self.group.main)], dev
                )
                w_loss, w_acc, a_ce, save = (w_loss / self.group.world, w_acc / self.group.world,
                                             a_ce / self.group.world, votes > 0)  # fmt: skip
            sums["w_loss"] += w_loss
            sums["w_acc"] += w_acc
            sums["n"] += 1
            if search_arch:
                sums["a_ce"] += a_ce
                sums["na"] += 1
            advance()
            self.timing["loop_s"] += time.perf_counter() - fetch
            if save:
                self._save({"step": step + 1, "weights": weight_batches.state(), "alphas": alpha_batches.state(),
                            "gen": gen.get_state(), "gen_a": gen_a.get_state(), "sums": dict(sums),
                            "alpha_start": self._alpha_start, "seconds": time.perf_counter() - started})  # fmt: skip
        return self._epoch_row(tau, sums)

    def _sandwich_step(
        self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, uniform: bool = False
    ) -> torch.Tensor:
        """The sandwich rule with in-place distillation (BigNAS, OFA): the largest child learns from
        the labels, the smallest and one sampled child (see ``_sample_child``) learn from the
        largest's predictions. Gradients add to those of the relaxed supernet's step, if any
        (``relaxed_weights``)."""
        net, amp = self.ddp, self.w_precision
        with self._weight_pass():
            with amp.autocast():
                big = net(x, arch=self.largest)
                big_loss = F.cross_entropy(big, y)
            amp.backward(big_loss)
        teacher = big.detach().float().softmax(1)
        for arch in (self.smallest, self._sample_child(gen, uniform)):
            with self._weight_pass():
                with amp.autocast():
                    out = net(x, arch=arch)
                amp.backward(-(teacher * out.float().log_softmax(1)).sum(1).mean())
        return big

    def _weight_pass(self) -> AbstractContextManager[object]:
        """The context of one forward-backward pass of a weight step: its gradients stay on this rank
        until the step's last pass, whose backward averages them all over the ranks (DDP)."""
        self._passes_left -= 1
        return self.group.no_sync(self.ddp, sync=self._passes_left <= 0)

    def _sample_child(self, gen: torch.Generator, uniform: bool = False) -> Architecture:
        """A child drawn from the choice probabilities (uniform before the alphas move), or with
        ``uniform`` from the uniform distribution over each factor whatever the alphas."""
        with torch.no_grad():
            res, probs = self._uniform if uniform else self.net.choice_probs()
            r = int(torch.multinomial(res.detach().cpu().double(), 1, generator=gen))
            options: list[Option] = []
            for layer, p in zip(self.space.layers, probs, strict=True):
                p = p.detach().cpu().double()
                if layer.tied:  # its probabilities are conditional on the width, which its input fixed
                    p = p * torch.tensor([float(o.c == options[-1].c) for o in layer.options], dtype=p.dtype)
                options.append(layer.options[int(torch.multinomial(p, 1, generator=gen))])
        return self.space.architecture(self.space.resolutions[r], options)

    def _arch_step(self, x: torch.Tensor, y: torch.Tensor, tau: float, weights: list[torch.nn.Parameter],
                   penalty: Penalty | None = None, opt: torch.optim.Optimizer | None = None,
                   amp: Precision | None = None) -> float:  # fmt: skip
        penalty, opt = penalty or self.penalty, opt or self.a_opt
        amp = amp or self.a_precision
        t = time.perf_counter()
        for p in weights:
            p.requires_grad_(False)
        try:
            with amp.autocast():
                ce = self.net.resolution_loss(x, y, tau).float()
            tc = time.perf_counter()
            e_cost = self.expected(*self.net.choice_probs())
            self.timing["cost_s"] += time.perf_counter() - tc
            loss = penalty(ce, e_cost)
            opt.zero_grad(set_to_none=True)
            amp.backward(loss)
            # every rank's share of the batch: the logits' gradients averaged, so they move alike
            self.group.average_grads(self.net.arch_parameters())
            amp.step(opt)
        finally:
            for p in weights:
                p.requires_grad_(True)
        penalty.update(float(e_cost.detach()))
        self.timing["arch_step_s"] += time.perf_counter() - t
        self.timing["arch_steps"] += 1
        return float(ce.detach())

    @torch.no_grad()
    def _epoch_row(self, tau: float, sums: dict[str, float]) -> dict[str, Any]:
        net = self.net
        res, probs = net.choice_probs()
        e_cost = float(self.expected(res, probs))
        argmax = net.derive()
        self._recalibrate_bn(argmax)
        val = evaluate(net, self.splits.val, self.splits.mean, self.splits.std, self.device,
                       streaming=self._streaming, group=self.group, arch=argmax)  # fmt: skip
        alphas = self._alphas()
        start = self._alpha_start if self._alpha_start is not None else alphas
        moved = {"alpha_max_change": float((alphas - start).abs().max()), "alpha_max_abs": float(alphas.abs().max())}
        layer_entropy = {}
        for i, (space_layer, p) in enumerate(zip(self.space.layers, probs, strict=True)):
            if space_layer.tied:  # conditional on the width: the same block of probabilities for every width
                p = p[torch.tensor([o.c == space_layer.channels[0] for o in space_layer.options])]
            layer_entropy[f"entropy_layer_{i}"] = entropy(p) / math.log(max(2, p.numel()))
        ent: dict[str, list[float]] = {"op": [], "c": [], "e": []}
        for layer in net.super_layers():
            ent["op"].append(entropy(layer.op_factor.probs()))
            if not layer.tied:  # a tied layer has no channel choice of its own
                ent["c"].append(entropy(layer.c_factor.probs()))
            ent["e"].append(entropy(layer.e_factor.probs()))
        epoch = self.epoch + 1
        for li, layer in enumerate(net.super_layers()):
            for factor, names, p in (("op", layer.layer.ops, layer.op_factor.probs()),
                                     ("channels", layer.layer.channels, layer.c_factor.probs()),
                                     ("expansion", layer.expansions, layer.e_factor.probs())):  # fmt: skip
                if len(names) > 1 and len(p) == len(names):  # a tied layer's channel factor has no choice
                    for name, v in zip(names, p.tolist(), strict=True):
                        self.probs.append(
                            {"epoch": epoch, "layer": li, "factor": factor, "choice": str(name), "prob": v}
                        )
        for name, v in zip(self.space.resolutions, res.tolist(), strict=True):
            self.probs.append({"epoch": epoch, "layer": -1, "factor": "resolution", "choice": str(name), "prob": v})
        n, na = max(1, sums["n"]), max(1, sums["na"])
        return {
            "epoch": epoch, "tau": tau, "lambda": self.penalty.lam, "train_ce": sums["w_loss"] / n,
            "train_acc": sums["w_acc"] / n, "arch_ce": sums["a_ce"] / na if sums["na"] else float("nan"),
            "expected_cost": e_cost, "budget": self.cfg.budget, "val_acc": val,
            "entropy_op": float(np.mean(ent["op"])), "entropy_channels": float(np.mean(ent["c"])),
            "entropy_expansion": float(np.mean(ent["e"])), "entropy_resolution": entropy(res),
            "argmax_cost": self.cost.of(argmax), "argmax": argmax.to_str(), "arch_lr": self.arch_lr,
            "images_skipped": len(self.skipped), **moved,
            **layer_entropy,
        }  # fmt: skip

    def _recalibrate_bn(self, arch: Architecture) -> None:
        """BatchNorm running statistics for ``arch`` alone (the supernet's are of the mixture)."""
        bns = [m for m in self.net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        self.net.train()
        gen = torch.Generator().manual_seed(self.cfg.seed + 17)
        cpu_state = torch.get_rng_state()
        shown = Batches(self.splits.weights, self.cfg.batch_size, self.splits.mean, self.splits.std, gen,
                        group=self.group, **self._streaming)  # fmt: skip
        shown.stop = min(shown.stop, BN_BATCHES * self.cfg.batch_size)  # decode no more than it uses
        for x, _ in shown:
            self.net(x.to(self.device), arch=arch)
        torch.set_rng_state(cpu_state)  # the recalibration must not shift the search's random stream
        # under torchrun each rank saw its share of every batch: the statistics are the ranks' mean
        self.group.average_([t for m in bns for t in (m.running_mean, m.running_var) if t is not None])
        for m in bns:
            m.momentum = 0.1
        self.net.eval()

    # --- outputs -----------------------------------------------------------------------------
    def _write_logs(self) -> None:
        if not self.group.main:
            return
        import pandas as pd

        write_text_atomic(self.out / "metrics.csv", pd.DataFrame(self.metrics).to_csv(index=False))
        write_text_atomic(self.out / "probs.csv", pd.DataFrame(self.probs).to_csv(index=False))

    def _write_result(self, d: Derivation) -> None:
        if not self.group.main:
            return
        from hwnas.search.run_plots import write_plots

        d.arch.save(self.out / "arch.json")
        write_text_atomic(self.out / "arch.txt", d.arch.to_str() + "\n")
        t = self.timing
        summary = {
            "space": self.space.name, "cost": self.cfg.cost, "unit": self.cost.unit, "budget": self.cfg.budget,
            "lut": self.cost.source or None, "arch": d.arch.to_str(), "predicted_cost": d.cost,
            "argmax": d.argmax.to_str(), "argmax_cost": d.argmax_cost, "derivation_steps": d.steps,
            "space_cheapest": self.cheapest, "space_costliest": self.costliest, "epochs": self.cfg.epochs,
            "final_val_acc_supernet": self.metrics[-1]["val_acc"] if self.metrics else None,
            "classes": self.splits.classes, "images_skipped": sorted(self.skipped),
            "compute_time": {  # wall-clock milliseconds of this machine, not predicted costs
                "weight_step_ms": 1e3 * t["weight_step_s"] / max(1, t["weight_steps"]),
                "arch_step_ms": 1e3 * t["arch_step_s"] / max(1, t["arch_steps"]),
                "expected_cost_ms_per_arch_step": 1e3 * t["cost_s"] / max(1, t["arch_steps"]),
                "data_wait_share": t["data_wait_s"] / t["loop_s"] if t["loop_s"] else None,
                "images_per_s": t["weight_steps"] * self.cfg.batch_size / t["loop_s"] if t["loop_s"] else None,
            },
        }  # fmt: skip
        if self.finalist_cost is not None:
            summary["finalists"] = {"k": self.cfg.finalists, "epochs": self.cfg.finalist_epochs,
                                    "init": self.cfg.finalist_init, **self.finalist_cost}  # fmt: skip
        null = next((c for c in self.candidates if c["how"].startswith("null")), None)
        summary["null_derivation"] = null["arch"] if null else None
        summary["layers_differing_from_null"] = null["layers_differing_from_selected"] if null else None
        write_text_atomic(self.out / "search.json", json.dumps(summary, indent=2) + "\n")
        write_text_atomic(self.out / "candidates.json", json.dumps(self.candidates, indent=2) + "\n")
        write_plots(self.out, self.metrics, self.probs, self.cost.unit)


def _differences(a: Architecture, b: Architecture) -> int:
    """Layers whose blocks differ between two architectures of one space, plus 1 for the resolution."""
    return sum(x != y for x, y in zip(a.blocks, b.blocks, strict=True)) + (a.resolution != b.resolution)


def _split_labels(splits: DataSplits) -> torch.Tensor:
    """The labels of the weights, alphas and val splits in order: what a resumed run must find again."""
    return torch.cat([splits.weights.y, splits.alphas.y, splits.val.y]).to(torch.int32)


class _Cycle:
    """Batches of a split pass after pass without end (the architecture steps' alphas split); a
    pass is made by ``make(state)``, the first one from ``state`` when resumed."""

    def __init__(self, make: Callable[[dict[str, Any] | None], Batches], state: dict[str, Any] | None) -> None:
        self.make = make
        self.current: Batches | None = make(state) if state is not None else None
        self.it: Iterator[tuple[torch.Tensor, torch.Tensor]] | None = (
            iter(self.current) if self.current is not None else None)  # fmt: skip

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        while True:
            fresh = self.it is None
            if self.it is None:
                self.current = self.make(None)
                self.it = iter(self.current)
            item = next(self.it, None)
            if item is not None:
                return item
            if fresh:
                raise HwnasError("the alphas split is smaller than one batch; use more data or a smaller --batch-size")
            self.it = None

    def state(self) -> dict[str, Any] | None:
        return self.current.state() if self.current is not None else None


def _checked_point(point: Any, splits: DataSplits, alphas: torch.Size) -> dict[str, Any]:
    """A checkpoint's mid-epoch position, its fields type-checked against the splits."""
    for name in ("gen", "gen_a"):
        if not (isinstance(point[name], torch.Tensor) and point[name].dtype == torch.uint8):
            raise ValueError(f"{name} is not a generator state")
    for name, split in (("weights", splits.weights), ("alphas", splits.alphas)):
        part = point[name]
        if part is None and name == "alphas":
            continue
        order = part["order"]
        if not (isinstance(order, torch.Tensor) and order.ndim == 1 and len(order) == len(split)):
            raise ValueError(f"the {name} order does not cover the {name} split's {len(split)} images")
        if sorted(order.tolist()) != list(range(len(split))) or not 0 <= int(part["given"]) <= len(split):
            raise ValueError(f"the {name} order is not a permutation of the split")
    if not (isinstance(point["alpha_start"], torch.Tensor) and point["alpha_start"].shape == alphas):
        raise ValueError("the alphas at the epoch's start do not fit this supernet")
    if not isinstance(point["sums"], dict):
        raise ValueError("sums")
    return {**point, "step": int(point["step"]), "seconds": float(point["seconds"])}


def run_search(cfg: SearchConfig, out: str | Path, resume: bool = False, progress: bool = True) -> SearchResult:
    return Search(cfg, out, resume=resume, progress=progress).run()
