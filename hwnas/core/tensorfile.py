"""Files of tensors and plain data that cannot carry code: safetensors plus a JSON tree.

Every checkpoint and child file hwnas writes or reads goes through this module, and nothing in
hwnas unpickles anything (``tests/test_no_pickle.py`` fails if any module of the package loads
torch or numpy pickles, imports a pickle library, or loads YAML with anything but ``safe_load``).

Layout of a file: a `safetensors <https://github.com/huggingface/safetensors>`_ file whose
tensors are named ``t0, t1, ...`` and whose header metadata holds three strings:

``format``
    what the file is, e.g. ``hwnas.child``;
``version``
    the format's version (an integer): a reader refuses a version newer than it knows;
``tree``
    the file's content as JSON, with each tensor replaced by ``{"$tensor": "t3"}``. Plain JSON
    values stand for themselves; a tuple is ``{"$tuple": [...]}``, and a dict whose keys are not
    all strings (optimizer states are keyed by parameter index) is ``{"$items": [[key, value],
    ...]}``. Floats may be NaN or infinite (JSON's ``NaN``/``Infinity`` tokens).

safetensors' parser is a bounds-checked Rust reader of a JSON header and raw little-endian
buffers; JSON decoding builds only dicts, lists, strings and numbers. Neither can run code,
whatever the bytes.

Files written by hwnas 0.1 were ``torch.save`` pickles. They are refused, not loaded: even
``torch.load(weights_only=True)`` runs a (restricted) pickle machine, which has had
code-execution holes of its own (CVE-2025-32434), and one format with no code path at all is
simpler to audit and to fuzz. :func:`read` recognises such files (zip or pickle magic) and says
so; the caller's message says how to re-create the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hwnas.core.errors import HwnasError
from hwnas.core.fileio import write_bytes_atomic

MAX_DEPTH = 64  # nesting of the JSON tree (optimizer states need about 5)
_HEADER_CAP = 100 * 2**20  # safetensors' own limit on the header


class TensorFileError(HwnasError):
    """A file that is not a readable hwnas tensor file (the message names the file)."""


class PickleFileError(TensorFileError):
    """A PyTorch pickle (``torch.save``) or a bare pickle: refused, never unpickled."""


@dataclass
class Content:
    """A decoded file: its ``format``, ``version`` and data ``tree`` (tensors on the CPU)."""

    format: str
    version: int
    tree: Any


# --- encoding ----------------------------------------------------------------------------------
def _encode(obj: Any, tensors: dict[str, torch.Tensor], depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError("data nested too deeply to store")
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        # A private, contiguous CPU copy: safetensors refuses views that share storage.
        tensors[name] = obj.detach().to("cpu", copy=True).contiguous()
        return {"$tensor": name}
    if isinstance(obj, tuple):
        return {"$tuple": [_encode(v, tensors, depth + 1) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors, depth + 1) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: _encode(v, tensors, depth + 1) for k, v in obj.items()}
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"cannot store a dict key of type {type(k).__name__}")
            items.append([k, _encode(v, tensors, depth + 1)])
        return {"$items": items}
    raise TypeError(f"cannot store a value of type {type(obj).__name__} (plain data and tensors only)")


def dumps(format: str, version: int, tree: Any) -> bytes:
    """The bytes of a tensor file holding ``tree`` (plain data and tensors)."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(tree, tensors)
    meta = {"format": format, "version": str(version), "tree": json.dumps(encoded, allow_nan=True)}
    return bytes(save(tensors, metadata=meta))


def write(path: str | Path, format: str, version: int, tree: Any) -> None:
    """Write ``tree`` to ``path`` atomically (readers see the old file or the new one)."""
    write_bytes_atomic(path, dumps(format, version, tree))


# --- decoding ----------------------------------------------------------------------------------
def _decode(node: Any, tensors: dict[str, torch.Tensor], used: set[str], depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if node is None or isinstance(node, (bool, str, int, float)):
        return node
    if isinstance(node, list):
        return [_decode(v, tensors, used, depth + 1) for v in node]
    if not isinstance(node, dict):
        raise ValueError(f"unexpected JSON value of type {type(node).__name__}")
    marked = [k for k in node if k.startswith("$")]
    if not marked:
        return {k: _decode(v, tensors, used, depth + 1) for k, v in node.items()}
    if len(node) != 1:
        raise ValueError(f"a marker object must have one key, got {sorted(node)[:4]}")
    (mark, value), = node.items()  # fmt: skip
    if mark == "$tensor":
        if not isinstance(value, str) or value not in tensors:
            raise ValueError(f"reference to a tensor the file does not hold: {str(value)[:40]!r}")
        if value in used:
            raise ValueError(f"tensor {value} referenced twice")
        used.add(value)
        return tensors[value]
    if mark == "$tuple":
        if not isinstance(value, list):
            raise ValueError("$tuple must hold a list")
        return tuple(_decode(v, tensors, used, depth + 1) for v in value)
    if mark == "$items":
        if not isinstance(value, list):
            raise ValueError("$items must hold a list")
        out: dict[Any, Any] = {}
        for item in value:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], (str, int))):
                raise ValueError("$items must hold [key, value] pairs with string or integer keys")
            if isinstance(item[0], bool):
                raise ValueError("$items keys must be strings or integers")
            out[item[0]] = _decode(item[1], tensors, used, depth + 1)
        return out
    raise ValueError(f"unknown marker {mark[:40]!r}")


def is_pickle(data: bytes) -> bool:
    """Whether ``data`` starts like a ``torch.save`` zip file or a bare pickle."""
    return data[:4] == b"PK\x03\x04" or (len(data) >= 2 and data[0] == 0x80 and data[1] <= 5)


def _header(data: bytes) -> dict[str, Any]:
    if len(data) < 8:
        raise ValueError(f"{len(data)} bytes, shorter than a safetensors header")
    n = int.from_bytes(data[:8], "little")
    if n < 2 or n > _HEADER_CAP or 8 + n > len(data):
        raise ValueError("the header length does not fit the file (truncated, or not a safetensors file)")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValueError("the header is not JSON") from None
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header


def loads(data: bytes, source: str, expect: str, max_version: int, allow_bare: bool = False) -> Content:
    """Decode a tensor file of format ``expect``, version ``<= max_version``.

    With ``allow_bare``, a plain safetensors file without hwnas metadata (for example
    ``safetensors.torch.save_file(model.state_dict(), path)``) is read too, as a
    :class:`Content` of format ``""``, version 0, whose tree is the dict of its tensors.

    Raises :class:`PickleFileError` for a pickle, and :class:`TensorFileError` for anything else
    that is not such a file; both name ``source``.
    """
    try:
        header = _header(data)
    except ValueError as exc:
        # Only now: a safetensors header length can itself start with a pickle's 0x80 byte.
        if is_pickle(data):
            raise PickleFileError(f"{source}: a PyTorch pickle file (torch.save); hwnas never unpickles, since "
                                  "loading a pickle can run code") from None  # fmt: skip
        raise TensorFileError(f"{source}: not a readable hwnas file: {exc}") from None
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or not isinstance(meta.get("format"), str):
        if allow_bare:
            return Content("", 0, _tensors(data, source))
        raise TensorFileError(f"{source}: a safetensors file without hwnas metadata (expected a {expect} file)")
    if meta["format"] != expect:
        raise TensorFileError(f"{source}: a {meta['format'][:60]!r} file, not a {expect} file")
    try:
        version = int(meta.get("version", ""))
    except ValueError:
        raise TensorFileError(f"{source}: version {str(meta.get('version'))[:20]!r} is not an integer") from None
    if version > max_version:
        raise TensorFileError(f"{source}: {expect} version {version} is newer than this hwnas reads "
                              f"(up to {max_version}); upgrade hwnas")  # fmt: skip
    if version < 1:
        raise TensorFileError(f"{source}: version {version} is not a valid {expect} version")
    tensors = _tensors(data, source)
    try:
        tree = json.loads(meta.get("tree", ""))
        used: set[str] = set()
        decoded = _decode(tree, tensors, used)
    except (ValueError, RecursionError, TypeError) as exc:
        raise TensorFileError(f"{source}: corrupt content ({str(exc)[:120]})") from None
    return Content(expect, version, decoded)


def _tensors(data: bytes, source: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(data)
    except (SafetensorError, ValueError, TypeError, RuntimeError, OverflowError, MemoryError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise TensorFileError(f"{source}: corrupt or truncated tensor data ({first[:120]})") from None


def read(path: str | Path, expect: str, max_version: int, what: str, allow_bare: bool = False) -> Content:
    """Read and decode ``path`` (see :func:`loads`); ``what`` names the file in errors."""
    p = Path(path)
    if p.is_dir():
        raise TensorFileError(f"{p}: is a folder, not a {what}")
    if not p.is_file():
        raise TensorFileError(f"{p}: no such {what}")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise TensorFileError(f"{p}: cannot read the {what} ({exc.strerror})") from None
    return loads(data, str(p), expect, max_version, allow_bare)


# --- checking decoded values ---------------------------------------------------------------------
def field(tree: Any, name: str, kind: type | tuple[type, ...], source: str) -> Any:
    """``tree[name]``, which must be of ``kind`` (``bool`` is not an ``int`` here), or a one-line error."""
    if not isinstance(tree, dict):
        raise TensorFileError(f"{source}: corrupt content (not a mapping)")
    if name not in tree:
        raise TensorFileError(f"{source}: corrupt content (no {name!r})")
    value = tree[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise TensorFileError(f"{source}: corrupt content ({name!r} is a {type(value).__name__})")
    return value


def tensor_dict(value: Any, name: str, source: str) -> dict[str, torch.Tensor]:
    """``value`` as a dict of string-named tensors (a state dict), or a one-line error."""
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    ):
        raise TensorFileError(f"{source}: corrupt content ({name!r} is not a dict of named tensors)")
    return value
