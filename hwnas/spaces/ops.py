"""Block vocabulary: parse and name the FBNetV2 / mobile-vision block types.

An *op name* says what a block computes, in mobile-vision's spelling:

==================  ==========================================================
``conv_k{1,3,5}``   conv-bn-act (a stem or a plain conv layer)
``ir_k{3,5}``       inverted residual: 1x1 expand, kxk depthwise, 1x1 project
``skip``            identity, or a 1x1 conv-bn-relu when channels or stride change
``ir_pool``         the FBNet head: 1x1 expand, global pool, 1x1 conv + act
==================  ==========================================================

Suffixes: ``_se`` (squeeze-excite with a sigmoid gate, IR only), ``_sehsig`` (SE with a
hard-sigmoid gate, IR only), ``_hs`` (hard-swish instead of ReLU; not for ``skip``).
Suffixes come in that order: ``ir_k5_sehsig_hs``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["conv", "ir", "skip", "ir_pool"]
Act = Literal["relu", "hswish"]
Gate = Literal["", "sigmoid", "hsigmoid"]

OP_GRAMMAR = "conv_k{1,3,5}[_hs], ir_k{3,5}[_se|_sehsig][_hs], skip, ir_pool[_hs]"

_OP_RE = re.compile(
    r"^(?:(?P<kind>conv|ir)_k(?P<k>\d+)(?P<se>_se|_sehsig)?(?P<hs>_hs)?"
    r"|(?P<skip>skip)|(?P<pool>ir_pool)(?P<pool_hs>_hs)?)$"
)
_KERNELS: dict[str, tuple[int, ...]] = {"conv": (1, 3, 5), "ir": (3, 5)}


@dataclass(frozen=True)
class OpType:
    """A parsed op name.

    Attributes
    ----------
    kind : "conv", "ir", "skip" or "ir_pool".
    k : spatial kernel size (1 for skip and ir_pool).
    gate : SE gate, "" when the block has no SE.
    act : the block's activation, also used inside its SE.
    """

    kind: Kind
    k: int = 1
    gate: Gate = ""
    act: Act = "relu"

    @property
    def name(self) -> str:
        """The canonical op name, e.g. ``ir_k5_sehsig_hs``."""
        if self.kind == "skip":
            return "skip"
        base = "ir_pool" if self.kind == "ir_pool" else f"{self.kind}_k{self.k}"
        se = {"": "", "sigmoid": "_se", "hsigmoid": "_sehsig"}[self.gate]
        return base + se + ("_hs" if self.act == "hswish" else "")

    @property
    def uses_expansion(self) -> bool:
        """Whether the expansion ratio changes the block (IR and ir_pool blocks)."""
        return self.kind in ("ir", "ir_pool")


def parse_op(name: object) -> OpType:
    """Parse an op name; raise ``ValueError`` naming the grammar when it is not one."""
    if not isinstance(name, str):
        raise ValueError(f"expected an op name (string), got {type(name).__name__}; allowed: {OP_GRAMMAR}")
    m = _OP_RE.match(name)
    if m is None:
        raise ValueError(f"unknown block {name!r}; allowed: {OP_GRAMMAR}")
    if m["skip"]:
        return OpType("skip")
    if m["pool"]:
        return OpType("ir_pool", act="hswish" if m["pool_hs"] else "relu")
    kind: Kind = "conv" if m["kind"] == "conv" else "ir"
    k = int(m["k"])
    if k not in _KERNELS[kind]:
        raise ValueError(f"unknown block {name!r}: {kind} has kernel sizes {_KERNELS[kind]}; allowed: {OP_GRAMMAR}")
    if kind == "conv" and m["se"]:
        raise ValueError(f"unknown block {name!r}: SE exists on ir blocks only; allowed: {OP_GRAMMAR}")
    gates: dict[str | None, Gate] = {None: "", "_se": "sigmoid", "_sehsig": "hsigmoid"}
    gate = gates[m["se"]]
    return OpType(kind, k, gate, "hswish" if m["hs"] else "relu")


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor``, as mobile-vision does.

    The nearest multiple (halves round up), bumped by one ``divisor`` when rounding lost more
    than 5% of ``value``, and at least ``divisor``. Exact multiples are returned unchanged.
    """
    if value % divisor == 0:
        return max(int(value), divisor)
    rounded = math.floor(value / divisor + 0.5) * divisor
    if rounded < 0.95 * value:
        rounded += divisor
    return max(rounded, divisor)


def mid_channels(cin: int, expansion: float) -> int:
    """Inverted-residual mid (expanded) channels: ``make_divisible(cin * e, 8)``."""
    return make_divisible(cin * expansion, 8)


def se_channels(mid: int) -> int:
    """Squeeze-excite bottleneck width: ``make_divisible(int(mid / 4), 8)`` (mobile-vision)."""
    return make_divisible(int(mid * 0.25), 8)


def format_number(x: float) -> str:
    """Shortest text that reads back as the same float: 6.0 -> '6', 5.4566 -> '5.4566'."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))
