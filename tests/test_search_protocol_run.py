"""benchmarks/search_protocol.py end to end at a tiny size, on a search space given as a file, and
benchmarks/inband_ranking.py on the run it leaves."""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hwnas.search.cost import make_cost
from hwnas.spaces.arch import Architecture
from hwnas.spaces.presets import TINY
from hwnas.spaces.space import get_space

from conftest import benchmark_module

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    # a name no registry knows: the searches and the retraining workers must load the file itself;
    # the supernets keep SE ops apart (masked-se), so scoring and in-band ranking load that kind too
    tmp = tmp_path_factory.mktemp("protocol")
    spec = tmp / "tiny-file.yaml"
    spec.write_text(yaml.safe_dump({**TINY, "name": "tiny-from-a-file", "resolutions": [16]}))
    work = tmp / "run"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "search_protocol.py"), "--space", str(spec),
         "--data", "synthetic:n=300,size=24", "--limit", "300", "--search-epochs", "1", "--retrain-epochs", "1",
         "--random", "2", "--tau-archs", "4", "--search-seeds", "0", "1", "--retrain-seeds", "0", "1",
         "--jobs", "2", "--cost", "flops", "--device", "", "--paths", "masked-se", "--workdir", str(work)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return spec, work


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, keeping the default suite under 15 minutes
def test_a_space_file_reaches_the_searches_and_the_retrainings(tiny_run: tuple[Path, Path]) -> None:
    spec, work = tiny_run
    config = json.loads((work / "search-seed0" / "config.json").read_text())
    assert config["space"] == str(spec) and config["paths"] == "masked-se"  # --paths reaches the searches
    space = get_space(spec)
    searched = Architecture.load(work / "search-seed0" / "arch.json")
    assert space.contains(searched) and searched.resolution == 16  # the file's single resolution, not TINY's two
    results = json.loads((work / "results.json").read_text())
    assert f"{searched.to_str()}|seed0" in results["retrained"]


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, keeping the default suite under 15 minutes
def test_another_random_seed_redraws_only_the_random_arm_on_resume(tiny_run: tuple[Path, Path],
                                                                   tmp_path: Path) -> None:  # fmt: skip
    """A replication (``--random-seed``) in a copy of a finished run: the random networks are drawn
    again, inside the band, and retrained; the budget, the MobileNetV2-style and ranking networks,
    the searches and every earlier retraining stay as they were."""
    import shutil

    from hwnas.search.cost import make_cost

    spec, work = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(work, copy)
    before = json.loads((copy / "results.json").read_text())
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "search_protocol.py"), "--space", str(spec),
         "--data", "synthetic:n=300,size=24", "--limit", "300", "--search-epochs", "1", "--retrain-epochs", "1",
         "--random", "2", "--tau-archs", "4", "--search-seeds", "0", "1", "--retrain-seeds", "0", "1",
         "--jobs", "1", "--cost", "flops", "--device", "", "--paths", "masked-se", "--random-seed", "7",
         "--workdir", str(copy)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    after = json.loads((copy / "results.json").read_text())
    assert after["drawn"]["mbv2"] == before["drawn"]["mbv2"] and after["drawn"]["ranked"] == before["drawn"]["ranked"]
    assert after["drawn"]["random"] != before["drawn"]["random"]
    # the tiny band is small: a new draw may repeat a network already retrained (as a random or a
    # ranking network, seed 0); only the others are retrained
    new = {f"{a}|seed0" for a in after["drawn"]["random"]} - set(before["retrained"])
    assert new and f"0 searches and {len(new)} retrainings to run" in done.stdout, done.stdout[-2000:]
    assert set(after["retrained"]) == set(before["retrained"]) | new
    space = get_space(spec)
    cost = make_cost("flops", space, None)
    lo, hi = cost.smallest(space)[1], cost.largest(space)[1]
    budget = round(lo + 0.5 * (hi - lo), 6)
    for a in after["drawn"]["random"]:
        assert 0.9 * budget <= cost.of(Architecture.from_str(a, space.num_classes, space.in_channels)) <= budget
    for key, row in before["retrained"].items():
        assert after["retrained"][key] == row


def _tau_by_pairs(x: list[float], y: list[float]) -> float:
    """Kendall tau-b counted pair by pair (independent of scipy)."""
    conc = disc = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = x[i] - x[j], y[i] - y[j]
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            tx += 1
        elif dy == 0:
            ty += 1
        elif dx * dy > 0:
            conc += 1
        else:
            disc += 1
    return (conc - disc) / ((conc + disc + tx) * (conc + disc + ty)) ** 0.5


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, keeping the default suite under 15 minutes
def test_inband_ranking_takes_every_in_band_network_once_with_its_mean_accuracy(tiny_run, tmp_path,
                                                                                 monkeypatch) -> None:  # fmt: skip
    _, work = tiny_run
    results = json.loads((work / "results.json").read_text())
    space = get_space(json.loads((work / "search-seed0" / "config.json").read_text())["space"])
    # a probe file as the removed retrain_probe.py wrote it: one network retrained once more, one new network
    random0 = results["drawn"]["random"][0]
    new = next(a for a in results["drawn"]["ranked"] if a not in results["drawn"]["random"])
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps({random0: {"label": "as given", "test": 0.9}, new: {"label": "as given", "test": 0.1}}))
    out = tmp_path / "inband.json"
    with benchmark_module("inband_ranking") as module:
        monkeypatch.setattr("sys.argv", ["inband_ranking.py", "--protocol", str(work), "--probe", str(probe),
                                         "--out", str(out)])  # fmt: skip
        module.main()
    got = json.loads(out.read_text())
    rows = {r["arch"]: r for r in got["networks"]}
    expected = {Architecture.load(work / f"search-seed{s}" / "arch.json").to_str() for s in (0, 1)}
    expected |= {a for a in (results["drawn"].get("mbv2"), *results["drawn"]["random"], new) if a}
    expected |= {c["arch"] for c in json.loads((work / "search-seed0" / "candidates.json").read_text())
                 if c["how"].startswith("null")}  # fmt: skip
    assert set(rows) == expected and len(got["networks"]) == len(expected)
    for a, r in rows.items():
        retrained = [v["test"] for k, v in results["retrained"].items() if k.rsplit("|", 1)[0] == a]
        extra = {random0: [0.9], new: [0.1]}.get(a, [])
        assert r["standalone"] == pytest.approx(statistics.fmean(retrained + extra))
        arch = Architecture.from_str(a, space.num_classes, space.in_channels)
        assert r["se_blocks"] == sum(b.op.split("_")[2:3] in (["se"], ["sehsig"]) for b in arch.blocks)
    alone = [r["standalone"] for r in got["networks"]]
    se = [float(r["se_blocks"]) for r in got["networks"]]
    assert got["summary"]["tau_se_standalone"] == pytest.approx(_tau_by_pairs(se, alone))
    for seed in (0, 1):
        via = [r[f"search-seed{seed}"] for r in got["networks"]]
        assert all(0.0 <= v <= 1.0 for v in via)
        assert got["summary"][f"search-seed{seed}"]["tau"] == pytest.approx(_tau_by_pairs(via, alone))
        assert got["summary"][f"search-seed{seed}"]["tau_se_supernet"] == pytest.approx(_tau_by_pairs(se, via))


def test_inband_tau_is_none_not_nan_where_one_side_is_constant() -> None:
    """A space without SE choices gives every network 0 SE blocks: no tau exists, and the output
    must stay strict JSON."""
    with benchmark_module("inband_ranking") as module:
        assert module.kendall_tau([0.0, 0.0, 0.0], [0.4, 0.5, 0.6]) is None
        got = module.kendall_tau([1.0, 2.0, 3.0, 4.0], [0.4, 0.6, 0.5, 0.7])
    assert got == pytest.approx(_tau_by_pairs([1.0, 2.0, 3.0, 4.0], [0.4, 0.6, 0.5, 0.7]))


def test_search_folders_come_in_seed_order_not_name_order(tmp_path: Path) -> None:
    for seed in (10, 2, 0):
        (tmp_path / f"search-seed{seed}").mkdir()
    (tmp_path / "results.json").write_text("{}")
    with benchmark_module("protocol.arms") as module:
        assert [p.name for p in module.search_folders(tmp_path)] == ["search-seed0", "search-seed2", "search-seed10"]


@pytest.mark.tour
def test_the_gpu_protocol_script_runs_its_arms_then_the_ranking_in_a_second_call(tmp_path: Path) -> None:
    """benchmarks/gpu_search_protocol.sh at its tiny CPU size (TINY=1), as on a lent GPU: the first
    call runs the issue's arms only; TAU=1 resumes the same folder and retrains only the ranking
    networks."""
    env = {**os.environ, "TINY": "1", "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work")}
    script = str(ROOT / "benchmarks" / "gpu_search_protocol.sh")
    first = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=900)
    assert "protocol exit 0" in first.stdout, first.stdout[-2000:] + first.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["drawn"]["ranked"] == [] and len(results["drawn"]["random"]) == 3
    searched = [Architecture.load(tmp_path / "work" / f"search-seed{s}" / "arch.json").to_str() for s in (0, 1, 2)]
    keys = set(results["retrained"])
    assert {f"{a}|seed{s}" for s, a in enumerate(searched)} <= keys
    assert {f"{a}|seed0" for a in results["drawn"]["random"]} <= keys
    first_rows = dict(results["retrained"])

    second = subprocess.run(["bash", script], env={**env, "TAU": "1"}, capture_output=True, text=True, timeout=900)
    assert "protocol exit 0" in second.stdout, second.stdout[-2000:] + second.stderr[-2000:]
    again = json.loads((tmp_path / "out" / "results.json").read_text())
    assert again["drawn"]["random"] == results["drawn"]["random"] and again["drawn"]["mbv2"] == results["drawn"]["mbv2"]
    ranked = again["drawn"]["ranked"]
    assert len(ranked) == 4 and set(again["supernet_scores"]) >= set(ranked)
    assert {f"{a}|seed0" for a in ranked} <= set(again["retrained"])
    for key, row in first_rows.items():  # nothing of the first call was trained again
        assert again["retrained"][key] == row


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, keeping the default suite under 15 minutes
def test_the_finalists_arms_and_the_in_band_rankers(tmp_path: Path) -> None:
    """Issue 37's arms at a tiny size: the searched arm is each search's halving winner, the
    supernet's pick is its best candidate by supernet accuracy, random search at equal compute runs
    the same halving over its own in-band draw, and every ranker's in-band tau is what scipy gives
    on the run's own numbers."""
    from scipy import stats

    work = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "search_protocol.py"), "--space", "tiny", "--data",
         "synthetic:n=300,size=24", "--limit", "300", "--search-epochs", "1", "--retrain-epochs", "1",
         "--random", "2", "--tau-archs", "0", "--search-seeds", "0", "1", "--retrain-seeds", "0", "1",
         "--budget-quantile", "0.4", "--finalists", "3", "--finalist-epochs", "1", "--inband-archs", "4",
         "--jobs", "2", "--cost", "flops", "--device", "", "--workdir", str(work)],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads((work / "results.json").read_text())
    space = get_space("tiny")
    lo, hi = results["summary"]["band"]
    for i, seed in enumerate((0, 1)):
        folder = work / f"search-seed{seed}"
        fin = json.loads((folder / "finalists.json").read_text())
        assert Architecture.load(folder / "arch.json").to_str() == fin["finalists"][fin["winner"]]["arch"]
        rows = [c for c in json.loads((folder / "candidates.json").read_text()) if not c["how"].startswith("null")]
        pick = max(rows, key=lambda c: (c["val_acc_supernet"], c["score"]))["arch"]
        assert f"{pick}|seed{i}" in results["retrained"]
        state = results["random_halving"][str(i)]
        draw = results["drawn"]["halving"][i]
        assert len(draw) == 3 and state["winner_arch"] == draw[state["winner"]]
        assert state["training_epochs"] == fin["training_epochs"] == 3 * 1 + 2 * 2  # equal compute, in epochs
        assert f"{state['winner_arch']}|seed{i}" in results["retrained"]
        for a in draw:
            arch = Architecture.from_str(a, space.num_classes, space.in_channels)
            assert lo <= make_cost("flops", space).of(arch) <= hi * (1 + 1e-9)
    inband = results["drawn"]["inband"]
    standalone = [results["retrained"][f"{a}|seed0"]["test"] for a in inband]
    taus = results["summary"]["inband_tau"]
    assert sorted(results["short_scores"][inband[0]]) == ["1", "2"]  # the epochs of 3 finalists' stages: 1, then 2
    for e in (1, 2):
        short = [results["short_scores"][a][str(e)] for a in inband]
        varies = len(set(short)) > 1 and len(set(standalone)) > 1
        want = float(stats.kendalltau(short, standalone).statistic) if varies else None
        got = taus[f"short training, {e} epoch(s)"]
        assert (got is None and want is None) or got == pytest.approx(want)
    supernet = [results["supernet_scores"][a] for a in inband]
    assert len(supernet) == 4
    table = (work / "table.md").read_text()
    assert "random search at equal compute" in table and "supernet's pick" in table
    assert "In-band Kendall tau against standalone test accuracy, 4 random networks in the band" in table
