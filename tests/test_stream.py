"""Streamed data: the same batches and search as in memory, resumable mid-epoch, and clear errors
for the bad inputs a real image folder holds."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from hwnas.search.config import SearchConfig
from hwnas.search.loop import Search
from hwnas.train.batches import Batches
from hwnas.train.checkpoints import read_search_checkpoint
from hwnas.train.data import DataError, choose_mode, load_images, load_splits
from hwnas.train.files import EncodedImages, scan_folder

from conftest import ROOT, run_cli, write_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("data") / "imgs")


def test_streamed_batches_are_the_in_memory_batches(folder: Path) -> None:
    """Same order, same augmentation draws, same pixels, whatever the number of decoding workers."""
    memory = load_splits(str(folder), 4, 3, mode="memory", seed=1)
    stream = load_splits(str(folder), 4, 3, mode="stream", seed=1)
    assert stream.weights.streamed and not memory.weights.streamed
    assert torch.equal(memory.mean, stream.mean) and torch.equal(memory.std, stream.std)
    for workers in (0, 2):
        a = Batches(memory.weights, 32, memory.mean, memory.std, torch.Generator().manual_seed(3), augment=True)
        b = Batches(stream.weights, 32, stream.mean, stream.std, torch.Generator().manual_seed(3), augment=True,
                    workers=workers)  # fmt: skip
        pairs = list(zip(a, b, strict=True))
        assert len(pairs) == len(a) > 3
        for (xa, ya), (xb, yb) in pairs:
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_a_skipped_image_leaves_its_batch_without_it_and_the_other_batches_unchanged(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "imgs", n=96)
    intact = load_splits(str(data), 4, 3, mode="stream", seed=0)
    skipped: set[str] = set()

    def run(splits: object, **kw: object) -> list[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(4)
        return list(Batches(splits.weights, 16, intact.mean, intact.std, g, augment=True, workers=1, **kw))  # type: ignore[attr-defined]

    a = run(intact)
    assert intact.weights.files is not None and intact.weights.files.paths is not None
    order = Batches(intact.weights, 16, intact.mean, intact.std, torch.Generator().manual_seed(4)).order
    victim = int(intact.weights.index[int(order[37])])  # the 6th image of the third batch of 16
    path = Path(intact.weights.files.paths[victim])
    path.write_bytes(path.read_bytes()[:100])
    broken = load_splits(str(data), 4, 3, mode="stream", seed=0, bad_images="skip")
    b = run(broken, bad_images="skip", skipped=skipped)
    assert skipped == {str(path)} and len(a) == len(b)
    for i, ((xa, ya), (xb, yb)) in enumerate(zip(a, b, strict=True)):
        keep = [j for j in range(len(ya)) if i != 2 or j != 37 - 32]  # the victim's batch, without it
        assert torch.equal(xa[keep], xb) and torch.equal(ya[keep], yb), i


def test_a_split_is_indices_into_the_files_not_a_copy(folder: Path) -> None:
    splits = load_splits(str(folder), 4, 3, mode="stream", limit=100, seed=2)
    parts = [splits.weights, splits.alphas, splits.val]
    assert all(p.x is None and p.files is parts[0].files for p in parts)
    index = torch.cat([p.index for p in parts if p.index is not None])
    assert len(index) == 100 and len(set(index.tolist())) == 100  # disjoint
    assert torch.bincount(torch.cat([p.y for p in parts])).tolist() == [25] * 4  # --limit stays class-balanced
    memory = load_splits(str(folder), 4, 3, mode="memory", limit=100, seed=2)
    assert torch.equal(memory.val.y, splits.val.y)  # the same images in each split, in both modes
    assert torch.equal(memory.val.x, splits.val.pixels(torch.arange(len(splits.val))))


def test_the_mode_rule_compares_the_decoded_size_with_free_memory() -> None:
    small = EncodedImages("small", np.zeros(1000, dtype=np.int64), ["a"], paths=["x"] * 1000, size=(32, 32))
    huge = EncodedImages("huge", np.zeros(1_281_167, dtype=np.int64), ["a"], paths=["x"] * 1_281_167,
                         size=(20_000, 20_000))  # fmt: skip
    mode, why = choose_mode(small, "auto")
    assert mode == "memory" and "3.07 MB" not in why and "0.00 GB" in why and "at most 25%" in why
    # between a quarter and all of the free memory: streamed (the rule is the share, not "fits at all")
    from hwnas.train.data import available_memory

    side = int((0.5 * available_memory() / (3 * 1000)) ** 0.5)
    half = EncodedImages("half", np.zeros(1000, dtype=np.int64), ["a"], paths=["x"] * 1000, size=(side, side))
    assert choose_mode(half, "auto")[0] == "stream"
    mode, why = choose_mode(huge, "auto")
    assert mode == "stream" and "more than 25%" in why and "--data-mode memory or stream overrides" in why
    assert choose_mode(huge, "memory")[0] == "memory" and "(--data-mode memory)" in choose_mode(huge, "memory")[1]


def _config(data: str, out_mode: str, **kw: object) -> SearchConfig:
    base = dict(space="tiny", budget=0.6, cost="flops", data=data, epochs=2, warmup_epochs=1, batch_size=32,
                evolution=4, seed=1, data_mode=out_mode, workers=1)  # fmt: skip
    return SearchConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_a_search_streamed_selects_what_it_selects_in_memory(folder: Path, tmp_path: Path) -> None:
    memory = Search(_config(str(folder), "memory"), tmp_path / "m", progress=False).run()
    stream = Search(_config(str(folder), "stream"), tmp_path / "s", progress=False).run()
    assert stream.derivation.arch == memory.derivation.arch
    for key in ("train_ce", "arch_ce", "expected_cost", "val_acc"):  # the same batches: the same numbers
        assert [m[key] for m in stream.metrics] == pytest.approx(
            [m[key] for m in memory.metrics], rel=1e-5, nan_ok=True
        ), key
    assert [c["val_acc_supernet"] for c in stream.candidates] == [c["val_acc_supernet"] for c in memory.candidates]


def _search_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hwnas", "search", "--space", "tiny", "--budget-mflops", "0.6", "--data", str(data),
            "--epochs", "3", "--warmup-epochs", "1", "--batch-size", "16", "--evolution", "2", "--data-mode", "stream",
            "--workers", "1", "--out", str(out), "--no-progress", "--seed", "3", *extra]  # fmt: skip


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, after the default suite
def test_kill_9_mid_epoch_while_streaming_then_resume_ends_where_an_uninterrupted_run_ends(
    folder: Path, tmp_path: Path
) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    full = subprocess.run(_search_cmd(folder, tmp_path / "full"), capture_output=True, text=True, env=env, cwd=ROOT)
    assert full.returncode == 0, full.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(_search_cmd(folder, out, "--checkpoint-every", "0"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, cwd=ROOT)  # fmt: skip
    metrics = out / "metrics.csv"
    while not metrics.exists():  # one epoch done: the second one is under way, checkpointed at every step
        assert proc.poll() is None, "the search ended before it could be killed"
        time.sleep(0.02)
    time.sleep(float(pd.read_csv(metrics)["seconds"].iloc[-1]) / 2)
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = read_search_checkpoint(out)
    assert "mid_epoch" in state and state["epoch"] == 1 and state["mid_epoch"]["step"] >= 1
    again = subprocess.run([*_search_cmd(folder, out), "--resume"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    assert (out / "arch.txt").read_text() == (tmp_path / "full" / "arch.txt").read_text()
    a, b = pd.read_csv(out / "metrics.csv"), pd.read_csv(tmp_path / "full" / "metrics.csv")
    assert list(a["epoch"]) == [1, 2, 3]
    for key in ("train_ce", "arch_ce", "expected_cost", "val_acc"):
        pd.testing.assert_series_equal(a[key], b[key], rtol=1e-6)


# --- bad inputs ------------------------------------------------------------------------------
def _one_line_error(*args: str) -> str:
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr


def _search(data: Path, out: Path, *extra: str) -> list[str]:
    return ["search", "--space", "tiny", "--budget-mflops", "0.6", "--data", str(data), "--epochs", "2",
            "--warmup-epochs", "1", "--batch-size", "16", "--evolution", "0", "--out", str(out), "--no-progress",
            "--workers", "1", *extra]  # fmt: skip


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, keeping the default suite under 15 minutes
def test_a_truncated_jpeg_mid_epoch_stops_naming_it_or_is_skipped_and_counted(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "imgs", n=160)
    victim = sorted((data / "c2").iterdir())[5]
    victim.write_bytes(victim.read_bytes()[:200])  # cut short, as a failed copy leaves it
    err = _one_line_error(*_search(data, tmp_path / "stop", "--data-mode", "stream"))
    assert str(victim) in err and "--bad-images skip" in err
    # what the run had finished is kept: a checkpoint to resume once the file is fixed or skipped
    proc = run_cli(*_search(data, tmp_path / "skip", "--data-mode", "stream", "--bad-images", "skip"))
    assert proc.returncode == 0, proc.stderr
    assert "1 unreadable image(s) skipped" in proc.stdout + proc.stderr and str(victim) in proc.stdout + proc.stderr
    # in memory, the same choice, made while decoding
    err = _one_line_error(*_search(data, tmp_path / "stop-m", "--data-mode", "memory"))
    assert str(victim) in err
    proc = run_cli(*_search(data, tmp_path / "skip-m", "--data-mode", "memory", "--bad-images", "skip"))
    assert proc.returncode == 0 and "1 unreadable image(s) skipped" in proc.stderr, proc.stderr


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, after the default suite
def test_a_streamed_run_stopped_by_a_bad_image_resumes_with_skip(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "imgs", n=160)
    out = tmp_path / "run"
    assert run_cli(*_search(data, out, "--data-mode", "stream", "--epochs", "3")).returncode == 0
    victim = sorted((data / "c1").iterdir())[0]
    victim.write_bytes(b"not a jpeg")
    longer = _search(data, out, "--data-mode", "stream", "--epochs", "4", "--resume")
    assert str(victim) in _one_line_error(*longer)
    proc = run_cli(*longer, "--bad-images", "skip")
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_csv(out / "metrics.csv")) == 4


def test_empty_class_folders_empty_datasets_and_differing_splits_are_refused(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "imgs", n=40)
    (data / "zebra").mkdir()
    err = _one_line_error(*_search(data, tmp_path / "r1"))
    assert "zebra: a class folder with no images" in err
    (data / "zebra").rmdir()
    nothing = tmp_path / "nothing"
    for c in ("a", "b"):
        (nothing / c).mkdir(parents=True)
        (nothing / c / "notes.txt").write_text("no image here")
    assert "a class folder with no images" in _one_line_error(*_search(nothing, tmp_path / "r2"))
    imagenet = tmp_path / "imagenet"
    write_folder(imagenet / "train", n=40)
    write_folder(imagenet / "val", n=40)
    (imagenet / "val" / "c3").rename(imagenet / "val" / "c9")
    err = _one_line_error("train", "--arch", str(_arch(tmp_path)), "--data", str(imagenet), "--epochs", "1",
                          "--out", str(tmp_path / "child.safetensors"), "--no-progress")  # fmt: skip
    assert "classes differ from the training folder's" in err and "c9" in err
    assert not (tmp_path / "child.safetensors").exists()


def _arch(tmp_path: Path) -> Path:
    from hwnas.spaces import get_space

    path = tmp_path / "arch.json"
    get_space("tiny").sample(0).save(path)
    return path


def _encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_images_of_every_mode_and_size_decode_to_rgb_at_one_size(tmp_path: Path) -> None:
    root = tmp_path / "modes" / "only"
    root.mkdir(parents=True)
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(root / "0-rgb.png")
    Image.fromarray(np.full((8, 8), 90, dtype=np.uint8), mode="L").save(root / "1-grey.png")
    Image.fromarray(rgb).convert("CMYK").save(root / "2-cmyk.jpg", quality=100)
    rgba = np.concatenate([rgb, np.full((8, 8, 1), 10, dtype=np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(root / "3-rgba.png")
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(root / "4-grey16.png")
    Image.fromarray(np.full((16, 12, 3), 50, dtype=np.uint8)).save(root / "5-big.png")
    for mode in ("memory", "stream"):
        images = load_images(str(tmp_path / "modes"), mode=mode)
        x = images.pixels(torch.arange(6)).numpy().astype(int)
        assert x.shape == (6, 3, 8, 8)
        assert (x[0, 0] == 200).all() and (x[0, 1:] == 0).all()
        assert (x[1] == 90).all()  # grey to three equal channels
        assert abs(x[2, 0].mean() - 200) < 4 and x[2, 1:].mean() < 4  # CMYK through its colour transform
        assert (x[3, 0] == 200).all()  # alpha dropped, colour kept
        assert abs(x[4].mean() - 40000 / 257) < 1  # 16 bits scaled to 8, not clipped to white
        assert (x[5] == 50).all()  # resized to the first image's 8x8


def test_the_scan_finds_only_images_and_keeps_sorted_order(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "imgs", n=12, classes=3)
    (data / "c0" / "Thumbs.db").write_bytes(b"junk")
    files = scan_folder(data)
    assert files.classes == ["c0", "c1", "c2"] and len(files) == 12
    assert files.paths == sorted(files.paths)  # type: ignore[type-var]
    assert files.labels.tolist() == sorted(files.labels.tolist())
    with pytest.raises(DataError, match="no test split"):
        load_images(str(data), "test")


@pytest.mark.tour  # 18 s on the 2-core VM: in the tour, to keep the default suite under 15 minutes
def test_a_resume_on_a_folder_that_lost_an_image_is_refused(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "imgs", n=160)
    out = tmp_path / "run"
    assert run_cli(*_search(data, out, "--data-mode", "stream")).returncode == 0
    sorted((data / "c0").iterdir())[0].unlink()  # every later image would move to another split
    err = _one_line_error(*_search(data, out, "--data-mode", "stream", "--epochs", "3", "--resume"))
    assert "the dataset differs from the one this search began with" in err
