"""Experiment configs: ml_collections ConfigDicts from Python files, command-line overrides, JSON records.

As in Flax's examples and big_vision, a config is a Python file with a ``get_config()`` that returns
a ``ml_collections.ConfigDict``. Overrides use dotted keys (``train.epochs=3``); their values are
Python literals checked against the type of the value they replace, so a typo or a wrong type fails
at once with the key named. A run records its resolved config as JSON (:func:`save_config`) and a
resumed run compares it with :func:`config_diff`.
"""
from __future__ import annotations

import ast
import copy
import difflib
import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Mapping

import ml_collections

from fluxnet.files import write_atomic
from fluxnet.runs.schema import is_optional
from fluxnet.errors import ArgumentTypeError, ConfigError, NotFoundError

ConfigDict = ml_collections.ConfigDict

# Keys whose value may be of either type, whatever the config file holds: a fraction of the train split or
# a tfds split string (``data.splits.test=test`` replaces the default 0.2); "auto" or a bool (data.streaming).
SPLIT_KEYS = frozenset({"data.splits.train", "data.splits.validation", "data.splits.test"})
STREAMING_KEY = "data.streaming"


def config_module(path: str | Path) -> ModuleType:
    """The config file at ``path``, imported (its ``get_config()`` and, for sweeps, ``get_sweep()``)."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"Config file {str(path)!r} does not exist.")
    spec = importlib.util.spec_from_file_location(f"fluxnet_config_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"Config file {str(path)!r} is not an importable Python file.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(path: str | Path) -> ConfigDict:
    """The ConfigDict returned by ``get_config()`` in the Python file at ``path``."""
    get_config = getattr(config_module(path), "get_config", None)
    if not callable(get_config):
        raise ConfigError(f"Config file {str(path)!r} defines no get_config() function.")
    cfg = get_config()
    if isinstance(cfg, Mapping):
        cfg = ConfigDict(cfg)
    if not isinstance(cfg, ConfigDict):
        raise ArgumentTypeError(f"get_config() in {str(path)!r} must return an ml_collections.ConfigDict, "
                        f"got {type(cfg).__name__}.")
    return cfg


def _is_group(value: Any) -> bool:
    return isinstance(value, (ConfigDict, Mapping))


def flatten(cfg: ConfigDict | Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` for every leaf of a nested config; an empty group is a leaf ``{}``."""
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if _is_group(value) and len(value):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = {} if _is_group(value) else value
    return flat


def _suggestions(key: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Dotted keys close to ``key``: by whole key, by last part, or whose last part ``key``'s
    last part abbreviates (``lr`` -> ``learning_rate``)."""
    last = key.rsplit(".", 1)[-1]

    def score(candidate: str) -> tuple[float, float]:
        whole = difflib.SequenceMatcher(None, key, candidate).ratio()
        c_last = candidate.rsplit(".", 1)[-1]
        initials = "".join(word[:1] for word in c_last.split("_"))
        part = 1.0 if last == initials else difflib.SequenceMatcher(None, last, c_last).ratio()
        return max(whole, part), whole

    scored = sorted(((score(c), c) for c in candidates), key=lambda sc: (-sc[0][0], -sc[0][1], sc[1]))
    return [c for (best, _), c in scored[:n] if best >= 0.6]


def _unknown_key(key: str, cfg: ConfigDict) -> ConfigError:
    valid = sorted(flatten(cfg))
    hints = _suggestions(key, valid)
    msg = f"Unknown config key {key!r}."
    if hints:
        msg += f" Did you mean {' or '.join(repr(h) for h in hints)}?"
    return ConfigError(msg + f" Valid keys: {', '.join(valid)}.")


def _parse(text: str) -> Any:
    """A Python literal, or the text itself when it is not one (``model.name=cnn``)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _coerce(key: str, text: str, current: Any, field_type: type, nullable: bool) -> Any:
    """``text`` parsed and checked against the type of the value it replaces (None where ``nullable``)."""
    value = _parse(text)
    if current is None and field_type is type(None):
        return value
    if value is None:
        if current is None or nullable:
            return None
    elif field_type is bool:
        if isinstance(value, bool):
            return value
        if text.strip().lower() in ("true", "false"):
            return text.strip().lower() == "true"
    elif field_type is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif field_type is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif field_type is str:
        return value if isinstance(value, str) else text.strip()
    elif field_type in (list, tuple):
        if isinstance(value, (list, tuple)):
            return field_type(value)
    elif issubclass(field_type, (ConfigDict, Mapping)):
        if isinstance(value, Mapping):
            return ConfigDict(value)
    elif isinstance(value, field_type):
        return value
    expected, now = ("dict", "a group") if _is_group(current) else (field_type.__name__, repr(current))
    raise ConfigError(f"Config key {key!r} expects a value of type {expected} (currently {now}), "
                     f"got {text!r}.")


def _fraction_or_split(key: str, text: str, current: Any, nullable: bool) -> float | str | None:
    """A split key's value: a number as a float (a fraction), a string as a tfds split string, None
    where the key may be None; anything else is refused. ``split_spec_arg`` checks it when the data is
    loaded."""
    value = _parse(text)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if value is None and (current is None or nullable):
        return None
    if isinstance(value, str):
        return value.strip()
    raise ConfigError(f"Config key {key!r} expects a fraction or a tfds split string such as 'test' or "
                      f"'train[:10%]' (currently {current!r}), got {text!r}.")


def _streaming_mode(key: str, text: str, current: Any, nullable: bool) -> bool | str:
    """``data.streaming``'s value: ``auto``, or true/false (any case, or a Python bool)."""
    word = text.strip().strip("'\"").lower()
    if word in ("auto", "true", "false"):
        return word if word == "auto" else word == "true"
    raise ConfigError(f"Config key {key!r} expects 'auto', True or False (currently {current!r}), got {text!r}.")


def apply_overrides(cfg: ConfigDict, overrides: Iterable[str],
                    nullable: Callable[[str], bool] = lambda key: False) -> ConfigDict:
    """A copy of ``cfg`` with ``"dotted.key=value"`` overrides applied.

    Values are Python literals (``3``, ``0.01``, ``True``, ``[1, 2]``, ``{"a": 1}``, ``None``);
    anything else is a string (``model.name=cnn``). Each value must fit the type of the value it
    replaces: an int may replace a float, a list a tuple (and back), a dict replaces a whole group,
    ``true``/``false`` are accepted for booleans, a field that is None accepts anything, and ``None``
    turns off a field that is None by default or for which ``nullable(dotted_key)`` is true. A split
    key (``SPLIT_KEYS``) takes a fraction or a tfds split string, whatever type the file gives it, and
    ``data.streaming`` takes ``auto``, true or false.
    Unknown keys, wrong types and items without ``=`` raise ConfigError (a ValueError) naming the key.
    """
    if isinstance(overrides, str):
        raise ArgumentTypeError(f"overrides must be a list of 'key=value' strings, got the string {overrides!r}.")
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"Override {item!r} is not of the form 'dotted.key=value' "
                             "(e.g. 'train.epochs=3').")
        key, text = item.split("=", 1)
        key = key.strip()
        *groups, last = key.split(".")
        parent = cfg
        for depth, part in enumerate(groups):
            if part not in parent:
                raise _unknown_key(key, cfg)
            parent = parent[part]
            if not isinstance(parent, ConfigDict):
                raise ConfigError(f"Config key {'.'.join(groups[:depth + 1])!r} is a value, not a "
                                 f"group, so {key!r} does not exist.")
        if last not in parent:
            raise _unknown_key(key, cfg)
        if key in SPLIT_KEYS or key == STREAMING_KEY:
            parse = _streaming_mode if key == STREAMING_KEY else _fraction_or_split
            value = parse(key, text, parent[last], nullable(key))
            del parent[last]  # ConfigDict keeps a field's type: the new value may have another
            parent[last] = value
        else:
            parent[last] = _coerce(key, text, parent[last], parent.get_type(last), nullable(key))
    return cfg


def resolve_config(path: str | Path, overrides: Iterable[str] = ()) -> ConfigDict:
    """The config of a ``configs/`` file with ``key=value`` overrides applied (``key=None`` for the
    settings a run may leave off, ``fluxnet.runs.schema.OPTIONAL``)."""
    return apply_overrides(load_config(path), list(overrides), nullable=is_optional)


def to_json(cfg: ConfigDict | Mapping[str, Any]) -> dict:
    """``cfg`` as JSON types (tuples become lists), as :func:`save_config` records it."""
    return _jsonable(cfg, "")


def _jsonable(value: Any, key: str) -> Any:
    """``value`` as JSON types (tuples become lists); TypeError naming ``key`` if impossible."""
    if _is_group(value):
        return {str(k): _jsonable(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ArgumentTypeError(f"Config key {key!r} holds {value!r} of type {type(value).__name__}, which "
                    "cannot be saved as JSON.")


def save_config(cfg: ConfigDict | Mapping[str, Any], path: str | Path) -> None:
    """Write ``cfg`` to ``path`` as indented JSON with sorted keys; floats round-trip exactly."""
    write_atomic(path, json.dumps(to_json(cfg), indent=2, sort_keys=True) + "\n")


def load_saved_config(path: str | Path) -> ConfigDict:
    """A ConfigDict from a JSON file written by :func:`save_config`."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"Saved config {str(path)!r} does not exist.")
    try:
        return ConfigDict(json.loads(path.read_text()))
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"Saved config {str(path)!r} is damaged ({err}); the run's checkpoints record "
                          "its config too: delete the file and run again, or use another --workdir.") from None


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()  # stands for a key absent on one side of a config_diff


def _same(a: Any, b: Any) -> bool:
    """Equality of JSON values where 1 == 1.0 but True != 1, and NaN equals NaN."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def config_diff(old: ConfigDict | Mapping[str, Any], new: ConfigDict | Mapping[str, Any],
                ignore: Iterable[str] = ("train.epochs",)) -> list[tuple[str, Any, Any]]:
    """Sorted ``(dotted_key, old_value, new_value)`` for every leaf that differs.

    Values are compared as JSON would store them (a tuple equals a list), so a config read back
    from :func:`save_config` equals the one saved. A key absent on one side shows as ``MISSING``.
    Keys in ``ignore``, or under a group named there, are skipped.
    """
    ignore = (ignore,) if isinstance(ignore, str) else tuple(ignore)
    a = flatten(_jsonable(old, ""))
    b = flatten(_jsonable(new, ""))
    diff = []
    for key in sorted(set(a) | set(b)):
        if any(key == ig or key.startswith(ig + ".") for ig in ignore):
            continue
        va, vb = a.get(key, MISSING), b.get(key, MISSING)
        if not _same(va, vb):
            diff.append((key, va, vb))
    return diff

