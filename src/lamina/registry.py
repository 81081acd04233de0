"""Registries of named things (models, datasets, optimizers, schedules).

A registry maps a name to a factory. Tests iterate over ``Registry.names()`` so that every
registered entry is tested automatically (the timm habit).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from lamina.errors import LaminaError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object, with a helpful error for unknown names.

    >>> r = Registry[int]("number")
    >>> _ = r.register("one", 1)
    >>> r.get("one")
    1
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; without ``obj`` return a decorator."""
        if obj is not None:
            self._add(name, obj)
            return obj

        def deco(o: T) -> T:
            self._add(name, o)
            return o

        return deco

    def _add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise LaminaError(
                f"unknown {self.kind} '{name}': {did_you_mean(name, self._items)}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
