"""Xception (Chollet, 2017) as Keras 3 builds it: same layers, names, order and numerics.

Layer for layer this is ``keras/src/applications/xception.py``: two 3x3 convolutions, an entry flow of
three blocks of separable convolutions that halve the size (each with a strided 1x1 convolution on its
shortcut, layers Keras leaves unnamed), a middle flow of eight residual blocks of three separable
convolutions at 728 channels, an exit flow to 2048 channels. A Keras 3 Xception weights file loads into
it with ``fx.load_keras_weights``. Inputs are at least 71x71 (default 299x299).
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

MIN_SIZE, DEFAULT_SIZE = 71, 299
MIDDLE_BLOCKS, MIDDLE_FILTERS = 8, 728


def _relu(x: SymbolicTensor, name: str) -> SymbolicTensor:
    return layers.Activation("relu", name=name)(x)


def _sepconv_bn(x: SymbolicTensor, filters: int, name: str) -> SymbolicTensor:
    x = layers.SeparableConv2D(filters, (3, 3), padding="same", use_bias=False, name=name)(x)
    return layers.BatchNormalization(axis=-1, name=f"{name}_bn")(x)


def _downsampling_block(x: SymbolicTensor, block: int, filters: tuple[int, int],
                        activate_first: bool = True) -> SymbolicTensor:
    """Two separable convolutions (``filters``) and 3x3 max pooling by 2, plus a strided 1x1 convolution
    of ``x``; block 2 starts on the activated stem, the others with ReLU."""
    residual = layers.Conv2D(filters[1], (1, 1), strides=(2, 2), padding="same", use_bias=False)(x)
    residual = layers.BatchNormalization(axis=-1)(residual)
    if activate_first:
        x = _relu(x, f"block{block}_sepconv1_act")
    x = _sepconv_bn(x, filters[0], f"block{block}_sepconv1")
    x = _relu(x, f"block{block}_sepconv2_act")
    x = _sepconv_bn(x, filters[1], f"block{block}_sepconv2")
    x = layers.MaxPooling2D((3, 3), strides=(2, 2), padding="same", name=f"block{block}_pool")(x)
    return layers.Add()([x, residual])


def _middle_block(x: SymbolicTensor, block: int) -> SymbolicTensor:
    """Three ReLU-separable convolution-BN steps at 728 channels, plus ``x``."""
    residual = x
    for conv in (1, 2, 3):
        x = _relu(x, f"block{block}_sepconv{conv}_act")
        x = _sepconv_bn(x, MIDDLE_FILTERS, f"block{block}_sepconv{conv}")
    return layers.Add()([x, residual])


def Xception(include_top: bool = True, weights: str | os.PathLike | None = None,
             input_tensor: SymbolicTensor | None = None, input_shape: Sequence[int | None] | None = None,
             pooling: str | None = None, classes: int = 1000, classifier_activation: str | Callable | None = "softmax",
             name: str = "xception") -> Model:
    """Keras 3's Xception as a fluxnet model (arguments, defaults, layer names and order as Keras).

    Arguments as in Keras (``fluxnet.applications.common.ARGUMENTS`` describes them); ``include_top`` ends with
    ``avg_pool`` and the ``predictions`` Dense layer. Input sides are at least 71; the default shape is ``(299,
    299, 3)`` with the top, ``(None, None, 3)`` without.
    """
    common.check_arguments("Xception", include_top=include_top, weights=weights, pooling=pooling,
                           classifier_activation=classifier_activation)
    img_input = common.image_input(input_tensor, input_shape, include_top=include_top,
                                   default_size=DEFAULT_SIZE, min_size=MIN_SIZE)

    x = layers.Conv2D(32, (3, 3), strides=(2, 2), use_bias=False, name="block1_conv1")(img_input)
    x = layers.BatchNormalization(axis=-1, name="block1_conv1_bn")(x)
    x = _relu(x, "block1_conv1_act")
    x = layers.Conv2D(64, (3, 3), use_bias=False, name="block1_conv2")(x)
    x = layers.BatchNormalization(axis=-1, name="block1_conv2_bn")(x)
    x = _relu(x, "block1_conv2_act")
    x = _downsampling_block(x, 2, (128, 128), activate_first=False)
    x = _downsampling_block(x, 3, (256, 256))
    x = _downsampling_block(x, 4, (MIDDLE_FILTERS, MIDDLE_FILTERS))
    for block in range(5, 5 + MIDDLE_BLOCKS):
        x = _middle_block(x, block)
    x = _downsampling_block(x, 13, (MIDDLE_FILTERS, 1024))
    x = _sepconv_bn(x, 1536, "block14_sepconv1")
    x = _relu(x, "block14_sepconv1_act")
    x = _sepconv_bn(x, 2048, "block14_sepconv2")
    x = _relu(x, "block14_sepconv2_act")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    else:
        x = common.global_pooling(x, pooling, names=(None, None))  # Keras leaves them unnamed here
    return common.application_model(img_input, x, name, weights)


def preprocess_input(x: Any, data_format: str | None = None) -> np.ndarray | jax.Array:
    """Keras' Xception preprocessing, mode "tf": pixels in [0, 255] scaled to [-1, 1] (see
    :func:`fluxnet.applications.common.preprocess_input`)."""
    return common.preprocess_input(x, data_format=data_format, mode="tf")
