"""The two files hwnas writes weights to, read and written here and nowhere else.

``child.safetensors`` (``hwnas train``, read by ``hwnas export``)
    format ``hwnas.child``: the architecture (its JSON form), the weights (a state dict), the
    input normalization (``mean``, ``std``), the scores and the training settings.
``checkpoint.safetensors`` (in a search's run folder, read by ``--resume`` and by
``hwnas train --init supernet``)
    format ``hwnas.search-checkpoint``: the search configuration, the supernet's weights, the
    optimizer and schedule states, the dual variable, the logs and the random number generators'
    states, all as tensors and plain data (:mod:`hwnas.core.tensorfile`).
``OUT.checkpoint`` (beside ``hwnas train``'s ``--out`` while it trains, read by ``--resume``)
    format ``hwnas.train-checkpoint``: what the training was started with, the epochs done, the
    child's weights, the optimizer, schedule and gradient scaler states, the history and the random
    number generators' states. It is removed once the child file is written.

Version 1 of both formats was a ``torch.save`` pickle (``child.pt``, ``checkpoint.pt``), which
can run code when loaded. Such files are refused with a message that says how to re-create them;
they are never unpickled (see :mod:`hwnas.core.tensorfile` for why not even with ``weights_only``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hwnas.core import tensorfile
from hwnas.core.errors import HwnasError
from hwnas.core.tensorfile import PickleFileError, TensorFileError
from hwnas.spaces.arch import Architecture

CHILD_FORMAT, CHILD_VERSION = "hwnas.child", 2
SEARCH_FORMAT, SEARCH_VERSION = "hwnas.search-checkpoint", 2
TRAIN_FORMAT, TRAIN_VERSION = "hwnas.train-checkpoint", 1
CHILD_FILE = "child.safetensors"
CHECKPOINT = "checkpoint.safetensors"
LEGACY_CHECKPOINT = "checkpoint.pt"  # version 1 (a pickle); recognised only to refuse it

_TRAIN_HINT = "'hwnas train --arch ARCH.json --data D --out child.safetensors'"


# --- child files --------------------------------------------------------------------------------
@dataclass
class ChildFile:
    """What a child file holds. ``arch`` is None for a bare state dict (weights only)."""

    arch: Architecture | None
    weights: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)


def write_child(path: str | Path, arch: Architecture, weights: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write a child file atomically. ``meta`` is plain data (normalization, scores, settings)."""
    tree = {"arch": arch.to_dict(), "state_dict": dict(weights), "meta": meta}
    tensorfile.write(path, CHILD_FORMAT, CHILD_VERSION, tree)


def read_child(path: str | Path) -> ChildFile:
    """A child file, or a plain safetensors state dict (``arch`` None); never a pickle."""
    p = Path(path)
    try:
        content = tensorfile.read(p, CHILD_FORMAT, CHILD_VERSION, "weights file", allow_bare=True)
    except PickleFileError as exc:
        raise HwnasError(f"{exc}; re-create it with {_TRAIN_HINT}, or save a bare state dict with "
                         "safetensors.torch.save_file(model.state_dict(), 'w.safetensors') and pass --arch") from None  # fmt: skip
    except TensorFileError as exc:
        if "no such" in str(exc):
            raise HwnasError(f"{exc}; train one with {_TRAIN_HINT}") from None
        raise
    if content.version == 0:  # bare tensors
        return ChildFile(None, content.tree)
    tree = content.tree
    weights = tensorfile.tensor_dict(tensorfile.field(tree, "state_dict", dict, str(p)), "state_dict", str(p))
    arch = Architecture.from_dict(tensorfile.field(tree, "arch", dict, str(p)), str(p))
    meta = tensorfile.field(tree, "meta", dict, str(p))
    for key in ("mean", "std"):
        value = meta.get(key)
        if value is not None and not (
            isinstance(value, list)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value)
            and (key != "std" or all(v > 0 for v in value))
        ):
            raise TensorFileError(f"{p}: corrupt content (meta.{key} must be a list of finite numbers"
                                  f"{', all > 0' if key == 'std' else ''})")  # fmt: skip
    return ChildFile(arch, weights, meta)


# --- random number generators as data ----------------------------------------------------------------
def rng_states() -> dict[str, Any]:
    """The states of torch's, Python's and numpy's global generators, as tensors and plain data."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {
            "kind": str(kind),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }


def set_rng_states(state: Any, source: str) -> None:
    """Restore what :func:`rng_states` returned; a malformed state raises a one-line error."""
    try:
        t, py, npy = state["torch"], state["python"], state["numpy"]
        if not (isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.ndim == 1):
            raise ValueError("torch state")
        ints = py["state"]
        if not (isinstance(ints, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in ints)):
            raise ValueError("python state")
        keys = npy["keys"]
        if not (
            isinstance(keys, list) and len(keys) == 624 and all(isinstance(v, int) and 0 <= v < 2**32 for v in keys)
        ):
            raise ValueError("numpy state")
        np_state = (str(npy["kind"]), np.array(keys, dtype=np.uint32), int(npy["pos"]), int(npy["has_gauss"]),
                    float(npy["cached_gaussian"]))  # fmt: skip
        py_state = (int(py["version"]), tuple(ints), None if py["gauss"] is None else float(py["gauss"]))
        old_torch = torch.get_rng_state()
        torch.set_rng_state(t)
        try:
            random.setstate(py_state)
            np.random.set_state(np_state)
        except BaseException:
            torch.set_rng_state(old_torch)
            raise
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise TensorFileError(f"{source}: corrupt content (random number generator states: {exc})") from None


# --- search checkpoints ------------------------------------------------------------------------------
# Field name -> type of the value a checkpoint must hold.
_SEARCH_FIELDS: dict[str, type | tuple[type, ...]] = {
    "config": dict, "epoch": int, "net": dict, "w_opt": dict, "w_sched": dict, "a_opt": dict,
    "lambda": (int, float), "metrics": list, "probs": list, "timing": dict, "rng": dict,
}  # fmt: skip


def write_search_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a search checkpoint atomically (``state`` holds the fields of ``_SEARCH_FIELDS``)."""
    missing = set(_SEARCH_FIELDS) - set(state)
    if missing:
        raise ValueError(f"search checkpoint without {sorted(missing)}")
    tensorfile.write(path, SEARCH_FORMAT, SEARCH_VERSION, state)


def checkpoint_path(run: str | Path) -> Path:
    return Path(run) / CHECKPOINT


def read_search_checkpoint(run: str | Path) -> dict[str, Any]:
    """The checkpoint of the search in folder ``run``, its fields type-checked."""
    path = checkpoint_path(run)
    legacy = Path(run) / LEGACY_CHECKPOINT
    if not path.exists() and legacy.exists():
        raise HwnasError(f"{legacy}: a search checkpoint of hwnas 0.1 (a pickle, which can run code when loaded); "
                         "hwnas no longer opens those: start the search again in a new run folder")  # fmt: skip
    if not path.is_file():
        raise HwnasError(f"{path}: no search checkpoint there; give the folder of a 'hwnas search' run")
    try:
        content = tensorfile.read(path, SEARCH_FORMAT, SEARCH_VERSION, "search checkpoint")
    except PickleFileError as exc:
        raise HwnasError(f"{exc}; start the search again in a new run folder") from None
    return _checked(content.tree, _SEARCH_FIELDS, "net", 0, path)


def _checked(state: Any, fields: dict[str, type | tuple[type, ...]], weights: str, first_epoch: int,
             path: str | Path) -> dict[str, Any]:  # fmt: skip
    """A checkpoint's ``state`` with every field of ``fields`` type-checked, ``weights`` a dict of
    tensors and ``epoch`` at least ``first_epoch``; else a one-line error naming what is wrong."""
    for name, kind in fields.items():
        tensorfile.field(state, name, kind, str(path))
    tensorfile.tensor_dict(state[weights], weights, str(path))
    if state["epoch"] < first_epoch:
        raise TensorFileError(f"{path}: corrupt content (epoch {state['epoch']})")
    return dict(state)


def has_search_checkpoint(run: str | Path) -> bool:
    """Whether ``run`` holds a search to resume (a legacy one counts, so that it is refused, not overwritten)."""
    return checkpoint_path(run).exists() or (Path(run) / LEGACY_CHECKPOINT).exists()


# --- training checkpoints ----------------------------------------------------------------------------
_TRAIN_FIELDS: dict[str, type | tuple[type, ...]] = {
    "identity": dict, "epoch": int, "model": dict, "opt": dict, "sched": dict, "amp": dict, "history": list,
    "seconds": (int, float), "rng": dict,
}  # fmt: skip


def train_checkpoint_path(out: str | Path) -> Path:
    """Where ``hwnas train --out OUT`` keeps its checkpoint while it trains."""
    return Path(f"{out}.checkpoint")


def write_train_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically (``state`` holds the fields of ``_TRAIN_FIELDS``)."""
    missing = set(_TRAIN_FIELDS) - set(state)
    if missing:
        raise ValueError(f"training checkpoint without {sorted(missing)}")
    tensorfile.write(path, TRAIN_FORMAT, TRAIN_VERSION, state)


def read_train_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint, its fields type-checked."""
    if not Path(path).is_file():
        raise HwnasError(f"{path}: no interrupted training there; drop --resume to train from the start")
    try:
        state = tensorfile.read(path, TRAIN_FORMAT, TRAIN_VERSION, "training checkpoint").tree
    except PickleFileError as exc:
        raise HwnasError(f"{exc}; delete it and train again") from None
    return _checked(state, _TRAIN_FIELDS, "model", 1, path)  # written after an epoch, never before
