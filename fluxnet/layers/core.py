"""Core layers: Input, Dense, Activation, ReLU, Dropout (Lambda has its own module)."""
from __future__ import annotations

import numbers
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fluxnet import activations, initializers
from fluxnet.errors import ArgumentError, DataError
from fluxnet.layers.base import Layer, Node, SymbolicTensor, register


@register("InputLayer")
class InputLayer(Layer):
    """The source of a model's graph; ``Input(shape)`` returns its symbolic tensor."""

    def __init__(self, shape: Sequence[int | None], dtype: str = "float32", name: str | None = None,
                 **kwargs):
        super().__init__(name=name, **kwargs)  # ``dtype`` is the data's here, not a dtype policy
        self.input_dtype = dtype
        shape = tuple(shape) if isinstance(shape, (list, tuple)) else (shape,)
        if not all(d is None or (isinstance(d, int) and d > 0) for d in shape):
            raise ArgumentError(f"Input shape must hold positive ints or None (batch axis excluded), got {shape!r}.")
        self.shape = shape
        node = Node(self, None, 0)
        node.output = SymbolicTensor((None, *shape), dtype, node)
        self._nodes.append(node)
        self.built_input_shape = node.output.shape

    def call(self, variables, inputs, *, training=False, rng=None):
        return inputs


def Input(shape: Sequence[int | None], dtype: str = "float32", name: str | None = None) -> SymbolicTensor:
    """A symbolic model input; ``shape`` excludes the batch axis (Keras' ``keras.Input``)."""
    return InputLayer(shape, dtype=dtype, name=name).output


@register("Dense")
class Dense(Layer):
    """``activation(inputs @ kernel + bias)`` on the last axis; ``(inputs + 1) * units`` parameters."""

    def __init__(self, units: int, activation: Any = None, use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        if not isinstance(units, int) or units <= 0:
            raise ArgumentError(f"Dense units must be a positive int, got {units!r}.")
        self.units = units
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.module = nn.Dense(units, use_bias=use_bias, kernel_init=initializers.get(kernel_initializer),
                               bias_init=initializers.get(bias_initializer))

    def compute_output_shape(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise DataError("Dense needs an input whose last axis has a known size.")
        return (*input_shape[:-1], self.units)

    def init(self, rng, input_shape):
        return dict(self.module.init(rng, jnp.zeros((1, input_shape[-1]), self.dtype)))

    def call(self, variables, inputs, *, training=False, rng=None):
        return self.activation(self.module.apply(variables, inputs))


@register("Activation")
class Activation(Layer):
    """Applies an activation by Keras name or a callable."""

    def __init__(self, activation: Any, name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.activation = activations.get(activation)

    def call(self, variables, inputs, *, training=False, rng=None):
        return self.activation(inputs)


def _non_negative(value: Any, arg: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
        raise ArgumentError(f"ReLU {arg} must be a number >= 0, got {value!r}.")
    return value


@register("ReLU")
class ReLU(Layer):
    """Keras' ReLU layer: ``x`` from ``threshold`` up to ``max_value`` (None: no cap),
    ``negative_slope * (x - threshold)`` below ``threshold``; Keras' operations in Keras' order."""

    def __init__(self, max_value: float | None = None, negative_slope: float = 0.0, threshold: float = 0.0,
                 name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.max_value = None if max_value is None else _non_negative(max_value, "max_value")
        self.negative_slope = _non_negative(negative_slope, "negative_slope")
        self.threshold = _non_negative(threshold, "threshold")

    def call(self, variables, inputs, *, training=False, rng=None):
        slope, max_value, threshold = self.negative_slope, self.max_value, self.threshold
        if slope != 0:  # keras.src.activations.activations.ReLU.static_call
            if max_value is None and threshold == 0:
                return jax.nn.leaky_relu(inputs, slope)
            negative_part = jax.nn.relu(-inputs + threshold) if threshold != 0 else jax.nn.relu(-inputs)
        clip = max_value is not None
        if threshold != 0:
            x = jnp.where(inputs > jnp.asarray(threshold, inputs.dtype), inputs, 0)
        elif max_value == 6:
            x, clip = jax.nn.relu6(inputs), False
        else:
            x = jax.nn.relu(inputs)
        if clip:
            x = jnp.clip(x, jnp.asarray(0, x.dtype), jnp.asarray(max_value, x.dtype))
        return x - slope * negative_part if slope != 0 else x


@register("Dropout")
class Dropout(Layer):
    """Inverted dropout: in training, zero each value with probability ``rate`` and scale the kept
    ones by ``1 / (1 - rate)``; identity in inference. ``noise_shape`` broadcasts the mask as Keras.

    The mask's key comes from the ``rng`` given to ``model.apply`` folded with the layer's name (and
    ``seed``, when given). With ``seed`` and no ``rng`` the layer draws from ``seed`` alone.
    """

    def __init__(self, rate: float, noise_shape: Sequence[int | None] | None = None, seed: int | None = None,
                 name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        if not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ArgumentError(f"Dropout rate must be a number in [0, 1), got {rate!r}.")
        self.rate = float(rate)
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)
        self.seed = seed

    def compute_output_shape(self, input_shape):
        if self.noise_shape is not None and len(self.noise_shape) != len(input_shape):
            raise ArgumentError(f"noise_shape={self.noise_shape} must have one entry per input axis "
                                f"({len(input_shape)}).")
        return input_shape

    def call(self, variables, inputs, *, training=False, rng=None):
        if not training or self.rate == 0:
            return inputs
        if rng is None:
            if self.seed is None:
                raise ArgumentError(f"{self.describe()} needs a random key in training: call "
                                    "model.apply(variables, x, training=True, rng=key).")
            rng = jax.random.key(self.seed)
        elif self.seed is not None:
            rng = jax.random.fold_in(rng, self.seed)
        shape = inputs.shape if self.noise_shape is None else tuple(
            d if n is None else n for d, n in zip(inputs.shape, self.noise_shape))
        keep = jax.random.bernoulli(rng, 1.0 - self.rate, shape)
        return jnp.where(keep, inputs / (1.0 - self.rate), jnp.zeros_like(inputs))
