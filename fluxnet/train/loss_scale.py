"""Dynamic loss scaling for float16 compute (the ``mixed_float16`` dtype policy), as Keras'
``LossScaleOptimizer``: the train step multiplies the loss by the current scale so that small
float16 gradients do not underflow; this transform divides the gradients by it again, skips the
update (parameters and optimizer state unchanged) when they are not finite and halves the scale, and
doubles it after ``growth_interval`` finite steps in a row. The scale lives in the optimizer state,
so checkpoints and resumes carry it."""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

INITIAL_SCALE, GROWTH_INTERVAL, FACTOR = 2.0 ** 15, 2000, 2.0  # Keras' LossScaleOptimizer defaults


class LossScaleState(NamedTuple):
    scale: jax.Array        # float32
    good_steps: jax.Array   # finite steps since the scale last changed
    inner: Any


def dynamic(inner: optax.GradientTransformation, initial_scale: float = INITIAL_SCALE,
            growth_interval: int = GROWTH_INTERVAL, factor: float = FACTOR) -> optax.GradientTransformationExtraArgs:
    """``inner`` behind a dynamic loss scale (see the module docstring)."""
    inner = optax.with_extra_args_support(inner)

    def init(params):
        return LossScaleState(jnp.asarray(initial_scale, jnp.float32), jnp.zeros([], jnp.int32), inner.init(params))

    def update(grads, state, params=None, **extra):
        grads = jax.tree.map(lambda g: g / state.scale.astype(g.dtype), grads)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        updates, inner_state = inner.update(grads, state.inner, params, **extra)
        updates = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), updates)
        inner_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), inner_state, state.inner)
        good = jnp.where(finite, state.good_steps + 1, 0)
        grow = good >= growth_interval
        scale = jnp.where(finite, jnp.where(grow, state.scale * factor, state.scale),
                          jnp.maximum(state.scale / factor, 1.0))
        return updates, LossScaleState(scale, jnp.where(grow, 0, good), inner_state)

    return optax.GradientTransformationExtraArgs(init, update)


def current(opt_state: Any) -> jax.Array | None:
    """The loss scale in ``opt_state`` (None without one)."""
    for leaf in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, LossScaleState)):
        if isinstance(leaf, LossScaleState):
            return leaf.scale
    return None
