"""The protocol's statistics: Welch and exact permutation p-values, the ranking's rows with the
leave-one-out range of Kendall tau, and the noise ceiling of tau."""

from __future__ import annotations

import itertools
import math
import statistics

from hwnas.spaces.arch import Architecture


def welch_and_permutation(a: list[float], b: list[float]) -> tuple[float, float]:
    """(Welch's two-sided p, exact two-sided permutation p of the difference of means)."""
    from scipy import stats

    welch = float(stats.ttest_ind(a, b, equal_var=False).pvalue) if len(a) > 1 and len(b) > 1 else math.nan
    pooled, k = a + b, len(a)
    observed = abs(statistics.fmean(a) - statistics.fmean(b))
    total = hits = 0
    for idx in itertools.combinations(range(len(pooled)), k):
        x = [pooled[i] for i in idx]
        y = [pooled[i] for i in range(len(pooled)) if i not in idx]
        total += 1
        hits += abs(statistics.fmean(x) - statistics.fmean(y)) >= observed - 1e-12
    return welch, hits / total


def ranking_rows(ranked: list[Architecture], pairs: list[tuple[float, float, float]]) -> tuple[list[str], float, float]:
    """The ranking per network, largest rank disagreement first (markdown rows), and the range of
    Kendall tau with each network left out in turn: how much one network decides the figure."""
    from scipy import stats

    n = len(pairs)

    def ranks(values: list[float]) -> list[float]:
        return [float(r) for r in stats.rankdata(values)]  # 1 = lowest; ties share the mean rank

    r_super, r_alone = ranks([p[0] for p in pairs]), ranks([p[1] for p in pairs])
    rows = []
    for i in sorted(range(n), key=lambda i: (-abs(r_super[i] - r_alone[i]), pairs[i][2])):
        a = ranked[i]
        skips = sum(b.op.startswith("skip") for b in a.blocks)
        rows.append(f"| {pairs[i][2]:.4g} | {a.resolution} | {skips} | {pairs[i][0]:.2%} | {pairs[i][1]:.2%} | "
                    f"{r_super[i]:g} | {r_alone[i]:g} |")  # fmt: skip
    if n < 4:
        return rows, math.nan, math.nan
    loo = [float(stats.kendalltau([p[0] for j, p in enumerate(pairs) if j != i],
                                  [p[1] for j, p in enumerate(pairs) if j != i]).statistic) for i in range(n)]  # fmt: skip
    return rows, min(loo), max(loo)


def tau_ceiling(standalone: list[float], sd: float, draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """The Kendall tau a perfect ranker would reach against standalone accuracies measured once,
    when each retraining moves a network's accuracy by noise of ``sd`` (the retrain-seed spread of
    one network): tau between ``standalone`` taken as the truth and one noisy re-measurement of it,
    10th, 50th and 90th percentile over ``draws`` simulations. ``standalone`` itself holds that
    noise, which widens its spread, so this ceiling errs high."""
    import numpy as np
    from scipy import stats

    truth = np.asarray(standalone, dtype=float)
    rng = np.random.default_rng(seed)
    taus = [float(stats.kendalltau(truth, truth + rng.normal(0.0, sd, truth.size)).statistic) for _ in range(draws)]
    lo, mid, hi = np.percentile(taus, [10, 50, 90])
    return float(lo), float(mid), float(hi)


def kendall_tau(a: list[float], b: list[float]) -> float | None:
    """Kendall tau-b of ``a`` against ``b``; None where it is undefined (one side constant, e.g. the
    SE counts of a space without SE choices), so the output stays strict JSON (no NaN)."""
    from scipy import stats

    tau = float(stats.kendalltau(a, b).statistic)
    return None if math.isnan(tau) else tau
