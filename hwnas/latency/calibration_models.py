"""The calibration models a LUT can be fitted with (:mod:`hwnas.latency.predictor` fits them), defined
once and importable without numpy, so the command line offers exactly these."""

from __future__ import annotations

# model -> (one scale for all ops?, one per-kernel constant for all ops?)
MODEL_SHAPES = {"linear": (True, True), "per-op": (True, False), "per-op-scale": (False, True), "full": (False, False)}
RAW = "raw"  # the LUT sum itself, nothing fitted
MODELS = (*MODEL_SHAPES, RAW)
AUTO = "auto"  # the model with the lowest leave-one-out error
