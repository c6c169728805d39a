"""Merge layers: element-wise combinations of several inputs, and Concatenate."""
from __future__ import annotations

from functools import reduce

import jax.numpy as jnp

from fluxnet.errors import DataError
from fluxnet.layers.base import Layer, register


class _Merge(Layer):
    """Element-wise merge of two or more inputs of one shape (Keras broadcasts size-1 axes too)."""

    def compute_output_shape(self, input_shape):
        if not isinstance(input_shape, list) or len(input_shape) < 2:
            raise DataError(f"{type(self).__name__} needs a list of at least 2 inputs.")
        out = []
        for dims in zip(*(s[1:] for s in input_shape)):
            known = {d for d in dims if d not in (None, 1)}
            if len(known) > 1 or len({len(s) for s in input_shape}) > 1:
                raise DataError("the inputs' shapes must be equal (or broadcastable over size-1 axes).")
            out.append(known.pop() if known else (None if None in dims else 1))
        return (None, *out)

    combine = staticmethod(jnp.add)  # the binary operation folded over the inputs

    def call(self, variables, inputs, *, training=False, rng=None):
        return reduce(self.combine, inputs)


@register("Add")
class Add(_Merge):
    pass


@register("Subtract")
class Subtract(_Merge):
    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, list) and len(input_shape) != 2:
            raise DataError("Subtract needs exactly 2 inputs.")
        return super().compute_output_shape(input_shape)

    combine = staticmethod(jnp.subtract)


@register("Multiply")
class Multiply(_Merge):
    combine = staticmethod(jnp.multiply)


@register("Maximum")
class Maximum(_Merge):
    combine = staticmethod(jnp.maximum)


@register("Minimum")
class Minimum(_Merge):
    combine = staticmethod(jnp.minimum)


@register("Average")
class Average(_Merge):
    def call(self, variables, inputs, *, training=False, rng=None):
        return super().call(variables, inputs) / len(inputs)


@register("Concatenate")
class Concatenate(Layer):
    """Joins inputs along ``axis``; the other axes must match."""

    def __init__(self, axis: int = -1, name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.axis = axis

    def compute_output_shape(self, input_shape):
        if not isinstance(input_shape, list) or len(input_shape) < 2:
            raise DataError("Concatenate needs a list of at least 2 inputs.")
        rank = len(input_shape[0])
        if any(len(s) != rank for s in input_shape) or not -rank <= self.axis < rank:
            raise DataError(f"all inputs must have the same rank with axis={self.axis} inside it.")
        axis = self.axis % rank
        if axis == 0:
            raise DataError("cannot concatenate along the batch axis.")
        out = list(input_shape[0])
        for i in range(1, rank):
            dims = [s[i] for s in input_shape]
            if i == axis:
                out[i] = None if None in dims else sum(dims)
            elif len({d for d in dims if d is not None}) > 1:
                raise DataError(f"all axes except the concatenation axis {self.axis} must match.")
        return tuple(out)

    def call(self, variables, inputs, *, training=False, rng=None):
        return jnp.concatenate(inputs, axis=self.axis)
