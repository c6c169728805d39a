"""``Sequential``: a plain stack of layers, each feeding the next (a Functional model underneath)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from fluxnet.errors import ArgumentError, ArgumentTypeError
from fluxnet.layers.base import LAYERS, Layer, SymbolicTensor, layer_class_name, register
from fluxnet.layers.core import Input, InputLayer
from fluxnet.models.functional import Model, assign_names, check_unique_names


@register("Sequential")
class Sequential(Model):
    """``Sequential([layers.Input(shape), layer, ...])``, or layers added one by one with ``add``.

    The input shape comes from a leading ``layers.Input``, an ``input_shape=`` argument of the first
    layer (Keras 2 style), a model as the first layer (its input), ``build(input_shape)``, or the first
    call on a symbolic tensor. ``layers`` and ``get_layer(index=...)`` exclude the input, as Keras. A
    model in the stack is one layer, its variables nested under its name.
    """

    shows_connections = False

    def __init__(self, layers: Sequence[Layer | SymbolicTensor] | None = None, name: str | None = None):
        self._stack: list[Layer] = []
        self._init_model(name, "sequential")
        self._tensor: SymbolicTensor | None = None  # output of the last connected layer
        self._input_tensor: SymbolicTensor | None = None
        for layer in layers or []:
            self.add(layer)

    def add(self, layer: Layer | SymbolicTensor) -> None:
        """Append a layer or a model (or set the input with a ``layers.Input`` tensor or InputLayer)."""
        if isinstance(layer, SymbolicTensor):
            if not isinstance(layer.layer, InputLayer):
                raise ArgumentTypeError(f"Sequential.add takes layers or an Input tensor, got {layer!r}.")
            layer = layer.layer
        if isinstance(layer, InputLayer):
            if self._input_tensor is not None or self._stack:
                raise ArgumentError("A Sequential model's Input must come first, and only once.")
            self._input_tensor = layer.output
            self._tensor = layer.output
            return
        if not isinstance(layer, Layer):
            raise ArgumentTypeError(f"Sequential.add takes fluxnet layers or models, got {type(layer).__name__}.")
        if layer is self:
            raise ArgumentError(f"Sequential model {self.name!r} cannot contain itself.")
        if any(layer is l for l in self._stack):
            raise ArgumentError(f"{layer.describe()} is already in Sequential model {self.name!r}.")
        if self._input_tensor is None and not self._stack:
            declared = _declared_input(layer)
            if declared is not None:
                self._input_tensor = self._tensor = Input(*declared)
        if self._tensor is not None:
            # Name and check the layer before calling it, so that a shape error names it and a
            # failed add leaves the model unchanged.
            stack = [self._input_tensor.layer, *self._stack, layer]
            assign_names(stack)
            check_unique_names(stack, self.name)
            self._tensor = layer(self._tensor)
            self._set_graph(self._input_tensor, self._tensor)
        self._stack.append(layer)

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Give a model without an Input its input shape (Keras' ``build``; batch axis included)."""
        if self._input_tensor is not None:
            raise ArgumentError(f"Sequential model {self.name!r} already has an input shape.")
        stack, self._stack = self._stack, []
        self.add(Input(tuple(input_shape)[1:]))
        for layer in stack:
            self.add(layer)

    def __call__(self, inputs: Any, training: bool | None = None) -> SymbolicTensor:
        """As ``Model.__call__``; a model without an input shape takes it from ``inputs`` first (Keras)."""
        if self._input_tensor is None and isinstance(inputs, SymbolicTensor):
            self.build(inputs.shape)
        return super().__call__(inputs, training=training)

    def __getattr__(self, attr: str):
        # Only reached for attributes that do not exist yet: the graph of an unbuilt model.
        if attr in _GRAPH_ATTRS:
            raise ArgumentError(f"Sequential model {self.name!r} has no input shape yet: start it with "
                                "layers.Input(shape), pass input_shape= to its first layer, or call "
                                "model.build((None, *shape)).")
        raise AttributeError(attr)

    @property
    def layers(self) -> list[Layer]:
        return list(self._stack)

    def get_config(self) -> dict:
        layers = [self._input_tensor.layer] if self._input_tensor is not None else []
        config = {"class_name": "Sequential", "name": self.name,
                  "layers": [{"class_name": layer_class_name(l), "config": l.get_config()}
                             for l in layers + self._stack]}
        return config if self.trainable else {**config, "trainable": False}

    @classmethod
    def from_config(cls, config: Mapping) -> "Sequential":
        model = cls([LAYERS.get(c["class_name"]).from_config(dict(c["config"])) for c in config["layers"]],
                    name=config.get("name"))
        model._trainable = config.get("trainable", True)  # the layers' own flags come from their configs
        return model


def _declared_input(layer: Layer) -> tuple[tuple, str] | None:
    """``(shape, dtype)`` of the input that ``layer`` as the first of a Sequential implies, if any: a
    model's input, or a layer's ``input_shape=`` argument (Keras 2 style)."""
    if isinstance(layer, Sequential) and layer._input_tensor is None:
        return None
    if isinstance(layer, Model):
        if len(layer.inputs) != 1:
            raise ArgumentError(f"A Sequential model's layers take one input; {layer.describe()} has "
                                f"{len(layer.inputs)}.")
        return layer.inputs[0].shape[1:], layer.inputs[0].dtype
    return None if layer.input_shape_arg is None else (layer.input_shape_arg, "float32")


_GRAPH_ATTRS = frozenset({"_graph_nodes", "_layers", "_inputs", "_outputs", "_flat_inputs", "_flat_outputs",
                          "_abstract"})
