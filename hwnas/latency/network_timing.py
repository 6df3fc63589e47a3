"""End-to-end timing of whole networks, the ground truth a LUT's predictions are scored against.

Each architecture is built (random weights, seeded by its string), converted to the device's
format the way its kernels were (ONNX through the TorchScript exporter; TFLite through
litert-torch with NHWC input, a batch of networks per conversion), cached on disk, and timed with
the same method as the kernels: ``rounds`` passes in freshly shuffled orders, each measurement
committed to the LUT file's ``models`` table as it is taken, keyed by the device's identity. A
re-run skips what is stored, so a killed validation resumes. An architecture's latency is the
median over rounds of each round's fastest run (:attr:`hwnas.devices.Stats.round_ms`), the
statistic of the kernels in the LUT.
"""

from __future__ import annotations

import hashlib
import statistics
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence

import torch
from torch import nn

from hwnas.core.progress import progress_bar
from hwnas.devices.base import Device, Runner, TimingConfig
from hwnas.latency.artifact_cache import ArtifactCache
from hwnas.latency.disturbance import Guard, GuardConfig, Measured
from hwnas.latency.kernel_models import at_precision, to_onnx
from hwnas.latency.profiler import measure_rounds
from hwnas.latency.store import LutStore, device_id
from hwnas.models.builder import build_model
from hwnas.spaces.arch import Architecture

_TFLITE_CHUNK = 8  # networks per litert-torch conversion


def network_module(arch: Architecture) -> nn.Module:
    """The network of ``arch`` in eval mode, with weights seeded by its string (reproducible)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(zlib.crc32(arch.to_str().encode()))
        return build_model(arch).eval()


def network_input_shape(arch: Architecture, batch: int = 1) -> tuple[int, int, int, int]:
    """NCHW input shape of the network (TFLite artifacts take the same tensor as NHWC)."""
    return (batch, arch.in_channels, arch.resolution, arch.resolution)


def network_key(arch: Architecture) -> str:
    return hashlib.sha256(arch.to_str().encode()).hexdigest()[:32]


def network_artifacts(archs: Sequence[Architecture], fmt: str, batch: int = 1, precision: str = "fp32") -> list[bytes]:
    """Convert networks to ``onnx``, ``tflite`` or ``pte`` bytes, at ``precision`` in the form export ships."""
    shapes = [network_input_shape(a, batch) for a in archs]
    if fmt == "pte":
        from hwnas.latency.kernel_models import pte_model

        return [pte_model(network_module(a), s, precision, zlib.crc32(a.to_str().encode()))
                for a, s in zip(archs, shapes, strict=True)]  # fmt: skip
    if fmt == "tflite" and precision == "int8":
        from hwnas.core.quiet import quiet
        from hwnas.latency.kernel_models import tflite_int8

        with quiet():
            return [tflite_int8(network_module(a), s, zlib.crc32(a.to_str().encode()), nhwc_output=False)
                    for a, s in zip(archs, shapes, strict=True)]  # fmt: skip
    if fmt == "onnx":
        fp32 = [to_onnx(network_module(a), s) for a, s in zip(archs, shapes, strict=True)]
    elif fmt == "tflite":
        from hwnas.core.quiet import quiet

        with quiet():  # litert-torch's import and conversion log to stderr
            from hwnas.convert.tflite_batch import convert_batch

            fp32 = convert_batch([(network_module(a), s) for a, s in zip(archs, shapes, strict=True)])
    else:
        raise ValueError(f"no converter for format {fmt!r}")
    return at_precision(fp32, fmt, precision, shapes, "x")


def _ensure_converted(
    archs: Sequence[Architecture], cache: ArtifactCache, on_chunk: Callable[[int], None]
) -> dict[str, bytes]:
    missing = [a for a in archs if cache.get(network_key(a)) is None]
    chunk = _TFLITE_CHUNK if cache.fmt == "tflite" else 1
    for i in range(0, len(missing), chunk):
        part = missing[i : i + chunk]
        for a, data in zip(part, network_artifacts(part, cache.fmt, cache.batch, cache.precision), strict=True):
            cache.put(network_key(a), data)
        on_chunk(len(part))
    return {a.to_str(): cache.get(network_key(a)) or b"" for a in archs}


# one pass over the rounds beyond 15% of their network's median: a validation's noise floor is read
# from its networks' rounds, so they are not re-measured until they agree
NETWORK_GUARD = GuardConfig(stable_within=0.15, passes=1)


def measure_networks(
    archs: Sequence[Architecture],
    device: Device,
    store: LutStore,
    rounds: int = 3,
    timing: TimingConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    guard: GuardConfig | None = None,
) -> dict[str, float]:
    """Time every ``(architecture, round)`` not yet in ``store`` (disturbed measurements re-taken
    and outlying rounds re-measured, as in the profiler); return each one's latency in ms (median
    over its stored rounds), keyed by architecture string."""
    timing = timing or TimingConfig()
    dev = device_id(device.fingerprint())
    unique = list({a.to_str(): a for a in archs}.values())
    done = {(arch, r) for arch, r, _ in store.model_rows(dev)}
    todo_rounds = [[a for a in unique if (a.to_str(), r) not in done] for r in range(rounds)]
    needed = list({a.to_str(): a for t in todo_rounds for a in t}.values())
    with progress_bar(progress) as bar:
        artifacts: dict[str, bytes] = {}
        if device.format != "torch" and needed:
            cache = ArtifactCache(device.format, device.batch, kind="models", precision=device.precision)
            task = bar.add_task(f"converting networks to {device.format}", total=len(needed))
            artifacts = _ensure_converted(needed, cache, lambda n: bar.advance(task, n))
        watch = Guard(device, timing, planned=sum(len(t) for t in todo_rounds), config=guard or NETWORK_GUARD)

        def save(arch: Architecture, r: int, m: Measured, replace: bool) -> None:
            store.add_model(dev, arch.to_str(), r, m.stats, replace=replace)
            store.add_conditions(dev, arch.to_str(), r, m.record())

        def stored() -> dict[str, dict[int, float]]:
            per_arch: dict[str, dict[int, float]] = {}
            for arch_str, r, ms in store.model_rows(dev):
                per_arch.setdefault(arch_str, {})[r] = ms
            return per_arch

        measure_rounds(todo_rounds, lambda a: a.to_str(), lambda a: _load(device, a, artifacts), save, stored, watch,
                       bar, f"timing networks on {device.kind}", seed)  # fmt: skip
    per_arch: dict[str, list[float]] = defaultdict(list)
    for arch_str, r, ms in store.model_rows(dev):
        if r < rounds:
            per_arch[arch_str].append(ms)
    return {a.to_str(): statistics.median(per_arch[a.to_str()]) for a in unique}


def _load(device: Device, arch: Architecture, artifacts: dict[str, bytes]) -> Runner:
    shape = network_input_shape(arch, device.batch)
    if device.format == "torch":
        return device.load(network_module(arch), shape)
    return device.load(artifacts[arch.to_str()], shape)
