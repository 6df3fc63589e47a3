"""benchmarks/search_protocol.py end to end at a tiny size, on a search space given as a file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from hwnas.nas.spaces.arch import Architecture
from hwnas.nas.spaces.presets import TINY
from hwnas.nas.spaces.space import get_space

ROOT = Path(__file__).resolve().parents[1]


def test_a_space_file_reaches_the_searches_and_the_retrainings(tmp_path: Path) -> None:
    # a name no registry knows: the searches and the retraining workers must load the file itself
    spec = tmp_path / "tiny-file.yaml"
    spec.write_text(yaml.safe_dump({**TINY, "name": "tiny-from-a-file", "resolutions": [16]}))
    work = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "search_protocol.py"), "--space", str(spec),
         "--data", "synthetic:n=300,size=24", "--limit", "300", "--search-epochs", "1", "--retrain-epochs", "1",
         "--random", "2", "--tau-archs", "4", "--search-seeds", "0", "--retrain-seeds", "0", "1", "--jobs", "2",
         "--cost", "flops", "--device", "", "--workdir", str(work)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((work / "search-seed0" / "config.json").read_text())["space"] == str(spec)
    space = get_space(spec)
    searched = Architecture.load(work / "search-seed0" / "arch.json")
    assert space.contains(searched) and searched.resolution == 16  # the file's single resolution, not TINY's two
    results = json.loads((work / "results.json").read_text())
    assert {k.split("|")[0] for k in results["retrained"]} >= {searched.to_str()}
