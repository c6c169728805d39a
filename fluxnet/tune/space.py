"""Search spaces: dotted config keys -> dimensions, from a config file's ``get_sweep()`` and ``--space``.

A dimension is a list (categorical: None, bool, int, float or str values; a grid takes the product of
these), ``{"uniform": [lo, hi]}``, ``{"loguniform": [lo, hi]}`` or ``{"int": [lo, hi]}`` (with an optional
``"step"``). Every key and value is checked against the config before anything runs: an unknown key gets
the overrides' did-you-mean error, a value of the wrong type is named.
"""
from __future__ import annotations

import ast
import dataclasses
import itertools
import math
import numbers
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import optuna
from ml_collections import ConfigDict

from fluxnet.errors import ConfigError
from fluxnet.runs.config import apply_overrides, config_module
from fluxnet.runs.schema import is_optional

CONTINUOUS = ("uniform", "loguniform")
KINDS = (*CONTINUOUS, "int")
Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One swept key: ``values`` (categorical), or ``kind`` in uniform/loguniform/int on [low, high]."""

    key: str
    values: tuple = ()
    kind: str = "categorical"
    low: float = 0.0
    high: float = 0.0
    step: int = 1

    def distribution(self) -> optuna.distributions.BaseDistribution:
        if self.kind == "categorical":
            return optuna.distributions.CategoricalDistribution(self.values)
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), step=self.step)
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.kind == "loguniform")

    def grid_values(self) -> tuple:
        """The values a grid takes: a categorical's, or every step of an int range."""
        if self.kind == "categorical":
            return self.values
        if self.kind == "int":
            return tuple(range(int(self.low), int(self.high) + 1, self.step))
        raise ConfigError(f"A grid cannot cover the continuous dimension {self.key!r} ({self.kind} on "
                          f"[{self.low}, {self.high}]): list its values, or sample it (sweep --method random, or "
                          "tune with another --sampler).")

    def sample(self, rng: np.random.Generator) -> Any:
        if self.kind == "categorical":
            return self.values[int(rng.integers(len(self.values)))]
        if self.kind == "int":
            return int(self.low) + self.step * int(rng.integers((int(self.high) - int(self.low)) // self.step + 1))
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def dimension(key: str, spec: Any) -> Dimension:
    """A checked dimension from its spec (a list or a one-kind dict); ConfigError naming ``key`` otherwise."""
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ConfigError(f"Search dimension {key!r} lists no values.")
        bad = [v for v in spec if v is not None and not isinstance(v, (bool, int, float, str))]
        if bad:
            raise ConfigError(f"Search dimension {key!r}: categorical values must be None, bool, int, float or "
                              f"str, got {bad[0]!r}.")
        return Dimension(key, tuple(spec))
    if isinstance(spec, Mapping):
        kinds = [k for k in spec if k in KINDS]
        extra = sorted(set(spec) - set(KINDS) - {"step"})
        if len(kinds) != 1 or extra or ("step" in spec and kinds != ["int"]):
            raise ConfigError(f"Search dimension {key!r} must be a list or one of {{'uniform': [lo, hi]}}, "
                              f"{{'loguniform': [lo, hi]}}, {{'int': [lo, hi], 'step': s}}; got {dict(spec)!r}.")
        kind = kinds[0]
        bounds = spec[kind]
        if not isinstance(bounds, (list, tuple)) or len(bounds) != 2 or not all(_number(b) for b in bounds) \
                or not bounds[0] < bounds[1]:
            raise ConfigError(f"Search dimension {key!r}: {kind} needs [lo, hi] with lo < hi, got {bounds!r}.")
        low, high = bounds
        if kind == "loguniform" and low <= 0:
            raise ConfigError(f"Search dimension {key!r}: loguniform needs lo > 0, got {low!r}.")
        step = spec.get("step", 1)
        if kind == "int" and (not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
                              or not isinstance(step, int) or isinstance(step, bool) or step < 1):
            raise ConfigError(f"Search dimension {key!r}: int needs integer bounds and a step >= 1, got "
                              f"{dict(spec)!r}.")
        return Dimension(key, kind=kind, low=low, high=high, step=step)
    raise ConfigError(f"Search dimension {key!r} must be a list of values or a dict such as "
                      f"{{'uniform': [0.0, 1.0]}}, got {spec!r}.")


def with_params(config: ConfigDict, params: Mapping[str, Any]) -> ConfigDict:
    """A copy of ``config`` with ``params`` set, each checked like a command-line override."""
    return apply_overrides(config, [f"{k}={v!r}" for k, v in params.items()], nullable=is_optional)


def check(space: Mapping[str, Dimension], config: ConfigDict) -> None:
    """Every key exists in ``config`` and every value it can take fits the key's type."""
    for dim in space.values():
        probes = dim.values if dim.kind == "categorical" else (dim.low, dim.high)
        for value in probes:
            with_params(config, {dim.key: value})


def parse(sweep: Mapping[str, Any] | None, extra: Iterable[str] = ()) -> dict[str, Dimension]:
    """The space of ``get_sweep()``'s dict with ``--space KEY=SPEC`` items added or replacing dimensions."""
    specs = dict(sweep or {})
    if not isinstance(specs, dict):
        raise ConfigError(f"get_sweep() must return a dict of dotted keys to dimensions, got {type(sweep).__name__}.")
    for item in extra:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--space {item!r} is not of the form KEY=SPEC (e.g. "
                              "optimizer.learning_rate=\"{'loguniform': [1e-4, 1e-2]}\").")
        try:
            specs[key.strip()] = ast.literal_eval(text)
        except (ValueError, SyntaxError) as err:
            raise ConfigError(f"--space {item!r}: SPEC must be a Python literal ({err}).") from None
    if not specs:
        raise ConfigError("The search space is empty: define get_sweep() in the config file or pass --space KEY=SPEC.")
    return {key: dimension(key, spec) for key, spec in specs.items()}


def load_sweep(path: str | Path) -> dict | None:
    """``get_sweep()`` of a config file, or None when it defines none."""
    get_sweep = getattr(config_module(path), "get_sweep", None)
    return get_sweep() if callable(get_sweep) else None


MAX_GRID = 100_000


def grid_size(space: Mapping[str, Dimension]) -> int:
    return math.prod(len(d.grid_values()) for d in space.values())


def grid(space: Mapping[str, Dimension], limit: int | None = None) -> list[Params]:
    """The combinations of the dimensions' values in the order they are listed (the first ``limit``);
    a grid of more than ``MAX_GRID`` points needs a ``limit``."""
    size = grid_size(space)
    if limit is None and size > MAX_GRID:
        raise ConfigError(f"The grid has {size:,} points; pass --trials N for its first N, or sample the space "
                          "(sweep --method random, or fluxnet tune).")
    keys = list(space)
    combos = itertools.islice(itertools.product(*(space[k].grid_values() for k in keys)), limit)
    return [dict(zip(keys, combo)) for combo in combos]


def random_points(space: Mapping[str, Dimension], n: int, seed: int) -> list[Params]:
    """``n`` independent draws from the space (reproducible from ``seed``)."""
    rng = np.random.default_rng(seed)
    return [{k: dim.sample(rng) for k, dim in space.items()} for _ in range(n)]


def suggest(trial: optuna.trial.BaseTrial, space: Mapping[str, Dimension]) -> Params:
    """The trial's value of every dimension (enqueued trials return their fixed values)."""
    params = {}
    for key, dim in space.items():
        if dim.kind == "categorical":
            params[key] = trial.suggest_categorical(key, list(dim.values))
        elif dim.kind == "int":
            params[key] = trial.suggest_int(key, int(dim.low), int(dim.high), step=dim.step)
        else:
            params[key] = trial.suggest_float(key, dim.low, dim.high, log=dim.kind == "loguniform")
    return params
