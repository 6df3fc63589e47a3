"""The ``hwnas`` command: parse arguments, call the library, print. No logic of its own.

User errors (:class:`hwnas.errors.HwnasError`) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from hwnas import __version__
from hwnas.errors import HwnasError

console = Console(width=None if sys.stdout.isatty() else 160, soft_wrap=False)


def _mega(x: float) -> str:
    return f"{x / 1e6:.3f}"


def _size_text(n: int) -> str:
    return f"{n:,}" if n < 10**7 else f"{n:.3e} (10^{math.log10(n):.1f})"


# --- arch -------------------------------------------------------------------------------
def cmd_arch_list(args: argparse.Namespace) -> None:
    from hwnas.nas import get_arch, list_archs
    from hwnas.nas.kernels import arch_flops, arch_params

    t = Table("name", "resolution", "blocks", "MFLOPs", "params (M)")
    for name in list_archs():
        a = get_arch(name)
        t.add_row(name, str(a.resolution), str(len(a.blocks)), _mega(arch_flops(a)), _mega(arch_params(a)))
    console.print(t)


def cmd_arch_show(args: argparse.Namespace) -> None:
    from hwnas.nas import get_arch
    from hwnas.nas.counting import count_arch

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
            str(i) if i < len(arch.blocks) else "", r.label, str(r.out_shape), _mega(r.flops), f"{r.params / 1e3:.1f}"
        )
    t.add_section()
    t.add_row("", "total", "", _mega(counts.flops), f"{counts.params / 1e3:.1f}")
    console.print(t)
    console.print(f"arch string: {arch.to_str()}", soft_wrap=True)
    console.print(
        f"FLOPs {_mega(counts.flops)} M (multiply-adds, fvcore, mobile-vision convention); "
        f"params {_mega(counts.params)} M conv/linear weights, {_mega(counts.params_all)} M with biases and BN"
    )


def cmd_arch_sample(args: argparse.Namespace) -> None:
    from hwnas.nas import get_space

    space = get_space(args.space)
    arch = space.sample(args.seed)
    if args.out:
        arch.save(args.out)
        console.print(f"wrote {args.out}: {arch.to_str()}", soft_wrap=True)
    else:
        sys.stdout.write(arch.to_json())


# --- space ------------------------------------------------------------------------------
def cmd_space_list(args: argparse.Namespace) -> None:
    from hwnas.nas import get_space, list_spaces

    t = Table("name", "resolutions", "classes", "layers", "size", "kernels")
    for name in list_spaces():
        s = get_space(name)
        t.add_row(
            name,
            str(list(s.resolutions)),
            str(s.num_classes),
            str(len(s.layers)),
            _size_text(s.size()),
            str(len(s.kernels())),
        )
    console.print(t)


def cmd_space_show(args: argparse.Namespace) -> None:
    from hwnas.nas import get_space
    from hwnas.nas.arch import conv_out
    from hwnas.nas.kernels import arch_flops

    space = get_space(args.space)
    if args.yaml:
        sys.stdout.write(space.to_yaml())
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
            ", ".join(map(str, layer.channels)),
            es,
            str(len(layer.options)),
        )
        h = 1 if layer.ops[0].startswith("ir_pool") else conv_out(h, layer.stride)
    console.print(t)
    by_op = Counter(k.op for k in kernels)
    small, large = space.smallest(), space.largest()
    console.print(f"resolutions: {', '.join(map(str, space.resolutions))}; classes: {space.num_classes}")
    console.print(f"size: {_size_text(space.size())} distinct architectures")
    console.print(f"distinct kernels: {len(kernels)} ({', '.join(f'{op} {n}' for op, n in sorted(by_op.items()))})")
    console.print(f"FLOPs: smallest {_mega(arch_flops(small))} M, largest {_mega(arch_flops(large))} M")


# --- parser -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hwnas", description="Hardware-aware NAS: profile a device, search under a latency budget, export."
    )
    p.add_argument("--version", action="version", version=f"hwnas {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except HwnasError as exc:
        print(f"hwnas: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `hwnas space show fbnetv2 --kernels | head`
        return 0
    return 0


def main_entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
