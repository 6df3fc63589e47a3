"""The agent runs in a fresh venv holding only its declared dependencies (agent-requirements.txt):
no torch, no rich, nothing else of hwnas's stack (issue 14, must-show 4). It builds a venv and
installs from the package registry, so it runs with the tour (``-m tour``), not in the default suite."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from agent_process import AgentProcess

from hwnas.devices import DeviceError, TimingConfig, parse_device
from hwnas.latency.kernel_models import kernel_artifacts
from hwnas.spaces import get_space

from conftest import ROOT

pytestmark = pytest.mark.tour


def _pins() -> list[str]:
    """The CI's exact versions of what agent-requirements.txt names (same wheels as the rest of the suite)."""
    wanted = {re.split(r"[<>=\s#]", line.strip())[0].lower() for line in (ROOT / "agent-requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}  # fmt: skip
    pins = [line.split("#")[0].strip() for line in (ROOT / ".ci" / "requirements.txt").read_text().splitlines()]
    return [p for p in pins if p and re.split(r"[<>=]", p)[0].lower() in wanted]


def test_the_agent_runs_in_a_venv_with_only_its_declared_dependencies(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    pins = _pins()
    assert {p.split("==")[0] for p in pins} == {"numpy", "onnxruntime"}
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(ROOT / "agent-requirements.txt"), *pins], check=True, timeout=600)
    subprocess.run([*pip, "--no-deps", str(ROOT)], check=True, timeout=600, cwd=tmp_path)
    probe = ("import sys, importlib.util; import hwnas.devices.agent.server, hwnas.devices.agent.worker; "
             "print(sorted(m for m in ('torch', 'rich', 'pandas', 'scipy', 'onnx') if importlib.util.find_spec(m) "
             "or m in sys.modules))")  # fmt: skip
    out = subprocess.run([py, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "[]", out.stdout  # none of them installed, none imported

    agent = AgentProcess(tmp_path / "agent", python=py, env={"PATH": "/usr/bin:/bin"})
    agent.start()
    try:
        kernel = sorted(set(get_space("tiny").kernels()))[0]
        [model] = kernel_artifacts([kernel], "onnx", 1, "fp32")
        device = parse_device(agent.spec(token_file=agent.token_file))
        stats = device.measure(device.load(model), TimingConfig(min_runs=5, min_time_s=0.01))
        assert stats.n >= 5 and stats.median_ms > 0
        assert device.fingerprint()["runtime"] == "onnxruntime"
        tflite = parse_device(agent.spec(token_file=agent.token_file, runtime="tflite-cpu"))
        with pytest.raises(DeviceError, match="not usable on the agent: no TFLite interpreter is installed"):
            tflite.fingerprint()
    finally:
        agent.stop()
    assert "Traceback" not in agent.log.read_text()
