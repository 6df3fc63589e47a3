"""A name -> object registry that refuses duplicate names (as torchvision's ``models/_api.py``)."""

from __future__ import annotations

from typing import Generic, TypeVar

from hwnas.core.errors import HwnasError

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects registered under unique names, listed in registration order."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T) -> T:
        if not name or not isinstance(name, str):
            raise ValueError(f"a {self.what} needs a non-empty name")
        if name in self._items:
            raise ValueError(f"a {self.what} named {name!r} is already registered")
        self._items[name] = obj
        return obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise HwnasError(f"unknown {self.what} {name!r}; known: {', '.join(self._items)}") from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
