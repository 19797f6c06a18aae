"""A small generic registry of named things that suggests the right name on a typo.

An entry is the thing itself or, declared with `add_lazy`, a `"module:object"` path imported on its first `get`
(as lm-eval's registry does), so declaring many entries imports none of their modules.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from safedose.errors import SafedoseError

T = TypeVar("T")


@dataclass(frozen=True)
class Lazy:
    """Where an entry lives: `module:object` (`object` may be a dotted attribute path)."""

    target: str

    def resolve(self) -> object:
        module, sep, attribute = self.target.partition(":")
        if not sep or not module or not attribute:
            raise ValueError(f"lazy entry {self.target!r}: expected 'module:object'")
        found: object = importlib.import_module(module)
        for part in attribute.split("."):
            found = getattr(found, part)
        return found


class Registry(Generic[T]):
    """Maps names to objects of one kind (datasets, models, judges, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T | Lazy] = {}

    def add(self, name: str, item: T) -> T:
        self._claim(name)
        self._items[name] = item
        return item

    def add_lazy(self, name: str, target: str) -> None:
        """Declare `name` as the object at `target` (`"package.module:object"`), imported on its first `get`."""
        self._claim(name)
        self._items[name] = Lazy(target)

    def _claim(self, name: str) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`."""

        def decorator(item: T) -> T:
            return self.add(name, item)

        return decorator

    def get(self, name: str) -> T:
        try:
            item = self._items[name]
        except KeyError:
            raise SafedoseError(self.unknown_message(name)) from None
        if isinstance(item, Lazy):
            resolved = cast(T, item.resolve())
            self._items[name] = resolved
            return resolved
        return item

    def is_loaded(self, name: str) -> bool:
        """Whether `name`'s entry is in memory (not a lazy one still to be imported)."""
        return name in self._items and not isinstance(self._items[name], Lazy)

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._items), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self._items))})"

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
