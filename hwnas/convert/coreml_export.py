"""Core ML: a PyTorch classifier as an ML Program (``.mlpackage``) that an iOS app runs as an
image classifier.

The package takes an image (``ImageType``: RGB or grey, the child's resolution) and gives the
predicted label (``classLabel``) and the softmax probability of every label (``probabilities``), so
Vision's ``VNCoreMLRequest`` returns classifications with no code around the model. The card's
normalization is built in: Core ML scales every pixel by one ``scale`` and adds a ``bias`` per
channel, which folds ``(x / 255 - mean) / std`` whole when the channels share one std; otherwise the
image input takes ``x / 255 - mean`` and the graph divides by each channel's std. fp32 runs
fp32 throughout; fp16 stores weights and computes in fp16 (Core ML's default for the Neural
Engine and GPU). Converted from a trace of the classifier (coremltools' TorchScript frontend).

coremltools converts on any OS but runs models only on macOS, so on Linux a package is checked
structurally (:func:`check_mlpackage`: the spec loads; an ML Program; the image input's name, size,
colour space, scale and bias; the outputs; the labels; the weights' precision) and numerically
only on macOS (:func:`predict_mlpackage`).
"""

from __future__ import annotations

import io
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hwnas.core.errors import HwnasError
from hwnas.core.extras import require
from hwnas.core.formats import FORMAT_PRECISIONS
from hwnas.core.quiet import quiet

MLPACKAGE_PRECISIONS = FORMAT_PRECISIONS["mlpackage"]
LABEL, PROBABILITIES = "classLabel", "probabilities"
MIN_TARGET = "iOS16"  # ML Programs with fp16 and fp32 compute; iOS 16 and macOS 13 onwards
_WEIGHT_OPS = {"conv", "linear"}


@dataclass(frozen=True)
class ImageInput:
    """How the package reads an image: ``scale * pixel + bias[c]``, then (when the channels'
    stds differ) a division by ``std`` inside the graph."""

    name: str
    channels: int  # 3 (RGB) or 1 (grey)
    resolution: int
    scale: float
    bias: tuple[float, ...]
    graph_std: tuple[float, ...] | None

    @property
    def color_space(self) -> str:
        """Core ML's name of the colour layout (what the package's spec says when read back)."""
        return "RGB" if self.channels == 3 else "GRAYSCALE"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": "image", "color_layout": self.color_space,
                "width": self.resolution, "height": self.resolution, "scale": self.scale, "bias": list(self.bias),
                "then_divided_by_std_in_the_model": list(self.graph_std) if self.graph_std else None}  # fmt: skip


def image_input(name: str, channels: int, resolution: int, mean: Sequence[float], std: Sequence[float]) -> ImageInput:
    """The image input that applies ``(x / 255 - mean) / std`` (see the module docstring)."""
    if channels not in (1, 3):
        raise HwnasError(f"a Core ML image input is RGB or grey, and this child takes {channels} channels; "
                         "export it as onnx, tflite or pte instead")  # fmt: skip
    if len(mean) != channels or len(std) != channels or any(s <= 0 for s in std):
        raise HwnasError(f"the child's normalization (mean {list(mean)}, std {list(std)}) does not fit its "
                         f"{channels} channel(s); retrain it with hwnas, which records them")  # fmt: skip
    if len(set(std)) == 1:  # one std: all of it folds into Core ML's scale and bias
        s = float(std[0])
        return ImageInput(name, channels, resolution, 1 / (255 * s), tuple(-float(m) / s for m in mean), None)
    return ImageInput(name, channels, resolution, 1 / 255, tuple(-float(m) for m in mean), tuple(float(s) for s in std))


class _Classifier(nn.Module):
    """The child with the per-channel std (if any) in front and a softmax behind."""

    def __init__(self, model: nn.Module, graph_std: Sequence[float] | None) -> None:
        super().__init__()
        self.model = model
        self.inv_std = None if graph_std is None else torch.tensor([1 / s for s in graph_std]).view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inv_std is not None:
            x = x * self.inv_std
        return torch.softmax(self.model(x), dim=1)


def class_labels(labels: Sequence[str | None] | None, num_classes: int) -> list[str]:
    """One string per output: the training data's class names, ``class_<i>`` for outputs that
    never saw an image or when the weights file names none."""
    names = list(labels or [])[:num_classes]
    names += [None] * (num_classes - len(names))
    out = [n if n else f"class_{i}" for i, n in enumerate(names)]
    if len(set(out)) != len(out):
        raise HwnasError("the class names repeat; a Core ML classifier needs distinct labels")
    return out


def mlpackage_bytes(
    model: nn.Module, image: ImageInput, precision: str, labels: Sequence[str]
) -> tuple[bytes, dict[str, Any]]:
    """The ``.mlpackage`` of classifier ``model`` as a zip archive of the package folder (written
    out by :func:`write_mlpackage`), and its structure as :func:`check_mlpackage` reads it."""
    require("mlpackage", "Core ML export (--format mlpackage)")
    if precision not in MLPACKAGE_PRECISIONS:
        raise HwnasError(f"Core ML export has no {precision} here; choose one of {', '.join(MLPACKAGE_PRECISIONS)}")
    sample = torch.rand(1, image.channels, image.resolution, image.resolution)
    with quiet():  # coremltools warns about untested torch and sklearn versions on import
        import coremltools as ct
    wrapper = _Classifier(model.eval(), image.graph_std).eval()
    try:
        with quiet(), torch.no_grad():
            traced = torch.jit.trace(wrapper, sample)
            mlmodel = ct.convert(
                traced,
                inputs=[ct.ImageType(name=image.name, shape=tuple(sample.shape), scale=image.scale,
                                     bias=list(image.bias),
                                     color_layout=getattr(ct.colorlayout, image.color_space))],
                classifier_config=ct.ClassifierConfig(list(labels), predicted_feature_name=LABEL),
                convert_to="mlprogram",
                compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
                minimum_deployment_target=getattr(ct.target, MIN_TARGET),
            )  # fmt: skip
            mlmodel = _rename_probabilities(mlmodel)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model.mlpackage"
                mlmodel.save(str(path))
                structure = check_mlpackage(path)
                data = _zip(path)
    except HwnasError:
        raise
    except Exception as exc:  # the converter refused an operator
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HwnasError(f"Core ML cannot convert this model ({type(exc).__name__}: {first[:300]}); "
                         "export it as onnx, tflite or pte instead") from None  # fmt: skip
    return data, structure


def _rename_probabilities(mlmodel: Any) -> Any:
    """The model with its probabilities output named ``probabilities`` (coremltools calls it
    ``<label>_probs``); the weights are the converted model's."""
    import coremltools as ct

    spec = mlmodel.get_spec()
    ct.utils.rename_feature(spec, spec.description.predictedProbabilitiesName, PROBABILITIES)
    return ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True)


def _zip(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder).as_posix())
    return buf.getvalue()


def package_size(data: bytes) -> int:
    """Bytes of the package's files (what the app bundles), from its zip archive."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return sum(i.file_size for i in zf.infolist())


def write_mlpackage(path: Path, data: bytes) -> None:
    """Write the package folder ``path`` from its zip archive: extracted beside it, then renamed
    into place, so ``path`` is the old package or the new one, never half of either."""
    parent = path.parent
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp"))
    old = None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            zf.extractall(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=parent, prefix=f".{path.name}.", suffix=".old"))
            path.rename(old / "package")
        tmp.rename(path)
    except OSError as exc:
        if old is not None and not path.exists():
            (old / "package").rename(path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise HwnasError(f"{path}: cannot write the package ({exc.strerror})") from None
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _immediate_strings(arg: Any) -> list[str]:
    return [v.immediateValue.tensor.strings.values[0] for v in arg.value.immediateValue.list.values]


def check_mlpackage(path: Path) -> dict[str, Any]:
    """Read a saved package's spec back (no Core ML runtime needed) and return its structure:
    model type, spec version, input (name, type, size, colour space, scale and bias), outputs
    (name and type), the classifier's labels and the weights' precision. Raises a one-line
    :class:`HwnasError` where the package is not a readable ML Program image classifier."""
    with quiet():
        import coremltools as ct
        from coremltools.proto import MIL_pb2
    try:
        spec = ct.utils.load_spec(str(path))
    except Exception as exc:
        raise HwnasError(f"{path}: not a readable Core ML package ({type(exc).__name__})") from None
    if spec.WhichOneof("Type") != "mlProgram":
        raise HwnasError(f"{path}: a Core ML {spec.WhichOneof('Type')}, not an ML Program")
    [inp] = spec.description.input
    if inp.type.WhichOneof("Type") != "imageType":
        raise HwnasError(f"{path}: the input {inp.name!r} is not an image")
    img = inp.type.imageType
    color = {v: k for k, v in type(img).ColorSpace.items()}[img.colorSpace]
    fn = spec.mlProgram.functions["main"]
    ops = list(fn.block_specializations[fn.opset].operations)
    [classify] = [op for op in ops if op.type == "classify"] or [None]
    if classify is None:
        raise HwnasError(f"{path}: no classify operation; not a classifier")
    labels = _immediate_strings(classify.inputs["classes"].arguments[0])
    consts = {op.outputs[0].name: op for op in ops if op.type == "const"}
    scale, bias = _preprocessing(ops, consts, inp.name)
    dtypes = {MIL_pb2.DataType.Name(consts[name].outputs[0].type.tensorType.dataType)
              for op in ops if op.type in _WEIGHT_OPS and "weight" in op.inputs
              for name in [op.inputs["weight"].arguments[0].name] if name in consts}  # fmt: skip
    pre = spec.description.metadata.userDefined
    return {
        "model_type": "mlProgram",
        "specification_version": int(spec.specificationVersion),
        "input": {"name": inp.name, "type": "image", "width": int(img.width), "height": int(img.height),
                  "color_space": color, "scale": scale, "bias": bias},
        "outputs": {o.name: o.type.WhichOneof("Type") for o in spec.description.output},
        "predicted_feature": spec.description.predictedFeatureName,
        "predicted_probabilities": spec.description.predictedProbabilitiesName,
        "labels": labels,
        "weight_dtypes": sorted(dtypes),
        "coremltools_version": pre.get("com.github.apple.coremltools.version"),
    }  # fmt: skip


def verify_structure(structure: dict[str, Any], image: ImageInput, labels: Sequence[str], precision: str) -> None:
    """Raise a one-line :class:`HwnasError` where the package read back is not what was asked for:
    the image input (name, size, colour space, scale, bias), the two classifier outputs, the labels
    in order, and weights stored in the precision asked for."""
    inp = structure["input"]
    wrong = []
    if (inp["name"], inp["width"], inp["height"], inp["color_space"]) != (
            image.name, image.resolution, image.resolution, image.color_space):  # fmt: skip
        wrong.append(f"input {inp['name']} {inp['width']}x{inp['height']} {inp['color_space']}")
    if inp["scale"] is None or not np.isclose(inp["scale"], image.scale, rtol=1e-6):
        wrong.append(f"image scale {inp['scale']}")
    if inp["bias"] is None or not np.allclose(inp["bias"], image.bias, rtol=1e-6, atol=1e-7):
        wrong.append(f"image bias {inp['bias']}")
    if structure["outputs"] != {LABEL: "stringType", PROBABILITIES: "dictionaryType"}:
        wrong.append(f"outputs {structure['outputs']}")
    if structure["labels"] != list(labels):
        wrong.append("labels")
    if structure["weight_dtypes"] != [{"fp32": "FLOAT32", "fp16": "FLOAT16"}[precision]]:
        wrong.append(f"weights {structure['weight_dtypes']}")
    if wrong:
        raise HwnasError(f"the Core ML package read back is not what was converted ({'; '.join(wrong)}); "
                         "nothing was written")  # fmt: skip


def _preprocessing(ops: Sequence[Any], consts: dict[str, Any], name: str) -> tuple[float | None, list[float] | None]:
    """The image input's scale and bias, as the program applies them (a ``mul`` of the input
    by a constant, then an ``add`` of a constant); None where the program has neither."""

    def const_of(op: Any, other: str) -> tuple[str, list[float] | None]:
        arg = op.inputs[other].arguments[0].name
        tensor = consts[arg].attributes["val"].immediateValue.tensor if arg in consts else None
        return op.outputs[0].name, None if tensor is None else [float(v) for v in tensor.floats.values]

    scale = bias = None
    current = name
    for op in ops:
        if op.type in ("mul", "add") and op.inputs["x"].arguments[0].name == current:
            current, values = const_of(op, "y")
            if op.type == "mul" and scale is None and values is not None and len(values) == 1:
                scale = values[0]
            elif op.type == "add" and bias is None:
                bias = values
                break
    return scale, bias


def can_run() -> bool:
    """Core ML runs models only on macOS."""
    return sys.platform == "darwin"


def predict_mlpackage(path: Path, pixels: np.ndarray) -> np.ndarray:
    """Probabilities of the package at ``path`` for uint8 images ``pixels`` (N, H, W, C), in
    label order (macOS only: Core ML's runtime)."""
    with quiet():
        import coremltools as ct
    from PIL import Image

    model = ct.models.MLModel(str(path))
    structure = check_mlpackage(path)
    labels, name = structure["labels"], structure["input"]["name"]
    rows = []
    for img in pixels:
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img, "L" if img.shape[-1] == 1 else "RGB")
        probs = model.predict({name: pil})[PROBABILITIES]
        rows.append([probs[label] for label in labels])
    return np.asarray(rows, dtype=np.float32)
