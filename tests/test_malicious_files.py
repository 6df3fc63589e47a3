"""Crafted files that would run code if hwnas deserialized them: every command refuses them, runs
nothing and writes nothing (issue: a 76-byte pickle ran code in three commands)."""

from __future__ import annotations

import importlib.util
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.spaces import get_space

from conftest import run_cli


class _Payload:
    """Unpickling this creates the file ``marker`` (what an attacker's code would do first)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))


def _raw_pickle(marker: Path) -> bytes:
    return pickle.dumps({"format": "hwnas.child", "payload": _Payload(marker)})


def _torch_save(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"format": "hwnas.search-checkpoint", "payload": _Payload(marker)}, buf)
    return buf.getvalue()


def _npz_with_objects(marker: Path) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=np.array([_Payload(marker)], dtype=object), y=np.zeros(1, dtype=np.int64))
    return buf.getvalue()


FORMS = {"pickle": _raw_pickle, "torch.save": _torch_save}


def test_the_payloads_are_live(tmp_path: Path) -> None:
    """Each payload really creates its marker when unpickled, so the tests below mean something."""
    for i, make in enumerate(FORMS.values()):
        marker = tmp_path / f"ran-{i}"
        blob = make(marker)
        if blob[:2] == b"PK":
            torch.load(io.BytesIO(blob), weights_only=False)
        else:
            pickle.loads(blob)
        assert marker.exists()
    marker = tmp_path / "ran-npz"
    with zipfile.ZipFile(io.BytesIO(_npz_with_objects(marker))) as zf:
        np.lib.format.read_array(io.BytesIO(zf.read("x.npy")), allow_pickle=True)
    assert marker.exists()


def _refused(proc, marker: Path) -> str:  # type: ignore[no-untyped-def]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert not marker.exists(), "the crafted file ran code"
    return lines[0]


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")} if folder.exists() else set()


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("name", ["checkpoint.safetensors", "checkpoint.pt"])
def test_search_resume_and_train_init_refuse_a_crafted_checkpoint(tmp_path: Path, form: str, name: str) -> None:
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    (run / name).write_bytes(FORMS[form](marker))
    arch = tmp_path / "a.json"
    get_space("tiny").sample(1).save(arch)
    before = _files(tmp_path)
    line = _refused(run_cli("search", "--space", "tiny", "--budget-mflops", "1", "--data", "synthetic:n=200,size=24",
                            "--out", str(run), "--resume", "--no-progress"), marker)  # fmt: skip
    assert "pickle" in line and ("new run folder" in line or "start the search again" in line), line
    line = _refused(run_cli("train", "--arch", str(arch), "--init", "supernet", "--run", str(run), "--data",
                            "synthetic:n=200,size=24", "--out", str(tmp_path / "child.safetensors")), marker)  # fmt: skip
    assert "pickle" in line, line
    assert _files(tmp_path) == before, "a refused command wrote files"


@pytest.mark.parametrize("form", sorted(FORMS))
def test_export_refuses_a_crafted_child_file(tmp_path: Path, form: str) -> None:
    marker = tmp_path / "pwned"
    for name in ("child.pt", "child.safetensors"):
        weights = tmp_path / name
        weights.write_bytes(FORMS[form](marker))
        line = _refused(run_cli("export", "--weights", str(weights), "--out", str(tmp_path / "export")), marker)
        assert "never unpickles" in line and "hwnas train" in line, line
    assert not (tmp_path / "export").exists()


def test_other_readers_refuse_crafted_files(tmp_path: Path) -> None:
    """The LUT, model-file, dataset and YAML readers, given hostile content."""
    marker = tmp_path / "pwned"
    pickled = _raw_pickle(marker)
    (tmp_path / "evil.lut").write_bytes(pickled)
    assert "not a LUT file" in _refused(run_cli("lut", "show", str(tmp_path / "evil.lut")), marker)
    runtimes = [(".onnx", "ort-cpu:threads=1"), (".tflite", "tflite-cpu:threads=1")]
    runtimes += [(".pte", "et-cpu:threads=1")] if importlib.util.find_spec("executorch") else []
    for ext, spec in runtimes:
        (tmp_path / f"evil{ext}").write_bytes(pickled)
        line = _refused(run_cli("bench", str(tmp_path / f"evil{ext}"), "--device", spec), marker)
        assert "not a" in line, line
    (tmp_path / "evil.npz").write_bytes(_npz_with_objects(marker))
    line = _refused(run_cli("search", "--space", "tiny", "--budget-mflops", "1", "--data", str(tmp_path / "evil.npz"),
                            "--out", str(tmp_path / "r"), "--no-progress"), marker)  # fmt: skip
    assert "Python objects" in line, line
    (tmp_path / "evil.yaml").write_text(f"!!python/object/apply:builtins.open [{marker}, w]\n")
    assert "not valid JSON or YAML" in _refused(run_cli("space", "show", str(tmp_path / "evil.yaml")), marker)
    assert not (tmp_path / "r").exists()
