"""benchmarks/reselect.py: selecting again from a finished search's checkpoint."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from hwnas.search.loop import Search, SearchConfig

from conftest import benchmark_module


@pytest.fixture(scope="module")
def reselect():  # type: ignore[no-untyped-def]
    with benchmark_module("reselect") as module:
        yield module


def test_selecting_again_reproduces_the_search_and_a_new_rule_changes_only_the_selection(tmp_path, reselect) -> None:
    folder = tmp_path / "search-seed0"
    cfg = SearchConfig(space="tiny", budget=0.1, cost="flops", data="synthetic:n=320,size=24", epochs=2,
                       warmup_epochs=1, batch_size=32, evolution=4)  # fmt: skip
    result = Search(cfg, folder, progress=False).run()
    written = {p.name: p.read_bytes() for p in folder.iterdir()}
    same = reselect.reselect(folder, {})
    assert same["arch"] == result.derivation.arch.to_str()
    assert same["candidates"] == json.loads((folder / "candidates.json").read_text())
    # the resolution the searched distribution prefers, from the checkpoint's logits
    probs = torch.tensor([float(r) for r in _resolution_probs(folder)])
    preferred = (16, 24)[int(probs.argmax())]
    other = reselect.reselect(folder, {"selection_resolution": "distribution"})
    picked = {int(c["arch"].split()[0][1:]) for c in other["candidates"] if not c["how"].startswith("null")}
    assert picked == {preferred}
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == written  # the run folder is left as it was


def _resolution_probs(folder: Path) -> list[float]:
    import pandas as pd

    p = pd.read_csv(folder / "probs.csv")
    last = p[(p.factor == "resolution") & (p.epoch == p.epoch.max())]
    return last.sort_values("choice").prob.tolist()


def test_a_setting_that_acts_during_training_is_refused(tmp_path, reselect, monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.argv", ["reselect.py", "--protocol", str(tmp_path), "--set", "sandwich=true",
                                     "--out", str(tmp_path / "o.json")])  # fmt: skip
    with pytest.raises(
        SystemExit, match=re.escape("--set sandwich: not a selection setting (it acts during training)")
    ):
        reselect.main()
