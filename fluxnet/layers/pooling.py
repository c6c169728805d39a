"""Pooling layers with Keras' window semantics (average pooling over real cells only)."""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fluxnet.errors import DataError
from fluxnet.layers.base import Layer, check_data_format, check_padding, conv_output_length, normalize_tuple, register
from fluxnet.layers.conv import window_padding


def _window_cells(x: jax.Array, pool_size: tuple, strides: tuple) -> list[jax.Array]:
    """Cell ``(i, j)`` of every window, for each cell of the window in row-major order: one strided
    slice of ``x`` (batch, height, width, channels) shaped like the pooled output."""
    out = [(n - k) // s + 1 for n, k, s in zip(x.shape[1:3], pool_size, strides)]
    return [jax.lax.slice(x, (0, i, j, 0), (x.shape[0], i + strides[0] * (out[0] - 1) + 1,
                                            j + strides[1] * (out[1] - 1) + 1, x.shape[3]), (1, *strides, 1))
            for i in range(pool_size[0]) for j in range(pool_size[1])]


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def window_max(x: jax.Array, pool_size: tuple, strides: tuple) -> jax.Array:
    """The max of each (unpadded) window, as ``lax.reduce_window`` computes it, written as an
    elementwise max of the windows' cells.

    Why not ``nn.max_pool``: XLA:CPU lowers reduce_window's gradient (select-and-scatter) to a
    scatter over index arrays; on the MNIST CNN (batch 128) the 28x28x32 pool's forward and backward
    took 60 ms that way and take 2-3 ms this way, and the whole step went from 184 to 107 ms. The
    derivative is the one JAX gives reduce_window: each window's tangent is its first maximal cell's
    (row-major order), so ties route the gradient as Keras does."""
    return functools.reduce(jnp.maximum, _window_cells(x, pool_size, strides))


@window_max.defjvp
def _window_max_jvp(pool_size: tuple, strides: tuple, primals: tuple, tangents: tuple) -> tuple:
    (x,), (t,) = primals, tangents
    cells = _window_cells(x, pool_size, strides)
    y = functools.reduce(jnp.maximum, cells)
    taken = jnp.zeros(y.shape, bool)
    y_dot = jnp.zeros(y.shape, t.dtype)
    for cell, cell_dot in zip(cells, _window_cells(t, pool_size, strides)):
        first = (cell == y) & ~taken
        taken = taken | first
        y_dot = jnp.where(first, cell_dot, y_dot)
    return y, y_dot


class _Pooling2D(Layer):
    """Shared argument handling and shape rules of 2-D window pooling."""

    def __init__(self, pool_size: Any = (2, 2), strides: Any = None, padding: str = "valid",
                 data_format: str | None = None, name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        check_data_format(data_format)
        self.pool_size = normalize_tuple(pool_size, 2, "pool_size")
        self.strides = self.pool_size if strides is None else normalize_tuple(strides, 2, "strides")
        self.padding = check_padding(padding)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 4:
            raise DataError(f"{type(self).__name__} needs a 4-D input (batch, height, width, channels).")
        spatial = [conv_output_length(n, k, s, self.padding)
                   for n, k, s in zip(input_shape[1:3], self.pool_size, self.strides)]
        if any(n == 0 for n in spatial):
            raise DataError(f"the input is smaller than pool_size={self.pool_size} with padding='valid'.")
        return (input_shape[0], *spatial, input_shape[3])

    def _pads(self, inputs):
        return window_padding(inputs.shape[1:3], self.pool_size, self.strides, self.padding)


@register("MaxPooling2D")
class MaxPooling2D(_Pooling2D):
    """Max over each window; padded cells never win (they are -inf)."""

    def call(self, variables, inputs, *, training=False, rng=None):
        padded = jnp.pad(inputs, ((0, 0), *self._pads(inputs), (0, 0)), constant_values=-jnp.inf)
        return window_max(padded, self.pool_size, self.strides)


@register("AveragePooling2D")
class AveragePooling2D(_Pooling2D):
    """Mean over each window; with "same" padding only the real cells are averaged (Keras)."""

    def call(self, variables, inputs, *, training=False, rng=None):
        return nn.avg_pool(inputs, self.pool_size, self.strides, self._pads(inputs), count_include_pad=False)


class _GlobalPooling2D(Layer):
    def __init__(self, data_format: str | None = None, keepdims: bool = False, name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        check_data_format(data_format)
        self.keepdims = keepdims

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 4:
            raise DataError(f"{type(self).__name__} needs a 4-D input (batch, height, width, channels).")
        return (input_shape[0], 1, 1, input_shape[3]) if self.keepdims else (input_shape[0], input_shape[3])


@register("GlobalAveragePooling2D")
class GlobalAveragePooling2D(_GlobalPooling2D):
    def call(self, variables, inputs, *, training=False, rng=None):
        return jnp.mean(inputs, axis=(1, 2), keepdims=self.keepdims)


@register("GlobalMaxPooling2D")
class GlobalMaxPooling2D(_GlobalPooling2D):
    def call(self, variables, inputs, *, training=False, rng=None):
        return jnp.max(inputs, axis=(1, 2), keepdims=self.keepdims)
