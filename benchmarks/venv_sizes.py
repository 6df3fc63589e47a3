"""Disk size of a fresh venv for the base install and for each extra (issue 38).

Usage:
    python benchmarks/venv_sizes.py [--variants base,tflite,executorch,coreml,all] [--out sizes.json]

For each variant, makes a new venv in a temporary folder, installs this checkout without the
editable mode (``pip install '<repo>[extra]'``) with CI's exact versions as constraints
(``-c .ci/requirements.txt``), and measures the venv folder (the bytes of its files, as ``du -sb``
counts them), with the largest installed distributions. Prints a markdown table for BENCHMARKS.md.
It installs from the package registry (and pip's cache), so it takes minutes per variant.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("base", "tflite", "executorch", "coreml", "all")


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def largest(site: Path, n: int = 5) -> list[tuple[str, int]]:
    """The ``n`` largest top-level folders of site-packages (a distribution's code and data)."""
    sizes = [(p.name, folder_bytes(p)) for p in site.iterdir() if p.is_dir() and not p.name.endswith(".dist-info")]
    return sorted(sizes, key=lambda t: -t[1])[:n]


def measure(variant: str, tmp: Path) -> dict[str, Any]:
    venv = tmp / variant
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    target = str(ROOT) if variant == "base" else f"{ROOT}[{variant}]"
    t0 = time.perf_counter()
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "-c", str(ROOT / ".ci" / "requirements.txt"), target], check=True, cwd=tmp)  # fmt: skip
    seconds = time.perf_counter() - t0
    [site] = list((venv / "lib").glob("python*/site-packages"))
    return {"variant": variant, "bytes": folder_bytes(venv), "install_s": round(seconds, 1),
            "largest": largest(site)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants.split(","):
            rows.append(measure(variant, Path(tmp)))
            print(f"{variant}: {rows[-1]['bytes'] / 2**20:.0f} MiB", file=sys.stderr, flush=True)
    base = next((r["bytes"] for r in rows if r["variant"] == "base"), None)
    print(f"venv sizes, {datetime.now():%Y-%m-%d}, Python {sys.version.split()[0]}, pins of .ci/requirements.txt\n")
    print("| install | venv MiB | over the base, MiB | largest packages (MiB) |")
    print("|---|---:|---:|---|")
    for r in rows:
        name = "`pip install hwnas`" if r["variant"] == "base" else f"`pip install 'hwnas[{r['variant']}]'`"
        extra = "-" if base is None or r["variant"] == "base" else f"{(r['bytes'] - base) / 2**20:.0f}"
        big = ", ".join(f"{n} {b / 2**20:.0f}" for n, b in r["largest"])
        print(f"| {name} | {r['bytes'] / 2**20:.0f} | {extra} | {big} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
