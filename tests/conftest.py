from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``hwnas`` command line in a subprocess."""
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "hwnas", *args], capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=300
    )


@pytest.fixture
def cli():
    return run_cli
