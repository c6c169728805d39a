"""Shape-changing layers: Flatten, Reshape, ZeroPadding2D, and Rescaling (preprocessing)."""
from __future__ import annotations

import math
from typing import Any, Sequence

import jax.numpy as jnp

from fluxnet.errors import ArgumentError, DataError
from fluxnet.layers.base import Layer, register


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


def _pad_pairs(padding: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """Keras' ZeroPadding2D padding forms: int, (rows, cols), or ((top, bottom), (left, right))."""
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    elif len(padding) == 2 and all(isinstance(p, int) for p in padding):
        padding = ((padding[0], padding[0]), (padding[1], padding[1]))
    pairs = tuple(tuple(p) for p in padding)
    if len(pairs) != 2 or not all(len(p) == 2 and all(isinstance(v, int) and v >= 0 for v in p) for p in pairs):
        raise ArgumentError(f"padding must be an int, (rows, cols) or ((top, bottom), (left, right)) of "
                            f"non-negative ints, got {padding!r}.")
    return pairs


@register("ZeroPadding2D")
class ZeroPadding2D(Layer):
    """Pads rows and columns of an NHWC input with zeros."""

    def __init__(self, padding: Any = (1, 1), data_format: str | None = None, name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        if data_format not in (None, "channels_last"):
            raise ArgumentError(f"Only data_format='channels_last' (NHWC) is supported, got {data_format!r}.")
        self.padding = _pad_pairs(padding)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 4:
            raise DataError("ZeroPadding2D needs a 4-D input (batch, height, width, channels).")
        (t, b), (l, r) = self.padding
        grow = lambda n, extra: None if n is None else n + extra  # noqa: E731
        return (input_shape[0], grow(input_shape[1], t + b), grow(input_shape[2], l + r), input_shape[3])

    def call(self, variables, inputs, *, training=False, rng=None):
        return jnp.pad(inputs, ((0, 0), *self.padding, (0, 0)))


@register("Rescaling")
class Rescaling(Layer):
    """``inputs * scale + offset`` (e.g. ``Rescaling(1/255)`` maps uint8 pixels to [0, 1])."""

    def __init__(self, scale: float, offset: float = 0.0, name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.scale, self.offset = scale, offset

    def call(self, variables, inputs, *, training=False, rng=None):
        return inputs.astype(jnp.float32) * jnp.asarray(self.scale, jnp.float32) + jnp.asarray(self.offset,
                                                                                                jnp.float32)
