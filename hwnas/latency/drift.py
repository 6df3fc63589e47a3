"""Was the LUT measured under the conditions of its validation? Time some kernels again and see.

A LUT profiled in a noisy phase holds inflated kernels; the networks ``hwnas lut validate`` times
an hour later do not, and the calibration fitted between the two carries the difference
silently (a held-out accuracy of 72% in such an hour, issue 41). So beside the networks the
validation times a few *reference kernels* again, the ones its networks spend most LUT time in,
in shuffled rounds with the same guard as the profile, and compares each with its LUT entry:

* ``now / LUT < 1 / DRIFT_LIMIT``: the kernel runs faster than the LUT says. Noise only adds
  time, so the LUT entry was inflated while it was profiled: the kernel is named, kept in the
  LUT's ``drift`` record, and ``hwnas profile --remeasure drifted`` re-times it;
* ``now / LUT > DRIFT_LIMIT``: it runs slower now: this validation met more noise than the
  profile did (or the machine changed), so it is the validation's figures that are labelled;
* the median of the ratios outside ``[1 / DRIFT_LIMIT, DRIFT_LIMIT]``: the whole LUT was
  measured under other conditions;
* with a fitted calibration, a leave-one-out error above the run's own noise (the RMS of its
  networks' rounds about their medians) by more than ``LOO_MARGIN``: the networks are less
  predictable than they are repeatable, the mark of kernels that drifted, even unchecked ones.

``DRIFT_LIMIT = 1.3`` (the issue's 0.7-1.3 range): a quiet machine's two profiles of ``cifar`` on
ONNX Runtime differed by 10% at the 95th percentile (BENCHMARKS "Profile cost"), and this host's
noisy phases inflate a kernel's fastest run by about 1.5x (docs/notebook/stability.md).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hwnas.core.progress import progress_bar
from hwnas.devices.base import Device, TimingConfig
from hwnas.latency.artifact_cache import ArtifactCache
from hwnas.latency.disturbance import Guard, GuardConfig, Measured
from hwnas.latency.profiler import convert_kernels, load_kernel, measure_rounds
from hwnas.latency.stability import DRIFT_KERNELS, DRIFT_LIMIT, named
from hwnas.latency.table import LatencyTable
from hwnas.spaces.arch import Architecture
from hwnas.spaces.kernels import Kernel, arch_kernels

LOO_MARGIN = 0.05


@dataclass
class DriftCheck:
    """Reference kernels timed again beside a validation, against their LUT entries (ms)."""

    lut_ms: dict[str, float]
    now_ms: dict[str, float]
    of_kernels: int  # kernels the validated networks use (how many could have been checked)
    loo_rmspe: float | None = None
    noise_rms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def ratio(self, key: str) -> float:
        return self.now_ms[key] / self.lut_ms[key]

    @property
    def median_ratio(self) -> float:
        return statistics.median(self.ratio(k) for k in self.now_ms) if self.now_ms else 1.0

    @property
    def faster(self) -> list[str]:
        """Kernels the LUT holds inflated (they run faster now), slowest-off first."""
        return sorted((k for k in self.now_ms if self.ratio(k) < 1 / DRIFT_LIMIT), key=self.ratio)

    @property
    def slower(self) -> list[str]:
        return sorted((k for k in self.now_ms if self.ratio(k) > DRIFT_LIMIT), key=self.ratio, reverse=True)

    @property
    def whole_lut(self) -> bool:
        m = self.median_ratio
        return not (1 / DRIFT_LIMIT <= m <= DRIFT_LIMIT)

    @property
    def loo_above_noise(self) -> bool:
        if self.loo_rmspe is None or self.noise_rms is None:
            return False
        return self.loo_rmspe > self.noise_rms + LOO_MARGIN

    @property
    def drifted(self) -> bool:
        return bool(self.faster or self.slower or self.whole_lut or self.loo_above_noise)

    def messages(self, lut: str, space: str, device: str) -> list[str]:
        """One line per finding, each with what to do."""
        if not self.drifted:
            return []
        k, out = len(self.now_ms), []
        head = "the LUT and this validation were measured under different conditions: "
        if self.faster:
            which = "all" if self.whole_lut or len(self.faster) > k // 2 else "drifted"
            out.append(head + f"{len(self.faster)} of {k} kernels timed again run faster than {lut} says (now/LUT "
                       f"median {self.median_ratio:.2f}x; below {1 / DRIFT_LIMIT:.2f}x: {named(self.faster)}): they "
                       f"were profiled in a noisier phase; re-profile them with 'hwnas profile --space {space} "
                       f"--device {device} --out {lut} --remeasure {which}', then run this validation again with --fit")  # fmt: skip
        if self.slower:
            out.append(head + f"{len(self.slower)} of {k} kernels timed again run slower now than {lut} says "
                       f"(above {DRIFT_LIMIT:.1f}x: {named(self.slower)}): this validation met more noise than the "
                       "profile (or the machine changed); its figures are labelled noisy: run it again in a quieter hour")  # fmt: skip
        if self.whole_lut and not self.faster and not self.slower:
            out.append(head + f"the {k} kernels timed again run at {self.median_ratio:.2f}x their LUT latency")
        if self.loo_above_noise and not (self.faster or self.slower):
            assert self.loo_rmspe is not None and self.noise_rms is not None
            unchecked = max(0, self.of_kernels - k)
            out.append(f"the calibration's leave-one-out error ({self.loo_rmspe:.1%}) is above this run's own noise "
                       f"({self.noise_rms:.1%}) by more than {LOO_MARGIN:.0%}, yet the {k} kernels timed again agree "
                       f"with the LUT: {unchecked} kernels of these networks were not checked; check them all with "
                       "--drift-kernels all")  # fmt: skip
        return out

    def record(self) -> dict[str, Any]:
        """The LUT's ``drift`` record (:mod:`hwnas.latency.stability`)."""
        return {"kernels": self.faster, "slower": self.slower, "checked": len(self.now_ms),
                "median_ratio": self.median_ratio, "loo_rmspe": self.loo_rmspe, "noise_rms": self.noise_rms,
                "ratios": {k: round(self.ratio(k), 4) for k in (*self.faster, *self.slower)}}  # fmt: skip


def reference_kernels(
    table: LatencyTable, archs: Sequence[Architecture], n: int | None, every: Sequence[Kernel] = ()
) -> tuple[list[Kernel], int]:
    """The ``n`` kernels the networks ``archs`` spend most LUT time in (``n`` None: ``every``
    kernel, e.g. the whole space's), and how many distinct kernels the networks use."""
    weight: dict[Kernel, float] = {}
    for arch in archs:
        kernels = arch_kernels(arch)
        for kernel, ms in zip(kernels, table.lookup_many(kernels), strict=True):
            weight[kernel] = weight.get(kernel, 0.0) + ms
    ranked = sorted(weight, key=lambda k: (-weight[k], k.key))
    if n is None:
        return sorted(set(every) | set(ranked)), len(ranked)
    return ranked[:n], len(ranked)


def retime(
    kernels: Sequence[Kernel],
    device: Device,
    rounds: int = 3,
    timing: TimingConfig | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Each kernel's latency now (ms): the median over ``rounds`` shuffled rounds of each round's
    fastest run, as the profiler measures a LUT entry, with the same guard."""
    timing = timing or TimingConfig()
    taken: dict[str, dict[int, float]] = {}
    cache = None if device.format == "torch" else ArtifactCache(device.format, device.batch, precision=device.precision)

    def save(kernel: Kernel, r: int, m: Measured, replace: bool) -> None:
        taken.setdefault(kernel.key, {})[r] = m.stats.round_ms

    with progress_bar(progress) as bar:
        if cache is not None:
            convert_kernels(list(kernels), device, cache, bar, "reference kernels")
        watch = Guard(device, timing, planned=rounds * len(kernels), config=GuardConfig())
        measure_rounds([list(kernels)] * rounds, lambda k: k.key, lambda k: load_kernel(device, k, cache), save,
                       lambda: taken, watch, bar, "timing reference kernels again", seed)  # fmt: skip
    return {key: statistics.median(r.values()) for key, r in taken.items()}


def check_drift(
    table: LatencyTable,
    archs: Sequence[Architecture],
    device: Device,
    n: int | None = DRIFT_KERNELS,
    every: Sequence[Kernel] = (),
    rounds: int = 3,
    timing: TimingConfig | None = None,
    seed: int = 0,
    progress: bool = True,
) -> DriftCheck:
    """Time ``n`` reference kernels of ``archs`` (None: ``every`` kernel) again on ``device``
    (module docstring)."""
    kernels, used = reference_kernels(table, archs, n, every)
    now = retime(kernels, device, rounds=rounds, timing=timing, seed=seed, progress=progress)
    lut = dict(zip((k.key for k in kernels), table.lookup_many(kernels), strict=True))
    return DriftCheck(lut_ms=lut, now_ms=now, of_kernels=used)
