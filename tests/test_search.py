"""`hwnas search` and `hwnas train`: derivation against brute force, the run folder, resume, bad input."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from hwnas.core.errors import HwnasError
from hwnas.latency.table import LatencyTable
from hwnas.models.builder import build_model
from hwnas.search.cost import make_cost
from hwnas.search.derive import GROW_TO, InfeasibleBudget, check_budget, derive
from hwnas.search.loop import Search, SearchConfig
from hwnas.spaces import get_space
from hwnas.spaces.arch import Architecture
from hwnas.spaces.kernels import arch_flops
from hwnas.train.checkpoints import read_child
from hwnas.train.training import evaluate

from conftest import FAST_TIMING, ROOT, run_cli

TINY_DATA = "synthetic:n=480,size=24"


def _all_archs(space):
    import itertools

    for r in space.resolutions:
        for options in itertools.product(*(layer.options for layer in space.layers)):
            yield space.architecture(r, list(options))


@pytest.fixture(scope="module")
def tiny_flops() -> list[float]:
    space = get_space("tiny")
    return sorted(arch_flops(a) / 1e6 for a in _all_archs(space))


def _random_probs(space, seed: int):
    g = torch.Generator().manual_seed(seed)
    res = torch.randn(len(space.resolutions), generator=g).softmax(0)
    return res, [torch.randn(len(layer.options), generator=g).softmax(0) for layer in space.layers]


def test_cheapest_and_costliest_match_brute_force(tiny_flops: list[float]) -> None:
    space = get_space("tiny")
    cost = make_cost("flops", space)
    lo, hi = check_budget(space, cost, tiny_flops[-1])
    assert lo == pytest.approx(tiny_flops[0]) and hi == pytest.approx(tiny_flops[-1])
    with pytest.raises(InfeasibleBudget, match=f"{tiny_flops[0]:.4g}"):
        check_budget(space, cost, tiny_flops[0] * 0.99)


@pytest.mark.parametrize("quantile", [0.02, 0.3, 0.6, 0.95])
def test_derived_architecture_meets_the_budget_and_grows_towards_it(tiny_flops: list[float], quantile: float) -> None:
    space = get_space("tiny")
    cost = make_cost("flops", space)
    budget = tiny_flops[int(quantile * (len(tiny_flops) - 1))]
    for seed in range(4):
        d = derive(space, cost, budget, *_random_probs(space, seed))
        assert d.cost == pytest.approx(arch_flops(d.arch) / 1e6)  # the cost is the architecture's, recomputed
        assert d.cost <= budget * (1 + 1e-9)
        if d.cost < GROW_TO * budget:  # then no single change could have grown it within the budget
            worse = [a for a in _neighbours(space, d.arch) if d.cost < arch_flops(a) / 1e6 <= budget]
            assert not worse
        if d.argmax_cost <= budget and d.argmax_cost >= GROW_TO * budget:
            assert d.arch == d.argmax and not d.steps


def _neighbours(space, arch: Architecture):
    for i, layer in enumerate(space.layers):
        for o in layer.options:
            blocks = list(arch.blocks)
            blocks[i] = o.block(layer.stride)
            yield Architecture(tuple(blocks), arch.resolution, arch.num_classes, arch.in_channels)
    for r in space.resolutions:
        yield arch.with_resolution(r)


def _config(tmp_path: Path, **kw) -> SearchConfig:
    # the relaxed supernet alone unless a test asks for the child step (on by default in hwnas; the CLI
    # tests run the defaults), to keep the suite's time
    base = {"space": "tiny", "budget": 1.0, "cost": "flops", "data": TINY_DATA, "epochs": 3, "warmup_epochs": 1,
            "batch_size": 32, "sampled_child": False}  # fmt: skip
    base.update(kw)
    return SearchConfig(**base)  # type: ignore[arg-type]


def test_search_writes_a_complete_run_folder(tmp_path: Path, tiny_flops: list[float]) -> None:
    budget = tiny_flops[len(tiny_flops) // 3]
    out = tmp_path / "run"
    search = Search(_config(tmp_path, budget=budget, sampled_child=True), out, progress=False)  # the defaults
    result = search.run()
    arch = Architecture.load(out / "arch.json")
    assert arch == result.derivation.arch and get_space("tiny").contains(arch)
    assert arch_flops(arch) / 1e6 <= budget
    assert (out / "arch.txt").read_text().strip() == arch.to_str()
    m = pd.read_csv(out / "metrics.csv")
    assert list(m["epoch"]) == [1, 2, 3]
    for col in ("train_ce", "expected_cost", "lambda", "tau", "entropy_op", "entropy_channels", "val_acc"):
        assert m[col].notna().all(), col
    assert m["tau"].iloc[0] == pytest.approx(5.0) and m["tau"].iloc[-1] == pytest.approx(0.5)
    assert math.isnan(m["arch_ce"].iloc[0]) and m["arch_ce"].iloc[1:].notna().all()  # warm-up: weights only
    probs = pd.read_csv(out / "probs.csv")
    sums = probs.groupby(["epoch", "layer", "factor"])["prob"].sum()
    assert ((sums - 1).abs() < 1e-5).all()
    for name in ("progress.png", "choices.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "search.json").read_text())
    assert summary["predicted_cost"] == pytest.approx(arch_flops(arch) / 1e6)
    cands = json.loads((out / "candidates.json").read_text())
    chosen = [c for c in cands if c["selected"]]
    scored = [c for c in cands if not c["how"].startswith("null")]
    assert len(chosen) == 1 and chosen[0]["arch"] == arch.to_str()
    assert chosen[0]["val_acc_supernet"] == max(c["val_acc_supernet"] for c in scored)
    # scored on every image the weights never trained on, not the validation images alone
    unseen = search.selection_images
    assert len(unseen) == len(search.splits.val) + len(search.splits.alphas) > len(search.splits.val)
    search._recalibrate_bn(arch)
    on_unseen = evaluate(search.net, unseen, search.splits.mean, search.splits.std, search.device, arch=arch)
    assert chosen[0]["val_acc_supernet"] == pytest.approx(on_unseen, abs=1e-9)
    for c in scored:  # every candidate in the band (the tiny space has architectures in it at this budget)
        assert 0.9 * budget <= c["cost"] <= budget * (1 + 1e-9)
        a = Architecture.from_str(c["arch"], arch.num_classes, arch.in_channels)
        assert c["cost"] == pytest.approx(arch_flops(a) / 1e6)
    assert any(c["how"].startswith("evolution") for c in scored)  # the band holds more than the program's four
    in_band_res = {a.resolution for a in _all_archs(get_space("tiny")) if 0.9 * budget <= arch_flops(a) / 1e6 <= budget}
    scored_res = {Architecture.from_str(c["arch"], arch.num_classes, arch.in_channels).resolution for c in scored}
    assert len(in_band_res) > 1 and scored_res == in_band_res  # every resolution the band allows is a candidate
    null = next(c for c in cands if c["how"].startswith("null"))
    null_arch = Architecture.from_str(null["arch"], arch.num_classes, arch.in_channels)
    differ = sum(a != b for a, b in zip(null_arch.blocks, arch.blocks, strict=True)) + (
        null_arch.resolution != arch.resolution
    )
    assert null["layers_differing_from_selected"] == differ == summary["layers_differing_from_null"]
    times = summary["compute_time"]
    assert set(times) == {"weight_step_ms", "arch_step_ms", "expected_cost_ms_per_arch_step", "data_wait_share",
                          "images_per_s"}  # fmt: skip
    assert 0 < times["data_wait_share"] < 1 and times["images_per_s"] > 0


@pytest.mark.tour  # 13 s on the 2-core VM: in the tour, to keep the default suite under 15 minutes
def test_the_budget_pulls_the_expected_cost_down(tmp_path: Path, tiny_flops: list[float]) -> None:
    """A tight budget ends with a lower expected cost than a loose one (same seed, same data)."""
    tight = Search(_config(tmp_path, budget=tiny_flops[5], epochs=4, arch_lr=0.05, loss="hinge"), tmp_path / "a",
                   progress=False)  # fmt: skip
    loose = Search(_config(tmp_path, budget=tiny_flops[-1], epochs=4, arch_lr=0.05, loss="hinge"), tmp_path / "b",
                   progress=False)  # fmt: skip
    t, lo = tight.run(), loose.run()
    assert t.metrics[-1]["expected_cost"] < lo.metrics[-1]["expected_cost"]
    assert t.metrics[-1]["lambda"] > t.metrics[0]["lambda"]  # dual ascent raised lambda while over budget


def test_fbnet_loss_runs(tmp_path: Path, tiny_flops: list[float]) -> None:
    r = Search(_config(tmp_path, budget=tiny_flops[100], loss="fbnet", epochs=2), tmp_path / "f", progress=False).run()
    assert r.derivation.cost <= tiny_flops[100]


def _search_cmd(out: Path, epochs: int = 6) -> list[str]:
    return [sys.executable, "-m", "hwnas", "search", "--space", "tiny", "--budget-mflops", "0.6", "--data",
            "synthetic:n=960,size=24", "--epochs", str(epochs), "--warmup-epochs", "1", "--batch-size", "32",
            "--out", str(out), "--no-progress", "--seed", "3"]  # fmt: skip


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, after the default suite
def test_kill_mid_epoch_then_resume_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    full = subprocess.run(_search_cmd(tmp_path / "full"), capture_output=True, text=True, env=env, cwd=ROOT)
    assert full.returncode == 0, full.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(_search_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    metrics = out / "metrics.csv"
    while not metrics.exists() or len(metrics.read_text().splitlines()) < 3:  # two epochs done
        assert proc.poll() is None, "the search ended before it could be killed"
        time.sleep(0.05)
    epoch_s = float(pd.read_csv(metrics)["seconds"].iloc[-1])
    time.sleep(epoch_s / 2)  # into the third epoch
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(pd.read_csv(metrics)) < 6
    again = subprocess.run([*_search_cmd(out), "--resume"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    assert (out / "arch.txt").read_text() == (tmp_path / "full" / "arch.txt").read_text()
    a, b = pd.read_csv(out / "metrics.csv"), pd.read_csv(tmp_path / "full" / "metrics.csv")
    assert list(a["epoch"]) == list(range(1, 7))
    pd.testing.assert_series_equal(a["expected_cost"], b["expected_cost"], rtol=1e-6)


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, after the default suite
def test_search_bad_inputs(tmp_path: Path) -> None:
    def err(*args: str) -> str:
        proc = run_cli("search", "--space", "tiny", "--out", str(tmp_path / "r"), "--no-progress", *args)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        return proc.stderr

    assert "below the cheapest architecture of tiny" in err("--budget-mflops", "0.001")
    assert "unknown cost 'speed'" in err("--cost", "speed", "--budget-mflops", "1")
    assert "exactly one budget" in err()
    assert "needs a LUT" in err("--budget-ms", "1")
    assert "no such file or folder" in err("--budget-mflops", "1", "--data", str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    assert "sub-folder per class" in err("--budget-mflops", "1", "--data", str(tmp_path / "empty"))
    (tmp_path / "notes.txt").write_text("hello")
    assert "not a dataset" in err("--budget-mflops", "1", "--data", str(tmp_path / "notes.txt"))
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really")
    assert "not a readable .npz" in err("--budget-mflops", "1", "--data", str(tmp_path / "bad.npz"))
    assert "no checkpoint to resume" in err("--budget-mflops", "1", "--resume")
    assert "must be >= 0" in err("--budget-mflops", "1", "--evolution", "-1")
    assert "unknown child sampling 'any'" in err("--budget-mflops", "1", "--child-sampling", "any")


def test_a_run_made_before_a_setting_existed_resumes_as_it_was_made() -> None:
    saved = asdict(_config(Path("."), sampled_child=True, evolution=24))
    del saved["sampled_child"], saved["evolution"], saved["child_sampling"], saved["relaxed_weights"]  # older file
    old = SearchConfig.from_saved(saved)
    assert old.sampled_child is False and old.evolution == 0  # what such a run did, not today's defaults
    assert old.child_sampling == "alpha" and old.relaxed_weights is True
    assert SearchConfig(space="tiny", budget=1.0).sampled_child is True


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, after the default suite
def test_search_with_a_lut_that_lacks_kernels_names_them_and_the_command(tmp_path: Path) -> None:
    lut = tmp_path / "tiny.lut"
    proc = run_cli("profile", "--space", "tiny", "--device", "ort-cpu:threads=1", "--out", str(lut), "--rounds", "1",
                   "--no-progress", *FAST_TIMING)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("search", "--space", "cifar", "--lut", str(lut), "--budget-ms", "1", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    missing = LatencyTable.load(lut).missing(get_space("cifar").kernels())
    assert f"lacks {len(missing)} kernel(s)" in proc.stderr and missing[0] in proc.stderr
    assert f"hwnas profile --space cifar --device ort-cpu:threads=1,opt=all,batch=1 --out {lut}" in proc.stderr
    # with the right space it searches under the latency budget
    cost = make_cost("latency", get_space("tiny"), lut)
    lo, hi = check_budget(get_space("tiny"), cost, 1e9)
    budget = (lo + hi) / 2
    proc = run_cli("search", "--space", "tiny", "--lut", str(lut), "--budget-ms", f"{budget:.6f}", "--data", TINY_DATA,
                   "--epochs", "2", "--warmup-epochs", "1", "--out", str(tmp_path / "lat"), "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    arch = Architecture.load(tmp_path / "lat" / "arch.json")
    assert cost.of(arch) <= budget
    # data of 3 classes on the 4-class space: the LUT lacks the 3-wide classifier, and the message
    # says how to add it; that profile measures only the new kernels, and then the search runs
    three = replace(get_space("tiny"), num_classes=3)
    head = LatencyTable.load(lut).missing(three.kernels())
    assert head and all(k.startswith("linear") for k in head)
    args = ("search", "--space", "tiny", "--lut", str(lut), "--budget-ms", f"{budget:.6f}", "--data",
            f"{TINY_DATA},classes=3", "--epochs", "1", "--warmup-epochs", "0", "--out", str(tmp_path / "three"),
            "--no-progress")  # fmt: skip
    proc = run_cli(*args)
    assert proc.returncode == 2 and "(the data has 3 classes)" in proc.stderr and head[0] in proc.stderr
    assert (
        f"hwnas profile --space tiny --classes 3 --device ort-cpu:threads=1,opt=all,batch=1 --out {lut}" in proc.stderr
    )
    proc = run_cli("profile", "--space", "tiny", "--classes", "3", "--device", "ort-cpu:threads=1", "--out", str(lut),
                   "--rounds", "1", "--no-progress", *FAST_TIMING)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"measured {len(head)}, already there {len(three.kernels()) - len(head)}" in proc.stdout
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert Architecture.load(tmp_path / "three" / "arch.json").num_classes == 3


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, after the default suite
def test_train_from_scratch_and_from_the_supernet(tmp_path: Path) -> None:
    out = tmp_path / "run"
    Search(_config(tmp_path, budget=1.0, epochs=2), out, progress=False).run()
    for init in ("scratch", "supernet"):
        child = tmp_path / f"{init}.safetensors"
        proc = run_cli("train", "--arch", str(out / "arch.json"), "--data", TINY_DATA, "--epochs", "2",
                       "--init", init, "--run", str(out), "--out", str(child), "--no-progress")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        stored = read_child(child)
        assert stored.arch == Architecture.load(out / "arch.json")
        assert 0.0 <= stored.meta["val_acc"] <= 1.0 and stored.meta["test_acc"] is not None
        assert len(stored.meta["history"]) == 2
    proc = run_cli(
        "train", "--arch", str(out / "arch.json"), "--init", "supernet", "--out", str(tmp_path / "x.safetensors")
    )
    assert proc.returncode == 2 and "--run" in proc.stderr


def test_unknown_cost_in_the_library() -> None:
    with pytest.raises(HwnasError, match="unknown cost"):
        make_cost("energy", get_space("tiny"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (--torch-device cuda)")
def test_search_on_cuda_resumes_from_its_checkpoint_where_an_uninterrupted_run_ends(tmp_path: Path) -> None:
    """The checkpoint holds CPU tensors; resuming on the GPU must put weights and optimizer state back there,
    and continue the same random stream (on an H200 the Gumbel noise came from the CUDA generator, which
    the checkpoint did not hold, and the resumed run's expected cost drifted 0.3-4% from the uninterrupted one)."""
    cfg = _config(tmp_path, epochs=3, torch_device="cuda")
    full = Search(cfg, tmp_path / "full", progress=False).run()
    twice = Search(_config(tmp_path, epochs=3, torch_device="cuda"), tmp_path / "full2", progress=False).run()
    short = Search(_config(tmp_path, epochs=3, torch_device="cuda"), tmp_path / "part", progress=False)
    for _ in range(2):  # two epochs of run(), then stop, as a killed run would
        short.metrics.append(short._epoch(lambda: None))
        short.epoch += 1
        short._save()
    resumed = Search(_config(tmp_path, epochs=3, torch_device="cuda"), tmp_path / "part", resume=True, progress=False)
    assert next(resumed.net.parameters()).is_cuda and resumed.epoch == 2
    again = resumed.run()
    assert again.derivation.arch == full.derivation.arch
    a = [m["expected_cost"] for m in again.metrics]
    b = [m["expected_cost"] for m in full.metrics]
    floor = max(abs(x - y) / y for x, y in zip([m["expected_cost"] for m in twice.metrics], b, strict=True))
    # cuDNN may reorder sums between two runs; resuming must add nothing beyond that noise floor
    assert a == pytest.approx(b, rel=max(1e-4, 3 * floor))


def test_the_split_seed_and_not_the_search_seed_picks_the_held_out_images(tmp_path: Path) -> None:
    """Seeds of one experiment must never train on another seed's validation images."""
    a = Search(_config(tmp_path, seed=0), tmp_path / "a", progress=False).splits
    b = Search(_config(tmp_path, seed=1), tmp_path / "b", progress=False).splits
    c = Search(_config(tmp_path, seed=0, split_seed=1), tmp_path / "c", progress=False).splits
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.alphas.x, b.alphas.x)
    assert not torch.equal(a.val.x, c.val.x)


def test_sampled_children_follow_the_choice_distribution(tmp_path: Path) -> None:
    search = Search(_config(tmp_path), tmp_path / "s", progress=False)
    gen = torch.Generator().manual_seed(0)
    seen = [set() for _ in search.space.layers]
    for _ in range(200):  # uniform alphas: every option of every layer turns up
        for i, b in enumerate(search._sample_child(gen).blocks):
            seen[i].add((b.op, b.c, b.e))
    assert [len(s) for s in seen] == [len(layer.options) for layer in search.space.layers]
    with torch.no_grad():  # peaked alphas: the argmax child every time
        for p in search.net.arch_parameters():
            p.copy_(torch.arange(p.numel(), dtype=p.dtype) * 20.0)
    assert {search._sample_child(gen) for _ in range(20)} == {search.net.derive()}
    seen = [set() for _ in search.space.layers]  # the uniform draw ignores the peaked alphas
    for _ in range(200):
        for i, b in enumerate(search._sample_child(gen, uniform=True).blocks):
            seen[i].add((b.op, b.c, b.e))
    assert [len(s) for s in seen] == [len(layer.options) for layer in search.space.layers]


@pytest.mark.parametrize("sampling, uniform_steps", [("alpha", set()), ("uniform", {0, 1, 2, 3}), ("mixed", {0, 2})])
def test_child_sampling_draws_uniform_children_on_the_steps_it_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sampling: str, uniform_steps: set[int]
) -> None:
    search = Search(_config(tmp_path, child_sampling=sampling, sampled_child=True), tmp_path / "s", progress=False)
    drawn: list[bool] = []
    original = search._sample_child

    def spy(gen: torch.Generator, uniform: bool = False) -> Architecture:
        drawn.append(uniform)
        return original(gen, uniform)

    monkeypatch.setattr(search, "_sample_child", spy)
    search._epoch(lambda: None)
    assert len(drawn) == search.steps_per_epoch >= 4
    assert {i for i, u in enumerate(drawn[:4]) if u} == uniform_steps


@pytest.mark.parametrize("relaxed", [True, False])
def test_without_the_relaxed_weight_step_the_weights_learn_from_children_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relaxed: bool
) -> None:
    search = Search(_config(tmp_path, sampled_child=True, relaxed_weights=relaxed, epochs=2, warmup_epochs=1),
                    tmp_path / "s", progress=False)  # fmt: skip
    calls = {"relaxed": 0, "child": 0}
    forward = search.net.forward

    def counting(x: torch.Tensor, tau: float = 1.0, resolution: int | None = None,
                 arch: Architecture | None = None) -> torch.Tensor:  # fmt: skip
        calls["child" if arch is not None else "relaxed"] += 1
        return forward(x, tau, resolution, arch)

    monkeypatch.setattr(search.net, "forward", counting)
    at_epoch_end: dict[str, int] = {}
    epoch_row = search._epoch_row

    def snapshot(tau: float, sums: dict[str, float]) -> dict[str, Any]:
        at_epoch_end.update(calls)  # before the argmax network is evaluated
        return epoch_row(tau, sums)

    monkeypatch.setattr(search, "_epoch_row", snapshot)
    row = search._epoch(lambda: None)  # the warm-up epoch: weight steps only
    n = search.steps_per_epoch
    assert at_epoch_end == {"relaxed": n if relaxed else 0, "child": n}
    assert math.isfinite(row["train_ce"]) and 0.0 <= row["train_acc"] <= 1.0


def test_without_the_relaxed_weight_step_a_child_step_is_required(tmp_path: Path) -> None:
    with pytest.raises(HwnasError, match="learn only from children: add --sandwich or --sampled-child"):
        Search(_config(tmp_path, relaxed_weights=False, sampled_child=False, sandwich=False), tmp_path / "x",
               progress=False)  # fmt: skip


def test_an_unknown_child_sampling_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HwnasError, match=r"child sampling 'random'; choose alpha, mixed, uniform"):
        Search(_config(tmp_path, child_sampling="random"), tmp_path / "x", progress=False)


def test_a_negative_evolution_budget_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HwnasError, match="evolution"):
        Search(_config(tmp_path, evolution=-1), tmp_path / "x", progress=False)


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, after the default suite
@pytest.mark.parametrize("children", ["sandwich", "sampled_child", "sampled_child+mixed"])
def test_child_training_resumes_where_an_uninterrupted_run_ends(tmp_path: Path, children: str) -> None:
    kind, _, sampling = children.partition("+")
    cfg = {kind: True, "epochs": 3, "warmup_epochs": 1, "child_sampling": sampling or "alpha"}
    full = Search(_config(tmp_path, **cfg), tmp_path / "full", progress=False).run()
    part = Search(_config(tmp_path, **cfg), tmp_path / "part", progress=False)
    for _ in range(2):
        part.metrics.append(part._epoch(lambda: None))
        part.epoch += 1
        part._save()
    again = Search(_config(tmp_path, **cfg), tmp_path / "part", resume=True, progress=False).run()
    assert again.derivation.arch == full.derivation.arch
    assert [m["train_ce"] for m in again.metrics] == pytest.approx([m["train_ce"] for m in full.metrics], rel=1e-6)
    plain = Search(_config(tmp_path, epochs=3, warmup_epochs=1, sampled_child=False, sandwich=False), tmp_path / "plain",
                   progress=False).run()  # fmt: skip
    assert plain.metrics[0]["train_ce"] != pytest.approx(full.metrics[0]["train_ce"], rel=1e-6)  # it trains otherwise


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, after the default suite
def test_train_once_search_many_derives_one_architecture_per_budget_in_its_band(
    tmp_path: Path, tiny_flops: list[float]
) -> None:
    budgets = [tiny_flops[int(q * (len(tiny_flops) - 1))] * 1.0001 for q in (0.25, 0.5, 0.8)]
    out = tmp_path / "many"
    proc = run_cli("search", "--space", "tiny", "--budget-mflops", ",".join(f"{b:.6f}" for b in budgets),
                   "--data", TINY_DATA, "--limit", "450", "--split-seed", "2", "--epochs", "2", "--warmup-epochs", "1",
                   "--batch-size", "32", "--out", str(out), "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"--data {TINY_DATA} --limit 450 --split-seed 2 --out" in proc.stdout  # 'next:' retrains on the same images
    rows = json.loads((out / "budgets.json").read_text())
    assert [r["budget"] for r in rows] == pytest.approx(sorted(float(f"{b:.6f}") for b in budgets))
    for row in rows:
        arch = Architecture.load(out / f"budget-{row['budget']:g}" / "arch.json")
        flops = arch_flops(arch) / 1e6
        assert flops == pytest.approx(row["cost"]) and 0.9 * row["budget"] <= flops <= row["budget"] * (1 + 1e-9)
        assert row["in_band"] is True
    assert "one architecture per budget" in proc.stdout
    main = json.loads((out / "candidates.json").read_text())
    chosen = next(c for c in main if c["selected"])
    assert chosen["arch"] == (out / "arch.txt").read_text().strip()
    null = next(c for c in main if c["how"].startswith("null"))
    summary = json.loads((out / "search.json").read_text())
    assert summary["layers_differing_from_null"] == null["layers_differing_from_selected"]
    assert json.loads((out / "config.json").read_text())["budget"] == pytest.approx(float(f"{budgets[1]:.6f}"))


def test_init_from_the_supernet_starts_from_its_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train_and_save(init="supernet") hands training the supernet's weights, not a fresh network."""
    from hwnas.train import training
    from hwnas.train.checkpoints import read_search_checkpoint
    from hwnas.train.config import TrainConfig
    from hwnas.workflows import train_and_save

    run = tmp_path / "run"
    Search(_config(tmp_path, epochs=2), run, progress=False).run()
    arch = Architecture.load(run / "arch.json")
    seen = {}
    real = training.train_child

    def spy(arch_, splits, **kw):  # type: ignore[no-untyped-def]
        seen["init"] = {k: v.clone() for k, v in kw["init"].state_dict().items()}
        return real(arch_, splits, **{**kw, "epochs": 1})

    monkeypatch.setattr(training, "train_child", spy)
    cfg = TrainConfig(data=TINY_DATA, epochs=1, init="supernet", run=str(run))
    train_and_save(arch, cfg, tmp_path / "c.safetensors", progress=False)
    stem = read_search_checkpoint(run)["net"]["layers.0.conv.weight"]
    got = seen["init"]["blocks.0.0.weight"]
    assert torch.equal(got, stem[: got.shape[0], : got.shape[1]])
    assert not torch.equal(got, build_model(arch).state_dict()["blocks.0.0.weight"])


@pytest.mark.parametrize("seed", range(6))
def test_the_first_repair_step_is_the_cheapest_loss_of_probability_per_unit_saved(
    tiny_flops: list[float], seed: int
) -> None:
    """Against an independent enumeration of every single change from the joint argmax."""
    from hwnas.search.derive import _opt
    from hwnas.spaces.kernels import arch_flops as flops

    space = get_space("tiny")
    cost = make_cost("flops", space)
    res, probs = _random_probs(space, seed)
    lp_res, lp = res.log().tolist(), [p.log().tolist() for p in probs]
    r = max(range(len(lp_res)), key=lambda i: lp_res[i])
    choice = [max(range(len(v)), key=lambda j: v[j]) for v in lp]

    def arch_of(r_: int, ch: list[int]) -> Architecture:
        return space.architecture(space.resolutions[r_], [space.layers[i].options[j] for i, j in enumerate(ch)])

    start = flops(arch_of(r, choice)) / 1e6
    budget = tiny_flops[int(0.1 * (len(tiny_flops) - 1))]
    if start <= budget:
        pytest.skip("the argmax already fits this budget")
    moves = []
    for r2 in range(len(lp_res)):
        if r2 != r:
            saved = start - flops(arch_of(r2, choice)) / 1e6
            moves.append(((lp_res[r] - lp_res[r2]) / saved if saved > 0 else math.inf,
                          f"resolution {space.resolutions[r]} -> {space.resolutions[r2]}"))  # fmt: skip
    for i, layer in enumerate(space.layers):
        for j in range(len(layer.options)):
            if j != choice[i]:
                ch = list(choice)
                ch[i] = j
                saved = start - flops(arch_of(r, ch)) / 1e6
                moves.append(((lp[i][choice[i]] - lp[i][j]) / saved if saved > 0 else math.inf,
                              f"layer {i}: {_opt(layer.options[choice[i]])} -> {_opt(layer.options[j])}"))  # fmt: skip
    best = min(moves, key=lambda m: m[0])
    d = derive(space, cost, budget, res, probs)
    assert d.steps[0].startswith(f"repair: {best[1]} (")


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, after the default suite
def test_a_many_budget_search_returns_the_main_budgets_candidates(tmp_path: Path, tiny_flops: list[float]) -> None:
    budgets = [tiny_flops[int(q * (len(tiny_flops) - 1))] * 1.0001 for q in (0.3, 0.7)]
    cfg = _config(tmp_path, budget=budgets[0], budgets=budgets, epochs=2)
    result = Search(cfg, tmp_path / "m", progress=False).run()
    assert result.candidates == json.loads((tmp_path / "m" / "candidates.json").read_text())
    assert [r["budget"] for r in result.per_budget] == budgets
