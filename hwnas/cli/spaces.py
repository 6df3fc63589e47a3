"""`hwnas arch` and `hwnas space`: architectures and search spaces, as data."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

from rich.table import Table

from hwnas.cli.common import (
    console,
    mega,
    size_text,
)

if TYPE_CHECKING:
    pass


def cmd_arch_list(args: argparse.Namespace) -> None:
    from hwnas.spaces import get_arch, list_archs
    from hwnas.spaces.kernels import arch_flops, arch_params

    t = Table("name", "resolution", "blocks", "MFLOPs", "params (M)")
    for name in list_archs():
        a = get_arch(name)
        t.add_row(name, str(a.resolution), str(len(a.blocks)), mega(arch_flops(a)), mega(arch_params(a)))
    console.print(t)


def cmd_arch_show(args: argparse.Namespace) -> None:
    from hwnas.models.counting import count_arch
    from hwnas.spaces import get_arch

    arch = get_arch(args.arch)
    if args.resolution:
        arch = arch.with_resolution(args.resolution)
    if args.json:
        sys.stdout.write(arch.to_json())
        return
    counts = count_arch(arch)
    t = Table(
        "#",
        "block",
        "output (c, h, w)",
        "MFLOPs",
        "params (K)",
        title=f"{arch.name or args.arch} @ {arch.resolution} px",
    )
    for i, r in enumerate(counts.rows):
        t.add_row(
            str(i) if i < len(arch.blocks) else "", r.label, str(r.out_shape), mega(r.flops), f"{r.params / 1e3:.1f}"
        )
    t.add_section()
    t.add_row("", "total", "", mega(counts.flops), f"{counts.params / 1e3:.1f}")
    console.print(t)
    console.print(f"arch string: {arch.to_str()}", soft_wrap=True)
    console.print(
        f"FLOPs {mega(counts.flops)} M (multiply-adds, fvcore, mobile-vision convention); "
        f"params {mega(counts.params)} M conv/linear weights, {mega(counts.params_all)} M with biases and BN"
    )


def cmd_arch_sample(args: argparse.Namespace) -> None:
    from hwnas.spaces import get_space

    space = get_space(args.space)
    arch = space.sample(args.seed)
    if args.out:
        arch.save(args.out)
        console.print(f"wrote {args.out}: {arch.to_str()}", soft_wrap=True)
    else:
        sys.stdout.write(arch.to_json())


def cmd_space_list(args: argparse.Namespace) -> None:
    from hwnas.spaces import get_space, list_spaces

    t = Table("name", "resolutions", "classes", "layers", "size", "kernels")
    for name in list_spaces():
        s = get_space(name)
        t.add_row(
            name,
            str(list(s.resolutions)),
            str(s.num_classes),
            str(len(s.layers)),
            size_text(s.size()),
            str(len(s.kernels())),
        )
    console.print(t)


def cmd_space_show(args: argparse.Namespace) -> None:
    from hwnas.spaces import get_space
    from hwnas.spaces.kernels import arch_flops

    space = get_space(args.space)
    if args.yaml:  # a template: under its own name, so errors in the user's copy do not name the preset
        from dataclasses import replace

        sys.stdout.write(f"# made by 'hwnas space show {args.space} --yaml'; edit it and pass its path as --space\n")
        sys.stdout.write(replace(space, name=f"my-{space.name}").to_yaml())
        return
    kernels = space.kernels()
    if args.kernels:
        for k in kernels:
            print(k.key)
        return
    t = Table(
        "layer",
        "stage",
        "stride",
        f"input @ {max(space.resolutions)}",
        "ops",
        "channels",
        "expansions",
        "options",
        title=f"search space {space.name}",
    )
    h = max(space.resolutions)
    for layer in space.layers:
        uses_e = any(o.e != 1.0 for o in layer.options) or any(op.startswith(("ir_k", "ir_pool")) for op in layer.ops)
        es = ", ".join(f"{e:g}" for e in layer.expansions) if uses_e else "-"
        t.add_row(
            str(layer.index),
            str(layer.stage),
            str(layer.stride),
            f"{h}x{h}",
            " ".join(layer.ops),
            "as its input (tied)" if layer.tied else ", ".join(map(str, layer.channels)),
            es,
            str(len(layer.options) // len(layer.channels) if layer.tied else len(layer.options)),
        )
        h = layer.out_size(h)
    console.print(t)
    by_op = Counter(k.op for k in kernels)
    small, large = space.smallest(), space.largest()
    console.print(f"resolutions: {', '.join(map(str, space.resolutions))}; classes: {space.num_classes}")
    console.print(f"size: {size_text(space.size())} distinct architectures")
    console.print(f"distinct kernels: {len(kernels)} ({', '.join(f'{op} {n}' for op, n in sorted(by_op.items()))})")
    console.print(f"FLOPs: smallest {mega(arch_flops(small))} M, largest {mega(arch_flops(large))} M")


def add_parser(sub: Any) -> None:
    """Add the arch, space command(s) to the subparsers ``sub``."""
    arch = sub.add_parser("arch", help="architectures: list, show, sample").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND"
    )
    a = arch.add_parser("list", help="the registered (published) architectures")
    a.set_defaults(func=cmd_arch_list)
    a = arch.add_parser("show", help="blocks with output shape, FLOPs and params, and totals")
    a.add_argument(
        "arch", metavar="NAME|FILE", help="a registered name (see 'hwnas arch list') or an architecture JSON file"
    )
    a.add_argument("--resolution", type=int, help="input resolution to count at (default: the architecture's)")
    a.add_argument("--json", action="store_true", help="print the architecture JSON instead")
    a.set_defaults(func=cmd_arch_show)
    a = arch.add_parser("sample", help="a random architecture of a search space, as JSON")
    a.add_argument("space", metavar="NAME|FILE")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", help="write the JSON here (atomically) instead of printing it")
    a.set_defaults(func=cmd_arch_sample)

    space = sub.add_parser("space", help="search spaces: list, show").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND"
    )
    s = space.add_parser("list", help="the registered search spaces")
    s.set_defaults(func=cmd_space_list)
    s = space.add_parser("show", help="choices per layer, size, distinct kernels")
    s.add_argument("space", metavar="NAME|FILE", help="a preset name (see 'hwnas space list') or a YAML/JSON file")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--yaml", action="store_true", help="print the space as YAML (a template for your own)")
    g.add_argument("--kernels", action="store_true", help="print every distinct kernel key, one per line")
    s.set_defaults(func=cmd_space_show)
