"""Which kernels (:class:`hwnas.latency.kernels.Kernel`) a block, or an architecture, runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hwnas.latency.kernels import Kernel
from hwnas.nas.arch import Architecture, BlockShape
from hwnas.nas.ops import OpType, mid_channels, se_channels


def block_kernels(op: OpType, cin: int, cout: int, s: int, e: float, h: int, w: int) -> list[Kernel]:
    """The kernels of one block with input ``cin x h x w``, in execution order."""
    act = op.act
    if op.kind == "conv":
        return [Kernel("conv", cin, cout, op.k, s, h, w, act)]
    if op.kind == "skip":
        return [] if (cin == cout and s == 1) else [Kernel("conv", cin, cout, 1, s, h, w, "relu")]
    mid = mid_channels(cin, e)
    out: list[Kernel] = []
    if mid != cin:
        out.append(Kernel("conv", cin, mid, 1, 1, h, w, act))
    if op.kind == "ir_pool":
        out.append(Kernel("gap", mid, h=h, w=w))
        out.append(Kernel("conv", mid, cout, 1, 1, 1, 1, act))
        return out
    out.append(Kernel("dwconv", mid, k=op.k, s=s, h=h, w=w, act=act))
    ho, wo = -(-h // s), -(-w // s)
    if op.gate:
        out.append(Kernel("se", mid, se_channels(mid), h=ho, w=wo, act=act, gate=op.gate))
    out.append(Kernel("conv", mid, cout, 1, 1, ho, wo, "none"))
    if cin == cout and s == 1:
        out.append(Kernel("add", cout, h=ho, w=wo))
    return out


def shape_kernels(shape: BlockShape) -> list[Kernel]:
    b = shape.block
    return block_kernels(b.optype, shape.cin, shape.cout, b.s, b.e, shape.h, shape.w)


def classifier_kernels(cin: int, h: int, w: int, num_classes: int) -> list[Kernel]:
    """Global average pool, then linear."""
    return [Kernel("gap", cin, h=h, w=w), Kernel("linear", cin, num_classes)]


def arch_kernels(arch: Architecture) -> list[Kernel]:
    """All kernels the network runs, in order (with repeats)."""
    shapes = arch.shapes()
    out = [k for s in shapes for k in shape_kernels(s)]
    last = shapes[-1]
    return out + classifier_kernels(last.cout, last.ho, last.wo, arch.num_classes)


def arch_flops(arch: Architecture) -> int:
    """Multiply-adds in mobile-vision's convention, from the kernels (no torch needed)."""
    return sum(k.flops for k in arch_kernels(arch))


def arch_params(arch: Architecture) -> int:
    """Conv and linear weights, from the kernels (no torch needed)."""
    return sum(k.params for k in arch_kernels(arch))


def kernel_sum(kernel_cost: Callable[[Kernel], float]) -> Callable[[Sequence[Kernel]], float]:
    """``kernels -> sum of kernel_cost``, each kernel's cost computed once (a space repeats kernels)."""
    memo: dict[Kernel, float] = {}

    def total(kernels: Sequence[Kernel]) -> float:
        out = 0.0
        for k in kernels:
            if k not in memo:
                memo[k] = float(kernel_cost(k))
            out += memo[k]
        return out

    return total
