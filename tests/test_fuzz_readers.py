"""Property-based fuzzing of every reader of user input: each bad input is a one-line HwnasError.

A reader passes when it either accepts the input or raises :class:`HwnasError` with a one-line
message; any other exception (a traceback for the user) fails the test. The number of generated
cases per test is set by ``@settings(max_examples=...)`` and listed in the README's Security
section. Crafted corpora (truncations, wrong types, huge dimensions, NaN and inf, YAML tags and
aliases, zip bombs) sit beside the random cases. ``tests/test_malicious_files.py`` covers pickles.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sqlite3
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hwnas.core import tensorfile
from hwnas.core.errors import HwnasError
from hwnas.devices import parse_device
from hwnas.devices.base import Stats, TimingConfig
from hwnas.latency.store import LutStore
from hwnas.latency.table import LatencyTable
from hwnas.models.builder import build_model
from hwnas.spaces import get_space
from hwnas.spaces.arch import Architecture
from hwnas.spaces.space import SearchSpace
from hwnas.train.checkpoints import read_child, read_search_checkpoint, write_child
from hwnas.train.data import load_images


def fuzz(cases: int) -> settings:
    """Settings of one fuzz test: ``cases`` generated inputs (plus its explicit examples), no deadline."""
    return settings(max_examples=cases, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _one_line(exc: BaseException) -> None:
    assert isinstance(exc, HwnasError), f"{type(exc).__name__}: {exc}"
    assert "\n" not in str(exc).strip(), str(exc)


def _accepts_or_refuses(fn, *args):  # type: ignore[no-untyped-def]
    try:
        return fn(*args)
    except HwnasError as exc:
        _one_line(exc)
        return None


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    b = bytearray(data)
    for pos, value in edits:
        b[pos % len(b)] = value
    return bytes(b[:cut] if cut is not None else b)


EDITS = st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), max_size=12)
CUT = st.none() | st.integers(0, 4096)


# --- checkpoints and child files -------------------------------------------------------------------
@pytest.fixture(scope="module")
def child_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    arch = get_space("tiny").sample(1)
    path = tmp_path_factory.mktemp("c") / "c.safetensors"
    write_child(path, arch, build_model(arch).state_dict(), {"mean": [0.5] * 3, "std": [0.25] * 3})
    return path.read_bytes()


@fuzz(300)
@given(edits=EDITS, cut=CUT)
@example(edits=[], cut=7)
@example(edits=[(0, 255), (1, 255), (2, 255), (3, 255), (4, 255), (5, 255), (6, 255), (7, 127)], cut=None)
def test_fuzz_child_file_bytes(
    tmp_path: Path, child_bytes: bytes, edits: list[tuple[int, int]], cut: int | None
) -> None:
    path = tmp_path / "c.safetensors"
    path.write_bytes(_mutate(child_bytes, edits, cut))
    got = _accepts_or_refuses(read_child, path)
    if got is not None and got.arch is not None:  # the export path goes on to build and check it
        from hwnas.export.child_file import load_child

        _accepts_or_refuses(load_child, None, path)


@fuzz(200)
@given(tree=JSON, version=st.text(max_size=5) | st.integers(-3, 5).map(str))
def test_fuzz_child_file_content(tmp_path: Path, tree: object, version: str) -> None:
    from safetensors.torch import save

    data = save(
        {"t0": torch.zeros(2)}, metadata={"format": "hwnas.child", "version": version, "tree": json.dumps(tree)}
    )
    path = tmp_path / "c.safetensors"
    path.write_bytes(data)
    _accepts_or_refuses(read_child, path)


@fuzz(150)
@given(
    fields=st.dictionaries(
        st.sampled_from(
            ["config", "epoch", "net", "w_opt", "w_sched", "a_opt", "lambda", "metrics", "probs", "timing", "rng"]
        ),
        JSON,
        max_size=11,
    ),
)
def test_fuzz_search_checkpoint_content(tmp_path: Path, fields: dict) -> None:
    tensorfile.write(tmp_path / "checkpoint.safetensors", "hwnas.search-checkpoint", 2, fields)
    _accepts_or_refuses(read_search_checkpoint, tmp_path)


# --- LUT files -----------------------------------------------------------------------------------
FP = {"kind": "ort-cpu", "runtime": "onnxruntime", "runtime_version": "1", "threads": 1}


@pytest.fixture(scope="module")
def lut_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("l") / "a.lut"
    with LutStore.create_or_open(path, FP, "ort-cpu") as store:
        for i in range(40):
            store.add(f"gap_c{i + 1}_h2_w2", 0, Stats(1.0 + i, 1, 2, 1, 0.1, 10, 2, 0.01))
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.read_bytes()


@fuzz(150)
@given(edits=EDITS, cut=CUT)
def test_fuzz_lut_bytes(tmp_path: Path, lut_bytes: bytes, edits: list[tuple[int, int]], cut: int | None) -> None:
    path = tmp_path / "a.lut"
    path.write_bytes(_mutate(lut_bytes, edits, cut))
    _accepts_or_refuses(LatencyTable.load, path)


CELL = st.none() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=30) | st.binary(max_size=8)


@fuzz(150)
@given(key=CELL | st.sampled_from(["gap_c4_h2_w2", "conv_i3_o8_k3_s2_h32_w32_relu", "nope"]),
       round_=CELL, stats=st.lists(CELL, min_size=10, max_size=10), fingerprint=CELL, version=CELL)  # fmt: skip
def test_fuzz_lut_rows_and_meta(tmp_path: Path, lut_bytes: bytes, key, round_, stats, fingerprint, version) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "a.lut"
    path.write_bytes(lut_bytes)
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("INSERT OR REPLACE INTO measurements VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (key, round_, *stats))  # the last cell is min_ms  # fmt: skip
            if fingerprint is not None:
                conn.execute("UPDATE meta SET value = ? WHERE name = 'fingerprint'", (fingerprint,))
            if version is not None:
                conn.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (version,))
    except (sqlite3.IntegrityError, OverflowError):  # the schema's NOT NULL refuses it: not a file to test
        return
    finally:
        conn.close()
    _accepts_or_refuses(LatencyTable.load, path)


def test_a_lut_with_a_trigger_or_view_is_refused(tmp_path: Path, lut_bytes: bytes) -> None:
    for extra in ("CREATE TRIGGER t AFTER INSERT ON measurements BEGIN DELETE FROM meta; END",
                  "CREATE VIEW v AS SELECT 1"):  # fmt: skip
        path = tmp_path / "a.lut"
        path.write_bytes(lut_bytes)
        with sqlite3.connect(path) as conn:
            conn.execute(extra)
        conn.close()
        with pytest.raises(HwnasError, match="not a LUT file"):
            LatencyTable.load(path)


# --- architecture and space files ------------------------------------------------------------------
def _with(d: object, path: list, value: object) -> object:
    """``d`` with the value at ``path`` (keys / indices, taken modulo) replaced by ``value``."""
    if not path:
        return value
    if isinstance(d, dict) and d:
        key = list(d)[path[0] % len(d)]
        return {**d, key: _with(d[key], path[1:], value)}
    if isinstance(d, list) and d:
        i = path[0] % len(d)
        return [*d[:i], _with(d[i], path[1:], value), *d[i + 1 :]]
    return value


PATH = st.lists(st.integers(0, 50), max_size=4)
HOSTILE = JSON | st.sampled_from([10**12, 2**70, -1, 0, math.nan, math.inf, -math.inf, 1e308, "", [], {}, True])


@fuzz(300)
@given(path=PATH, value=HOSTILE)
@example(path=[3], value=10**9)  # resolution
@example(path=[7, 1, 1], value=10**9)  # a block's channels
@example(path=[7, 2, 3], value=math.inf)  # an expansion
def test_fuzz_architecture_json(tmp_path: Path, path: list, value: object) -> None:
    data = _with(get_space("cifar").sample(0).to_dict(), path, value)
    f = tmp_path / "a.json"
    f.write_text(json.dumps(data))
    arch = _accepts_or_refuses(Architecture.load, f)
    if arch is not None:
        from hwnas.models.counting import count_arch

        count_arch(arch)  # what 'hwnas arch show' does with it


@fuzz(300)
@given(path=PATH, value=HOSTILE)
@example(path=[6, 0, 4], value=[10**9])  # a stage's channels
@example(path=[6, 0, 1], value=10**6)  # depth
def test_fuzz_space_yaml(tmp_path: Path, path: list, value: object) -> None:
    import yaml

    data = _with(get_space("tiny").to_dict(), path, value)
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(data))
    space = _accepts_or_refuses(SearchSpace.load, f)
    if space is not None:
        space.kernels()


@fuzz(200)
@given(text=st.text(max_size=200))
@example(text="!!python/object/apply:os.system ['touch pwned']")
@example(text="a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
              "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n")  # fmt: skip
@example(text="[" * 5000)
def test_fuzz_yaml_and_json_text(tmp_path: Path, text: str) -> None:
    for suffix in (".yaml", ".json"):
        f = tmp_path / f"x{suffix}"
        f.write_text(text)
        _accepts_or_refuses(SearchSpace.load, f)
        _accepts_or_refuses(Architecture.load, f)
    assert not (tmp_path / "pwned").exists()


# --- datasets --------------------------------------------------------------------------------------
DTYPES = st.sampled_from(["u1", "i8", "f4", "f8", "?", "c8", "U3", "V4", "i2"])
SHAPES = st.lists(st.integers(0, 6), min_size=0, max_size=5).map(tuple)


@fuzz(150)
@given(xd=DTYPES, xs=SHAPES, yd=DTYPES, ys=SHAPES, special=st.sampled_from([None, math.nan, math.inf, -5, 300, 1e9]))
def test_fuzz_npz_arrays(tmp_path: Path, xd: str, xs: tuple, yd: str, ys: tuple, special: float | None) -> None:
    x = np.zeros(xs, dtype=xd)
    y = np.zeros(ys, dtype=yd)
    try:
        if special is not None and x.size and x.dtype.kind in "f":
            x.flat[0] = special
        if special is not None and y.size and y.dtype.kind in "fi":
            y.flat[0] = special if y.dtype.kind == "f" or math.isfinite(special) else -1
    except (ValueError, OverflowError):  # the value does not fit the dtype: nothing to write
        return
    f = tmp_path / "d.npz"
    np.savez(f, x=x, y=y)
    _accepts_or_refuses(load_images, str(f))


@fuzz(100)
@given(edits=EDITS, cut=CUT)
def test_fuzz_npz_bytes(tmp_path: Path, edits: list[tuple[int, int]], cut: int | None) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, x=np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3), y=np.array([0, 1]))
    f = tmp_path / "d.npz"
    f.write_bytes(_mutate(buf.getvalue(), edits, cut))
    _accepts_or_refuses(load_images, str(f))


def _npy_header(shape: tuple[int, ...], dtype: str = "|u1") -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


def test_crafted_npz_files_are_refused_before_anything_is_inflated(tmp_path: Path) -> None:
    forged = tmp_path / "forged.npz"  # a header that declares 10^12 bytes over 10 bytes of data
    with zipfile.ZipFile(forged, "w") as zf:
        zf.writestr("x.npy", _npy_header((10**6, 10**6)) + bytes(10))
        zf.writestr("y.npy", _npy_header((1,), "<i8") + bytes(8))
    with pytest.raises(HwnasError, match="truncated or forged"):
        load_images(str(forged))
    bomb = tmp_path / "bomb.npz"  # 80 MB of zeros that deflate to about 80 KB
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        n = 80 * 2**20
        with zf.open("x.npy", "w", force_zip64=True) as fh:
            fh.write(_npy_header((n // 1024, 32, 32)))
            chunk = bytes(2**20)
            for _ in range(n // 2**20):
                fh.write(chunk)
        zf.writestr("y.npy", _npy_header((n // 1024,), "<i8") + bytes(8 * (n // 1024)))
    with pytest.raises(HwnasError, match="zip bomb"):
        load_images(str(bomb))
    archive = tmp_path / "jpeg.npz"  # the JPEG-archive form with offsets past the data
    np.savez(archive, data=np.zeros(10, np.uint8), offsets=np.array([0, 5, 50]), label=np.array([0, 1]))
    with pytest.raises(HwnasError, match="offsets must rise"):
        load_images(str(archive))


@fuzz(60)
@given(blobs=st.lists(st.binary(max_size=300), min_size=1, max_size=3), cut=st.integers(0, 200))
def test_fuzz_image_folder(tmp_path: Path, blobs: list[bytes], cut: int) -> None:
    from PIL import Image

    root = tmp_path / "imgs"
    (root / "cat").mkdir(parents=True, exist_ok=True)
    for old in (root / "cat").iterdir():
        old.unlink()
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(png, "PNG")
    (root / "cat" / "good.png").write_bytes(png.getvalue())
    (root / "cat" / "cut.png").write_bytes(png.getvalue()[:cut])
    for i, blob in enumerate(blobs):
        (root / "cat" / f"{i}.jpg").write_bytes(blob)
    _accepts_or_refuses(load_images, str(root))


# --- model files given to bench ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    from hwnas.convert.onnx_export import onnx_bytes
    from hwnas.convert.tflite_export import tflite_bytes

    arch = get_space("tiny").sample(0)
    model = build_model(arch).eval()
    shape = (1, 3, arch.resolution, arch.resolution)
    return {"ort-cpu:threads=1": onnx_bytes(model, shape), "tflite-cpu:threads=1": tflite_bytes(model, shape)}


@pytest.mark.parametrize("spec", ["ort-cpu:threads=1", "tflite-cpu:threads=1"])
@fuzz(15)
@given(edits=EDITS, cut=CUT)
def test_fuzz_model_files_in_the_isolated_runner(model_files: dict[str, bytes], spec: str, edits, cut) -> None:  # type: ignore[no-untyped-def]
    from hwnas.devices.isolated import measure_isolated

    data = _mutate(model_files[spec], edits, cut)
    timing = TimingConfig(warmup_runs=1, warmup_s=0.0, min_runs=2, min_time_s=0.0, max_time_s=1.0)
    _accepts_or_refuses(measure_isolated, spec, data, timing, 1, "m")


# --- device specs and budgets ----------------------------------------------------------------------
@fuzz(500)
@given(text=st.text(max_size=40) | st.builds(
    lambda k, p: f"{k}:{p}", st.sampled_from(["ort-cpu", "tflite-cpu", "torch-cpu", "torch-cuda", "ort-cuda"]),
    st.text(alphabet="threads=pinbatchxnpak0123456789,+:-", max_size=30)))  # fmt: skip
@example(text="ort-cpu:threads=99999999999999999999999")
@example(text="tflite-cpu:pin=0+1+-3")
def test_fuzz_device_specs(text: str) -> None:
    _accepts_or_refuses(parse_device, text)


@fuzz(300)
@given(text=st.text(max_size=12) | st.floats().map(repr) | st.sampled_from(["inf", "-inf", "nan", "1e309", "0", "-1"]))
def test_fuzz_budgets(text: str) -> None:
    from hwnas.core.options import positive_float
    from hwnas.search.loop import SearchConfig

    try:
        value = positive_float(text)
    except argparse.ArgumentTypeError:
        return
    assert math.isfinite(value) and value > 0
    SearchConfig(space="tiny", budget=value).check()


@pytest.mark.parametrize("budget", [math.inf, math.nan, 0.0, -1.0])
def test_the_library_refuses_non_finite_budgets(budget: float) -> None:
    from hwnas.search.loop import SearchConfig

    with pytest.raises(HwnasError, match="finite number > 0"):
        SearchConfig(space="tiny", budget=budget).check()


# --- the same inputs through the real command line ---------------------------------------------------
@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, after the default suite
def test_crafted_corpus_through_the_cli(tmp_path: Path, child_bytes: bytes, lut_bytes: bytes) -> None:
    """Each crafted file through its command: exit 2, one line on stderr, no traceback, nothing written."""
    from conftest import run_cli

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "half.safetensors").write_bytes(child_bytes[: len(child_bytes) // 2])
    (corpus / "half.lut").write_bytes(lut_bytes[:3000])
    (corpus / "huge.json").write_text(json.dumps(_with(get_space("cifar").sample(0).to_dict(), [3], 10**12)))
    (corpus / "nan.json").write_text(json.dumps(_with(get_space("cifar").sample(0).to_dict(), [7, 2, 3], math.nan)))
    (corpus / "alias.yaml").write_text("a: &a [x, x]\nb: [*a, *a]\nstages: *a\n")
    (corpus / "deep.yaml").write_text("[" * 3000)
    (corpus / "m.tflite").write_bytes(b"\x00" * 64)
    np.savez(corpus / "nan.npz", x=np.full((4, 8, 8), np.nan, np.float32), y=np.arange(4))
    before = set(corpus.iterdir())
    cases = [
        ("export", "--weights", str(corpus / "half.safetensors"), "--out", str(corpus / "out")),
        ("lut", "show", str(corpus / "half.lut")),
        ("arch", "show", str(corpus / "huge.json")),
        ("arch", "show", str(corpus / "nan.json")),
        ("space", "show", str(corpus / "alias.yaml")),
        ("space", "show", str(corpus / "deep.yaml")),
        ("bench", str(corpus / "m.tflite"), "--device", "tflite-cpu:threads=1"),
        ("bench", str(corpus / "m.tflite"), "--device", "tflite-cpu:threads=0"),
        ("search", "--space", "tiny", "--budget-mflops", "inf", "--out", str(corpus / "run")),
        ("search", "--space", "tiny", "--budget-mflops", "1", "--data", str(corpus / "nan.npz"), "--out",
         str(corpus / "run")),
        ("export", "--weights", str(corpus), "--out", str(corpus / "out")),
    ]  # fmt: skip
    for args in cases:
        proc = run_cli(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
        assert proc.stderr.startswith("hwnas: error: "), (args, proc.stderr)
    assert set(corpus.iterdir()) == before, "a refused command wrote files"


@pytest.mark.parametrize("key", ["\n", "a\nb", "tab\there", "\x00"])
def test_an_unknown_field_with_a_control_character_is_a_one_line_error(tmp_path: Path, key: str) -> None:
    # found by test_fuzz_architecture_json: the field name went into the message raw, line break and all
    data = get_space("cifar").sample(0).to_dict()
    data[key] = 1
    f = tmp_path / "a.json"
    f.write_text(json.dumps(data))
    with pytest.raises(HwnasError) as info:
        Architecture.load(f)
    message = str(info.value)
    assert "\n" not in message and message.isprintable(), message
    assert "unknown field" in message and repr(key)[1:-1] in message
