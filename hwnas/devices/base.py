"""The device interface: load a model artifact, time it, say what the device is.

Timing method (docs/design.md, "The noise model"): warm up by count *and* time, then time single runs
with ``perf_counter_ns`` until both a minimum count and a minimum time are reached (capped by a
maximum time), and summarize as median, p10, p90, mean, std and n. Optionally pin the process
to CPU cores while timing.
"""

from __future__ import annotations

import os
import statistics
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from hwnas.core.errors import HwnasError
from hwnas.core.formats import PTE_IDENTIFIER, TFLITE_IDENTIFIER
from hwnas.devices.conditions import Conditions, CpuSnapshot, between


class DeviceError(HwnasError):
    """A device that can't be used here, or a model it can't run."""


@dataclass(frozen=True)
class TimingConfig:
    """How long to warm up and to time one model (one round).

    Warm-up runs until ``warmup_runs`` runs *and* ``warmup_s`` seconds are done. Timing runs until
    ``min_runs`` runs *and* ``min_time_s`` seconds are done, but stops after ``max_time_s``
    seconds once 3 runs are in (a very slow model), or at ``max_runs``.
    """

    warmup_runs: int = 5
    warmup_s: float = 0.03
    min_runs: int = 20
    min_time_s: float = 0.1
    max_time_s: float = 10.0
    max_runs: int = 100_000


@dataclass(frozen=True)
class Stats:
    """Latency statistics of one timed series, in milliseconds, plus bookkeeping."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    n: int
    warmup_n: int
    busy_s: float  # wall time spent inside warm-up and timed runs
    min_ms: float | None = None  # the fastest timed run (None: a source that did not report it)

    @property
    def round_ms(self) -> float:
        """The round's latency as hwnas uses it: its fastest run (``min_ms``), or the median where
        the minimum is unknown. A neighbour on the machine only ever adds time, so the fastest runs
        of a round are the ones it did not touch; docs/notebook/busy-machine.md ("Which per-round statistic") measured
        the minimum as accurate as the median on a quiet machine and more accurate beside a busy one."""
        return self.min_ms if self.min_ms is not None else self.median_ms

    @classmethod
    def from_samples(cls, samples_ns: list[int], warmup_n: int, busy_s: float) -> Stats:
        if not samples_ns:
            raise ValueError("no timed runs")
        ms = sorted(x / 1e6 for x in samples_ns)
        q = statistics.quantiles(ms, n=10, method="inclusive") if len(ms) > 1 else [ms[0]] * 9
        return cls(
            median_ms=statistics.median(ms),
            p10_ms=q[0],
            p90_ms=q[-1],
            mean_ms=statistics.fmean(ms),
            std_ms=statistics.pstdev(ms) if len(ms) > 1 else 0.0,
            n=len(ms),
            warmup_n=warmup_n,
            busy_s=busy_s,
            min_ms=ms[0],
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stats:
        """From :meth:`to_dict` of this or another hwnas version (an agent's answer): fields this
        version does not know are left out, and ``min_ms`` may be missing (an older agent)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def time_samples(run: Callable[[], object], cfg: TimingConfig) -> tuple[list[int], int, float]:
    """Warm up, then time ``run()`` one call at a time (see :class:`TimingConfig`); returns every
    timed run in ns, the number of warm-up runs, and the seconds spent in both."""
    clock = time.perf_counter_ns
    start = clock()
    warm = 0
    while warm < cfg.warmup_runs or clock() - start < cfg.warmup_s * 1e9:
        run()
        warm += 1
    samples: list[int] = []
    t0 = clock()
    while True:
        a = clock()
        run()
        b = clock()
        samples.append(b - a)
        elapsed = b - t0
        n = len(samples)
        if n >= cfg.min_runs and elapsed >= cfg.min_time_s * 1e9:
            break
        if n >= cfg.max_runs or (n >= 3 and elapsed >= cfg.max_time_s * 1e9):
            break
    return samples, warm, (clock() - start) / 1e9


def time_calls(run: Callable[[], object], cfg: TimingConfig) -> Stats:
    """:func:`time_samples`, summarized."""
    return Stats.from_samples(*time_samples(run, cfg))


@contextmanager
def pinned(cores: tuple[int, ...] | None) -> Iterator[None]:
    """Pin this process to ``cores`` for the duration (Linux); no-op when ``cores`` is None."""
    if not cores or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, set(cores))
    except OSError as exc:
        raise DeviceError(f"cannot pin to CPU cores {cores}: {exc}; this machine has cores {sorted(before)}") from None
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class Runner(ABC):
    """A model loaded on a device with its input buffers ready; ``run()`` is one inference."""

    input_shapes: list[tuple[int, ...]]

    @abstractmethod
    def run(self) -> object: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


@dataclass(frozen=True)
class Param:
    """One ``key=value`` parameter of a device spec."""

    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] = ()


# Parameters several devices share.
BATCH = Param(int, 1, "batch size")
PIN = Param(tuple, None, "CPU cores to pin the process to while timing, e.g. pin=0 or pin=0+1")
GPU_INDEX = Param(int, 0, "CUDA device index")


def precision_param(*choices: str) -> Param:
    """The precision of the models a device times, in the form export produces them."""
    return Param(str, "fp32", "precision of the timed models (as exported): " + ", ".join(choices), choices=choices)


class Device(ABC):
    """A place where models run and are timed. Subclasses set ``kind``, ``format`` and ``params``.

    ``format`` is the artifact the device loads: ``"onnx"``, ``"tflite"`` or ``"pte"`` bytes, or ``"torch"``
    (an ``nn.Module``).
    """

    kind: ClassVar[str]
    format: ClassVar[str]
    summary: ClassVar[str]
    params: ClassVar[dict[str, Param]] = {}
    positional: ClassVar[str | None] = None  # a bare value in the spec sets this param
    runs_here: ClassVar[bool] = True  # False: models run on another machine (an agent, a phone over adb)

    def __init__(self, **options: Any) -> None:
        self.options = {name: options.get(name, p.default) for name, p in self.params.items()}

    # --- identity -----------------------------------------------------------------------
    @property
    def spec(self) -> str:
        """The canonical spec string, every parameter spelled out."""
        items = ",".join(f"{k}={_fmt(v)}" for k, v in self.options.items()
                         if v is not None and not (k == "precision" and v == "fp32"))  # fmt: skip
        return f"{self.kind}:{items}" if items else self.kind

    @classmethod
    @abstractmethod
    def availability(cls) -> str | None:
        """None when usable here, else why not and what to install."""

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """What the device is: kind, runtime and version, threads, precision, batch, hardware..."""

    # --- running ------------------------------------------------------------------------
    @abstractmethod
    def load(self, artifact: Any, input_shape: tuple[int, ...] | None = None) -> Runner:
        """Load a model artifact of this device's ``format``; inputs are filled with random data."""

    def measure(self, runner: Runner, timing: TimingConfig | None = None) -> Stats:
        """Time a loaded model with the method of :func:`time_calls`."""
        with pinned(self.options.get("pin")):
            return time_calls(runner.run, timing or TimingConfig())

    def measure_watched(self, runner: Runner, timing: TimingConfig | None = None) -> tuple[Stats, Conditions]:
        """:meth:`measure`, and the machine's conditions over the same span (what else ran)."""
        before = CpuSnapshot.take()
        stats = self.measure(runner, timing)
        return stats, between(before, CpuSnapshot.take())

    @property
    def precision(self) -> str:
        """The precision of the models this device times (``fp32`` where it has no such setting)."""
        return str(self.options.get("precision") or "fp32")

    @property
    def threads(self) -> int:
        """CPU threads the device's runtime uses (1 where it has no such setting)."""
        return int(self.options.get("threads") or 1)

    @property
    def batch(self) -> int:
        return int(self.options.get("batch", 1))


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, tuple):
        return "+".join(map(str, v))
    return str(v)


def model_format(data: bytes) -> str | None:
    """``"tflite"`` (FlatBuffer with identifier ``TFL3``), ``"pte"`` (ExecuTorch's, ``ET12``), ``"onnx"`` (a protobuf that starts like a
    ModelProto), or None."""
    if len(data) >= 8 and data[4:8] == TFLITE_IDENTIFIER:
        return "tflite"
    if len(data) >= 8 and data[4:8] == PTE_IDENTIFIER:
        return "pte"
    # ONNX ModelProto: field 1 (ir_version, varint) first in every exporter's output, or a
    # length-delimited field (opset_import = 8, producer_name = 2, graph = 7) first.
    if len(data) >= 2 and data[0] in (0x08, 0x12, 0x1A, 0x22, 0x2A, 0x3A, 0x42):
        return "onnx"
    return None
