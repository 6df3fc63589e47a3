"""Search spaces as data: per-layer choices, size, sampling, extremes and the kernel work list.

A space is an input-resolution choice plus a list of stages. Each stage has a depth, a stride
(for its first layer), out-channel choices, op choices and expansion choices; every layer of
the stage chooses its op, channels and expansion independently (FBNetV2 searches each layer's
width). With ``tied_channels: true`` the stage instead makes one channel decision: its first
layer chooses the out channels and every later layer keeps them (one width per stage, as
MobileNetV2 and Once-for-All scale width), so every stride-1 layer keeps its residual
connection; those later layers are *tied* (:attr:`Layer.tied`). ``skip`` among the ops makes
depth searchable; the first ``min_depth`` layers of a stage may not be skipped. The stem and the
head are stages too (usually with one choice each).

File form (YAML or JSON)::

    format: hwnas.space        # optional
    version: 1                 # optional
    name: my-space
    resolutions: [160, 192, 224]
    num_classes: 1000
    in_channels: 3             # optional, default 3
    stages:
      - {name: stem, depth: 1, stride: 2, channels: [16], ops: [conv_k3_hs]}
      - {depth: 4, stride: 2, channels: [24, 32], ops: [ir_k3, ir_k5_se, skip],
         expansions: [3, 6], min_depth: 2, tied_channels: true}
      - {name: head, depth: 1, stride: 1, channels: [1280], ops: [ir_pool_hs], expansions: [6]}
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from hwnas.core.errors import HwnasError, SpecError
from hwnas.spaces.arch import STRIDES, Architecture, Block, conv_out
from hwnas.spaces.kernels import Kernel, block_kernels, classifier_kernels, kernel_sum
from hwnas.spaces.ops import parse_op
from hwnas.spaces.registry import Registry
from hwnas.spaces.specfile import LIMITS, Fields, read_mapping

SPACE_FORMAT = "hwnas.space"
SPACE_VERSION = 1
_STAGE_KEYS = ["name", "depth", "stride", "channels", "ops", "expansions", "min_depth", "tied_channels"]


@dataclass(frozen=True)
class Stage:
    """Choices shared by ``depth`` consecutive layers; the first one has ``stride``."""

    depth: int
    stride: int
    channels: tuple[int, ...]
    ops: tuple[str, ...]
    expansions: tuple[float, ...] = (1.0,)
    min_depth: int = 1
    name: str = ""
    tied_channels: bool = False  # one channel decision for the whole stage (see the module docstring)


@dataclass(frozen=True)
class Option:
    """One choice of a layer: op, out channels, expansion (1 where the op ignores it)."""

    op: str
    c: int
    e: float = 1.0

    def block(self, stride: int) -> Block:
        return Block(self.op, self.c, stride, self.e)


@dataclass(frozen=True)
class Layer:
    """One searchable layer: its stride and every distinct option it may take."""

    index: int
    stage: int
    stride: int
    ops: tuple[str, ...]
    channels: tuple[int, ...]
    expansions: tuple[float, ...]
    options: tuple[Option, ...]
    tied: bool = False  # out channels = in channels: the stage's first layer chose them

    def allows(self, cin: int, option: Option) -> bool:
        """Whether this layer may take ``option`` after a layer with ``cin`` out channels."""
        return not self.tied or option.c == cin

    def allowed(self, cin: int) -> tuple[Option, ...]:
        """The options this layer may take after a layer with ``cin`` out channels."""
        return self.options if not self.tied else tuple(o for o in self.options if o.c == cin)

    def out_size(self, size: int) -> int:
        """Spatial size after this layer: 1 for the pooling head, else the strided size."""
        return 1 if parse_op(self.ops[0]).kind == "ir_pool" else conv_out(size, self.stride)


@dataclass(frozen=True)
class SearchSpace:
    """A search space; see the module docstring for the file form."""

    name: str
    resolutions: tuple[int, ...]
    stages: tuple[Stage, ...]
    num_classes: int = 1000
    in_channels: int = 3
    source: str = field(default="", compare=False)

    # --- structure ----------------------------------------------------------------------
    @cached_property
    def layers(self) -> tuple[Layer, ...]:
        out: list[Layer] = []
        for si, st in enumerate(self.stages):
            for j in range(st.depth):
                ops = tuple(o for o in st.ops if not (o == "skip" and j < st.min_depth))
                opts = []
                for op in ops:
                    es = st.expansions if parse_op(op).uses_expansion else (1.0,)
                    opts += [Option(op, c, e) for e in es for c in st.channels]
                stride = st.stride if j == 0 else 1
                tied = st.tied_channels and j > 0
                out.append(Layer(len(out), si, stride, ops, st.channels, st.expansions, tuple(opts), tied))
        return tuple(out)

    def size(self) -> int:
        """Number of distinct architectures: resolutions x the product of per-layer options (a tied
        layer counts its options at one width: its stage's first layer chose the width)."""
        return len(self.resolutions) * math.prod(
            len(layer.options) // (len(layer.channels) if layer.tied else 1) for layer in self.layers
        )

    def architecture(self, resolution: int, options: list[Option], name: str = "") -> Architecture:
        """The architecture made of one option per layer."""
        if len(options) != len(self.layers):
            raise ValueError(f"{self.name}: need {len(self.layers)} options, got {len(options)}")
        blocks = tuple(o.block(layer.stride) for o, layer in zip(options, self.layers, strict=True))
        return Architecture(blocks, resolution, self.num_classes, self.in_channels, name)

    def contains(self, arch: Architecture) -> bool:
        """Whether ``arch`` is one of this space's architectures."""
        if (arch.resolution, arch.num_classes, arch.in_channels) not in {
            (r, self.num_classes, self.in_channels) for r in self.resolutions
        } or len(arch.blocks) != len(self.layers):
            return False
        cins = [self.in_channels, *(b.c for b in arch.blocks)]
        return all(
            b.s == layer.stride
            and Option(b.op, b.c, b.e) in layer.options
            and layer.allows(cin, Option(b.op, b.c, b.e))
            for b, layer, cin in zip(arch.blocks, self.layers, cins, strict=False)
        )

    def tie(self, options: list[Option]) -> list[Option]:
        """``options`` with every tied layer's out channels set to its stage's width (the first
        layer's), the op and expansion kept: how a mutation or crossover stays in the space."""
        out: list[Option] = []
        for layer, o in zip(self.layers, options, strict=True):
            out.append(Option(o.op, out[-1].c, o.e) if layer.tied else o)
        return out

    # --- sampling and extremes ------------------------------------------------------------
    def sample(self, seed: int | random.Random = 0) -> Architecture:
        """A random architecture: per layer, an op, then an expansion and channels, uniformly."""
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        res = rng.choice(self.resolutions)
        chosen: list[Option] = []
        for layer in self.layers:
            op = rng.choice(layer.ops)
            e = rng.choice(layer.expansions) if parse_op(op).uses_expansion else 1.0
            c = rng.choice(layer.channels)  # drawn for every layer, so an untied space keeps its random stream
            chosen.append(Option(op, chosen[-1].c if layer.tied else c, e))
        return self.architecture(res, chosen, f"{self.name}-random")

    def smallest(self) -> Architecture:
        """The architecture with the fewest FLOPs (exact, by dynamic programming over layers)."""
        return self.extreme(_flops, largest=False)

    def largest(self) -> Architecture:
        """The architecture with the most FLOPs (exact)."""
        return self.extreme(_flops, largest=True)

    def extreme(self, kernel_cost: Callable[[Kernel], float], largest: bool = False) -> Architecture:
        """The architecture with the lowest (or highest) total ``kernel_cost`` of its kernels; exact,
        by dynamic programming over layers with the in-channels as the state."""
        sign = -1 if largest else 1
        best: tuple[float, int, list[Option]] | None = None
        cost_of = kernel_sum(kernel_cost)

        for res in self.resolutions:
            # state: in-channels -> (signed cost so far, options so far)
            states: dict[int, tuple[float, list[Option]]] = {self.in_channels: (0.0, [])}
            h = res
            for layer in self.layers:
                nxt: dict[int, tuple[float, list[Option]]] = {}
                for cin, (cost, path) in states.items():
                    for o in layer.allowed(cin):
                        f = cost_of(block_kernels(parse_op(o.op), cin, o.c, layer.stride, o.e, h, h))
                        c = cost + sign * f
                        if o.c not in nxt or c < nxt[o.c][0]:
                            nxt[o.c] = (c, [*path, o])
                states = nxt
                h = layer.out_size(h)
            for cin, (cost, path) in states.items():
                total = cost + sign * cost_of(classifier_kernels(cin, h, h, self.num_classes))
                if best is None or total < best[0]:
                    best = (total, res, path)
        assert best is not None
        return self.architecture(best[1], best[2], f"{self.name}-{'largest' if largest else 'smallest'}")

    # --- kernels ------------------------------------------------------------------------
    def kernels(self) -> list[Kernel]:
        """Every distinct kernel any architecture of the space runs: the profiler's work list."""
        found: set[Kernel] = set()
        for res in self.resolutions:
            cins, h = {self.in_channels}, res
            for layer in self.layers:
                for cin in cins:
                    for o in layer.allowed(cin):
                        found.update(block_kernels(parse_op(o.op), cin, o.c, layer.stride, o.e, h, h))
                cins = set(layer.channels)
                h = layer.out_size(h)
            for cin in cins:
                found.update(classifier_kernels(cin, h, h, self.num_classes))
        return sorted(found)

    # --- file form ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        stages = []
        for st in self.stages:
            d: dict[str, Any] = {}
            if st.name:
                d["name"] = st.name
            d.update(depth=st.depth, stride=st.stride, channels=list(st.channels), ops=list(st.ops))
            if any(parse_op(o).uses_expansion for o in st.ops):
                d["expansions"] = [int(e) if float(e).is_integer() else e for e in st.expansions]
            if "skip" in st.ops:
                d["min_depth"] = st.min_depth
            if st.tied_channels:
                d["tied_channels"] = True
            stages.append(d)
        return {
            "format": SPACE_FORMAT,
            "version": SPACE_VERSION,
            "name": self.name,
            "resolutions": list(self.resolutions),
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "stages": stages,
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<space>") -> SearchSpace:
        f = Fields(data, source, "")
        f.check_keys(["format", "version", "name", "resolutions", "num_classes", "in_channels", "stages"])
        f.check_header(SPACE_FORMAT, SPACE_VERSION, "a search space file")
        stages = []
        raw_stages = f.items("stages")
        if len(raw_stages) > LIMITS["blocks"]:
            raise f.error("stages", f"{len(raw_stages)} stages; at most {LIMITS['blocks']}")
        for i, raw in enumerate(raw_stages):
            stages.append(_parse_stage(f.sub(f"stages[{i}]", raw), last=i == len(raw_stages) - 1))
        return cls(
            name=f.text("name", Path(source).stem),
            resolutions=f.integers("resolutions", maximum=LIMITS["resolution"]),
            stages=tuple(stages),
            num_classes=f.integer("num_classes", maximum=LIMITS["num_classes"]),
            in_channels=f.integer("in_channels", 3, maximum=LIMITS["in_channels"]),
            source=source,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SearchSpace:
        return cls.from_dict(read_mapping(path), str(path))

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)


def _flops(k: Kernel) -> float:
    return float(k.flops)


def _parse_stage(f: Fields, last: bool) -> Stage:
    f.check_keys(_STAGE_KEYS)
    ops = f.texts("ops")
    types = []
    for i, op in enumerate(ops):
        try:
            types.append(parse_op(op))
        except ValueError as exc:
            raise f.error(f"ops[{i}]", str(exc)) from None
    depth = f.integer("depth", maximum=LIMITS["depth"])
    stride = f.integer("stride", allowed=STRIDES)
    if any(t.kind == "ir_pool" for t in types):
        if not last or depth != 1 or stride != 1:
            raise f.error("ops", "ir_pool pools to 1x1: only in the last stage, with depth 1 and stride 1")
        if any(t.kind != "ir_pool" for t in types):
            raise f.error("ops", "a stage with ir_pool may not mix it with other ops")
    if any(t.uses_expansion for t in types):
        expansions = f.numbers("expansions", hint="ir / ir_pool ops need expansion choices, e.g. [3, 6]",
                               maximum=LIMITS["expansion"])  # fmt: skip
    else:
        if f.has("expansions"):
            raise f.error("expansions", "only ir / ir_pool ops take expansions; remove the field")
        expansions = (1.0,)
    min_depth = f.integer("min_depth", 1, minimum=0)
    if min_depth > depth:
        raise f.error("min_depth", f"{min_depth} exceeds the stage depth {depth}")
    if "skip" not in ops and f.has("min_depth"):
        raise f.error("min_depth", "only matters when 'skip' is among the ops; remove it or add skip")
    if all(t.kind == "skip" for t in types) and min_depth > 0:
        raise f.error("ops", f"only 'skip' given, but min_depth={min_depth} layers may not skip; add an op")
    tied = f.boolean("tied_channels", False)
    return Stage(
        depth,
        stride,
        f.integers("channels", maximum=LIMITS["channels"]),
        tuple(t.name for t in types),
        expansions,
        min_depth,
        f.text("name", ""),
        tied,
    )


SPACES: Registry[SearchSpace] = Registry("search space")


def register_space(space: SearchSpace) -> SearchSpace:
    """Register ``space`` under its name; a name already taken is refused."""
    return SPACES.register(space.name, space)


def list_spaces() -> list[str]:
    return SPACES.names()


def get_space(name_or_path: str | os.PathLike[str]) -> SearchSpace:
    """A registered space by name, or a space file (YAML / JSON) by path."""
    text = str(name_or_path)
    if text in SPACES:
        return SPACES.get(text)
    if Path(text).exists() or text.endswith((".yaml", ".yml", ".json")):
        return SearchSpace.load(text)
    raise HwnasError(f"unknown search space {text!r}: not a file, nor one of: {', '.join(SPACES.names())}")


__all__ = [
    "SPACES",
    "Layer",
    "Option",
    "SearchSpace",
    "SpecError",
    "Stage",
    "get_space",
    "list_spaces",
    "register_space",
]
