"""ConvNeXt (Liu et al., 2022) as Keras 3 builds it: same layers, names, order and numerics.

Layer for layer this is ``keras/src/applications/convnext.py``: a 4x4 stride-4 stem and three 2x2
stride-2 downsampling steps (each a nested Sequential model, as Keras has them), between them stages of
ConvNeXt blocks (7x7 depthwise convolution, LayerNormalization, Dense to 4x the channels, GELU, Dense
back, LayerScale, then StochasticDepth or an identity, added to the block's input). The ImageNet
normalisation is the first layer (``include_preprocessing``), so :func:`preprocess_input` is the
identity. A Keras 3 ConvNeXt weights file loads into it with ``fx.load_keras_weights``. Keras adds the
blocks' inputs with an operation (``inputs + x``), which fluxnet writes as an ``Add`` layer of the same
name, so ``model.layers`` lists them where Keras' ``model.operations`` does.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np

from fluxnet import layers
from fluxnet.applications import common
from fluxnet.errors import ArgumentError
from fluxnet.layers.base import SymbolicTensor
from fluxnet.models.functional import Model
from fluxnet.models.sequential import Sequential

MIN_SIZE, DEFAULT_SIZE = 32, 224
# Keras' MODEL_CONFIGS: (depths, projection_dims) of the networks with ImageNet weights, by weights_name
MODEL_CONFIGS = {"convnext_tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
                 "convnext_small": ((3, 3, 27, 3), (96, 192, 384, 768)),
                 "convnext_base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
                 "convnext_large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
                 "convnext_xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048))}
IMAGENET_MEAN = tuple(m * 255 for m in common.IMAGENET_RGB_MEAN)  # Keras' PreStem, on pixels in [0, 255]
IMAGENET_VARIANCE = tuple((s * 255) ** 2 for s in common.IMAGENET_RGB_STD)
LN_EPSILON = 1e-6


def _convnext_block(inputs: SymbolicTensor, projection_dim: int, drop_path_rate: float,
                    layer_scale_init_value: float | None, name: str) -> SymbolicTensor:
    """Keras' ``ConvNeXtBlock``: depthwise 7x7, LayerNormalization, the two Dense layers around GELU,
    [LayerScale], StochasticDepth (or an identity for rate 0), plus ``inputs``."""
    x = layers.Conv2D(projection_dim, 7, padding="same", groups=projection_dim, name=f"{name}_depthwise_conv")(inputs)
    x = layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_layernorm")(x)
    x = layers.Dense(4 * projection_dim, name=f"{name}_pointwise_conv_1")(x)
    x = layers.Activation("gelu", name=f"{name}_gelu")(x)
    x = layers.Dense(projection_dim, name=f"{name}_pointwise_conv_2")(x)
    if layer_scale_init_value is not None:
        x = layers.LayerScale(layer_scale_init_value, projection_dim, name=f"{name}_layer_scale")(x)
    if drop_path_rate:
        x = layers.StochasticDepth(drop_path_rate, name=f"{name}_stochastic_depth")(x)
    else:
        x = layers.Activation("linear", name=f"{name}_identity")(x)
    return layers.Add()([inputs, x])  # Keras: the operation ``inputs + x``, named as this layer


def _check_imagenet(depths: Sequence[int], projection_dims: Sequence[int], name: str, weights_name: str | None) -> str:
    """Keras' checks that ImageNet weights fit the architecture and the name; the Keras class name."""
    if weights_name not in MODEL_CONFIGS:
        raise ArgumentError(f"weights='imagenet' exists only for Keras' ConvNeXts, weights_name "
                            f"{', '.join(map(repr, MODEL_CONFIGS))}. Received: weights_name={weights_name!r}")
    expected_depths, expected_dims = MODEL_CONFIGS[weights_name]
    if tuple(depths) != expected_depths or tuple(projection_dims) != expected_dims:
        raise ArgumentError(
            f"Architecture configuration does not match {weights_name} variant. When using pre-trained weights, "
            f"the model architecture must match the pre-trained configuration exactly. Expected depths: "
            f"{list(expected_depths)}, got: {depths}. Expected projection_dims: {list(expected_dims)}, got: "
            f"{projection_dims}.")
    variant = weights_name.split("convnext_")[-1]
    if weights_name not in name:
        raise ArgumentError(f'Model name "{name}" does not match weights variant "{weights_name}". When using '
                            f'imagenet weights, model name must contain the weights variant (e.g., '
                            f'"convnext_{variant}").')
    return "ConvNeXt" + ("XLarge" if variant == "xlarge" else variant.capitalize())


def ConvNeXt(depths: Sequence[int], projection_dims: Sequence[int], drop_path_rate: float = 0.0,
             layer_scale_init_value: float | None = 1e-6, default_size: int = DEFAULT_SIZE, name: str = "convnext",
             include_preprocessing: bool = True, include_top: bool = True, weights: str | os.PathLike | None = None,
             input_tensor: SymbolicTensor | None = None, input_shape: Sequence[int | None] | None = None,
             pooling: str | None = None, classes: int = 1000, classifier_activation: str | Callable | None = "softmax",
             weights_name: str | None = None) -> Model:
    """Keras 3's ConvNeXt architecture as a fluxnet model (arguments, defaults, layer names and order as Keras).

    Args:
        depths: the number of ConvNeXt blocks of each of the four stages.
        projection_dims: the channels of each stage.
        drop_path_rate: the StochasticDepth rate of the last block, rising linearly from 0 at the first;
            0 gives identities.
        layer_scale_init_value: the initial LayerScale factor; None leaves LayerScale out.
        default_size: the input side with the top when ``input_shape`` is not given.
        name: the model's name, and the prefix of every layer's.
        include_preprocessing: start with Keras' ImageNet ``Normalization`` of pixels in [0, 255]
            (three-channel inputs only, as Keras).
        include_top: end with global average pooling, LayerNormalization and the Dense ``<name>_head_dense``;
            without it, ``pooling`` and a LayerNormalization (Keras).
        weights: ``None`` (random initialisation by ``model.init``) or the path of a Keras 3 weights file
            of this architecture, checked against the model here; the variables come from
            ``fx.load_keras_weights(model, weights)``. ``"imagenet"`` checks the architecture and name as
            Keras does, then raises an error that says how to make the file with Keras.
        input_tensor: a symbolic tensor (``layers.Input`` or a layer's output) to build on.
        input_shape: ``(height, width, channels)``, each side at least 32; default
            ``(default_size, default_size, 3)`` with the top, ``(None, None, 3)`` without.
        pooling: without the top, ``None`` (4-D feature map), ``"avg"`` or ``"max"`` (global pooling).
        classes: number of classes of the top.
        classifier_activation: activation of the top; ``None`` gives logits. With a weights file only
            ``None`` and ``"softmax"`` are allowed (Keras).
        weights_name: Keras' ImageNet weights of the network, ``"convnext_tiny"`` .. ``"convnext_xlarge"``.
    """
    keras_name = _check_imagenet(depths, projection_dims, name, weights_name) if common.is_imagenet(weights) \
        else "ConvNeXt"
    common.check_arguments(keras_name, include_top=include_top, weights=weights, pooling=pooling,
                           classifier_activation=classifier_activation)
    shape = common.obtain_input_shape(input_shape, default_size=default_size, min_size=MIN_SIZE,
                                      require_flatten=include_top)
    x = img_input = common.input_for(input_tensor, shape)

    if include_preprocessing and shape[-1] == 3:
        x = layers.Normalization(mean=list(IMAGENET_MEAN), variance=list(IMAGENET_VARIANCE),
                                 name=f"{name}_prestem_normalization")(x)
    stem = [layers.Conv2D(projection_dims[0], 4, strides=4, name=f"{name}_stem_conv"),
            layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_stem_layernorm")]
    downsampling = [Sequential(stem, name=f"{name}_stem")] + [
        Sequential([layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_downsampling_layernorm_{i}"),
                    layers.Conv2D(projection_dims[i + 1], 2, strides=2, name=f"{name}_downsampling_conv_{i}")],
                   name=f"{name}_downsampling_block_{i}") for i in range(3)]
    rates = [float(r) for r in np.linspace(0.0, drop_path_rate, sum(depths))]
    first = 0
    for stage, (downsample, depth, projection_dim) in enumerate(zip(downsampling, depths, projection_dims)):
        x = downsample(x)
        for block in range(depth):
            x = _convnext_block(x, projection_dim, rates[first + block], layer_scale_init_value,
                                name=f"{name}_stage_{stage}_block_{block}")
        first += depth
    if include_top:
        x = layers.GlobalAveragePooling2D(name=f"{name}_head_gap")(x)
        x = layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_head_layernorm")(x)
        x = layers.Dense(classes, activation=classifier_activation, name=f"{name}_head_dense")(x)
    else:
        x = common.global_pooling(x, pooling, names=(None, None))  # Keras leaves them unnamed here
        x = layers.LayerNormalization(epsilon=LN_EPSILON)(x)
    return common.application_model(img_input, x, name, weights)


def ConvNeXtTiny(include_top: bool = True, include_preprocessing: bool = True, weights: str | os.PathLike | None = None,
                 input_tensor: SymbolicTensor | None = None, input_shape: Sequence[int | None] | None = None,
                 pooling: str | None = None, classes: int = 1000,
                 classifier_activation: str | Callable | None = "softmax", name: str = "convnext_tiny") -> Model:
    """Keras 3's ConvNeXtTiny: :func:`ConvNeXt` with depths (3, 3, 9, 3) and projection dims (96, 192, 384,
    768), no stochastic depth, LayerScale from 1e-6 (arguments and their order as Keras)."""
    depths, projection_dims = MODEL_CONFIGS["convnext_tiny"]
    return ConvNeXt(depths, projection_dims, 0.0, 1e-6, DEFAULT_SIZE, name, include_preprocessing, include_top,
                    weights, input_tensor, input_shape, pooling, classes, classifier_activation,
                    weights_name="convnext_tiny")


def preprocess_input(x: Any, data_format: str | None = None) -> Any:
    """Keras' ConvNeXt ``preprocess_input``: ``x`` unchanged, as the network normalises pixels in [0, 255]
    itself (``include_preprocessing``)."""
    return x
