"""EfficientNet (Tan & Le, 2019) as Keras 3 builds it: same layers, names, order and numerics.

Layer for layer this is ``keras/src/applications/efficientnet.py``: :func:`EfficientNet` scales Keras'
seven stages of inverted residual blocks (squeeze-and-excitation, swish; drop connect on the identity
shortcuts, a Dropout whose mask is one value per image) by a width and a depth coefficient, and
``EfficientNetB0`` .. ``EfficientNetB7`` are Keras' eight settings, so a Keras 3 EfficientNet weights
file loads into them with ``fx.load_keras_weights``.

The preprocessing is in the graph, as in Keras: ``Rescaling(1/255)``, then a ``Normalization`` whose
mean and variance are variables (zeros and ones until loaded), so :func:`preprocess_input` is the
identity and the network takes pixels in [0, 255]. Keras' ImageNet files hold the ImageNet standard
deviations where the variances belong, which Keras corrects with one more per-channel ``Rescaling`` by
``1 / sqrt(stddev)``, built only for ``weights="imagenet"``. fluxnet builds that graph whenever
``weights`` is a file (the ImageNet weights, made as :func:`fluxnet.applications.common.no_imagenet_message`
says); a file of a network Keras built with ``weights=None`` loads into the ``weights=None`` graph:
``fx.load_keras_weights(EfficientNetB0(), path)``.
"""
from __future__ import annotations

import copy
import math
import os
from typing import Any, Callable, Mapping, Sequence

from fluxnet import initializers, layers
from fluxnet.applications import common
from fluxnet.errors import ArgumentError
from fluxnet.layers.base import SymbolicTensor
from fluxnet.models.functional import Model

MIN_SIZE = 32
# Keras' DEFAULT_BLOCKS_ARGS: the seven stages of EfficientNetB0, scaled by the coefficients
DEFAULT_BLOCKS_ARGS = tuple(
    dict(kernel_size=k, repeats=r, filters_in=i, filters_out=o, expand_ratio=e, id_skip=True, strides=s,
         se_ratio=0.25)
    for k, r, i, o, e, s in ((3, 1, 32, 16, 1, 1), (3, 2, 16, 24, 6, 2), (5, 2, 24, 40, 6, 2), (3, 3, 40, 80, 6, 2),
                             (5, 3, 80, 112, 6, 1), (5, 4, 112, 192, 6, 2), (3, 1, 192, 320, 6, 1)))
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)
# Keras' CONV_KERNEL_INITIALIZER and DENSE_KERNEL_INITIALIZER, registered so model configs record them
CONV_KERNEL_INITIALIZER, DENSE_KERNEL_INITIALIZER = "efficientnet_conv_kernel", "efficientnet_dense_kernel"
initializers.register(CONV_KERNEL_INITIALIZER, initializers.variance_scaling(2.0, "fan_out", "truncated_normal"))
initializers.register(DENSE_KERNEL_INITIALIZER, initializers.variance_scaling(1.0 / 3.0, "fan_out", "uniform"))
# weights_name -> (width coefficient, depth coefficient, default size, top dropout) of EfficientNetB0..B7
VARIANTS = {"b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2), "b2": (1.1, 1.2, 260, 0.3),
            "b3": (1.2, 1.4, 300, 0.3), "b4": (1.4, 1.8, 380, 0.4), "b5": (1.6, 2.2, 456, 0.4),
            "b6": (1.8, 2.6, 528, 0.5), "b7": (2.0, 3.1, 600, 0.5)}


def _block(inputs: SymbolicTensor, activation: str | Callable, drop_rate: float, name: str, filters_in: int,
           filters_out: int, kernel_size: int, strides: int, expand_ratio: int, se_ratio: float,
           id_skip: bool) -> SymbolicTensor:
    """Keras' ``block``: [1x1 expansion], depthwise convolution, squeeze-and-excitation, 1x1 projection;
    plus ``inputs`` (after drop connect: Dropout with one mask value per image) when the shapes agree."""
    filters = filters_in * expand_ratio
    x = inputs
    if expand_ratio != 1:
        x = layers.Conv2D(filters, 1, padding="same", use_bias=False, kernel_initializer=CONV_KERNEL_INITIALIZER,
                          name=f"{name}expand_conv")(x)
        x = layers.BatchNormalization(axis=3, name=f"{name}expand_bn")(x)
        x = layers.Activation(activation, name=f"{name}expand_activation")(x)
    if strides == 2:
        x = layers.ZeroPadding2D(padding=common.correct_pad(x, kernel_size), name=f"{name}dwconv_pad")(x)
    x = layers.DepthwiseConv2D(kernel_size, strides=strides, padding="valid" if strides == 2 else "same",
                               use_bias=False, depthwise_initializer=CONV_KERNEL_INITIALIZER,
                               name=f"{name}dwconv")(x)
    x = layers.BatchNormalization(axis=3, name=f"{name}bn")(x)
    x = layers.Activation(activation, name=f"{name}activation")(x)
    if 0 < se_ratio <= 1:
        se = layers.GlobalAveragePooling2D(name=f"{name}se_squeeze")(x)
        se = layers.Reshape((1, 1, filters), name=f"{name}se_reshape")(se)
        se = layers.Conv2D(max(1, int(filters_in * se_ratio)), 1, padding="same", activation=activation,
                           kernel_initializer=CONV_KERNEL_INITIALIZER, name=f"{name}se_reduce")(se)
        se = layers.Conv2D(filters, 1, padding="same", activation="sigmoid", kernel_initializer=CONV_KERNEL_INITIALIZER,
                           name=f"{name}se_expand")(se)
        x = layers.Multiply(name=f"{name}se_excite")([x, se])
    x = layers.Conv2D(filters_out, 1, padding="same", use_bias=False, kernel_initializer=CONV_KERNEL_INITIALIZER,
                      name=f"{name}project_conv")(x)
    x = layers.BatchNormalization(axis=3, name=f"{name}project_bn")(x)
    if id_skip and strides == 1 and filters_in == filters_out:
        if drop_rate > 0:
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}drop")(x)
        x = layers.Add(name=f"{name}add")([x, inputs])
    return x


def EfficientNet(width_coefficient: float, depth_coefficient: float, default_size: int, dropout_rate: float = 0.2,
                 drop_connect_rate: float = 0.2, depth_divisor: int = 8, activation: str | Callable = "swish",
                 blocks_args: str | Sequence[Mapping[str, Any]] = "default", name: str = "efficientnet",
                 include_top: bool = True, weights: str | os.PathLike | None = None,
                 input_tensor: SymbolicTensor | None = None, input_shape: Sequence[int | None] | None = None,
                 pooling: str | None = None, classes: int = 1000,
                 classifier_activation: str | Callable | None = "softmax", weights_name: str | None = None) -> Model:
    """Keras 3's EfficientNet architecture as a fluxnet model (arguments, defaults, layer names and order as
    Keras; only ``weights`` defaults to None, as fluxnet cannot download).

    Args:
        width_coefficient, depth_coefficient: the scaling of every stage's filters (rounded to multiples
            of ``depth_divisor``) and of its number of blocks (rounded up).
        default_size: the input side with the top when ``input_shape`` is not given.
        dropout_rate: of the Dropout before ``predictions`` (none for 0).
        drop_connect_rate: the drop connect rate of the last block; block ``b`` of ``n`` drops with
            ``drop_connect_rate * b / n``.
        depth_divisor: the unit of the widths.
        activation: of every block and of the stem and top convolutions.
        blocks_args: ``"default"`` (Keras' DEFAULT_BLOCKS_ARGS) or one dict per stage with Keras' keys
            ``kernel_size, repeats, filters_in, filters_out, expand_ratio, id_skip, strides, se_ratio``.
        name: the model's name.
        include_top: end with ``avg_pool``, ``top_dropout`` and the ``predictions`` Dense layer.
        weights: ``None`` (random initialisation by ``model.init``; Keras' ``weights=None`` graph) or the
            path of a Keras 3 ImageNet weights file of this architecture: the graph Keras builds for
            ``weights="imagenet"`` (see the module docstring), checked against the file here; the
            variables come from ``fx.load_keras_weights(model, weights)``. ``"imagenet"`` needs a
            download and raises an error that says how to make the file with Keras.
        input_tensor: a symbolic tensor (``layers.Input`` or a layer's output) to build on.
        input_shape: ``(height, width, channels)``, each side at least 32; default
            ``(default_size, default_size, 3)`` with the top, ``(None, None, 3)`` without.
        pooling: without the top, ``None`` (4-D feature map), ``"avg"`` or ``"max"`` (global pooling).
        classes: number of classes of the top.
        classifier_activation: activation of ``predictions``; ``None`` gives logits. With a weights
            file only ``None`` and ``"softmax"`` are allowed (Keras).
        weights_name: Keras' ImageNet weights of the network, ``"b0"`` .. ``"b7"`` (for ``"imagenet"``).
    """
    blocks_args = DEFAULT_BLOCKS_ARGS if isinstance(blocks_args, str) and blocks_args == "default" else blocks_args
    if common.is_imagenet(weights) and weights_name not in VARIANTS:
        raise ArgumentError(f"weights='imagenet' exists only for Keras' EfficientNetB0 .. EfficientNetB7, "
                            f"weights_name 'b0' .. 'b7'. Received: weights_name={weights_name!r}")
    keras_name = f"EfficientNet{weights_name.upper()}" if weights_name in VARIANTS else "EfficientNet"
    common.check_arguments(keras_name, include_top=include_top, weights=weights,
                           pooling=pooling, classifier_activation=classifier_activation)
    img_input = common.image_input(input_tensor, input_shape, include_top=include_top, default_size=default_size,
                                   min_size=MIN_SIZE)

    def round_filters(filters: int) -> int:
        filters *= width_coefficient
        new_filters = max(depth_divisor, int(filters + depth_divisor / 2) // depth_divisor * depth_divisor)
        return int(new_filters + depth_divisor if new_filters < 0.9 * filters else new_filters)

    def round_repeats(repeats: int) -> int:
        return int(math.ceil(depth_coefficient * repeats))

    x = layers.Rescaling(1.0 / 255.0)(img_input)
    x = layers.Normalization(axis=3)(x)
    if weights is not None:  # Keras: only for weights="imagenet", whose files need it
        x = layers.Rescaling([1.0 / math.sqrt(stddev) for stddev in IMAGENET_STDDEV_RGB])(x)
    x = layers.ZeroPadding2D(padding=common.correct_pad(x, 3), name="stem_conv_pad")(x)
    x = layers.Conv2D(round_filters(32), 3, strides=2, padding="valid", use_bias=False,
                      kernel_initializer=CONV_KERNEL_INITIALIZER, name="stem_conv")(x)
    x = layers.BatchNormalization(axis=3, name="stem_bn")(x)
    x = layers.Activation(activation, name="stem_activation")(x)

    blocks_args = copy.deepcopy(list(blocks_args))
    b, blocks = 0, float(sum(round_repeats(args["repeats"]) for args in blocks_args))
    for i, args in enumerate(blocks_args):
        if args["repeats"] <= 0:
            raise ArgumentError(f"The number of repeats in `EfficientNet` must be > 0. Received: "
                                f"repeats={args['repeats']}")
        args["filters_in"] = round_filters(args["filters_in"])
        args["filters_out"] = round_filters(args["filters_out"])
        for j in range(round_repeats(args.pop("repeats"))):
            if j > 0:
                args["strides"], args["filters_in"] = 1, args["filters_out"]
            x = _block(x, activation, drop_connect_rate * b / blocks, name=f"block{i + 1}{chr(j + 97)}_", **args)
            b += 1

    x = layers.Conv2D(round_filters(1280), 1, padding="same", use_bias=False,
                      kernel_initializer=CONV_KERNEL_INITIALIZER, name="top_conv")(x)
    x = layers.BatchNormalization(axis=3, name="top_bn")(x)
    x = layers.Activation(activation, name="top_activation")(x)
    x = common.global_pooling(x, "avg" if include_top else pooling)
    if include_top:
        if dropout_rate > 0:
            x = layers.Dropout(dropout_rate, name="top_dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation, kernel_initializer=DENSE_KERNEL_INITIALIZER,
                         name="predictions")(x)
    return common.application_model(img_input, x, name, weights)


def _variant(weights_name: str) -> Callable[..., Model]:
    """Keras' ``EfficientNet<weights_name>``: :func:`EfficientNet` with its ``VARIANTS`` entry."""
    width, depth, size, dropout = VARIANTS[weights_name]
    keras_name = f"EfficientNet{weights_name.upper()}"

    def builder(include_top: bool = True, weights: str | os.PathLike | None = None,
                input_tensor: SymbolicTensor | None = None, input_shape: Sequence[int | None] | None = None,
                pooling: str | None = None, classes: int = 1000,
                classifier_activation: str | Callable | None = "softmax", name: str = keras_name.lower()) -> Model:
        return EfficientNet(width, depth, size, dropout, name=name, include_top=include_top, weights=weights,
                            input_tensor=input_tensor, input_shape=input_shape, pooling=pooling, classes=classes,
                            classifier_activation=classifier_activation, weights_name=weights_name)

    builder.__name__ = builder.__qualname__ = keras_name
    builder.__doc__ = (f"Keras 3's {keras_name}: :func:`EfficientNet` with width coefficient {width}, depth "
                       f"coefficient {depth}, default size {size} and top dropout {dropout}.")
    return builder


EfficientNetB0 = _variant("b0")
EfficientNetB1 = _variant("b1")
EfficientNetB2 = _variant("b2")
EfficientNetB3 = _variant("b3")
EfficientNetB4 = _variant("b4")
EfficientNetB5 = _variant("b5")
EfficientNetB6 = _variant("b6")
EfficientNetB7 = _variant("b7")


def preprocess_input(x: Any, data_format: str | None = None) -> Any:
    """Keras' EfficientNet ``preprocess_input``: ``x`` unchanged, as the network rescales and normalises
    pixels in [0, 255] itself."""
    return x
