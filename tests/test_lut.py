from __future__ import annotations

import sqlite3
import statistics
from pathlib import Path

import pytest

from hwnas.devices import Stats, open_device
from hwnas.latency.store import LutError, LutStore
from hwnas.latency.table import LatencyTable, MissingKernelsError
from hwnas.spaces import get_space
from hwnas.spaces.kernels import Kernel

FP = {"kind": "ort-cpu", "runtime": "onnxruntime", "runtime_version": "1.0", "threads": 1, "batch": 1,
      "cpu_model": "X", "hwnas_version": "0.1.0", "os": "Linux 1"}  # fmt: skip


def _stats(ms: float) -> Stats:
    return Stats(ms, ms * 0.9, ms * 1.1, ms, 0.01, 20, 5, 0.1)


def test_store_round_trip_and_latency_is_median_over_rounds(tmp_path: Path) -> None:
    path = tmp_path / "a.lut"
    keys = [k.key for k in get_space("tiny").kernels()[:4]]
    per_round = {keys[0]: [1.0, 3.0, 2.0], keys[1]: [5.0, 4.0], keys[2]: [0.5]}
    with LutStore.create_or_open(path, FP, "ort-cpu:threads=1") as store:
        for key, values in per_round.items():
            for r, v in enumerate(values):
                assert store.add(key, r, _stats(v))
        assert not store.add(keys[0], 0, _stats(9.0))  # a (key, round) is stored once
        assert store.count() == 6
    table = LatencyTable.load(path)
    for key, values in per_round.items():
        assert table.lookup(key) == statistics.median(values)
    row = table.df.set_index("key").loc[keys[0]]
    assert row["rounds"] == 3 and row["round_spread"] == pytest.approx((3.0 - 1.0) / 2.0)
    assert row["flops"] == Kernel.from_key(keys[0]).flops
    assert table.fingerprint == FP
    with pytest.raises(MissingKernelsError) as info:
        table.lookup_many([keys[0], keys[3], "gap_c1_h1_w1"])
    assert info.value.missing == [keys[3], "gap_c1_h1_w1"]
    assert keys[3] in str(info.value) and "hwnas profile" in str(info.value)


def test_another_device_is_refused_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "a.lut"
    LutStore.create_or_open(path, FP, "ort-cpu").close()
    other = {**FP, "threads": 4, "hwnas_version": "9.9"}
    with pytest.raises(LutError, match=r"another device \(threads: 1 vs 4\)"):
        LutStore.create_or_open(path, other, "ort-cpu:threads=4")
    LutStore.create_or_open(path, other, "ort-cpu:threads=4", force=True).close()
    table = LatencyTable.load(path)
    table.check_device({**FP, "hwnas_version": "0.2", "os": "Linux 2"})  # not identity fields
    with pytest.raises(LutError, match="--force"):
        table.check_device(other)
    table.check_device(other, force=True)


def test_bad_files(tmp_path: Path) -> None:
    text = tmp_path / "text.lut"
    text.write_text("not a database at all " * 100)
    with pytest.raises(LutError, match="not a LUT file, or a corrupt one"):
        LatencyTable.load(text)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(LutError, match="not a LUT file, or a corrupt one"):
        LatencyTable.load(other)
    with pytest.raises(LutError, match="no such LUT file"):
        LatencyTable.load(tmp_path / "missing.lut")
    with pytest.raises(LutError, match="is a folder"):
        LatencyTable.load(tmp_path)
    # a real LUT, damaged in the middle
    good = tmp_path / "good.lut"
    with LutStore.create_or_open(good, FP, "ort-cpu") as store:
        for i in range(200):
            store.add(f"gap_c{i + 1}_h1_w1", 0, _stats(1.0))
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(good.read_bytes())
    data[0:16] = b"garbage-garbage!"
    bad = tmp_path / "damaged.lut"
    bad.write_bytes(bytes(data))
    with pytest.raises(LutError, match="corrupt"):
        LatencyTable.load(bad)
    # a LUT written by a newer hwnas
    newer = tmp_path / "newer.lut"
    with LutStore.create_or_open(newer, FP, "ort-cpu") as store:
        store.set_meta("schema_version", "99")
    with pytest.raises(LutError, match="upgrade hwnas"):
        LatencyTable.load(newer)


def test_keys_round_trip_for_every_preset_kernel() -> None:
    for name in ("fbnetv2", "cifar", "tiny"):
        for k in get_space(name).kernels():
            assert Kernel.from_key(k.key) == k
    with pytest.raises(ValueError, match="not a kernel key"):
        Kernel.from_key("conv_i8")


def test_device_fingerprint_identity_excludes_only_cosmetic_fields() -> None:
    from hwnas.latency.store import identity

    fp = open_device("ort-cpu:threads=1").fingerprint()
    ident = identity(fp)
    assert {"kind", "runtime_version", "threads", "cpu_model", "batch", "precision"} <= set(ident)
    assert "hwnas_version" not in ident


def _timed(median: float, fastest: float) -> Stats:
    return Stats(median, median * 0.9, median * 1.1, median, 0.01, 20, 5, 0.1, min_ms=fastest)


def test_a_kernel_counts_by_the_median_over_rounds_of_each_rounds_fastest_run(tmp_path: Path) -> None:
    path = tmp_path / "a.lut"
    keys = [k.key for k in get_space("tiny").kernels()[:2]]
    rounds = {keys[0]: [(2.0, 1.0), (9.0, 1.4), (2.5, 1.2)], keys[1]: [(5.0, 4.0), (4.0, 3.0)]}
    with LutStore.create_or_open(path, FP, "ort-cpu:threads=1") as store:
        for key, values in rounds.items():
            for r, (median, fastest) in enumerate(values):
                store.add(key, r, _timed(median, fastest))
    table = LatencyTable.load(path)
    assert table.statistic == "min" and table.round_column == "min_ms"
    assert table.lookup(keys[0]) == pytest.approx(1.2) and table.lookup(keys[1]) == pytest.approx(3.5)
    row = table.df.set_index("key").loc[keys[0]]
    assert row["round_spread"] == pytest.approx((1.4 - 1.0) / 1.2)  # of the fastest runs, not the medians
    with LutStore.open(path) as store:
        store_min = {(r[0], r[1]): r[-1] for r in store.rows()}
    assert store_min[(keys[0], 1)] == 1.4


def test_a_lut_from_before_the_minimum_reads_its_medians_and_takes_new_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.lut"
    keys = [k.key for k in get_space("tiny").kernels()[:2]]
    with LutStore.create_or_open(path, FP, "ort-cpu:threads=1") as store:
        store.add(keys[0], 0, _timed(2.0, 1.0))
        store.add_model("dev", "r8 arch", 0, _timed(7.0, 6.0))
    with sqlite3.connect(path) as conn:  # the file as hwnas wrote it before min_ms existed
        conn.execute("ALTER TABLE measurements DROP COLUMN min_ms")
        conn.execute("ALTER TABLE models DROP COLUMN min_ms")
    table = LatencyTable.load(path)
    assert table.statistic == "median" and table.lookup(keys[0]) == 2.0
    with LutStore.open(path) as store:
        assert [r[-1] for r in store.rows()] == [None]
        assert store.model_rows("dev") == [("r8 arch", 0, 7.0)]
    # resuming it (opening for writing) adds the column; the old rows keep NULL there
    with LutStore.create_or_open(path, FP, "ort-cpu:threads=1") as store:
        store.add(keys[1], 0, _timed(5.0, 4.0))
        store.add_model("dev", "r8 arch", 1, _timed(8.0, 6.5))
        assert store.model_rows("dev") == [("r8 arch", 0, 7.0), ("r8 arch", 1, 6.5)]
    table = LatencyTable.load(path)
    # one table never mixes the statistics: a kernel without its minimum makes every kernel use medians
    assert table.statistic == "median" and table.lookup(keys[1]) == 5.0 and table.lookup(keys[0]) == 2.0
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE measurements SET min_ms = 1.5 WHERE min_ms IS NULL")
    table = LatencyTable.load(path)
    assert table.statistic == "min" and table.lookup(keys[0]) == 1.5 and table.lookup(keys[1]) == 4.0


def test_a_damaged_schema_is_refused_in_one_line(tmp_path: Path) -> None:
    # found by the fuzzer: SQLite's "malformed database schema" message quotes the table's SQL,
    # newlines and all
    path = tmp_path / "a.lut"
    with LutStore.create_or_open(path, FP, "ort-cpu:threads=1") as store:
        store.add(get_space("tiny").kernels()[0].key, 0, _stats(1.0))
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute("UPDATE sqlite_master SET sql = replace(sql, 'CREATE TABLE measurements', "
                     "'CREATE TABLE \"measurements') WHERE name = 'measurements'")  # fmt: skip
    with pytest.raises(LutError) as info:
        LatencyTable.load(path)
    text = str(info.value)
    assert "not a LUT file, or a corrupt one" in text and "malformed database schema" in text
    assert "\n" not in text and len(text) < len(str(path)) + 240
