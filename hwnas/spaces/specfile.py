"""Reading JSON / YAML description files and checking their fields, with one-line errors.

Both architecture and search-space files go through here, so every malformed file gets the same
kind of message: ``FILE: FIELD: what is wrong and what is allowed`` (a :class:`SpecError`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from hwnas.core.errors import SpecError


def read_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a JSON or YAML file whose top level is a mapping."""
    p = Path(path)
    source = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(source, "", "no such file") from None
    except IsADirectoryError:
        raise SpecError(source, "", "is a directory, expected a .json or .yaml file") from None
    except UnicodeDecodeError:
        raise SpecError(source, "", "not a JSON or YAML file (not UTF-8 text)") from None
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise SpecError(source, "", f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise SpecError(source, "", f"not valid JSON or YAML{where}") from None
    except RecursionError:
        raise SpecError(source, "", "nested too deeply to be an hwnas description") from None
    if not isinstance(data, dict):
        raise SpecError(source, "", f"expected a mapping of fields at the top level, got {_kind(data)}")
    return data


# Bounds on every number a description file holds: past these, building or counting a network
# would exhaust memory rather than fail. Specific fields have tighter ones (see LIMITS).
MAX_INT = 1 << 20
MAX_NUMBER = 1e6
LIMITS: dict[str, int] = {"channels": 8192, "resolution": 2048, "num_classes": 100_000, "in_channels": 16,
                          "expansion": 16, "depth": 64, "blocks": 512}  # fmt: skip


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


class Fields:
    """Typed access to one mapping of a description file; errors name the file and field path."""

    def __init__(self, data: object, source: str, path: str) -> None:
        if not isinstance(data, Mapping):
            raise SpecError(source, path or "(top level)", f"expected a mapping, got {_kind(data)}")
        self.data = data
        self.source = source
        self.path = path

    def _field(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, problem: str) -> SpecError:
        return SpecError(self.source, self._field(key), problem)

    def check_keys(self, allowed: Sequence[str]) -> None:
        for key in self.data:
            if key not in allowed:
                name = str(key)  # a key with a line break or other control character is shown escaped
                shown = name if name.isprintable() else repr(name)[1:-1]
                raise self.error(shown, f"unknown field; allowed fields: {', '.join(allowed)}")

    def check_header(self, expected_format: str, max_version: int, what: str) -> None:
        """The optional ``format`` and ``version`` fields: the right kind of file, not too new."""
        fmt = self.text("format", expected_format)
        if fmt != expected_format:
            raise self.error("format", f"{fmt!r} is not {what} (expected {expected_format!r})")
        version = self.integer("version", max_version)
        if version > max_version:
            raise self.error("version", f"{version} is newer than this hwnas reads ({max_version}); upgrade hwnas")

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = ..., hint: str = "") -> Any:
        if key not in self.data:
            if default is ...:
                raise self.error(key, "missing required field" + (f" ({hint})" if hint else ""))
            return default
        return self.data[key]

    def integer(
        self, key: str, default: Any = ..., minimum: int = 1, allowed: Sequence[int] = (), maximum: int = MAX_INT
    ) -> int:
        value = self.raw(key, default)
        return self.check_int(key, value, minimum, allowed, maximum)

    def check_int(
        self, key: str, value: object, minimum: int = 1, allowed: Sequence[int] = (), maximum: int = MAX_INT
    ) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {_kind(value)} {_short(value)}")
        if allowed and value not in allowed:
            raise self.error(key, f"{_short(value)} is not allowed; allowed: {', '.join(map(str, allowed))}")
        if value < minimum:
            raise self.error(key, f"{_short(value)} is too small; must be >= {minimum}")
        if value > maximum:
            raise self.error(key, f"{_short(value)} is too large; must be <= {maximum}")
        return value

    def number(
        self, key: str, default: Any = ..., minimum_exclusive: float = 0.0, hint: str = "", maximum: float = MAX_NUMBER
    ) -> float:
        value = self.raw(key, default, hint)
        return self.check_number(key, value, minimum_exclusive, maximum)

    def check_number(
        self, key: str, value: object, minimum_exclusive: float = 0.0, maximum: float = MAX_NUMBER
    ) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"expected a number, got {_kind(value)} {_short(value)}")
        if isinstance(value, int) and abs(value) > 2**53:
            raise self.error(key, f"{_short(value)} is too large; must be <= {maximum:g}")
        if not value > minimum_exclusive:
            raise self.error(key, f"{_short(value)} must be > {minimum_exclusive:g}")
        if not value <= maximum:  # also NaN and infinity
            raise self.error(key, f"{_short(value)} is too large; must be <= {maximum:g}")
        return float(value)

    def text(self, key: str, default: Any = ...) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_kind(value)} {_short(value)}")
        return value

    def boolean(self, key: str, default: Any = ...) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {_kind(value)} {_short(value)}")
        return value

    def items(self, key: str, default: Any = ..., hint: str = "") -> list[Any]:
        value = self.raw(key, default, hint)
        if not isinstance(value, list) or not value:
            raise self.error(key, f"expected a non-empty list, got {_kind(value)} {_short(value)}")
        return value

    def integers(
        self, key: str, default: Any = ..., minimum: int = 1, allowed: Sequence[int] = (), maximum: int = MAX_INT
    ) -> tuple[int, ...]:
        values = self.items(key, default)
        out = tuple(self.check_int(f"{key}[{i}]", v, minimum, allowed, maximum) for i, v in enumerate(values))
        return _unique(self, key, out)

    def numbers(self, key: str, default: Any = ..., hint: str = "", maximum: float = MAX_NUMBER) -> tuple[float, ...]:
        values = self.items(key, default, hint)
        out = tuple(self.check_number(f"{key}[{i}]", v, maximum=maximum) for i, v in enumerate(values))
        return _unique(self, key, out)

    def texts(self, key: str, default: Any = ...) -> tuple[str, ...]:
        values = self.items(key, default)
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise self.error(f"{key}[{i}]", f"expected a string, got {_kind(v)} {_short(v)}")
        return _unique(self, key, tuple(values))

    def sub(self, key: str, value: object) -> Fields:
        return Fields(value, self.source, self._field(key))


def _unique(fields: Fields, key: str, values: tuple[Any, ...]) -> tuple[Any, ...]:
    if len(set(values)) != len(values):
        raise fields.error(key, f"choices must be distinct, got {list(values)}")
    return values


def dump_json(data: object) -> str:
    return json.dumps(data, indent=2) + "\n"
