"""``selection_resolution``: whether the supernet or the searched distribution decides the resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hwnas.core.errors import HwnasError
from hwnas.search.derive import GROW_TO
from hwnas.search.loop import Search, SearchConfig

DATA = "synthetic:n=320,size=24"


def _search(tmp_path: Path, rule: str, res_logits: list[float], budget: float = 0.1) -> Search:
    """A search over ``tiny`` (MFLOPs: 0.023-0.108 at 16 px, 0.050-0.238 at 24 px) with random logits
    but the resolution's, as if trained; ``budget`` 0.1 has networks of both resolutions in its band."""
    cfg = SearchConfig(space="tiny", budget=budget, cost="flops", data=DATA, epochs=1, warmup_epochs=0, batch_size=32,
                       evolution=6, selection_resolution=rule)  # fmt: skip
    search = Search(cfg, tmp_path / rule, progress=False)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for a in search.net.arch_parameters():
            a.copy_(torch.randn(a.shape, generator=g))
        search.net.res_factor.alpha.copy_(torch.tensor(res_logits))
    return search


def _resolutions(search: Search) -> tuple[set[int], set[int]]:
    """(resolutions of the candidates, of the null derivation) after a selection at the config's budget."""
    search._select(search.cfg.budget)
    rows = search.candidates
    res = {int(r["arch"].split()[0][1:]) for r in rows if not r["how"].startswith("null")}
    null = {int(r["arch"].split()[0][1:]) for r in rows if r["how"].startswith("null")}
    return res, null


def test_the_distribution_rule_draws_every_candidate_at_the_preferred_resolution(tmp_path) -> None:
    # tiny: resolutions 16 and 24; the distribution prefers 16 here, against the costlier 24
    search = _search(tmp_path, "distribution", [1.0, -1.0])
    res, _ = _resolutions(search)
    assert res == {16}
    lo, hi = GROW_TO * search.cfg.budget, search.cfg.budget
    assert all(lo <= r["cost"] <= hi * (1 + 1e-9) for r in search.candidates if not r["how"].startswith("null"))
    # the supernet rule on the same logits and weights keeps a candidate at every resolution
    res, _ = _resolutions(_search(tmp_path, "supernet", [1.0, -1.0]))
    assert res == {16, 24}


def test_at_a_tie_or_without_a_network_in_budget_the_whole_space_is_searched(tmp_path) -> None:
    res, _ = _resolutions(_search(tmp_path / "tie", "distribution", [0.5, 0.5]))
    assert res == {16, 24}
    # a budget below every 24-px network (0.050 MFLOPs): the preferred 24 px has nothing, 16 px is searched
    res, _ = _resolutions(_search(tmp_path / "low", "distribution", [-1.0, 1.0], budget=0.045))
    assert res == {16}


def test_an_unknown_rule_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(HwnasError, match="unknown selection resolution 'median'; choose supernet, distribution"):
        SearchConfig(space="tiny", budget=1.0, cost="flops", selection_resolution="median").check()
