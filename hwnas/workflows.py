"""The steps a user runs, each one function that both the command line (``hwnas.cli``) and ``demo.py`` call.

* :func:`profile_space`: time every kernel of a space on a device into a LUT (created, resumed or
  extended), and record which spaces the LUT covers and what the last profile did;
  :func:`profile_farm`: the same on several devices at once, one LUT each;
* :func:`train_and_save`: load a dataset, split it, train an architecture (from scratch or from
  a search's supernet) and write the child file;
* :func:`export_and_check`: export a trained child to ONNX / TFLite, check the files against
  PyTorch, and measure them on a device against a latency budget;
* :func:`busy_warning` and :func:`fit_torch_threads`: look at what else the machine runs before
  timing (warn) or training (use only the cores that are free, instead of fighting a neighbour
  for a core it holds).

They hold the bookkeeping between library calls, so the command line only parses, calls and
prints, and the demo is a short list of these calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwnas.core.formats import FILE_FORMATS, FORMAT_PRECISIONS, PRECISIONS

if TYPE_CHECKING:
    from hwnas.devices import Device, TimingConfig
    from hwnas.export.child_file import Child
    from hwnas.export.pipeline import Exported
    from hwnas.latency.disturbance import GuardConfig
    from hwnas.latency.profiler import ProfileReport
    from hwnas.latency.store import LutStore
    from hwnas.latency.verdict import Verdict
    from hwnas.spaces.arch import Architecture
    from hwnas.spaces.space import SearchSpace
    from hwnas.train.config import TrainConfig
    from hwnas.train.distributed import Group
    from hwnas.train.training import TrainResult


def busy_warning(threads: int = 1, seconds: float = 0.5) -> str | None:
    """A one-line warning when other processes compete for the CPU a timing needs, else None."""
    from hwnas.devices.conditions import sample

    cond = sample(seconds)
    why = cond.reasons(threads)
    if not why:
        return None
    return (f"this machine is busy ({'; '.join(why)}; {cond.describe()}): disturbed measurements will be re-taken "
            "up to a cap, but timings taken now are less trustworthy; a quiet machine gives a better LUT")  # fmt: skip


def fit_torch_threads(seconds: float = 0.3) -> str | None:
    """Lower torch's CPU threads to the cores other processes leave free; say so, else None.

    Two threads on a 2-core machine where another process holds a core wait for each other at
    every parallel region; one thread is then several times faster. Never raises the count, and
    leaves it alone under torchrun (``WORLD_SIZE`` set), where the launcher chose it.
    """
    import os

    import torch

    from hwnas.devices.conditions import sample

    if os.environ.get("WORLD_SIZE"):
        return None
    cond = sample(seconds)
    if cond.others_cores is None:
        return None
    free = max(1, round(cond.cpus - cond.others_cores))
    before = torch.get_num_threads()
    if free >= before:
        return None
    torch.set_num_threads(free)
    return (f"other processes use {cond.others_cores:.1f} of {cond.cpus} cores: training with {free} thread(s) "
            f"instead of {before}")  # fmt: skip


class ProfileInterrupted(KeyboardInterrupt):
    """Ctrl-C during a profile: ``saved`` measurements are in the LUT, ``new`` of them from this run."""

    def __init__(self, saved: int, new: int) -> None:
        super().__init__(f"{saved} measurements saved ({new} new)")
        self.saved, self.new = saved, new


def profile_space(
    space: SearchSpace,
    device: Device,
    lut: str | Path,
    rounds: int = 3,
    timing: TimingConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
    before_timing: Callable[[], None] | None = None,
    bar: Any = None,
    label: str | None = None,
    guard: GuardConfig | None = None,
    remeasure: str | None = None,
) -> ProfileReport:
    """Profile ``space`` on ``device`` into ``lut``; the LUT's ``spaces`` list gains this space.
    ``before_timing`` runs once the LUT is open and checked (e.g. to warn about a busy machine).
    ``guard``: how hard to try for rounds that agree (:mod:`hwnas.latency.disturbance`).
    ``remeasure``: kernels measured again in every round, replacing what the LUT holds: ``drifted``
    (those ``hwnas lut validate`` found profiled slower than they run), ``unstable`` (those whose
    rounds never agreed), ``all``, or comma-separated kernel keys of the space.

    A killed or interrupted profile resumes on the next call; an interruption raises
    :class:`ProfileInterrupted` with the counts saved so far.
    """
    from hwnas.latency.profiler import profile
    from hwnas.latency.store import LutStore

    if remeasure and remeasure not in ("drifted", "unstable", "all"):
        remeasured_keys(remeasure, None, space)  # unknown keys fail before a LUT file is made
    with LutStore.create_or_open(lut, device.fingerprint(), device.spec, force=force) as store:
        spaces = set(store.get_meta("spaces", []))
        store.set_meta("spaces", sorted(spaces | {space.name}))
        before = store.count()
        keys = remeasured_keys(remeasure, store, space) if remeasure else []
        if before_timing is not None:
            before_timing()
        try:
            report = profile(space.kernels(), device, store, rounds=rounds, timing=timing, seed=seed, progress=progress,
                             bar=bar, label=label, guard=guard, remeasure=keys)  # fmt: skip
        except KeyboardInterrupt:
            saved = store.count()
            raise ProfileInterrupted(saved, saved - before) from None
        store.set_meta(
            "last_profile", {**report.__dict__, "space": space.name, "overhead_ratio": report.overhead_ratio}
        )
    return report


def remeasured_keys(which: str, store: LutStore | None, space: SearchSpace) -> list[str]:
    """The kernel keys ``hwnas profile --remeasure`` names (see :func:`profile_space`)."""
    from hwnas.core.errors import HwnasError
    from hwnas.latency.stability import DRIFT_META, STABILITY_META, drifted_kernels, named, unstable_kernels

    keys = {k.key for k in space.kernels()}
    if which == "all":
        return sorted(keys)
    if which in ("drifted", "unstable"):
        assert store is not None
        meta = {name: store.get_meta(name) for name in (DRIFT_META, STABILITY_META)}
        return sorted(keys & set(drifted_kernels(meta) if which == "drifted" else unstable_kernels(meta)))
    asked = [k.strip() for k in which.split(",") if k.strip()]
    unknown = [k for k in asked if k not in keys]
    if unknown or not asked:
        raise HwnasError(f"--remeasure: {named(unknown) or 'no kernel given'} is not a kernel of {space.name}; give "
                         "drifted, unstable, all, or keys as 'hwnas lut show' lists them")  # fmt: skip
    return sorted(set(asked))


@dataclass
class FarmResult:
    """How one device of a farm profile ended: its report, or the error that stopped it."""

    device: str
    lut: Path
    report: ProfileReport | None = None
    error: str | None = None
    saved: int = 0  # measurements in its LUT at the end


def profile_farm(
    space: SearchSpace,
    devices: Sequence[Device],
    luts: Sequence[str | Path],
    rounds: int = 3,
    timing: TimingConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
    guard: GuardConfig | None = None,
) -> list[FarmResult]:
    """Profile ``space`` on several devices at once, one thread per device, each into its own LUT.

    One LUT per device keeps every existing command (validate, search, export) unchanged, and a
    LUT is the device's identity. The kernel models are converted first, once per format, then
    every device is timed in its own thread. A device that fails (an agent killed, a phone
    unplugged) stops only itself: the others go on, and what it measured is in its LUT, so the
    same command resumes it. At most one of the devices may run on this machine, or they would
    time each other.
    """
    import threading

    from hwnas.core.errors import HwnasError
    from hwnas.core.progress import progress_bar
    from hwnas.latency.artifact_cache import ArtifactCache
    from hwnas.latency.profiler import convert_kernels
    from hwnas.latency.store import LutStore

    if len(devices) != len(luts):
        raise HwnasError(f"give one --out per --device ({len(devices)} devices, {len(luts)} --out)")
    paths = [Path(p).resolve() for p in luts]
    if len(set(paths)) != len(paths):
        raise HwnasError("two devices would write the same LUT; give each --device its own --out")
    here = [d.spec for d in devices if d.runs_here]
    if len(here) > 1:
        raise HwnasError(f"{', '.join(here)} all run on this machine and would time each other; profile them one "
                         "after another, or through agents on other machines")  # fmt: skip
    results = [FarmResult(d.spec, Path(p)) for d, p in zip(devices, luts, strict=True)]
    with progress_bar(progress) as bar:
        kernels = sorted(set(space.kernels()))
        for d in devices:  # conversion uses torch: once per format, before any timing
            if d.format != "torch":
                cache = ArtifactCache(d.format, d.batch, precision=d.precision)
                convert_kernels(kernels, d, cache, bar, d.spec)

        def run(device: Device, result: FarmResult) -> None:
            try:
                result.report = profile_space(space, device, result.lut, rounds=rounds, timing=timing, seed=seed,
                                              force=force, bar=bar, label=device.spec, guard=guard)  # fmt: skip
            except HwnasError as exc:
                result.error = str(exc)
            except Exception as exc:  # a device's own failure must not stop the others
                result.error = f"{type(exc).__name__}: {exc}"
            if result.lut.exists():
                try:
                    with LutStore.open(result.lut) as store:
                        result.saved = store.count()
                except HwnasError:
                    pass

        threads = [threading.Thread(target=run, args=(d, r), name=d.spec, daemon=True)
                   for d, r in zip(devices, results, strict=True)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)  # a short join keeps Ctrl-C deliverable
    return results


def train_and_save(
    arch: Architecture,
    cfg: TrainConfig,
    out: str | Path,
    progress: bool = True,
    before_training: Callable[[], None] | None = None,
    group: Group | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train ``arch`` as ``cfg`` says and write the child file ``out`` (under torchrun, ``group``:
    every rank trains its share, rank 0 writes). After every epoch but the last the state goes to
    ``OUT.checkpoint``; ``resume`` goes on from it, and it is removed once ``out`` is written.

    ``cfg.init="supernet"`` starts from the weights of the supernet saved in the search folder
    ``cfg.run``. ``cfg.split_seed`` picks the validation images; ``cfg.seed`` the initialization and
    the batch order.
    """
    from hwnas.core.errors import HwnasError
    from hwnas.search.slicing import sliced_child_of_run
    from hwnas.train.checkpoints import read_train_checkpoint, train_checkpoint_path
    from hwnas.train.data import fit_notes, load_splits
    from hwnas.train.training import save_child, train_child
    from hwnas.train.training import torch_device as make_device

    cfg.check()
    checkpoint = train_checkpoint_path(out)
    if checkpoint.exists() and not resume:
        raise HwnasError(f"{checkpoint}: an interrupted training of {out} is there; add --resume to go on from it, "
                         "or delete it to start again")  # fmt: skip
    if resume and not checkpoint.is_file():
        raise HwnasError(f"{checkpoint}: no interrupted training of {out} to resume; drop --resume")
    if resume:
        read_train_checkpoint(checkpoint)  # an unreadable one is refused before the data is loaded
    if group is None or group.main:  # the checkpoints, then the child, go there
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    splits = load_splits(cfg.data, arch.num_classes, arch.in_channels, mode=cfg.data_mode, bad_images=cfg.bad_images,
                         limit=cfg.limit, seed=cfg.split_seed, with_test=True, progress=progress,
                         augment=cfg.augment)  # fmt: skip
    fitted = replace(arch, num_classes=len(splits.classes))  # the data decides the classifier's width
    if fitted.num_classes != arch.num_classes:
        splits.notes.append(f"the classifier has the data's {fitted.num_classes} classes, not the architecture's "
                            f"{arch.num_classes}")  # fmt: skip
    arch = fitted
    start = sliced_child_of_run(cfg.run, arch) if cfg.init == "supernet" and cfg.run is not None else None
    if before_training is not None:  # the inputs are checked: about to train
        before_training()
    result = train_child(arch, splits, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, init=start,
                         seed=cfg.seed, device=make_device(cfg.torch_device), progress=progress,
                         precision=cfg.precision_train,
                         streaming={"workers": cfg.workers, "bad_images": cfg.bad_images}, group=group,
                         checkpoint=checkpoint, resume=resume)  # fmt: skip
    if group is None or group.main:
        save_child(out, result, arch, splits, {"init": cfg.init, "data": cfg.data, "epochs": cfg.epochs})
        checkpoint.unlink(missing_ok=True)
    result.notes = [*fit_notes(splits, arch.resolution), *result.notes]
    return result


def default_gates(device: Device | None) -> tuple[str, ...]:
    """The precisions a latency budget gates by default: on a CPU, fp32 and int8 (fp16 files are for
    GPU delegates; a CPU runtime dequantizes their weights and runs fp32); elsewhere every one."""
    if device is not None and device.kind.endswith("-cpu"):
        return FORMAT_PRECISIONS["onnx"]  # fp32 and int8
    return PRECISIONS


@dataclass
class ExportOutcome:
    """The files written (with their checks and latency) and their budget verdicts, by file name.
    Only the files of a precision in ``gates`` can fail the budget; the others are reported."""

    files: list[Exported]
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    device: str = ""
    gates: tuple[str, ...] = PRECISIONS

    def _judged(self, outcome: str, gated: bool) -> list[str]:
        from hwnas.export.latency_check import judged

        precision = {f.path.name: f.precision for f in self.files}
        chosen = {n: v for n, v in self.verdicts.items() if (precision.get(n) in self.gates) == gated}
        return judged(chosen, outcome, self.device)

    @property
    def over_budget(self) -> list[str]:
        """Gated files over the budget beyond the measured noise, one line each."""
        from hwnas.latency.verdict import OVER

        return self._judged(OVER, True)

    @property
    def within_noise(self) -> list[str]:
        """Gated files over the budget by less than the measured noise, one line each."""
        from hwnas.latency.verdict import NOISE

        return self._judged(NOISE, True)

    @property
    def not_gated(self) -> list[str]:
        """Files of other precisions that are not within budget: reported, never failed."""
        from hwnas.latency.verdict import NOISE, OVER

        return self._judged(OVER, False) + self._judged(NOISE, False)


def export_and_check(
    child: Child,
    out: str | Path,
    formats: Sequence[str],
    precisions: Sequence[str] = ("fp32",),
    data: str | None = None,
    calibration_images: int = 500,
    check_images: int = 500,
    device: Device | None = None,
    lut: str | None = None,
    budget_ms: float | None = None,
    force: bool = False,
    stem: str = "model",
    gates: Sequence[str] | None = None,
    progress: bool = False,
    statistic: str = "fastest",
    on_checked: Callable[[], None] | None = None,
    **options: Any,
) -> ExportOutcome:
    """Export ``child``; with ``device``, measure the files it runs (and predict with ``lut``),
    in the ``statistic`` of each round's runs that the budget means.

    ``on_checked()`` is called once the inputs passed their checks, before anything is written
    (the CLI's warnings about the LUT, which would only clutter an error).

    ``gates``: the precisions the budget can fail (default :func:`default_gates`).
    ``data`` supplies the int8 calibration images and the real images of the checks; ``options``
    go to :func:`hwnas.export.pipeline.export_child` (``nhwc``, ``dynamic_batch``, ``simplify``).
    """
    from hwnas.export.latency_check import check_latency
    from hwnas.export.pipeline import export_child, export_images
    from hwnas.export.request import ExportRequest

    ExportRequest(formats, precisions, data=data, has_device=device is not None, lut=lut, budget_ms=budget_ms,
                  gates=gates, nhwc=options.get("nhwc"),
                  dynamic_batch=options.get("dynamic_batch", False), simplify=options.get("simplify", False)).check()  # fmt: skip
    if lut is not None and device is not None:  # a LUT of another device fails before anything is written
        from hwnas.latency.predictor import LatencyPredictor

        predictor = LatencyPredictor.from_lut(lut)
        predictor.table.check_device(device.fingerprint(), force=force)
        predictor.factor(statistic)  # a LUT without the budget's statistic factor too
    if on_checked is not None:
        on_checked()
    check, calibration, labelled = (
        export_images(data, child, calibration_images, check_images) if data else (None, [], None)
    )
    from hwnas.core.progress import progress_bar

    n_files = sum(1 for f in formats for p in precisions if p in FORMAT_PRECISIONS[f])
    with progress_bar(progress) as bar:
        task = bar.add_task("exporting", total=n_files)

        def on_file(name: str) -> None:
            done = bar.tasks[0].description != "exporting"
            bar.update(task, description=f"converting and checking {name}", advance=1 if done else 0)

        files = export_child(child, Path(out), formats, precisions, check_inputs=check, calibration=calibration,
                             labelled=labelled, stem=stem, on_file=on_file, **options)  # fmt: skip
        bar.update(task, description="exported", completed=n_files)
    if device is None:
        return ExportOutcome(files)
    verdicts = check_latency(files, child.arch, device, lut, budget_ms, force=force, statistic=statistic)
    return ExportOutcome(files, verdicts, device.spec, tuple(gates) if gates is not None else default_gates(device))


def bench_file(
    path: str | Path,
    device: Device,
    timing: TimingConfig,
    rounds: int,
    budget_ms: float | None = None,
    statistic: str = "fastest",
) -> dict[str, Any]:
    """Time the model file ``path`` on ``device`` (in a memory-capped child process, see
    :mod:`hwnas.devices.isolated`): ``rounds`` series, the median of their ``statistic`` runs
    (fastest, median or p90 of each series), their noise, the median of each statistic, the
    machine's conditions over the timing, and with ``budget_ms`` the verdict in that statistic
    (more rounds first when the measurement lands within its noise of the budget)."""
    import statistics

    from hwnas.core.errors import HwnasError
    from hwnas.devices.base import Stats, model_format
    from hwnas.devices.conditions import Conditions, CpuSnapshot, between
    from hwnas.devices.isolated import measure_isolated
    from hwnas.latency.statistic import STATISTICS, check_statistic, of_stats
    from hwnas.latency.verdict import EXTRA_ROUNDS, judge, near, noise_of

    check_statistic(statistic)
    path = Path(path)
    if path.is_dir():
        raise HwnasError(f"{path}: is a folder; give a .onnx, .tflite or .pte file")
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FILE_FORMATS:
        raise HwnasError(f"{path}: expected a .onnx, .tflite or .pte file")
    if fmt != device.format:
        raise HwnasError(f"{path}: {device.kind} runs {device.format} models, not {fmt}; pick a device that runs {fmt}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HwnasError(f"{path}: cannot read the model ({exc.strerror})") from None
    if model_format(data) != fmt:
        raise HwnasError(f"{path}: not a {fmt} model file (its first bytes are not a {fmt} header); truncated?")
    before = CpuSnapshot.take()
    remote: list[Conditions] = []

    def measure(n: int) -> tuple[list[Stats], list[list[int]]]:
        if device.runs_here:  # a file from outside: loaded and timed in a memory-capped child process
            return measure_isolated(device.spec, data, timing, n, str(path))
        runner = device.load(data)  # an agent or a phone: it runs there, behind its own isolation
        taken = [device.measure_watched(runner, timing) for _ in range(n)]
        remote.extend(c for _, c in taken)
        return [s for s, _ in taken], [list(s) for s in runner.input_shapes]

    stats, input_shapes = measure(rounds)
    verdict = (
        judge([of_stats(s, statistic) for s in stats], budget_ms, statistic=statistic)
        if budget_ms is not None
        else None
    )
    if verdict is not None and budget_ms is not None and near(verdict):
        stats += measure(EXTRA_ROUNDS)[0]
        verdict = judge([of_stats(s, statistic) for s in stats], budget_ms, statistic=statistic)
    # the machine the model ran on: this one, or the agent's (the worst of its spans)
    cond = between(before, CpuSnapshot.take()) if device.runs_here else max(remote, key=lambda c: c.others_cores or 0)
    per_round = [of_stats(s, statistic) for s in stats]  # each round's fastest (median, p90) run
    return {
        "model": str(path), "device": device.spec, "fingerprint": device.fingerprint(), "input_shapes": input_shapes,
        "statistic": statistic, "latency_ms": statistics.median(per_round), "noise_ms": noise_of(per_round),
        "by_statistic_ms": {n: statistics.median(of_stats(s, n) for s in stats) for n in STATISTICS},
        "rounds": [s.to_dict() for s in stats],
        "conditions": {**cond.to_dict(), "disturbed": cond.disturbed(device.threads)},
        "verdict": verdict.to_dict() if verdict is not None else None,
    }  # fmt: skip


def export_lut_table(lut: str | Path, out: str | Path, fmt: str, raw: bool = False) -> int:
    """Write a LUT's per-kernel table (or, with ``raw``, every measurement) as ``csv`` or ``parquet``;
    return the number of rows."""
    from hwnas.core.errors import HwnasError
    from hwnas.core.fileio import write_bytes_atomic
    from hwnas.latency.table import LatencyTable

    table = LatencyTable.load(lut)
    df = table.measurements if raw else table.df
    if fmt == "csv":
        data = df.to_csv(index=False).encode()
    else:
        try:
            data = df.to_parquet(index=False)
        except ImportError:
            raise HwnasError("Parquet export needs pyarrow: pip install pyarrow") from None
    write_bytes_atomic(out, data)
    return len(df)
