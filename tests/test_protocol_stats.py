"""The search protocol's p-values (benchmarks/search_protocol.py) against scipy's own tests."""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

_SPEC = importlib.util.spec_from_file_location(
    "search_protocol", Path(__file__).resolve().parent.parent / "benchmarks" / "search_protocol.py"
)
assert _SPEC is not None and _SPEC.loader is not None
protocol = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(protocol)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([0.7732, 0.7835, 0.7816], [0.7675, 0.7532, 0.755, 0.7738, 0.7756, 0.7913, 0.7805, 0.7636]),
        ([0.4942, 0.5193, 0.4726], [0.4905, 0.4898, 0.4645, 0.4704, 0.4508]),
        ([1.0, 2.0, 3.0], [10.0, 11.0, 12.0, 13.0]),
    ],
)
def test_welch_and_exact_permutation_p_values_match_scipy(a: list[float], b: list[float]) -> None:
    welch, perm = protocol.welch_and_permutation(a, b)
    assert welch == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)

    def abs_diff(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
        return np.abs(np.mean(x, axis=axis) - np.mean(y, axis=axis))

    # two-sided as the protocol defines it: the share of all splits whose |difference of means| is at
    # least the observed one (scipy's own "two-sided" doubles the smaller one-sided p instead, which
    # differs when the groups' sizes differ)
    exact = stats.permutation_test((a, b), abs_diff, permutation_type="independent", alternative="greater",
                                   n_resamples=np.inf, vectorized=True)  # fmt: skip
    assert perm == pytest.approx(exact.pvalue, rel=1e-9)
    assert 0 < perm <= 1 and statistics.fmean(a) != statistics.fmean(b)
