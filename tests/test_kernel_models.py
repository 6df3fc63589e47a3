from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from hwnas.devices import open_device
from hwnas.latency.kernel_models import kernel_input_shape, kernel_module, onnx_artifacts
from hwnas.spaces import get_space
from hwnas.spaces.kernels import Kernel

KERNELS = [
    (Kernel("conv", 8, 16, 3, 2, 12, 12, "hswish"), ["Conv", "HardSwish"]),
    (Kernel("conv", 16, 24, 1, 1, 6, 6, "none"), ["Conv"]),
    (Kernel("dwconv", 24, 0, 5, 2, 9, 9, "relu"), ["Conv", "Relu"]),
    (
        Kernel("se", 32, 8, 1, 1, 5, 5, "hswish", "hsigmoid"),
        ["GlobalAveragePool", "Conv", "HardSwish", "Conv", "HardSigmoid", "Mul"],
    ),
    (Kernel("add", 16, h=4, w=4), ["Add"]),
    (Kernel("gap", 64, h=7, w=7), ["GlobalAveragePool"]),
    (Kernel("linear", 64, 10), ["Gemm"]),
]


@pytest.mark.parametrize(("kernel", "ops"), KERNELS, ids=lambda x: getattr(x, "key", ""))
def test_onnx_kernel_models_fuse_bn_and_match_torch(kernel: Kernel, ops: list[str]) -> None:
    [data] = onnx_artifacts([kernel])
    assert [n.op_type for n in onnx.load_from_string(data).graph.node] == ops  # BN folded into the conv
    runner = open_device("ort-cpu").load(data)
    x = next(iter(runner.feeds.values()))  # type: ignore[attr-defined]
    (y,) = runner.run()  # type: ignore[misc]
    with torch.no_grad():
        ref = kernel_module(kernel)(torch.from_numpy(x)).numpy()
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() < 1e-4


def test_kernel_modules_are_deterministic_and_have_the_key_shape() -> None:
    for kernel in get_space("tiny").kernels():
        a, b = kernel_module(kernel), kernel_module(kernel)
        x = torch.randn(kernel_input_shape(kernel))
        with torch.no_grad():
            ya, yb = a(x), b(x)
        assert torch.equal(ya, yb)
        ho, wo = kernel.out_hw
        expected = (
            (1, kernel.cout)
            if kernel.op == "linear"
            else (1, kernel.cout if kernel.op == "conv" else kernel.cin, ho, wo)
        )
        assert tuple(ya.shape) == expected
