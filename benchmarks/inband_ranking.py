"""How a finished protocol run's supernets rank the networks retrained inside its band.

    python benchmarks/inband_ranking.py --protocol runs/protocol-tied --probe runs/reselect-tied-0.json \
        --probe runs/reselect-tied-1.json --probe runs/reselect-tied-2.json --out runs/inband-tied.json

The protocol's Kendall tau spreads its networks over the whole cost range, where size alone orders
most pairs. Selection compares networks inside [0.9 B, B]. This takes every network of the run's
in-band arms (searched, null derivation, MobileNetV2-style, random in band) and of each ``--probe``
(a probe file: the JSON the removed ``retrain_probe.py`` wrote, see docs/notebook/README.md, e.g. the reselected networks), its standalone test accuracy (the
mean over its retrainings), and its accuracy through each ``search-seed*`` supernet (BatchNorm
re-estimated for it, on the selection images, as the protocol scores its ranking), and reports
Kendall tau per supernet. It also counts each network's SE blocks, the structure the sixth run's
post-hoc lead was about.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from protocol.arms import null_derivation, search_folders
from protocol.jobs import supernet_scores_job
from protocol.stats import kendall_tau

from hwnas.core.fileio import write_text_atomic
from hwnas.spaces.arch import Architecture
from hwnas.spaces.ops import parse_op
from hwnas.spaces.space import get_space


def se_blocks(arch: Architecture) -> int:
    return sum(1 for b in arch.blocks if parse_op(b.op).gate != "")


def in_band_networks(work: Path, probes: list[Path]) -> list[dict[str, Any]]:
    """The in-band networks of the run in ``work`` and of ``probes``: name, architecture string and
    standalone accuracy (mean over every retraining of it that the files hold)."""
    results = json.loads((work / "results.json").read_text())
    folders = search_folders(work)
    config = json.loads((folders[0] / "config.json").read_text())
    space = get_space(config["space"])
    accs: dict[str, list[float]] = {}
    for key, row in results["retrained"].items():
        accs.setdefault(key.rsplit("|", 1)[0], []).append(float(row["test"]))
    named: list[tuple[str, str]] = [
        (f"searched {f.name.removeprefix('search-')}", Architecture.load(f / "arch.json").to_str()) for f in folders
    ]
    named.append(("null derivation", null_derivation(folders[0], space).to_str()))
    if results["drawn"].get("mbv2"):
        named.append(("MobileNetV2-style", results["drawn"]["mbv2"]))
    named += [(f"random {i}", a) for i, a in enumerate(results["drawn"]["random"])]
    for probe in probes:
        for a, row in json.loads(probe.read_text()).items():
            accs.setdefault(a, []).append(float(row["test"]))
            named.append((f"{probe.stem}: {row.get('label', '')}", a))
    out, seen = [], set()
    for name, a in named:
        if a in seen or a not in accs:
            continue  # one row per network; a network never retrained has no standalone side
        seen.add(a)
        arch = Architecture.from_str(a, space.num_classes, space.in_channels)
        out.append({"name": name, "arch": a, "standalone": statistics.fmean(accs[a]), "se_blocks": se_blocks(arch)})
    return out


def _show(tau: float | None) -> str:
    return "undefined" if tau is None else f"{tau:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", required=True, help="a search_protocol.py workdir whose searches have ended")
    ap.add_argument(
        "--probe",
        action="append",
        default=[],
        help="a probe file (networks retrained once more, as the removed retrain_probe.py wrote) to add",
    )
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    work = Path(args.protocol)
    rows = in_band_networks(work, [Path(p) for p in args.probe])
    alone = [r["standalone"] for r in rows]
    se = [r["se_blocks"] for r in rows]
    summary: dict[str, Any] = {"tau_se_standalone": kendall_tau(se, alone)}
    for folder in search_folders(work):
        scores = supernet_scores_job(str(folder), [r["arch"] for r in rows])
        for r in rows:
            r[folder.name] = scores[r["arch"]]
        via = [r[folder.name] for r in rows]
        summary[folder.name] = {
            "tau": kendall_tau(via, alone),
            "tau_se_supernet": kendall_tau(se, via),
        }
        print(f"{folder.name}: in-band Kendall tau {_show(summary[folder.name]['tau'])} over {len(rows)} networks",
              flush=True)  # fmt: skip
    write_text_atomic(
        Path(args.out), json.dumps({"summary": summary, "networks": rows}, indent=1, allow_nan=False) + "\n"
    )
    print(f"SE blocks against standalone accuracy: tau {_show(summary['tau_se_standalone'])}")


if __name__ == "__main__":
    main()
