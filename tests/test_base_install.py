"""The base install (``pip install hwnas``, no extras) exports and times ONNX, and every route it
lacks is refused in one line naming the extra to install (issue 38, must-show 4). It builds a
fresh venv from the package registry with CI's pins as constraints, so it runs with the tour."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hwnas.spaces import get_space

from conftest import ROOT

pytestmark = pytest.mark.tour


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return proc.stderr


def test_the_base_install_exports_onnx_and_names_the_extra_for_every_other_route(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c",
                    str(ROOT / ".ci" / "requirements.txt"), str(ROOT)], check=True, timeout=1500, cwd=tmp_path)  # fmt: skip
    probe = ("import importlib.util; print(sorted(m for m in ('ai_edge_litert', 'litert_torch', 'executorch', "
             "'coremltools', 'jax', 'transformers') if importlib.util.find_spec(m)))")  # fmt: skip
    out = subprocess.run([py, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "[]", out.stdout  # no route beyond ONNX, nothing they pull in

    env = {**os.environ, "COLUMNS": "200", "HWNAS_CACHE": str(tmp_path / "cache")}

    def hwnas(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([py, "-m", "hwnas", *args], capture_output=True, text=True, cwd=tmp_path, env=env,
                              timeout=1200)  # fmt: skip

    arch = tmp_path / "arch.json"
    get_space("tiny").sample(3).save(arch)
    child = tmp_path / "child.safetensors"
    trained = hwnas("train", "--arch", str(arch), "--data", "synthetic:n=64,size=24", "--epochs", "1", "--out",
                    str(child), "--no-progress")  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    onnx = hwnas("export", "--weights", str(child), "--format", "onnx", "--out", str(tmp_path / "o"), "--name", "m",
                 "--device", "ort-cpu:threads=1", "--no-progress")  # fmt: skip
    assert onnx.returncode == 0, onnx.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["m-fp32.onnx", "m-fp32.onnx.json"]

    for fmt, extra in (("tflite", "tflite"), ("pte", "executorch"), ("mlpackage", "coreml")):
        err = _one_line(hwnas("export", "--weights", str(child), "--format", f"onnx,{fmt}", "--out",
                              str(tmp_path / fmt)))  # fmt: skip
        assert f"--format {fmt} needs the {extra!r} extra" in err and f"pip install 'hwnas[{extra}]'" in err, err
        assert not (tmp_path / fmt).exists()  # refused before anything was converted or written
    for device, extra in (("tflite-cpu:threads=1", "tflite"), ("et-cpu:threads=1", "executorch")):
        err = _one_line(hwnas("profile", "--space", "tiny", "--device", device, "--out", str(tmp_path / "x.lut")))
        assert "is not usable here" in err and f"pip install 'hwnas[{extra}]'" in err, err
        assert not (tmp_path / "x.lut").exists()
