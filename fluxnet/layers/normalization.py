"""BatchNormalization with Keras 3's numerics (epsilon 1e-3, two-pass biased batch variance)."""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from fluxnet import initializers
from fluxnet.errors import ArgumentError, DataError
from fluxnet.layers.base import Layer, register


@register("BatchNormalization")
class BatchNormalization(Layer):
    """Normalises over all axes but ``axis``.

    Training (and ``trainable``): batch mean and biased variance normalise the input, and the moving
    statistics update as ``moving = moving * momentum + batch * (1 - momentum)``. Inference, or a frozen
    layer (``trainable=False``, Keras semantics), uses the moving statistics. Variables: ``gamma``,
    ``beta`` (params) and ``moving_mean``, ``moving_variance`` (``batch_stats``).

    With a row ``mask`` (False for rows that only pad the batch) the statistics are those of the real
    rows alone, so a padded batch normalises its real rows exactly as the unpadded batch would; a batch
    without real rows leaves the moving statistics as they were.
    """

    autocast = False  # statistics in float32 under any dtype policy, variables never cast; output in its compute dtype

    accepts_mask = True

    def __init__(self, axis: int = -1, momentum: float = 0.99, epsilon: float = 1e-3, center: bool = True,
                 scale: bool = True, beta_initializer: Any = "zeros", gamma_initializer: Any = "ones",
                 moving_mean_initializer: Any = "zeros", moving_variance_initializer: Any = "ones",
                 name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        if not isinstance(axis, int):
            raise ArgumentError(f"BatchNormalization axis must be an int, got {axis!r}.")
        if not 0 <= momentum <= 1 or epsilon <= 0:
            raise ArgumentError(f"momentum must be in [0, 1] and epsilon > 0, got momentum={momentum}, "
                                f"epsilon={epsilon}.")
        self.axis, self.momentum, self.epsilon = axis, float(momentum), float(epsilon)
        self.center, self.scale = center, scale
        self.initializers = {name: initializers.get(init) for name, init in [
            ("beta", beta_initializer), ("gamma", gamma_initializer),
            ("moving_mean", moving_mean_initializer), ("moving_variance", moving_variance_initializer)]}

    def compute_output_shape(self, input_shape):
        if not -len(input_shape) < self.axis < len(input_shape) or self.axis in (0, -len(input_shape)):
            raise DataError(f"axis={self.axis} is not a feature axis of a rank-{len(input_shape)} input.")
        if input_shape[self.axis] is None:
            raise DataError(f"the size of axis {self.axis} must be known.")
        return input_shape

    def init(self, rng, input_shape):
        shape = (input_shape[self.axis],)
        keys = dict(zip(self.initializers, jax.random.split(rng, len(self.initializers))))
        dtype = jnp.promote_types(self.dtype, jnp.float32)  # float32 under every dtype policy
        make = lambda name: self.initializers[name](keys[name], shape, dtype)  # noqa: E731
        params = {}
        if self.scale:
            params["gamma"] = make("gamma")
        if self.center:
            params["beta"] = make("beta")
        stats = {"moving_mean": make("moving_mean"), "moving_variance": make("moving_variance")}
        return {"params": params, "batch_stats": stats}

    def apply(self, variables, inputs, *, training=False, rng=None, mask=None):
        axis = self.axis % inputs.ndim
        reduce_axes = tuple(a for a in range(inputs.ndim) if a != axis)
        bshape = [1] * inputs.ndim
        bshape[axis] = inputs.shape[axis]
        x = inputs.astype(jnp.promote_types(inputs.dtype, jnp.float32))
        stats = variables["batch_stats"]
        updates = {}
        if training and self.trainable:
            if mask is None:
                mean = jnp.mean(x, axis=reduce_axes)
                var = jnp.var(x, axis=reduce_axes)  # two-pass, biased: Keras' ops.moments
            else:
                mean, var = _masked_moments(x, mask, reduce_axes, bshape)
            m = self.momentum
            updates = {"batch_stats": {"moving_mean": stats["moving_mean"] * m + mean * (1.0 - m),
                                       "moving_variance": stats["moving_variance"] * m + var * (1.0 - m)}}
            if mask is not None:  # a batch of padding rows only keeps the moving statistics
                updates = jax.tree.map(lambda new, old: jnp.where(jnp.any(mask), new, old), updates,
                                       {"batch_stats": stats})
        else:
            mean, var = stats["moving_mean"], stats["moving_variance"]
        params = variables.get("params", {})
        inv = jax.lax.rsqrt(var + self.epsilon)  # same operation order as Keras' batch_normalization
        if self.scale:
            inv = inv * params["gamma"]
        shift = -mean * inv
        if self.center:
            shift = shift + params["beta"]
        out_dtype = inputs.dtype if self.compute_dtype == "float32" else self.compute_dtype
        return (x * inv.reshape(bshape) + shift.reshape(bshape)).astype(out_dtype), updates

    def call(self, variables, inputs, *, training=False, rng=None):
        return self.apply(variables, inputs, training=training, rng=rng)[0]


def _masked_moments(x: jax.Array, mask: jax.Array, reduce_axes: tuple[int, ...],
                    bshape: list[int]) -> tuple[jax.Array, jax.Array]:
    """Mean and biased variance over ``reduce_axes`` of the rows where ``mask`` (shape ``(batch,)``) is
    True, two-pass like ``jnp.var``; padding rows never enter a sum (even when they hold NaN)."""
    rows = mask.astype(bool).reshape((-1,) + (1,) * (x.ndim - 1))
    per_row = math.prod(x.shape[a] for a in reduce_axes if a != 0)
    count = jnp.maximum(jnp.sum(mask.astype(x.dtype)), 1.0) * per_row
    mean = jnp.sum(jnp.where(rows, x, 0.0), axis=reduce_axes) / count
    centered = jnp.where(rows, x - mean.reshape(bshape), 0.0)
    return mean, jnp.sum(jnp.square(centered), axis=reduce_axes) / count
