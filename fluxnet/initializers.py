"""Weight initialisers by Keras 3 name (``glorot_uniform``, ``he_normal``, ``zeros``, ...).

Each is a function ``(key, shape, dtype) -> array``. The variance-scaling family matches Keras: fans
over the receptive field (Keras' ``compute_fans``), truncated normals rescaled by 0.8796...

Random values are drawn as a flat vector and reshaped. The values are the same as drawing ``shape``
directly, but XLA:CPU compiles JAX's (partitionable) threefry for a rank-4 kernel shape in seconds
instead of a fraction of a second, and a model's ``init`` compiles one draw per kernel shape.
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax.nn import initializers as jinit

from fluxnet.errors import ArgumentError
from fluxnet.registry import Registry

Initializer = Callable
INITIALIZERS: Registry[Initializer] = Registry("initializer")
register = INITIALIZERS.register  # register(name, fn) or @register(name): a custom initialiser

# Unit samplers: (key, flat shape, dtype) -> values; the truncated normal is cut at 2 standard deviations.
_SAMPLERS = {
    "uniform": lambda key, size, dtype: jax.random.uniform(key, size, dtype, -1.0, 1.0),
    "normal": lambda key, size, dtype: jax.random.normal(key, size, dtype),
    "truncated_normal": lambda key, size, dtype: jax.random.truncated_normal(key, -2.0, 2.0, size, dtype),
}
_UNIT_STDDEV = {"uniform": math.sqrt(1 / 3), "normal": 1.0, "truncated_normal": 0.87962566103423978}


def _draw(distribution: str, key: jax.Array, shape, dtype, scale: float) -> jax.Array:
    """``scale`` times unit samples of ``distribution``, drawn flat and reshaped (see the module doc)."""
    shape = tuple(shape)
    return (_SAMPLERS[distribution](key, (math.prod(shape),), dtype) * scale).reshape(shape)


def compute_fans(shape: tuple) -> tuple[int, int]:
    """Keras' ``compute_fans``: ``(fan_in, fan_out)``; a conv kernel's receptive field multiplies both."""
    if len(shape) < 2:
        return (shape[0], shape[0]) if shape else (1, 1)
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def variance_scaling(scale: float, mode: str, distribution: str) -> Initializer:
    """Keras' ``VarianceScaling``: samples with standard deviation ``sqrt(scale / n)``, ``n`` by ``mode``."""

    def init(key, shape, dtype=jnp.float32):
        fan_in, fan_out = compute_fans(tuple(shape))
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        return _draw(distribution, key, shape, dtype, math.sqrt(scale / max(1.0, n)) / _UNIT_STDDEV[distribution])

    return init


def _fixed(distribution: str, scale: float) -> Initializer:
    """Keras' ``RandomUniform``/``RandomNormal``/``TruncatedNormal`` with their default ranges."""
    return lambda key, shape, dtype=jnp.float32: _draw(distribution, key, shape, dtype, scale)


register("glorot_uniform", variance_scaling(1.0, "fan_avg", "uniform"), aliases=("GlorotUniform",))
register("glorot_normal", variance_scaling(1.0, "fan_avg", "truncated_normal"), aliases=("GlorotNormal",))
register("he_uniform", variance_scaling(2.0, "fan_in", "uniform"), aliases=("HeUniform",))
register("he_normal", variance_scaling(2.0, "fan_in", "truncated_normal"), aliases=("HeNormal",))
register("lecun_uniform", variance_scaling(1.0, "fan_in", "uniform"), aliases=("LecunUniform",))
register("lecun_normal", variance_scaling(1.0, "fan_in", "truncated_normal"), aliases=("LecunNormal",))
register("zeros", jinit.zeros, aliases=("Zeros",))
register("ones", jinit.ones, aliases=("Ones",))
register("random_normal", _fixed("normal", 0.05), aliases=("RandomNormal",))  # Keras: stddev 0.05
register("random_uniform", _fixed("uniform", 0.05), aliases=("RandomUniform",))  # Keras: [-0.05, 0.05]
register("truncated_normal", _fixed("truncated_normal", 0.05), aliases=("TruncatedNormal",))
register("orthogonal", jinit.orthogonal(), aliases=("Orthogonal",))


def get(identifier: str | Initializer) -> Initializer:
    """An initialiser by Keras name or as a callable ``(key, shape, dtype) -> array``."""
    if callable(identifier):
        return identifier
    return INITIALIZERS.get(identifier)


def serialize(fn: Initializer | str) -> str:
    """The registered name of an initialiser (for model configs)."""
    if isinstance(fn, str):
        return fn
    name = INITIALIZERS.name_of(fn)
    if name is None:
        raise ArgumentError(f"Initializer {fn!r} is not registered, so a model config cannot record it: "
                            "register it with fluxnet.initializers.register(name, fn).")
    return name
