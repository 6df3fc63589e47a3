"""Reading the output of TFLite's / LiteRT's ``benchmark_model`` tool (the native binary).

The tool warms up, then times single ``Invoke()`` calls, and prints each series as one line of
summary statistics in microseconds, after the line that started it::

    Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
    count=56 first=2518 curr=2391 min=2305 max=3877 avg=2427.61 std=118 p5=2318 median=2402 p95=2610

The first series is the warm-up, the second the timed one. What the line holds depends on the
version (all read here):

* every version: ``count first curr min max avg std``; ``avg`` is printed with 6 significant
  digits (``1.23457e+06`` for a 1.2 s model), ``std`` as an integer (population std);
* a series whose runs all took the same time: ``count=N curr=V(all same)``; no runs: ``count=0``;
* recent LiteRT builds append ``p5= median= p95=``: the values at index ``n*p//100`` of the
  sorted runs (no interpolation; the median of an even count is the upper middle);
* from about TF 2.4 on, each line is prefixed ``INFO:`` / ``WARN:`` / ``ERROR:``; before, none.

Then a summary, ``Inference timings in us: Init: I, First inference: F, Warmup (avg): W,
Inference (avg): A`` (TF 2.2 on), or ``Average inference timings in us: Warmup: W, Init: I,
Inference: A`` (``no stats:`` instead of ``Inference:`` in the oldest); and memory lines
(``Peak memory footprint (MB): init= overall=``, later ``Memory footprint delta from the start of
the tool (MB): init= overall=``). ``Timings (microseconds): count=...`` lines belong to the
per-operator profile (``--enable_op_profiling``), not to the timed series, and are ignored.
No version of the tool prints its own or the runtime's version; a line that looks like one
(``TFLite version: X``, from a vendor build) is kept.

A failed run prints ``ERROR:`` lines (before TF 2.4 unprefixed ``Failed to ...`` lines) and
``Benchmarking failed.``, or aborts on a ``FATAL:`` line. :func:`parse_output` raises a one-line
:class:`DeviceError` for those, and for output without the timed series.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from hwnas.devices.base import DeviceError

_PREFIX = re.compile(r"^(INFO|WARN|WARNING|ERROR|FATAL|VERBOSE|DEBUG): ?")
_RUNNING = re.compile(r"^Running benchmark for (?:at least )?(\d+) iterations")
_STAT = re.compile(r"^count=\d+")
_PAIR = re.compile(r"([a-z0-9]+)=([-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|nan|inf))")
_SUMMARY = re.compile(r"^(?:Average )?[Ii]nference timings in us: (.*)$")
_SESSION = re.compile(r"^Initialized session in ([\d.eE+-]+) ?ms")
_MEMORY = re.compile(r"^(?:Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\): (.*)$")
_PEAK = re.compile(r"^Overall peak memory footprint \(MB\) via periodic monitoring: ([\d.eE+-]+)")
_MODEL_SIZE = re.compile(r"^The input model file size \(MB\): ([\d.eE+-]+)")
_PARAM = re.compile(r"^([A-Za-z#][^:\[\]]*?)\s*:\s*\[(.*)\]$")
_UNCONSUMED = re.compile(r"^Unconsumed cmdline flags: (.*)$")
_VERSION = re.compile(r"\b(?:TF ?Lite|TensorFlow Lite|LiteRT)(?: runtime)? version:?\s*\[?v?(\d+\.\d+[\w.+-]*)", re.I)
# Lines that mean the run failed however the output ends (the tool's own failure line, a crash,
# or the shell not running the binary at all).
_FATAL = re.compile(
    r"Benchmarking failed|CANNOT LINK EXECUTABLE|inaccessible or not found|: not found$|can't execute"
    r"|not executable|^Aborted|Segmentation fault|^Bus error|^Illegal instruction"
)
# Lines that explain a failure: errors of the tool (unprefixed before TF 2.4).
_CAUSE = re.compile(r"^(?:Failed to |Could not |Cannot |Error|Didn't find |Node number \d+ )")
_HARMLESS = ("Failed to get the input model file size",)  # a warning, unprefixed before TF 2.4


@dataclass(frozen=True)
class Series:
    """One series of runs as the tool summarizes it, in microseconds.

    ``p5_us``, ``median_us`` and ``p95_us`` are None where the tool prints no percentiles.
    """

    count: int
    min_us: float
    max_us: float
    avg_us: float
    std_us: float
    first_us: float
    p5_us: float | None = None
    median_us: float | None = None
    p95_us: float | None = None

    @property
    def has_percentiles(self) -> bool:
        return self.median_us is not None


@dataclass(frozen=True)
class BenchmarkOutput:
    """What one ``benchmark_model`` run printed: the timed series and what came with it."""

    inference: Series
    warmup: Series | None
    init_us: float | None  # interpreter set-up (load, delegates, allocation)
    runtime_version: str | None = None
    model_size_mb: float | None = None
    init_mem_mb: float | None = None
    overall_mem_mb: float | None = None
    peak_mem_mb: float | None = None
    params: dict[str, str] = field(default_factory=dict)  # the "Name: [value]" lines it logged
    unconsumed_flags: tuple[str, ...] = ()  # flags this build does not know (it ignores them)


def _series(line: str) -> Series:
    values = {k: float(v) for k, v in _PAIR.findall(line)}
    count = int(values.get("count", 0))
    if count == 0:
        return Series(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    if "min" not in values:  # "count=N curr=V(all same)": every run took V
        v = values["curr"]
        values.update({"min": v, "max": v, "avg": v, "std": 0.0, "first": v})
    return Series(
        count=count,
        min_us=values["min"],
        max_us=values["max"],
        avg_us=values["avg"],
        std_us=values["std"],
        first_us=values.get("first", values["min"]),
        p5_us=values.get("p5"),
        median_us=values.get("median"),
        p95_us=values.get("p95"),
    )


def _summary(text: str) -> dict[str, float]:
    out = {}
    for item in text.split(","):
        name, _, value = item.partition(":")
        try:
            out[name.strip()] = float(value.strip())
        except ValueError:
            continue
    return out


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_output(text: str) -> BenchmarkOutput:
    """The timed series and facts of one ``benchmark_model`` run from its output (stdout and
    stderr together, any line endings); :class:`DeviceError` for a failed run or no timings."""
    lines = [ln.strip() for ln in text.replace("\r", "\n").split("\n")]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise DeviceError("benchmark_model printed nothing")
    series: list[Series] = []
    running = False  # a "Running benchmark" line is waiting for its statistics line
    summary: dict[str, float] = {}
    session_ms = None
    mem: dict[str, float] = {}
    peak = model_size = None
    version = None
    params: dict[str, str] = {}
    unconsumed: tuple[str, ...] = ()
    fatal: list[str] = []
    causes: list[str] = []
    for raw in lines:
        m = _PREFIX.match(raw)
        level = m.group(1) if m else None
        line = raw[m.end() :] if m else raw
        if _RUNNING.match(line):
            running = True
        elif _STAT.match(line) and running:
            series.append(_series(line))
            running = False
        elif s := _SUMMARY.match(line):
            summary = _summary(s.group(1))
        elif s := _SESSION.match(line):
            session_ms = float(s.group(1))
        elif s := _MEMORY.match(line):
            mem = {k: float(v) for k, v in _PAIR.findall(s.group(1))}
        elif s := _PEAK.match(line):
            peak = float(s.group(1))
        elif s := _MODEL_SIZE.match(line):
            model_size = float(s.group(1))
        elif s := _UNCONSUMED.match(line):
            unconsumed = tuple(s.group(1).split())
        elif s := _PARAM.match(line):
            params[s.group(1)] = s.group(2)
        if version is None and (v := _VERSION.search(line)):
            version = v.group(1)
        if level == "FATAL" or _FATAL.search(line):
            fatal.append(line)
        elif level == "ERROR" or (level is None and _CAUSE.match(line) and not line.startswith(_HARMLESS)):
            causes.append(line)

    # The cause is the first error line that is not the tool's generic "Benchmarking failed.".
    specific = [ln for ln in causes + fatal if not ln.startswith("Benchmarking failed")]
    if fatal:
        raise DeviceError(f"benchmark_model failed: {_one_line((specific or fatal)[0])}")
    if len(series) < 2:
        if causes:
            raise DeviceError(f"benchmark_model failed: {_one_line(causes[0])}")
        what = "only the warm-up series" if series else "no timed series"
        raise DeviceError(f"benchmark_model printed {what}, no inference timings; last line: {_one_line(lines[-1])!r}")
    warmup, inference = series[-2], series[-1]
    if inference.count == 0:
        raise DeviceError("benchmark_model timed no inference runs (count=0)")
    reported = summary.get("Inference (avg)", summary.get("Inference", summary.get("no stats")))
    if reported is not None and not math.isclose(reported, inference.avg_us, rel_tol=1e-4):
        raise DeviceError(
            f"benchmark_model output is inconsistent: the timed series has avg={inference.avg_us:g} us "
            f"but the summary says {reported:g} us"
        )
    init_us = summary.get("Init")
    if init_us is None and session_ms is not None:
        init_us = session_ms * 1000.0
    return BenchmarkOutput(
        inference=inference,
        warmup=warmup,
        init_us=init_us,
        runtime_version=version,
        model_size_mb=model_size,
        init_mem_mb=mem.get("init"),
        overall_mem_mb=mem.get("overall"),
        peak_mem_mb=peak,
        params=params,
        unconsumed_flags=unconsumed,
    )
