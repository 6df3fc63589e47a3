"""The GPU search script (benchmarks/gpu_stream_search.py) runs end to end at a tiny size on the CPU
and reports figures consistent with the search it ran."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hwnas.spaces.arch import Architecture

from conftest import ROOT


@pytest.mark.tour  # 13 s on the 2-core VM: in the tour, to keep the default suite under 15 minutes
def test_the_gpu_stream_search_script_runs_on_a_cpu_at_a_tiny_size(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_stream_search.py"), "--out", str(tmp_path),
                           "--device", "cpu", "--space", "tiny", "--images", "64", "--size", "32", "--batch-size", "8",
                           "--precision", "fp32", "--workers", "1"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "gpu_stream_search.json").read_text())
    search = json.loads((tmp_path / "run" / "search.json").read_text())
    # 64 images: 6 validation, 12 for the alphas, 46 for the weights -> 5 steps of 8 per epoch, 2 epochs
    assert report["weight_steps"] == 10 and report["arch_steps"] == 5  # the first epoch trains weights only
    assert 0 < report["data_wait_share"] < 1 and report["images_per_s"] > 0
    assert report["images_per_s"] == search["compute_time"]["images_per_s"]
    assert report["peak_gpu_memory_gib"] is None and report["device"] == "cpu"
    assert Architecture.from_str(report["arch"], 10).to_str() == search["arch"]
    assert len(list((tmp_path / "images-64-32").glob("class*/*.jpg"))) == 64


@pytest.mark.tour  # two searches under torchrun and a spawned DDP pair: about a minute on 2 cores
def test_the_ddp_throughput_script_runs_on_a_cpu_at_a_tiny_size(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ddp_throughput.py"), "--out", str(tmp_path),
                           "--space", "tiny", "--size", "24", "--images", "256", "--batch-size", "32", "--rounds", "1",
                           "--unused-rounds", "1", "--unused-steps", "2"],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "ddp_throughput.json").read_text())
    one, two = report["images_per_s"]["1"][0], report["images_per_s"]["2"][0]
    assert one > 0 and two > 0 and report["speedup"] == two / one
    unused = report["find_unused_parameters"]
    assert unused["steps_each"] == 2 and unused["ratio_on_over_off"] == (
        unused["step_ms_find_unused_on"] / unused["step_ms_find_unused_off"])  # fmt: skip
