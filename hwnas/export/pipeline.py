"""``hwnas export``: files, numeric checks against PyTorch, model cards, and the budget check.

For every requested format and precision the pipeline converts the child, runs the file in its
runtime (ONNX Runtime, LiteRT's Interpreter, ExecuTorch's runtime; Core ML's on macOS only) on the same inputs as
PyTorch and records the max abs difference (fp32, fp16) or the top-1 agreement with the fp32 model on real images (int8),
writes the file and a model card (``<file>.json``) atomically, and, with a device, times the
file there and compares it with the LUT's prediction and the budget. A file and its card are
written (atomically) only after the file's check has passed, so nothing half-written is left
behind; bad arguments and unwritable folders fail before any conversion. A Core ML package is a
folder: off macOS it is checked structurally (:func:`hwnas.convert.coreml_export.check_mlpackage`:
its input, outputs, labels and weights' precision against what was asked), and its card says the
numbers were not checked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hwnas import __version__
from hwnas.convert import coreml_export as coreml
from hwnas.convert.onnx_export import INPUT, OUTPUT, onnx_bytes, onnx_int8
from hwnas.convert.pte_export import pte_bytes
from hwnas.convert.tflite_export import fp16_weights, tflite_bytes
from hwnas.core.errors import HwnasError
from hwnas.core.extras import version
from hwnas.core.fileio import write_bytes_atomic, write_text_atomic
from hwnas.core.formats import EXPORT_FORMATS, FORMAT_PRECISIONS, PRECISIONS
from hwnas.core.quiet import quiet
from hwnas.export.child_file import Child
from hwnas.spaces.kernels import arch_flops, arch_params

FP32_TOL, FP16_TOL = 1e-4, 1e-2
TFLITE_SIGNATURE = "serving_default"  # the signature litert-torch writes


@dataclass
class Exported:
    """One exported file and what was checked about it."""

    format: str
    precision: str
    path: Path
    size_bytes: int
    export_s: float
    max_abs_diff: float | None = None  # against PyTorch (fp32, fp16)
    top1_agreement: float | None = None  # with fp32 PyTorch on real images (int8)
    accuracy: float | None = None  # on labelled images, where given
    accuracy_fp32: float | None = None
    predicted_ms: float | None = None
    measured_ms: float | None = None
    noise_ms: float | None = None  # half-range of the measurement's rounds
    statistic: str = "fastest"  # of each round's runs, what measured_ms, predicted_ms and the budget mean
    figures_ms: dict[str, float] | None = None  # fastest, median, p90: each the median over the rounds
    verdict: dict[str, Any] | None = None  # against the budget (hwnas.latency.verdict)
    device: str | None = None
    card: dict[str, Any] = field(default_factory=dict)


def parse_formats(text: str) -> list[str]:
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in EXPORT_FORMATS]
    if bad or not formats:
        raise HwnasError(f"unsupported format {bad[0] if bad else text!r}; choose from {', '.join(EXPORT_FORMATS)}")
    return formats


def check_output_dir(out: Path) -> None:
    """Fail before converting anything when ``out`` cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".hwnas-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise HwnasError(f"{out}: cannot write there ({exc.strerror}); choose another --out") from None


def run_onnx(data: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    out = [sess.run([OUTPUT], {INPUT: x[i : i + 1]})[0] for i in range(len(x))] if _static(sess) else [
        sess.run([OUTPUT], {INPUT: x})[0]]  # fmt: skip
    return np.concatenate(out)


def run_pte(data: bytes, x: np.ndarray) -> np.ndarray:
    from hwnas.devices.executorch import run_pte as run

    return run(data, x)


def runtime_card(fmt: str) -> dict[str, Any]:
    """The runtime the file was checked in, its version, and the delegate or provider that ran it."""
    if fmt == "onnx":
        return {"name": "onnxruntime", "version": version("onnxruntime"), "execution_provider": "CPUExecutionProvider"}
    if fmt == "tflite":
        return {"name": "ai-edge-litert", "version": version("ai-edge-litert"),
                "delegate": "XNNPACK (LiteRT's default CPU delegate)"}  # fmt: skip
    if fmt == "mlpackage":
        return {"name": "coremltools", "version": version("coremltools"), "minimum_deployment_target": coreml.MIN_TARGET,
                "compute_units": "ALL by default: Core ML picks the CPU, GPU or Neural Engine when the app loads the "
                                 "model (MLModelConfiguration.computeUnits restricts it)",
                "ran_here": coreml.can_run()}  # fmt: skip
    return {"name": "executorch", "version": version("executorch"), "delegate": "XNNPACK"}


def normalization(child: Child) -> tuple[list[float], list[float]]:
    """The mean and std the child's inputs were normalized with (per channel, on 0-1 pixels)."""
    c = child.arch.in_channels
    return list(child.mean or [0.5] * c), list(child.std or [0.25] * c)


def _static(sess: Any) -> bool:
    return isinstance(sess.get_inputs()[0].shape[0], int)


def run_tflite(data: bytes, x: np.ndarray, nhwc: bool) -> np.ndarray:
    from hwnas.devices.litert import open_interpreter

    with quiet():
        it = open_interpreter(data, threads=1)
        it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    rows = []
    for i in range(len(x)):
        xi = x[i : i + 1].transpose(0, 2, 3, 1) if nhwc else x[i : i + 1]
        it.set_tensor(inp["index"], _to_input(np.ascontiguousarray(xi, dtype=np.float32), inp))
        it.invoke()
        rows.append(_from_output(it.get_tensor(out["index"]), out))
    return np.concatenate(rows)


def _to_input(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Quantize a float input for a full-integer model (its scale and zero point), else pass it."""
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def _from_output(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if np.issubdtype(detail["dtype"], np.floating):
        return y.astype(np.float32).copy()
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale


def tflite_io(data: bytes) -> dict[str, Any]:
    """Input and output dtype and quantization (scale, zero point) of a TFLite model, for its card."""
    from hwnas.devices.litert import open_interpreter

    with quiet():
        it = open_interpreter(data)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    return {
        "input_dtype": np.dtype(inp["dtype"]).name, "input_quantization": list(inp["quantization"]),
        "output_dtype": np.dtype(out["dtype"]).name, "output_quantization": list(out["quantization"]),
    }  # fmt: skip


def export_child(
    child: Child,
    out: Path,
    formats: Sequence[str],
    precisions: Sequence[str] = ("fp32",),
    nhwc: bool = True,
    dynamic_batch: bool = False,
    check_inputs: np.ndarray | None = None,
    calibration: Sequence[np.ndarray] = (),
    labelled: tuple[np.ndarray, np.ndarray] | None = None,
    stem: str = "model",
    simplify: bool = False,
    on_file: Callable[[str], None] | None = None,
) -> list[Exported]:
    """Export ``child`` (see the module docstring); ``check_inputs`` are normalized NCHW images
    (random ones when None), ``labelled`` real images with labels for int8 agreement and accuracy."""
    for p in precisions:
        if p not in PRECISIONS:
            raise HwnasError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
    if "int8" in precisions and not calibration:
        raise HwnasError("--int8 needs calibration images: give --data with training images")
    if "fp16" in precisions and not any("fp16" in FORMAT_PRECISIONS[f] for f in formats):
        raise HwnasError("fp16 is a TFLite or Core ML export here; add tflite or mlpackage to --format")
    check_output_dir(out)
    arch, model = child.arch, child.model.eval()
    shape = (1, arch.in_channels, arch.resolution, arch.resolution)
    x = check_inputs if check_inputs is not None else np.random.default_rng(0).standard_normal((8, *shape[1:]))
    x = x.astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
        ref_lab = model(torch.from_numpy(labelled[0])).numpy() if labelled is not None else None
    results: list[Exported] = []
    pending: list[tuple[Path, bytes]] = []
    fp32_tflite: bytes | None = None
    for fmt in formats:
        for precision in precisions:
            if precision not in FORMAT_PRECISIONS[fmt]:  # e.g. fp16 is TFLite's only
                continue
            if on_file is not None:
                on_file(f"{stem}-{precision}.{fmt}" + (" (int8 calibration)" if precision == "int8" else ""))
            t0 = time.perf_counter()
            delegation, structure = None, None
            if fmt == "mlpackage":
                data, structure = _mlpackage(child, model, precision)
            elif fmt == "pte":
                data, delegation = pte_bytes(model, shape, precision, calibration)
            elif fmt == "onnx":
                data = onnx_bytes(model, shape, dynamic_batch, simplify)
                if precision == "int8":
                    data = onnx_int8(data, calibration)
            elif precision == "fp16" and fp32_tflite is not None:  # fp16 weights of the fp32 file
                data = fp16_weights(fp32_tflite)
            else:
                data = tflite_bytes(model, shape, precision, nhwc, calibration)
                fp32_tflite = data if precision == "fp32" else fp32_tflite
            runner: Any = {"onnx": run_onnx, "pte": run_pte}.get(fmt, lambda d, xs: run_tflite(d, xs, nhwc))
            seconds = time.perf_counter() - t0
            path = out / f"{stem}-{precision}.{fmt}"
            item = Exported(fmt, precision, path, coreml.package_size(data) if structure else len(data), seconds)
            if structure is not None:  # Core ML: checked structurally; numerically on macOS only
                if coreml.can_run():
                    item.max_abs_diff = _coreml_diff(child, model, data, x, precision)
                pending.append((path, data))
                item.card = mlpackage_card(child, item, structure)
                results.append(item)
                continue
            got = runner(data, x)
            if precision != "int8":
                item.max_abs_diff = float(np.abs(got - ref).max())
                # fp32 rounding grows with the outputs: its tolerance is relative to logits above 1 (a
                # child trained on a few images had logits of 577, its fp32 ONNX file within 3.4e-4);
                # fp16's stays absolute (tests/test_export.py: fp16 weights at logits of 40 are refused)
                scale = max(1.0, float(np.abs(ref).max())) if precision == "fp32" else 1.0
                tol = (FP32_TOL if precision == "fp32" else FP16_TOL) * scale
                if item.max_abs_diff > tol:
                    raise HwnasError(f"{fmt} {precision} differs from PyTorch by {item.max_abs_diff:.2e} "
                                     f"(> {tol:.3g}, the tolerance at outputs up to {scale:.3g}); "
                                     "nothing was written")  # fmt: skip
            if labelled is not None and ref_lab is not None:
                pred = runner(data, labelled[0].astype(np.float32)).argmax(1)
                item.top1_agreement = float((pred == ref_lab.argmax(1)).mean())
                item.accuracy = float((pred == labelled[1]).mean())
                item.accuracy_fp32 = float((ref_lab.argmax(1) == labelled[1]).mean())
            pending.append((path, data))
            item.card = model_card(child, item, nhwc and fmt == "tflite", dynamic_batch and fmt == "onnx")
            if fmt == "onnx":
                item.card["simplified"] = simplify
            item.card["usage_python"] = usage(item)
            item.card["runtime"] = runtime_card(fmt)
            if delegation is not None:
                item.card["runtime"]["delegation"] = delegation.to_dict()
            if fmt == "tflite":
                item.card["signature"] = TFLITE_SIGNATURE
                io_info = tflite_io(data)
                item.card["input"]["dtype"] = io_info["input_dtype"]
                item.card["output"]["dtype"] = io_info["output_dtype"]
                if io_info["input_dtype"] != "float32":
                    item.card["input"]["quantization"] = {"scale": io_info["input_quantization"][0],
                                                          "zero_point": io_info["input_quantization"][1],
                                                          "real": "(q - zero_point) * scale"}  # fmt: skip
                    item.card["output"]["quantization"] = {"scale": io_info["output_quantization"][0],
                                                           "zero_point": io_info["output_quantization"][1]}  # fmt: skip
            results.append(item)
    # every file is checked before any is written: a refused export leaves nothing behind
    for (path, data), item in zip(pending, results, strict=True):
        if item.format == "mlpackage":
            coreml.write_mlpackage(path, data)
        else:
            write_bytes_atomic(path, data)
        write_text_atomic(path.with_name(path.name + ".json"), json.dumps(item.card, indent=2) + "\n")
    return results


def _mlpackage(child: Child, model: torch.nn.Module, precision: str) -> tuple[bytes, dict[str, Any]]:
    """Convert to Core ML and check the package's structure against what was asked for."""
    arch = child.arch
    image = coreml.image_input(INPUT, arch.in_channels, arch.resolution, *normalization(child))
    names = coreml.class_labels(labels(child), arch.num_classes)
    data, structure = coreml.mlpackage_bytes(model, image, precision, names)
    coreml.verify_structure(structure, image, names, precision)
    structure["image_input"] = image.to_dict()
    return data, structure


def _coreml_diff(child: Child, model: torch.nn.Module, data: bytes, x: np.ndarray, precision: str) -> float:
    """macOS: the largest difference between the package's probabilities and PyTorch's softmax on
    the check images, as 8-bit images (what an app passes), refused above the precision's tolerance."""
    import tempfile

    mean, std = (np.asarray(v, dtype=np.float32).reshape(1, -1, 1, 1) for v in normalization(child))
    pixels = np.clip(np.round((x * std + mean) * 255), 0, 255).astype(np.uint8)
    with torch.no_grad():
        ref = torch.softmax(model(torch.from_numpy((pixels / 255 - mean) / std).float()), 1).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.mlpackage"
        coreml.write_mlpackage(path, data)
        got = coreml.predict_mlpackage(path, pixels.transpose(0, 2, 3, 1))
    diff = float(np.abs(got - ref).max())
    tol = FP32_TOL if precision == "fp32" else FP16_TOL
    if diff > tol:
        raise HwnasError(f"mlpackage {precision} differs from PyTorch by {diff:.2e} in probability (> {tol:g}); "
                         "nothing was written")  # fmt: skip
    return diff


def mlpackage_card(child: Child, item: Exported, structure: dict[str, Any]) -> dict[str, Any]:
    """A Core ML package's card: the common card, with the image input and classifier outputs."""
    card = model_card(child, item, nhwc=False, dynamic_batch=False)
    arch = child.arch
    mean, std = normalization(child)
    prep = preprocessing(child, arch.resolution, nhwc=False)
    card["input"] = {**structure["image_input"],
                     "normalization": {"mean": mean, "std": std, "scale": "built in: pass the 8-bit image as it is"},
                     "preprocessing": {"channel_order": prep["channel_order"], "resize": prep["resize"],
                                       "vision": "VNCoreMLRequest with imageCropAndScaleOption .scaleFill (the whole "
                                                 "image)" + (", after cropping the centre 7/8" if child.meta.get(
                                                     "augment") == "resized-crop" else "")}}  # fmt: skip
    card["output"] = {"names": [coreml.LABEL, coreml.PROBABILITIES],
                      coreml.LABEL: "the most probable label (a string)",
                      coreml.PROBABILITIES: "softmax probability of every label: a dictionary label -> probability"}  # fmt: skip
    card["checks"]["structure"] = {k: v for k, v in structure.items() if k != "image_input"}
    card["checks"]["numeric"] = (
        "checked against PyTorch's softmax in Core ML on this Mac (max_abs_diff_vs_pytorch)" if coreml.can_run()
        else "not run: Core ML runs models only on macOS; the package was checked structurally")  # fmt: skip
    item.card = card
    card["usage_python"] = usage(item)
    card["usage_swift"] = (
        f'let model = try VNCoreMLModel(for: MLModel(contentsOf: {item.path.stem.replace("-", "_")}.urlOfModelInThisBundle))\n'
        "let request = VNCoreMLRequest(model: model) { request, _ in\n"
        "    let best = (request.results as? [VNClassificationObservation])?.first  // .identifier, .confidence\n"
        "}\n"
        "request.imageCropAndScaleOption = .scaleFill  // the whole image, resized as in training\n"
        "try VNImageRequestHandler(cgImage: image).perform([request])")  # fmt: skip
    card["runtime"] = runtime_card("mlpackage")
    return card


def labels(child: Child) -> list[str | None] | None:
    """The class name of each output, from the training data (None past the data's classes: those
    outputs never saw an image); None when the weights file does not say."""
    classes = child.meta.get("classes")
    if not isinstance(classes, list):
        return None
    n = child.arch.num_classes
    return [str(c) for c in classes[:n]] + [None] * (n - len(classes))


def usage(item: Exported) -> str:
    """A few lines that run the file in Python (the same names in every format)."""
    if item.format == "onnx":
        return (f'import onnxruntime as ort\nsession = ort.InferenceSession("{item.path.name}")\n'
                f'logits = session.run(["{OUTPUT}"], {{"{INPUT}": x}})[0]  # x: float32, preprocessed as above')  # fmt: skip
    if item.format == "mlpackage":
        return (f'import coremltools as ct  # runs on macOS only\nfrom PIL import Image\n'
                f'model = ct.models.MLModel("{item.path.name}")\n'
                f'out = model.predict({{"{INPUT}": Image.open("photo.jpg").convert("{"RGB" if item.card["input"]["color_layout"] == "RGB" else "L"}").resize(({item.card["input"]["width"]}, '
                f'{item.card["input"]["height"]}))}})\n'
                f'label, probabilities = out["{coreml.LABEL}"], out["{coreml.PROBABILITIES}"]')  # fmt: skip
    if item.format == "pte":
        return (f'import torch\nfrom executorch.runtime import Runtime\n'
                f'program = Runtime.get().load_program("{item.path.name}")  # keep it while its method runs\n'
                f'forward = program.load_method("forward")\n'
                f'logits = forward.execute([torch.from_numpy(x)])[0]  # x: float32 NCHW, preprocessed as above')  # fmt: skip
    return (f'from ai_edge_litert.interpreter import Interpreter\n'
            f'run = Interpreter(model_path="{item.path.name}").get_signature_runner("{TFLITE_SIGNATURE}")\n'
            f'logits = run({INPUT}=x)["{OUTPUT}"]  # x: preprocessed as above (quantized first if the input is int8)')  # fmt: skip


def preprocessing(child: Child, resolution: int, nhwc: bool) -> dict[str, Any]:
    """What an app does to a camera frame before the model, in order: what training did."""
    size = child.meta.get("image_size")
    c = child.arch.in_channels
    whole = f"the whole image to {resolution}x{resolution}, bilinear (half-pixel centres, no antialiasing), no crop"
    if child.meta.get("augment") == "resized-crop":  # trained with RandomResizedCrop: evaluated on the centre
        whole = (f"the centre 7/8 of the image's height and width (as Resize(256) + CenterCrop(224)), then to "
                 f"{resolution}x{resolution}, bilinear (half-pixel centres, no antialiasing)")  # fmt: skip
    return {
        "channel_order": "RGB" if c == 3 else ("grey" if c == 1 else f"{c} channels, in the training data's order"),
        "resize": whole + (f"; training images were {size[0]}x{size[1]}" if size else ""),
        "scale": "divide the 0-255 pixel values by 255",
        "normalize": "subtract mean, divide by std, per channel (the normalization above)",
        "layout": "NHWC: [batch, height, width, channels]" if nhwc else "NCHW: [batch, channels, height, width]",
    }  # fmt: skip


def model_card(child: Child, item: Exported, nhwc: bool, dynamic_batch: bool) -> dict[str, Any]:
    arch = child.arch
    c, r = arch.in_channels, arch.resolution
    shape: list[Any] = [1, r, r, c] if nhwc else [1, c, r, r]
    if dynamic_batch:
        shape[0] = "batch"
    card: dict[str, Any] = {
        "format": "hwnas.model-card",
        "version": 1,
        "file": item.path.name,
        "model_format": item.format,
        "precision": item.precision,
        "input": {"name": INPUT, "shape": shape,
                  "layout": "NHWC" if nhwc else "NCHW", "dtype": "float32",
                  "normalization": {"mean": child.mean, "std": child.std, "scale": "x / 255, then (x - mean) / std"},
                  "preprocessing": preprocessing(child, r, nhwc)},
        "output": {"name": OUTPUT, "shape": [shape[0], arch.num_classes],
                   "meaning": "logits: one unnormalized score per class, in the order of labels; softmax gives "
                              "probabilities"},
        "labels": labels(child),
        "arch": arch.to_str(),
        "arch_json": arch.to_dict(),
        "flops": arch_flops(arch),
        "params": arch_params(arch),
        "size_bytes": item.size_bytes,
        "checks": {"max_abs_diff_vs_pytorch": item.max_abs_diff, "top1_agreement_vs_fp32": item.top1_agreement,
                   "accuracy": item.accuracy, "accuracy_fp32_pytorch": item.accuracy_fp32},
        "trained": {k: child.meta.get(k) for k in ("val_acc", "test_acc", "data", "epochs", "init") if k in child.meta},
        "hwnas_version": __version__,
    }  # fmt: skip
    return card


def update_card_latency(item: Exported) -> None:
    """Rewrite the card of ``item`` with its latency figures."""
    item.card["latency"] = {"device": item.device, "statistic": item.statistic, "predicted_ms": item.predicted_ms,
                            "measured_ms": item.measured_ms, "noise_ms": item.noise_ms,
                            "measured_by_statistic_ms": item.figures_ms, "verdict": item.verdict}  # fmt: skip
    write_text_atomic(item.path.with_name(item.path.name + ".json"), json.dumps(item.card, indent=2) + "\n")


def export_images(
    data: str, child: Child, n_calibration: int, n_check: int
) -> tuple[np.ndarray, list[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """From a dataset spec: (16 check inputs, calibration batches of one image from the training
    images, labelled test images), normalized as the child was trained, at its resolution."""
    from torch.nn import functional as F

    from hwnas.train.batches import centre_crop
    from hwnas.train.data import load_images, load_test_images

    arch = child.arch
    train = load_images(data, mode="auto")  # a large folder stays on disk: only the few images used are decoded
    test = load_test_images(data, arch.num_classes, mode="auto") or train
    mean, std = (torch.tensor(v) for v in normalization(child))

    def prep(x: torch.Tensor) -> np.ndarray:
        x = x.float() / 255
        if child.meta.get("augment") == "resized-crop":  # the view the child was evaluated on
            x = centre_crop(x)
        if x.shape[1] != arch.in_channels:
            x = x.expand(-1, arch.in_channels, -1, -1)
        if x.shape[-1] != arch.resolution or x.shape[-2] != arch.resolution:
            x = F.interpolate(x, size=(arch.resolution, arch.resolution), mode="bilinear", align_corners=False)
        return ((x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)).numpy().astype(np.float32)

    g = torch.Generator().manual_seed(0)
    calibration = [prep(train.pixels([i])) for i in torch.randperm(len(train), generator=g)[:n_calibration].tolist()]
    pick = torch.randperm(len(test), generator=g)[:n_check]
    labelled = (prep(test.pixels(pick)), test.y[pick].numpy())
    return labelled[0][:16], calibration, labelled
