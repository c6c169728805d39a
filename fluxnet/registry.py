"""Name -> object registries with Keras-style lookup and helpful errors.

Activations, initialisers, losses, metrics, optimizers and layer classes are all looked up by name;
one small class gives them the same behaviour: aliases, user registration, and an error that lists the
valid names and suggests the closest one.
"""
from __future__ import annotations

import difflib
from typing import Any, Callable, Generic, Iterable, TypeVar

T = TypeVar("T")


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates closest to ``name`` (for "did you mean" hints)."""
    return difflib.get_close_matches(str(name), sorted(set(candidates)), n=n, cutoff=0.5)


def unknown_name_error(kind: str, name: str, candidates: Iterable[str]) -> ValueError:
    """A ValueError naming the unknown ``kind`` entry, the valid names and the closest ones."""
    candidates = sorted(set(candidates))
    hint = closest(name, candidates)
    msg = f"Unknown {kind} {name!r}."
    if hint:
        msg += f" Did you mean {' or '.join(repr(h) for h in hint)}?"
    msg += f" Valid names: {', '.join(candidates)}."
    return ValueError(msg)


class Registry(Generic[T]):
    """A mapping from names (and aliases) to objects, with clear errors for unknown names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None, *, aliases: Iterable[str] = (),
                 overwrite: bool = False) -> Any:
        """Register ``obj`` under ``name`` and ``aliases``; usable as a decorator when ``obj`` is None."""

        def _add(o: T) -> T:
            for key in (name, *aliases):
                if key in self._items and self._items[key] is not o and not overwrite:
                    raise ValueError(f"{self.kind} name {key!r} is already registered; "
                                     "pass overwrite=True to replace it.")
                self._items[key] = o
            return o

        return _add if obj is None else _add(obj)

    def get(self, name: str) -> T:
        """The object registered under ``name``; ValueError listing valid names otherwise."""
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} must be given by name (str), got {type(name).__name__}.")
        try:
            return self._items[name]
        except KeyError:
            raise unknown_name_error(self.kind, name, self._items) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def names(self) -> list[str]:
        return sorted(self._items)

    def name_of(self, obj: Any) -> str | None:
        """The first name ``obj`` was registered under, or None."""
        for key, value in self._items.items():
            if value is obj:
                return key
        return None


def resolve(registry: Registry[Callable], identifier: str | Callable) -> Callable:
    """A callable given as itself or by registered name."""
    if callable(identifier):
        return identifier
    return registry.get(identifier)
