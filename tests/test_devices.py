from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from hwnas.devices import DEVICE_KINDS, Device, DeviceError, Stats, TimingConfig, open_device, parse_device, time_calls
from hwnas.devices.base import pinned
from hwnas.latency.kernel_models import kernel_input_shape, kernel_module, to_onnx
from hwnas.spaces.kernels import Kernel

FAST = TimingConfig(warmup_runs=2, warmup_s=0.001, min_runs=5, min_time_s=0.002)
CONV = Kernel("conv", 8, 16, 3, 2, 12, 12, "hswish")


def test_spec_parsing_canonical_and_errors() -> None:
    assert parse_device("ort-cpu").spec == "ort-cpu:threads=1,opt=all,batch=1"
    assert parse_device("tflite-cpu:threads=4,xnnpack=0").spec == "tflite-cpu:threads=4,xnnpack=0,batch=1"
    assert parse_device("torch-cuda:1,batch=8").options == {"device": 1, "batch": 8}
    assert parse_device("ort-cpu:pin=0+1").options["pin"] == (0, 1)
    with pytest.raises(
        DeviceError, match="valid devices: ort-cpu, tflite-cpu, et-cpu, torch-cpu, torch-cuda, ort-cuda"
    ):
        parse_device("nnapi")
    with pytest.raises(DeviceError, match="unknown parameter 'thread'; parameters: threads"):
        parse_device("ort-cpu:thread=2")
    with pytest.raises(DeviceError, match="allowed: disable, basic, extended, all"):
        parse_device("ort-cpu:opt=max")
    with pytest.raises(DeviceError, match="not a valid int"):
        parse_device("ort-cpu:threads=two")
    with pytest.raises(DeviceError, match="must be positive"):
        parse_device("ort-cpu:threads=0")
    with pytest.raises(DeviceError, match="needs a name"):
        parse_device("ort-cpu:4")


def test_stats_match_numpy() -> None:
    rng = np.random.default_rng(0)
    ns = [int(x) for x in rng.lognormal(12, 0.3, 501)]
    s = Stats.from_samples(ns, 7, 1.5)
    ms = np.array(ns) / 1e6
    assert s.median_ms == pytest.approx(np.median(ms))
    assert s.p10_ms == pytest.approx(np.percentile(ms, 10))
    assert s.p90_ms == pytest.approx(np.percentile(ms, 90))
    assert s.mean_ms == pytest.approx(ms.mean())
    assert s.std_ms == pytest.approx(ms.std())
    assert (s.n, s.warmup_n, s.busy_s) == (501, 7, 1.5)
    assert s.min_ms == pytest.approx(ms.min()) and s.round_ms == s.min_ms  # a round counts by its fastest run
    older = Stats(2.0, 1.0, 3.0, 2.0, 0.1, 10, 2, 0.1)  # from a source that reported no minimum
    assert older.min_ms is None and older.round_ms == 2.0


def test_time_calls_honours_counts_and_times() -> None:
    calls = []
    cfg = TimingConfig(warmup_runs=3, warmup_s=0.01, min_runs=10, min_time_s=0.02)
    s = time_calls(lambda: (calls.append(1), time.sleep(0.001)), cfg)
    assert s.warmup_n >= 3 and s.n >= 10
    assert len(calls) == s.n + s.warmup_n
    assert s.median_ms >= 1.0  # each call sleeps at least 1 ms
    assert s.busy_s >= 0.03  # warm-up >= 10 ms and timing >= 20 ms
    # a slow model stops after max_time_s once it has 3 runs
    s = time_calls(
        lambda: time.sleep(0.02), TimingConfig(warmup_runs=0, warmup_s=0, min_runs=1000, min_time_s=0, max_time_s=0.03)
    )
    assert 3 <= s.n < 10


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")
def test_pinning_is_applied_and_restored() -> None:
    before = os.sched_getaffinity(0)
    core = min(before)
    with pinned((core,)):
        assert os.sched_getaffinity(0) == {core}
    assert os.sched_getaffinity(0) == before
    with pytest.raises(DeviceError, match="cannot pin"):
        with pinned((10_000,)):
            pass


def _reference(kernel: Kernel) -> tuple[torch.nn.Module, torch.Tensor]:
    module = kernel_module(kernel)
    return module, torch.randn(kernel_input_shape(kernel))


def test_ort_cpu_runs_what_torch_computes() -> None:
    device = open_device("ort-cpu:threads=1")
    module, _ = _reference(CONV)
    runner = device.load(to_onnx(module, kernel_input_shape(CONV)))
    assert runner.input_shapes == [kernel_input_shape(CONV)]
    x = next(iter(runner.feeds.values()))  # type: ignore[attr-defined]
    (y,) = runner.run()  # type: ignore[misc]
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    assert np.abs(y - ref).max() < 1e-4
    s = device.measure(runner, FAST)
    assert s.n >= 5 and s.median_ms > 0
    fp = device.fingerprint()
    for field in (
        "kind",
        "runtime",
        "runtime_version",
        "threads",
        "precision",
        "batch",
        "cpu_model",
        "cpu_cores",
        "hwnas_version",
    ):
        assert field in fp
    assert fp["threads"] == 1 and fp["runtime"] == "onnxruntime"


def test_tflite_cpu_runs_what_torch_computes() -> None:
    pytest.importorskip("litert_torch")
    from hwnas.latency.kernel_models import tflite_artifacts

    [data] = tflite_artifacts([CONV])
    for spec in ("tflite-cpu:threads=1", "tflite-cpu:threads=1,xnnpack=0"):
        device = open_device(spec)
        runner = device.load(data)
        n, c, h, w = kernel_input_shape(CONV)
        assert runner.input_shapes == [(n, h, w, c)]  # kernel models take NHWC
        interp = runner.interpreter  # type: ignore[attr-defined]
        x = interp.get_tensor(interp.get_input_details()[0]["index"])
        runner.run()
        y = interp.get_tensor(interp.get_output_details()[0]["index"])
        with torch.no_grad():  # kernel_module is seeded by the key: the same weights as the artifact
            ref = kernel_module(CONV)(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
        assert y.shape == (1, 6, 6, 16)
        assert np.abs(y - ref).max() < 1e-4
        assert device.measure(runner, FAST).n >= 5
        assert device.fingerprint()["xnnpack"] is (spec.endswith("threads=1"))


def test_torch_cpu_and_batch() -> None:
    device = open_device("torch-cpu:threads=1,batch=2")
    runner = device.load(kernel_module(CONV), kernel_input_shape(CONV))
    assert runner.input_shapes == [(2, 8, 12, 12)]
    assert runner.run().shape == (2, 16, 6, 6)  # type: ignore[attr-defined]
    assert device.measure(runner, FAST).n >= 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch-cuda)")
def test_torch_cuda_times_with_events() -> None:
    device = open_device("torch-cuda:0")
    runner = device.load(kernel_module(CONV), kernel_input_shape(CONV))
    s = device.measure(runner, FAST)
    assert s.n >= 5 and s.median_ms > 0
    assert device.fingerprint()["gpu"]


def test_gpu_devices_explain_why_not_here() -> None:
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="torch-cuda is not usable here"):
            open_device("torch-cuda:0")
    why = DEVICE_KINDS["ort-cuda"].availability()
    if why is not None:
        assert "pip install onnxruntime-gpu" in why


def test_truncated_and_wrong_artifacts_are_clear_errors() -> None:
    data = to_onnx(kernel_module(CONV), kernel_input_shape(CONV))
    with pytest.raises(DeviceError, match="ort-cpu cannot load the model"):
        open_device("ort-cpu").load(data[: len(data) // 2])
    with pytest.raises(DeviceError, match="tflite-cpu cannot load the model"):
        open_device("tflite-cpu").load(b"TFL3" + b"\0" * 40)
    with pytest.raises(DeviceError, match="runs PyTorch modules"):
        open_device("torch-cpu").load(data, (1, 8, 12, 12))


def test_stats_from_an_agent_of_another_version() -> None:
    s = Stats.from_samples([3_000_000, 1_000_000, 2_000_000], 2, 0.5)
    assert Stats.from_dict(s.to_dict()) == s
    older = {k: v for k, v in s.to_dict().items() if k != "min_ms"}  # an agent from before min_ms
    assert Stats.from_dict(older).min_ms is None and Stats.from_dict(older).round_ms == 2.0
    newer = {**s.to_dict(), "p99_ms": 3.0}  # a field this version does not know
    assert Stats.from_dict(newer) == s


def test_each_kind_names_the_class_that_declares_it_and_parsing_imports_only_that_runtime() -> None:
    for kind, cls in DEVICE_KINDS.items():
        assert cls.kind == kind and issubclass(cls, Device)
    code = ("import sys; from hwnas.devices import parse_device; parse_device('ort-cpu:threads=1'); "
            "print(sorted(m for m in sys.modules if m.startswith('hwnas.devices.')))")  # fmt: skip
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "hwnas.devices.onnxruntime" in loaded and "hwnas.devices.adb" not in loaded
