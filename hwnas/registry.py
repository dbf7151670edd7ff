"""A tiny name -> factory registry that refuses duplicates and explains unknown names."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from hwnas.errors import UsageError

T = TypeVar("T")


def closest(name: str, valid: list[str]) -> str | None:
    """The valid name ``name`` most likely meant (ignoring case first: 'CPU' -> 'cpu'), or None."""
    if not isinstance(name, str):
        return None
    folded = {v.casefold(): v for v in valid}
    if name.casefold() in folded and folded[name.casefold()] != name:
        return folded[name.casefold()]
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(name: str, valid: list[str]) -> str:
    """Return ' (did you mean X?)' for a close match (see :func:`closest`), else ''."""
    match = closest(name, valid)
    return f" (did you mean {match!r}?)" if match else ""


class Registry(Generic[T]):
    """Maps names to objects of one kind (spaces, strategies, evaluators).

    Registering a name twice raises; looking up an unknown name raises a
    :class:`UsageError` that lists the valid names.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")``."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj

    def remove(self, name: str) -> T:
        """Unregister ``name`` (a plug-in's tests register and remove their own entries)."""
        try:
            return self._items.pop(name)
        except KeyError:
            raise ValueError(f"{self.kind} {name!r} is not registered") from None

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            valid = sorted(self._items)
            raise UsageError(f"unknown {self.kind} {name!r}{did_you_mean(name, valid)}; valid: {', '.join(valid)}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
