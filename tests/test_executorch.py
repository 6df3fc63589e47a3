"""`hwnas export --format pte`: ExecuTorch programs (XNNPACK delegate) that compute what PyTorch
computes, checked by running the written file in ExecuTorch's own runtime, with their delegation
on the card; damaged programs and unlowerable models refused in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.core.errors import HwnasError
from hwnas.export.child_file import Child
from hwnas.export.pipeline import export_child, export_images
from hwnas.spaces import get_space

from conftest import run_cli, untrained_child

pytest.importorskip("executorch", reason="the executorch extra is not installed (pip install 'hwnas[executorch]')")


_child = untrained_child


def _execute(path: Path, x: np.ndarray) -> np.ndarray:
    """Run a .pte file in ExecuTorch's runtime directly (not through hwnas), one image at a time."""
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(path)  # held while its method runs (a method does not hold it)
    forward = program.load_method("forward")
    return np.concatenate([forward.execute([torch.from_numpy(x[i : i + 1].copy())])[0].numpy() for i in range(len(x))])


@pytest.mark.tour  # 33 s on the 2-core VM: in the tour, to keep the default suite under 15 minutes
def test_a_pte_file_computes_what_pytorch_computes_and_its_card_counts_the_delegation(tmp_path: Path) -> None:
    arch = get_space("cifar").sample(100)
    child = _child(arch)
    [item] = export_child(child, tmp_path, ["pte"], ["fp32"], stem="m")
    path = tmp_path / "m-fp32.pte"
    assert item.path == path and path.stat().st_size == item.size_bytes
    x = np.random.default_rng(1).standard_normal((4, 3, arch.resolution, arch.resolution)).astype(np.float32)
    with torch.no_grad():
        want = child.model(torch.from_numpy(x)).numpy()
    got = _execute(path, x)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
    card = json.loads((tmp_path / "m-fp32.pte.json").read_text())
    assert card["model_format"] == "pte" and card["input"]["layout"] == "NCHW"
    assert card["input"]["shape"] == [1, 3, arch.resolution, arch.resolution]
    runtime = card["runtime"]
    import importlib.metadata

    assert runtime["name"] == "executorch" and runtime["version"] == importlib.metadata.version("executorch")
    delegation = runtime["delegation"]
    # every convolution and the classifier run in XNNPACK: counted from the PyTorch model itself
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in child.model.modules())
    assert delegation["by_operator"]["aten_convolution_default"] == {"delegated": convs, "not_delegated": 0}
    assert delegation["by_operator"]["aten_linear_default"]["delegated"] == 1
    assert delegation["delegated_operators"] == sum(v["delegated"] for v in delegation["by_operator"].values())
    assert delegation["not_delegated"] == {
        op: v["not_delegated"] for op, v in delegation["by_operator"].items() if v["not_delegated"]
    }
    # the card's snippet runs as written (in a process without hwnas) and gives the same logits
    snippet = (
        "import numpy as np\nx = np.load('x.npy')[:1]\n" + card["usage_python"] + "\nnp.save('y.npy', logits.numpy())"
    )
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert np.abs(np.load(tmp_path / "y.npy") - want[:1]).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))


@pytest.mark.tour  # 22 s on the 2-core VM: in the tour, to keep the default suite under 15 minutes
def test_int8_pte_agrees_with_fp32_pytorch_on_real_images(tmp_path: Path) -> None:
    """Calibrated on real images: its top-1 agrees with fp32 PyTorch on at least 95% of held-out images
    (a child with trained-looking BN statistics on CIFAR-like images, not a trained one: the tour's
    command-line journey checks a trained child)."""
    arch = get_space("tiny").sample(5)
    child = _child(arch)
    data = "synthetic:n=300,size=24"
    check, calibration, labelled = export_images(data, child, 32, 200)
    [item] = export_child(child, tmp_path, ["pte"], ["int8"], check_inputs=check, calibration=calibration,
                          labelled=labelled, stem="m")  # fmt: skip
    got = _execute(tmp_path / "m-int8.pte", labelled[0])
    with torch.no_grad():
        want = child.model(torch.from_numpy(labelled[0])).numpy()
    agreement = float((got.argmax(1) == want.argmax(1)).mean())
    assert agreement >= 0.95 and item.top1_agreement == pytest.approx(agreement)
    card = json.loads((tmp_path / "m-int8.pte.json").read_text())
    ops = card["runtime"]["delegation"]["by_operator"]
    assert ops["quantized_decomposed_quantize_per_tensor_default"]["delegated"] > 0  # int8 inside XNNPACK


@pytest.mark.tour  # 17 s on the 2-core VM: in the tour, to keep the default suite under 15 minutes
def test_a_damaged_program_is_refused_in_one_line(tmp_path: Path) -> None:
    from hwnas.devices.base import DeviceError
    from hwnas.devices.executorch import open_method

    child = _child(get_space("tiny").sample(1))
    export_child(child, tmp_path, ["pte"], ["fp32"], stem="m")
    data = (tmp_path / "m-fp32.pte").read_bytes()
    for bad, words in ((data[: len(data) // 2], "damaged or truncated"), (bytes(range(256)) * 8, "not an ExecuTorch"),
                       (b"", "not an ExecuTorch")):  # fmt: skip
        with pytest.raises(DeviceError, match=words) as err:
            open_method(bad)[1].execute([torch.zeros(1, 3, 16, 16)])
        assert "\n" not in str(err.value)


class _Unlowerable(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nonzero(x).float().sum().reshape(1, 1).expand(1, 4)


def test_an_operator_executorch_cannot_lower_is_a_one_line_error(tmp_path: Path) -> None:
    arch = get_space("tiny").sample(1)
    child = Child(arch, _Unlowerable(), [0.5] * 3, [0.25] * 3, {})
    with pytest.raises(HwnasError, match="ExecuTorch cannot lower this model") as err:
        export_child(child, tmp_path, ["pte"], ["fp32"], stem="m")
    assert "\n" not in str(err.value) and not list(tmp_path.iterdir())


def test_the_command_line_refuses_precisions_pte_does_not_have(tmp_path: Path) -> None:
    arch_path = tmp_path / "a.json"
    get_space("tiny").sample(1).save(arch_path)
    proc = run_cli("export", "--arch", str(arch_path), "--weights", str(tmp_path / "w.safetensors"), "--format", "pte",
                   "--fp16", "--out", str(tmp_path / "o"))  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        == "hwnas: error: --fp16: pte files have no fp16 form; add tflite or mlpackage to --format, or drop --fp16"
    )
    assert not (tmp_path / "o").exists()


# --- et-cpu: the ExecuTorch runtime as a device ----------------------------------------------------


def test_et_cpu_runs_what_torch_computes_with_the_threads_asked_for() -> None:
    from executorch.extension.pybindings import portable_lib

    from hwnas.devices import DeviceError, open_device
    from hwnas.latency.kernel_models import kernel_artifacts, kernel_input_shape, kernel_module

    kernel = next(k for k in get_space("tiny").kernels() if k.op == "conv" and k.k == 3)
    [data] = kernel_artifacts([kernel], "pte")
    for threads in (2, 1):
        device = open_device(f"et-cpu:threads={threads}")
        runner = device.load(data)
        assert runner.input_shapes == [kernel_input_shape(kernel)]
        assert portable_lib._threadpool_get_thread_count() == threads
        [got] = runner.run()
        with torch.no_grad():
            want = kernel_module(kernel)(runner.inputs[0])
        assert torch.allclose(got, want, atol=1e-4)
        stats = device.measure(runner)
        assert stats.median_ms > 0 and stats.n >= 1
        if threads == 2:  # the pool is process-wide: resizing it under an open program crashed the process
            with pytest.raises(DeviceError, match="threadpool is process-wide"):
                open_device("et-cpu:threads=1").load(data)
        runner.close()
    fp = open_device("et-cpu:threads=2,precision=int8").fingerprint()
    assert fp["runtime"] == "executorch" and fp["threads"] == 2 and fp["precision"] == "int8"


@pytest.mark.tour  # 42 s on the 2-core VM: in the tour, to keep the default suite under 15 minutes
def test_bench_times_a_pte_file_and_refuses_damaged_or_foreign_ones(tmp_path: Path) -> None:
    arch = get_space("tiny").sample(1)
    export_child(_child(arch), tmp_path, ["pte"], ["fp32"], stem="m")
    good = tmp_path / "m-fp32.pte"
    proc = run_cli("bench", str(good), "--device", "et-cpu:threads=1", "--rounds", "2", "--json",
                   "--min-time-ms", "20")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["latency_ms"] > 0 and result["input_shapes"] == [[1, 3, arch.resolution, arch.resolution]], result
    assert result["fingerprint"]["runtime"] == "executorch"
    data = good.read_bytes()
    for name, body, words in (("half.pte", data[: len(data) // 2], "damaged or truncated"),
                              ("noise.pte", bytes(range(256)) * 16, "not a pte model")):  # fmt: skip
        (tmp_path / name).write_bytes(body)
        proc = run_cli("bench", str(tmp_path / name), "--device", "et-cpu:threads=1")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and words in proc.stderr, proc.stderr
    proc = run_cli("bench", str(good), "--device", "ort-cpu:threads=1")
    assert proc.returncode == 2 and "runs onnx models, not pte" in proc.stderr, proc.stderr


def test_an_agent_times_pte_programs_and_refuses_damaged_ones(tmp_path: Path) -> None:
    from agent_process import AgentProcess

    from hwnas.devices import DeviceError, TimingConfig, parse_device
    from hwnas.latency.kernel_models import kernel_artifacts

    kernel = sorted(set(get_space("tiny").kernels()))[0]
    [data] = kernel_artifacts([kernel], "pte")
    agent = AgentProcess(tmp_path / "agent").start()
    try:
        device = parse_device(agent.spec(token_file=agent.token_file, runtime="et-cpu"))
        assert device.format == "pte" and device.fingerprint()["runtime"] == "executorch"
        quick = TimingConfig(warmup_runs=1, warmup_s=0.0, min_runs=3, min_time_s=0.0, max_time_s=2.0)
        assert device.measure(device.load(data), quick).median_ms > 0
        for body in (data[: len(data) // 2], data[:8] + bytes(range(256)) * 4):  # truncated; ET12, then noise
            status, answer = agent.upload(body)
            assert status == 422 and "damaged or truncated" in answer["error"], answer
        assert agent.health()["status"] == "ok"
        with pytest.raises(DeviceError, match="is pte; device ort-cpu runs onnx"):
            onnx = parse_device(agent.spec(token_file=agent.token_file))
            onnx.measure(onnx.load(data), quick)
    finally:
        agent.stop()
