"""The two custom layers of Keras' ConvNeXt (``keras/src/applications/convnext.py``), under Keras' class
names so configs and weights files match: LayerScale (a learned per-channel factor) and StochasticDepth
(a residual branch dropped for whole examples in training)."""
from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

from fluxnet.errors import ArgumentError, DataError
from fluxnet.layers.base import Layer, positive_int, register
from fluxnet.layers.variable_order import VARIABLE_ORDERS


@register("LayerScale")
class LayerScale(Layer):
    """``inputs * gamma``: one trained factor per channel of the last axis (``projection_dim`` of them),
    initialised to ``init_values`` (Touvron et al., 2021). Variable (params): ``gamma``."""

    def __init__(self, init_values: float, projection_dim: int, name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        if isinstance(init_values, bool) or not isinstance(init_values, numbers.Real):
            raise ArgumentError(f"LayerScale init_values must be a number, got {init_values!r}.")
        self.init_values = float(init_values)
        self.projection_dim = positive_int(projection_dim, "LayerScale projection_dim")

    def compute_output_shape(self, input_shape):
        if input_shape[-1] != self.projection_dim:
            raise DataError(f"the last axis must have projection_dim={self.projection_dim} channels.")
        return input_shape

    def init(self, rng, input_shape):
        return {"params": {"gamma": jnp.full((self.projection_dim,), self.init_values, jnp.float32)}}

    def call(self, variables, inputs, *, training=False, rng=None):
        return inputs * variables["params"]["gamma"]


@register("StochasticDepth")
class StochasticDepth(Layer):
    """In training, each example's input is zeroed with probability ``drop_path_rate`` and otherwise
    scaled by ``1 / (1 - drop_path_rate)`` (Keras' ``floor(keep_prob + uniform)`` mask, one value per
    example); identity in inference. The mask's key is the ``rng`` given to ``model.apply``, folded with
    the layer's name."""

    def __init__(self, drop_path_rate: float, name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        if isinstance(drop_path_rate, bool) or not isinstance(drop_path_rate, numbers.Real) \
                or not 0 <= drop_path_rate < 1:
            raise ArgumentError(f"StochasticDepth drop_path_rate must be a number in [0, 1), got {drop_path_rate!r}.")
        self.drop_path_rate = float(drop_path_rate)

    def call(self, variables, inputs, *, training=False, rng=None):
        if not training or self.drop_path_rate == 0:
            return inputs
        if rng is None:
            raise ArgumentError(f"{self.describe()} needs a random key in training: call "
                                "model.apply(variables, x, training=True, rng=key).")
        keep_prob = 1.0 - self.drop_path_rate
        shape = (inputs.shape[0],) + (1,) * (inputs.ndim - 1)
        mask = jnp.floor(keep_prob + jax.random.uniform(rng, shape, inputs.dtype))
        return inputs / keep_prob * mask


VARIABLE_ORDERS.register("LayerScale", ("gamma",))
