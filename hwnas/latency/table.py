"""Reading a LUT: per-kernel latency as a DataFrame and a lookup.

A kernel's latency is the median over its rounds of each round's latency; a round's latency is its
fastest run (``min_ms``, :attr:`hwnas.devices.Stats.round_ms`). A LUT written before hwnas stored the
minimum has none for some rows; then every kernel uses its round medians instead, so one table never
mixes the two statistics (:attr:`LatencyTable.statistic` says which).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from hwnas.core.errors import HwnasError
from hwnas.latency.store import ROW_COLUMNS, LutError, LutStore, fingerprint_mismatch, sqlite_reason
from hwnas.spaces.kernels import Kernel


class MissingKernelsError(HwnasError):
    """Keys asked of a LUT that it does not hold; ``missing`` lists them all."""

    def __init__(self, path: Path, missing: list[str]) -> None:
        self.missing = missing
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        super().__init__(f"{path} lacks {len(missing)} kernel(s): {shown}; profile them into it with 'hwnas profile'")


def _check_row(path: Path, row: tuple[Any, ...], cols: list[str]) -> None:
    """A stored measurement must be a kernel key, a round and finite non-negative numbers."""
    key, round_ = row[0], row[1]
    where = f"{path}: damaged LUT (measurement {str(key)[:60]!r}"
    if not isinstance(key, str):
        raise LutError(f"{where}: the key is not text)")
    try:
        Kernel.from_key(key)
    except ValueError:
        raise LutError(f"{where}: not a kernel key)") from None
    if not isinstance(round_, int) or round_ < 0:
        raise LutError(f"{where}: round {str(round_)[:20]!r})")
    for name, value in zip(cols[2:], row[2:], strict=True):
        if name == "min_ms" and value is None:  # a row stored before hwnas kept the minimum
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise LutError(f"{where}, round {round_}: {name} = {str(value)[:20]!r})")


class LatencyTable:
    """A loaded LUT. ``df`` has one row per kernel; ``latency_ms`` is the median across rounds of
    the round statistic :attr:`statistic` (``"min"``, or ``"median"`` for a LUT from before the minimum
    was stored)."""

    def __init__(
        self, path: Path, meta: dict[str, Any], fingerprint: dict[str, Any], measurements: pd.DataFrame
    ) -> None:
        self.path = path
        self.meta = meta
        self.fingerprint = fingerprint
        self.measurements = measurements
        complete = not measurements.empty and bool(measurements["min_ms"].notna().all())
        self.statistic = "min" if complete or measurements.empty else "median"
        self.df = self._per_kernel(measurements, self.round_column)
        self._latency: dict[str, float] = dict(zip(self.df["key"], self.df["latency_ms"], strict=True))

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        with LutStore.open(path) as store:
            try:
                rows = list(store.rows())
            except (sqlite3.Error, UnicodeDecodeError) as exc:
                raise LutError(f"{path}: not a LUT file, or a corrupt one ({sqlite_reason(exc)})") from None
            meta = dict(store.meta)
            fingerprint = store.fingerprint
        cols = list(ROW_COLUMNS)
        for row in rows:
            _check_row(Path(path), row, cols)
        return cls(Path(path), meta, fingerprint, pd.DataFrame(rows, columns=cols))

    @property
    def round_column(self) -> str:
        """The column of :attr:`measurements` that holds each round's latency."""
        return "min_ms" if self.statistic == "min" else "median_ms"

    @staticmethod
    def _per_kernel(m: pd.DataFrame, column: str) -> pd.DataFrame:
        cols = ["key", "op", "latency_ms", "rounds", "round_spread", "p10_ms", "p90_ms", "n", "flops",
                "cin", "cout", "k", "s", "h", "w", "act", "gate"]  # fmt: skip
        if m.empty:
            return pd.DataFrame(columns=cols)
        g = m.groupby("key", sort=True)
        df = pd.DataFrame(
            {
                "latency_ms": g[column].median(),
                "rounds": g["round"].count(),
                "round_spread": (g[column].max() - g[column].min()) / g[column].median(),
                "p10_ms": g["p10_ms"].median(),
                "p90_ms": g["p90_ms"].median(),
                "n": g["n"].sum(),
            }
        ).reset_index()
        kernels = [Kernel.from_key(k) for k in df["key"]]
        fields = pd.DataFrame([asdict(k) for k in kernels])
        fields["flops"] = [k.flops for k in kernels]
        return pd.concat([df, fields], axis=1)[cols]

    # --- lookups --------------------------------------------------------------------------
    def __contains__(self, key: object) -> bool:
        return key in self._latency

    def __len__(self) -> int:
        return len(self._latency)

    def missing(self, keys: Iterable[str | Kernel]) -> list[str]:
        wanted = dict.fromkeys(k.key if isinstance(k, Kernel) else k for k in keys)
        return [k for k in wanted if k not in self._latency]

    def require(self, keys: Iterable[str | Kernel]) -> None:
        """Raise :class:`MissingKernelsError` naming every key not in the table."""
        missing = self.missing(keys)
        if missing:
            raise MissingKernelsError(self.path, missing)

    def lookup(self, key: str | Kernel) -> float:
        """Latency of one kernel in ms."""
        k = key.key if isinstance(key, Kernel) else key
        try:
            return self._latency[k]
        except KeyError:
            raise MissingKernelsError(self.path, [k]) from None

    def lookup_many(self, keys: Iterable[str | Kernel]) -> list[float]:
        keys = list(keys)
        self.require(keys)
        return [self.lookup(k) for k in keys]

    def compare(self, other: LatencyTable) -> pd.DataFrame:
        """Per kernel type, over the kernels both tables hold: how many, the sum of each table's
        latencies, ``ratio`` = this table's sum / the other's, and how many kernels are slower here
        (e.g. an int8 LUT against the fp32 LUT of the same device: ratio > 1 is int8 slower)."""
        a = self.df.set_index("key")
        b = other.df.set_index("key")
        common = a.index.intersection(b.index)
        both = pd.DataFrame({"op": a.loc[common, "op"], "this_ms": a.loc[common, "latency_ms"],
                             "other_ms": b.loc[common, "latency_ms"]})  # fmt: skip
        both["slower"] = both["this_ms"] > both["other_ms"]
        g = both.groupby("op")
        out = pd.DataFrame({"kernels": g.size(), "this_ms": g["this_ms"].sum(), "other_ms": g["other_ms"].sum(),
                            "slower": g["slower"].sum()})  # fmt: skip
        out["ratio"] = out["this_ms"] / out["other_ms"]
        return out.reset_index()

    def check_device(self, fingerprint: dict[str, Any], force: bool = False) -> None:
        """Refuse a device other than the one the LUT was measured on, unless ``force``."""
        diff = fingerprint_mismatch(self.fingerprint, fingerprint)
        if diff and not force:
            raise LutError(
                f"{self.path} was measured on another device ({'; '.join(diff)}); pass --force to use it anyway"
            )
