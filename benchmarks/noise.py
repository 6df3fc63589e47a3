"""Noise floors the benchmarks report beside their figures."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def relative_iqr(values: Sequence[float]) -> float:
    """The interquartile range of ``values`` over their median: how far repeated timings of one
    thing spread, as a fraction of the figure reported for it."""
    q1, median, q3 = statistics.quantiles(values, n=4)
    return (q3 - q1) / median
