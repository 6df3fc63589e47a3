"""Kernels: the units a runtime executes, the keys of the latency lookup table, and which kernels
a block or a whole architecture runs (:func:`block_kernels`, :func:`arch_kernels`).

A kernel is one fused operation at one exact shape (batch 1). ONNX Runtime and LiteRT fold
BatchNorm into the preceding conv and fuse the activation, so a conv-bn-act is one ``conv``.

=========  ======================================================  ===========================
op         canonical key                                           runtime op
=========  ======================================================  ===========================
conv       ``conv_i{cin}_o{cout}_k{k}_s{s}_h{h}_w{w}_{act}``        conv (+folded BN, +act)
dwconv     ``dwconv_c{c}_k{k}_s{s}_h{h}_w{w}_{act}``                depthwise conv
se         ``se_c{c}_m{mid}_h{h}_w{w}_{act}_{gate}``                pool, 2 x 1x1 conv, gate, mul
add        ``add_c{c}_h{h}_w{w}``                                   residual add
gap        ``gap_c{c}_h{h}_w{w}``                                   global average pool
linear     ``linear_i{cin}_o{cout}``                                fully connected, with bias
=========  ======================================================  ===========================

``h`` and ``w`` are the kernel's *input* size; ``act`` is ``relu``, ``hswish`` or ``none``;
``gate`` is ``sigmoid`` or ``hsigmoid``.

FLOPs and params follow the convention of mobile-vision's published figures: a multiply-add is
one FLOP; conv and linear layers count their multiply-adds, a global average pool counts one
per input element; BatchNorm (folded), activations, the SE multiply and residual adds count
nothing. Params are conv and linear weights only (no biases, no BatchNorm).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hwnas.spaces.arch import Architecture, BlockShape, conv_out
from hwnas.spaces.ops import OpType, mid_channels, se_channels

KERNEL_OPS = ("conv", "dwconv", "se", "add", "gap", "linear")
ACTS = ("relu", "hswish", "none")
GATES = ("sigmoid", "hsigmoid")


@dataclass(frozen=True, order=True)
class Kernel:
    """One fused op at one shape. Unused fields stay at their defaults (see the module table).

    For ``se``, ``cout`` is the SE bottleneck width.
    """

    op: str
    cin: int
    cout: int = 0
    k: int = 1
    s: int = 1
    h: int = 1
    w: int = 1
    act: str = "none"
    gate: str = ""

    def __post_init__(self) -> None:
        if self.op not in KERNEL_OPS:
            raise ValueError(f"unknown kernel op {self.op!r}; known: {', '.join(KERNEL_OPS)}")
        if self.act not in ACTS:
            raise ValueError(f"unknown activation {self.act!r}; known: {', '.join(ACTS)}")

    @property
    def key(self) -> str:
        """The canonical LUT key, with every shape field."""
        o = self.op
        if o == "conv":
            return f"conv_i{self.cin}_o{self.cout}_k{self.k}_s{self.s}_h{self.h}_w{self.w}_{self.act}"
        if o == "dwconv":
            return f"dwconv_c{self.cin}_k{self.k}_s{self.s}_h{self.h}_w{self.w}_{self.act}"
        if o == "se":
            return f"se_c{self.cin}_m{self.cout}_h{self.h}_w{self.w}_{self.act}_{self.gate}"
        if o in ("add", "gap"):
            return f"{o}_c{self.cin}_h{self.h}_w{self.w}"
        return f"linear_i{self.cin}_o{self.cout}"

    def __str__(self) -> str:
        return self.key

    @classmethod
    def from_key(cls, key: str) -> Kernel:
        """Parse a canonical key back into a kernel; ``ValueError`` if it is not one."""
        for op, pattern in _KEY_PATTERNS.items():
            m = pattern.fullmatch(key)
            if m:
                d = m.groupdict()
                ints = {k: int(v) for k, v in d.items() if k not in ("act", "gate")}
                return cls(op, **ints, act=d.get("act") or "none", gate=d.get("gate") or "")
        raise ValueError(f"not a kernel key: {key!r}")

    @property
    def out_hw(self) -> tuple[int, int]:
        if self.op in ("conv", "dwconv"):
            return conv_out(self.h, self.s), conv_out(self.w, self.s)
        if self.op in ("gap", "linear"):
            return 1, 1
        return self.h, self.w

    @property
    def flops(self) -> int:
        """Multiply-adds, in mobile-vision's convention (module docstring)."""
        ho, wo = self.out_hw
        if self.op == "conv":
            return self.k * self.k * self.cin * self.cout * ho * wo
        if self.op == "dwconv":
            return self.k * self.k * self.cin * ho * wo
        if self.op == "se":
            return self.cin * self.h * self.w + 2 * self.cin * self.cout
        if self.op == "gap":
            return self.cin * self.h * self.w
        if self.op == "linear":
            return self.cin * self.cout
        return 0

    @property
    def params(self) -> int:
        """Conv and linear weights (no biases, no BatchNorm)."""
        if self.op == "conv":
            return self.k * self.k * self.cin * self.cout
        if self.op == "dwconv":
            return self.k * self.k * self.cin
        if self.op in ("se", "linear"):
            return (2 if self.op == "se" else 1) * self.cin * self.cout
        return 0


_KEY_PATTERNS = {
    "conv": re.compile(
        r"conv_i(?P<cin>\d+)_o(?P<cout>\d+)_k(?P<k>\d+)_s(?P<s>\d+)_h(?P<h>\d+)_w(?P<w>\d+)_(?P<act>\w+)"
    ),
    "dwconv": re.compile(r"dwconv_c(?P<cin>\d+)_k(?P<k>\d+)_s(?P<s>\d+)_h(?P<h>\d+)_w(?P<w>\d+)_(?P<act>\w+)"),
    "se": re.compile(r"se_c(?P<cin>\d+)_m(?P<cout>\d+)_h(?P<h>\d+)_w(?P<w>\d+)_(?P<act>[a-z]+)_(?P<gate>[a-z]+)"),
    "add": re.compile(r"add_c(?P<cin>\d+)_h(?P<h>\d+)_w(?P<w>\d+)"),
    "gap": re.compile(r"gap_c(?P<cin>\d+)_h(?P<h>\d+)_w(?P<w>\d+)"),
    "linear": re.compile(r"linear_i(?P<cin>\d+)_o(?P<cout>\d+)"),
}


# --- which kernels a network runs ----------------------------------------------------------------
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
    ho, wo = conv_out(h, s), conv_out(w, s)
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
