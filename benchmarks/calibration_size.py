"""How many measured networks does a device's calibration need? Refits from stored measurements.

    python benchmarks/calibration_size.py WORKDIR [WORKDIR ...] [--subsets 20] [--sizes 8 10 15 20 30 40 50]

WORKDIR: a work folder of ``benchmarks/lut_accuracy.py`` (the LUT and its ``*-validation/validation.csv``,
whose networks were measured end to end: half fitted the calibration, half were scored). For each
size ``n``, ``--subsets`` random draws of ``n`` networks from the fitting half are each fitted as
``hwnas lut validate --fit`` fits (:func:`hwnas.latency.predictor.fit_calibration`, model chosen by
leave-one-out error) and scored on the same held-out half. Nothing is timed: the figures come from
the measurements the accuracy run stored, so this runs beside anything. Prints a markdown table:
the median and the worst draw of each size.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
from pathlib import Path

import pandas as pd

from hwnas.latency.predictor import MIN_FIT, LatencyPredictor, fit_calibration
from hwnas.latency.table import LatencyTable
from hwnas.latency.validate import scores
from hwnas.spaces import get_space
from hwnas.spaces.arch import Architecture


def _score(table: LatencyTable, fit: pd.DataFrame, held: pd.DataFrame, space_name: str) -> tuple[float, float, float]:
    space = get_space(space_name)

    def archs(rows: pd.DataFrame) -> list[Architecture]:
        return [Architecture.from_str(s, space.num_classes, space.in_channels) for s in rows["arch"]]

    cal = fit_calibration(table, archs(fit), list(fit["measured_ms"]), table.fingerprint)
    predictor = LatencyPredictor(table, cal)
    got = scores([predictor.predict(a) for a in archs(held)], held["measured_ms"].to_numpy())  # as validate scores
    return got["within_10"], got["within_5"], got["kendall_tau"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workdirs", nargs="+")
    ap.add_argument("--subsets", type=int, default=20)
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 10, 15, 20, 30, 40, 50])
    args = ap.parse_args()
    print("| space | device | fitting networks | draws | within +-10%: median (worst) | within +-5%: median (worst) "
          "| Kendall tau: median (worst) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for work in map(Path, args.workdirs):
        [lut] = work.glob("*.lut")
        [csv] = work.glob("*-validation/validation.csv")
        rows = pd.read_csv(csv)
        fit_pool, held = rows[rows["role"] == "fit"], rows[rows["role"] == "score"]
        with tempfile.TemporaryDirectory() as tmp:  # the table is opened from a copy: nothing is written
            copy = Path(tmp) / lut.name
            shutil.copy(lut, copy)
            table = LatencyTable.load(copy)
            space_name = lut.name.split("-", 1)[0]
            device = table.fingerprint.get("kind", "?") + (
                f":{table.fingerprint['precision']}" if table.fingerprint.get("precision", "fp32") != "fp32" else ""
            )
            for n in [s for s in args.sizes if MIN_FIT <= s <= len(fit_pool)]:
                draws = 1 if n == len(fit_pool) else args.subsets
                rng = random.Random(n)
                scores = [_score(table, fit_pool.iloc[sorted(rng.sample(range(len(fit_pool)), n))], held, space_name)
                          for _ in range(draws)]  # fmt: skip
                cells = []
                for i, fmt in enumerate(("{:.0%}", "{:.0%}", "{:.3f}")):
                    values = [s[i] for s in scores]
                    cells.append(f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))})")
                print(f"| {space_name} | {device} | {n} | {draws} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
