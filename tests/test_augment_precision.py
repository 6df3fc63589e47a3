"""The ImageNet augmentation (RandomResizedCrop + flip, centre-crop evaluation) against plain
references, and training under autocast (bf16, fp16 with its gradient scalers)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from hwnas.search.config import SearchConfig
from hwnas.search.loop import Search
from hwnas.spaces import get_space
from hwnas.train.batches import EVAL_CROP, Batches, centre_crop, crop_resize, resized_crop
from hwnas.train.checkpoints import read_search_checkpoint
from hwnas.train.data import choose_recipe, load_splits, synthetic

from conftest import run_cli, write_folder


def test_crop_resize_is_interpolate_of_each_crop() -> None:
    """One batched grid_sample against F.interpolate of each image's slice (the reference)."""
    x = torch.rand(5, 3, 40, 56)
    top, left = torch.tensor([0.0, 3, 10, 0, 7]), torch.tensor([0.0, 5, 20, 1, 0])
    ch, cw = torch.tensor([40.0, 20, 13, 7, 33]), torch.tensor([56.0, 31, 36, 50, 9])
    out = crop_resize(x, top, left, ch, cw)
    for i in range(5):
        t, lf, h, w = (int(v[i]) for v in (top, left, ch, cw))
        ref = F.interpolate(x[i : i + 1, :, t : t + h, lf : lf + w], size=(40, 56), mode="bilinear",
                            align_corners=False)  # fmt: skip
        assert torch.allclose(out[i], ref[0], atol=1e-5), i


def _boxes(out: torch.Tensor) -> list[tuple[float, float, float, float, bool]]:
    """From images whose channel 0 is the column and channel 1 the row index: each output's crop
    (top, left, height, width) and whether it was flipped (the columns then run backwards)."""
    found = []
    for img in out:
        cols, rows = img[0, 0], img[1, :, 0]
        flipped = bool(cols[0] > cols[-1])
        cols = cols.flip(0) if flipped else cols
        # the first and last output pixels sample (k + 0.5) * size / n - 0.5 from the crop's start
        n = len(cols)
        width = float(cols[-1] - cols[0]) * n / (n - 1)
        height = float(rows[-1] - rows[0]) * n / (n - 1)
        found.append((float(rows[0]), float(cols[0]), height, width, flipped))
    return found


def test_the_random_resized_crop_draws_torchvision_s_boxes_and_flips() -> None:
    """Crops of 8-100% of the area at aspect ratios 3/4 to 4/3, spread over that range, half of
    them flipped; the same generator gives the same boxes."""
    n, size = 400, 160
    coords = torch.arange(size, dtype=torch.float32)
    x = torch.stack([coords.expand(size, size), coords[:, None].expand(size, size), torch.zeros(size, size)])
    x = x.expand(n, -1, -1, -1).contiguous()
    out = resized_crop(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, resized_crop(x, torch.Generator().manual_seed(0)))
    boxes = _boxes(out)
    areas = torch.tensor([h * w / size**2 for _, _, h, w, _ in boxes])
    ratios = torch.tensor([w / h for _, _, h, w, _ in boxes])
    # the crop's size is recovered from its sampling positions (which clamp at its far edge): +-1.5 px
    assert areas.min() > 0.08 * 0.9 and areas.max() <= 1.0 + 1e-6
    assert ratios.min() > 0.75 * 0.93 and ratios.max() < 4 / 3 * 1.07
    assert ratios.min() < 0.8 and ratios.max() > 1.25  # spread over the range: not one aspect ratio
    assert 0.45 < float(areas.mean()) < 0.62  # uniform in [0.08, 1] has mean 0.54 (the tries that fit)
    assert float(areas.std()) > 0.2  # spread, not one size
    flips = sum(f for *_, f in boxes)
    assert 150 < flips < 250
    for top, left, h, w, _ in boxes:  # inside the image
        assert top >= 0 and left >= 0 and top + h <= size + 1.5 and left + w <= size + 1.5


def test_the_draws_are_made_for_the_full_batch_whatever_was_kept() -> None:
    x = torch.rand(8, 3, 32, 32)
    full = resized_crop(x, torch.Generator().manual_seed(1))
    kept = torch.tensor([0, 2, 3, 7])
    part = resized_crop(x[kept], torch.Generator().manual_seed(1), drawn_for=8, kept=kept)
    assert torch.allclose(part, full[kept])


def test_the_recipe_follows_the_image_size_unless_named() -> None:
    assert choose_recipe(32, 32) == "pad-crop" and choose_recipe(24, 300) == "pad-crop"
    assert choose_recipe(224, 224) == "resized-crop" and choose_recipe(128, 160) == "resized-crop"
    assert choose_recipe(224, 224, "pad-crop") == "pad-crop" and choose_recipe(32, 32, "resized-crop") == "resized-crop"
    splits = load_splits("synthetic:n=40,size=128,classes=2", 2, 3)
    assert splits.recipe == "resized-crop" and any("RandomResizedCrop" in n for n in splits.notes)
    assert load_splits("synthetic:n=40,size=24,classes=2", 2, 3).recipe == "pad-crop"


def test_evaluation_after_the_imagenet_recipe_sees_the_centre_crop() -> None:
    images = synthetic(n=20, size=64, classes=2)
    mean, std = torch.zeros(3), torch.ones(3)
    plain = torch.cat([x for x, _ in Batches(images, 8, mean, std)])
    viewed = torch.cat([x for x, _ in Batches(images, 8, mean, std, recipe="resized-crop")])
    c = round(64 * EVAL_CROP)
    lo = (64 - c) // 2
    ref = F.interpolate(plain[:, :, lo : lo + c, lo : lo + c], size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(viewed, ref, atol=1e-5) and torch.allclose(centre_crop(plain), ref, atol=1e-5)
    with pytest.raises(ValueError, match="recipe"):
        Batches(images, 8, mean, std, recipe="mixup")


def test_streamed_imagenet_batches_are_the_in_memory_ones(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "imgs", n=64, size=24)
    memory = load_splits(str(folder), 4, 3, mode="memory", augment="resized-crop")
    stream = load_splits(str(folder), 4, 3, mode="stream", augment="resized-crop")
    for a_split, b_split in ((memory.weights, stream.weights),):
        a = Batches(a_split, 16, memory.mean, memory.std, torch.Generator().manual_seed(2), augment=True,
                    recipe=memory.recipe)  # fmt: skip
        b = Batches(b_split, 16, stream.mean, stream.std, torch.Generator().manual_seed(2), augment=True,
                    recipe=stream.recipe, workers=1)  # fmt: skip
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_an_imagenet_recipe_child_s_card_says_centre_crop(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "imgs", n=48, size=24, classes=2)
    arch = get_space("tiny").sample(2)
    arch.save(tmp_path / "arch.json")
    proc = run_cli("train", "--arch", str(tmp_path / "arch.json"), "--data", str(folder), "--epochs", "1",
                   "--augment", "resized-crop", "--out", str(tmp_path / "c.safetensors"), "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "RandomResizedCrop" in proc.stderr
    proc = run_cli("export", "--weights", str(tmp_path / "c.safetensors"), "--format", "onnx", "--out",
                   str(tmp_path / "x"), "--name", "m", "--data", str(folder))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    card = json.loads((tmp_path / "x" / "m-fp32.onnx.json").read_text())
    assert card["input"]["preprocessing"]["resize"].startswith("the centre 7/8")


# --- precision -------------------------------------------------------------------------------------
def _search(tmp_path: Path, name: str, **kw: object) -> Search:
    cfg = SearchConfig(
        **{
            "space": "tiny",
            "budget": 1.0,
            "cost": "flops",
            "data": "synthetic:n=240,size=24",
            "epochs": 2,
            "warmup_epochs": 1,
            "batch_size": 32,
            "evolution": 0,
            **kw,
        }
    )  # type: ignore[arg-type]
    s = Search(cfg, tmp_path / name, progress=False)
    s.run()
    return s


def test_bf16_autocast_trains_close_to_fp32_but_not_in_fp32(tmp_path: Path) -> None:
    fp32 = _search(tmp_path, "fp32")
    bf16 = _search(tmp_path, "bf16", precision_train="bf16")
    a = [m["train_ce"] for m in fp32.metrics]
    b = [m["train_ce"] for m in bf16.metrics]
    assert a != b  # the forward passes ran in bf16
    assert b == pytest.approx(a, rel=0.05)  # and trained the same way, to bf16's precision


def test_fp16_scales_each_optimizer_s_gradients_and_checkpoints_the_scalers(tmp_path: Path) -> None:
    s = _search(tmp_path, "fp16", precision_train="fp16")
    scalers = read_search_checkpoint(tmp_path / "fp16")["scalers"]
    steps = s.timing["weight_steps"], s.timing["arch_steps"]
    assert scalers["weights"]["scale"] > 1 and scalers["alphas"]["scale"] > 1
    # one update per step, each counting a step without overflow toward the next growth
    assert (scalers["weights"]["_growth_tracker"], scalers["alphas"]["_growth_tracker"]) == steps
    plain = read_search_checkpoint(_search(tmp_path, "plain").out)["scalers"]
    assert plain == {"weights": {}, "alphas": {}}
    bad = run_cli("search", "--space", "tiny", "--budget-mflops", "1", "--precision-train", "fp8", "--out",
                  str(tmp_path / "bad"))  # fmt: skip
    assert bad.returncode == 2 and "fp8" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.tour  # 11 s on the 2-core VM: in the tour, to keep the default suite under 15 minutes
def test_the_imagenet_recipe_fills_the_options_left_out(tmp_path: Path) -> None:
    """--recipe imagenet sets FBNet's values, an option named on the command line wins even at its
    default value, and --epochs rescales the warm-up and the temperature."""
    proc = run_cli("search", "--space", "tiny", "--recipe", "imagenet", "--epochs", "2", "--batch-size", "64",
                   "--precision-train", "fp32", "--budget-mflops", "0.6", "--data", "synthetic:n=200,size=24",
                   "--evolution", "0", "--out", str(tmp_path / "r"), "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (cfg["epochs"], cfg["batch_size"], cfg["precision_train"]) == (2, 64, "fp32")  # as given
    assert (cfg["lr"], cfg["arch_lr"], cfg["arch_weight_decay"], cfg["tau_start"]) == (0.1, 0.01, 5e-4, 5.0)
    assert cfg["augment"] == "resized-crop" and cfg["warmup_epochs"] == 0  # 10/90 of 2 epochs
    assert cfg["tau_end"] == pytest.approx(5.0 * math.exp(-0.045), abs=1e-4)  # one epoch of FBNet's decay
    from hwnas.search.recipes import imagenet

    full = imagenet()
    assert (full["epochs"], full["warmup_epochs"], full["batch_size"]) == (90, 10, 192)
    assert full["tau_end"] == pytest.approx(5.0 * math.exp(-0.045 * 89), abs=1e-4)


def test_large_images_are_evaluated_in_smaller_batches_with_the_same_accuracy() -> None:
    from hwnas.models.builder import build_model
    from hwnas.train.training import eval_batch_size, evaluate

    assert eval_batch_size(synthetic(n=4, size=224, classes=2)) == 40_000_000 // (4 * 3 * 224 * 224) == 66
    assert eval_batch_size(synthetic(n=4, size=32, classes=2)) == 256
    images = synthetic(n=300, size=128, classes=4)
    assert eval_batch_size(images) == 203
    torch.manual_seed(0)
    model = build_model(get_space("tiny").sample(0))
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    default = evaluate(model, images, mean, std, torch.device("cpu"))
    assert default == evaluate(model, images, mean, std, torch.device("cpu"), batch_size=300)
    assert default > 0  # the comparison is between real predictions
