"""hwnas train's checkpoint: an interrupted training resumes and ends bit for bit where the
uninterrupted one ends; one started with other settings, a leftover checkpoint and a --resume with
nothing to resume are one-line errors; the checkpoint goes once the child file is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hwnas.core.errors import HwnasError
from hwnas.spaces import get_space
from hwnas.train import training
from hwnas.train.checkpoints import read_train_checkpoint, train_checkpoint_path
from hwnas.train.data import load_splits
from hwnas.train.training import train_child

from conftest import run_cli

DATA = "synthetic:n=160,size=16"


@pytest.fixture(scope="module")
def setup() -> tuple:
    space = get_space("tiny")
    arch = space.sample(3)
    splits = load_splits(DATA, space.num_classes, space.in_channels, limit=160, seed=0, with_test=True)
    return arch, splits


def _train(setup: tuple, **kw) -> training.TrainResult:  # type: ignore[name-defined]
    arch, splits = setup
    return train_child(arch, splits, epochs=3, batch_size=16, seed=4, progress=False, **kw)


def test_an_interrupted_training_resumes_and_ends_where_the_uninterrupted_one_ends(
    setup: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = _train(setup)
    ckpt = tmp_path / "c.safetensors.checkpoint"
    evaluate, calls = training.evaluate, {"n": 0}

    def stop_in_the_second_epoch(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:  # epoch 2 trained, its score not yet taken: the checkpoint holds epoch 1
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(training, "evaluate", stop_in_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        _train(setup, checkpoint=ckpt)
    monkeypatch.setattr(training, "evaluate", evaluate)
    state = read_train_checkpoint(ckpt)
    assert state["epoch"] == 1 and len(state["history"]) == 1
    resumed = _train(setup, checkpoint=ckpt, resume=True)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    assert resumed.val_acc == whole.val_acc and resumed.test_acc == whole.test_acc
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # without the optimizer's momentum the resumed training drifts: the comparison above can fail
    state["opt"]["state"] = {}
    from hwnas.train.checkpoints import write_train_checkpoint

    write_train_checkpoint(ckpt, state)
    drifted = _train(setup, checkpoint=ckpt, resume=True)
    assert drifted.history[-1]["loss"] != whole.history[-1]["loss"]


def test_resuming_with_other_settings_names_the_setting(setup: tuple, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    ckpt = tmp_path / "c.checkpoint"
    arch, splits = setup
    train_child(arch, splits, epochs=2, batch_size=16, seed=4, progress=False, checkpoint=ckpt)
    assert read_train_checkpoint(ckpt)["epoch"] == 1  # written after every epoch but the last
    with pytest.raises(HwnasError, match=r"with lr 0\.05, not 0\.1; give the same settings"):
        train_child(arch, splits, epochs=2, batch_size=16, seed=4, lr=0.1, progress=False, checkpoint=ckpt,
                    resume=True)  # fmt: skip
    with pytest.raises(HwnasError, match="with batch_size 16, not 32"):
        train_child(arch, splits, epochs=2, batch_size=32, seed=4, progress=False, checkpoint=ckpt, resume=True)


def _one_line_error(proc, *words: str) -> None:  # type: ignore[no-untyped-def]
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hwnas: error: "), proc.stderr
    assert all(w in lines[0] for w in words), lines[0]


@pytest.mark.tour  # 21 s on the 2-core VM: in the tour, to keep the default suite under 15 minutes
def test_train_refuses_a_leftover_checkpoint_and_a_resume_without_one_and_removes_its_own(tmp_path: Path) -> None:
    arch = tmp_path / "a.json"
    get_space("tiny").sample(1).save(arch)
    out = tmp_path / "c.safetensors"
    base = ["train", "--arch", str(arch), "--data", DATA, "--epochs", "2", "--batch-size", "16", "--out", str(out),
            "--no-progress"]  # fmt: skip
    _one_line_error(run_cli(*base, "--resume"), "no interrupted training", "drop --resume")
    assert not out.exists()
    train_checkpoint_path(out).write_bytes(b"left by a killed run")
    _one_line_error(run_cli(*base), "an interrupted training", "--resume", "delete it")
    _one_line_error(run_cli(*base, "--resume"), "c.safetensors.checkpoint")  # not a checkpoint: refused, not read
    train_checkpoint_path(out).unlink()
    assert run_cli(*base).returncode == 0
    assert out.is_file() and not train_checkpoint_path(out).exists()
    nested = tmp_path / "new" / "folder" / "c.safetensors"  # a folder that does not exist yet is made
    assert run_cli(*base[:-3], "--out", str(nested), "--no-progress").returncode == 0 and nested.is_file()
