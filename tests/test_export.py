"""`hwnas export`: files that compute what PyTorch computes, in a process without hwnas, with cards and budgets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.core.errors import HwnasError
from hwnas.export.child_file import Child, load_child
from hwnas.export.pipeline import export_child
from hwnas.models.builder import build_model
from hwnas.spaces import get_arch, get_space
from hwnas.spaces.arch import Architecture
from hwnas.spaces.kernels import arch_flops, arch_params
from hwnas.train.checkpoints import read_child

from conftest import SHARED_DATA, run_cli, untrained_child

_child = untrained_child


def _archs() -> list:
    """FBNetV2-F1 and 5 random architectures of each preset. The default run keeps two of each small
    preset (8-17 s each on 2 cores, and the suite must stay under 15 minutes); FBNetV2-F1 runs with
    the tour (``-m tour``, in CI); the other three and the ImageNet-size random ones (about 30 s
    each) run with ``-m slow``."""
    out = [pytest.param(get_arch("FBNetV2-F1"), id="FBNetV2-F1", marks=[pytest.mark.tour])]  # 45 s: with the tour
    for name in ("tiny", "cifar", "fbnetv2"):
        space = get_space(name)
        out += [pytest.param(space.sample(100 + i), id=f"{name}-{i}",
                             marks=[pytest.mark.slow] if name == "fbnetv2" or i >= 2 else [])
                for i in range(5)]  # fmt: skip
    return out


@pytest.mark.parametrize("arch", _archs())
def test_onnx_and_tflite_match_pytorch(arch, tmp_path: Path) -> None:
    child = _child(arch)
    results = export_child(child, tmp_path, ["onnx", "tflite"], ["fp32", "fp16"], stem="m")
    by = {(r.format, r.precision): r for r in results}
    assert set(by) == {("onnx", "fp32"), ("tflite", "fp32"), ("tflite", "fp16")}
    assert by["onnx", "fp32"].max_abs_diff <= 1e-4 and by["tflite", "fp32"].max_abs_diff <= 1e-4
    assert by["tflite", "fp16"].max_abs_diff <= 1e-2
    from ai_edge_litert.interpreter import Interpreter

    fp16 = Interpreter(model_path=str(by["tflite", "fp16"].path))
    assert any(d["dtype"] == np.float16 for d in fp16.get_tensor_details())  # the weights really are fp16
    card = json.loads((tmp_path / "m-fp32.onnx.json").read_text())
    assert card["arch"] == arch.to_str() and card["flops"] == arch_flops(arch) and card["params"] == arch_params(arch)
    assert card["input"]["shape"] == [1, 3, arch.resolution, arch.resolution] and card["input"]["layout"] == "NCHW"


@pytest.mark.tour  # 15 s on the 2-core VM: in the tour, to keep the default suite under 15 minutes
def test_nhwc_and_dynamic_batch(tmp_path: Path) -> None:
    arch = get_space("cifar").sample(7)
    child = _child(arch)
    results = export_child(child, tmp_path, ["onnx", "tflite"], ["fp32"], nhwc=True, dynamic_batch=True, stem="m")
    assert all(r.max_abs_diff <= 1e-4 for r in results)
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    sess = ort.InferenceSession(str(tmp_path / "m-fp32.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((5, 3, arch.resolution, arch.resolution)).astype(np.float32)
    with torch.no_grad():
        want = child.model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(sess.run(["logits"], {"input": x})[0], want, atol=1e-4)  # batch of 5
    it = Interpreter(model_path=str(tmp_path / "m-fp32.tflite"))
    assert list(it.get_input_details()[0]["shape"]) == [1, arch.resolution, arch.resolution, 3]
    card = json.loads((tmp_path / "m-fp32.tflite.json").read_text())
    assert card["input"]["layout"] == "NHWC" and card["input"]["shape"] == [1, arch.resolution, arch.resolution, 3]


def test_simplified_onnx_is_smaller_and_equal(tmp_path: Path) -> None:
    import onnx

    arch = get_space("cifar").sample(4)
    child = _child(arch)
    plain = export_child(child, tmp_path / "a", ["onnx"], ["fp32", "int8"], calibration=_calib(arch), stem="m")
    simple = export_child(child, tmp_path / "b", ["onnx"], ["fp32", "int8"], calibration=_calib(arch), stem="m",
                          simplify=True)  # fmt: skip
    assert simple[0].max_abs_diff <= 1e-4
    n_plain = len(onnx.load(str(plain[0].path)).graph.node)
    n_simple = len(onnx.load(str(simple[0].path)).graph.node)
    assert n_simple < n_plain
    assert json.loads(simple[0].path.with_name("m-fp32.onnx.json").read_text())["simplified"] is True
    assert simple[1].path.exists() and simple[1].precision == "int8"


def _calib(arch) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1, 3, arch.resolution, arch.resolution)).astype(np.float32) for _ in range(8)]


PLAIN_RUNTIME = r"""
import sys, json, numpy as np
import onnxruntime as ort
from ai_edge_litert.interpreter import Interpreter
folder = sys.argv[1]
x = np.load(folder + "/x.npy")
want = np.load(folder + "/want.npy")
sess = ort.InferenceSession(folder + "/m-fp32.onnx", providers=["CPUExecutionProvider"])
onnx_out = np.concatenate([sess.run(None, {"input": x[i:i+1]})[0] for i in range(len(x))])
it = Interpreter(model_path=folder + "/m-fp32.tflite")
it.allocate_tensors()
rows = []
for i in range(len(x)):
    it.set_tensor(it.get_input_details()[0]["index"], x[i:i+1].transpose(0, 2, 3, 1).copy())  # NHWC by default
    it.invoke()
    rows.append(it.get_tensor(it.get_output_details()[0]["index"]).copy())
print(json.dumps({"hwnas_loaded": any(m.startswith("hwnas") for m in sys.modules),
                  "onnx": float(np.abs(onnx_out - want).max()), "tflite": float(np.abs(np.concatenate(rows) - want).max())}))
"""


@pytest.mark.tour  # 16 s on the 2-core VM: in the tour, to keep the default suite under 15 minutes
def test_files_run_in_a_plain_runtime_process_without_hwnas(tmp_path: Path) -> None:
    arch = get_space("cifar").sample(3)
    child = _child(arch)
    export_child(child, tmp_path, ["onnx", "tflite"], ["fp32"], stem="m")
    x = np.random.default_rng(1).standard_normal((4, 3, arch.resolution, arch.resolution)).astype(np.float32)
    with torch.no_grad():
        np.save(tmp_path / "want.npy", child.model(torch.from_numpy(x)).numpy())
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run([sys.executable, "-c", PLAIN_RUNTIME, str(tmp_path)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["hwnas_loaded"] is False
    assert result["onnx"] <= 1e-4 and result["tflite"] <= 1e-4


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("child")
    arch_path = folder / "arch.json"
    get_space("tiny").sample(5).save(arch_path)
    # 4 epochs on 800 images: about 100% on its own test images, so int8 agreement is not the
    # agreement of two networks that both answer one class
    proc = run_cli("train", "--arch", str(arch_path), "--data", "synthetic:n=800,size=24", "--epochs", "4",
                   "--out", str(folder / "child.safetensors"), "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return folder


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, after the default suite
def test_cli_export_with_int8_cards_and_the_budget(trained_tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "files"
    base = ["export", "--weights", str(trained_tiny / "child.safetensors"), "--format", "onnx,tflite", "--int8", "--data",
            "synthetic:n=400,size=24", "--check-images", "100", "--calibration-images", "20", "--out", str(out),
            "--name", "m", "--device", "ort-cpu:threads=1"]  # fmt: skip
    proc = strict = run_cli(*base, "--budget-ms", "1000", "--min-int8-agreement", "0.999")
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"m-{p}.{f}{j}" for f in ("onnx", "tflite") for p in ("fp32", "int8") for j in ("", ".json"))
    for fmt in ("onnx", "tflite"):  # both int8 cards, on a child that is right at least 60% of the time
        checks = json.loads((out / f"m-int8.{fmt}.json").read_text())["checks"]
        assert checks["accuracy_fp32_pytorch"] >= 0.6, fmt
        assert checks["top1_agreement_vs_fp32"] >= 0.9 and checks["accuracy"] >= checks["accuracy_fp32_pytorch"] - 0.1
    card = json.loads((out / "m-int8.tflite.json").read_text())
    assert card["input"]["dtype"] == "int8" and "scale" in card["input"]["quantization"]  # full-integer
    onnx_card = json.loads((out / "m-fp32.onnx.json").read_text())
    assert onnx_card["latency"]["measured_ms"] > 0 and onnx_card["latency"]["device"].startswith("ort-cpu")
    assert onnx_card["input"]["normalization"]["mean"] is not None
    lat = onnx_card["latency"]
    verdict = lat["verdict"]  # five rounds (more when near the budget), their median and half-range
    assert verdict["outcome"] == "within budget" and verdict["budget_ms"] == 1000 and len(verdict["rounds_ms"]) == 5
    assert lat["measured_ms"] == pytest.approx(sorted(verdict["rounds_ms"])[2])
    spread = max(verdict["rounds_ms"]) - min(verdict["rounds_ms"])
    assert lat["noise_ms"] == pytest.approx(max(spread / 2, 0.01 * lat["measured_ms"]))
    assert "latency" not in card  # the TFLite files are not measured on an ONNX Runtime device
    quick = ["export", "--weights", str(trained_tiny / "child.safetensors"), "--format", "onnx", "--out", str(tmp_path / "q"),
             "--device", "ort-cpu:threads=1", "--budget-ms", "0.00001"]  # fmt: skip
    proc = run_cli(*quick)
    assert proc.returncode == 1 and "over budget" in proc.stderr and "--allow-over-budget" in proc.stderr
    assert run_cli(*quick, "--allow-over-budget").returncode == 0
    # the int8 agreement threshold: a warning exactly when the card's agreement is under it
    for fmt in ("onnx", "tflite"):
        agreement = json.loads((out / f"m-int8.{fmt}.json").read_text())["checks"]["top1_agreement_vs_fp32"]
        assert (f"m-int8.{fmt} agrees with fp32 PyTorch on {agreement:.1%}" in strict.stderr) == (agreement < 0.999), (
            fmt
        )


@pytest.mark.tour  # three TFLite exports: CI runs it after the default suite
def test_the_budget_gates_the_precisions_that_make_sense_on_the_device(trained_tiny: Path, tmp_path: Path) -> None:
    # per-precision gates: on a CPU device the budget gates fp32 and int8; fp16 files are reported only
    gated = ["export", "--weights", str(trained_tiny / "child.safetensors"), "--format", "tflite", "--fp16", "--out",
             str(tmp_path / "g"), "--name", "g", "--device", "tflite-cpu:threads=1", "--budget-ms", "0.00001"]  # fmt: skip
    proc = run_cli(*gated)
    assert proc.returncode == 1 and "g-fp32.tflite" in proc.stderr and "g-fp16.tflite" not in proc.stderr
    assert "reported, not gated" in proc.stdout and "g-fp16.tflite" in proc.stdout.split("reported, not gated")[1]
    proc = run_cli(*gated, "--budget-gates", "int8")  # no int8 file: nothing is gated
    assert proc.returncode == 0, proc.stderr
    assert "reported, not gated" in proc.stdout
    proc = run_cli(*gated, "--budget-gates", "fp8")
    assert proc.returncode == 2 and "--budget-gates 'fp8'" in proc.stderr


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, after the default suite
def test_export_bad_inputs_leave_nothing_behind(trained_tiny: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    get_space("tiny").sample(6).save(other)
    out = tmp_path / "out"

    def err(*args: str) -> str:
        proc = run_cli("export", "--out", str(out), *args)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        return proc.stderr

    weights = str(trained_tiny / "child.safetensors")
    msg = err("--arch", str(other), "--weights", weights)
    model, stored = build_model(get_space("tiny").sample(6)).state_dict(), read_child(weights).weights
    first = next(k for k in model if k not in stored or model[k].shape != stored[k].shape)
    assert "does not match" in msg and f"tensor {first} " in msg
    assert "unsupported format 'coreml'" in err("--weights", weights, "--format", "onnx,coreml")
    assert "needs calibration images" in err("--weights", weights, "--int8")
    assert "--lut needs --device" in err("--weights", weights, "--lut", str(tmp_path / "x.lut"))
    assert "--nhwc sets the input layout of TFLite" in err("--weights", weights, "--format", "onnx", "--nhwc")
    assert "--nchw sets the input layout of TFLite" in err("--weights", weights, "--format", "onnx", "--nchw")
    for flag in ("--dynamic-batch", "--simplify"):  # every flag is applied or refused, for every format
        assert f"{flag} applies to ONNX files only" in err("--weights", weights, "--format", "tflite", flag)
    assert "--budget-gates qualifies --budget-ms" in err("--weights", weights, "--budget-gates", "fp32")
    assert "--allow-over-budget qualifies --budget-ms" in err("--weights", weights, "--allow-over-budget")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert "cannot write there" in run_cli("export", "--weights", weights, "--out", str(blocker / "sub")).stderr
    truncated = tmp_path / "half.pt"
    truncated.write_bytes((trained_tiny / "child.safetensors").read_bytes()[:500])
    assert "truncated" in err("--weights", str(truncated))
    assert "no such weights file" in err("--weights", str(tmp_path / "nope.pt"))
    assert not out.exists() or not any(out.iterdir())


def _scaled_logits(child: Child, arch: Architecture, peak: float) -> np.ndarray:
    """Check inputs, with the child's classifier scaled so that its largest logit on them is ``peak``."""
    x = np.random.default_rng(0).standard_normal((8, 3, arch.resolution, arch.resolution)).astype(np.float32)
    with torch.no_grad():
        now = float(child.model(torch.from_numpy(x)).abs().max())
        child.model.classifier[2].weight.mul_(peak / now)
        child.model.classifier[2].bias.mul_(peak / now)
    return x


def test_a_file_that_differs_from_pytorch_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    """Logits of about 40: fp32 files stay within 1e-4 of PyTorch, fp16 weights cannot (11-bit
    mantissa), so the pipeline must refuse at the fp16 file and leave no file, not even the fp32
    ones it had already checked."""
    arch = get_space("tiny").sample(3)
    child = _child(arch)
    x = _scaled_logits(child, arch, 40.0)
    with torch.no_grad():
        assert 30 < float(child.model(torch.from_numpy(x)).abs().max()) < 50
    out = tmp_path / "out"
    with pytest.raises(HwnasError, match=r"tflite fp16 differs from PyTorch by .*nothing was written"):
        export_child(child, out, ["onnx", "tflite"], ["fp32", "fp16"], check_inputs=x, stem="m")
    assert not out.exists() or not any(out.iterdir())
    fine = export_child(child, tmp_path / "fp32", ["onnx", "tflite"], ["fp32"], check_inputs=x, stem="m")
    assert all(r.max_abs_diff is not None and r.max_abs_diff <= 1e-4 for r in fine)  # fp32 alone passes
    assert sorted(p.name for p in (tmp_path / "fp32").iterdir()) == [
        "m-fp32.onnx", "m-fp32.onnx.json", "m-fp32.tflite", "m-fp32.tflite.json"]  # fmt: skip


class _LowerWhenExported(torch.nn.Module):
    """PyTorch's logits in eager mode; every logit ``shift`` lower in the ONNX file it exports to."""

    def __init__(self, model: torch.nn.Module, shift: float) -> None:
        super().__init__()
        self.model, self.shift = model, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y - self.shift if torch.onnx.is_in_onnx_export() else y


def test_a_file_whose_every_output_is_below_pytorchs_is_refused(tmp_path: Path) -> None:
    """The comparison is of |file - PyTorch|: an ONNX file whose every logit is 1e-3 below
    PyTorch's (10x the fp32 tolerance) is refused, though its largest signed difference is negative."""
    arch = get_space("tiny").sample(3)
    child = _child(arch)
    lower = Child(arch, _LowerWhenExported(child.model, 1e-3), child.mean, child.std, child.meta)
    out = tmp_path / "out"
    with pytest.raises(HwnasError, match=r"onnx fp32 differs from PyTorch by 1\.00e-03 .*nothing was written"):
        export_child(lower, out, ["onnx"], ["fp32"], stem="m")
    assert not out.exists() or not any(out.iterdir())
    same = export_child(child, tmp_path / "fine", ["onnx"], ["fp32"], stem="m")  # the same network, unshifted
    assert same[0].max_abs_diff is not None and same[0].max_abs_diff <= 1e-4


def _image_folder(root: Path, per_class: int = 12) -> list[str]:
    """An image folder of four classes, 20x20 RGB, a colour per class (so a child has something to learn)."""
    from PIL import Image

    names = ["bird", "cat", "dog", "frog"]
    rng = np.random.default_rng(0)
    for ci, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            img = rng.integers(0, 60, (20, 20, 3)).astype(np.uint8)
            img[..., ci % 3] += 150
            Image.fromarray(img).save(root / name / f"{j}.png")
    return names


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, keeping the default suite under 15 minutes
def test_a_trained_child_ships_to_every_runtime(tmp_path: Path) -> None:
    """Issue 38, must-show 1: one trained child as ONNX, TFLite, ExecuTorch and Core ML files; the
    .pte files run in ExecuTorch's own runtime against PyTorch, the package read back with coremltools."""
    pytest.importorskip("executorch", reason="the executorch extra is not installed")
    ct = pytest.importorskip("coremltools", reason="the coreml extra is not installed")
    from executorch.runtime import Runtime

    names = _image_folder(tmp_path / "imgs")
    get_space("tiny").sample(5).save(tmp_path / "arch.json")
    proc = run_cli("train", "--arch", str(tmp_path / "arch.json"), "--data", str(tmp_path / "imgs"), "--epochs", "4",
                   "--out", str(tmp_path / "child.safetensors"), "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "x"
    proc = run_cli("export", "--weights", str(tmp_path / "child.safetensors"), "--format", "onnx,tflite,pte,mlpackage",
                   "--int8", "--data", str(tmp_path / "imgs"), "--out", str(out), "--name", "m", "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    files = {p.name for p in out.iterdir() if not p.name.endswith(".json")}
    assert files == {f"m-{p}.{f}" for f in ("onnx", "tflite", "pte") for p in ("fp32", "int8")} | {"m-fp32.mlpackage"}
    child = load_child(None, tmp_path / "child.safetensors")
    r = child.arch.resolution
    # the images as the child sees them (whole image resized, normalized with the card's figures)
    card = json.loads((out / "m-fp32.pte.json").read_text())
    mean, std = (torch.tensor(card["input"]["normalization"][k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    from PIL import Image

    pixels = np.stack([np.asarray(Image.open(f)) for f in sorted((tmp_path / "imgs").rglob("*.png"))])
    x = torch.nn.functional.interpolate(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255, size=(r, r),
                                        mode="bilinear", align_corners=False)  # fmt: skip
    x = ((x - mean) / std).contiguous()
    with torch.no_grad():
        want = child.model(x).numpy()
    got = {}
    for precision in ("fp32", "int8"):
        program = Runtime.get().load_program(out / f"m-{precision}.pte")
        forward = program.load_method("forward")
        got[precision] = np.concatenate([forward.execute([x[i : i + 1]])[0].numpy() for i in range(len(x))])
    assert np.abs(got["fp32"] - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
    agree = float((got["int8"].argmax(1) == want.argmax(1)).mean())
    assert agree >= 0.95, agree
    # the Core ML package: an image classifier with the folder's class names, in order
    spec = ct.utils.load_spec(str(out / "m-fp32.mlpackage"))
    fn = spec.mlProgram.functions["main"]
    [classify] = [op for op in fn.block_specializations[fn.opset].operations if op.type == "classify"]
    labels = [v.immediateValue.tensor.strings.values[0]
              for v in classify.inputs["classes"].arguments[0].value.immediateValue.list.values]  # fmt: skip
    assert labels == names[: child.arch.num_classes] + [f"class_{i}" for i in range(len(names), child.arch.num_classes)]
    image = spec.description.input[0].type.imageType
    assert (image.width, image.height) == (r, r)
    assert [o.name for o in spec.description.output] == ["classLabel", "probabilities"]


@pytest.mark.tour  # a long command-line journey: CI runs it with the tour, keeping the default suite under 15 minutes
def test_cards_from_an_image_folder_carry_its_class_names_preprocessing_and_one_set_of_tensor_names(
    tmp_path: Path,
) -> None:
    names = _image_folder(tmp_path / "imgs")
    rng = np.random.default_rng(1)
    arch = get_space("tiny").sample(5)
    arch.save(tmp_path / "arch.json")
    proc = run_cli("train", "--arch", str(tmp_path / "arch.json"), "--data", str(tmp_path / "imgs"), "--epochs", "1",
                   "--out", str(tmp_path / "child.safetensors"), "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("export", "--weights", str(tmp_path / "child.safetensors"), "--format", "onnx,tflite", "--out",
                   str(tmp_path / "x"), "--name", "m")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cards = {f: json.loads((tmp_path / "x" / f"m-fp32.{f}.json").read_text()) for f in ("onnx", "tflite")}
    expected_labels = names
    for fmt, card in cards.items():
        assert card["labels"] == expected_labels, fmt
        pre = card["input"]["preprocessing"]
        assert pre["channel_order"] == "RGB" and f"{arch.resolution}x{arch.resolution}" in pre["resize"]
        assert "training images were 20x20" in pre["resize"] and "255" in pre["scale"]
        assert (card["input"]["name"], card["output"]["name"]) == ("input", "logits")
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    session = ort.InferenceSession(str(tmp_path / "x" / "m-fp32.onnx"))  # the names the cards give, in the files
    assert [i.name for i in session.get_inputs()] == ["input"] and [o.name for o in session.get_outputs()] == ["logits"]
    sig = Interpreter(model_path=str(tmp_path / "x" / "m-fp32.tflite")).get_signature_list()
    assert sig == {cards["tflite"]["signature"]: {"inputs": ["input"], "outputs": ["logits"]}}
    x = rng.standard_normal((1, 3, arch.resolution, arch.resolution)).astype(np.float32)
    assert (cards["onnx"]["input"]["layout"], cards["tflite"]["input"]["layout"]) == ("NCHW", "NHWC")  # the defaults
    for fmt, card in cards.items():  # the card's own snippet runs, in the folder of the file, on the card's layout
        import os

        scope: dict[str, object] = {"x": x.transpose(0, 2, 3, 1).copy() if card["input"]["layout"] == "NHWC" else x}
        here = os.getcwd()
        os.chdir(tmp_path / "x")
        try:
            exec(card["usage_python"], scope)
        finally:
            os.chdir(here)
        assert np.asarray(scope["logits"]).shape == (1, arch.num_classes), fmt


def test_load_child_round_trip(trained_tiny: Path) -> None:
    child = load_child(trained_tiny / "arch.json", trained_tiny / "child.safetensors")
    stored = read_child(trained_tiny / "child.safetensors")
    for k, v in child.model.state_dict().items():
        assert torch.equal(v, stored.weights[k])
    assert child.mean == stored.meta["mean"] and child.arch.to_str() == get_space("tiny").sample(5).to_str()


@pytest.mark.skipif(not (SHARED_DATA / "cifar10-jpeg.npz").exists(), reason="../shared/data/cifar10-jpeg.npz not here")
@pytest.mark.slow
def test_int8_agrees_with_fp32_on_real_cifar10(tmp_path: Path) -> None:
    """A CIFAR-10-trained child: int8 top-1 agreement with fp32 >= 98% on 500 test images (about 20
    minutes on 2 cores: the child must be trained well enough to have real logit margins)."""
    data = str(SHARED_DATA / "cifar10-jpeg.npz")
    arch_path = tmp_path / "arch.json"
    get_space("cifar").sample(11).save(arch_path)
    proc = run_cli("train", "--arch", str(arch_path), "--data", data, "--limit", "20000", "--epochs", "15",
                   "--out", str(tmp_path / "child.safetensors"), "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("export", "--weights", str(tmp_path / "child.safetensors"), "--format", "onnx,tflite", "--int8",
                   "--data", data, "--check-images", "500", "--out", str(tmp_path / "x"), "--name", "m")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for fmt in ("onnx", "tflite"):
        card = json.loads((tmp_path / "x" / f"m-int8.{fmt}.json").read_text())
        assert card["checks"]["top1_agreement_vs_fp32"] >= 0.98, (fmt, card["checks"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"formats": ["onnx"], "precisions": ["fp32", "int8"]}, "--int8 needs calibration images"),
        ({"formats": ["onnx"], "budget_ms": 1.0}, "--budget-ms needs --device"),
        ({"formats": ["onnx"], "gates": ["fp32"]}, "--budget-gates qualifies --budget-ms"),
        ({"formats": ["onnx"], "lut": "x.lut"}, "--lut needs --device"),
        ({"formats": ["onnx"], "nhwc": False}, "--nchw sets the input layout of TFLite files"),
        ({"formats": ["tflite"], "simplify": True}, "--simplify applies to ONNX files only"),
        ({"formats": ["tflite"], "dynamic_batch": True}, "--dynamic-batch applies to ONNX files only"),
    ],
)
def test_python_callers_meet_the_commands_errors_before_anything_is_written(kwargs, message, tmp_path: Path) -> None:
    from hwnas.workflows import export_and_check

    out = tmp_path / "out"
    with pytest.raises(HwnasError, match=message):
        export_and_check(_child(get_space("tiny").sample(1)), out, **kwargs)
    assert not out.exists()


def test_budget_gates_must_be_precisions() -> None:
    from hwnas.export.request import ExportRequest

    ExportRequest(["onnx"], has_device=True, budget_ms=1.0, gates=["fp32", "int8"]).check()
    for gates in (["fp8"], [], ["fp32", "int4"]):
        with pytest.raises(HwnasError, match=r"--budget-gates .*give precisions from fp32, fp16, int8"):
            ExportRequest(["onnx"], has_device=True, budget_ms=1.0, gates=gates).check()


def test_the_fp32_tolerance_grows_with_the_logits_and_still_refuses_a_real_difference(tmp_path: Path) -> None:
    """fp32 rounding is relative: at logits of about 600 an honest file differs by a few 1e-4 and
    passes, while a file every logit of which is off by 1e-4 of that scale times 10 is refused."""
    arch = get_space("tiny").sample(3)
    child = _child(arch)
    x = _scaled_logits(child, arch, 600.0)
    fine = export_child(child, tmp_path / "fine", ["onnx"], ["fp32"], check_inputs=x, stem="m")
    assert fine[0].max_abs_diff is not None and fine[0].max_abs_diff <= 600 * 1e-4
    lower = Child(arch, _LowerWhenExported(child.model, 0.6), child.mean, child.std, child.meta)
    with pytest.raises(HwnasError, match=r"onnx fp32 differs from PyTorch by 6\.0\de-01 \(> 0\.06\d*, the tolerance at "
                                         r"outputs up to 6\d\d\); nothing was written"):  # fmt: skip
        export_child(lower, tmp_path / "out", ["onnx"], ["fp32"], check_inputs=x, stem="m")
