"""What an export is asked to do, checked before anything is loaded, converted or written.

``hwnas export`` and a Python caller of :func:`hwnas.workflows.export_and_check` meet the same
one-line errors, which name the command line's flags (a Python caller's parameter of the same name).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hwnas.core.errors import HwnasError
from hwnas.core.extras import EXTRAS, require
from hwnas.core.formats import FORMAT_PRECISIONS, PRECISIONS


@dataclass(frozen=True)
class ExportRequest:
    formats: Sequence[str]
    precisions: Sequence[str] = ("fp32",)
    data: str | None = None  # int8 calibration and check images
    has_device: bool = False  # a device to measure the files on
    lut: str | None = None
    budget_ms: float | None = None
    gates: Sequence[str] | None = None  # the precisions the budget can fail
    allow_over_budget: bool = False
    nhwc: bool | None = None  # TFLite's input layout when asked for (True --nhwc, False --nchw)
    dynamic_batch: bool = False
    simplify: bool = False

    def check(self) -> None:
        """Raise :class:`HwnasError` for a combination that cannot work (one line: the problem and the fix)."""
        for fmt in self.formats:  # a route whose extra is not installed (the base install exports ONNX)
            if fmt in EXTRAS:
                require(fmt, f"--format {fmt}")
        for p in self.precisions:
            has = [f for f, ps in FORMAT_PRECISIONS.items() if p in ps and f != "torch"]
            if p in PRECISIONS and not any(f in has for f in self.formats):
                raise HwnasError(f"--{p}: {', '.join(self.formats)} files have no {p} form; add {' or '.join(has)} "
                                 f"to --format, or drop --{p}")  # fmt: skip
        if "int8" in self.precisions and not self.data:
            raise HwnasError("--int8 needs calibration images: give --data (the training data)")
        if self.budget_ms is not None and not self.has_device:
            raise HwnasError("--budget-ms needs --device, the device to measure the files on")
        for name, given in (
            ("--budget-gates", self.gates is not None),
            ("--allow-over-budget", self.allow_over_budget),
        ):
            if given and self.budget_ms is None:
                raise HwnasError(f"{name} qualifies --budget-ms; give --budget-ms MS (and --device), or drop {name}")
        if self.lut and not self.has_device:
            raise HwnasError("--lut needs --device, the device the LUT describes and the files are measured on")
        if self.nhwc is not None and "tflite" not in self.formats:
            flag = "--nhwc" if self.nhwc else "--nchw"
            raise HwnasError(f"{flag} sets the input layout of TFLite files (ONNX files are NCHW); add tflite to "
                             f"--format, or drop {flag}")  # fmt: skip
        for name, given in (("--dynamic-batch", self.dynamic_batch), ("--simplify", self.simplify)):
            if given and "onnx" not in self.formats:
                raise HwnasError(f"{name} applies to ONNX files only; add onnx to --format, or drop {name}")
        if self.gates is not None and (not self.gates or any(g not in PRECISIONS for g in self.gates)):
            raise HwnasError(f"--budget-gates {','.join(self.gates)!r}: give precisions from {', '.join(PRECISIONS)}, "
                             "e.g. fp32,int8")  # fmt: skip
