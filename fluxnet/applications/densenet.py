"""DenseNet (Huang et al., 2017) as Keras 3 builds it: same layers, names, order and numerics.

Layer for layer this is ``keras/src/applications/densenet.py``: :func:`DenseNet` takes the numbers of
building blocks of the four dense blocks (each block: BN-ReLU-1x1 conv to 128 channels, BN-ReLU-3x3 conv
to 32, concatenated to its input; transitions halve channels and size), so a Keras 3 DenseNet weights
file loads into it with ``fx.load_keras_weights``. :func:`DenseNet121` is ``DenseNet((6, 12, 24, 16))``.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import jax
import numpy as np

from fluxnet import layers
from fluxnet.applications import common
from fluxnet.errors import ArgumentError
from fluxnet.layers.base import SymbolicTensor
from fluxnet.models.functional import Model

MIN_SIZE, DEFAULT_SIZE = 32, 224
GROWTH_RATE, REDUCTION = 32, 0.5
# the blocks of Keras' DenseNets with ImageNet weights, and their Keras names
KERAS_NAMES = {(6, 12, 24, 16): "DenseNet121", (6, 12, 32, 32): "DenseNet169", (6, 12, 48, 32): "DenseNet201"}


def _bn_relu(x: SymbolicTensor, name: str) -> SymbolicTensor:
    x = layers.BatchNormalization(axis=3, epsilon=common.BN_EPSILON, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _conv_block(x: SymbolicTensor, name: str) -> SymbolicTensor:
    """Keras' ``conv_block``: BN-ReLU-1x1 conv (4 x growth rate), BN-ReLU-3x3 conv, concatenated to ``x``."""
    x1 = _bn_relu(x, f"{name}_0")
    x1 = layers.Conv2D(4 * GROWTH_RATE, 1, use_bias=False, name=f"{name}_1_conv")(x1)
    x1 = _bn_relu(x1, f"{name}_1")
    x1 = layers.Conv2D(GROWTH_RATE, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(x1)
    return layers.Concatenate(axis=3, name=f"{name}_concat")([x, x1])


def _transition_block(x: SymbolicTensor, name: str) -> SymbolicTensor:
    """Keras' ``transition_block``: BN-ReLU-1x1 conv to half the channels, 2x2 average pooling."""
    x = _bn_relu(x, name)
    x = layers.Conv2D(int(x.shape[3] * REDUCTION), 1, use_bias=False, name=f"{name}_conv")(x)
    return layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)


def DenseNet(blocks: Sequence[int], include_top: bool = True, weights: str | os.PathLike | None = None,
             input_tensor: SymbolicTensor | None = None, input_shape: Sequence[int | None] | None = None,
             pooling: str | None = None, classes: int = 1000, classifier_activation: str | Callable | None = "softmax",
             name: str = "densenet") -> Model:
    """Keras 3's DenseNet architecture as a fluxnet model (arguments, defaults, layer names and order as Keras).

    Args:
        blocks: the numbers of building blocks of the four dense blocks (``conv2`` .. ``conv5``).

    Keras' other arguments as ``fluxnet.applications.common.ARGUMENTS`` describes them; ``include_top``
    ends with ``avg_pool`` and the ``predictions`` Dense layer. Input sides are at least 32; the default
    shape is ``(224, 224, 3)`` with the top, ``(None, None, 3)`` without.
    """
    if not (isinstance(blocks, Sequence) and len(blocks) == 4
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in blocks)):
        raise ArgumentError(f"`blocks` must be four positive integers (the building blocks of each dense "
                            f"block). Received: blocks={blocks!r}")
    if common.is_imagenet(weights) and tuple(blocks) not in KERAS_NAMES:
        raise ArgumentError(f"weights='imagenet' exists only for Keras' DenseNets, blocks "
                            f"{' or '.join(map(str, KERAS_NAMES))}. Received: blocks={blocks!r}")
    common.check_arguments(KERAS_NAMES.get(tuple(blocks), "DenseNet"), include_top=include_top, weights=weights,
                           pooling=pooling, classifier_activation=classifier_activation)
    img_input = common.image_input(input_tensor, input_shape, include_top=include_top,
                                   default_size=DEFAULT_SIZE, min_size=MIN_SIZE)

    x = layers.ZeroPadding2D(padding=((3, 3), (3, 3)))(img_input)  # Keras leaves both paddings unnamed
    x = layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = _bn_relu(x, "conv1")
    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)))(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    for stage, n in enumerate(blocks, start=2):
        if stage > 2:
            x = _transition_block(x, f"pool{stage - 1}")  # after conv2 comes pool2
        for block in range(1, n + 1):
            x = _conv_block(x, f"conv{stage}_block{block}")
    x = layers.BatchNormalization(axis=3, epsilon=common.BN_EPSILON, name="bn")(x)
    x = layers.Activation("relu", name="relu")(x)
    x = common.global_pooling(x, "avg" if include_top else pooling)
    if include_top:
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    return common.application_model(img_input, x, name, weights)


def DenseNet121(include_top: bool = True, weights: str | os.PathLike | None = None,
                input_tensor: SymbolicTensor | None = None, input_shape: Sequence[int | None] | None = None,
                pooling: str | None = None, classes: int = 1000,
                classifier_activation: str | Callable | None = "softmax", name: str = "densenet121") -> Model:
    """Keras 3's DenseNet121: :func:`DenseNet` with blocks (6, 12, 24, 16)."""
    return DenseNet((6, 12, 24, 16), include_top, weights, input_tensor, input_shape, pooling, classes,
                    classifier_activation, name)


def preprocess_input(x: Any, data_format: str | None = None) -> np.ndarray | jax.Array:
    """Keras' DenseNet preprocessing, mode "torch": scale to [0, 1], then subtract the ImageNet RGB means
    and divide by their standard deviations (see :func:`fluxnet.applications.common.preprocess_input`)."""
    return common.preprocess_input(x, data_format=data_format, mode="torch")
