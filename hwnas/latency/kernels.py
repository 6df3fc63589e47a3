"""Kernels: the units a runtime executes, and the keys of the latency lookup table.

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
from dataclasses import dataclass

KERNEL_OPS = ("conv", "dwconv", "se", "add", "gap", "linear")
ACTS = ("relu", "hswish", "none")
GATES = ("sigmoid", "hsigmoid")


def _out(size: int, stride: int) -> int:
    return -(-size // stride)


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
            return _out(self.h, self.s), _out(self.w, self.s)
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
