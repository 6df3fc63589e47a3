"""hwnas search under a real torchrun with 2 CPU processes (gloo): the ranks agree bit for bit, rank
1 writes nothing, 2 processes give what 1 gives at the same global batch, an elastic restart after
a killed rank ends where an uninterrupted run ends, and checkpoints resume on another world size.
``tests/ddp_probe.py`` records what each rank holds (see its docstring)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from hwnas.spaces.arch import Architecture

from conftest import ROOT

PROBE = ROOT / "tests" / "ddp_probe.py"
BUDGETS = ["0.1", "0.15", "0.2"]  # train once, search many: the per-budget searches run under torchrun too
ARGS = ["search", "--space", "tiny", "--budget-mflops", ",".join(BUDGETS), "--data", "synthetic:n=480,size=24",
        "--epochs", "3", "--warmup-epochs", "1", "--batch-size", "32", "--evolution", "4", "--no-progress"]  # fmt: skip
EPOCH1_LOSS_RTOL = 0.02  # BatchNorm normalizes each rank's 16 images, not the global batch's 32
ENV = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")


def torchrun(n: int, probe: Path, out: Path, *extra: str, restarts: int = 0, kill: str | None = None
             ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    env = dict(ENV, PROBE_KILL=kill) if kill else ENV
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
           "--max-restarts", str(restarts), "--monitor-interval", "0.1", str(PROBE), str(probe), str(out), "--",
           *ARGS, "--out", str(out), *extra]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)


def single(probe: Path, out: Path, *extra: str, kill: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(ENV, PROBE_KILL=kill) if kill else ENV
    cmd = [sys.executable, str(PROBE), str(probe), str(out), "--", *ARGS, "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("two")
    proc = torchrun(2, base / "probe", base / "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base / "run", base / "probe"


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("one")
    proc = single(base / "probe", base / "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base / "run"


def states(probe: Path, rank: int, life: int = 0) -> list[dict]:
    files = sorted(probe.glob(f"rank{rank}-life{life}-*.pt"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    return [torch.load(f) for f in files]


def metrics(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "metrics.csv").drop(columns=["seconds"])


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, keeping the default suite under 15 minutes
def test_two_ranks_hold_the_same_alphas_and_weights_at_every_epoch_and_rank1_writes_nothing(two) -> None:
    run, probe = two
    r0, r1 = states(probe, 0), states(probe, 1)
    assert len(r0) == len(r1) == 3 + len(BUDGETS)  # every epoch, then every per-budget search
    for a, b in zip(r0, r1, strict=True):
        assert a["when"] == b["when"]
        assert all(torch.equal(x, y) for x, y in zip(a["alphas"], b["alphas"], strict=True)), a["when"]
        assert all(torch.equal(x, y) for x, y in zip(a["weights"], b["weights"], strict=True)), a["when"]
    assert not torch.equal(torch.cat([a.flatten() for a in r0[0]["alphas"]]),
                           torch.cat([a.flatten() for a in r0[-1]["alphas"]]))  # fmt: skip  # they did move
    # both ranks derived the same architecture for every budget; rank 0 wrote it
    chosen0 = (probe / "select-rank0-life0.txt").read_text()
    assert chosen0 == (probe / "select-rank1-life0.txt").read_text()
    assert len(chosen0.splitlines()) == 1 + len(BUDGETS)
    mid = BUDGETS[1]
    written = Architecture.load(run / "arch.json").to_str()
    assert f"{mid} {written}" in chosen0.splitlines()[0]
    for b in BUDGETS:
        assert (run / f"budget-{b}" / "arch.json").exists()
    # rank 1 ran (the probe heard it) and did not create, write, rename or remove anything in the run folder
    assert (probe / "writes-rank1.txt").exists() and (probe / "writes-rank1.txt").read_text() == ""
    assert len(metrics(run)) == 3


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, keeping the default suite under 15 minutes
def test_two_processes_give_the_one_process_result_at_the_same_global_batch(two, one) -> None:
    run, _ = two
    m2, m1 = metrics(run), metrics(one)
    # the first epoch trains weights only, from the same initialization on the same images with the
    # same augmentation and noise: its loss differs only by BatchNorm's per-rank statistics
    assert m2["train_ce"].iloc[0] == pytest.approx(m1["train_ce"].iloc[0], rel=EPOCH1_LOSS_RTOL)
    assert m2["train_ce"].iloc[0] != m1["train_ce"].iloc[0]  # not one process twice
    assert m2["expected_cost"].iloc[0] == m1["expected_cost"].iloc[0]
    assert (run / "arch.txt").read_text() == (one / "arch.txt").read_text()


@pytest.mark.tour  # a long command-line journey (kill, restart, resume): CI runs it with the tour
def test_an_elastic_restart_after_a_killed_rank_ends_where_the_uninterrupted_run_ends(two, tmp_path: Path) -> None:
    run, _ = two
    out, probe = tmp_path / "run", tmp_path / "probe"
    # rank 1 dies inside the second epoch; torchrun restarts the group, which resumes from the checkpoint
    proc = torchrun(2, probe, out, "--checkpoint-every", "0", restarts=1, kill="1:4:1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert states(probe, 1, life=1), "the group was not restarted"
    assert len(states(probe, 0, life=0)) == 1  # the first life finished one epoch, not two
    pd.testing.assert_frame_equal(metrics(out), metrics(run))
    assert (out / "arch.txt").read_text() == (run / "arch.txt").read_text()
    assert (out / "budgets.json").read_text() == (run / "budgets.json").read_text()


@pytest.mark.tour  # a long command-line journey (kill, restart, resume): CI runs it with the tour
def test_a_checkpoint_from_two_processes_resumes_on_one(two, one, tmp_path: Path) -> None:
    run, _ = two
    out = tmp_path / "run"
    killed = torchrun(2, tmp_path / "probe", out, "--checkpoint-every", "0", kill="1:5:1")
    assert killed.returncode != 0
    again = single(tmp_path / "probe1", out, "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    m = metrics(out)
    assert list(m["epoch"]) == [1, 2, 3]
    pd.testing.assert_frame_equal(m.iloc[:1], metrics(run).iloc[:1])  # the epoch the two processes finished
    assert Architecture.load(out / "arch.json").to_str() in (one / "candidates.json").read_text() + (
        run / "candidates.json").read_text()  # fmt: skip


@pytest.mark.tour  # a long command-line journey (kill, restart, resume): CI runs it with the tour
def test_a_checkpoint_from_one_process_resumes_on_two(one, tmp_path: Path) -> None:
    out = tmp_path / "run"
    killed = single(tmp_path / "probe", out, "--checkpoint-every", "0", kill="1:5:0")
    assert killed.returncode != 0
    again = torchrun(2, tmp_path / "probe2", out, "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    m = metrics(out)
    assert list(m["epoch"]) == [1, 2, 3]
    pd.testing.assert_frame_equal(m.iloc[:1], metrics(one).iloc[:1])
    r0, r1 = states(tmp_path / "probe2", 0), states(tmp_path / "probe2", 1)
    assert all(
        torch.equal(x, y) for a, b in zip(r0, r1, strict=True) for x, y in zip(a["alphas"], b["alphas"], strict=True)
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_env(rank: int, port: int) -> dict[str, str]:
    return dict(ENV, WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port))  # fmt: skip


def test_a_rank_that_cannot_reach_the_rendezvous_says_so_in_one_line(tmp_path: Path) -> None:
    port = _free_port()  # nobody listens there
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "hwnas", *ARGS, "--out", str(out), "--dist-timeout", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_rank_env(1, port), timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"could not reach the rendezvous at 127.0.0.1:{port} within 2 s" in lines[0]
    assert not out.exists()


def test_a_batch_that_does_not_split_over_the_ranks_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "hwnas", *ARGS, "--out", str(out), "--batch-size", "33"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_rank_env(0, _free_port()), timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("hwnas: error: --batch-size 33 does not split evenly over 2 processes; give a "
                                   "multiple of 2 (e.g. 32 or 34)")  # fmt: skip
    assert not out.exists()


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, keeping the default suite under 15 minutes
def test_resuming_under_torchrun_with_another_budget_is_refused_once_and_writes_nothing(two, tmp_path: Path) -> None:
    run, _ = two
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    args = [*ARGS[: ARGS.index("--budget-mflops") + 1], "0.12", *ARGS[ARGS.index("--budget-mflops") + 2 :]]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "hwnas",
           *args, "--out", str(run), "--resume"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=300)
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("hwnas: error:")]
    assert len(ours) == 1 and "was made with other settings (budget: 0.15 vs 0.12" in ours[0], proc.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


@pytest.mark.tour  # a long command-line journey (kill, restart, resume): CI runs it with the tour
def test_train_under_torchrun_trains_one_child_as_one_process_does(two, tmp_path: Path) -> None:
    from hwnas.train.checkpoints import read_child

    run, _ = two
    args = ["train", "--arch", str(run / "arch.json"), "--data", "synthetic:n=480,size=24", "--epochs", "2",
            "--batch-size", "32", "--no-progress"]  # fmt: skip
    one = subprocess.run([sys.executable, "-m", "hwnas", *args, "--out", str(tmp_path / "one.safetensors")],
                         capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=600)  # fmt: skip
    assert one.returncode == 0, one.stderr
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "hwnas",
           *args, "--out", str(tmp_path / "two.safetensors")]  # fmt: skip
    two_ = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=600)
    assert two_.returncode == 0, two_.stderr[-3000:]
    assert two_.stdout.count("wrote ") == 1  # rank 0 reports, once
    h1, h2 = (
        read_child(tmp_path / "one.safetensors").meta["history"],
        read_child(tmp_path / "two.safetensors").meta["history"],
    )
    assert h2[0]["loss"] == pytest.approx(h1[0]["loss"], rel=EPOCH1_LOSS_RTOL) and h2[0]["loss"] != h1[0]["loss"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.safetensors", "two.safetensors"]
    # rank 1 dies once epoch 2 is trained; torchrun restarts the group, which goes on from epoch 1's
    # checkpoint without --resume and ends where the uninterrupted run ended
    killed = tmp_path / "killed" / "c.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--max-restarts",
           "1", "--monitor-interval", "0.1", str(PROBE), str(tmp_path / "probe"), str(killed.parent), "--", *args,
           "--out", str(killed)]  # fmt: skip
    restarted = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(ENV, PROBE_KILL_TRAIN="2:1"),
                               timeout=600)  # fmt: skip
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert (tmp_path / "probe" / "started-rank0-life1").exists(), "the group was not restarted"
    again, whole = read_child(killed), read_child(tmp_path / "two.safetensors")
    assert [h["loss"] for h in again.meta["history"]] == [h["loss"] for h in h2]
    assert all(torch.equal(again.weights[k], whole.weights[k]) for k in whole.weights)
    assert sorted(p.name for p in killed.parent.iterdir()) == ["c.safetensors"]  # the checkpoint is gone


@pytest.mark.parametrize("recipe", ["pad-crop", "resized-crop"])
def test_the_ranks_shares_of_a_batch_put_together_are_the_one_process_batch(recipe: str) -> None:
    """Each rank's share carries the global batch's augmentation draws at its own positions: the
    shares of 2 and 3 ranks, concatenated, equal one process's batches bit for bit."""
    from hwnas.train.batches import Batches
    from hwnas.train.data import Images
    from hwnas.train.distributed import Group

    gen = torch.Generator().manual_seed(5)
    images = Images(torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8, generator=gen),
                    torch.arange(40) % 4, ["a", "b", "c", "d"], "t")  # fmt: skip
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)

    def run(group: Group | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(Batches(images, 12, mean, std, torch.Generator().manual_seed(1), augment=True, drop_last=True,
                            recipe=recipe, group=group))  # fmt: skip

    whole = run(None)
    for world in (2, 3):
        shares = [run(Group(rank, world)) for rank in range(world)]
        for i, (x, y) in enumerate(whole):
            assert torch.equal(torch.cat([s[i][0] for s in shares]), x)
            assert torch.equal(torch.cat([s[i][1] for s in shares]), y)
        assert [len(s[0][1]) for s in shares] == [12 // world] * world


PROTOCOL = [str(ROOT / "benchmarks" / "search_protocol.py"), "--space", "tiny", "--data", "synthetic:n=480,size=24",
            "--limit", "480", "--search-epochs", "2", "--retrain-epochs", "3", "--random", "1", "--tau-archs", "2",
            "--search-seeds", "0", "--retrain-seeds", "0", "--cost", "flops", "--device", "",
            "--search-batch-size", "32", "--retrain-batch-size", "32"]  # fmt: skip
RETRAIN_ATOL = 0.1  # 3 epochs on 480 images, BatchNorm over each rank's 16 images: seen up to 0.073 apart


@pytest.mark.tour  # a long command-line journey (kill, restart, resume): CI runs it with the tour
def test_the_protocol_under_torchrun_runs_every_job_over_both_ranks_and_rank1_writes_nothing(tmp_path: Path) -> None:
    """benchmarks/search_protocol.py under torchrun: its search holds the same alphas and weights on
    both ranks and both derive the same network, every retraining runs once over the two ranks,
    the networks drawn without a search score as a one-process run scores them, and rank 1 writes
    nothing; ``--jobs`` (worker processes) is refused under torchrun."""
    one, two, probe = tmp_path / "one", tmp_path / "two", tmp_path / "probe"
    single_run = subprocess.run([sys.executable, *PROTOCOL, "--workdir", str(one)], capture_output=True, text=True,
                                cwd=ROOT, env=ENV, timeout=600)  # fmt: skip
    assert single_run.returncode == 0, single_run.stderr[-3000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(PROBE),
           str(probe), str(two), "--", *PROTOCOL, "--workdir", str(two)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = states(probe, 0), states(probe, 1)
    assert len(r0) == len(r1) == 2  # the search's two epochs
    for a, b in zip(r0, r1, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a["alphas"], b["alphas"], strict=True)), a["when"]
        assert all(torch.equal(x, y) for x, y in zip(a["weights"], b["weights"], strict=True)), a["when"]
    assert (probe / "select-rank0-life0.txt").read_text() == (probe / "select-rank1-life0.txt").read_text()
    assert (probe / "writes-rank1.txt").exists() and (probe / "writes-rank1.txt").read_text() == ""
    res1, res2 = (json.loads((d / "results.json").read_text()) for d in (one, two))
    searched = Architecture.load(two / "search-seed0" / "arch.json").to_str()
    assert f"{searched}|seed0" in res2["retrained"]
    assert proc.stdout.count("retrained ") == len(res2["retrained"])  # each once, reported by rank 0 alone
    drawn = [res2["drawn"]["mbv2"], *res2["drawn"]["random"], *res2["drawn"]["ranked"]]
    assert res2["drawn"] == res1["drawn"] and len(drawn) == 4
    pairs = [(res1["retrained"][f"{arch}|seed0"], res2["retrained"][f"{arch}|seed0"]) for arch in drawn]
    for a1, a2 in pairs:  # the same networks, the same seed and global batch
        assert a2["test"] == pytest.approx(a1["test"], abs=RETRAIN_ATOL)
    # BatchNorm over each rank's half batch moves some figure: the ranks trained together, not each alone
    assert any((a1["val"], a1["test"]) != (a2["val"], a2["test"]) for a1, a2 in pairs)
    assert set(res2["supernet_scores"]) == set(res1["supernet_scores"]) == set(res1["drawn"]["ranked"])
    assert (two / "table.md").exists()

    refused = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                              *PROTOCOL, "--jobs", "2", "--workdir", str(tmp_path / "jobs")],
                             capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=300)  # fmt: skip
    assert refused.returncode != 0 and "drop --jobs" in refused.stderr
    assert refused.stderr.count("drop --jobs") == 1 and not (tmp_path / "jobs").exists()
