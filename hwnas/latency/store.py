"""The LUT file: SQLite in WAL mode, one row per measurement, committed as it is taken.

A killed profile loses at most the measurement in flight, and a re-run skips every
``(key, round)`` already stored. Several processes may write one file (SQLite serializes them).

Schema (version 1)::

    meta(name TEXT PRIMARY KEY, value TEXT)            -- format, schema_version, fingerprint, device, ...
    measurements(key TEXT, round INTEGER, median_ms, p10_ms, p90_ms, mean_ms, std_ms, n, warmup_n,
                 busy_s, measured_at, min_ms, PRIMARY KEY (key, round))
    models(device TEXT, arch TEXT, round INTEGER, <the same statistics>, measured_at,
           PRIMARY KEY (device, arch, round))     -- whole networks, timed by 'hwnas lut validate'

    conditions(scope TEXT, key TEXT, round INTEGER, others_cores, steal, load1, attempts, disturbed,
               PRIMARY KEY (scope, key, round))  -- what else ran while each measurement was taken

``models`` holds end-to-end measurements of whole architectures (their arch strings), keyed by
the identity of the device they ran on (:func:`device_id`), so a validation run resumes and a
calibration can be traced to its data. ``conditions`` records, per measurement (``scope`` is
``"kernel"`` for the kernel rows, the device id for ``models`` rows), the CPU used by other
processes in cores, the hypervisor's steal share, the load average, how many attempts it took
(a disturbed measurement is re-taken, see :mod:`hwnas.latency.disturbance`) and whether the kept
one was still disturbed. Both were added without a schema bump: older files get a table the first
time something is written to it, and readers treat its absence as empty.

``min_ms`` (each round's fastest run, the statistic hwnas uses: :attr:`Stats.round_ms`) came
later too, as a nullable last column of ``measurements`` and ``models``: opening an older file for
writing adds it (rows measured before have NULL there), and reading one without it reads NULL.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from hwnas.core.errors import HwnasError
from hwnas.devices.base import Stats

LUT_FORMAT = "hwnas.lut"
SCHEMA_VERSION = 1
# Fingerprint fields that do not change what is measured.
_NOT_IDENTITY = {"hwnas_version", "os", "cpu_governor"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS measurements (
    key TEXT NOT NULL,
    round INTEGER NOT NULL,
    median_ms REAL NOT NULL, p10_ms REAL NOT NULL, p90_ms REAL NOT NULL,
    mean_ms REAL NOT NULL, std_ms REAL NOT NULL,
    n INTEGER NOT NULL, warmup_n INTEGER NOT NULL, busy_s REAL NOT NULL,
    measured_at REAL NOT NULL,
    min_ms REAL,
    PRIMARY KEY (key, round)
);
"""
_MODELS_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    device TEXT NOT NULL,
    arch TEXT NOT NULL,
    round INTEGER NOT NULL,
    median_ms REAL NOT NULL, p10_ms REAL NOT NULL, p90_ms REAL NOT NULL,
    mean_ms REAL NOT NULL, std_ms REAL NOT NULL,
    n INTEGER NOT NULL, warmup_n INTEGER NOT NULL, busy_s REAL NOT NULL,
    measured_at REAL NOT NULL,
    min_ms REAL,
    PRIMARY KEY (device, arch, round)
);
"""
_CONDITIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS conditions (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    round INTEGER NOT NULL,
    others_cores REAL, steal REAL, load1 REAL,
    attempts INTEGER NOT NULL, disturbed INTEGER NOT NULL,
    PRIMARY KEY (scope, key, round)
);
"""
CONDITION_COLUMNS = ("others_cores", "steal", "load1", "attempts", "disturbed")
_MEASURED = ("median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms", "n", "warmup_n", "busy_s", "measured_at", "min_ms")
_TABLE_COLUMNS = {"meta": ("name", "value"), "measurements": ("key", "round", *_MEASURED),
                  "models": ("device", "arch", "round", *_MEASURED),
                  "conditions": ("scope", "key", "round", *CONDITION_COLUMNS)}  # fmt: skip
_WITH_MIN = ("measurements", "models")  # tables whose last column, min_ms, older files lack
_SCHEMA_OBJECTS = {("table", t) for t in _TABLE_COLUMNS} | {
    ("index", f"sqlite_autoindex_{t}_1") for t in _TABLE_COLUMNS
}
STAT_COLUMNS = ("median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms", "n", "warmup_n", "busy_s")
ROW_COLUMNS = ("key", "round", *STAT_COLUMNS, "measured_at", "min_ms")  # what :meth:`LutStore.rows` yields


def sqlite_reason(exc: BaseException) -> str:
    """SQLite's complaint on one line, shortened: a damaged schema's message quotes its SQL,
    newlines and all, and a user error is one line."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 160 else text[:157] + "..."


class LutError(HwnasError):
    """A LUT file that is missing, corrupt, of another kind, or from another device."""


def identity(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint fields that must agree for a LUT to describe a device."""
    return {k: v for k, v in fingerprint.items() if k not in _NOT_IDENTITY}


def device_id(fingerprint: dict[str, Any]) -> str:
    """A short stable id of a device's identity (for keying end-to-end measurements)."""
    text = json.dumps(identity(fingerprint), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint_mismatch(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences ``field: stored vs current`` between two identities."""
    a, b = identity(stored), identity(current)
    return [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


class LutStore:
    """An open LUT file. Use :meth:`create_or_open` to write, :meth:`open` to read."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    # --- opening ------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> LutStore:
        """Open an existing LUT; a missing, corrupt or foreign file raises :class:`LutError`."""
        p = Path(path)
        if p.is_dir():
            raise LutError(f"{p}: is a folder; give the LUT file (made by 'hwnas profile ... --out FILE')")
        if not p.is_file():
            raise LutError(f"{p}: no such LUT file; create one with 'hwnas profile --space S --device D --out {p}'")
        conn = cls._connect(p)
        store = cls(p, conn)
        store._check()
        return store

    @classmethod
    def create_or_open(
        cls, path: str | Path, fingerprint: dict[str, Any], device: str, force: bool = False
    ) -> LutStore:
        """Open ``path`` for writing measurements of ``device``, creating it when it does not exist.

        An existing LUT must come from the same device (same identity fingerprint) unless ``force``.
        """
        p = Path(path)
        if p.exists():
            store = cls.open(p)
            diff = fingerprint_mismatch(store.fingerprint, fingerprint)
            if diff and not force:
                store.close()
                raise LutError(
                    f"{p} was measured on another device ({'; '.join(diff)}); "
                    "use another --out file, or --force to add to it anyway"
                )
            store.conn.execute("PRAGMA journal_mode=WAL")
            store._add_min_column()
            return store
        if not p.parent.exists():
            raise LutError(f"{p}: the folder {p.parent} does not exist")
        conn = cls._connect(p)
        conn.execute("PRAGMA journal_mode=WAL")
        with conn:
            conn.executescript(_SCHEMA)
            conn.executemany(
                "INSERT INTO meta(name, value) VALUES (?, ?)",
                [
                    ("format", LUT_FORMAT),
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("fingerprint", json.dumps(fingerprint, sort_keys=True)),
                    ("device", device),
                    ("created_at", str(time.time())),
                ],
            )
        return cls(p, conn)

    @staticmethod
    def _connect(p: Path) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(p, timeout=30.0)
            # A LUT is data: SQL functions with side effects may not run from its schema (views, triggers).
            conn.execute("PRAGMA trusted_schema=OFF")
            conn.execute("PRAGMA synchronous=NORMAL")
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise LutError(f"{p}: not a LUT file, or a corrupt one ({sqlite_reason(exc)})") from None
        return conn

    def _check(self) -> None:
        try:
            self._check_schema()
            rows = dict(self.conn.execute("SELECT name, value FROM meta").fetchall())
            self.conn.execute("SELECT key FROM measurements LIMIT 1").fetchall()
        except (sqlite3.Error, UnicodeDecodeError, ValueError) as exc:
            self.close()
            raise LutError(f"{self.path}: not a LUT file, or a corrupt one ({sqlite_reason(exc)})") from None
        except LutError:
            self.close()
            raise
        if rows.get("format") != LUT_FORMAT:
            self.close()
            raise LutError(f"{self.path}: an SQLite file, but not an hwnas LUT")
        try:
            version = int(rows.get("schema_version", "0"))
        except (TypeError, ValueError):
            version = -1
        if version < 1:
            self.close()
            raise LutError(f"{self.path}: damaged LUT (schema_version {str(rows.get('schema_version'))[:20]!r})")
        if version > SCHEMA_VERSION:
            self.close()
            raise LutError(
                f"{self.path}: LUT schema {version} is newer than this hwnas reads ({SCHEMA_VERSION}); upgrade hwnas"
            )
        self.meta = rows
        try:
            self.fingerprint  # noqa: B018 (parsed once here, so a damaged one fails on opening)
        except LutError:
            self.close()
            raise

    def _check_schema(self) -> None:
        """Only the tables (and their primary-key indexes) hwnas creates, with their columns."""
        objects = self.conn.execute("SELECT type, name FROM sqlite_master").fetchall()
        for kind, name in objects:
            if (kind, name) not in _SCHEMA_OBJECTS:
                raise LutError(f"{self.path}: not a LUT file, or a corrupt one (it holds {kind} {str(name)[:40]!r})")
        for table, columns in _TABLE_COLUMNS.items():
            have = self._columns(table)
            older = table in _WITH_MIN and have == list(columns[:-1])
            if have and have != list(columns) and not older:
                raise LutError(f"{self.path}: damaged LUT (table {table} has columns {', '.join(have)[:120]})")

    def _columns(self, table: str) -> list[str]:
        return [str(row[1]) for row in self.conn.execute(f"PRAGMA table_info({table})")]

    def _add_min_column(self) -> None:
        """Bring a file from before ``min_ms`` up to date (its earlier rows keep NULL there)."""
        with self.conn:
            for table in _WITH_MIN:
                have = self._columns(table)
                if have and "min_ms" not in have:
                    self.conn.execute(f"ALTER TABLE {table} ADD COLUMN min_ms REAL")

    def _min_column(self, table: str) -> str:
        return "min_ms" if "min_ms" in self._columns(table) else "NULL AS min_ms"

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> LutStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- metadata -----------------------------------------------------------------------
    @property
    def fingerprint(self) -> dict[str, Any]:
        try:
            value = json.loads(self._meta("fingerprint"))
        except (json.JSONDecodeError, RecursionError):
            value = None
        if not isinstance(value, dict):
            raise LutError(f"{self.path}: damaged LUT (its device fingerprint is not a JSON object)")
        return value

    @property
    def device(self) -> str:
        return self._meta("device")

    def _meta(self, name: str) -> str:
        try:
            row = self.conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise LutError(f"{self.path}: not a LUT file, or a corrupt one ({sqlite_reason(exc)})") from None
        if row is None:
            raise LutError(f"{self.path}: the LUT has no {name!r} entry (damaged file)")
        return str(row[0])

    def set_meta(self, name: str, value: Any) -> None:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)", (name, text))

    def get_meta(self, name: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        if row is None:
            return default
        try:
            return json.loads(row[0])
        except json.JSONDecodeError:
            return row[0]

    # --- measurements ---------------------------------------------------------------------
    def add(self, key: str, round_: int, stats: Stats, replace: bool = False) -> bool:
        """Store one measurement and commit it; False if ``(key, round)`` was already there
        (unless ``replace``: a re-measured round replaces the stored one)."""
        values = [getattr(stats, c) for c in STAT_COLUMNS]
        verb = "REPLACE" if replace else "IGNORE"
        with self.conn:
            cur = self.conn.execute(
                f"INSERT OR {verb} INTO measurements(key, round, {', '.join(STAT_COLUMNS)}, measured_at, min_ms) "
                f"VALUES (?, ?, {', '.join('?' * len(STAT_COLUMNS))}, ?, ?)",
                (key, round_, *values, time.time(), stats.min_ms),
            )
        return cur.rowcount == 1

    def done(self) -> set[tuple[str, int]]:
        """Every ``(key, round)`` already measured."""
        return {(k, r) for k, r in self.conn.execute("SELECT key, round FROM measurements")}

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """Every kernel measurement, as :data:`ROW_COLUMNS` (``min_ms`` None where not stored)."""
        cols = ", ".join(("key", "round", *STAT_COLUMNS, "measured_at", self._min_column("measurements")))
        yield from self.conn.execute(f"SELECT {cols} FROM measurements ORDER BY key, round")

    def count(self) -> int:
        with closing(self.conn.execute("SELECT COUNT(*) FROM measurements")) as cur:
            return int(cur.fetchone()[0])

    # --- whole-model measurements -----------------------------------------------------------
    def _has_models(self) -> bool:
        row = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'models'").fetchone()
        return row is not None

    def add_model(self, device: str, arch: str, round_: int, stats: Stats, replace: bool = False) -> bool:
        """Store one end-to-end measurement of ``arch`` (its string) on ``device`` (a :func:`device_id`)."""
        values = [getattr(stats, c) for c in STAT_COLUMNS]
        verb = "REPLACE" if replace else "IGNORE"
        with self.conn:
            self.conn.executescript(_MODELS_SCHEMA)
        self._add_min_column()
        with self.conn:
            cur = self.conn.execute(
                f"INSERT OR {verb} INTO models(device, arch, round, {', '.join(STAT_COLUMNS)}, measured_at, min_ms) "
                f"VALUES (?, ?, ?, {', '.join('?' * len(STAT_COLUMNS))}, ?, ?)",
                (device, arch, round_, *values, time.time(), stats.min_ms),
            )
        return cur.rowcount == 1

    def model_rows(self, device: str) -> list[tuple[str, int, float]]:
        """``(arch, round, ms)`` of every end-to-end measurement on ``device``; ``ms`` is the round's
        latency as :attr:`Stats.round_ms` has it (its fastest run; its median in rows stored before
        hwnas kept the minimum)."""
        if not self._has_models():
            return []
        rows = list(
            self.conn.execute(
                f"SELECT arch, round, median_ms, {self._min_column('models')} FROM models WHERE device = ? "
                "ORDER BY arch, round",
                (device,),
            )
        )
        out = []
        for arch, round_, median, fastest in rows:
            ms = median if fastest is None else fastest
            if not (isinstance(arch, str) and isinstance(round_, int) and isinstance(ms, (int, float))
                    and not isinstance(ms, bool) and math.isfinite(ms) and ms >= 0):  # fmt: skip
                raise LutError(f"{self.path}: damaged LUT (a whole-network measurement of {str(arch)[:60]!r})")
            out.append((arch, round_, ms))
        return out

    def model_statistics(self, device: str) -> list[tuple[str, int, float, float, float]]:
        """``(arch, round, fastest, median, p90)`` in ms of every end-to-end measurement on ``device``
        that kept its fastest run (older rows, without it, are left out)."""
        if not self._has_models() or self._min_column("models") != "min_ms":
            return []
        rows = self.conn.execute("SELECT arch, round, min_ms, median_ms, p90_ms FROM models WHERE device = ? AND "
                                 "min_ms IS NOT NULL ORDER BY arch, round", (device,))  # fmt: skip
        out = []
        for arch, round_, *values in rows:
            if not (isinstance(arch, str) and isinstance(round_, int) and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                    for v in values)):  # fmt: skip
                raise LutError(f"{self.path}: damaged LUT (a whole-network measurement of {str(arch)[:60]!r})")
            fastest, median, p90 = (float(v) for v in values)
            out.append((arch, round_, fastest, median, p90))
        return out

    # --- conditions of each measurement -------------------------------------------------------
    def add_conditions(self, scope: str, key: str, round_: int, values: dict[str, Any]) -> None:
        """Record (or replace) the conditions of one measurement; ``values`` has CONDITION_COLUMNS."""
        row = [values.get(c) for c in CONDITION_COLUMNS]
        with self.conn:
            self.conn.executescript(_CONDITIONS_SCHEMA)
            self.conn.execute(
                f"INSERT OR REPLACE INTO conditions(scope, key, round, {', '.join(CONDITION_COLUMNS)}) "
                f"VALUES (?, ?, ?, {', '.join('?' * len(CONDITION_COLUMNS))})",
                (scope, key, round_, *row),
            )

    def conditions(self, scope: str | None = None) -> list[dict[str, Any]]:
        """The recorded conditions (of one ``scope``, or all), one dict per measurement."""
        row = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'conditions'").fetchone()
        if row is None:
            return []
        cols = ("scope", "key", "round", *CONDITION_COLUMNS)
        sql = f"SELECT {', '.join(cols)} FROM conditions" + (" WHERE scope = ?" if scope is not None else "")
        rows = self.conn.execute(sql + " ORDER BY scope, key, round", (scope,) if scope is not None else ())
        out = []
        for r in rows:
            d = dict(zip(cols, r, strict=True))
            for c in ("others_cores", "steal", "load1"):
                v = d[c]
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                    raise LutError(
                        f"{self.path}: damaged LUT (conditions of {str(d['key'])[:60]!r}: {c} = {str(v)[:20]!r})"
                    )
            out.append(d)
        return out
