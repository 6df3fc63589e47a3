"""The ``hwnas`` command: parse arguments, call the library, print. No logic of its own.

User errors (:class:`hwnas.core.errors.HwnasError`) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console
from rich.table import Table

from hwnas import __version__
from hwnas.core.errors import HwnasError
from hwnas.core.options import add_options, options_of, positive_float, positive_int
from hwnas.core.precisions import PRECISIONS
from hwnas.devices.agent.__main__ import add_serve_arguments
from hwnas.search.config import SearchConfig
from hwnas.train.config import TrainConfig

if TYPE_CHECKING:
    from hwnas.devices import Device, TimingConfig

console = Console(width=None if sys.stdout.isatty() else 160, soft_wrap=True)
# hwnas.latency.predictor.MODELS, spelled out so that building the parser imports no numpy
# (tests/test_predictor.py checks that the two agree)
CALIBRATION_MODELS = ("auto", "linear", "per-op", "per-op-scale", "full", "raw")


def _mega(x: float) -> str:
    return f"{x / 1e6:.3f}"


def _size_text(n: int) -> str:
    return f"{n:,}" if n < 10**7 else f"{n:.3e} (10^{math.log10(n):.1f})"


# --- arch -------------------------------------------------------------------------------
def cmd_arch_list(args: argparse.Namespace) -> None:
    from hwnas.spaces import get_arch, list_archs
    from hwnas.spaces.kernels import arch_flops, arch_params

    t = Table("name", "resolution", "blocks", "MFLOPs", "params (M)")
    for name in list_archs():
        a = get_arch(name)
        t.add_row(name, str(a.resolution), str(len(a.blocks)), _mega(arch_flops(a)), _mega(arch_params(a)))
    console.print(t)


def cmd_arch_show(args: argparse.Namespace) -> None:
    from hwnas.models.counting import count_arch
    from hwnas.spaces import get_arch

    arch = get_arch(args.arch)
    if args.resolution:
        arch = arch.with_resolution(args.resolution)
    if args.json:
        sys.stdout.write(arch.to_json())
        return
    counts = count_arch(arch)
    t = Table(
        "#",
        "block",
        "output (c, h, w)",
        "MFLOPs",
        "params (K)",
        title=f"{arch.name or args.arch} @ {arch.resolution} px",
    )
    for i, r in enumerate(counts.rows):
        t.add_row(
            str(i) if i < len(arch.blocks) else "", r.label, str(r.out_shape), _mega(r.flops), f"{r.params / 1e3:.1f}"
        )
    t.add_section()
    t.add_row("", "total", "", _mega(counts.flops), f"{counts.params / 1e3:.1f}")
    console.print(t)
    console.print(f"arch string: {arch.to_str()}", soft_wrap=True)
    console.print(
        f"FLOPs {_mega(counts.flops)} M (multiply-adds, fvcore, mobile-vision convention); "
        f"params {_mega(counts.params)} M conv/linear weights, {_mega(counts.params_all)} M with biases and BN"
    )


def cmd_arch_sample(args: argparse.Namespace) -> None:
    from hwnas.spaces import get_space

    space = get_space(args.space)
    arch = space.sample(args.seed)
    if args.out:
        arch.save(args.out)
        console.print(f"wrote {args.out}: {arch.to_str()}", soft_wrap=True)
    else:
        sys.stdout.write(arch.to_json())


# --- space ------------------------------------------------------------------------------
def cmd_space_list(args: argparse.Namespace) -> None:
    from hwnas.spaces import get_space, list_spaces

    t = Table("name", "resolutions", "classes", "layers", "size", "kernels")
    for name in list_spaces():
        s = get_space(name)
        t.add_row(
            name,
            str(list(s.resolutions)),
            str(s.num_classes),
            str(len(s.layers)),
            _size_text(s.size()),
            str(len(s.kernels())),
        )
    console.print(t)


def cmd_space_show(args: argparse.Namespace) -> None:
    from hwnas.spaces import get_space
    from hwnas.spaces.kernels import arch_flops

    space = get_space(args.space)
    if args.yaml:  # a template: under its own name, so errors in the user's copy do not name the preset
        from dataclasses import replace

        sys.stdout.write(f"# made by 'hwnas space show {args.space} --yaml'; edit it and pass its path as --space\n")
        sys.stdout.write(replace(space, name=f"my-{space.name}").to_yaml())
        return
    kernels = space.kernels()
    if args.kernels:
        for k in kernels:
            print(k.key)
        return
    t = Table(
        "layer",
        "stage",
        "stride",
        f"input @ {max(space.resolutions)}",
        "ops",
        "channels",
        "expansions",
        "options",
        title=f"search space {space.name}",
    )
    h = max(space.resolutions)
    for layer in space.layers:
        uses_e = any(o.e != 1.0 for o in layer.options) or any(op.startswith(("ir_k", "ir_pool")) for op in layer.ops)
        es = ", ".join(f"{e:g}" for e in layer.expansions) if uses_e else "-"
        t.add_row(
            str(layer.index),
            str(layer.stage),
            str(layer.stride),
            f"{h}x{h}",
            " ".join(layer.ops),
            "as its input (tied)" if layer.tied else ", ".join(map(str, layer.channels)),
            es,
            str(len(layer.options) // len(layer.channels) if layer.tied else len(layer.options)),
        )
        h = layer.out_size(h)
    console.print(t)
    by_op = Counter(k.op for k in kernels)
    small, large = space.smallest(), space.largest()
    console.print(f"resolutions: {', '.join(map(str, space.resolutions))}; classes: {space.num_classes}")
    console.print(f"size: {_size_text(space.size())} distinct architectures")
    console.print(f"distinct kernels: {len(kernels)} ({', '.join(f'{op} {n}' for op, n in sorted(by_op.items()))})")
    console.print(f"FLOPs: smallest {_mega(arch_flops(small))} M, largest {_mega(arch_flops(large))} M")


# --- devices, profile, lut, bench ------------------------------------------------------------
def cmd_agent_serve(args: argparse.Namespace) -> int:
    from hwnas.devices.agent.__main__ import serve

    return serve(args)


def cmd_devices(args: argparse.Namespace) -> None:
    from hwnas.devices import DEVICE_KINDS

    t = Table("device", "usable here", "runs", "parameters (defaults)", title="devices")
    for kind, cls in DEVICE_KINDS.items():
        why = cls.availability()
        params = ", ".join(f"{n}={_show_default(p.default)}" for n, p in cls.params.items())
        t.add_row(kind, "yes" if why is None else f"no: {why}", cls.format, params)
    console.print(t)
    console.print("A spec sets parameters after a colon, e.g. ort-cpu:threads=1, tflite-cpu:threads=4,xnnpack=0, "
                  "remote:192.168.1.20:8765,runtime=tflite-cpu (an agent: hwnas agent serve) or adb:SERIAL.")  # fmt: skip


def _budget_list(text: str) -> list[float]:
    """One budget, or several separated by commas (train once, search many)."""
    values = [positive_float(part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected a number or numbers separated by commas, got {text!r}")
    return sorted(set(values))


def _share(text: str) -> float:
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text!r}")
    return value


def _show_default(v: object) -> str:
    return "-" if v is None else ("1" if v is True else "0" if v is False else str(v))


def _timing(args: argparse.Namespace) -> TimingConfig:
    from hwnas.devices import TimingConfig

    return TimingConfig(
        warmup_runs=args.warmup_runs, warmup_s=args.warmup_ms / 1e3, min_runs=args.min_runs,
        min_time_s=args.min_time_ms / 1e3, max_time_s=args.max_time_s,
    )  # fmt: skip


def cmd_profile(args: argparse.Namespace) -> int:
    from hwnas.devices import open_device
    from hwnas.spaces import get_space
    from hwnas.workflows import ProfileInterrupted, profile_space

    space = get_space(args.space)
    if len(args.device) > 1 or len(args.out) > 1:
        return _profile_farm(args, space)
    device = open_device(_with_precision(args.device[0], args.precision))
    args.out = args.out[0]
    try:
        report = profile_space(space, device, args.out, rounds=args.rounds, timing=_timing(args), seed=args.seed,
                               progress=not args.no_progress, force=args.force,
                               before_timing=lambda: _warn_if_busy(device))  # fmt: skip
    except ProfileInterrupted as stop:
        print(
            f"hwnas: interrupted; {stop.saved} measurements are saved in {args.out} ({stop.new} from this run); "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    console.print(
        f"{args.out}: {report.kernels} kernels x {args.rounds} rounds on {device.spec}; measured {report.measured}, "
        f"already there {report.skipped}; converted {report.converted} models in {report.convert_s:.1f} s"
    )
    if report.measured:
        console.print(
            f"wall {report.wall_s:.1f} s, measuring {report.busy_s:.1f} s, overhead ratio {report.overhead_ratio:.2f}"
        )
    if report.retaken or report.remeasured or report.still_disturbed:
        console.print(f"disturbed: re-took {report.retaken} measurement(s) taken while other processes competed for "
                      f"the CPU, re-measured {report.remeasured} outlying round(s); {report.still_disturbed} kept "
                      "although disturbed ('hwnas lut show' lists the noisiest kernels)")  # fmt: skip
    return 0


def _profile_farm(args: argparse.Namespace, space: Any) -> int:
    from hwnas.devices import open_device
    from hwnas.workflows import profile_farm

    devices = [open_device(_with_precision(spec, args.precision)) for spec in args.device]
    results = profile_farm(space, devices, args.out, rounds=args.rounds, timing=_timing(args), seed=args.seed,
                           progress=not args.no_progress, force=args.force)  # fmt: skip
    t = Table(
        "device",
        "LUT",
        "status",
        "measured now",
        "in the LUT",
        title=f"profile of {space.name} on {len(devices)} devices",
    )
    for r in results:
        status = "finished" if r.error is None else "stopped"
        t.add_row(r.device, str(r.lut), status, str(r.report.measured if r.report else "-"), str(r.saved))
    console.print(t)
    failed = [r for r in results if r.error is not None]
    for r in failed:
        print(f"hwnas: {r.device} stopped: {r.error}", file=sys.stderr)
    if failed:
        print(f"hwnas: {len(failed)} of {len(results)} devices did not finish; what they measured is saved: run the "
              "same command again to resume them (finished devices are skipped)", file=sys.stderr)  # fmt: skip
        return 3
    return 0


def _with_precision(spec: str, precision: str | None) -> str:
    """``spec`` with ``precision=`` set from ``--precision`` (which must agree with one in the spec)."""
    if precision is None:
        return spec
    from hwnas.devices import parse_device

    device = parse_device(spec)
    if "precision" not in device.params:
        raise HwnasError(f"--precision: device {device.kind} times fp32 models only; use ort-cpu (fp32, int8) or "
                         "tflite-cpu (fp32, fp16)")  # fmt: skip
    given = "precision=" in spec
    if given and device.precision != precision:
        raise HwnasError(f"--precision {precision} contradicts the device spec's precision={device.precision}")
    return spec if given else spec + ("," if ":" in spec else ":") + f"precision={precision}"


def _warn_if_busy(device: Device) -> None:
    """Warn when this machine is busy; a device on another machine reports its own conditions per measurement."""
    from hwnas.workflows import busy_warning

    if not device.runs_here:
        return
    text = busy_warning(device.threads)
    if text:
        print(f"hwnas: warning: {text}", file=sys.stderr)


def _fit_threads(torch_device: str | None) -> None:
    from hwnas.workflows import fit_torch_threads

    if torch_device in (None, "cpu"):
        text = fit_torch_threads()
        if text:
            print(f"hwnas: note: {text}", file=sys.stderr)


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

    cal = read_calibration(table)  # type: ignore[arg-type]
    if cal is None:
        console.print("calibration: none (fit one with 'hwnas lut validate FILE --space S --device D --fit')")
        return
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
    device = open_device(_with_precision(args.device, args.precision))
    try:
        result = validate(
            args.file, space, device, args.samples, fit=args.fit, fit_share=args.fit_share, model=args.model,
            rounds=args.rounds, timing=_timing(args), seed=args.seed, progress=not args.no_progress, force=args.force,
            before_timing=lambda: _warn_if_busy(device),
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
    title = f"{scored} held-out architectures of {space.name} on {device.spec}" + (
        f" (+{fitted} used to fit the calibration)" if fitted else ""
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


# --- search, train -----------------------------------------------------------------------------
_BUDGET_FLAGS = {"budget_ms": "latency", "budget_mflops": "flops", "budget_mparams": "params"}


def _budget(args: argparse.Namespace) -> tuple[str, list[float]]:
    given = [(flag, getattr(args, flag)) for flag in _BUDGET_FLAGS if getattr(args, flag) is not None]
    if len(given) != 1:
        raise HwnasError("give exactly one budget: --budget-ms (latency), --budget-mflops or --budget-mparams")
    flag, value = given[0]
    cost = args.cost or _BUDGET_FLAGS[flag]
    if cost in _BUDGET_FLAGS.values() and cost != _BUDGET_FLAGS[flag]:
        raise HwnasError(f"--cost {cost} does not go with --{flag.replace('_', '-')}")
    return cost, value


def cmd_search(args: argparse.Namespace) -> int:
    from hwnas.search.loop import Search

    cost, budgets = _budget(args)
    budget = budgets[(len(budgets) - 1) // 2]  # the supernet trains towards the middle budget
    cfg = SearchConfig(budget=budget, budgets=budgets if len(budgets) > 1 else [], cost=cost,
                       **options_of(SearchConfig, args))  # fmt: skip
    search = Search(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    _fit_threads(args.torch_device)
    from hwnas.train.data import fit_notes

    for note in fit_notes(search.splits, max(search.space.resolutions)):
        print(f"hwnas: note: {note}", file=sys.stderr)
    console.print(
        f"searching {search.space.name} for {cfg.cost} <= {search.cost.fmt(budget)} (space spans "
        f"{search.cost.fmt(search.cheapest)} to {search.cost.fmt(search.costliest)}); "
        f"{len(search.splits.weights)} weight / {len(search.splits.alphas)} arch / {len(search.splits.val)} val images"
    )
    try:
        result = search.run()
    except KeyboardInterrupt:
        print(
            f"hwnas: interrupted; finished epochs are saved in {args.out}; add --resume to the same command to go on",
            file=sys.stderr,
        )
        return 130
    d = result.derivation
    t = Table("", "architecture", f"{cfg.cost} ({search.cost.unit})", title=f"search result ({result.seconds:.0f} s)")
    t.add_row("argmax", d.argmax.to_str(), f"{d.argmax_cost:.4g}")
    t.add_row("derived", d.arch.to_str(), f"{d.cost:.4g} (budget {budget:g})")
    for c in result.candidates:
        t.add_row(("* " if c["selected"] else "") + c["how"], c["arch"],
                  f"{c['cost']:.4g}, supernet val {c['val_acc_supernet']:.1%}")  # fmt: skip
    console.print(t)
    null = next((c for c in result.candidates if c["how"].startswith("null")), None)
    if null is not None:
        console.print(f"the derived network differs from the null derivation in {null['layers_differing_from_selected']} "
                      "layers (resolution counted as one)")  # fmt: skip
    for step in d.steps:
        console.print(f"  {step}")
    if result.per_budget:
        t = Table("budget", "architecture", f"{cfg.cost} ({search.cost.unit})", "supernet val", "vs null",
                  title="one supernet, one architecture per budget (budgets.json, budget-B/)")  # fmt: skip
        for row in result.per_budget:
            t.add_row(f"{row['budget']:g}", row["arch"], f"{row['cost']:.4g}", f"{row['val_acc_supernet']:.1%}",
                      f"{row['layers_differing_from_null']} layers differ")  # fmt: skip
        console.print(t)
    last = result.metrics[-1] if result.metrics else {}
    console.print(f"supernet val accuracy of the argmax: {last.get('val_acc', float('nan')):.1%}")
    console.print(f"wrote {args.out}/arch.json, arch.txt, candidates.json, metrics.csv, probs.csv, progress.png, "
                  "choices.png")  # fmt: skip
    same_data = (f" --limit {args.limit}" if args.limit else "") + (
        f" --split-seed {args.split_seed}" if args.split_seed else "")  # fmt: skip
    console.print(f"next: hwnas train --arch {args.out}/arch.json --data {args.data}{same_data} "
                  f"--out {args.out}/child.safetensors")  # fmt: skip
    return 0


def cmd_train(args: argparse.Namespace) -> None:
    from hwnas.spaces.arch import Architecture
    from hwnas.workflows import train_and_save

    arch = Architecture.load(args.arch)
    cfg = TrainConfig(**options_of(TrainConfig, args))
    result = train_and_save(arch, cfg, args.out, progress=not args.no_progress,
                            before_training=lambda: _fit_threads(args.torch_device))  # fmt: skip
    for note in result.notes:
        print(f"hwnas: note: {note}", file=sys.stderr)
    test_text = f", test accuracy {result.test_acc:.2%}" if result.test_acc is not None else ""
    console.print(f"{arch.to_str()}: val accuracy {result.val_acc:.2%}{test_text} after {args.epochs} epochs "
                  f"({result.seconds:.0f} s); wrote {args.out}")  # fmt: skip


# --- export --------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from hwnas.devices import open_device
    from hwnas.export.child_file import load_child
    from hwnas.export.pipeline import parse_formats
    from hwnas.export.request import ExportRequest
    from hwnas.workflows import export_and_check

    formats = parse_formats(args.format)
    precisions = ["fp32"] + (["fp16"] if args.fp16 else []) + (["int8"] if args.int8 else [])
    gates = None if args.budget_gates is None else [g.strip() for g in args.budget_gates.split(",") if g.strip()]
    layout = "nchw" if args.nchw else "nhwc" if args.nhwc else None
    ExportRequest(formats, precisions, data=args.data, has_device=bool(args.device), lut=args.lut,
                  budget_ms=args.budget_ms, gates=gates, allow_over_budget=args.allow_over_budget, layout=layout,
                  dynamic_batch=args.dynamic_batch, simplify=args.simplify).check()  # fmt: skip
    device = open_device(args.device) if args.device else None
    child = load_child(args.arch, args.weights)
    outcome = export_and_check(child, args.out, formats, precisions, data=args.data, gates=gates,
                               calibration_images=args.calibration_images, check_images=args.check_images,
                               device=device, lut=args.lut, budget_ms=args.budget_ms, force=args.force,
                               stem=args.name or (child.arch.name or "model"),
                               **({} if layout is None else {"nhwc": layout == "nhwc"}),
                               dynamic_batch=args.dynamic_batch, simplify=args.simplify,
                               progress=not args.no_progress)  # fmt: skip
    results, over, noisy = outcome.files, outcome.over_budget, outcome.within_noise
    console.print(export_table(results, f"exported {child.arch.to_str()}"))
    console.print(f"model cards: <file>.json beside each file, in {results[0].path.parent if results else args.out}")
    for name, v in outcome.verdicts.items():
        console.print(f"{name}: {v.text()}")
    if outcome.not_gated:
        console.print(f"reported, not gated (the budget gates {', '.join(outcome.gates)}; --budget-gates): "
                      + "; ".join(outcome.not_gated))  # fmt: skip
    _warn_int8_agreement(results, args.min_int8_agreement)
    if over or noisy:
        msg = "; ".join(over + noisy)
        if args.allow_over_budget:
            console.print(f"not within budget (allowed by --allow-over-budget): {msg}")
            return 0
        if over:
            print(f"hwnas: over budget: {msg}; pass --allow-over-budget to accept", file=sys.stderr)
            return 1
        print(f"hwnas: within noise of the budget (exit 3): {msg}; the measurement cannot tell whether it is over; "
              "re-measure on a quieter machine ('hwnas bench FILE --budget-ms B'), or pass --allow-over-budget",
              file=sys.stderr)  # fmt: skip
        return 3
    return 0


def _warn_int8_agreement(results: list[Any], threshold: float) -> None:
    for r in results:
        if r.precision == "int8" and r.top1_agreement is not None and r.top1_agreement < threshold:
            print(f"hwnas: warning: {r.path.name} agrees with fp32 PyTorch on {r.top1_agreement:.1%} of the check "
                  f"images, under {threshold:.0%} (--min-int8-agreement): int8 changes this model's answers; "
                  "check its accuracy before shipping it, or calibrate on more images (--calibration-images)",
                  file=sys.stderr)  # fmt: skip


def export_table(results: list[Any], title: str) -> Table:
    """The export summary: whole file names (never cut), the folder once, compact numbers."""
    from rich import box

    folder = results[0].path.parent if results else ""
    fp32 = next((r.accuracy_fp32 for r in results if r.accuracy_fp32 is not None), None)
    caption = f"in {folder}" + (f"; PyTorch fp32 top-1 {fp32:.1%}" if fp32 is not None else "")
    t = Table("file", "KB", "|diff|", "agree", "top-1", "pred ms", "meas ms", title=title,
              caption=caption + "; int8 agreement with fp32, all checks and export times in each file's card",
              box=box.SIMPLE_HEAD, pad_edge=False)  # fmt: skip
    t.columns[0].no_wrap = True
    for r in results:
        t.add_row(
            r.path.name, f"{r.size_bytes / 1024:.0f}", "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.0e}",
            f"{r.top1_agreement:.1%}" if r.precision == "int8" and r.top1_agreement is not None else "-",
            "-" if r.accuracy is None else f"{r.accuracy:.1%}",
            "-" if r.predicted_ms is None else f"{r.predicted_ms:.3f}",
            "-" if r.measured_ms is None else f"{r.measured_ms:.3f}",
        )  # fmt: skip
    return t


# --- demo ----------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hwnas.demo import DemoConfig, run_demo

    cfg = DemoConfig(out=Path(args.out), device=args.device, search_epochs=args.search_epochs,
                     train_epochs=args.train_epochs, progress=not args.no_progress)  # fmt: skip
    try:
        report = run_demo(cfg, say=console.print)
    except KeyboardInterrupt:
        print(f"hwnas: interrupted; run the same command again to resume from {args.out}", file=sys.stderr)
        return 130
    t = Table("step", "seconds", "result", title="hwnas demo")
    for step, seconds, result in report.steps:
        t.add_row(step, f"{seconds:.0f}", result)
    console.print(t)
    s = report.summary
    verdict = (s.get("verdict") or {}).get("outcome", "not judged")
    console.print(f"budget {s['budget_ms']:g} ms on {s['device']} (searched under {s['search_budget_ms']:g} ms): "
                  f"predicted {s['predicted_ms']:.3f} ms, measured {s['measured_ms']:.3f} +- {s['noise_ms']:.3f} ms "
                  f"(ONNX): {verdict}")  # fmt: skip
    console.print("files: " + ", ".join(f"{k}: {v}" for k, v in report.files.items()))
    if report.within_noise:
        console.print("the file is over the budget by less than the noise of its measurement; the demo counts that "
                      "as a pass (exit 0); 'hwnas export' exits 3 for it")  # fmt: skip
    return 1 if report.over_budget else 0


def cmd_bench(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from hwnas.devices import open_device
    from hwnas.workflows import bench_file

    device = open_device(args.device)
    path = Path(args.model)
    result = bench_file(path, device, _timing(args), args.rounds, budget_ms=args.budget_ms)
    stats = result["rounds"]
    code = int(result["verdict"]["exit_code"]) if result["verdict"] else 0
    if args.json:
        print(json.dumps(result, indent=2))
        return code
    t = Table(
        "round",
        "fastest (ms)",
        "median",
        "p10",
        "p90",
        "mean",
        "std",
        "runs",
        "warm-up runs",
        title=f"{path.name} on {device.spec}",
    )
    for i, s in enumerate(stats):
        fastest = s["min_ms"] if s.get("min_ms") is not None else s["median_ms"]
        t.add_row(str(i), f"{fastest:.4f}", f"{s['median_ms']:.4f}", f"{s['p10_ms']:.4f}", f"{s['p90_ms']:.4f}", f"{s['mean_ms']:.4f}",
                  f"{s['std_ms']:.4f}", str(s["n"]), str(s["warmup_n"]))  # fmt: skip
    console.print(t)
    cond = result["conditions"]
    console.print(f"latency: {result['latency_ms']:.4f} ms +- {result['noise_ms']:.4f} (the median over rounds of each "
                  f"round's fastest run; +- half their range)" + (f"; other processes used {cond['others_cores']:.1f} of {cond['cpus']} "
                                           "cores meanwhile" if cond["disturbed"] else ""))  # fmt: skip
    v = result["verdict"]
    if v:
        console.print(f"{path.name}: measured {v['measured_ms']:.3f} ms +- {v['noise_ms']:.3f} "
                      f"({len(v['rounds_ms'])} rounds) against {v['budget_ms']:g} ms: {v['outcome']} (exit {code})")  # fmt: skip
    return code


def _add_timing_args(p: argparse.ArgumentParser, min_time_ms: float) -> None:
    g = p.add_argument_group("timing (per model, per round)")
    g.add_argument("--warmup-runs", type=int, default=5, help="at least this many warm-up runs (default 5)")
    g.add_argument(
        "--warmup-ms", type=positive_float, default=30.0, help="and at least this long warming up (default 30)"
    )
    g.add_argument("--min-runs", type=int, default=20, help="at least this many timed runs (default 20)")
    g.add_argument(
        "--min-time-ms",
        type=positive_float,
        default=min_time_ms,
        help=f"and at least this long timing (default {min_time_ms:g})",
    )
    g.add_argument(
        "--max-time-s", type=positive_float, default=10.0, help="stop a slow model after this long (default 10)"
    )


# --- parser -----------------------------------------------------------------------------
class _Help(argparse.HelpFormatter):
    """Help that shows each option's default, unless the help text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (not action.option_strings or action.default in (None, False, argparse.SUPPRESS) or "default" in text
                or text == argparse.SUPPRESS):  # fmt: skip
            return action.help
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error form (one line on stderr, exit code 2) and defaults in --help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"hwnas: error: {message}; see '{self.prog} --help'\n")


_SEARCH_OPTIONS_BEFORE_THE_BUDGET = ("space", "lut")  # hwnas search --help lists them first


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="hwnas", description="Hardware-aware NAS: profile a device, search under a latency budget, export."
    )
    p.add_argument("--version", action="version", version=f"hwnas {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    arch = sub.add_parser("arch", help="architectures: list, show, sample").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND"
    )
    a = arch.add_parser("list", help="the registered (published) architectures")
    a.set_defaults(func=cmd_arch_list)
    a = arch.add_parser("show", help="blocks with output shape, FLOPs and params, and totals")
    a.add_argument(
        "arch", metavar="NAME|FILE", help="a registered name (see 'hwnas arch list') or an architecture JSON file"
    )
    a.add_argument("--resolution", type=int, help="input resolution to count at (default: the architecture's)")
    a.add_argument("--json", action="store_true", help="print the architecture JSON instead")
    a.set_defaults(func=cmd_arch_show)
    a = arch.add_parser("sample", help="a random architecture of a search space, as JSON")
    a.add_argument("space", metavar="NAME|FILE")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", help="write the JSON here (atomically) instead of printing it")
    a.set_defaults(func=cmd_arch_sample)

    space = sub.add_parser("space", help="search spaces: list, show").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND"
    )
    s = space.add_parser("list", help="the registered search spaces")
    s.set_defaults(func=cmd_space_list)
    s = space.add_parser("show", help="choices per layer, size, distinct kernels")
    s.add_argument("space", metavar="NAME|FILE", help="a preset name (see 'hwnas space list') or a YAML/JSON file")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--yaml", action="store_true", help="print the space as YAML (a template for your own)")
    g.add_argument("--kernels", action="store_true", help="print every distinct kernel key, one per line")
    s.set_defaults(func=cmd_space_show)

    ag = sub.add_parser("agent", help="the device agent: serve this machine's runtimes to 'remote:' devices")
    ag_sub = ag.add_subparsers(dest="sub", required=True, metavar="SUBCOMMAND")
    ags = ag_sub.add_parser("serve", help="time ONNX/TFLite models for remote clients (token from --token-file or "
                            "$HWNAS_AGENT_TOKEN)", allow_abbrev=False)  # fmt: skip
    add_serve_arguments(ags)
    ags.set_defaults(func=cmd_agent_serve)

    d = sub.add_parser("devices", help="which devices are usable here, and their parameters")
    d.set_defaults(func=cmd_devices)

    pr = sub.add_parser("profile", help="time every kernel of a search space on a device into a LUT")
    pr.add_argument("--space", required=True, metavar="NAME|FILE", help="search space (preset name or YAML/JSON file)")
    pr.add_argument("--device", required=True, action="append", metavar="SPEC",
                    help="device spec, e.g. ort-cpu:threads=1 or remote:HOST:PORT (see 'hwnas devices'); repeat it to "
                    "profile several devices at once (a farm), each into its own --out")  # fmt: skip
    pr.add_argument("--out", required=True, action="append", metavar="FILE",
                    help="the LUT file; an existing one is resumed or extended; one per --device, in the same order")  # fmt: skip
    pr.add_argument(
        "--rounds",
        type=positive_int,
        default=3,
        help="shuffled passes over the kernels; a kernel's latency is the median (default 3)",
    )
    pr.add_argument("--seed", type=int, default=0, help="seed of the shuffles")
    pr.add_argument("--precision", choices=PRECISIONS, help="time the kernels in the form export ships "
                    "at this precision (ort-cpu: fp32, int8 QDQ; tflite-cpu: fp32, fp16 weights, full-integer int8); the same as the "
                    "device's precision= parameter (default: the device's, fp32)")  # fmt: skip
    pr.add_argument("--force", action="store_true", help="add to a LUT measured on another device")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_timing_args(pr, 100.0)
    pr.set_defaults(func=cmd_profile)

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
    lv.add_argument("--fit-share", type=_share, default=0.5, help="share of the samples used to fit (default 0.5)")
    lv.add_argument("--model", choices=CALIBRATION_MODELS, default="auto",
                    help="calibration model (auto: the lowest leave-one-out error; raw: the LUT sum, nothing fitted)")  # fmt: skip
    lv.add_argument("--rounds", type=positive_int, default=3, help="timing rounds per network (median of them)")
    lv.add_argument("--seed", type=int, default=0, help="seed of the sampling and the shuffles")
    lv.add_argument(
        "--out", metavar="DIR", help="folder for validation.csv and validation.png (default FILE-validation)"
    )
    lv.add_argument("--precision", choices=PRECISIONS,
                    help="time whole networks at this precision (as 'profile --precision'); must be the LUT's")  # fmt: skip
    lv.add_argument("--force", action="store_true", help="validate on a device other than the LUT's")
    lv.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_timing_args(lv, 100.0)
    lv.set_defaults(func=cmd_lut_validate)

    se = sub.add_parser("search", help="DMaskingNAS under a latency (or FLOPs, params) budget; derives an architecture")
    add_options(se, SearchConfig, only=_SEARCH_OPTIONS_BEFORE_THE_BUDGET)
    se.add_argument("--cost", help="latency (default with --budget-ms), flops or params")
    bg = se.add_argument_group("budget (exactly one)")
    bg.add_argument("--budget-ms", type=_budget_list,
                    help="predicted latency budget in ms (LUT); several, e.g. 0.15,0.2,0.25, train one supernet "
                         "and derive one architecture per budget")  # fmt: skip
    bg.add_argument("--budget-mflops", type=_budget_list, help="FLOPs budget(s) in millions of multiply-adds")
    bg.add_argument("--budget-mparams", type=_budget_list, help="parameter budget(s) in millions")
    add_options(se, SearchConfig, exclude=_SEARCH_OPTIONS_BEFORE_THE_BUDGET)
    se.add_argument("--out", default="run", metavar="RUN", help="the run folder (default ./run)")
    se.add_argument("--resume", action="store_true", help="continue the search saved in --out")
    se.add_argument("--no-progress", action="store_true")
    se.set_defaults(func=cmd_search)

    tr = sub.add_parser("train", help="train an architecture (from scratch, or from the supernet's weights)")
    tr.add_argument("--arch", required=True, metavar="ARCH.json")
    add_options(tr, TrainConfig)
    tr.add_argument(
        "--out", default="child.safetensors", help="where to write the trained child (default child.safetensors)"
    )
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=cmd_train)

    ex = sub.add_parser("export", help="ONNX / TFLite files checked against PyTorch, model cards, budget check")
    ex.add_argument(
        "--arch", metavar="ARCH.json", help="the architecture (optional with a child file from hwnas train)"
    )
    ex.add_argument(
        "--weights",
        required=True,
        metavar="CHILD",
        help="trained weights: a child file (hwnas train --out), or a bare safetensors state dict with --arch",
    )
    ex.add_argument("--format", default="onnx,tflite", help="comma-separated: onnx, tflite (default both)")
    ex.add_argument("--fp16", action="store_true", help="also a TFLite file with float16 weights")
    ex.add_argument("--int8", action="store_true", help="also int8 files (post-training, calibrated on --data)")
    layout = ex.add_mutually_exclusive_group()
    layout.add_argument("--nhwc", action="store_true", help="TFLite input in NHWC order, camera frames' layout and "
                        "TFLite's convention (the default; the LUT's TFLite kernels are NHWC too)")  # fmt: skip
    layout.add_argument("--nchw", action="store_true", help="TFLite input in NCHW order, as PyTorch and the ONNX file "
                        "(adds layout transposes on a phone)")  # fmt: skip
    ex.add_argument("--dynamic-batch", action="store_true", help="ONNX input with a dynamic batch dimension")
    ex.add_argument("--simplify", action="store_true",
                    help="optimize the ONNX graph with onnxscript (2-3%% faster on ONNX Runtime CPU)")  # fmt: skip
    ex.add_argument("--data", help="images for int8 calibration and the agreement check (as for hwnas search)")
    ex.add_argument("--calibration-images", type=positive_int, default=500, help="training images for int8 (500)")
    ex.add_argument(
        "--check-images",
        type=positive_int,
        default=500,
        help="images the files are checked on against PyTorch (and int8 agreement, with --data)",
    )
    ex.add_argument("--device", metavar="SPEC", help="measure the files of its format there")
    ex.add_argument("--lut", help="LUT of --device, for the predicted latency")
    ex.add_argument("--budget-ms", type=positive_float,
                    help="judge the measured files against it: exit 1 over beyond the noise, 3 within noise of it")  # fmt: skip
    ex.add_argument("--allow-over-budget", action="store_true", help="report an over-budget file, exit 0")
    ex.add_argument("--budget-gates", metavar="P,P", help="precisions the budget gates; files of others are reported "
                    "only (default: fp32,int8 on a CPU device, where fp16 weights are dequantized; all elsewhere)")  # fmt: skip
    ex.add_argument("--min-int8-agreement", type=_share, default=0.95, help="warn when an int8 file's top-1 agrees "
                    "with fp32 PyTorch on fewer of the check images")  # fmt: skip
    ex.add_argument("--force", action="store_true", help="use a LUT measured on another device")
    ex.add_argument("--name", help="file name stem (default: the architecture's name, or 'model')")
    ex.add_argument("--out", default="export", help="output folder (default ./export)")
    ex.add_argument("--no-progress", action="store_true", help="no progress bar")
    ex.set_defaults(func=cmd_export)

    dm = sub.add_parser("demo", help="the whole pipeline on the cifar space and built-in data, in minutes")
    dm.add_argument("--out", default="hwnas-demo", help="working folder (default ./hwnas-demo); re-run to resume")
    dm.add_argument("--device", default="ort-cpu:threads=1", metavar="SPEC", help="an ONNX Runtime CPU device")
    dm.add_argument("--search-epochs", type=positive_int, default=6, help="epochs of the search (2 of them warm-up)")
    dm.add_argument("--train-epochs", type=positive_int, default=5, help="epochs of retraining the derived network")
    dm.add_argument("--no-progress", action="store_true", help="no progress bars (plain lines, for logs)")
    dm.set_defaults(func=cmd_demo)

    b = sub.add_parser("bench", help="time a whole .onnx or .tflite model file on a device")
    b.add_argument("model", metavar="MODEL.onnx|MODEL.tflite")
    b.add_argument("--device", required=True, metavar="SPEC")
    b.add_argument(
        "--rounds", type=positive_int, default=3, help="timed series; the result is the median of their fastest runs"
    )
    b.add_argument("--budget-ms", type=positive_float, help="judge the file against this budget: exit 0 within, 1 "
                   "over beyond the measured noise, 3 within noise of it (more rounds are taken first)")  # fmt: skip
    b.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_timing_args(b, 1000.0)
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
    except HwnasError as exc:
        print(f"hwnas: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `hwnas space show fbnetv2 --kernels | head`
        return 0
    except KeyboardInterrupt:
        print("hwnas: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


def main_entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
