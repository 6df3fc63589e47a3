"""Settings declared once: a dataclass field carries its command-line help, type and choices.

:func:`option` is :func:`dataclasses.field` with the option's metadata; :func:`add_options` turns the
fields of a settings dataclass (``SearchConfig``, ``TrainConfig``) into argparse options named
``--field-name`` whose defaults *are* the dataclass's defaults, and :func:`options_of` picks those
values back out of the parsed arguments. So a library caller, a benchmark and ``hwnas search`` build
the same settings, and a default or a list of choices is written in one place.

The argparse types below refuse bad values with a message that names the rule (``must be >= 1``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

CLI = "cli"  # the key of a field's option metadata


def option(
    default: Any,
    *,
    help: str,
    type: Callable[[str], Any] | None = None,
    choices: Sequence[Any] | None = None,
    metavar: str | None = None,
    parser_checks_choices: bool = True,
) -> Any:
    """A dataclass field with a default and the option that sets it (``bool`` fields become flags:
    ``--x`` when the default is False, ``--x/--no-x`` when it is True).

    ``parser_checks_choices=False`` lists the choices in the help only and leaves the check to the
    settings' own ``check()`` (for a message that says more than argparse's)."""
    listed = tuple(choices) if choices is not None else None
    if listed is not None and not parser_checks_choices and metavar is None:
        metavar = "{" + ",".join(map(str, listed)) + "}"
    meta = {"help": help, "type": type, "choices": listed, "metavar": metavar, "parser_choices": parser_checks_choices}
    return dataclasses.field(default=default, metadata={CLI: meta})


def required(*, help: str, metavar: str | None = None) -> dict[str, Any]:
    """The metadata of a field without a default, set by a required option (a string):
    ``name: str = dataclasses.field(metadata=required(help=...))``."""
    return {CLI: {"help": help, "type": None, "choices": None, "metavar": metavar, "parser_choices": True}}


def option_fields(
    cls: type, only: Iterable[str] | None = None, exclude: Iterable[str] = ()
) -> list[dataclasses.Field[Any]]:
    """The fields of ``cls`` that have an option, in declaration order: those named in ``only`` (all
    when None), less ``exclude``."""
    keep, skip = (set(only) if only is not None else None), set(exclude)
    return [f for f in dataclasses.fields(cls)
            if CLI in f.metadata and f.name not in skip and (keep is None or f.name in keep)]  # fmt: skip


def add_options(
    parser: argparse.ArgumentParser | Any, cls: type, only: Iterable[str] | None = None, exclude: Iterable[str] = ()
) -> None:
    """Add one ``--field-name`` option per option field of the dataclass ``cls`` to ``parser`` (an
    argument group works too); ``only`` and ``exclude`` as for :func:`option_fields`."""
    for f in option_fields(cls, only, exclude):
        meta = f.metadata[CLI]
        flag = "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"]}
        if f.default is dataclasses.MISSING:
            parser.add_argument(flag, required=True, metavar=meta["metavar"], **kwargs)
        elif isinstance(f.default, bool):
            action = argparse.BooleanOptionalAction if f.default else "store_true"
            parser.add_argument(flag, action=action, default=f.default, **kwargs)
        else:
            for key in ("type", "choices", "metavar"):
                if meta[key] is not None and (key != "choices" or meta["parser_choices"]):
                    kwargs[key] = meta[key]
            parser.add_argument(flag, default=f.default, **kwargs)


def options_of(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The values of ``cls``'s option fields in the parsed ``args``, by field name."""
    return {f.name: getattr(args, f.name) for f in option_fields(cls)}


def given_options(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> set[str]:
    """The destinations of the options ``argv`` names explicitly (an option given at its default
    value counts), found by parsing ``argv`` again with every default suppressed. ``parser`` is
    changed: build a fresh one for this."""

    def suppress(p: argparse.ArgumentParser) -> None:
        p._defaults.clear()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    suppress(sub)
            elif not action.required:
                action.default = argparse.SUPPRESS

    suppress(parser)
    return set(vars(parser.parse_args(argv)))


# --- argparse types ------------------------------------------------------------------------------
def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be >= {least}, got {value}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    return _whole_number(text, 1)


def nonnegative_int(text: str) -> int:
    """A whole number >= 0."""
    return _whole_number(text, 0)


def positive_float(text: str) -> float:
    """A finite number > 0 (budgets, rates, times): ``inf`` and ``nan`` are refused, not read as 'no limit'."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0 (a period where 0 means 'every time')."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A share strictly between 0 and 1, as ``0.1`` or ``10%``."""
    percent = text.strip().endswith("%")
    try:
        value = float(text.strip().removesuffix("%")) / (100.0 if percent else 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share such as 0.1 or 10%, got {text!r}") from None
    if not (math.isfinite(value) and 0 < value < 1):
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (0% and 100%), exclusive, got {text!r}")
    return value
