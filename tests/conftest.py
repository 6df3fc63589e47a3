from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``hwnas`` command line in a subprocess. The timeout only stops a hung command:
    it is no speed check, and a tiny int8 TFLite profile (one conversion per kernel) took over 300 s
    on the 2-core VM while another job ran."""
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "hwnas", *args], capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=1200
    )


@pytest.fixture
def cli():
    return run_cli


def untrained_child(arch, seed: int = 0):
    """A child of ``arch`` with random weights and trained-looking BN statistics (so a check of an
    exported file against PyTorch is not trivially small), normalized with mean 0.5, std 0.25."""
    import torch

    from hwnas.export.child_file import Child
    from hwnas.models.builder import build_model

    torch.manual_seed(seed)
    model = build_model(arch).eval()
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return Child(arch, model, [0.5] * 3, [0.25] * 3, {})


@contextlib.contextmanager
def benchmark_module(name: str) -> Iterator[ModuleType]:
    """A script of ``benchmarks/`` imported as a module, with that folder on the path while in use
    (the scripts import each other by their plain names)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT / "benchmarks"))
        yield importlib.import_module(name)


@pytest.fixture(scope="session", autouse=True)
def _kernel_cache(tmp_path_factory: pytest.TempPathFactory):
    """Converted kernel models go to a per-session cache, not the user's ~/.cache."""
    path = tmp_path_factory.mktemp("hwnas-cache")
    old = os.environ.get("HWNAS_CACHE")
    os.environ["HWNAS_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("HWNAS_CACHE", None)
    else:
        os.environ["HWNAS_CACHE"] = old


FAST_TIMING = ("--warmup-runs", "2", "--warmup-ms", "1", "--min-runs", "5", "--min-time-ms", "2")


def write_folder(root: Path, n: int = 240, size: int = 24, classes: int = 4, seed: int = 0,
                 quality: int = 90) -> Path:  # fmt: skip
    """hwnas-synthetic images as JPEG files in class folders (an ImageFolder)."""
    from PIL import Image

    from hwnas.train.data import synthetic

    images = synthetic(n=n, size=size, classes=classes, seed=seed)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = images.x[i].permute(1, 2, 0).numpy()
        Image.fromarray(arr).save(root / f"c{int(images.y[i])}" / f"{i:05d}.jpg", quality=quality)
    return root
