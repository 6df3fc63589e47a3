"""A default run of profile, lut validate and export prints hwnas's own lines only: no converter or
runtime chatter (absl/TensorFlow C++ logs, torchao load failures, XNNPACK notices, Python
warnings, ONNX Runtime's int8 calibration prints)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hwnas.spaces import get_space

from conftest import FAST_TIMING, run_cli

pytestmark = pytest.mark.tour  # minutes of conversions; CI runs it after the default suite

# what each of those libraries printed before hwnas silenced them
NOISE = re.compile(
    r"Warning|WARNING|^[IWE]\d{4} |INFO:|absl|oneDNN|Failed to load|XNNPACK|Collecting tensor data|histogram"
    r"|flatbuffer_export|Traceback",
    re.MULTILINE,
)


def _own_lines_only(proc, what: str) -> None:
    assert proc.returncode == 0, f"{what}: {proc.stderr[-2000:]}"
    for stream, text in (("stderr", proc.stderr), ("stdout", proc.stdout)):
        found = NOISE.search(text)
        assert found is None, f"{what} {stream}: {text[max(0, found.start() - 200) : found.end() + 200]!r}"
    for line in proc.stderr.splitlines():  # hwnas's own notes and warnings, one line each
        assert line.startswith("hwnas: "), f"{what} stderr: {line!r}"


def test_profile_validate_and_export_print_no_third_party_noise(tmp_path: Path) -> None:
    lut = tmp_path / "t.lut"
    _own_lines_only(run_cli("profile", "--space", "tiny", "--device", "tflite-cpu", "--out", str(lut), "--rounds", "1",
                            *FAST_TIMING), "profile")  # fmt: skip
    _own_lines_only(run_cli("lut", "validate", str(lut), "--space", "tiny", "--device", "tflite-cpu", "--samples", "4",
                            "--rounds", "1", "--out", str(tmp_path / "v"), *FAST_TIMING), "lut validate")  # fmt: skip
    arch = tmp_path / "a.json"
    get_space("tiny").sample(3).save(arch)
    child = tmp_path / "c.safetensors"
    proc = run_cli("train", "--arch", str(arch), "--data", "synthetic:n=200,size=24", "--epochs", "1", "--out",
                   str(child), "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    _own_lines_only(run_cli("export", "--weights", str(child), "--format", "onnx,tflite", "--int8", "--data",
                            "synthetic:n=200,size=24", "--calibration-images", "10", "--check-images", "20",
                            "--out", str(tmp_path / "e"), "--device", "tflite-cpu", "--lut", str(lut)), "export")  # fmt: skip
