"""The search checkpoint's fields and random number generator states, read back in this process
(the resume tests read them in a child process, where mutation testing cannot see them)."""

from __future__ import annotations

import copy
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hwnas.core import tensorfile
from hwnas.core.errors import HwnasError
from hwnas.core.tensorfile import TensorFileError
from hwnas.train.checkpoints import (
    SEARCH_FORMAT,
    SEARCH_VERSION,
    has_search_checkpoint,
    read_search_checkpoint,
    rng_states,
    set_rng_states,
    write_search_checkpoint,
)


def _saved() -> dict[str, Any]:
    """Generator states with a cached gaussian in both Python's and numpy's, through a file."""
    torch.manual_seed(1)
    random.seed(2)
    random.gauss(0, 1)  # Python caches the second value of the pair
    np.random.seed(3)
    np.random.standard_normal()  # so does numpy
    return tensorfile.loads(tensorfile.dumps("t", 1, rng_states()), "f", "t", 1).tree


def _draws() -> tuple[torch.Tensor, float, float, np.ndarray]:
    return torch.rand(3), random.gauss(0, 1), random.random(), np.random.standard_normal(2)


def test_restored_generators_continue_with_the_same_draws_cached_gaussians_included() -> None:
    saved = _saved()
    want = _draws()
    torch.manual_seed(9)
    random.seed(9)
    np.random.seed(9)
    set_rng_states(saved, "f")
    got = _draws()
    assert torch.equal(want[0], got[0]) and want[1:3] == got[1:3] and np.array_equal(want[3], got[3])


def test_a_numpy_key_of_zero_is_a_valid_state() -> None:
    saved = _saved()
    saved["numpy"]["keys"][5] = 0
    set_rng_states(saved, "f")
    assert int(np.random.get_state()[1][5]) == 0


def _corrupt(part: str, key: str, value: Any) -> dict[str, Any]:
    state = copy.deepcopy(_saved())
    if part == "torch":
        state["torch"] = value
    else:
        state[part][key] = value
    return state


@pytest.mark.parametrize(
    ("part", "key", "value", "named"),
    [
        ("torch", "", torch.zeros(5000, dtype=torch.float32), "torch state"),
        ("torch", "", torch.zeros(2, 2500, dtype=torch.uint8), "torch state"),
        ("torch", "", "not a tensor", "torch state"),
        ("python", "state", {}, "python state"),
        ("python", "state", [True] * 625, "python state"),
        ("python", "state", [1.5] * 625, "python state"),
        ("numpy", "keys", [1] * 623, "numpy state"),
        ("numpy", "keys", [2**32] * 624, "numpy state"),
        ("numpy", "keys", [-1] * 624, "numpy state"),
        ("numpy", "keys", [1.5] * 624, "numpy state"),
    ],
)
def test_a_malformed_state_names_the_generator_and_changes_nothing(part: str, key: str, value: Any, named: str) -> None:
    state = _corrupt(part, key, value)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    with pytest.raises(TensorFileError, match=rf"^f: corrupt content \(random number generator states: {named}\)$"):
        set_rng_states(state, "f")
    assert torch.equal(torch.get_rng_state(), before)


def test_a_failure_after_torch_was_restored_puts_torch_back() -> None:
    state = _corrupt("numpy", "kind", "NOT-A-GENERATOR")  # numpy refuses it after torch's state was set
    torch.manual_seed(5)
    before = torch.get_rng_state()
    with pytest.raises(TensorFileError, match="random number generator states"):
        set_rng_states(state, "f")
    assert torch.equal(torch.get_rng_state(), before)


def _state() -> dict[str, Any]:
    return {"config": {"space": "tiny"}, "epoch": 3, "net": {"w": torch.arange(4.0)}, "w_opt": {}, "w_sched": {},
            "a_opt": {}, "lambda": 0.5, "metrics": [{"epoch": 1}], "probs": [], "timing": {}, "rng": rng_states()}  # fmt: skip


def test_a_checkpoint_reads_back_as_written(tmp_path: Path) -> None:
    write_search_checkpoint(tmp_path / "checkpoint.safetensors", _state())
    assert has_search_checkpoint(tmp_path)
    got = read_search_checkpoint(tmp_path)
    assert got["epoch"] == 3 and got["lambda"] == 0.5 and got["config"] == {"space": "tiny"}
    assert torch.equal(got["net"]["w"], torch.arange(4.0)) and got["metrics"] == [{"epoch": 1}]


def test_a_checkpoint_at_epoch_0_is_valid(tmp_path: Path) -> None:
    """``epoch`` counts finished epochs: 0 is a count (the search writes from 1 on), only a negative is corrupt."""
    write_search_checkpoint(tmp_path / "checkpoint.safetensors", {**_state(), "epoch": 0})
    assert read_search_checkpoint(tmp_path)["epoch"] == 0


def test_writing_a_checkpoint_without_a_field_is_refused() -> None:
    state = _state()
    del state["timing"], state["rng"]
    with pytest.raises(ValueError, match=re.escape("search checkpoint without ['rng', 'timing']")):
        write_search_checkpoint("unused.safetensors", state)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"epoch": -1}, "epoch -1"),
        ({"epoch": 1.5}, "epoch"),
        ({"epoch": True}, "epoch"),
        ({"lambda": "x"}, "lambda"),
        ({"metrics": {}}, "metrics"),
        ({"net": {"w": [1, 2]}}, "net"),
        ({"rng": None}, "rng"),
    ],
)
def test_a_checkpoint_with_a_bad_field_is_refused_by_name(tmp_path: Path, change: dict[str, Any], words: str) -> None:
    tensorfile.write(tmp_path / "checkpoint.safetensors", SEARCH_FORMAT, SEARCH_VERSION, {**_state(), **change})
    with pytest.raises(TensorFileError, match=rf"checkpoint\.safetensors: corrupt content.*{re.escape(words)}"):
        read_search_checkpoint(tmp_path)


def test_a_checkpoint_missing_a_field_is_refused_by_name(tmp_path: Path) -> None:
    state = _state()
    del state["a_opt"]
    tensorfile.write(tmp_path / "checkpoint.safetensors", SEARCH_FORMAT, SEARCH_VERSION, state)
    with pytest.raises(TensorFileError, match="a_opt"):
        read_search_checkpoint(tmp_path)


def test_no_checkpoint_and_a_legacy_one_get_different_messages(tmp_path: Path) -> None:
    assert not has_search_checkpoint(tmp_path)
    with pytest.raises(HwnasError, match=r"checkpoint\.safetensors: no search checkpoint there; give the folder"):
        read_search_checkpoint(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"\x80\x04 not read")
    assert has_search_checkpoint(tmp_path)  # so that a new search refuses it rather than overwrite it
    with pytest.raises(HwnasError, match=r"checkpoint\.pt: a search checkpoint of hwnas 0\.1.*new run folder"):
        read_search_checkpoint(tmp_path)
    write_search_checkpoint(tmp_path / "checkpoint.safetensors", _state())
    assert read_search_checkpoint(tmp_path)["epoch"] == 3  # the current file wins over a legacy one


def test_a_checkpoint_of_another_format_is_refused(tmp_path: Path) -> None:
    tensorfile.write(tmp_path / "checkpoint.safetensors", "hwnas.child", 2, _state())
    with pytest.raises(HwnasError, match=r"hwnas\.child"):
        read_search_checkpoint(tmp_path)
