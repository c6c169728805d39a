"""ResNet50 (He et al., 2015) as Keras 3 builds it: same layers, names, order and numerics.

Layer for layer this is ``keras/src/applications/resnet.py`` (ResNet v1, biases in every convolution,
BatchNormalization epsilon 1.001e-5), so a Keras 3 ResNet50 weights file loads into it with
``fx.load_keras_weights``. fluxnet has no network access and models hold no arrays: pretrained weights
come from a file, see :func:`ResNet50`.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fluxnet import activations
from fluxnet import layers
from fluxnet.errors import ArgumentError, ArgumentTypeError, DataError
from fluxnet.transfer.keras_weights import check_keras_weights
from fluxnet.layers.base import SymbolicTensor
from fluxnet.layers.core import InputLayer
from fluxnet.models.functional import Model

BN_EPSILON = 1.001e-5
MIN_SIZE, DEFAULT_SIZE = 32, 224
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
# (stage name, bottleneck filters, blocks, stride of the first block)
_STAGES = (("conv2", 64, 3, 1), ("conv3", 128, 4, 2), ("conv4", 256, 6, 2), ("conv5", 512, 3, 2))

_NO_IMAGENET = (
    "weights='imagenet' needs a download, and fluxnet has no network access. Make the file once on a "
    "machine with Keras 3 and internet:\n"
    "    import keras\n"
    "    keras.applications.ResNet50(weights='imagenet').save_weights('resnet50.weights.h5')\n"
    "(include_top=False for the headless network), then pass weights='resnet50.weights.h5' and get the "
    "variables with fx.load_keras_weights(model, 'resnet50.weights.h5').")


def _conv_bn(x: SymbolicTensor, filters: int, kernel_size: int, name: str, strides: int = 1,
             padding: str = "valid") -> SymbolicTensor:
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, name=f"{name}_conv")(x)
    return layers.BatchNormalization(axis=3, epsilon=BN_EPSILON, name=f"{name}_bn")(x)


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


def _input_shape(input_shape: Sequence[int | None] | None, include_top: bool) -> tuple:
    """Keras' ``obtain_input_shape`` for channels-last images without ImageNet weights."""
    if not input_shape:
        shape = (DEFAULT_SIZE, DEFAULT_SIZE, 3) if include_top else (None, None, 3)
    else:
        shape = tuple(input_shape)
        if len(shape) != 3:
            raise ArgumentError(f"`input_shape` must be a tuple of three integers (height, width, channels). "
                                f"Received: input_shape={input_shape}")
        if shape[-1] not in (1, 3):
            warnings.warn(f"This model usually expects 1 or 3 input channels. However, it was passed an "
                          f"input_shape with {shape[-1]} input channels.", stacklevel=3)
        if any(n is not None and n < MIN_SIZE for n in shape[:2]):
            raise ArgumentError(f"Input size must be at least {MIN_SIZE}x{MIN_SIZE}; Received: "
                                f"input_shape={input_shape}")
    if include_top and None in shape:
        raise ArgumentError(f"If `include_top` is True, you should specify a static `input_shape`. "
                            f"Received: input_shape={shape}")
    return shape


def _source_inputs(tensor: SymbolicTensor) -> list[SymbolicTensor]:
    """The ``layers.Input`` tensors that ``tensor`` is computed from (Keras' ``get_source_inputs``)."""
    sources, seen, stack = [], set(), [tensor]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        if isinstance(t.layer, InputLayer):
            sources.append(t)
        stack.extend(reversed(t.node.parents))
    return sources


def ResNet50(include_top: bool = True, weights: str | os.PathLike | None = None,
             input_tensor: SymbolicTensor | None = None, input_shape: Sequence[int | None] | None = None,
             pooling: str | None = None, classes: int = 1000, classifier_activation: str | Callable | None = "softmax",
             name: str = "resnet50") -> Model:
    """Keras 3's ResNet50 as a fluxnet model (arguments, defaults, layer names and order as Keras).

    Args:
        include_top: end with ``avg_pool`` and the ``predictions`` Dense layer (``classes`` units).
        weights: ``None`` (random initialisation by ``model.init``) or the path of a Keras 3 weights file
            of this architecture (``.weights.h5``, or a ``.keras`` archive). The file is checked against
            the model here, as Keras does; fluxnet models hold no arrays, so the variables come from
            ``fx.load_keras_weights(model, weights)``. ``"imagenet"`` needs a download and raises an
            error that says how to make the file with Keras.
        input_tensor: a symbolic tensor (``layers.Input`` or a layer's output) to build on.
        input_shape: ``(height, width, channels)``, each side at least 32; default ``(224, 224, 3)``
            with the top, ``(None, None, 3)`` without.
        pooling: without the top, ``None`` (4-D feature map), ``"avg"`` or ``"max"`` (global pooling).
        classes: number of classes of the top.
        classifier_activation: activation of ``predictions``; ``None`` gives logits. With a weights
            file only ``None`` and ``"softmax"`` are allowed (Keras).
        name: the model's name.
    """
    if isinstance(weights, str) and weights == "imagenet":
        raise ArgumentError(_NO_IMAGENET)
    if weights is not None and not (isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights)):
        raise ArgumentError("The `weights` argument should be either `None` (random initialization) or the path "
                            f"to a Keras 3 weights file ('.weights.h5') to be loaded. Received: weights={weights!r}")
    if pooling not in (None, "avg", "max"):
        raise ArgumentError(f"`pooling` must be None, 'avg' or 'max'. Received: pooling={pooling!r}")
    if include_top and weights is not None and activations.get(classifier_activation) not in (
            activations.get("softmax"), activations.get(None)):
        raise ArgumentError("Only `None` and `softmax` activations are allowed for the `classifier_activation` "
                            "argument when using pretrained weights, with `include_top=True`; Received: "
                            f"classifier_activation={classifier_activation!r}")
    shape = _input_shape(input_shape, include_top)
    if input_tensor is None:
        img_input = layers.Input(shape)
    elif isinstance(input_tensor, SymbolicTensor):
        img_input = input_tensor
    else:
        raise ArgumentTypeError(f"`input_tensor` must be a symbolic tensor (layers.Input(...) or a layer's output), "
                                f"got {type(input_tensor).__name__}.")

    x = layers.ZeroPadding2D(padding=((3, 3), (3, 3)), name="conv1_pad")(img_input)
    x = _conv_bn(x, 64, 7, "conv1", strides=2)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, filters, blocks, stride in _STAGES:
        for block in range(1, blocks + 1):
            x = _residual_block(x, filters, stride if block == 1 else 1, conv_shortcut=block == 1,
                                name=f"{stage}_block{block}")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)

    sources = [img_input] if input_tensor is None else _source_inputs(input_tensor)
    model = Model(sources[0] if len(sources) == 1 else sources, x, name=name)
    if weights is not None:
        check_keras_weights(model, weights)
    return model


def preprocess_input(x: Any, data_format: str | None = None) -> np.ndarray | jax.Array:
    """Keras' "caffe" preprocessing: RGB -> BGR, then subtract the ImageNet BGR means; no scaling.

    ``x`` holds images with values in [0, 255] (a batch or one image). NumPy in gives NumPy out (float32
    unless already floating), a JAX array gives a JAX array (jittable); the input is never modified.
    """
    if data_format not in (None, "channels_last", "channels_first"):
        raise ArgumentError(f"Expected data_format to be one of `channels_first` or `channels_last`. "
                            f"Received: data_format={data_format!r}")
    xp = jnp if isinstance(x, jax.Array) else np
    x = xp.asarray(x)
    if not xp.issubdtype(x.dtype, xp.floating):
        x = x.astype(xp.float32)
    channels_first = data_format == "channels_first"
    axis = (1 if x.ndim == 4 else 0) if channels_first else -1
    if x.ndim not in (3, 4) or x.shape[axis] != 3:
        layout = "3, height, width" if channels_first else "height, width, 3"
        raise DataError(f"preprocess_input expects RGB images of shape ({layout}), with or without a batch "
                        f"axis first; got shape {tuple(x.shape)}.")
    mean_shape = [1] * x.ndim
    mean_shape[axis] = 3
    mean = xp.asarray(IMAGENET_BGR_MEAN, dtype=x.dtype).reshape(mean_shape)
    return xp.flip(x, axis=axis) - mean
