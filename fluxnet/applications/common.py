"""What every Keras Application shares, as Keras' ``applications/imagenet_utils.py`` has it.

The input-shape rule (``obtain_input_shape``, with each network's minimum and default sizes), the checks
of ``weights``, ``pooling`` and ``classifier_activation``, the image input (``input_tensor`` or a new
``layers.Input``), the padding before stride-2 convolutions (``correct_pad``), the model over the input
tensor's sources with its weights file checked, the global pooling of headless networks, and
``preprocess_input``'s three modes. fluxnet has no network access, so
``weights="imagenet"`` raises an error saying how to make the weights file with Keras.
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fluxnet import activations
from fluxnet import layers
from fluxnet.errors import ArgumentError, ArgumentTypeError, DataError
from fluxnet.layers.base import SymbolicTensor
from fluxnet.layers.core import InputLayer
from fluxnet.models.functional import Model
from fluxnet.transfer.keras_weights import check_keras_weights

BN_EPSILON = 1.001e-5  # the BatchNormalization epsilon of Keras' ResNets and DenseNets
MODES = ("caffe", "tf", "torch")
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)  # "caffe": per channel, on BGR pixels in [0, 255]
IMAGENET_RGB_MEAN, IMAGENET_RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # "torch": on [0, 1]

ARGUMENTS = """Keras' application arguments, as every network here takes them:

    include_top: end with the network's classifier (``classes`` units; its own layers, see each network).
    weights: ``None`` (random initialisation by ``model.init``) or the path of a Keras 3 weights file of
        this architecture (``.weights.h5``, or a ``.keras`` archive), checked against the model here as
        Keras does; fluxnet models hold no arrays, so the variables come from
        ``fx.load_keras_weights(model, weights)``. ``"imagenet"`` needs a download and raises an error
        that says how to make the file with Keras.
    input_tensor: a symbolic tensor (``layers.Input`` or a layer's output) to build on.
    input_shape: ``(height, width, channels)``, each side at least the network's minimum; default its
        default size with the top, ``(None, None, 3)`` without.
    pooling: without the top, ``None`` (4-D feature map), ``"avg"`` or ``"max"`` (global pooling).
    classes: number of classes of the top.
    classifier_activation: activation of ``predictions``; ``None`` gives logits. With a weights file only
        ``None`` and ``"softmax"`` are allowed (Keras).
    name: the model's name.
"""


def no_imagenet_message(keras_name: str, keras_arguments: str = "", file_stem: str | None = None) -> str:
    """How to make the weights file of ``keras.applications.<keras_name>(<keras_arguments>)`` on a machine
    with internet; the file is ``<file_stem>.weights.h5`` (default: the lower-case Keras name)."""
    file = f"{file_stem or keras_name.lower()}.weights.h5"
    call = f"{keras_arguments}, weights='imagenet'" if keras_arguments else "weights='imagenet'"
    return ("weights='imagenet' needs a download, and fluxnet has no network access. Make the file once on a "
            "machine with Keras 3 and internet:\n"
            "    import keras\n"
            f"    keras.applications.{keras_name}({call}).save_weights('{file}')\n"
            f"(include_top=False for the headless network), then pass weights='{file}' and get the "
            f"variables with fx.load_keras_weights(model, '{file}').")


def check_arguments(keras_name: str, *, include_top: bool, weights: str | os.PathLike | None,
                    pooling: str | None, classifier_activation: str | Callable | None, keras_arguments: str = "",
                    file_stem: str | None = None) -> None:
    """Keras' checks of an application's ``weights``, ``pooling`` and ``classifier_activation``;
    ``weights="imagenet"`` raises :func:`no_imagenet_message` (``keras_arguments``, ``file_stem``)."""
    if is_imagenet(weights):
        raise ArgumentError(no_imagenet_message(keras_name, keras_arguments, file_stem))
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


def is_imagenet(weights: object) -> bool:
    """Whether ``weights`` is the string "imagenet" (a path-like object never is)."""
    return isinstance(weights, str) and weights == "imagenet"


def caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside this package: the call of the application builder."""
    frame, level = sys._getframe(2), 2  # level 1: the function that calls this and warns
    while frame is not None and frame.f_globals.get("__name__", "").startswith(__package__ + "."):
        frame, level = frame.f_back, level + 1
    return level


def obtain_input_shape(input_shape: Sequence[int | None] | None, *, default_size: int, min_size: int,
                       require_flatten: bool, weights: str | os.PathLike | None = None) -> tuple:
    """Keras' ``obtain_input_shape`` for channels-last images. With ``weights="imagenet"`` (checked by
    networks whose weights depend on the input size), Keras' rules for ImageNet weights: three channels,
    and with the top exactly ``(default_size, default_size, 3)``."""
    imagenet = is_imagenet(weights)
    default_shape = (default_size, default_size, 3)
    if imagenet and require_flatten:
        if input_shape is not None and tuple(input_shape) != default_shape:
            raise ArgumentError(f"When setting `include_top=True` and loading `imagenet` weights, `input_shape` "
                                f"should be {default_shape}.  Received: input_shape={input_shape}")
        return default_shape
    if not input_shape:
        shape = default_shape if require_flatten else (None, None, 3)
    else:
        shape = tuple(input_shape)
        if len(shape) != 3:
            raise ArgumentError(f"`input_shape` must be a tuple of three integers (height, width, channels). "
                                f"Received: input_shape={input_shape}")
        if imagenet and shape[-1] != 3:
            raise ArgumentError(f"The input must have 3 channels; Received `input_shape={input_shape}`")
        if shape[-1] not in (1, 3):
            warnings.warn(f"This model usually expects 1 or 3 input channels. However, it was passed an "
                          f"input_shape with {shape[-1]} input channels.", stacklevel=caller_stacklevel())
        if any(n is not None and n < min_size for n in shape[:2]):
            raise ArgumentError(f"Input size must be at least {min_size}x{min_size}; Received: "
                                f"input_shape={input_shape}")
    if require_flatten and None in shape:
        raise ArgumentError(f"If `include_top` is True, you should specify a static `input_shape`. "
                            f"Received: input_shape={shape}")
    return shape


def image_input(input_tensor: SymbolicTensor | None, input_shape: Sequence[int | None] | None, *,
                include_top: bool, default_size: int, min_size: int) -> SymbolicTensor:
    """The tensor the network starts from: ``input_tensor``, or a new Input of Keras' checked shape."""
    shape = obtain_input_shape(input_shape, default_size=default_size, min_size=min_size,
                               require_flatten=include_top)
    return input_for(input_tensor, shape)


def input_for(input_tensor: SymbolicTensor | None, shape: tuple) -> SymbolicTensor:
    """``input_tensor`` (checked to be symbolic), or a new Input of the checked ``shape``."""
    if input_tensor is None:
        return layers.Input(shape)
    if isinstance(input_tensor, SymbolicTensor):
        return input_tensor
    raise ArgumentTypeError(f"`input_tensor` must be a symbolic tensor (layers.Input(...) or a layer's output), "
                            f"got {type(input_tensor).__name__}.")


def correct_pad(x: SymbolicTensor, kernel_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Keras' ``correct_pad``: the ZeroPadding2D before a stride-2 "valid" convolution of ``kernel_size``,
    ``kernel_size // 2`` on each side but one less in front on an even side, as on an unknown height
    (Keras then treats the width as even too; an unknown width alone, where Keras fails, likewise)."""
    height, width = x.shape[1:3]
    adjust = (1, 1) if height is None else (1 - height % 2, 1 if width is None else 1 - width % 2)
    half = kernel_size // 2
    return (half - adjust[0], half), (half - adjust[1], half)


def global_pooling(x: SymbolicTensor, pooling: str | None,
                   names: tuple[str | None, str | None] = ("avg_pool", "max_pool")) -> SymbolicTensor:
    """``pooling`` "avg" or "max" over height and width (layers named ``names``), or ``x`` for None."""
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name=names[0])(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name=names[1])(x)
    return x


def source_inputs(tensor: SymbolicTensor) -> list[SymbolicTensor]:
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


def application_model(img_input: SymbolicTensor, outputs: SymbolicTensor, name: str,
                      weights: str | os.PathLike | None) -> Model:
    """The model from the inputs ``img_input`` comes from (the graph before an ``input_tensor`` too) to
    ``outputs``; a weights file is checked against it, as Keras loads it here."""
    sources = source_inputs(img_input)
    model = Model(sources[0] if len(sources) == 1 else sources, outputs, name=name)
    if weights is not None:
        check_keras_weights(model, weights)
    return model


def preprocess_input(x: Any, data_format: str | None = None, mode: str = "caffe") -> np.ndarray | jax.Array:
    """Keras' ``imagenet_utils.preprocess_input`` of images with values in [0, 255] (a batch or one image).

    ``mode``: "caffe" (RGB -> BGR, then subtract the ImageNet BGR means; no scaling), "tf" (scale to
    [-1, 1]) or "torch" (scale to [0, 1], then subtract the ImageNet RGB means and divide by their
    standard deviations). NumPy in gives NumPy out (float32 unless already floating), a JAX array gives a
    JAX array (jittable); unlike Keras, the input is never modified.
    """
    if mode not in MODES:
        raise ArgumentError(f"Expected mode to be one of `caffe`, `tf` or `torch`. Received: mode={mode!r}")
    if data_format not in (None, "channels_last", "channels_first"):
        raise ArgumentError(f"Expected data_format to be one of `channels_first` or `channels_last`. "
                            f"Received: data_format={data_format!r}")
    xp = jnp if isinstance(x, jax.Array) else np
    x = xp.asarray(x)
    if not xp.issubdtype(x.dtype, xp.floating):
        x = x.astype(xp.float32)
    if mode == "tf":
        return x / 127.5 - 1.0
    channels_first = data_format == "channels_first"
    axis = (1 if x.ndim == 4 else 0) if channels_first else -1
    if x.ndim not in (3, 4) or x.shape[axis] != 3:
        layout = "3, height, width" if channels_first else "height, width, 3"
        raise DataError(f"preprocess_input expects RGB images of shape ({layout}), with or without a batch "
                        f"axis first; got shape {tuple(x.shape)}.")
    per_channel = [1] * x.ndim
    per_channel[axis] = 3
    if mode == "caffe":
        return xp.flip(x, axis=axis) - xp.asarray(IMAGENET_BGR_MEAN, dtype=x.dtype).reshape(per_channel)
    mean = xp.asarray(IMAGENET_RGB_MEAN, dtype=x.dtype).reshape(per_channel)
    return (x / 255.0 - mean) / xp.asarray(IMAGENET_RGB_STD, dtype=x.dtype).reshape(per_channel)
