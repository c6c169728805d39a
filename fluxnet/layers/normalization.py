"""Normalization layers with Keras 3's numerics: BatchNormalization (epsilon 1e-3, two-pass biased batch
variance), LayerNormalization and the preprocessing layer Normalization.

All three compute in float32 under every dtype policy and keep their variables in float32 (the model
never casts them); the output is in the layer's compute dtype. Non-trainable variables live in the
``batch_stats`` collection, which training carries through the steps untouched by the optimizer.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fluxnet import initializers
from fluxnet.errors import ArgumentError, DataError
from fluxnet.layers.base import Layer, config_constant, format_shape, register

EPSILON = 1e-7  # Keras' backend.epsilon(): Normalization's floor on the standard deviation


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


def _float32(x: jax.Array) -> jax.Array:
    """``x`` in at least float32 (integer images too), as Keras' normalisations compute."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _feature_axes(axes: Sequence[int], input_shape: tuple, what: str) -> tuple[int, ...]:
    """``axes`` as sorted non-negative axes of ``input_shape``; DataError for an axis out of range, twice,
    or of unknown size (the batch axis among them)."""
    rank = len(input_shape)
    if any(not -rank <= a < rank for a in axes):
        raise DataError(f"axis={list(axes)} is out of range for a rank-{rank} input.")
    kept = tuple(sorted(a % rank for a in axes))
    if len(set(kept)) != len(kept):
        raise DataError(f"axis={list(axes)} names an axis twice.")
    unknown = [a for a in kept if input_shape[a] is None]
    if unknown:
        raise DataError(f"the {what} axes must have known sizes; axis {unknown[0]} does not "
                        "(the batch axis never does).")
    return kept


@register("LayerNormalization")
class LayerNormalization(Layer):
    """Normalises each example over ``axis`` (an int or a list): ``(x - mean) / sqrt(var + epsilon)``, then
    ``* gamma`` (``scale``) and ``+ beta`` (``center``), the statistics in float32 (Keras' ops.layer_normalization).

    ``rms_scaling=True`` is Keras' deprecated option (keyword-only, as in Keras): ``x / sqrt(var + epsilon)
    * gamma``, no centring and no beta; Keras warns that it scales by the variance, not the root mean square.
    Variables (params): ``gamma``, ``beta``, of the normalised axes' shape in axis order.
    """

    autocast = False  # statistics in float32, variables never cast; output in the compute dtype

    def __init__(self, axis: int | Sequence[int] = -1, epsilon: float = 1e-3, center: bool = True, scale: bool = True,
                 beta_initializer: Any = "zeros", gamma_initializer: Any = "ones", name: str | None = None, *,
                 rms_scaling: bool = False, **kwargs):
        super().__init__(name=name, **kwargs)
        if not isinstance(axis, int) and not (isinstance(axis, (list, tuple)) and axis
                                              and all(isinstance(a, int) for a in axis)):
            raise ArgumentError(f"LayerNormalization axis must be an int or a non-empty list of ints, "
                                f"got {axis!r}.")
        if not epsilon > 0:
            raise ArgumentError(f"LayerNormalization epsilon must be > 0, got {epsilon!r}.")
        if rms_scaling:
            warnings.warn("rms_scaling=True (deprecated in Keras) scales the input by the variance, not the root "
                          "mean square, exactly as Keras does.", UserWarning, stacklevel=3)
        self.axis = (axis,) if isinstance(axis, int) else tuple(axis)
        self.epsilon = float(epsilon)
        self.center, self.scale, self.rms_scaling = center, scale, rms_scaling
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)

    def compute_output_shape(self, input_shape):
        _feature_axes(self.axis, input_shape, "normalised")
        return input_shape

    def init(self, rng, input_shape):
        shape = tuple(input_shape[a] for a in _feature_axes(self.axis, input_shape, "normalised"))
        gamma_key, beta_key = jax.random.split(rng)
        params = {}
        if self.scale or self.rms_scaling:
            params["gamma"] = self.gamma_initializer(gamma_key, shape, jnp.float32)
        if self.center and not self.rms_scaling:
            params["beta"] = self.beta_initializer(beta_key, shape, jnp.float32)
        return {"params": params}

    def call(self, variables, inputs, *, training=False, rng=None):
        x = _float32(inputs)
        axes = _feature_axes(self.axis, x.shape, "normalised")
        bshape = [n if a in axes else 1 for a, n in enumerate(x.shape)]
        params = variables.get("params", {})
        gamma, beta = (params[k].astype(x.dtype).reshape(bshape) if k in params else None for k in ("gamma", "beta"))
        if self.rms_scaling:
            out = x * jax.lax.rsqrt(jnp.var(x, axis=axes, keepdims=True) + self.epsilon)
            out = out if gamma is None else out * gamma
        else:
            inv = jax.lax.rsqrt(jnp.var(x, axis=axes, keepdims=True) + self.epsilon)
            inv = inv if gamma is None else inv * gamma
            shift = -jnp.mean(x, axis=axes, keepdims=True) * inv
            out = x * inv + (shift if beta is None else shift + beta)
        return out.astype(self.compute_dtype)


@register("Normalization")
class Normalization(Layer):
    """Keras' preprocessing Normalization: ``(x - mean) / max(sqrt(variance), 1e-7)`` (``invert=True``:
    ``mean + x * max(sqrt(variance), 1e-7)``) with one mean and variance per position of the ``axis``
    axes (an int, a tuple, or None: one for all values).

    Given ``mean`` and ``variance`` (numbers or arrays aligned right to left with the ``axis`` axes, as
    Keras broadcasts them), the layer holds them as constants of its config and has no variables.
    Without them it has Keras' non-trainable variables (``batch_stats``) ``mean`` (zeros), ``variance``
    (ones) and an int32 scalar ``count`` that Keras keeps for old files and never updates; set them from
    a Keras weights file or from ``adapt``, the variables of this layer for some data::

        norm = layers.Normalization()
        model = fx.Sequential([layers.Input((32, 32, 3)), norm, layers.Conv2D(8, 3)])
        variables = model.init(jax.random.key(0))
        variables["batch_stats"][norm.name] = norm.adapt(images)["batch_stats"]
    """

    autocast = False  # statistics applied in float32, variables never cast; output in the compute dtype

    def __init__(self, axis: int | Sequence[int] | None = -1, mean: Any = None, variance: Any = None,
                 invert: bool = False, name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        axes = () if axis is None else (axis,) if isinstance(axis, int) else axis
        if not isinstance(axes, (list, tuple)) or not all(isinstance(a, int) for a in axes):
            raise ArgumentError(f"Normalization axis must be None, an int or a tuple of ints, got {axis!r}.")
        self.axis = tuple(axes)
        if (mean is None) != (variance is None):
            raise ArgumentError(f"Normalization needs both mean and variance, or neither (then its variables hold "
                                f"them); got mean={mean!r}, variance={variance!r}.")
        self.mean = None if mean is None else config_constant(mean, "Normalization mean")
        self.variance = None if variance is None else config_constant(variance, "Normalization variance")
        if mean is not None:
            if np.shape(self.mean) != np.shape(self.variance):
                raise ArgumentError(f"Normalization mean and variance must have the same shape, got "
                                    f"{np.shape(self.mean)} and {np.shape(self.variance)}.")
            if np.ndim(self.mean) > len(self.axis):
                raise ArgumentError(f"Normalization mean has rank {np.ndim(self.mean)}, more than the "
                                    f"{len(self.axis)} axes of axis={axis!r}.")
        self.invert = invert

    def get_config(self) -> dict:
        return {**super().get_config(), "mean": self.mean, "variance": self.variance}

    def _kept(self, input_shape: tuple) -> tuple[int, ...]:
        return _feature_axes(self.axis, input_shape, "kept")

    def compute_output_shape(self, input_shape):
        kept = self._kept(input_shape)
        if self.mean is not None:
            for i, n in enumerate(reversed(np.shape(self.mean)), start=1):
                if n not in (1, input_shape[kept[-i]]):
                    raise DataError(f"mean and variance of shape {np.shape(self.mean)} do not broadcast over the "
                                    f"kept axes {kept} of sizes {tuple(input_shape[a] for a in kept)}.")
        return input_shape

    def init(self, rng, input_shape):
        if self.mean is not None:
            return {}
        shape = tuple(input_shape[a] for a in self._kept(input_shape))
        return {"batch_stats": {"mean": jnp.zeros(shape, jnp.float32), "variance": jnp.ones(shape, jnp.float32),
                                "count": jnp.zeros((), jnp.int32)}}

    def call(self, variables, inputs, *, training=False, rng=None):
        x = _float32(inputs)
        kept = self._kept(x.shape)
        if self.mean is None:
            stats = variables["batch_stats"]
            mean, variance = stats["mean"], stats["variance"]
        else:
            mean, variance = jnp.asarray(self.mean, jnp.float32), jnp.asarray(self.variance, jnp.float32)
        shape = [1] * x.ndim  # the statistics' axes aligned right to left with the kept axes (Keras)
        for i, n in enumerate(reversed(mean.shape), start=1):
            shape[kept[-i]] = n
        mean, variance = mean.reshape(shape).astype(x.dtype), variance.reshape(shape).astype(x.dtype)
        std = jnp.maximum(jnp.sqrt(variance), EPSILON)
        out = mean + x * std if self.invert else (x - mean) / std
        return out.astype(self.compute_dtype)

    def adapt(self, data: Any) -> dict:
        """``{"batch_stats": {"mean", "variance", "count"}}`` for ``data``: an array whose first axis is
        the batch, or an iterable of such batches. Per position of the kept axes, the mean and the
        population variance over all other axes, batches merged as Keras' ``adapt`` merges them
        (computed in float64, stored in float32; ``count`` stays 0, as Keras leaves it)."""
        if self.mean is not None:
            raise ArgumentError(f"{self.describe()} was given mean and variance, so it has no variables to adapt.")
        batches: Iterable = [data] if hasattr(data, "shape") else data
        reference = self.built_input_shape  # the kept axes' sizes: the layer's input, else the first batch's
        total_mean = total_var = None
        total = 0
        for batch in batches:
            batch = np.asarray(batch)
            shape = (None, *batch.shape[1:])
            kept = self._kept(shape)
            reference = reference or shape
            if len(reference) != len(shape) or any(reference[a] != shape[a] for a in kept):
                raise DataError(f"{self.describe()} adapts to inputs of shape {format_shape(reference)}; a batch "
                                f"of shape {batch.shape} has other sizes on the kept axes {kept}.")
            reduce = tuple(a for a in range(batch.ndim) if a not in kept)
            count = math.prod(batch.shape[a] for a in reduce)
            if count == 0:
                raise DataError(f"{self.describe()} cannot adapt to an empty batch of shape {batch.shape}.")
            mean, var = batch.mean(axis=reduce, dtype=np.float64), batch.var(axis=reduce, dtype=np.float64)
            if total_mean is None:
                total_mean, total_var = np.zeros_like(mean), np.zeros_like(var)
            total += count
            weight = count / total
            new_mean = total_mean * (1 - weight) + mean * weight  # Keras' lack-of-fit sum of squares
            total_var = ((total_var + (total_mean - new_mean) ** 2) * (1 - weight)
                         + (var + (mean - new_mean) ** 2) * weight)
            total_mean = new_mean
        if total_mean is None:
            raise DataError(f"{self.describe()} got no batches to adapt to.")
        return {"batch_stats": {"mean": jnp.asarray(total_mean, jnp.float32),
                                "variance": jnp.asarray(total_var, jnp.float32), "count": jnp.zeros((), jnp.int32)}}
