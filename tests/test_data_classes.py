"""The data decides the classes: a 3-class folder on the 10-class cifar space gives a supernet, an
architecture, a child and exported files with 3 outputs, and cards with exactly its 3 labels."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hwnas.search.cost import make_cost
from hwnas.spaces import get_space
from hwnas.spaces.arch import Architecture
from hwnas.train.checkpoints import read_child, read_search_checkpoint

from conftest import run_cli

NAMES = ["cat", "dog", "owl"]


def write_three_classes(root: Path, per_class: int = 30, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for ci, name in enumerate(NAMES):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            img[..., ci] += 150  # a colour per class
            Image.fromarray(img).save(root / name / f"{j}.png")
    return root


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("three")
    data = write_three_classes(tmp / "imgs")
    space = replace(get_space("cifar"), num_classes=3)
    cost = make_cost("flops", space)
    lo, hi = cost.smallest(space)[1], cost.largest(space)[1]
    proc = run_cli("search", "--space", "cifar", "--data", str(data), "--budget-mflops", f"{lo + 0.3 * (hi - lo):.4f}",
                   "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "32", "--evolution", "0",
                   "--out", str(tmp / "run"), "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return data, tmp / "run"


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, keeping the default suite under 15 minutes
def test_a_three_class_folder_on_cifar_searches_a_three_class_supernet(searched: tuple[Path, Path]) -> None:
    _, run = searched
    arch = Architecture.load(run / "arch.json")
    assert arch.num_classes == 3 and get_space("cifar").num_classes == 10
    assert json.loads((run / "search.json").read_text())["classes"] == NAMES
    head = read_search_checkpoint(run)["net"]["classifier.weight"]
    assert head.shape[0] == 3  # no output left untrained


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, keeping the default suite under 15 minutes
def test_a_three_class_folder_on_cifar_exports_three_outputs_and_three_labels(
    searched: tuple[Path, Path], tmp_path: Path
) -> None:
    data, run = searched
    child = tmp_path / "child.safetensors"
    proc = run_cli("train", "--arch", str(run / "arch.json"), "--data", str(data), "--epochs", "1",
                   "--init", "supernet", "--run", str(run), "--out", str(child), "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    saved = read_child(child)
    arch = saved.arch
    assert arch is not None and arch.num_classes == 3 and saved.meta["classes"] == NAMES
    assert saved.weights["classifier.2.weight"].shape[0] == 3
    proc = run_cli("export", "--weights", str(child), "--format", "onnx,tflite", "--out", str(tmp_path / "x"),
                   "--name", "m")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for fmt in ("onnx", "tflite"):
        card = json.loads((tmp_path / "x" / f"m-fp32.{fmt}.json").read_text())
        assert card["labels"] == NAMES and card["output"]["shape"][-1] == 3, fmt
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    x = np.zeros((1, 3, arch.resolution, arch.resolution), dtype=np.float32)
    session = ort.InferenceSession(str(tmp_path / "x" / "m-fp32.onnx"))
    assert session.run(None, {"input": x})[0].shape == (1, 3)
    interp = Interpreter(model_path=str(tmp_path / "x" / "m-fp32.tflite"))
    assert tuple(interp.get_output_details()[0]["shape"]) == (1, 3)


def test_an_architecture_of_the_space_trained_on_three_classes_gets_a_three_wide_head(tmp_path: Path) -> None:
    """An architecture written for the space's 10 classes is trained with the data's 3, and says so."""
    data = write_three_classes(tmp_path / "imgs", per_class=12)
    arch = get_space("cifar").sample(1)
    assert arch.num_classes == 10
    arch.save(tmp_path / "arch.json")
    proc = run_cli("train", "--arch", str(tmp_path / "arch.json"), "--data", str(data), "--epochs", "1",
                   "--out", str(tmp_path / "c.safetensors"), "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "the classifier has the data's 3 classes, not the architecture's 10" in proc.stderr
    trained = read_child(tmp_path / "c.safetensors")
    assert trained.arch is not None and trained.arch.num_classes == 3 and trained.arch.blocks == arch.blocks
    assert trained.meta["classes"] == NAMES
