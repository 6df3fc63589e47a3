"""Files written before the packages moved (issue 34) still load and compute what they computed.

The fixtures in ``tests/data/layout-v0`` were written by hwnas at commit 0f32f1e (its README says
how); ``expected.json`` holds that commit's outputs. The LUT's raw prediction is also recomputed
here from the SQLite rows alone, and the child's weights are compared with the file's tensors.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from hwnas.export.child_file import load_child
from hwnas.latency.predictor import LatencyPredictor
from hwnas.search.slicing import sliced_child_of_run
from hwnas.spaces.arch import Architecture
from hwnas.spaces.kernels import arch_kernels
from hwnas.train.checkpoints import read_search_checkpoint

from conftest import run_cli

OLD = Path(__file__).resolve().parent / "data" / "layout-v0"
EXPECTED = json.loads((OLD / "expected.json").read_text())


def _input() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 24, 24)).astype(np.float32))


def test_an_old_lut_predicts_what_it_predicted() -> None:
    arch = Architecture.load(OLD / "run" / "arch.json")
    assert arch.to_str() == EXPECTED["arch"]
    per_key: dict[str, list[float]] = defaultdict(list)
    with sqlite3.connect(f"file:{OLD / 'tiny.lut'}?mode=ro", uri=True) as conn:  # never creates an empty one
        for key, ms in conn.execute("SELECT key, min_ms FROM measurements"):
            per_key[key].append(ms)
    by_sql = sum(statistics.median(per_key[k.key]) for k in arch_kernels(arch))  # each kernel's fastest run
    raw = LatencyPredictor.from_lut(OLD / "tiny.lut", calibrated=False).predict(arch)
    assert raw == pytest.approx(by_sql, rel=1e-9) and raw == pytest.approx(EXPECTED["raw_ms"], rel=1e-9)
    calibrated = LatencyPredictor.from_lut(OLD / "tiny.lut").predict(arch)
    assert calibrated != pytest.approx(raw) and calibrated == pytest.approx(EXPECTED["calibrated_ms"], rel=1e-9)


def test_an_old_child_file_loads_with_its_weights_and_outputs() -> None:
    child = load_child(None, OLD / "child.safetensors")
    assert child.arch.to_str() == EXPECTED["arch"]
    with safe_open(OLD / "child.safetensors", "np") as f:  # the file's own map: weight name -> tensor
        names = {k: v["$tensor"] for k, v in json.loads(f.metadata()["tree"])["state_dict"].items()}
        stored = {k: f.get_tensor(v) for k, v in names.items()}
    state = child.model.state_dict()
    assert set(state) == set(stored)
    for name, tensor in state.items():  # every weight is the file's, unchanged
        assert np.array_equal(tensor.numpy(), stored[name]), name
    with torch.no_grad():
        got = child.model.eval()(_input()).numpy()
    np.testing.assert_allclose(got, np.asarray(EXPECTED["child_logits"]), rtol=0, atol=1e-6)


def test_an_old_search_folder_gives_its_checkpoint_and_sliced_child() -> None:
    state = read_search_checkpoint(OLD / "run")
    assert state["epoch"] >= 1
    with torch.no_grad():
        got = sliced_child_of_run(OLD / "run", Architecture.load(OLD / "run" / "arch.json")).eval()(_input()).numpy()
    np.testing.assert_allclose(got, np.asarray(EXPECTED["sliced_logits"]), rtol=0, atol=1e-6)


def test_an_old_run_folder_trains_a_child_from_its_supernet_and_exports_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(OLD / "run", run)
    child = run / "child.safetensors"
    proc = run_cli("train", "--arch", str(run / "arch.json"), "--init", "supernet", "--run", str(run), "--data",
                   "synthetic:n=200,size=24", "--epochs", "1", "--out", str(child), "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "files"
    proc = run_cli("export", "--weights", str(child), "--format", "onnx", "--out", str(out), "--name", "m")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "m-fp32.onnx.json").read_text())["arch"] == EXPECTED["arch"]
