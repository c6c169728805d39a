"""Each layer class' variables in Keras' order (``layer.weights``: creation order), and a model's
layers walked as Keras walks them, for Keras' weights files and ``model.get_weights()``. Register a
custom layer's order here by its class name."""
from __future__ import annotations

from typing import Any, Iterator, Mapping, NamedTuple

from fluxnet.layers.base import to_snake_case
from fluxnet.registry import Registry

VARIABLE_ORDERS: Registry[tuple[str, ...]] = Registry("layer class with a known Keras variable order")
"""Layer class name -> its variable names in Keras' order."""
VARIABLE_ORDERS.register("Conv2D", ("kernel", "bias"))
VARIABLE_ORDERS.register("Dense", ("kernel", "bias"))
VARIABLE_ORDERS.register("BatchNormalization", ("gamma", "beta", "moving_mean", "moving_variance"))
VARIABLE_ORDERS.register("DepthwiseConv2D", ("kernel", "bias"))  # Keras 3 names the depthwise kernel "kernel"
VARIABLE_ORDERS.register("SeparableConv2D", ("depthwise_kernel", "pointwise_kernel", "bias"))
VARIABLE_ORDERS.register("LayerNormalization", ("gamma", "beta"))
VARIABLE_ORDERS.register("Normalization", ("mean", "variance", "count"))


def keras_layer_keys(model: Any) -> dict[str, str]:
    """``{layer name: Keras weights-file key}`` (``conv2d``, ``conv2d_1``, ...) for every layer of
    ``model``: the snake-case class name (``functional`` for a functional model) and a per-class counter
    in ``model.layers`` order, as Keras' ``save_weights`` keys them."""
    counters: dict[str, int] = {}
    keys = {}
    for layer in model.layers:  # Keras' order, which its weights files follow
        kind = type(layer).__name__
        base = to_snake_case("Functional" if kind == "Model" else kind)
        count = counters[base] = counters.get(base, -1) + 1
        keys[layer.name] = base if count == 0 else f"{base}_{count}"
    return keys


class LayerVariables(NamedTuple):
    """One layer's variables as Keras orders them (``keras_variables``)."""
    names: tuple[str, ...]         # the layer's name after the names of the models it is nested in
    keys: tuple[str, ...]          # the same path as Keras' weights-file keys
    layer: Any
    collections: dict[str, str]    # variable name -> collection ("params", "batch_stats")
    order: tuple[str, ...] | None  # Keras' variable order for its class; None: not known


def keras_variables(model: Any, abstract: Mapping | None = None, names: tuple[str, ...] = (),
                    keys: tuple[str, ...] = ()) -> Iterator[LayerVariables]:
    """Every layer of ``model`` that has variables, in Keras' ``model.weights`` order: layer by layer
    in ``model.layers`` order, a nested model's layers in its place (recursively)."""
    abstract = model.abstract_variables() if abstract is None else abstract
    layer_keys = keras_layer_keys(model)
    for layer in model.layers:
        present = {v: c for c, sub in abstract.items() for v in sub.get(layer.name, {})}
        if not present:
            continue
        path, key_path = (*names, layer.name), (*keys, layer_keys[layer.name])
        if hasattr(layer, "abstract_variables"):  # a model used as a layer
            inner = {c: sub[layer.name] for c, sub in abstract.items() if layer.name in sub}
            yield from keras_variables(layer, inner, path, key_path)
            continue
        kind = type(layer).__name__
        yield LayerVariables(path, key_path, layer, present, VARIABLE_ORDERS.get(kind) if kind in VARIABLE_ORDERS
                             else None)
