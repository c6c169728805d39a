"""Models by name for configs (``model.name``): ``mlp``, ``cnn`` and ``resnet``, built from fluxnet layers.

Each builder takes the input shape, the number of classes and its own keyword arguments (the rest of
the ``model`` config) and returns a model whose output is logits (pair it with a ``from_logits`` loss).
"""
from __future__ import annotations

from typing import Callable, Sequence

from fluxnet import layers
from fluxnet.errors import ArgumentError
from fluxnet.models.functional import Model
from fluxnet.models.sequential import Sequential
from fluxnet.registry import Registry

MODELS: Registry[Callable[..., Model]] = Registry("model")
register = MODELS.register  # @register(NAME): a model builder available as ``model.name=NAME``


@register("mlp")
def mlp(input_shape: Sequence[int], num_classes: int, units: Sequence[int] = (256,), dropout: float = 0.2,
        activation: str = "relu") -> Model:
    """Flatten, then Dense-Dropout blocks, then a Dense logits layer."""
    model = Sequential([layers.Input(tuple(input_shape)), layers.Flatten()], name="mlp")
    for n in units:
        model.add(layers.Dense(n, activation=activation))
        if dropout:
            model.add(layers.Dropout(dropout))
    model.add(layers.Dense(num_classes, name="logits"))
    return model


@register("cnn")
def cnn(input_shape: Sequence[int], num_classes: int, filters: Sequence[int] = (32, 64), kernel_size: int = 3,
        padding: str = "same", batch_norm: bool = True, dense_units: int = 128, dropout: float = 0.5,
        activation: str = "relu") -> Model:
    """A plain CNN: [Conv2D - (BatchNormalization) - Activation - MaxPooling2D] per entry of
    ``filters``, then Flatten - Dropout - Dense - Dense(logits)."""
    model = Sequential([layers.Input(tuple(input_shape))], name="cnn")
    for i, f in enumerate(filters):
        model.add(layers.Conv2D(f, kernel_size, padding=padding, use_bias=not batch_norm, name=f"conv{i + 1}"))
        if batch_norm:
            model.add(layers.BatchNormalization(name=f"bn{i + 1}"))
        model.add(layers.Activation(activation, name=f"act{i + 1}"))
        model.add(layers.MaxPooling2D(name=f"pool{i + 1}"))
    model.add(layers.Flatten(name="flatten"))
    if dropout:
        model.add(layers.Dropout(dropout, name="dropout"))
    if dense_units:
        model.add(layers.Dense(dense_units, activation=activation, name="fc"))
    model.add(layers.Dense(num_classes, name="logits"))
    return model


def _residual_block(x, filters: int, stride: int, name: str):
    shortcut = x
    h = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    h = layers.BatchNormalization(name=f"{name}_bn1")(h)
    h = layers.Activation("relu", name=f"{name}_relu1")(h)
    h = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(h)
    h = layers.BatchNormalization(name=f"{name}_bn2")(h)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    h = layers.Add(name=f"{name}_add")([h, shortcut])
    return layers.Activation("relu", name=f"{name}_out")(h)


@register("resnet")
def resnet(input_shape: Sequence[int], num_classes: int, stages: Sequence[int] = (16, 32, 64),
           blocks_per_stage: int = 1, dropout: float = 0.0) -> Model:
    """A small functional ResNet (basic blocks with Add shortcuts; stride 2 from the second stage),
    global average pooling and a Dense logits layer."""
    inputs = layers.Input(tuple(input_shape), name="image")
    x = layers.Conv2D(stages[0], 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    for s, filters in enumerate(stages):
        for b in range(blocks_per_stage):
            x = _residual_block(x, filters, 2 if s > 0 and b == 0 else 1, f"stage{s + 1}_block{b + 1}")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    return Model(inputs, layers.Dense(num_classes, name="logits")(x), name="resnet")


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **kwargs) -> Model:
    """The model registered as ``name``; unknown names and arguments fail with the valid ones listed."""
    import inspect

    builder = MODELS.get(name)
    valid = [p for p in inspect.signature(builder).parameters if p not in ("input_shape", "num_classes")]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ArgumentError(f"Unknown argument(s) {unknown} for model {name!r}; valid: {valid}.")
    return builder(input_shape, num_classes, **kwargs)
