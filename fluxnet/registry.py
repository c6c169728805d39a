"""Name -> object registries with Keras-style lookup and helpful errors.

Activations, initialisers, losses, metrics, optimizers, schedules, layer classes, model builders,
augmentation ops and bundled data sets are all looked up by name, and all the same way: each is a
``Registry`` constant named for its kind in the plural (``LOSSES``, ``LAYERS``, ...) in the module that
defines the entries; the module exposes ``register = REGISTRY.register`` (a call ``register(name, obj)``
or a decorator ``@register(name)``) and a ``get``. An unknown name raises ``UnknownNameError`` listing the
valid names and the closest ones.
"""
from __future__ import annotations

import difflib
import functools
import inspect
from typing import Any, Callable, Generic, Iterable, TypeVar

from fluxnet.errors import ArgumentError, ArgumentTypeError, UnknownNameError

T = TypeVar("T")


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates closest to ``name`` (for "did you mean" hints)."""
    return difflib.get_close_matches(str(name), sorted(set(candidates)), n=n, cutoff=0.5)


def unknown_name_error(kind: str, name: str, candidates: Iterable[str]) -> UnknownNameError:
    """An UnknownNameError (a ValueError) naming the unknown ``kind`` entry, the valid names and the closest ones."""
    candidates = sorted(set(candidates))
    hint = closest(name, candidates)
    msg = f"Unknown {kind} {name!r}."
    if hint:
        msg += f" Did you mean {' or '.join(repr(h) for h in hint)}?"
    msg += f" Valid names: {', '.join(candidates)}."
    return UnknownNameError(msg)


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
                    raise ArgumentError(f"{self.kind} name {key!r} is already registered; "
                                     "pass overwrite=True to replace it.")
                self._items[key] = o
            return o

        return _add if obj is None else _add(obj)

    def get(self, name: str) -> T:
        """The object registered under ``name``; UnknownNameError listing valid names otherwise."""
        if not isinstance(name, str):
            raise ArgumentTypeError(f"{self.kind} must be given by name (str), got {type(name).__name__}.")
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


def resolve(registry: Registry[Callable], identifier: str | Callable, **options: Any) -> Callable:
    """A callable given as itself or by registered name, with ``options`` bound (``functools.partial``)
    after checking that it takes them."""
    fn = identifier if callable(identifier) else registry.get(identifier)
    if not options:
        return fn
    try:
        inspect.signature(fn).bind_partial(None, None, **options)
    except TypeError as err:
        raise ArgumentTypeError(f"{registry.kind} {name_for(registry, fn)!r} does not take options "
                                f"{sorted(options)}: {err}") from None
    return functools.partial(fn, **options)


def name_for(registry: Registry, identifier: str | Callable) -> str:
    """A name for configs and logs: a string as given, else the name ``identifier`` was registered under
    (``functools.partial`` is seen through), else the function's ``__name__``."""
    if isinstance(identifier, str):
        return identifier
    fn = identifier.func if isinstance(identifier, functools.partial) else identifier
    return registry.name_of(fn) or getattr(fn, "__name__", type(fn).__name__)
