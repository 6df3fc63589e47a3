"""`hwnas export --format mlpackage`: a Core ML image classifier with the child's labels and
normalization built in. Core ML runs models only on macOS, so here every package is read back with
coremltools' protobuf spec by this test's own code (not hwnas's reader) and checked against what
the child says; the numeric check against PyTorch runs on macOS and skips elsewhere."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.core.errors import HwnasError
from hwnas.export.child_file import Child
from hwnas.export.pipeline import export_child
from hwnas.spaces import get_space

from conftest import run_cli, untrained_child

ct = pytest.importorskip("coremltools", reason="the coreml extra is not installed (pip install 'hwnas[coreml]')")

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _child(mean: list[float], std: list[float], classes: list[str] | None = CLASSES) -> Child:
    base = untrained_child(get_space("cifar").sample(7))
    return Child(base.arch, base.model, mean, std, {"classes": classes} if classes else {})


def _read(path: Path) -> dict:
    """What an iOS app's Xcode would see, read from the package's spec with this test's own walk."""
    from coremltools.proto import MIL_pb2

    spec = ct.utils.load_spec(str(path))
    fn = spec.mlProgram.functions["main"]
    ops = list(fn.block_specializations[fn.opset].operations)
    const = {op.outputs[0].name: op for op in ops if op.type == "const"}
    [classify] = [op for op in ops if op.type == "classify"]
    labels = [v.immediateValue.tensor.strings.values[0]
              for v in classify.inputs["classes"].arguments[0].value.immediateValue.list.values]  # fmt: skip
    conv_weights = {MIL_pb2.DataType.Name(const[op.inputs["weight"].arguments[0].name].outputs[0].type.tensorType.dataType)
                    for op in ops if op.type == "conv"}  # fmt: skip
    [inp] = spec.description.input
    first = [op for op in ops if op.type in ("mul", "add")][:2]  # the image's scale, then its bias
    values = [list(const[op.inputs["y"].arguments[0].name].attributes["val"].immediateValue.tensor.floats.values)
              for op in first]  # fmt: skip
    return {"type": spec.WhichOneof("Type"), "input": inp, "outputs": [o.name for o in spec.description.output],
            "labels": labels, "conv_weights": conv_weights, "ops": [op.type for op in first], "values": values}  # fmt: skip


def test_an_mlpackage_is_an_image_classifier_with_the_childs_labels_and_normalization(tmp_path: Path) -> None:
    child = _child([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    r = child.arch.resolution
    items = export_child(child, tmp_path, ["mlpackage"], ["fp32", "fp16"], stem="m")
    assert [(i.format, i.precision) for i in items] == [("mlpackage", "fp32"), ("mlpackage", "fp16")]
    for item, dtype in zip(items, ("FLOAT32", "FLOAT16"), strict=True):
        path = tmp_path / f"m-{item.precision}.mlpackage"
        assert path.is_dir() and (path / "Manifest.json").is_file()
        assert item.size_bytes == sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        got = _read(path)
        assert got["type"] == "mlProgram" and got["outputs"] == ["classLabel", "probabilities"]
        img = got["input"].type.imageType
        assert got["input"].name == "input" and (img.width, img.height) == (r, r)
        assert type(img).ColorSpace.Name(img.colorSpace) == "RGB"
        assert got["labels"] == CLASSES and got["conv_weights"] == {dtype}
        # Core ML computes scale * pixel + bias: one std of 0.25 folds (x / 255 - 0.5) / 0.25 whole
        assert got["ops"] == ["mul", "add"]
        assert got["values"][0] == [pytest.approx(1 / (255 * 0.25))] and got["values"][1] == pytest.approx([-2.0] * 3)
        card = json.loads((tmp_path / f"m-{item.precision}.mlpackage.json").read_text())
        assert card["model_format"] == "mlpackage" and card["labels"] == CLASSES
        assert card["input"]["type"] == "image" and card["input"]["scale"] == pytest.approx(1 / 63.75)
        assert card["output"]["names"] == ["classLabel", "probabilities"]
        assert card["runtime"]["name"] == "coremltools" and card["runtime"]["version"] == ct.__version__
        if sys.platform != "darwin":
            assert card["checks"]["numeric"].startswith("not run: Core ML runs models only on macOS")
            assert card["checks"]["max_abs_diff_vs_pytorch"] is None  # nothing claimed that was not measured
        assert card["checks"]["structure"]["labels"] == CLASSES
        assert 'MLModel("m-' in card["usage_python"] and "VNCoreMLRequest" in card["usage_swift"]


def test_per_channel_stds_are_divided_inside_the_model_and_the_arithmetic_is_the_childs(tmp_path: Path) -> None:
    from hwnas.convert.coreml_export import _Classifier, image_input

    mean, std = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
    child = _child(mean, std, classes=None)
    export_child(child, tmp_path, ["mlpackage"], ["fp32"], stem="m")
    got = _read(tmp_path / "m-fp32.mlpackage")
    assert got["labels"] == [f"class_{i}" for i in range(10)]  # a child that names no classes
    assert got["values"][0] == [pytest.approx(1 / 255)] and got["values"][1] == pytest.approx([-m for m in mean])
    # Core ML's affine step then the wrapper give PyTorch's softmax of the normalized image
    image = image_input("input", 3, child.arch.resolution, mean, std)
    pixels = torch.randint(0, 256, (2, 3, child.arch.resolution, child.arch.resolution)).float()
    coreml_side = pixels * image.scale + torch.tensor(image.bias).view(1, 3, 1, 1)
    normalized = (pixels / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        want = torch.softmax(child.model(normalized), 1)
        assert torch.allclose(_Classifier(child.model, image.graph_std)(coreml_side), want, atol=1e-6)


def test_mlpackage_refusals_are_one_line(tmp_path: Path) -> None:
    from hwnas.convert.coreml_export import check_mlpackage, class_labels, image_input

    with pytest.raises(HwnasError, match="RGB or grey, and this child takes 4 channels"):
        image_input("input", 4, 32, [0.5] * 4, [0.25] * 4)
    with pytest.raises(HwnasError, match="distinct labels"):
        class_labels(["a", "a"], 2)
    broken = tmp_path / "broken.mlpackage"
    broken.mkdir()
    (broken / "Manifest.json").write_text("{not json")
    with pytest.raises(HwnasError, match="not a readable Core ML package"):
        check_mlpackage(broken)
    # an unsupported precision, from the command line: one line naming it, before anything is loaded
    get_space("cifar").sample(7).save(tmp_path / "arch.json")
    out = tmp_path / "out"
    proc = run_cli("export", "--arch", str(tmp_path / "arch.json"), "--weights", str(tmp_path / "w.safetensors"),
                   "--format", "mlpackage", "--int8", "--data", "synthetic:n=20,size=32", "--out", str(out))  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "--int8: mlpackage files have no int8 form" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() or not any(out.iterdir())


def test_an_export_over_an_existing_package_replaces_it_whole(tmp_path: Path) -> None:
    first = _child([0.5] * 3, [0.25] * 3)
    export_child(first, tmp_path, ["mlpackage"], ["fp32"], stem="m")
    weights = next((tmp_path / "m-fp32.mlpackage").rglob("weight.bin")).read_bytes()
    second = untrained_child(first.arch, seed=1)
    export_child(Child(second.arch, second.model, [0.5] * 3, [0.25] * 3, {"classes": CLASSES}), tmp_path,
                 ["mlpackage"], ["fp32"], stem="m")  # fmt: skip
    assert next((tmp_path / "m-fp32.mlpackage").rglob("weight.bin")).read_bytes() != weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-fp32.mlpackage", "m-fp32.mlpackage.json"]  # no leftovers


@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML runs models only on macOS")
def test_on_macos_an_mlpackage_computes_pytorchs_probabilities(tmp_path: Path) -> None:
    from PIL import Image

    child = _child([0.5] * 3, [0.25] * 3)
    export_child(child, tmp_path, ["mlpackage"], ["fp32", "fp16"], stem="m")
    r = child.arch.resolution
    pixels = np.random.default_rng(0).integers(0, 256, (4, r, r, 3), dtype=np.uint8)
    with torch.no_grad():
        x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
        want = torch.softmax(child.model(x), 1).numpy()
    for precision, tol in (("fp32", 1e-4), ("fp16", 1e-2)):
        model = ct.models.MLModel(str(tmp_path / f"m-{precision}.mlpackage"))
        for img, row in zip(pixels, want, strict=True):
            probs = model.predict({"input": Image.fromarray(img, "RGB")})["probabilities"]
            assert np.abs(np.array([probs[c] for c in CLASSES]) - row).max() <= tol, precision
