"""The layering contracts (pyproject.toml, ``lint-imports`` in CI) catch what they promise: in a copy of
the package, an import planted upwards, torch planted in the data layer, or a cycle planted inside a
package makes ``lint-imports`` report the contract it breaks, and the unplanted copy keeps them all."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(tmp_path: Path, plant: tuple[str, str] | None) -> str:
    shutil.copytree(ROOT / "hwnas", tmp_path / "hwnas", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    if plant is not None:
        module, line = plant
        with (tmp_path / "hwnas" / module).open("a") as f:
            f.write(f"\n{line}  # noqa\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True)
    return proc.stdout + proc.stderr


@pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (pip install -e '.[dev]')")
@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("spaces/ops.py", "import torch", "spaces are data: no torch BROKEN"),
        ("devices/host.py", "import hwnas.search.loop", "packages are the layers: each imports only those below it BROKEN"),
        ("latency/table.py", "import hwnas.train.data", "packages are the layers: each imports only those below it BROKEN"),
        ("devices/base.py", "import hwnas.devices.adb", "no import cycle between the modules or sub-packages of any package BROKEN"),
    ],
)  # fmt: skip
def test_a_planted_import_breaks_its_contract(tmp_path: Path, module: str, line: str, broken: str) -> None:
    out = _lint(tmp_path, (module, line))
    assert broken in out, out[-2000:]


@pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (pip install -e '.[dev]')")
def test_the_copy_without_a_plant_keeps_every_contract(tmp_path: Path) -> None:
    out = _lint(tmp_path, None)
    assert "4 kept, 0 broken" in out, out[-2000:]
