"""The safetensors + JSON container and the child / search-checkpoint formats built on it."""

from __future__ import annotations

import json
import math
import random
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.core import tensorfile
from hwnas.core.errors import HwnasError
from hwnas.core.tensorfile import PickleFileError, TensorFileError
from hwnas.models.builder import build_model
from hwnas.spaces import get_space
from hwnas.train.checkpoints import (
    CHILD_FORMAT,
    ChildFile,
    read_child,
    rng_states,
    set_rng_states,
    write_child,
)


def _tree() -> dict:
    return {
        "ints": [1, -2, 2**40], "float": 0.5, "nan": float("nan"), "inf": -math.inf, "none": None, "flag": True,
        "tuple": (1, "a", (2.5,)), "by_index": {0: {"step": torch.tensor(3.0)}, 7: "x"}, "$odd": "dollar key",
        "t": torch.arange(6, dtype=torch.int64).reshape(2, 3), "half": torch.ones(2, dtype=torch.float16),
        "bytes": torch.tensor([1, 255], dtype=torch.uint8), "empty": torch.zeros(0, 4), "scalar": torch.tensor(2.0),
    }  # fmt: skip


def test_round_trip_keeps_types_values_and_tensors() -> None:
    tree = _tree()
    shared = torch.arange(4.0)
    tree["views"] = [shared, shared[1:]]  # views of one storage: safetensors needs private copies
    out = tensorfile.loads(tensorfile.dumps("t.test", 3, tree), "mem", "t.test", 3).tree
    assert out["ints"] == [1, -2, 2**40] and out["float"] == 0.5 and math.isnan(out["nan"]) and out["inf"] == -math.inf
    assert out["none"] is None and out["flag"] is True and out["$odd"] == "dollar key"
    assert out["tuple"] == (1, "a", (2.5,)) and isinstance(out["tuple"][2], tuple)
    assert set(out["by_index"]) == {0, 7} and torch.equal(out["by_index"][0]["step"], torch.tensor(3.0))
    for key in ("t", "half", "bytes", "empty", "scalar"):
        assert out[key].dtype == tree[key].dtype and torch.equal(out[key], tree[key]), key
    assert torch.equal(out["views"][1], torch.tensor([1.0, 2.0, 3.0]))


def test_the_file_is_plain_safetensors_with_json_metadata(tmp_path: Path) -> None:
    """Read back with an independent parser: 8-byte length, JSON header, raw little-endian data."""
    path = tmp_path / "f.safetensors"
    tensorfile.write(path, "t.test", 1, {"w": torch.tensor([1.5, -2.0])})
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__")
    assert meta["format"] == "t.test" and meta["version"] == "1"
    assert json.loads(meta["tree"]) == {"w": {"$tensor": "t0"}}
    a, b = header["t0"]["data_offsets"]
    assert header["t0"]["dtype"] == "F32" and np.frombuffer(data[8 + n + a : 8 + n + b], "<f4").tolist() == [1.5, -2.0]


def test_unstorable_values_are_refused() -> None:
    with pytest.raises(TypeError, match="cannot store"):
        tensorfile.dumps("t", 1, {"f": lambda: 0})
    with pytest.raises(TypeError, match="dict key"):
        tensorfile.dumps("t", 1, {(1, 2): 0})


def test_versions_formats_and_pickles_are_checked() -> None:
    data = tensorfile.dumps("t.test", 3, {})
    with pytest.raises(TensorFileError, match=r"version 3 is newer than this hwnas reads \(up to 2\); upgrade"):
        tensorfile.loads(data, "f", "t.test", 2)
    with pytest.raises(TensorFileError, match=re.escape("a 't.test' file, not a t.other file")):
        tensorfile.loads(data, "f", "t.other", 3)
    for blob in (b"PK\x03\x04" + bytes(40), b"\x80\x04\x95" + bytes(20)):
        with pytest.raises(PickleFileError, match="never unpickles"):
            tensorfile.loads(blob, "f", "t.test", 3)


@pytest.mark.parametrize(
    "tree, problem",
    [
        ({"$tensor": "t9"}, "does not hold"),
        ({"$tuple": 3}, "must hold a list"),
        ({"$items": [[1.5, 2]]}, "pairs"),
        ({"$exec": "x"}, "unknown marker"),
        ({"$tensor": "t0", "b": 1}, "one key"),
        ([{"$tensor": "t0"}, {"$tensor": "t0"}], "twice"),
    ],
)
def test_forged_trees_are_refused(tree: object, problem: str) -> None:
    from safetensors.torch import save

    data = save({"t0": torch.zeros(1)}, metadata={"format": "t", "version": "1", "tree": json.dumps(tree)})
    with pytest.raises(TensorFileError, match=problem):
        tensorfile.loads(data, "f", "t", 1)


def test_too_deep_nesting_is_refused_not_a_recursion_crash() -> None:
    from safetensors.torch import save

    deep = "[" * 5000 + "]" * 5000
    data = save({}, metadata={"format": "t", "version": "1", "tree": deep})
    with pytest.raises(TensorFileError, match="corrupt content"):
        tensorfile.loads(data, "f", "t", 1)


def test_child_file_round_trip_and_bare_state_dicts(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    arch = get_space("tiny").sample(2)
    weights = build_model(arch).state_dict()
    path = tmp_path / "c.safetensors"
    write_child(path, arch, weights, {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2], "val_acc": 0.25})
    child = read_child(path)
    assert isinstance(child, ChildFile) and child.arch == arch and child.meta["val_acc"] == 0.25
    assert all(torch.equal(child.weights[k], v) for k, v in weights.items()) and set(child.weights) == set(weights)
    bare = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in weights.items()}, str(bare))
    plain = read_child(bare)
    assert plain.arch is None and set(plain.weights) == set(weights)
    tensorfile.write(tmp_path / "newer.safetensors", CHILD_FORMAT, 99, {})
    with pytest.raises(HwnasError, match="newer than this hwnas reads"):
        read_child(tmp_path / "newer.safetensors")
    for meta, word in (({"std": [0.0, 1, 1]}, "std"), ({"mean": ["a"]}, "mean"), ({"mean": [math.nan]}, "mean")):
        write_child(tmp_path / "m.safetensors", arch, weights, meta)
        with pytest.raises(HwnasError, match=f"meta.{word}"):
            read_child(tmp_path / "m.safetensors")


def test_legacy_torch_save_child_is_refused_with_the_way_to_recreate_it(tmp_path: Path) -> None:
    path = tmp_path / "child.pt"
    arch = get_space("tiny").sample(2)
    torch.save({"format": "hwnas.child", "version": 1, "arch": arch.to_dict(), "state_dict": {}}, path)
    with pytest.raises(HwnasError, match=r"never unpickles.*hwnas train"):
        read_child(path)


def test_rng_states_round_trip_through_a_file_exactly() -> None:
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    saved = tensorfile.loads(tensorfile.dumps("t", 1, rng_states()), "f", "t", 1).tree
    want = (torch.rand(3), random.random(), np.random.standard_normal(2))
    torch.manual_seed(9)
    random.seed(9)
    np.random.seed(9)
    set_rng_states(saved, "f")
    got = (torch.rand(3), random.random(), np.random.standard_normal(2))
    assert torch.equal(want[0], got[0]) and want[1] == got[1] and np.array_equal(want[2], got[2])
    bad = dict(saved, numpy=dict(saved["numpy"], keys=[1, 2]))
    with pytest.raises(HwnasError, match="random number generator states"):
        set_rng_states(bad, "f")


def test_files_get_the_umask_mode_not_a_private_one(tmp_path: Path) -> None:
    import os
    import stat

    from hwnas.core.fileio import write_text_atomic

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
        tensorfile.write(tmp_path / "c.safetensors", "t", 1, {"w": torch.zeros(1)})
        os.umask(0o077)
        write_text_atomic(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "c.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600
