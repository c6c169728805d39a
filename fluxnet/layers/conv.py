"""Convolution layers (NHWC inputs, kernels ``(kh, kw, in, out)`` as Keras): Conv2D, DepthwiseConv2D and
SeparableConv2D share their arguments, shape rules and TensorFlow-style "same" padding."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fluxnet import activations, initializers
from fluxnet.errors import ArgumentError, DataError
from fluxnet.layers.base import (Layer, check_data_format, check_padding, conv_output_length, normalize_tuple,
                                 positive_int, register, same_padding)

_NHWC = ("NHWC", "HWIO", "NHWC")  # jax.lax dimension numbers of Keras' channels_last kernels


def window_padding(spatial: tuple, kernel: tuple, strides: tuple, padding: str, dilation: tuple = (1, 1)):
    """Explicit ``(before, after)`` pads per spatial axis for "valid" or TensorFlow-style "same"."""
    if padding == "valid":
        return [(0, 0)] * len(spatial)
    return [same_padding(n, k, s, d) for n, k, s, d in zip(spatial, kernel, strides, dilation)]


def depthwise_conv(inputs: jax.Array, kernel: jax.Array, strides: tuple, padding: list,
                   dilation: tuple) -> jax.Array:
    """Keras' ``ops.depthwise_conv``: the ``(kh, kw, in, multiplier)`` kernel as ``(kh, kw, 1, in *
    multiplier)``, one group per input channel (output channel ``c * multiplier + m``)."""
    channels = inputs.shape[-1]
    kernel = kernel.reshape(*kernel.shape[:2], 1, channels * kernel.shape[-1])
    return jax.lax.conv_general_dilated(inputs, kernel, strides, padding, rhs_dilation=dilation,
                                        dimension_numbers=_NHWC, feature_group_count=channels)


class _Conv2DBase(Layer):
    """The arguments and shape rules the 2-D convolutions share; subclasses give ``output_channels``."""

    def __init__(self, kernel_size: Any, strides: Any, padding: str, data_format: str | None, dilation_rate: Any,
                 activation: Any, use_bias: bool, name: str | None, **kwargs):
        super().__init__(name=name, **kwargs)
        check_data_format(data_format)
        self.kernel_size = normalize_tuple(kernel_size, 2, "kernel_size")
        self.strides = normalize_tuple(strides, 2, "strides")
        self.dilation_rate = normalize_tuple(dilation_rate, 2, "dilation_rate")
        self.padding = check_padding(padding)
        self.activation = activations.get(activation)
        self.use_bias = use_bias

    def output_channels(self, channels: int) -> int:
        """The output's channels for ``channels`` input channels (DataError when they do not fit)."""
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 4:
            raise DataError(f"{type(self).__name__} needs a 4-D input (batch, height, width, channels).")
        if input_shape[-1] is None:
            raise DataError("the channel axis must have a known size.")
        channels = self.output_channels(input_shape[-1])
        spatial = [conv_output_length(n, k, s, self.padding, d)
                   for n, k, s, d in zip(input_shape[1:3], self.kernel_size, self.strides, self.dilation_rate)]
        if any(n == 0 for n in spatial):
            raise DataError(f"the input is smaller than the dilated kernel {self.kernel_size} with "
                            f"padding='valid'; use padding='same' or a smaller kernel.")
        return (input_shape[0], *spatial, channels)

    def _pads(self, spatial: tuple) -> list:
        return window_padding(spatial, self.kernel_size, self.strides, self.padding, self.dilation_rate)

    def _finish(self, params: dict, outputs: jax.Array) -> jax.Array:
        return self.activation(outputs + params["bias"] if self.use_bias else outputs)


@register("Conv2D")
class Conv2D(_Conv2DBase):
    """2-D convolution with Keras' arguments; "same" pads like TensorFlow (extra cell after)."""

    def __init__(self, filters: int, kernel_size: Any, strides: Any = (1, 1), padding: str = "valid",
                 data_format: str | None = None, dilation_rate: Any = (1, 1), groups: int = 1,
                 activation: Any = None, use_bias: bool = True, kernel_initializer: Any = "glorot_uniform",
                 bias_initializer: Any = "zeros", name: str | None = None, **kwargs):
        super().__init__(kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias, name,
                         **kwargs)
        self.filters = positive_int(filters, "Conv2D filters")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ArgumentError(f"strides > 1 cannot be combined with dilation_rate > 1 (Keras), got "
                                f"strides={self.strides}, dilation_rate={self.dilation_rate}.")
        if not isinstance(groups, int) or groups < 1 or filters % groups:
            raise ArgumentError(f"groups must be a positive int dividing filters={filters}, got {groups!r}.")
        self.groups = groups
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

    def output_channels(self, channels):
        if channels % self.groups:
            raise DataError(f"the channel axis ({channels}) must be divisible by groups={self.groups}.")
        return self.filters

    def _module(self, spatial: tuple) -> nn.Conv:
        return nn.Conv(self.filters, self.kernel_size, strides=self.strides, padding=self._pads(spatial),
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


@register("DepthwiseConv2D")
class DepthwiseConv2D(_Conv2DBase):
    """Each input channel convolved with its own ``depth_multiplier`` kernels (no mixing of channels);
    variables ``kernel`` ``(kh, kw, in, depth_multiplier)`` and ``bias`` ``(in * depth_multiplier,)``,
    Keras 3's names. Unlike Conv2D, strides and dilation may both exceed 1 (as Keras on JAX)."""

    def __init__(self, kernel_size: Any, strides: Any = (1, 1), padding: str = "valid", depth_multiplier: int = 1,
                 data_format: str | None = None, dilation_rate: Any = (1, 1), activation: Any = None,
                 use_bias: bool = True, depthwise_initializer: Any = "glorot_uniform",
                 bias_initializer: Any = "zeros", name: str | None = None, **kwargs):
        super().__init__(kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias, name,
                         **kwargs)
        self.depth_multiplier = positive_int(depth_multiplier, "depth_multiplier")
        self.depthwise_initializer = initializers.get(depthwise_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

    def output_channels(self, channels):
        return channels * self.depth_multiplier

    def init(self, rng, input_shape):
        kernel_key, bias_key = jax.random.split(rng)
        channels = input_shape[-1]
        params = {"kernel": self.depthwise_initializer(kernel_key, (*self.kernel_size, channels,
                                                                    self.depth_multiplier), jnp.float32)}
        if self.use_bias:
            params["bias"] = self.bias_initializer(bias_key, (self.output_channels(channels),), jnp.float32)
        return {"params": params}

    def call(self, variables, inputs, *, training=False, rng=None):
        params = variables["params"]
        out = depthwise_conv(inputs, params["kernel"], self.strides, self._pads(inputs.shape[1:3]),
                             self.dilation_rate)
        return self._finish(params, out)


@register("SeparableConv2D")
class SeparableConv2D(_Conv2DBase):
    """A depthwise convolution (``depthwise_kernel`` ``(kh, kw, in, depth_multiplier)``) then a 1x1
    convolution to ``filters`` channels (``pointwise_kernel`` ``(1, 1, in * depth_multiplier, filters)``),
    then ``bias`` ``(filters,)``: Keras' ``ops.separable_conv``."""

    def __init__(self, filters: int, kernel_size: Any, strides: Any = (1, 1), padding: str = "valid",
                 data_format: str | None = None, dilation_rate: Any = (1, 1), depth_multiplier: int = 1,
                 activation: Any = None, use_bias: bool = True, depthwise_initializer: Any = "glorot_uniform",
                 pointwise_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 name: str | None = None, **kwargs):
        super().__init__(kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias, name,
                         **kwargs)
        self.filters = positive_int(filters, "SeparableConv2D filters")
        self.depth_multiplier = positive_int(depth_multiplier, "depth_multiplier")
        self.depthwise_initializer = initializers.get(depthwise_initializer)
        self.pointwise_initializer = initializers.get(pointwise_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

    def output_channels(self, channels):
        return self.filters

    def init(self, rng, input_shape):
        depthwise_key, pointwise_key, bias_key = jax.random.split(rng, 3)
        channels = input_shape[-1]
        params = {
            "depthwise_kernel": self.depthwise_initializer(
                depthwise_key, (*self.kernel_size, channels, self.depth_multiplier), jnp.float32),
            "pointwise_kernel": self.pointwise_initializer(
                pointwise_key, (1, 1, channels * self.depth_multiplier, self.filters), jnp.float32)}
        if self.use_bias:
            params["bias"] = self.bias_initializer(bias_key, (self.filters,), jnp.float32)
        return {"params": params}

    def call(self, variables, inputs, *, training=False, rng=None):
        params = variables["params"]
        out = depthwise_conv(inputs, params["depthwise_kernel"], self.strides, self._pads(inputs.shape[1:3]),
                             self.dilation_rate)
        out = jax.lax.conv_general_dilated(out, params["pointwise_kernel"], (1, 1), "VALID",
                                           dimension_numbers=_NHWC)
        return self._finish(params, out)
