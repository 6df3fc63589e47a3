"""Every Python block of the README runs, in order, as a reader would paste them after the tour."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hwnas.devices import Stats
from hwnas.latency.store import LutStore
from hwnas.spaces import get_space

from conftest import ROOT

FP = {"kind": "tflite-cpu", "runtime": "ai-edge-litert", "runtime_version": "1.0", "threads": 1, "batch": 1,
      "cpu_model": "X", "hwnas_version": "0.1.0", "os": "Linux 1"}  # fmt: skip


def _blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_readme_has_python_blocks() -> None:
    assert len(_blocks()) >= 3


def test_every_python_block_of_the_readme_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The file the tour's `hwnas profile --space cifar --device tflite-cpu:threads=1` would write:
    # a real LUT (SQLite) holding every kernel of the space, at a FLOPs-proportional latency.
    with LutStore.create_or_open(tmp_path / "cifar-tflite.lut", FP, "tflite-cpu:threads=1") as store:
        for k in get_space("cifar").kernels():
            ms = 1e-3 + k.flops * 1e-9
            store.add(k.key, 0, Stats(ms, ms, ms, ms, 0.0, 10, 5, 0.0))
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    for i, block in enumerate(_blocks()):
        try:
            exec(compile(block, f"README python block {i + 1}", "exec"), scope)
        except Exception as exc:  # name the block that broke
            raise AssertionError(f"README python block {i + 1} failed: {exc!r}\n{block}") from exc
    printed = capsys.readouterr().out
    promised = [
        c.strip().removesuffix("...").strip() for b in _blocks() for c in re.findall(r"^print\(.*\)\s+#(.*)$", b, re.M)
    ]
    assert promised  # the README shows what some prints give ...
    for text in promised:  # ... and they give it
        assert text in printed, (text, printed)
