"""Discrete architectures as data: blocks, shapes, a versioned JSON form and readable strings.

An :class:`Architecture` is an input resolution, a list of :class:`Block` s and a classifier
(global average pool + linear to ``num_classes``, always appended). Each block has an op name
(:mod:`hwnas.spaces.ops`), out channels ``c``, stride ``s`` and expansion ``e``.

JSON form (``format`` and ``version`` are checked on load)::

    {"format": "hwnas.arch", "version": 1, "name": "FBNetV2-F1", "resolution": 128,
     "num_classes": 1000, "in_channels": 3,
     "blocks": [{"op": "conv_k3_hs", "c": 8, "s": 2}, {"op": "ir_k5", "c": 8, "e": 1}, ...]}

One-line block strings, in timm's style: ``ir_k5_e5.4566_c24_s2_sehsig_hs`` (kind and kernel,
expansion, channels, stride, then the SE and hard-swish flags; ``e`` only where it matters).
The whole architecture reads ``r128 conv_k3_c8_s2_hs ir_k5_e1_c8_s1 ...``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas.core.errors import SpecError
from hwnas.core.fileio import write_text_atomic
from hwnas.spaces.ops import OpType, format_number, mid_channels, parse_op
from hwnas.spaces.specfile import LIMITS, Fields, dump_json, read_mapping

ARCH_FORMAT = "hwnas.arch"
ARCH_VERSION = 1
STRIDES = (1, 2)


def conv_out(size: int, stride: int) -> int:
    """Spatial output size of a 'same'-padded conv: ``ceil(size / stride)``."""
    return -(-size // stride)


@dataclass(frozen=True)
class Block:
    """One block of a discrete architecture.

    ``e`` is only meaningful for ``ir`` and ``ir_pool`` blocks; it is 1 for the others.
    """

    op: str
    c: int
    s: int = 1
    e: float = 1.0

    @property
    def optype(self) -> OpType:
        return parse_op(self.op)

    def to_str(self) -> str:
        """The one-line string, e.g. ``ir_k5_e5.4566_c24_s2_se``."""
        t = self.optype
        parts = ["skip" if t.kind == "skip" else "ir_pool" if t.kind == "ir_pool" else f"{t.kind}_k{t.k}"]
        if t.uses_expansion:
            parts.append(f"e{format_number(self.e)}")
        parts += [f"c{self.c}", f"s{self.s}"]
        if t.gate:
            parts.append("se" if t.gate == "sigmoid" else "sehsig")
        if t.act == "hswish":
            parts.append("hs")
        return "_".join(parts)

    @classmethod
    def from_str(cls, text: str) -> Block:
        """Parse a block string; raise ``ValueError`` with the expected form when it is not one."""
        m = _BLOCK_RE.match(text)
        if m is None:
            raise ValueError(f"cannot read block string {text!r}; expected e.g. 'ir_k5_e4.5_c24_s2_se_hs'")
        op = m["base"] + {None: "", "se": "_se", "sehsig": "_sehsig"}[m["se"]] + ("_hs" if m["hs"] else "")
        t = parse_op(op)
        if m["e"] is not None and not t.uses_expansion:
            raise ValueError(f"block string {text!r}: {t.kind} blocks take no expansion")
        e = float(m["e"]) if m["e"] is not None else 1.0
        return cls(t.name, int(m["c"]), int(m["s"]), e)


_BLOCK_RE = re.compile(
    r"^(?P<base>skip|ir_pool|(?:conv|ir)_k\d+)(?:_e(?P<e>\d+(?:\.\d+)?))?_c(?P<c>\d+)_s(?P<s>\d+)"
    r"(?:_(?P<se>sehsig|se))?(?P<hs>_hs)?$"
)


@dataclass(frozen=True)
class BlockShape:
    """A block placed in its network: its input and output shapes (channels, height, width)."""

    index: int
    block: Block
    cin: int
    h: int
    w: int
    cout: int
    ho: int
    wo: int

    @property
    def mid(self) -> int:
        """Expanded channels of an ``ir`` / ``ir_pool`` block (``cin`` for the others)."""
        return mid_channels(self.cin, self.block.e) if self.block.optype.uses_expansion else self.cin

    @property
    def residual(self) -> bool:
        """An ``ir`` block adds its input back when the shapes agree (in == out, stride 1)."""
        return self.block.optype.kind == "ir" and self.cin == self.cout and self.block.s == 1


@dataclass(frozen=True)
class Architecture:
    """A discrete network: resolution, blocks, classifier. Immutable and hashable."""

    blocks: tuple[Block, ...]
    resolution: int
    num_classes: int = 1000
    in_channels: int = 3
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        _validate(self, self.name or "<architecture>")

    # --- shapes -------------------------------------------------------------------------
    def shapes(self, resolution: int | None = None) -> list[BlockShape]:
        """Each block's input and output shape at ``resolution`` (default: the arch's own)."""
        size = self.resolution if resolution is None else resolution
        h = w = size
        cin = self.in_channels
        out: list[BlockShape] = []
        for i, b in enumerate(self.blocks):
            if b.optype.kind == "ir_pool":
                ho = wo = 1
            else:
                ho, wo = conv_out(h, b.s), conv_out(w, b.s)
            out.append(BlockShape(i, b, cin, h, w, b.c, ho, wo))
            cin, h, w = b.c, ho, wo
        return out

    @property
    def out_channels(self) -> int:
        """Channels that reach the classifier."""
        return self.blocks[-1].c if self.blocks else self.in_channels

    def with_resolution(self, resolution: int) -> Architecture:
        return Architecture(self.blocks, resolution, self.num_classes, self.in_channels, self.name)

    # --- strings ------------------------------------------------------------------------
    def block_strings(self) -> list[str]:
        return [b.to_str() for b in self.blocks]

    def to_str(self) -> str:
        """One line: ``r{resolution} block block ...`` (classes and input channels not included)."""
        return " ".join([f"r{self.resolution}", *self.block_strings()])

    def __str__(self) -> str:
        return self.to_str()

    @classmethod
    def from_str(cls, text: str, num_classes: int = 1000, in_channels: int = 3, name: str = "") -> Architecture:
        tokens = text.split()
        if not tokens or not re.fullmatch(r"r\d+", tokens[0]):
            raise ValueError(f"an architecture string starts with the resolution, e.g. 'r224 ...'; got {text[:40]!r}")
        return cls(tuple(Block.from_str(t) for t in tokens[1:]), int(tokens[0][1:]), num_classes, in_channels, name)

    # --- JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        blocks = []
        for b in self.blocks:
            d: dict[str, Any] = {"op": b.op, "c": b.c, "s": b.s}
            if b.optype.uses_expansion:
                d["e"] = int(b.e) if float(b.e).is_integer() else b.e
            blocks.append(d)
        return {
            "format": ARCH_FORMAT,
            "version": ARCH_VERSION,
            "name": self.name,
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "arch_string": self.to_str(),
            "blocks": blocks,
        }

    def to_json(self) -> str:
        return dump_json(self.to_dict())

    def save(self, path: str | Path) -> None:
        """Write the JSON form atomically."""
        write_text_atomic(path, self.to_json())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<architecture>") -> Architecture:
        f = Fields(data, source, "")
        f.check_keys(["format", "version", "name", "resolution", "num_classes", "in_channels", "arch_string", "blocks"])
        f.check_header(ARCH_FORMAT, ARCH_VERSION, "an architecture file")
        blocks = []
        raw_blocks = f.items("blocks")
        if len(raw_blocks) > LIMITS["blocks"]:
            raise f.error("blocks", f"{len(raw_blocks)} blocks; at most {LIMITS['blocks']}")
        for i, raw in enumerate(raw_blocks):
            bf = f.sub(f"blocks[{i}]", raw)
            bf.check_keys(["op", "c", "s", "e"])
            op = bf.raw("op")
            try:
                t = parse_op(op)
            except ValueError as exc:
                raise bf.error("op", str(exc)) from None
            c = bf.integer("c", maximum=LIMITS["channels"])
            s = bf.integer("s", 1, allowed=STRIDES)
            if t.uses_expansion:
                e = bf.number("e", hint="the expansion ratio, e.g. 4", maximum=LIMITS["expansion"])
            else:
                if bf.has("e") and bf.number("e") != 1:
                    raise bf.error("e", f"{t.kind} blocks take no expansion; remove the field")
                e = 1.0
            blocks.append(Block(t.name, c, s, e))
        try:
            arch = cls(
                tuple(blocks),
                f.integer("resolution", maximum=LIMITS["resolution"]),
                f.integer("num_classes", 1000, maximum=LIMITS["num_classes"]),
                f.integer("in_channels", 3, maximum=LIMITS["in_channels"]),
                f.text("name", ""),
            )
        except SpecError as exc:  # re-attribute constructor checks to the file
            raise SpecError(source, exc.field, exc.problem) from None
        if f.has("arch_string"):
            stated = f.text("arch_string")
            if stated != arch.to_str():
                raise f.error(
                    "arch_string", f"does not match the blocks (they read {arch.to_str()!r}); fix or remove it"
                )
        return arch

    @classmethod
    def load(cls, path: str | Path) -> Architecture:
        """Read an architecture JSON (or YAML) file; malformed files raise :class:`SpecError`."""
        return cls.from_dict(read_mapping(path), str(path))

    def __iter__(self) -> Iterator[Block]:
        return iter(self.blocks)


def _validate(arch: Architecture, source: str) -> None:
    f = Fields({}, source, "")
    for key in ("resolution", "num_classes", "in_channels"):
        f.check_int(key, getattr(arch, key), 1)
    if not arch.blocks:
        raise f.error("blocks", "an architecture needs at least one block")
    for i, b in enumerate(arch.blocks):
        bf = Fields({}, source, f"blocks[{i}]")
        try:
            t = parse_op(b.op)
        except ValueError as exc:
            raise bf.error("op", str(exc)) from None
        bf.check_int("c", b.c, 1)
        bf.check_int("s", b.s, 1, STRIDES)
        bf.check_number("e", b.e)
        if t.kind == "ir_pool" and i != len(arch.blocks) - 1:
            raise bf.error("op", "ir_pool pools to 1x1 and must be the last block")
        if t.kind == "ir_pool" and b.s != 1:
            raise bf.error("s", "ir_pool takes stride 1")
