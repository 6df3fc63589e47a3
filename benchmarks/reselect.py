"""Select again from a finished protocol run's trained supernets, with other selection settings.

    python benchmarks/reselect.py --protocol runs/protocol-tied --set selection_resolution=distribution \
        --out runs/reselect-tied.json

Selection settings (``selection_resolution``, ``evolution``) act only after the last epoch, so
selecting again from a search's final checkpoint gives what a search run with those settings from
the start would have selected: the weights and the choice probabilities are the same. For every
``search-seed*`` folder of ``--protocol`` this loads the checkpoint, applies ``--set``, runs the
selection, and writes the candidates (with their supernet accuracies) and the selected network
per seed to ``--out``; the original folders are not written. Retrain the selected networks with
``retrain_probe.py --seed S`` (S: the search seed, as the protocol retrains them) to set them beside
that run's arms.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ranking_ablation import _parse_set
from search_protocol import search_folders

from hwnas.core.errors import HwnasError
from hwnas.core.fileio import write_text_atomic
from hwnas.search.loop import Search, SearchConfig

SELECTION_FIELDS = ("selection_resolution", "evolution")  # the settings that act only at selection


def reselect(folder: Path, changes: dict[str, object]) -> dict[str, object]:
    """The selection a finished search in ``folder`` makes with ``changes`` to its selection settings."""
    saved = json.loads((folder / "config.json").read_text())
    search = Search(SearchConfig.from_saved(saved), folder, resume=True, progress=False)
    if search.epoch < search.cfg.epochs:
        raise HwnasError(
            f"{folder}: the search stopped at epoch {search.epoch} of {search.cfg.epochs}; finish it first"
        )
    for key, value in changes.items():
        setattr(search.cfg, key, value)
    search.cfg.check()
    d = search._select(search.cfg.budget)
    return {"arch": d.arch.to_str(), "cost": d.cost, "candidates": search.candidates}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", required=True, help="a search_protocol.py workdir whose searches have ended")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help=f"a selection setting: {', '.join(SELECTION_FIELDS)}")  # fmt: skip
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    changes = dict(_parse_set(item) for item in args.set)
    other = sorted(set(changes) - set(SELECTION_FIELDS))
    if other:
        raise SystemExit(f"reselect.py: --set {', '.join(other)}: not a selection setting (it acts during "
                         "training); re-run the searches with ranking_ablation.py --set")  # fmt: skip
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results["set"] = changes
    folders = search_folders(Path(args.protocol))
    if not folders:
        raise SystemExit(f"reselect.py: no search-seed* folders in {args.protocol}")
    for folder in folders:
        seed = folder.name.removeprefix("search-seed")
        if results.get("seeds", {}).get(seed, {}).get("set") == changes:
            continue  # resumable: this seed is done with these settings
        got = reselect(folder, changes)
        results.setdefault("seeds", {})[seed] = {"set": changes, **got}
        write_text_atomic(out, json.dumps(results, indent=2) + "\n")
        print(f"seed {seed}: {got['arch']} ({got['cost']:.4g})", flush=True)


if __name__ == "__main__":
    main()
