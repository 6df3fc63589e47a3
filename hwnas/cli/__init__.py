"""The ``hwnas`` command: parse arguments, call the library, print. One module per verb group, each
with ``add_parser(sub)`` and the ``cmd_*`` functions its commands run; the checks that guard a
library call live in the library (``SearchConfig.check``, ``TrainConfig.check``, ``ExportRequest.check``).

User errors (:class:`hwnas.core.errors.HwnasError`) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from hwnas import __version__
from hwnas.cli import bench, demo, devices, export, lut, profile, search, spaces
from hwnas.core.errors import HwnasError
from hwnas.core.options import given_options


class _Help(argparse.HelpFormatter):
    """Help that shows each option's default, unless the help text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (not action.option_strings or action.default in (None, False, argparse.SUPPRESS) or "default" in text
                or text == argparse.SUPPRESS):  # fmt: skip
            return action.help
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error form (one line on stderr, exit code 2) and defaults in --help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"hwnas: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="hwnas", description="Hardware-aware NAS: profile a device, search under a latency budget, export."
    )
    p.add_argument("--version", action="version", version=f"hwnas {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (spaces, devices, profile, lut, search, export, demo, bench):
        group.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.given_options = given_options(build_parser(), argv)  # what the user named, e.g. over a recipe
    try:
        rc = args.func(args)
    except HwnasError as exc:
        from hwnas.train.distributed import RankError, rank

        if rank() == 0 or isinstance(exc, RankError):  # under torchrun, errors all ranks meet are said once
            print(f"hwnas: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `hwnas space show fbnetv2 --kernels | head`
        return 0
    except KeyboardInterrupt:
        print("hwnas: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


def main_entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
