"""Has a calibrated LUT drifted? Re-time a validation's held-out networks now, per resolution.

    python benchmarks/validation_retime.py VALIDATION.csv --device ort-cpu:threads=1 [--rounds 3]

VALIDATION.csv: the ``validation.csv`` that ``hwnas lut validate --fit`` wrote (its ``score`` rows
were never seen by the calibration). Each held-out network is converted and timed alone again,
as ``hwnas lut validate`` timed them (:func:`hwnas.latency.network_timing.measure_networks`,
``--rounds`` shuffled rounds each counted by its fastest run, into a throwaway store), and the
calibrated prediction stored in the file is compared with the measurement of then and of now, per
input resolution, beside the noise floor of this re-timing (how well each network's own rounds
agree). Drift shows as "now vs then" moving away from 0 for every resolution; error that
the calibration makes where a search looks, but not on networks spread over the space, shows as
"now" staying where "then" was. Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
from pathlib import Path

from hwnas.devices import open_device
from hwnas.latency.network_timing import measure_networks
from hwnas.latency.store import LutStore, device_id
from hwnas.latency.validate import noise_floor
from hwnas.spaces.arch import Architecture


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("validation", type=Path)
    ap.add_argument("--device", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--num-classes", type=int, default=10)
    args = ap.parse_args()
    rows = [r for r in csv.DictReader(args.validation.open()) if r["role"] == "score"]
    archs = [Architecture.from_str(r["arch"], num_classes=args.num_classes) for r in rows]
    device = open_device(args.device)
    with (
        tempfile.TemporaryDirectory() as tmp,
        LutStore.create_or_open(Path(tmp) / "networks.lut", device.fingerprint(), device.spec) as store,
    ):
        measured = measure_networks(archs, device, store, rounds=args.rounds)
        per_arch: dict[str, list[float]] = {}
        for arch_str, _, ms in store.model_rows(device_id(device.fingerprint())):
            per_arch.setdefault(arch_str, []).append(ms)
    now = [measured[a.to_str()] for a in archs]
    print(
        "| resolution | networks | calibrated error then (mean) | calibrated error now (mean) | measured now vs then (median) |"
    )
    print("|---|---|---|---|---|")
    for res in sorted({r["resolution"] for r in rows}, key=int):
        idx = [i for i, r in enumerate(rows) if r["resolution"] == res]
        then = [float(rows[i]["calibrated_ms"]) / float(rows[i]["measured_ms"]) - 1 for i in idx]
        err_now = [float(rows[i]["calibrated_ms"]) / now[i] - 1 for i in idx]
        moved = [now[i] / float(rows[i]["measured_ms"]) - 1 for i in idx]
        print(f"| {res} px | {len(idx)} | {statistics.fmean(then):+.1%} | {statistics.fmean(err_now):+.1%} | "
              f"{statistics.median(moved):+.1%} |")  # fmt: skip
    nf = noise_floor(per_arch)
    print(f"noise floor of this re-timing: {nf['within_5']:.1%} of single rounds within +-5% of their network's "
          f"median, median spread across rounds {nf['median_spread']:.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
