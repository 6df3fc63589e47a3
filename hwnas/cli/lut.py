"""`hwnas lut show | validate | export`: inspect, score and calibrate, and export LUT files."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from rich.table import Table

from hwnas.cli.common import (
    add_timing_args,
    console,
    share,
    timing,
    warn_if_busy,
    with_precision,
)
from hwnas.core.errors import HwnasError
from hwnas.core.formats import PRECISIONS
from hwnas.core.options import nonnegative_int, positive_int
from hwnas.latency.calibration_models import AUTO, MODELS
from hwnas.latency.stability import DRIFT_KERNELS, DRIFT_LIMIT
from hwnas.latency.statistic import DEFAULT_STATISTIC, STATISTICS

if TYPE_CHECKING:
    pass


CALIBRATION_MODELS = (AUTO, *MODELS)  # what --model offers


def count_or_all(text: str) -> int | None:
    """A count >= 0, or ``all`` (None)."""
    return None if text.strip().lower() == "all" else nonnegative_int(text)


def cmd_lut_show(args: argparse.Namespace) -> None:
    from hwnas.latency.table import LatencyTable

    table = LatencyTable.load(args.file)
    df = table.df
    fp = table.fingerprint
    console.print(f"[bold]{args.file}[/bold]: {len(df)} kernels, {len(table.measurements)} measurements")
    console.print(f"device: {table.meta.get('device')}")
    console.print("fingerprint: " + ", ".join(f"{k}={v}" for k, v in sorted(fp.items())), soft_wrap=True)
    if df.empty:
        return
    console.print(
        "per-round statistic: the fastest run of each round (median over rounds)"
        if table.statistic == "min"
        else "per-round statistic: the median run of each round (median over rounds): a LUT from before hwnas "
        "stored each round's fastest run, which holds better on a busy machine; re-profile into a new file for it"
    )
    console.print(
        f"total of all kernels {df['latency_ms'].sum():.3f} ms; median kernel {df['latency_ms'].median() * 1e3:.1f} us; "
        f"median spread across rounds {df['round_spread'].median() * 100:.1f}%"
    )
    by_op = df.groupby("op")["latency_ms"].agg(["count", "sum", "median"])
    t = Table("op", "kernels", "sum (ms)", "median (us)", title="by kernel type")
    for op, row in by_op.iterrows():
        t.add_row(str(op), str(int(row["count"])), f"{row['sum']:.3f}", f"{row['median'] * 1e3:.1f}")
    console.print(t)
    t = Table("key", "latency (ms)", "p10", "p90", "rounds", "MFLOPs", title=f"slowest {args.top} kernels")
    for _, row in df.nlargest(args.top, "latency_ms").iterrows():
        t.add_row(row["key"], f"{row['latency_ms']:.4f}", f"{row['p10_ms']:.4f}", f"{row['p90_ms']:.4f}",
                  str(row["rounds"]), f"{row['flops'] / 1e6:.3f}")  # fmt: skip
    console.print(t)
    _print_noise(table, args.top)
    _print_calibration(table)
    from hwnas.latency.stability import lut_warnings

    for line in lut_warnings(table.meta, str(args.file)):
        print(f"hwnas: warning: {line}", file=sys.stderr)
    if args.compare:
        _print_comparison(table, LatencyTable.load(args.compare))


def _print_comparison(table: Any, other: Any) -> None:
    """Kernel types this LUT predicts slower than ``other`` (e.g. int8 against fp32), with a warning."""
    cmp = table.compare(other)
    if cmp.empty:
        raise HwnasError(f"{table.path} and {other.path} hold no kernel in common; compare LUTs of the same space")
    p_this, p_other = table.fingerprint.get("precision", "?"), other.fingerprint.get("precision", "?")
    t = Table("op", "kernels", f"this ({p_this}) ms", f"other ({p_other}) ms", "ratio", "kernels slower here",
              title=f"against {other.path}")  # fmt: skip
    for _, row in cmp.iterrows():
        t.add_row(str(row["op"]), str(int(row["kernels"])), f"{row['this_ms']:.3f}", f"{row['other_ms']:.3f}",
                  f"{row['ratio']:.2f}", str(int(row["slower"])))  # fmt: skip
    console.print(t)
    for _, row in cmp[cmp["ratio"] > 1].iterrows():
        print(f"hwnas: warning: {row['op']} kernels are predicted slower in {table.path.name} ({p_this}) than in "
              f"{other.path.name} ({p_other}): {row['ratio']:.2f}x over {int(row['kernels'])} kernels; a network "
              f"rich in them may gain nothing from {p_this}", file=sys.stderr)  # fmt: skip


def _print_noise(table: Any, top: int) -> None:
    """How noisy the LUT's measurements were: spread across rounds, worst kernels, conditions."""
    from hwnas.latency.store import LutStore

    df = table.df
    spread = df["round_spread"]
    console.print(f"noise: spread across rounds (max - min) / median: median {spread.median():.1%}, "
                  f"90th percentile {spread.quantile(0.9):.1%}, worst {spread.max():.1%}; "
                  f"{(spread > 0.10).mean():.0%} of kernels spread over 10%")  # fmt: skip
    with LutStore.open(table.path) as store:
        cond = store.conditions("kernel")
    if cond:
        retaken = sum(1 for c in cond if c["attempts"] > 1)
        still = sum(1 for c in cond if c["disturbed"])
        others = [c["others_cores"] for c in cond if c["others_cores"] is not None]
        busy = (
            f"; other processes used {max(others):.1f} cores at most, {sorted(others)[len(others) // 2]:.2f} median"
            if others
            else ""
        )
        console.print(f"conditions of {len(cond)} measurements: {retaken} re-taken because other processes competed "
                      f"for the CPU, {still} kept although disturbed{busy}")  # fmt: skip
    else:
        console.print("conditions: not recorded (a LUT profiled before hwnas recorded them)")
    t = Table("key", "latency (ms)", "spread", "rounds (ms)", title=f"noisiest {top} kernels")
    per_round = table.measurements.groupby("key")[table.round_column].apply(list)
    for _, row in df.nlargest(top, "round_spread").iterrows():
        t.add_row(row["key"], f"{row['latency_ms']:.4f}", f"{row['round_spread']:.1%}",
                  ", ".join(f"{v:.4f}" for v in per_round[row["key"]]))  # fmt: skip
    console.print(t)


def _print_calibration(table: object) -> None:
    from hwnas.latency.predictor import read_calibration
    from hwnas.latency.statistic import read_factors

    cal = read_calibration(table)  # type: ignore[arg-type]
    if cal is None:
        console.print("calibration: none (fit one with 'hwnas lut validate FILE --space S --device D --fit')")
        return
    factors = read_factors(table.meta, str(table.path))  # type: ignore[attr-defined]
    if factors:
        console.print("the device's runs over their fastest (from the calibration's networks, undisturbed rounds): "
                      + "; ".join(f"{name} {f.text()}" for name, f in factors.items()), soft_wrap=True)  # fmt: skip
    else:
        console.print("statistic factors: none (calibrated before hwnas measured them): budgets in median or p90 "
                      "need 'hwnas lut validate FILE --space S --device D --fit'", soft_wrap=True)  # fmt: skip
    console.print(
        f"calibration ({cal.model}, fitted on {int(cal.stats.get('n', 0))} networks): a kernel costs "
        "scale x its LUT latency + a constant; the network adds "
        f"{cal.offset_ms * 1e3:+.1f} us; fit RMSPE {cal.stats.get('rmspe', float('nan')):.2%}, "
        f"leave-one-out {cal.stats.get('loo_rmspe', float('nan')):.2%}",
        soft_wrap=True,
    )
    for key, lowest in cal.stats.items():
        if key.startswith("passed_over_"):
            model = key.removeprefix("passed_over_").removesuffix("_cheapest_ms")
            console.print(
                f"passed over the {model} model: it predicts {lowest:.4f} ms for the cheapest network of the space"
            )
    t = Table("op", "scale", "+ per kernel (us)", title="calibration")
    for op in cal.scale:
        t.add_row(op, f"{cal.scale[op]:.3f}", f"{cal.per_kernel_ms.get(op, 0.0) * 1e3:+.2f}")
    console.print(t)


def cmd_lut_validate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hwnas.devices import open_device
    from hwnas.latency.validate import validate, write_report
    from hwnas.spaces import get_space

    space = get_space(args.space)
    device = open_device(with_precision(args.device, args.precision))
    try:
        result = validate(
            args.file, space, device, args.samples, fit=args.fit, fit_share=args.fit_share, model=args.model,
            rounds=args.rounds, timing=timing(args), seed=args.seed, progress=not args.no_progress, force=args.force,
            before_timing=lambda: warn_if_busy(device), statistic=args.statistic, drift_kernels=args.drift_kernels,
        )  # fmt: skip
    except KeyboardInterrupt:
        print(
            f"hwnas: interrupted; the networks timed so far are saved in {args.file}; "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    out = Path(args.out or f"{Path(args.file).stem}-validation")
    csv_path, png_path = write_report(result, out)
    scored = int(result.raw["n"])
    fitted = int((result.rows["role"] == "fit").sum())
    title = (
        f"{scored} held-out architectures of {space.name} on {device.spec}, by their {args.statistic} run"
        + (f" (+{fitted} used to fit the calibration)" if fitted else "")
        + (" [NOISY RUN]" if result.noisy else "")
    )
    t = Table("metric", "LUT sum", "calibrated", "FLOPs", title=title)
    cal = result.calibrated

    def pct(d: dict[str, float] | None, k: str) -> str:
        return "-" if d is None else f"{d[k]:.1%}"

    t.add_row("RMSE (ms)", f"{result.raw['rmse_ms']:.4f}", "-" if cal is None else f"{cal['rmse_ms']:.4f}", "")
    t.add_row("RMSPE", pct(result.raw, "rmspe"), pct(cal, "rmspe"), "")
    t.add_row("mean error", f"{result.raw['mean_error']:+.1%}", "-" if cal is None else f"{cal['mean_error']:+.1%}", "")
    for w in (5, 10, 15):
        t.add_row(f"within +-{w}%", pct(result.raw, f"within_{w}"), pct(cal, f"within_{w}"), "")
    for k, label in (("kendall_tau", "Kendall tau"), ("spearman", "Spearman rho")):
        t.add_row(label, f"{result.raw[k]:.3f}", "-" if cal is None else f"{cal[k]:.3f}", f"{result.flops[k]:.3f}")
    console.print(t)
    if result.noise:
        nf = result.noise
        console.print(f"noise floor of this run: {nf['within_10']:.1%} of single rounds lie within +-10% of their "
                      f"network's median ({nf['within_5']:.1%} within +-5%); median spread across rounds "
                      f"{nf['median_spread']:.1%}")  # fmt: skip
    if result.by_statistic:
        bt = Table("statistic", "factor", "within +-10%", "within +-5%", "noise floor +-10%", "noise floor +-5%",
                   title="the calibrated prediction (times the factor) against each statistic's measurements")  # fmt: skip
        for name, row in result.by_statistic.items():
            sc, nf = row["scores"], row["noise"]
            bt.add_row(name, f"{row['factor']:.3f}", f"{sc['within_10']:.1%}", f"{sc['within_5']:.1%}",
                       f"{nf.get('within_10', float('nan')):.1%}", f"{nf.get('within_5', float('nan')):.1%}")  # fmt: skip
        console.print(bt)
    if result.conditions is not None:
        console.print(f"conditions of this run: {result.conditions.text()}")
    if result.drift is not None:
        d = result.drift
        console.print(f"drift check: {len(d.now_ms)} of the {d.of_kernels} kernels these networks use timed again; "
                      f"now/LUT median {d.median_ratio:.3f}x, {len(d.faster)} faster and {len(d.slower)} slower "
                      f"than {1 / DRIFT_LIMIT:.2f}-{DRIFT_LIMIT:.1f}x")  # fmt: skip
        for line in d.messages(args.file, args.space, args.device):
            print(f"hwnas: warning: {line}", file=sys.stderr)
    if result.noisy:
        print(f"hwnas: warning: this validation ran in a noisy hour ({'; '.join(result.noisy)}): its accuracy "
              "figures are labelled [NOISY RUN]; run it again in a quieter hour to trust them", file=sys.stderr)  # fmt: skip
    if result.fitted:
        console.print(f"stored a new calibration in {args.file}")
    from hwnas.latency.table import LatencyTable

    _print_calibration(LatencyTable.load(args.file))
    console.print(f"wrote {csv_path} and {png_path}")
    return 0


def cmd_lut_export(args: argparse.Namespace) -> None:
    from hwnas.workflows import export_lut_table

    out, fmt = (args.csv, "csv") if args.csv else (args.parquet, "parquet")
    rows = export_lut_table(args.file, out, fmt, raw=args.raw)
    console.print(f"wrote {out}: {rows} rows")


def add_parser(sub: Any) -> None:
    """Add the lut command(s) to the subparsers ``sub``."""
    lut = sub.add_parser("lut", help="inspect and export LUT files").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND"
    )
    ls = lut.add_parser("show", help="summary, the slowest and the noisiest kernels, the calibration")
    ls.add_argument("file", metavar="FILE")
    ls.add_argument("--top", type=int, default=15, help="how many of the slowest and noisiest kernels to list")
    ls.add_argument("--compare", metavar="OTHER", help="per kernel type, this LUT against OTHER (e.g. an int8 LUT "
                    "against the fp32 one of the same device); warns where this one is slower")  # fmt: skip
    ls.set_defaults(func=cmd_lut_show)
    le = lut.add_parser("export", help="per-kernel table (or raw measurements) as CSV or Parquet")
    le.add_argument("file", metavar="FILE")
    g = le.add_mutually_exclusive_group(required=True)
    g.add_argument("--csv", metavar="OUT")
    g.add_argument("--parquet", metavar="OUT")
    le.add_argument(
        "--raw", action="store_true", help="every measurement (key, round, stats) instead of one row per kernel"
    )
    le.set_defaults(func=cmd_lut_export)
    lv = lut.add_parser(
        "validate",
        help="time whole networks end to end and score the LUT's predictions (and fit a calibration with --fit)",
    )
    lv.add_argument("file", metavar="FILE")
    lv.add_argument("--space", required=True, help="a preset name or a space file")
    lv.add_argument("--device", required=True, metavar="SPEC", help="the device the LUT was measured on")
    lv.add_argument("--samples", type=positive_int, default=100,
                    help="random architectures, stratified over predicted latency (default 100)")  # fmt: skip
    lv.add_argument("--fit", action="store_true", help="fit a calibration on part of the samples and store it")
    lv.add_argument("--fit-share", type=share, default=0.5, help="share of the samples used to fit (default 0.5)")
    lv.add_argument("--model", choices=CALIBRATION_MODELS, default="auto",
                    help="calibration model (auto: the lowest leave-one-out error; raw: the LUT sum, nothing fitted)")  # fmt: skip
    lv.add_argument("--rounds", type=positive_int, default=3, help="timing rounds per network (median of them)")
    lv.add_argument("--statistic", choices=STATISTICS, default=DEFAULT_STATISTIC,
                    help="score against each network's fastest, median or p90 run (default %(default)s; median and "
                         "p90 use the factor the calibration measured)")  # fmt: skip
    lv.add_argument("--drift-kernels", type=count_or_all, default=DRIFT_KERNELS, metavar="N|all",
                    help="time again the N kernels these networks spend most LUT time in (all: every kernel of the space; 0: none) "
                    "and compare them with the LUT, to tell a LUT profiled in a noisier phase (default %(default)s)")  # fmt: skip
    lv.add_argument("--seed", type=int, default=0, help="seed of the sampling and the shuffles")
    lv.add_argument(
        "--out", metavar="DIR", help="folder for validation.csv and validation.png (default FILE-validation)"
    )
    lv.add_argument("--precision", choices=PRECISIONS,
                    help="time whole networks at this precision (as 'profile --precision'); must be the LUT's")  # fmt: skip
    lv.add_argument("--force", action="store_true", help="validate on a device other than the LUT's")
    lv.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_timing_args(lv, 100.0)
    lv.set_defaults(func=cmd_lut_validate)
