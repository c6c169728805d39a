"""Shape-changing layers: Flatten, Reshape, ZeroPadding2D, Cropping2D, and Rescaling (preprocessing)."""
from __future__ import annotations

import math
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from fluxnet.errors import ArgumentError, DataError
from fluxnet.layers.base import Layer, check_data_format, config_constant, register


@register("Flatten")
class Flatten(Layer):
    """Flattens all but the batch axis in row-major (NHWC) order, as Keras."""

    def compute_output_shape(self, input_shape):
        rest = input_shape[1:]
        return (input_shape[0], None if None in rest else math.prod(rest))

    def call(self, variables, inputs, *, training=False, rng=None):
        return inputs.reshape(inputs.shape[0], -1)


@register("Reshape")
class Reshape(Layer):
    """Reshapes to ``target_shape`` (batch axis excluded; one entry may be -1)."""

    def __init__(self, target_shape: Sequence[int], name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        target_shape = tuple(target_shape)
        if sum(d == -1 for d in target_shape) > 1 or not all(isinstance(d, int) and (d > 0 or d == -1)
                                                              for d in target_shape):
            raise ArgumentError(f"target_shape must hold positive ints and at most one -1, got {target_shape!r}.")
        self.target_shape = target_shape

    def compute_output_shape(self, input_shape):
        size = math.prod(input_shape[1:]) if None not in input_shape[1:] else None
        known = math.prod(d for d in self.target_shape if d != -1)
        if size is None:
            return (input_shape[0], *(None if d == -1 else d for d in self.target_shape))
        if -1 in self.target_shape:
            if size % known:
                raise DataError(f"{size} values cannot be reshaped to {self.target_shape}.")
            return (input_shape[0], *(size // known if d == -1 else d for d in self.target_shape))
        if size != known:
            raise DataError(f"{size} values cannot be reshaped to {self.target_shape} ({known} values).")
        return (input_shape[0], *self.target_shape)

    def call(self, variables, inputs, *, training=False, rng=None):
        return inputs.reshape(inputs.shape[0], *self.target_shape)


def _pairs(value: Any, arg: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Keras' 2-D padding and cropping forms: an int, or (rows, cols) where each is an int (the same on
    both sides) or a (before, after) pair; all non-negative ints."""
    def pair(v: Any) -> tuple:
        return (v, v) if isinstance(v, int) else tuple(v) if isinstance(v, (list, tuple)) else ()

    rows_cols = (value, value) if isinstance(value, int) else value
    pairs = tuple(pair(v) for v in rows_cols) if isinstance(rows_cols, (list, tuple)) else ()
    if len(pairs) != 2 or not all(len(p) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                      for v in p) for p in pairs):
        raise ArgumentError(f"{arg} must be an int, (rows, cols) or ((top, bottom), (left, right)) of "
                            f"non-negative ints, got {value!r}.")
    return pairs


def _check_4d(layer: Layer, input_shape: tuple) -> None:
    if len(input_shape) != 4:
        raise DataError(f"{type(layer).__name__} needs a 4-D input (batch, height, width, channels).")


@register("ZeroPadding2D")
class ZeroPadding2D(Layer):
    """Pads rows and columns of an NHWC input with zeros."""

    def __init__(self, padding: Any = (1, 1), data_format: str | None = None, name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        check_data_format(data_format)
        self.padding = _pairs(padding, "padding")

    def compute_output_shape(self, input_shape):
        _check_4d(self, input_shape)
        (t, b), (l, r) = self.padding
        grow = lambda n, extra: None if n is None else n + extra  # noqa: E731
        return (input_shape[0], grow(input_shape[1], t + b), grow(input_shape[2], l + r), input_shape[3])

    def call(self, variables, inputs, *, training=False, rng=None):
        return jnp.pad(inputs, ((0, 0), *self.padding, (0, 0)))


@register("Cropping2D")
class Cropping2D(Layer):
    """Removes rows and columns at the edges of an NHWC input: ``cropping`` is an int, (rows, cols) or
    ((top, bottom), (left, right)), and must leave at least one row and one column (Keras)."""

    def __init__(self, cropping: Any = ((0, 0), (0, 0)), data_format: str | None = None, name: str | None = None,
                 **kwargs):
        super().__init__(name=name, **kwargs)
        check_data_format(data_format)
        self.cropping = _pairs(cropping, "cropping")

    def compute_output_shape(self, input_shape):
        _check_4d(self, input_shape)
        sizes = []
        for n, (before, after) in zip(input_shape[1:3], self.cropping):
            if n is not None and before + after >= n:
                raise DataError(f"cropping={self.cropping} must leave part of each spatial axis; it removes "
                                f"{before + after} of {n}.")
            sizes.append(None if n is None else n - before - after)
        return (input_shape[0], *sizes, input_shape[3])

    def call(self, variables, inputs, *, training=False, rng=None):
        (t, b), (l, r) = self.cropping
        return inputs[:, t:inputs.shape[1] - b, l:inputs.shape[2] - r, :]


@register("Rescaling")
class Rescaling(Layer):
    """``inputs * scale + offset`` in float32 (e.g. ``Rescaling(1/255)`` maps uint8 pixels to [0, 1]).

    ``scale`` and ``offset`` are numbers or arrays that broadcast against the input from its last axis, e.g.
    one value per channel: ``Rescaling([1 / 58.4, 1 / 57.1, 1 / 57.4], offset=[-2.1, -2.0, -1.8])``. The
    config records them as floats or nested lists.
    """

    def __init__(self, scale: Any, offset: Any = 0.0, name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.scale = config_constant(scale, "Rescaling scale")
        self.offset = config_constant(offset, "Rescaling offset")

    def get_config(self) -> dict:
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}

    def compute_output_shape(self, input_shape):
        for arg, value in (("scale", self.scale), ("offset", self.offset)):
            shape = np.shape(value)
            leading = shape[:max(len(shape) - len(input_shape) + 1, 0)]  # sizes facing the batch axis or beyond
            if any(n != 1 for n in leading) or len(leading) > 1 or any(
                    s not in (1, n) and n is not None for s, n in zip(reversed(shape), reversed(input_shape[1:]))):
                raise DataError(f"{arg} of shape {shape} does not broadcast against the input's axes after the "
                                "batch axis.")
        return input_shape

    def call(self, variables, inputs, *, training=False, rng=None):
        return inputs.astype(jnp.float32) * jnp.asarray(self.scale, jnp.float32) + jnp.asarray(self.offset,
                                                                                                jnp.float32)
