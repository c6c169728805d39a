"""Activation functions by Keras 3 name, with Keras' numerics.

Where ``jax.nn`` differs from Keras: ``gelu`` is exact (jax defaults to the tanh
approximation), ``leaky_relu`` has slope 0.2 (jax: 0.01), ``hard_sigmoid`` is ``relu6(x + 3) / 6``.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from fluxnet.errors import ArgumentError
from fluxnet.registry import Registry

Activation = Callable[[jax.Array], jax.Array]
ACTIVATIONS: Registry[Activation] = Registry("activation")
register = ACTIVATIONS.register  # register(name, fn) or @register(name): a custom activation


def linear(x):
    return x


def relu(x):
    return jax.nn.relu(x)


def relu6(x):
    return jax.nn.relu6(x)


def sigmoid(x):
    return jax.nn.sigmoid(x)


def softmax(x, axis: int = -1):
    return jax.nn.softmax(x, axis=axis)


def log_softmax(x, axis: int = -1):
    return jax.nn.log_softmax(x, axis=axis)


def tanh(x):
    return jnp.tanh(x)


def elu(x, alpha: float = 1.0):
    return jax.nn.elu(x, alpha)


def selu(x):
    return jax.nn.selu(x)


def gelu(x, approximate: bool = False):
    """Keras' GELU: exact (erf) by default."""
    return jax.nn.gelu(x, approximate=approximate)


def softplus(x):
    return jax.nn.softplus(x)


def softsign(x):
    return jax.nn.soft_sign(x)


def silu(x):
    return jax.nn.silu(x)


def leaky_relu(x, negative_slope: float = 0.2):
    """Keras' ``leaky_relu`` activation: slope 0.2 (the LeakyReLU *layer* defaults to 0.3)."""
    return jax.nn.leaky_relu(x, negative_slope)


def hard_sigmoid(x):
    """Keras 3: ``relu6(x + 3) / 6``."""
    return jax.nn.relu6(x + 3.0) / 6.0


def hard_silu(x):
    return x * hard_sigmoid(x)


def exponential(x):
    return jnp.exp(x)


def mish(x):
    return x * jnp.tanh(jax.nn.softplus(x))


for _fn, _aliases in [(linear, ()), (relu, ()), (relu6, ()), (sigmoid, ()), (softmax, ()),
                      (log_softmax, ()), (tanh, ()), (elu, ()), (selu, ()), (gelu, ()),
                      (softplus, ()), (softsign, ()), (silu, ("swish",)), (leaky_relu, ()),
                      (hard_sigmoid, ()), (hard_silu, ("hard_swish",)), (exponential, ()),
                      (mish, ())]:
    register(_fn.__name__, _fn, aliases=_aliases)


def get(identifier: str | Activation | None) -> Activation:
    """An activation by Keras name or as a callable; ``None`` means linear."""
    if identifier is None:
        return linear
    if callable(identifier):
        return identifier
    return ACTIVATIONS.get(identifier)


def serialize(fn: Activation) -> str:
    """The registered name of ``fn`` (for model configs); error for unregistered callables."""
    name = ACTIVATIONS.name_of(fn)
    if name is None:
        raise ArgumentError(f"Activation {fn!r} is not registered, so a model config cannot record it: "
                            "register it with fluxnet.activations.register(name, fn).")
    return name


def names() -> list[str]:
    return ACTIVATIONS.names()
