"""VGG16 (Simonyan & Zisserman, 2014) as Keras 3 builds it: same layers, names, order and numerics.

Layer for layer this is ``keras/src/applications/vgg16.py`` (five blocks of 3x3 ReLU convolutions and
2x2 max pooling; the top flattens into two 4096-unit ReLU layers), so a Keras 3 VGG16 weights file loads
into it with ``fx.load_keras_weights``. The top's ``fc1`` depends on the input size through ``flatten``:
Keras' 138,357,544 parameters are those of the 224x224 network.
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
_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (filters, convolutions) of block1..block5


def VGG16(include_top: bool = True, weights: str | os.PathLike | None = None,
          input_tensor: SymbolicTensor | None = None, input_shape: Sequence[int | None] | None = None,
          pooling: str | None = None, classes: int = 1000, classifier_activation: str | Callable | None = "softmax",
          name: str = "vgg16") -> Model:
    """Keras 3's VGG16 as a fluxnet model (arguments, defaults, layer names and order as Keras).

    Arguments as in Keras (``fluxnet.applications.common.ARGUMENTS`` describes them); ``include_top`` ends with
    ``flatten``, ``fc1`` and ``fc2`` (4096 units, ReLU) and ``predictions``. Input sides are at least 32; the
    default shape is ``(224, 224, 3)`` with the top, ``(None, None, 3)`` without.
    """
    common.check_arguments("VGG16", include_top=include_top, weights=weights, pooling=pooling,
                           classifier_activation=classifier_activation)
    img_input = common.image_input(input_tensor, input_shape, include_top=include_top,
                                   default_size=DEFAULT_SIZE, min_size=MIN_SIZE)
    x = img_input
    for block, (filters, convolutions) in enumerate(_BLOCKS, start=1):
        for conv in range(1, convolutions + 1):
            x = layers.Conv2D(filters, (3, 3), activation="relu", padding="same", name=f"block{block}_conv{conv}")(x)
        x = layers.MaxPooling2D((2, 2), strides=(2, 2), name=f"block{block}_pool")(x)
    if include_top:
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(4096, activation="relu", name="fc1")(x)
        x = layers.Dense(4096, activation="relu", name="fc2")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    else:
        x = common.global_pooling(x, pooling, names=(None, None))  # Keras leaves them unnamed here
    return common.application_model(img_input, x, name, weights)


def preprocess_input(x: Any, data_format: str | None = None) -> np.ndarray | jax.Array:
    """Keras' VGG16 preprocessing, mode "caffe": RGB -> BGR, then subtract the ImageNet BGR means; no
    scaling (see :func:`fluxnet.applications.common.preprocess_input`)."""
    return common.preprocess_input(x, data_format=data_format, mode="caffe")
