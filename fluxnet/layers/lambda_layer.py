"""``Lambda``: a pure JAX function of the inputs as a layer without variables (Keras' ``layers.Lambda``).

Keras saves a Lambda's Python bytecode in the model config. fluxnet never executes code read from a
file, so a Lambda records its function only by a registered activation name, and ``get_config`` of any
other Lambda raises an error that says so.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from fluxnet import activations
from fluxnet.errors import ArgumentError, ArgumentTypeError
from fluxnet.layers.base import Layer, Shape, register

# Two sizes for the unknown (None) axes of the stand-in inputs of shape inference: an output axis that
# differs between the two runs follows an unknown input axis, so it is unknown too (Keras' JAX backend
# infers shapes the same way).
_STAND_IN_SIZES = (83, 89)


@register("Lambda")
class Lambda(Layer):
    """``function(inputs)`` as a layer; ``inputs`` is one array, or a list for a call on a list of tensors.

    ``function`` is a callable or a registered activation name (``"relu"``). ``output_shape`` (batch
    axis excluded, or a callable from the full input shape to the full output shape) is inferred with
    ``jax.eval_shape`` when None.
    """

    def __init__(self, function: Callable | str, output_shape: Sequence[int | None] | Callable | None = None,
                 name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        if not (callable(function) or isinstance(function, str)):
            raise ArgumentTypeError(f"Lambda function must be a callable or an activation name, got {function!r}.")
        self.function = activations.get(function)
        if output_shape is not None and not callable(output_shape):
            output_shape = tuple(output_shape)
        self.output_shape_arg = output_shape

    def compute_output_shape(self, input_shape: Any) -> Shape:
        if callable(self.output_shape_arg):
            return tuple(self.output_shape_arg(input_shape))
        batch = (input_shape[0] if isinstance(input_shape, list) else input_shape)[0]
        if self.output_shape_arg is not None:
            return (batch, *self.output_shape_arg)
        first, second = (jax.eval_shape(self.function, _stand_in(input_shape, size, self.dtype))
                         for size in _STAND_IN_SIZES)
        if not isinstance(first, jax.ShapeDtypeStruct):
            raise ArgumentError(f"the function must return one array, got {jax.tree.structure(first)}.")
        return tuple(a if a == b else None for a, b in zip(first.shape, second.shape))

    def call(self, variables, inputs, *, training=False, rng=None):
        return self.function(inputs)

    def get_config(self) -> dict:
        """The config, with ``function`` as its registered activation name; an unregistered function or a
        callable ``output_shape`` cannot be recorded without code, so they raise ArgumentError."""
        why = None
        if activations.ACTIVATIONS.name_of(self.function) is None:
            why = f"its function {self.function!r} is not a registered activation"
        elif callable(self.output_shape_arg):
            why = f"its output_shape {self.output_shape_arg!r} is a function"
        if why:
            raise ArgumentError(
                f"Cannot record {self.describe()} in a model config: {why}. Keras saves such code as Python "
                "bytecode; fluxnet refuses to, so that loading a model never runs code from a file. Register "
                "the function with fluxnet.activations.register(name, fn) and pass the name (and give "
                "output_shape as a tuple), or write a Layer subclass registered with "
                "@fluxnet.layers.register(name).")
        return super().get_config()


def _stand_in(input_shape: Any, size: int, dtype: str) -> Any:
    """Abstract arrays of ``input_shape`` (one shape or a list) with ``size`` for unknown axes."""
    if isinstance(input_shape, list):
        return [_stand_in(s, size, dtype) for s in input_shape]
    return jax.ShapeDtypeStruct(tuple(size if d is None else d for d in input_shape), jnp.dtype(dtype))
