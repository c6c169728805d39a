"""Convolution layers (NHWC inputs, kernels ``(kh, kw, in, out)`` as Keras)."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fluxnet import activations, initializers
from fluxnet.errors import ArgumentError, DataError
from fluxnet.layers.base import (Layer, check_padding, conv_output_length, normalize_tuple, register,
                                 same_padding)


def window_padding(spatial: tuple, kernel: tuple, strides: tuple, padding: str, dilation: tuple = (1, 1)):
    """Explicit ``(before, after)`` pads per spatial axis for "valid" or TensorFlow-style "same"."""
    if padding == "valid":
        return [(0, 0)] * len(spatial)
    return [same_padding(n, k, s, d) for n, k, s, d in zip(spatial, kernel, strides, dilation)]


@register("Conv2D")
class Conv2D(Layer):
    """2-D convolution with Keras' arguments; "same" pads like TensorFlow (extra cell after)."""

    def __init__(self, filters: int, kernel_size: Any, strides: Any = (1, 1), padding: str = "valid",
                 data_format: str | None = None, dilation_rate: Any = (1, 1), groups: int = 1,
                 activation: Any = None, use_bias: bool = True, kernel_initializer: Any = "glorot_uniform",
                 bias_initializer: Any = "zeros", name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        if not isinstance(filters, int) or filters <= 0:
            raise ArgumentError(f"Conv2D filters must be a positive int, got {filters!r}.")
        if data_format not in (None, "channels_last"):
            raise ArgumentError(f"Only data_format='channels_last' (NHWC) is supported, got {data_format!r}.")
        self.filters = filters
        self.kernel_size = normalize_tuple(kernel_size, 2, "kernel_size")
        self.strides = normalize_tuple(strides, 2, "strides")
        self.dilation_rate = normalize_tuple(dilation_rate, 2, "dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ArgumentError(f"strides > 1 cannot be combined with dilation_rate > 1 (Keras), got "
                                f"strides={self.strides}, dilation_rate={self.dilation_rate}.")
        self.padding = check_padding(padding)
        if not isinstance(groups, int) or groups < 1 or filters % groups:
            raise ArgumentError(f"groups must be a positive int dividing filters={filters}, got {groups!r}.")
        self.groups = groups
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 4:
            raise DataError("Conv2D needs a 4-D input (batch, height, width, channels).")
        if input_shape[-1] is None or input_shape[-1] % self.groups:
            raise DataError(f"the channel axis must be known and divisible by groups={self.groups}.")
        spatial = [conv_output_length(n, k, s, self.padding, d)
                   for n, k, s, d in zip(input_shape[1:3], self.kernel_size, self.strides, self.dilation_rate)]
        if any(n == 0 for n in spatial):
            raise DataError(f"the input is smaller than the dilated kernel {self.kernel_size} with "
                            f"padding='valid'; use padding='same' or a smaller kernel.")
        return (input_shape[0], *spatial, self.filters)

    def _module(self, spatial: tuple) -> nn.Conv:
        return nn.Conv(self.filters, self.kernel_size, strides=self.strides,
                       padding=window_padding(spatial, self.kernel_size, self.strides, self.padding,
                                              self.dilation_rate),
                       kernel_dilation=self.dilation_rate, feature_group_count=self.groups,
                       use_bias=self.use_bias, kernel_init=self.kernel_initializer,
                       bias_init=self.bias_initializer)

    def init(self, rng, input_shape):
        # The variables do not depend on the spatial size, which may be unknown (None): initialise on
        # one window of the dilated kernel.
        spatial = tuple((k - 1) * d + 1 for k, d in zip(self.kernel_size, self.dilation_rate))
        return dict(self._module(spatial).init(rng, jnp.zeros((1, *spatial, input_shape[-1]), self.dtype)))

    def call(self, variables, inputs, *, training=False, rng=None):
        return self.activation(self._module(inputs.shape[1:3]).apply(variables, inputs))
