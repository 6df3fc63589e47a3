"""Successive halving over the search's finalists (hwnas.search.finalists, ``hwnas search --finalists``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from hwnas.core.errors import HwnasError
from hwnas.search.config import SearchConfig
from hwnas.search.finalists import run_halving, schedule, survivors
from hwnas.search.loop import Search
from hwnas.search.select import top_in_band, uniform_scores
from hwnas.spaces.arch import Architecture
from hwnas.train.data import DataSplits
from hwnas.train.training import train_child
from tests.conftest import ROOT, run_cli

TINY_DATA = "synthetic:n=480,size=24,seed=1"
SETTINGS = {"finalists": 5, "finalist_epochs": 1, "finalist_init": "scratch", "seed": 0}


def test_the_schedule_halves_the_networks_and_doubles_the_epochs() -> None:
    # worked by hand: ceil-halving until two are left, whose better one wins
    assert schedule(8, 1) == [(8, 1), (4, 2), (2, 4)]
    assert schedule(5, 2) == [(5, 2), (3, 4), (2, 8)]
    assert schedule(3, 1) == [(3, 1), (2, 2)]
    assert schedule(2, 3) == [(2, 3)]
    assert schedule(1, 2) == [(1, 2)]
    assert sum(n * e for n, e in schedule(8, 1)) == 8 + 8 + 8 and sum(n * e for n, e in schedule(5, 2)) == 10 + 12 + 16


def test_survivors_are_the_better_half_and_ties_go_to_the_supernet() -> None:
    assert survivors({0: 0.5, 1: 0.7, 2: 0.6}, [0.0, 0.0, 0.0]) == [1, 2]
    assert survivors({0: 0.5, 1: 0.5, 2: 0.4, 3: 0.1}, [0.1, 0.9, 0.0, 0.0]) == [1, 0]  # tie: supernet 0.9 first
    assert survivors({0: 0.5, 1: 0.5}, [0.3, 0.3]) == [0]  # full tie: the earlier candidate
    assert survivors({4: 0.2}, [0.0] * 5) == [4]


def _rows(n: int) -> list[dict[str, object]]:
    return [{"arch": f"net-{i}", "val_acc_supernet": 0.5} for i in range(n)]


def _trainer(calls: list[tuple[int, int]], stop_after: int | None = None):
    """Scores that depend on the network and on the epochs: network 3 learns slowly (last after one
    epoch) but is best after four, so a one-stage rule would pick another than the halving."""
    final = {0: 0.60, 1: 0.70, 2: 0.65, 3: 0.90, 4: 0.50}
    early = {0: 0.50, 1: 0.60, 2: 0.55, 3: 0.52, 4: 0.40}

    def train(i: int, epochs: int, checkpoint: Path) -> tuple[float, float]:
        if stop_after is not None and len(calls) == stop_after:
            raise KeyboardInterrupt
        calls.append((i, epochs))
        score = early[i] if epochs == 1 else final[i] - 0.1 / epochs
        return score, 0.01 * epochs

    return train


def test_halving_trains_the_schedule_and_keeps_the_best_of_the_last_stage(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    state = run_halving(tmp_path, _rows(5), SETTINGS, _trainer(calls))
    # stage 1: all five for 1 epoch -> 1, 2, 3 survive (0.60, 0.55, 0.52 beat 0.50 and 0.40)
    # stage 2: those three for 2 epochs -> 3 (0.85) and 1 (0.65); stage 3: those two (best first) for 4 epochs -> 3
    assert calls == [(0, 1), (1, 1), (2, 1), (3, 1), (4, 1), (1, 2), (2, 2), (3, 2), (3, 4), (1, 4)]
    assert state["winner"] == 3
    assert [s["kept"] for s in state["stages"]] == [[1, 2, 3], [3, 1], [3]]
    assert state["training_epochs"] == 5 * 1 + 3 * 2 + 2 * 4 == sum(e for _, e in calls)
    saved = json.loads((tmp_path / "finalists.json").read_text())
    assert saved["winner"] == 3 and [r["score"] for r in saved["finalists"][3]["stages"]] == [0.52, 0.85, 0.875]


def test_interrupted_halving_goes_on_without_training_again(tmp_path: Path) -> None:
    whole: list[tuple[int, int]] = []
    expected = run_halving(tmp_path / "whole", _rows(5), SETTINGS, _trainer(whole))
    first: list[tuple[int, int]] = []
    with pytest.raises(KeyboardInterrupt):
        run_halving(tmp_path / "cut", _rows(5), SETTINGS, _trainer(first, stop_after=6))
    assert json.loads((tmp_path / "cut" / "finalists.json").read_text())["winner"] is None
    rest: list[tuple[int, int]] = []
    again = run_halving(tmp_path / "cut", _rows(5), SETTINGS, _trainer(rest))
    assert first + rest == whole  # nothing trained twice, nothing skipped
    assert again["winner"] == expected["winner"] and again["stages"] == expected["stages"]
    assert again["finalists"] == expected["finalists"]


def test_a_finalists_file_of_another_run_is_refused(tmp_path: Path) -> None:
    run_halving(tmp_path, _rows(3), SETTINGS, _trainer([]))
    with pytest.raises(HwnasError, match="other settings; resume with the same settings, or delete it"):
        run_halving(tmp_path, _rows(3), {**SETTINGS, "finalist_epochs": 2}, _trainer([]))
    with pytest.raises(HwnasError, match="other finalists"):
        run_halving(tmp_path, [{**r, "arch": f"other-{i}"} for i, r in enumerate(_rows(3))], SETTINGS, _trainer([]))
    (tmp_path / "finalists.json").write_text("{not json")
    with pytest.raises(HwnasError, match="corrupt content"):
        run_halving(tmp_path, _rows(3), SETTINGS, _trainer([]))


def _config(**kw: object) -> SearchConfig:
    base = {"space": "tiny", "budget": 0.12, "cost": "flops", "data": TINY_DATA, "epochs": 2, "warmup_epochs": 1,
            "batch_size": 32, "sampled_child": False, "evolution": 4}  # fmt: skip
    base.update(kw)
    return SearchConfig(**base)  # type: ignore[arg-type]


def test_the_finalists_decide_and_their_scores_are_a_standalone_training(tmp_path: Path) -> None:
    plain = Search(_config(), tmp_path / "plain", progress=False)
    p = plain.run()
    search = Search(_config(finalists=3, finalist_epochs=1), tmp_path / "fin", progress=False)
    r = search.run()
    # the finalists act only at selection: the supernet's training is the same
    a, b = pd.read_csv(tmp_path / "plain" / "metrics.csv"), pd.read_csv(tmp_path / "fin" / "metrics.csv")
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))
    assert not (tmp_path / "plain" / "finalists.json").exists() and all("finalist" not in c for c in p.candidates)
    # and only the judge differs: the same candidates, scored the same by the supernet
    keys = ("how", "arch", "cost", "score", "val_acc_supernet")
    assert [[c[k] for k in keys] for c in p.candidates] == [[c[k] for k in keys] for c in r.candidates]
    state = json.loads((tmp_path / "fin" / "finalists.json").read_text())
    finalists = [c for c in r.candidates if "finalist" in c]
    assert sorted(c["finalist"] for c in finalists) == [1, 2, 3]
    # the three the supernet scores best (the null derivation is never a candidate)
    scored = sorted((c for c in r.candidates if not c["how"].startswith("null")),
                    key=lambda c: -c["val_acc_supernet"])  # fmt: skip
    assert {c["arch"] for c in finalists} == {c["arch"] for c in scored[:3]}
    winner = state["finalists"][state["winner"]]
    assert r.derivation.arch.to_str() == winner["arch"] == (tmp_path / "fin" / "arch.txt").read_text().strip()
    assert next(c for c in r.candidates if c["selected"])["arch"] == winner["arch"]
    assert [len(f["stages"]) for f in state["finalists"]].count(2) == 2  # 3 -> 2 survivors, trained 2 epochs
    # the winner's last score is what a standalone training of it on the weights split scores on the
    # images the weights never saw
    splits = search.splits
    judged = DataSplits(splits.weights, splits.weights.subset(torch.arange(0)), splits.unseen_by_weights(), None,
                        splits.mean, splits.std, recipe=splits.recipe)  # fmt: skip
    arch = Architecture.from_str(
        winner["arch"], num_classes=search.space.num_classes, in_channels=search.space.in_channels
    )
    again = train_child(arch, judged, epochs=2, batch_size=32, seed=0, progress=False)
    assert again.val_acc == pytest.approx(winner["stages"][-1]["score"], abs=1e-9)
    cost = json.loads((tmp_path / "fin" / "search.json").read_text())["finalists"]
    assert cost["training_epochs"] == 3 * 1 + 2 * 2 and cost["in_retrainings"] > 0


def _search_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hwnas", "search", "--space", "tiny", "--budget-mflops", "0.12", "--data",
            "synthetic:n=960,size=24", "--epochs", "2", "--warmup-epochs", "1", "--batch-size", "32",
            "--evolution", "4", "--out", str(out), "--no-progress", "--seed", "3", *extra]  # fmt: skip


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, after the default suite
def test_kill_during_the_finalists_then_resume_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    flags = ("--finalists", "4", "--finalist-epochs", "2")
    full = subprocess.run(_search_cmd(tmp_path / "full", *flags), capture_output=True, text=True, env=env, cwd=ROOT)
    assert full.returncode == 0, full.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(_search_cmd(out, *flags), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            cwd=ROOT)  # fmt: skip
    state = out / "finalists.json"
    # killed inside a finalist's training, after one finalist has finished its first stage
    while not (state.exists() and list((out / "finalists").glob("*.ckpt"))):
        assert proc.poll() is None, "the search ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads(state.read_text())
    assert done["winner"] is None and 1 <= sum(len(f["stages"]) for f in done["finalists"]) < 4 + 2
    again = subprocess.run([*_search_cmd(out, *flags), "--resume"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    assert (out / "arch.txt").read_text() == (tmp_path / "full" / "arch.txt").read_text()
    a, b = json.loads(state.read_text()), json.loads((tmp_path / "full" / "finalists.json").read_text())
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in f["stages"]] for f in a["finalists"]]
    assert strip == [[{k: v for k, v in r.items() if k != "seconds"} for r in f["stages"]] for f in b["finalists"]]
    assert a["winner"] == b["winner"] and a["stages"] == b["stages"]
    assert "successive halving (finalists.json)" in again.stdout and "one retraining" in again.stdout


def test_bad_finalist_settings_get_one_line(tmp_path: Path) -> None:
    def err(*args: str) -> str:
        proc = run_cli("search", "--space", "tiny", "--budget-mflops", "0.12", "--data", TINY_DATA, "--out",
                       str(tmp_path / "r"), "--no-progress", *args)  # fmt: skip
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        return proc.stderr

    assert "--finalists -1: give a whole number >= 0" in err("--finalists", "-1")
    too_many = err("--finalists", "100000")
    assert "distinct networks; give --finalists" in too_many and "or fewer" in too_many
    assert not (tmp_path / "r" / "finalists.json").exists()
    # the same checks, in process (each message is the one line the command line prints)
    with pytest.raises(HwnasError, match="--finalist-epochs 0: give a whole number >= 1"):
        _config(finalists=2, finalist_epochs=0).check()
    with pytest.raises(HwnasError, match="--finalist-init 'warm': choose scratch or supernet"):
        _config(finalists=2, finalist_init="warm").check()
    with pytest.raises(HwnasError, match="works with one budget"):
        Search(_config(finalists=2, budgets=[0.1, 0.12]), tmp_path / "b", progress=False)
    band = Search(_config(finalists=1), tmp_path / "c", progress=False)  # how many the band holds, found apart
    n = len(top_in_band(band.space, band.cost, uniform_scores(band.space), 0.9 * 0.12, 0.12, 10_000))
    with pytest.raises(HwnasError, match=f"holds only {n} distinct networks; give --finalists {n} or fewer"):
        Search(_config(finalists=n + 1), tmp_path / "d", progress=False)
    Search(_config(finalists=n), tmp_path / "e", progress=False)  # exactly as many is allowed
