"""MobileNetV2 (Sandler et al., 2018) as Keras 3 builds it: same layers, names, order and numerics.

Layer for layer this is ``keras/src/applications/mobilenet_v2.py``: a stride-2 stem, 17 inverted
residual blocks (1x1 expansion, 3x3 depthwise convolution, linear 1x1 projection, ReLU6 between; an
identity shortcut where shape allows) and a 1x1 convolution to 1280 channels. ``alpha`` scales the
widths (rounded to multiples of 8), so a Keras 3 MobileNetV2 weights file of the same ``alpha`` loads
into it with ``fx.load_keras_weights``. Keras' ImageNet weights exist for six values of ``alpha`` and
five input sizes, which Keras checks with ``weights="imagenet"``, and so does :func:`MobileNetV2`.
"""
from __future__ import annotations

import numbers
import os
import warnings
from typing import Any, Callable, Sequence

import jax
import numpy as np

from fluxnet import layers
from fluxnet.applications import common
from fluxnet.errors import ArgumentError
from fluxnet.layers.base import SymbolicTensor
from fluxnet.models.functional import Model

MIN_SIZE, DEFAULT_SIZE = 32, 224
IMAGENET_ALPHAS = (0.35, 0.50, 0.75, 1.0, 1.3, 1.4)  # Keras' ImageNet weights: these widths ...
IMAGENET_SIZES = (96, 128, 160, 192, 224)  # ... trained at these square input sizes
BN = dict(axis=-1, epsilon=1e-3, momentum=0.999)
# (filters, blocks, stride of the first block, expansion) of the inverted residual blocks 0..16
_STAGES = ((16, 1, 1, 1), (24, 2, 2, 6), (32, 3, 2, 6), (64, 4, 2, 6), (96, 3, 1, 6), (160, 3, 2, 6), (320, 1, 1, 6))


def make_divisible(v: float, divisor: int = 8) -> int:
    """Keras' ``_make_divisible``: ``v`` rounded to a multiple of ``divisor``, never 10% below ``v``."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _inverted_res_block(inputs: SymbolicTensor, expansion: int, stride: int, alpha: float, filters: int,
                        block_id: int) -> SymbolicTensor:
    """Keras' ``_inverted_res_block``: [1x1 expand, BN, ReLU6] (not in block 0), 3x3 depthwise, BN,
    ReLU6, linear 1x1 projection, BN; plus ``inputs`` when the shapes agree."""
    in_channels = inputs.shape[-1]
    pointwise_filters = make_divisible(int(filters * alpha), 8)
    x, prefix = inputs, f"block_{block_id}_"
    if block_id:
        x = layers.Conv2D(expansion * in_channels, 1, padding="same", use_bias=False, name=f"{prefix}expand")(x)
        x = layers.BatchNormalization(**BN, name=f"{prefix}expand_BN")(x)
        x = layers.ReLU(6.0, name=f"{prefix}expand_relu")(x)
    else:
        prefix = "expanded_conv_"
    if stride == 2:
        x = layers.ZeroPadding2D(padding=common.correct_pad(x, 3), name=f"{prefix}pad")(x)
    x = layers.DepthwiseConv2D(3, strides=stride, use_bias=False, padding="same" if stride == 1 else "valid",
                               name=f"{prefix}depthwise")(x)
    x = layers.BatchNormalization(**BN, name=f"{prefix}depthwise_BN")(x)
    x = layers.ReLU(6.0, name=f"{prefix}depthwise_relu")(x)
    x = layers.Conv2D(pointwise_filters, 1, padding="same", use_bias=False, name=f"{prefix}project")(x)
    x = layers.BatchNormalization(**BN, name=f"{prefix}project_BN")(x)
    if in_channels == pointwise_filters and stride == 1:
        return layers.Add(name=f"{prefix}add")([inputs, x])
    return x


def _default_size(input_shape: Sequence[int | None] | None, input_tensor: SymbolicTensor | None) -> int:
    """Keras' default size: the side of a square ``input_shape`` (else of ``input_tensor``) when ImageNet
    weights exist for it, else 224."""
    if input_shape:
        rows, cols = (*input_shape, None, None)[:2]  # a malformed shape fails in obtain_input_shape
    elif isinstance(input_tensor, SymbolicTensor):
        rows, cols = input_tensor.shape[1:3]
    else:
        return DEFAULT_SIZE
    return rows if rows == cols and rows in IMAGENET_SIZES else DEFAULT_SIZE


def _imagenet_rows(alpha: float, rows: int | None) -> int:
    """Keras' checks of ``alpha`` and the input size for ImageNet weights: the size whose weights load."""
    if alpha not in IMAGENET_ALPHAS:
        raise ArgumentError("If imagenet weights are being loaded, alpha must be one of `0.35`, `0.50`, `0.75`, "
                            f"`1.0`, `1.3` or `1.4` only; Received `alpha={alpha}`")
    if rows not in IMAGENET_SIZES:
        warnings.warn("`input_shape` is undefined or non-square, or `rows` is not in [96, 128, 160, 192, 224]. "
                      "Weights for input shape (224, 224) will be loaded as the default.",
                      stacklevel=common.caller_stacklevel())
        return DEFAULT_SIZE
    return rows


def MobileNetV2(input_shape: Sequence[int | None] | None = None, alpha: float = 1.0, include_top: bool = True,
                weights: str | os.PathLike | None = None, input_tensor: SymbolicTensor | None = None,
                pooling: str | None = None, classes: int = 1000,
                classifier_activation: str | Callable | None = "softmax", name: str | None = None) -> Model:
    """Keras 3's MobileNetV2 as a fluxnet model (arguments, their order, defaults, layer names and order as
    Keras; only ``weights`` defaults to None, as fluxnet cannot download).

    Args:
        input_shape: ``(height, width, channels)``, each side at least 32; default ``(224, 224, 3)``
            with the top, ``(None, None, 3)`` without.
        alpha: the width multiplier: every block's filters times ``alpha`` (rounded to multiples of 8);
            the last convolution keeps 1280 filters unless ``alpha > 1``. Keras' ImageNet weights exist
            for 0.35, 0.5, 0.75, 1.0, 1.3 and 1.4.
        include_top: end with global average pooling and the ``predictions`` Dense layer.
        weights: ``None`` (random initialisation by ``model.init``) or the path of a Keras 3 weights file
            of this architecture, checked against the model here; the variables come from
            ``fx.load_keras_weights(model, weights)``. ``"imagenet"`` checks ``alpha`` and the input size
            as Keras does (an error for another ``alpha``, a warning that the 224x224 weights apply to
            sizes other than 96, 128, 160, 192 and 224), then raises an error that says how to make the
            file with Keras.
        input_tensor: a symbolic tensor (``layers.Input`` or a layer's output) to build on.
        pooling: without the top, ``None`` (4-D feature map), ``"avg"`` or ``"max"`` (global pooling).
        classes: number of classes of the top.
        classifier_activation: activation of ``predictions``; ``None`` gives logits. With a weights
            file only ``None`` and ``"softmax"`` are allowed (Keras).
        name: the model's name; default ``mobilenetv2_<alpha, 2 decimals>_<rows>`` (Keras).
    """
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha > 0:
        raise ArgumentError(f"`alpha` must be a positive number (the width multiplier). Received: alpha={alpha!r}")
    if common.is_imagenet(weights) and include_top and classes != 1000:
        raise ArgumentError('If using `weights="imagenet"` with `include_top` as true, `classes` should be 1000. '
                            f"Received `classes={classes}`")
    shape = common.obtain_input_shape(input_shape, default_size=_default_size(input_shape, input_tensor),
                                      min_size=MIN_SIZE, require_flatten=include_top, weights=weights)
    if (input_shape is not None and isinstance(input_tensor, SymbolicTensor)
            and input_tensor.shape[2] != shape[1]):
        raise ArgumentError("input_tensor.shape[2] must equal input_shape[1]; Received "
                            f"`input_tensor.shape={input_tensor.shape}`, `input_shape={input_shape}`")
    rows = _imagenet_rows(alpha, shape[0]) if common.is_imagenet(weights) else shape[0]
    name = f"mobilenetv2_{alpha:0.2f}_{rows}" if name is None else name
    keras_arguments = ", ".join([*([f"alpha={alpha}"] if alpha != 1.0 else []),
                                 *([f"input_shape=({rows}, {rows}, 3)"] if rows != DEFAULT_SIZE else [])])
    common.check_arguments("MobileNetV2", include_top=include_top, weights=weights, pooling=pooling,
                           classifier_activation=classifier_activation, keras_arguments=keras_arguments,
                           file_stem=name)
    img_input = common.input_for(input_tensor, shape)

    x = layers.Conv2D(make_divisible(32 * alpha, 8), 3, strides=(2, 2), padding="same", use_bias=False,
                      name="Conv1")(img_input)
    x = layers.BatchNormalization(**BN, name="bn_Conv1")(x)
    x = layers.ReLU(6.0, name="Conv1_relu")(x)
    block_id = 0
    for filters, blocks, stride, expansion in _STAGES:
        for block in range(blocks):
            x = _inverted_res_block(x, expansion, stride if block == 0 else 1, alpha, filters, block_id)
            block_id += 1
    # Keras widens the last convolution only for alpha > 1 (the paper's rule)
    x = layers.Conv2D(make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280, 1, use_bias=False, name="Conv_1")(x)
    x = layers.BatchNormalization(**BN, name="Conv_1_bn")(x)
    x = layers.ReLU(6.0, name="out_relu")(x)
    x = common.global_pooling(x, "avg" if include_top else pooling, names=(None, None))  # Keras leaves them unnamed
    if include_top:
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    return common.application_model(img_input, x, name, weights)


def preprocess_input(x: Any, data_format: str | None = None) -> np.ndarray | jax.Array:
    """Keras' MobileNetV2 preprocessing, mode "tf": pixels in [0, 255] scaled to [-1, 1] (see
    :func:`fluxnet.applications.common.preprocess_input`)."""
    return common.preprocess_input(x, data_format=data_format, mode="tf")
