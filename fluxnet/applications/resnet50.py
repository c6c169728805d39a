"""ResNet50 (He et al., 2015) as Keras 3 builds it: same layers, names, order and numerics.

Layer for layer this is ``keras/src/applications/resnet.py`` (ResNet v1, biases in every convolution,
BatchNormalization epsilon 1.001e-5), so a Keras 3 ResNet50 weights file loads into it with
``fx.load_keras_weights``. fluxnet has no network access and models hold no arrays: pretrained weights
come from a file, see :func:`ResNet50`.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import jax
import numpy as np

from fluxnet import layers
from fluxnet.applications import common
from fluxnet.layers.base import SymbolicTensor
from fluxnet.models.functional import Model

MIN_SIZE, DEFAULT_SIZE = 32, 224
# (stage name, bottleneck filters, blocks, stride of the first block)
_STAGES = (("conv2", 64, 3, 1), ("conv3", 128, 4, 2), ("conv4", 256, 6, 2), ("conv5", 512, 3, 2))


def _conv_bn(x: SymbolicTensor, filters: int, kernel_size: int, name: str, strides: int = 1,
             padding: str = "valid") -> SymbolicTensor:
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, name=f"{name}_conv")(x)
    return layers.BatchNormalization(axis=3, epsilon=common.BN_EPSILON, name=f"{name}_bn")(x)


def _residual_block(x: SymbolicTensor, filters: int, stride: int, conv_shortcut: bool,
                    name: str) -> SymbolicTensor:
    """Keras' ``residual_block_v1``: 1x1 -> 3x3 -> 1x1 (4x filters) bottleneck plus shortcut."""
    shortcut = _conv_bn(x, 4 * filters, 1, f"{name}_0", strides=stride) if conv_shortcut else x
    x = _conv_bn(x, filters, 1, f"{name}_1", strides=stride)
    x = layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = _conv_bn(x, filters, 3, f"{name}_2", padding="same")
    x = layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = _conv_bn(x, 4 * filters, 1, f"{name}_3")
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def ResNet50(include_top: bool = True, weights: str | os.PathLike | None = None,
             input_tensor: SymbolicTensor | None = None, input_shape: Sequence[int | None] | None = None,
             pooling: str | None = None, classes: int = 1000, classifier_activation: str | Callable | None = "softmax",
             name: str = "resnet50") -> Model:
    """Keras 3's ResNet50 as a fluxnet model (arguments, defaults, layer names and order as Keras).

    Arguments as in Keras (``fluxnet.applications.common.ARGUMENTS`` describes them); ``include_top`` ends with
    ``avg_pool`` and the ``predictions`` Dense layer. Input sides are at least 32; the default shape is ``(224,
    224, 3)`` with the top, ``(None, None, 3)`` without.
    """
    common.check_arguments("ResNet50", include_top=include_top, weights=weights, pooling=pooling,
                           classifier_activation=classifier_activation)
    img_input = common.image_input(input_tensor, input_shape, include_top=include_top,
                                   default_size=DEFAULT_SIZE, min_size=MIN_SIZE)

    x = layers.ZeroPadding2D(padding=((3, 3), (3, 3)), name="conv1_pad")(img_input)
    x = _conv_bn(x, 64, 7, "conv1", strides=2)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, filters, blocks, stride in _STAGES:
        for block in range(1, blocks + 1):
            x = _residual_block(x, filters, stride if block == 1 else 1, conv_shortcut=block == 1,
                                name=f"{stage}_block{block}")
    x = common.global_pooling(x, "avg" if include_top else pooling)
    if include_top:
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    return common.application_model(img_input, x, name, weights)


def preprocess_input(x: Any, data_format: str | None = None) -> np.ndarray | jax.Array:
    """Keras' ResNet50 preprocessing, mode "caffe": RGB -> BGR, then subtract the ImageNet BGR means; no
    scaling (see :func:`fluxnet.applications.common.preprocess_input`)."""
    return common.preprocess_input(x, data_format=data_format, mode="caffe")
