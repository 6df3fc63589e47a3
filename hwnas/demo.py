"""``hwnas demo``: the whole pipeline on a built-in default, in a few minutes on a laptop CPU.

1. profile every kernel of the ``cifar`` space on this CPU (ONNX Runtime, one thread) into a LUT;
2. time a few dozen whole networks end to end and fit the LUT's calibration (``lut validate --fit``);
3. search under a latency budget halfway through the space's predicted range, less a margin
   that step 2 justifies (the error of 90% of its held-out networks), on the built-in synthetic
   data (``hwnas-synthetic``; it says nothing about real accuracy);
4. retrain the derived architecture briefly;
5. export ONNX and TFLite, check both against PyTorch, time the ONNX file on the CPU and hold
   it to the budget, with the noise of that measurement (:mod:`hwnas.latency.verdict`).

Before timing it warns when other processes compete for the CPU, and it trains with only the
cores they leave free.

Every step writes into one folder and resumes: re-running the command after an interruption
skips what is done.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas.core.errors import HwnasError
from hwnas.core.extras import missing
from hwnas.core.fileio import write_text_atomic

DATA = "synthetic:n=2000,size=32"


@dataclass
class DemoConfig:
    out: Path
    space: str = "cifar"
    device: str = "ort-cpu:threads=1"
    budget_quantile: float = 0.5
    validate_samples: int = 40
    search_epochs: int = 6
    train_epochs: int = 5
    data: str = DATA
    progress: bool = True
    seed: int = 0
    statistic: str = "fastest"  # what the budget means (hwnas.latency.statistic)


@dataclass
class DemoReport:
    steps: list[tuple[str, float, str]] = field(default_factory=list)  # (step, seconds, result)
    files: dict[str, str] = field(default_factory=dict)
    budget_ms: float = 0.0
    over_budget: list[str] = field(default_factory=list)
    within_noise: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


MAX_MARGIN = 0.25


def margin_of(rows: Any) -> float:
    """The search's margin below the budget: the 90th percentile of the calibrated prediction's
    relative error on the held-out networks of the validation (at most ``MAX_MARGIN``)."""
    import numpy as np

    scored = rows[rows["role"] == "score"]
    err = np.abs(scored["calibrated_ms"].to_numpy() / scored["measured_ms"].to_numpy() - 1)
    err = err[np.isfinite(err)]
    return float(min(MAX_MARGIN, np.quantile(err, 0.9))) if len(err) else MAX_MARGIN


def run_demo(cfg: DemoConfig, say: Any = print) -> DemoReport:
    from hwnas.devices import open_device
    from hwnas.export.child_file import load_child
    from hwnas.latency.validate import validate
    from hwnas.search.cost import make_cost
    from hwnas.search.loop import Search, SearchConfig
    from hwnas.spaces import get_space
    from hwnas.train.checkpoints import has_search_checkpoint
    from hwnas.train.config import TrainConfig
    from hwnas.workflows import busy_warning, export_and_check, fit_torch_threads, profile_space, train_and_save

    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    report = DemoReport()
    space = get_space(cfg.space)
    device = open_device(cfg.device)
    lut = out / f"{space.name}.lut"

    for note in (busy_warning(device.threads), fit_torch_threads()):
        if note:
            say(f"note: {note}")
    t0 = time.perf_counter()
    say(f"[1/5] profiling {len(space.kernels())} kernels of {space.name} on {device.spec} -> {lut}")
    prof = profile_space(space, device, lut, seed=cfg.seed, progress=cfg.progress)
    report.steps.append(("profile", time.perf_counter() - t0, f"{prof.kernels} kernels, {prof.measured} measured now"))

    t0 = time.perf_counter()
    say(f"[2/5] timing {cfg.validate_samples} networks end to end; fitting the calibration")
    val = validate(lut, space, device, cfg.validate_samples, fit=True, progress=cfg.progress, seed=cfg.seed,
                   statistic=cfg.statistic)  # fmt: skip
    cal = val.calibrated or {}
    noisy = " [NOISY RUN]" if val.noisy else ""
    conditions = f"; {val.conditions.text()}" if val.conditions is not None else ""
    report.steps.append(("calibrate", time.perf_counter() - t0,
                         f"held-out within 10%: {val.raw['within_10']:.0%} raw -> {cal.get('within_10', 0):.0%} "
                         f"calibrated{noisy}; Kendall tau {cal.get('kendall_tau', float('nan')):.3f}; noise floor "
                         f"{val.noise.get('within_10', float('nan')):.0%} of rounds within 10%{conditions}"))  # fmt: skip
    if val.noisy:
        say(f"note: the validation ran in a noisy hour ({'; '.join(val.noisy)}); its figures are labelled")
    for line in val.drift.messages(str(lut), space.name, device.spec) if val.drift is not None else []:
        say(f"note: {line}")
    if prof.unstable:
        say(f"note: {len(prof.unstable)} kernel(s) never agreed across rounds within the profile's time budget")

    cost = make_cost("latency", space, lut, cfg.statistic)
    lo, hi = cost.smallest(space)[1], cost.largest(space)[1]
    budget = round(lo + cfg.budget_quantile * (hi - lo), 4)
    margin = margin_of(val.rows)
    target = round(budget * (1 - margin), 4)
    report.budget_ms = budget
    run = out / "search"
    t0 = time.perf_counter()
    say(
        f"[3/5] searching under {target:g} ms: the budget {budget:g} ms (by each round's {cfg.statistic} run) less "
        f"a {margin:.1%} margin (90% of the "
        f"held-out networks were predicted within it); the space spans {lo:.3f} to {hi:.3f} ms; data {cfg.data}"
    )
    scfg = SearchConfig(space=space.name, budget=target, cost="latency", lut=str(lut), data=cfg.data,
                        epochs=cfg.search_epochs, warmup_epochs=min(2, cfg.search_epochs - 1), seed=cfg.seed,
                        statistic=cfg.statistic)  # fmt: skip
    done = (run / "arch.json").exists()
    if not done:
        result = Search(scfg, run, resume=has_search_checkpoint(run), progress=cfg.progress).run()
        arch, predicted = result.derivation.arch, result.derivation.cost
    else:
        from hwnas.spaces.arch import Architecture

        arch = Architecture.load(run / "arch.json")
        predicted = cost.of(arch)
    report.steps.append(("search", time.perf_counter() - t0, f"{arch.to_str()} (predicted {predicted:.3f} ms)"))

    t0 = time.perf_counter()
    child_path = run / "child.safetensors"
    say(f"[4/5] retraining the derived architecture for {cfg.train_epochs} epochs")
    if not child_path.exists():
        train_and_save(
            arch, TrainConfig(data=cfg.data, epochs=cfg.train_epochs, seed=cfg.seed), child_path, progress=cfg.progress
        )
    child = load_child(None, child_path)
    report.steps.append(("train", time.perf_counter() - t0,
                         f"val {child.meta.get('val_acc', 0):.1%}, test {child.meta.get('test_acc') or 0:.1%} "
                         "(synthetic data)"))  # fmt: skip

    t0 = time.perf_counter()
    formats = ["onnx"] if missing("tflite") else ["onnx", "tflite"]  # the base install exports ONNX only
    say("[5/5] exporting " + ("ONNX and TFLite" if "tflite" in formats else "ONNX (TFLite needs the 'tflite' extra: "
        "pip install 'hwnas[tflite]')") + ", checking them against PyTorch and the budget")  # fmt: skip
    outcome = export_and_check(child, out / "export", formats, ["fp32"], data=cfg.data,
                               calibration_images=50, check_images=200, device=device, lut=str(lut),
                               budget_ms=budget, stem="demo", progress=cfg.progress, statistic=cfg.statistic)  # fmt: skip
    files, report.over_budget, report.within_noise = outcome.files, outcome.over_budget, outcome.within_noise
    report.steps.append(("export", time.perf_counter() - t0, ", ".join(
        f"{f.path.name}: |diff| {f.max_abs_diff:.1e}" + (f", measured {f.measured_ms:.3f} ms" if f.measured_ms else "")
        for f in files)))  # fmt: skip
    for f in files:
        report.files[f.path.name] = str(f.path)
    report.files["lut"] = str(lut)
    report.files["run"] = str(run)
    onnx = next(f for f in files if f.format == "onnx")
    report.summary = {"budget_ms": budget, "search_budget_ms": target, "margin": margin, "predicted_ms": predicted,
                      "measured_ms": onnx.measured_ms, "noise_ms": onnx.noise_ms, "verdict": onnx.verdict,
                      "statistic": cfg.statistic, "measured_by_statistic_ms": onnx.figures_ms,
                      "arch": arch.to_str(), "device": device.spec, "over_budget": report.over_budget,
                      "within_noise": report.within_noise}  # fmt: skip
    write_text_atomic(out / "demo.json", json.dumps({"steps": report.steps, **report.summary,
                                                     "files": report.files}, indent=2) + "\n")  # fmt: skip
    if onnx.measured_ms is None:
        raise HwnasError("the ONNX file was not measured")
    return report
