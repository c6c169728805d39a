"""Weight initialisers by Keras 3 name (``glorot_uniform``, ``he_normal``, ``zeros``, ...).

Each is a ``jax.nn.initializers`` function ``(key, shape, dtype) -> array``. The variance-scaling
family matches Keras: fan-in/out over the receptive field, truncated normals rescaled by 0.8796...
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
from jax.nn import initializers as jinit

from fluxnet.registry import Registry

Initializer = Callable
_REGISTRY: Registry[Initializer] = Registry("initializer")


def register(name: str, fn: Initializer | None = None, *, aliases=()):
    """Register a custom initialiser under ``name`` (decorator when ``fn`` is None)."""
    return _REGISTRY.register(name, fn, aliases=aliases)


def _variance_scaling(scale: float, mode: str, distribution: str) -> Initializer:
    return jinit.variance_scaling(scale, mode, distribution, in_axis=-2, out_axis=-1)


register("glorot_uniform", _variance_scaling(1.0, "fan_avg", "uniform"), aliases=("GlorotUniform",))
register("glorot_normal", _variance_scaling(1.0, "fan_avg", "truncated_normal"), aliases=("GlorotNormal",))
register("he_uniform", _variance_scaling(2.0, "fan_in", "uniform"), aliases=("HeUniform",))
register("he_normal", _variance_scaling(2.0, "fan_in", "truncated_normal"), aliases=("HeNormal",))
register("lecun_uniform", _variance_scaling(1.0, "fan_in", "uniform"), aliases=("LecunUniform",))
register("lecun_normal", _variance_scaling(1.0, "fan_in", "truncated_normal"), aliases=("LecunNormal",))
register("zeros", jinit.zeros, aliases=("Zeros",))
register("ones", jinit.ones, aliases=("Ones",))
register("random_normal", jinit.normal(0.05), aliases=("RandomNormal",))
register("random_uniform", lambda key, shape, dtype=jnp.float32: jinit.uniform(0.1)(key, shape, dtype) - 0.05,
         aliases=("RandomUniform",))
register("truncated_normal", jinit.truncated_normal(0.05), aliases=("TruncatedNormal",))
register("orthogonal", jinit.orthogonal(), aliases=("Orthogonal",))


def get(identifier: str | Initializer) -> Initializer:
    """An initialiser by Keras name or as a callable ``(key, shape, dtype) -> array``."""
    if callable(identifier):
        return identifier
    return _REGISTRY.get(identifier)


def serialize(fn: Initializer | str) -> str:
    """The registered name of an initialiser (for model configs)."""
    if isinstance(fn, str):
        return fn
    name = _REGISTRY.name_of(fn)
    if name is None:
        raise ValueError(f"Initializer {fn!r} is not registered, so a model config cannot record it: "
                         "register it with fluxnet.initializers.register(name, fn).")
    return name
