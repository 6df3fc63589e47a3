"""Silence converter and runtime chatter (C++ logs, progress bars, warnings) for a block."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator

PROGRESS_ENV = "LITERT_TORCH_SHOW_PROGRESS"  # litert-torch's config.show_progress


@contextlib.contextmanager
def litert_progress_off() -> Iterator[None]:
    """Turn off litert-torch's progress printing for a block (and nothing else)."""
    before = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = "n"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = before


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null (C++ logging of LiteRT, TensorFlow Lite and torchao
    writes there, below Python) and Python's ``sys.stdout`` and ``sys.stderr`` too (ONNX Runtime's
    int8 calibration prints to one, coremltools' progress bars to the other), turn off litert-torch's progress bars and Python warnings."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        with (
            litert_progress_off(),
            warnings.catch_warnings(),
            open(os.devnull, "w") as sink,
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),  # Python-level writers too (coremltools' tqdm bars)
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
