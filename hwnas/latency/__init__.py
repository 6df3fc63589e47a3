"""The latency lookup table (LUT): one-kernel models (``kernel_models``, ``artifact_cache``), the
profiler that times them on a device (``profiler``), the SQLite store (``store``), the per-kernel
table (``table``), prediction with a fitted calibration (``predictor``), and accuracy against whole
networks timed end to end (``network_timing``, ``validate``). The kernels themselves (LUT keys) are
data: :mod:`hwnas.spaces.kernels`; the differentiable expected cost is the search's:
:mod:`hwnas.search.cost`."""
