"""The latency lookup table: kernels and their keys (``kernels.py``); the profiler, the store, the
predictor and the differentiable cost arrive with the profile and accuracy issues."""
