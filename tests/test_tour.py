"""The README's tour, command by command, as a new user runs it: every command exits 0.

The commands are read from the README's "A short tour" block, so the test follows the README.
What a user would bring is made here: ``cifar10.npz`` (300 random 32x32 RGB images with labels,
the ``x``/``y`` layout the README describes), an image folder ``my-images/`` with three named
classes, and a ``model.onnx`` for ``hwnas bench``. Sizes shrink so the tour takes minutes: fewer
validation samples, one epoch, quick timing; the search budget is set to the middle of the range
the tour's own LUT measured (the README's 0.2 ms is a figure of one machine), and the export's
budget is generous (the README implies it passes). Marked ``tour``: CI runs it after the default
suite (``.ci/run``); locally ``python -m pytest -m tour``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import FAST_TIMING, ROOT, run_cli

pytestmark = pytest.mark.tour


def tour_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## A short tour", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block is not None, "the README's tour has no bash block"
    joined = block.group(1).replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        line = line.split("  #", 1)[0].strip()
        if line:
            commands.append(shlex.split(line))
    return commands


def _shrink(argv: list[str], budget_ms: float | None) -> list[str]:
    """The same command at a size that runs in seconds."""
    out = list(argv)
    swaps = {"--samples": "16", "--limit": "300", "--epochs": "1"}
    for i, a in enumerate(out[:-1]):
        if a in swaps:
            out[i + 1] = swaps[a]
    verb = out[1] if len(out) > 1 else ""
    if verb in ("profile", "bench") or out[1:3] == ["lut", "validate"]:
        out += FAST_TIMING
    if verb == "search":
        out += [] if "--epochs" in out else ["--epochs", "1"]
        if "--budget-ms" in out and budget_ms is not None:
            out[out.index("--budget-ms") + 1] = f"{budget_ms:.4f}"
    if verb == "export":
        out[out.index("--budget-ms") + 1] = "1000"
        out += ["--calibration-images", "20", "--check-images", "50"]
    return out


def _user_files(folder: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(folder / "cifar10.npz", x=rng.integers(0, 256, (300, 32, 32, 3), dtype=np.uint8),
             y=np.arange(300) % 10)  # fmt: skip
    for name in ("cat", "dog", "bird"):
        (folder / "my-images" / name).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(
                folder / "my-images" / name / f"{i}.png"
            )
    from hwnas.latency.kernel_models import onnx_artifacts
    from hwnas.spaces.kernels import Kernel

    (folder / "model.onnx").write_bytes(onnx_artifacts([Kernel("conv", 8, 16, 3, 1, 16, 16, "relu")])[0])


def test_the_readme_tour_runs_command_by_command(tmp_path: Path) -> None:
    commands = tour_commands()
    assert [c[0] for c in commands] == ["hwnas"] * len(commands) and len(commands) >= 15
    _user_files(tmp_path)
    budget = None
    for argv in commands:
        if argv[1] == "search" and "--budget-ms" in argv and budget is None:
            from hwnas.search.cost import make_cost
            from hwnas.spaces import get_space

            lut = argv[argv.index("--lut") + 1]
            space = get_space("cifar")
            cost = make_cost("latency", space, str(tmp_path / lut))
            budget = (cost.smallest(space)[1] + cost.largest(space)[1]) / 2
        redirect = None
        if ">" in argv:  # `hwnas space show fbnetv2 --yaml > my-space.yaml`
            redirect = tmp_path / argv[argv.index(">") + 1]
            argv = argv[: argv.index(">")]
        cmd = _shrink(argv, budget)
        proc = run_cli(*cmd[1:], cwd=tmp_path)
        assert proc.returncode == 0, f"{shlex.join(cmd)}\n{proc.stderr[-3000:]}"
        if redirect is not None:
            redirect.write_text(proc.stdout)
    # what the tour promises to leave behind
    for name in ("my-space.yaml", "a.json", "cifar-tflite.lut", "cifar.csv", "run/arch.json", "run/child.safetensors",
                 "run-flops/arch.json"):  # fmt: skip
        assert (tmp_path / name).exists(), name
    exported = sorted(p.name for p in (tmp_path / "export").iterdir())
    for suffix in ("-fp32.onnx", "-fp32.tflite", "-fp16.tflite", "-int8.onnx", "-int8.tflite"):
        assert any(n.endswith(suffix) for n in exported) and any(n.endswith(suffix + ".json") for n in exported), suffix
