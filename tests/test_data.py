"""Datasets: every source form, splits, augmentation, and clear errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hwnas.train.batches import augment, batches
from hwnas.train.data import DataError, Images, load_images, load_test_images, make_splits, synthetic

from conftest import SHARED_DATA


def test_synthetic_is_deterministic_balanced_and_named() -> None:
    a, b = synthetic(n=200, size=16, classes=4, seed=1), synthetic(n=200, size=16, classes=4, seed=1)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert a.x.shape == (200, 3, 16, 16) and a.x.dtype == torch.uint8
    assert torch.bincount(a.y).tolist() == [50] * 4
    assert "synthetic" in a.name
    assert not torch.equal(synthetic(n=200, size=16, classes=4, seed=1, split="test").x, a.x)
    # classes differ on average (the dataset is learnable): mean images per class are far apart
    means = torch.stack([a.x[a.y == c].float().mean(0) for c in range(4)])
    assert torch.cdist(means.flatten(1), means.flatten(1)).fill_diagonal_(1e9).min() > 50


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw"])
def test_npz_arrays_in_every_layout(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    if layout == "nhw":
        x = x[..., 0]
    stored = x.transpose(0, 3, 1, 2) if layout == "nchw" else x
    y = np.arange(12) % 3
    np.savez(tmp_path / "d.npz", x=stored, y=y)
    images = load_images(str(tmp_path / "d.npz"))
    want = x[:, None] if layout == "nhw" else x.transpose(0, 3, 1, 2)
    assert np.array_equal(images.x.numpy(), want) and images.y.tolist() == y.tolist()


def _jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_cifar_jpeg_archive_form_from_any_path(tmp_path: Path) -> None:
    imgs = [np.full((8, 8, 3), 20 * i, dtype=np.uint8) for i in range(10)]
    blobs = [_jpeg(a) for a in imgs]
    offsets = np.cumsum([0, *map(len, blobs)]).astype(np.int64)
    label = np.arange(10, dtype=np.uint8)
    split = np.array([True] * 7 + [False] * 3)
    path = tmp_path / "some" / "where.npz"
    path.parent.mkdir()
    np.savez(path, data=np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets=offsets, label=label, split=split)
    train, test = load_images(str(path)), load_test_images(str(path), 10)
    assert len(train) == 7 and test is not None and len(test) == 3
    assert train.y.tolist() == list(range(7)) and test.y.tolist() == [7, 8, 9]
    assert train.classes[0] == "airplane"
    for i in range(7):
        assert abs(float(train.x[i].float().mean()) - 20 * i) < 3  # JPEG is lossy, but close


def test_a_stored_archive_is_memory_mapped_and_a_compressed_one_read(tmp_path: Path) -> None:
    from hwnas.train.npz_reader import memmap_member

    blobs = [_jpeg(np.full((8, 8, 3), 30 * i, dtype=np.uint8)) for i in range(4)]
    arrays = dict(data=np.frombuffer(b"".join(blobs), dtype=np.uint8), label=np.arange(4),
                  offsets=np.cumsum([0, *map(len, blobs)]).astype(np.int64))  # fmt: skip
    np.savez(tmp_path / "stored.npz", **arrays)
    np.savez_compressed(tmp_path / "packed.npz", **arrays)
    mapped = memmap_member(tmp_path / "stored.npz", "data")
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped, arrays["data"])
    assert memmap_member(tmp_path / "packed.npz", "data") is None
    for name in ("stored", "packed"):
        images = load_images(str(tmp_path / f"{name}.npz"))
        assert [round(float(images.x[i].float().mean()) / 30) for i in range(4)] == [0, 1, 2, 3]


def test_image_folder(tmp_path: Path) -> None:
    for c, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(np.full((6, 6, 3), 40 * c + i, dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    (tmp_path / "dog" / "readme.txt").write_text("ignored")
    images = load_images(str(tmp_path))
    assert images.classes == ["cat", "dog"] and images.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert images.x.shape == (6, 3, 6, 6) and int(images.x[4, 0, 0, 0]) == 41
    # an image of another size is brought to the first one's (bilinear), in memory as streamed
    Image.fromarray(np.full((5, 9, 3), 77, dtype=np.uint8)).save(tmp_path / "cat" / "odd.png")
    for mode in ("memory", "stream"):
        images = load_images(str(tmp_path), mode=mode)
        odd = images.pixels([3])  # cat/0, 1, 2, then odd.png
        assert images.shape == (3, 6, 6) and odd.shape == (1, 3, 6, 6) and int(odd.min()) == int(odd.max()) == 77


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        load_images(str(tmp_path / "missing"))
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(DataError, match=r"needs arrays x and y.*\['a'\]"):
        load_images(str(tmp_path / "other.npz"))
    np.savez(tmp_path / "mismatch.npz", x=np.zeros((4, 8, 8), dtype=np.uint8), y=np.zeros(3))
    with pytest.raises(DataError, match="4 images but y has 3 labels"):
        load_images(str(tmp_path / "mismatch.npz"))
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 8, 8), dtype=np.uint8), y=np.zeros(0))
    with pytest.raises(DataError, match="empty"):
        load_images(str(tmp_path / "empty.npz"))
    with pytest.raises(DataError, match="bad option"):
        load_images("synthetic:n=ten")


def test_splits_are_disjoint_balanced_and_normalized() -> None:
    train = synthetic(n=400, size=16, classes=4, seed=0)
    splits = make_splits(train, None, 3, val_fraction=0.1, alpha_fraction=0.2, limit=200, seed=0)
    sizes = len(splits.weights), len(splits.alphas), len(splits.val)
    assert sum(sizes) == 200 and sizes == (144, 36, 20)
    keys = [{bytes(img.numpy().tobytes()) for img in part.x} for part in (splits.weights, splits.alphas, splits.val)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    unseen = splits.unseen_by_weights()  # what selection scores candidates on
    assert {bytes(img.numpy().tobytes()) for img in unseen.x} == keys[1] | keys[2] and len(unseen) == 56
    assert torch.equal(unseen.y, torch.cat([splits.val.y, splits.alphas.y]))
    everything = torch.cat([splits.weights.y, splits.alphas.y, splits.val.y])
    assert torch.bincount(everything).tolist() == [50] * 4  # the limit keeps classes balanced
    x = torch.cat([xb for xb, _ in batches(splits.weights, 64, splits.mean, splits.std)])
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
    assert splits.classes == ["class0", "class1", "class2", "class3"]  # the data's classes, whatever the space's
    unnamed = Images(train.x, train.y, ["a", "b"], "unnamed")  # labels up to 3, two names
    with pytest.raises(DataError, match="labels go up to 3 but it names 2 classes"):
        make_splits(unnamed, None, 3)


def test_grayscale_images_are_repeated_to_three_channels() -> None:

    gray = Images(torch.randint(0, 255, (20, 1, 8, 8), dtype=torch.uint8), torch.arange(20) % 2, ["a", "b"], "g")
    splits = make_splits(gray, None, 3)
    assert splits.weights.x.shape[1] == 3 and torch.equal(splits.weights.x[:, 0], splits.weights.x[:, 2])


def test_batched_augmentation_is_the_per_image_crop_and_flip() -> None:
    """The batched gather against a plain per-image reference fed the same random draws."""
    from torch.nn import functional as F

    x = torch.rand(9, 3, 16, 12)
    out = augment(x, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    pad = 16 // 8
    dy = torch.randint(0, 2 * pad + 1, (9,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (9,), generator=g)
    flip = torch.rand(9, generator=g) < 0.5
    padded = F.pad(x, (pad, pad, pad, pad))
    for i in range(9):
        want = padded[i, :, int(dy[i]) : int(dy[i]) + 16, int(dx[i]) : int(dx[i]) + 12]
        if flip[i]:
            want = want.flip(-1)
        assert torch.equal(out[i], want), i
    assert 0 < int(flip.sum()) < 9 and len(set(dy.tolist())) > 1  # the draws exercised both branches


def test_augmentation_crops_and_flips_without_changing_shape() -> None:
    images = synthetic(n=64, size=16, classes=4)
    mean, std = torch.zeros(3), torch.ones(3)
    plain = torch.cat([x for x, _ in batches(images, 64, mean, std)])
    aug = torch.cat([x for x, _ in batches(images, 64, mean, std, torch.Generator().manual_seed(0), augment=True)])
    assert aug.shape == plain.shape and not torch.equal(aug.sort(0).values, plain.sort(0).values)


@pytest.mark.skipif(not (SHARED_DATA / "cifar10-jpeg.npz").exists(), reason="../shared/data/cifar10-jpeg.npz not here")
def test_real_cifar10_archive() -> None:
    test = load_test_images(str(SHARED_DATA / "cifar10-jpeg.npz"), 10)
    assert test is not None and len(test) == 10_000 and test.x.shape[1:] == (3, 32, 32)
    assert torch.bincount(test.y).tolist() == [1000] * 10


def test_greyscale_npz_with_class_names_is_converted_and_says_so(tmp_path: Path) -> None:
    from hwnas.export.child_file import load_child
    from hwnas.spaces import get_space

    from conftest import run_cli

    rng = np.random.default_rng(0)
    path = tmp_path / "grey.npz"
    names = np.array(["zero", "one", "two", "three"])
    np.savez(path, x=rng.integers(0, 256, (80, 28, 28), dtype=np.uint8), y=np.arange(80) % 4, classes=names)
    arch = get_space("tiny").sample(0)
    arch.save(tmp_path / "a.json")
    proc = run_cli("train", "--arch", str(tmp_path / "a.json"), "--data", str(path), "--epochs", "1", "--out",
                   str(tmp_path / "c.safetensors"), "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "hwnas: note: grey: 1-channel images repeated to the space's 3 channels" in proc.stderr
    assert f"28x28 images are resized to {arch.resolution}x{arch.resolution}" in proc.stderr
    child = load_child(None, tmp_path / "c.safetensors")
    assert child.meta["classes"] == names.tolist()
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=rng.integers(0, 256, (8, 28, 28), dtype=np.uint8), y=np.arange(8) % 4, classes=names[:2])
    proc = run_cli("train", "--arch", str(tmp_path / "a.json"), "--data", str(bad), "--epochs", "1", "--out",
                   str(tmp_path / "d.safetensors"))  # fmt: skip
    assert proc.returncode == 2 and "classes must be a 1-D array of at least 4 names" in proc.stderr
