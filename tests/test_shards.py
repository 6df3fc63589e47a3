"""WebDataset tar shards as ``--data``: shards written by the ``webdataset`` library give the batches
the same images give as an image folder, in memory and streamed; a test split from val shards; and
one-line errors for shards cut short, corrupt images and samples without a usable label."""

from __future__ import annotations

import re
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch
import webdataset as wds

from hwnas.train.batches import Batches
from hwnas.train.data import DataError, DataSplits, load_images, load_splits, load_test_images
from hwnas.train.files import scan_folder
from hwnas.train.shards import tar_members

from conftest import run_cli, write_folder

N, PER_SHARD = 96, 32  # three shards


def _write(folder: Path, samples: list[dict[str, Any]], pattern: str = "train-%06d.tar",
           per_shard: int = PER_SHARD) -> list[Path]:  # fmt: skip
    """``samples`` written by webdataset's ShardWriter into ``folder``; the shards' paths."""
    folder.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(folder / pattern), maxcount=per_shard, verbose=0) as sink:
        for sample in samples:
            sink.write(sample)
    return sorted(folder.glob(pattern.split("%")[0] + "*.tar"))


def _samples(images: Path) -> list[dict[str, Any]]:
    """The images of an image folder as WebDataset samples, in the folder's scan order."""
    files = scan_folder(images)
    assert files.paths is not None
    return [{"__key__": f"{i:05d}", "jpg": Path(p).read_bytes(), "cls": int(y)}
            for i, (p, y) in enumerate(zip(files.paths, files.labels.tolist(), strict=True))]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An image folder and the same images in three shards, with the folder's class names."""
    root = tmp_path_factory.mktemp("shards")
    images = write_folder(root / "imgs", n=N, size=24)
    shards = _write(root / "shards", _samples(images))
    assert len(shards) == 3
    (root / "shards" / "classes.txt").write_text("c0\nc1\nc2\nc3\n")
    return images, root / "shards"


def _batches(splits: DataSplits, workers: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    return list(Batches(splits.weights, 16, splits.mean, splits.std, g, augment=True, workers=workers))


def test_shards_written_by_webdataset_give_the_folders_labels_and_batches(data: tuple[Path, Path]) -> None:
    images, shards = data
    folder = load_splits(str(images), 4, 3, mode="memory", seed=1)
    want = _batches(folder)
    assert len(want) > 3
    for mode in ("memory", "stream"):
        got = load_splits(str(shards), 4, 3, mode=mode, seed=1)
        assert got.weights.streamed == (mode == "stream") and got.classes == ["c0", "c1", "c2", "c3"]
        for part in ("weights", "alphas", "val"):
            assert torch.equal(getattr(got, part).y, getattr(folder, part).y), (mode, part)
        assert torch.equal(got.mean, folder.mean) and torch.equal(got.std, folder.std)
        for workers in (0, 2) if mode == "stream" else (0,):
            batches = _batches(got, workers)
            assert len(batches) == len(want)
            for (xa, ya), (xb, yb) in zip(want, batches, strict=True):
                assert torch.equal(xa, xb) and torch.equal(ya, yb), (mode, workers)


def test_the_index_reads_headers_in_sorted_shard_order_and_names_each_image_by_shard_and_key(
    data: tuple[Path, Path],
) -> None:
    _, shards = data
    images = load_images(str(shards), mode="stream")
    assert images.files is not None and len(images) == N
    assert images.files.shards == [str(p) for p in sorted(shards.glob("*.tar"))]
    second = shards / "train-000001.tar"
    assert images.files.where(33) == f"{second}: 00033"
    name, offset, size = tar_members(second)[0][3]  # 00032.cls, 00032.jpg, 00033.cls, 00033.jpg
    assert name == "00033.jpg" and images.files.encoded(33) == second.read_bytes()[offset : offset + size]


def test_val_shards_give_the_test_split_and_a_single_tar_has_none(data: tuple[Path, Path], tmp_path: Path) -> None:
    images, shards = data
    root = tmp_path / "split"
    shutil.copytree(shards, root)
    samples = _samples(images)
    _write(root, samples[::8], "val-%06d.tar")
    test = load_test_images(str(root), 4)
    assert test is not None and len(test) == 12 and test.y.tolist() == [s["cls"] for s in samples[::8]]
    assert test.classes == ["c0", "c1", "c2", "c3"]
    assert len(load_images(str(root))) == N  # the val shards are not training images
    assert load_test_images(str(shards), 4) is None
    with pytest.raises(DataError, match="no test split"):
        load_images(str(shards), "test")
    one = load_images(str(shards / "train-000002.tar"))
    assert len(one) == PER_SHARD and one.classes == ["c0", "c1", "c2", "c3"]  # classes.txt beside it
    assert load_test_images(str(shards / "train-000002.tar"), 4) is None
    (root / "classes.txt").unlink()
    _write(root, [{**samples[0], "cls": 7}], "val-%06d.tar")  # replaces the val shard
    with pytest.raises(DataError, match=r"val-000000.tar: 00000: label 7 is beyond the training shards' classes"):
        load_test_images(str(root), 4)


def _cut(shard: Path, sample: int) -> int:
    """Cuts ``shard`` short in the middle of its ``sample``-th sample's image, as a failed copy
    leaves it; the bytes it keeps."""
    members, _ = tar_members(shard)
    _, offset, size = [m for m in members if m[0].endswith(".jpg")][sample]
    keep = offset + size // 2
    shard.write_bytes(shard.read_bytes()[:keep])
    return keep


def test_a_shard_cut_short_stops_naming_it_or_keeps_the_samples_before_the_cut(
    data: tuple[Path, Path], tmp_path: Path
) -> None:
    images, shards = data
    root = tmp_path / "cut"
    shutil.copytree(shards, root)
    victim = root / "train-000001.tar"
    _cut(victim, 20)
    with pytest.raises(DataError) as stop:
        load_images(str(root))
    message = str(stop.value)
    assert message.startswith(f"{victim}: the shard ends early") and "\n" not in message
    assert "20 complete samples come before the cut" in message and "--bad-images skip" in message
    notes: list[str] = []
    kept = load_images(str(root), mode="stream", notes=notes, bad_images="skip")
    assert len(kept) == N - (PER_SHARD - 20)
    want = [s["cls"] for s in _samples(images)]
    assert kept.y.tolist() == want[: PER_SHARD + 20] + want[2 * PER_SHARD :]
    assert any("the rest of train-000001.tar is lost" in n for n in notes), notes
    memory = load_images(str(root), mode="memory", bad_images="skip")
    assert torch.equal(memory.x, kept.pixels(torch.arange(len(kept))))


def test_a_shard_that_is_no_tar_or_lost_its_end_is_refused(data: tuple[Path, Path], tmp_path: Path) -> None:
    _, shards = data
    root = tmp_path / "bad"
    shutil.copytree(shards, root)
    shard = root / "train-000002.tar"
    _, offset, size = tar_members(shard)[0][-1]
    end = offset + -(-size // 512) * 512
    shard.write_bytes(shard.read_bytes()[:end])  # cut after a whole member: no end-of-archive block
    with pytest.raises(DataError, match=r"ends early.*no end-of-archive block"):
        load_images(str(root))
    shard.write_bytes(b"\x1f\x8b" + b"not a tar" * 100)
    with pytest.raises(DataError, match=r"train-000002\.tar: not a tar file hwnas reads"):
        load_images(str(root), bad_images="skip")


def test_a_corrupt_jpeg_in_a_shard_stops_naming_shard_and_key_or_is_skipped_and_counted(
    data: tuple[Path, Path], tmp_path: Path
) -> None:
    images, _ = data
    samples = _samples(images)[:40]
    samples[37]["jpg"] = samples[37]["jpg"][:150]  # cut short inside the shard
    root = tmp_path / "corrupt"
    shard = _write(root, samples)[1]
    where = f"{shard}: 00037"
    with pytest.raises(DataError, match="cannot read the image") as stop:
        load_images(str(root), mode="memory")
    assert where in str(stop.value)
    notes: list[str] = []
    kept = load_images(str(root), mode="memory", notes=notes, bad_images="skip")
    assert len(kept) == 39 and any("1 unreadable image(s) skipped" in n and where in n for n in notes), notes
    streamed = load_images(str(root), mode="stream")
    skipped: set[str] = set()
    mean, std = torch.zeros(3), torch.ones(3)
    batches = list(Batches(streamed, 8, mean, std, workers=1, bad_images="skip", skipped=skipped))
    assert skipped == {where} and sum(len(y) for _, y in batches) == 39
    with pytest.raises(DataError, match=where):
        list(Batches(streamed, 8, mean, std, workers=0))


def _jpeg(images: Path) -> bytes:
    return _samples(images)[0]["jpg"]


def test_samples_need_one_image_and_an_integer_cls(data: tuple[Path, Path], tmp_path: Path) -> None:
    images, _ = data
    jpg = _jpeg(images)
    cases = {
        "b: a sample with an image but no .cls label": [
            {"__key__": "a", "jpg": jpg, "cls": 0},
            {"__key__": "b", "jpg": jpg},
        ],
        r"b.cls is not a class index \(got 'cat'\)": [{"__key__": "b", "jpg": jpg, "cls": b"cat"}],
        r"b.cls is not a class index \(got '-1'\)": [{"__key__": "b", "jpg": jpg, "cls": b"-1"}],
        r"b.cls is not a class index \(got '1.5'\)": [{"__key__": "b", "jpg": jpg, "cls": b"1.5"}],
        "b: a sample without an image": [{"__key__": "a", "jpg": jpg, "cls": 0}, {"__key__": "b", "cls": 1}],
        "no images in the shards": [{"__key__": "a", "txt": "x", "cls": 0}, {"__key__": "b", "cls": 1}],
        r"b: 2 images in one sample \(.jpg, .png\)": [{"__key__": "b", "jpg": jpg, "png": jpg, "cls": 0}],
    }
    for i, (error, samples) in enumerate(cases.items()):
        root = _write(tmp_path / f"case{i}", samples)[0]
        with pytest.raises(DataError, match=(re.escape(f"{root}: ") if "no images" not in error else "") + error):
            load_images(str(root.parent), bad_images="skip")
    ok = _write(tmp_path / "ok", [{"__key__": "a", "jpg": jpg, "cls": b" 2\n", "json": b"{}"}])[0]
    assert load_images(str(ok)).y.tolist() == [2]  # digits with whitespace; other members are ignored
    empty = tmp_path / "empty"
    empty.mkdir()
    with tarfile.open(empty / "train.tar", "w"):
        pass
    with pytest.raises(DataError, match="no samples in the shards"):
        load_images(str(empty))


def test_classes_txt_names_the_classes_and_must_name_every_label(data: tuple[Path, Path], tmp_path: Path) -> None:
    images, shards = data
    root = tmp_path / "named"
    shutil.copytree(shards, root)
    (root / "classes.txt").write_text("cat\ndog\nbird\nfish\nunused\n")
    assert load_images(str(root)).classes == ["cat", "dog", "bird", "fish", "unused"]
    (root / "classes.txt").unlink()
    assert load_images(str(root)).classes == ["0", "1", "2", "3"]
    (root / "classes.txt").write_text("cat\ndog\n")
    first = next(i for i, s in enumerate(_samples(images)) if s["cls"] >= 2)
    where = f"train-{first // PER_SHARD:06d}.tar: {first:05d}"
    with pytest.raises(DataError, match=f"{where}: label 2 is beyond the 2 names of"):
        load_images(str(root))


def _search(data: Path, out: Path) -> tuple[str, ...]:
    return ("search", "--space", "tiny", "--budget-mflops", "0.6", "--data", str(data), "--epochs", "1",
            "--warmup-epochs", "0", "--batch-size", "16", "--evolution", "0", "--data-mode", "stream",
            "--workers", "1", "--out", str(out), "--no-progress")  # fmt: skip


def test_a_search_streams_shards_and_a_cut_shard_is_a_one_line_error(data: tuple[Path, Path], tmp_path: Path) -> None:
    _, shards = data
    proc = run_cli(*_search(shards, tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "arch.json").is_file()
    root = tmp_path / "cut"
    shutil.copytree(shards, root)
    _cut(root / "train-000000.tar", 5)
    proc = run_cli(*_search(root, tmp_path / "stop"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "5 complete samples come before the cut" in proc.stderr
