"""The Layer base class and the symbolic tensors that layers are called on to build a graph.

A layer is configuration plus three pure functions:

* ``compute_output_shape(input_shape)`` -- shape inference and validation at graph-build time
  (shapes include the batch axis as ``None``; raise ValueError when the input does not fit);
* ``init(rng, input_shape) -> {collection: {name: array}}`` -- this layer's variables
  (``"params"`` are trained, other collections such as ``"batch_stats"`` are non-trainable state);
* ``call(variables, inputs, *, training, rng) -> outputs`` -- the forward computation.

Layers with state updates (BatchNormalization) override ``apply``, which returns
``(outputs, updates)``. A layer never stores arrays: models keep variables keyed by layer name.
A layer that sets ``accepts_mask = True`` also gets ``mask=`` in ``apply`` when ``model.apply`` is given
a row mask (a boolean ``(batch,)`` array, False for rows that only pad a batch).

Custom layers subclass :class:`Layer` and implement what they need of the three functions (the
defaults: identity shape, no variables). Constructor arguments are recorded automatically for
``get_config`` (they must be JSON-friendly); ``@layers.register("Name")`` makes the class known to
``Model.from_config``. A learned per-feature scale, usable in Sequential and Functional models::

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> import fluxnet as fx
    >>> from fluxnet import layers
    >>> @layers.register("LearnedScale")
    ... class LearnedScale(layers.Layer):
    ...     # inputs * gamma: one learned factor per feature (last axis)
    ...     def __init__(self, initial_value=1.0, name=None, **kwargs):
    ...         super().__init__(name=name, **kwargs)
    ...         self.initial_value = initial_value
    ...     def compute_output_shape(self, input_shape):
    ...         if input_shape[-1] is None:
    ...             raise ValueError("the last axis must have a known size.")
    ...         return input_shape
    ...     def init(self, rng, input_shape):
    ...         return {"params": {"gamma": jnp.full((input_shape[-1],), self.initial_value)}}
    ...     def call(self, variables, inputs, *, training=False, rng=None):
    ...         return inputs * variables["params"]["gamma"]
    >>> model = fx.Sequential([layers.Input((3,)), LearnedScale(2.0), layers.Dense(1)])
    >>> [layer.name for layer in model.layers]
    ['learned_scale', 'dense']
    >>> model.count_params()  # 3 gammas + Dense (3 + 1) * 1
    7
    >>> variables = model.init(jax.random.key(0))
    >>> y, state = model.apply(variables, np.ones((2, 3), np.float32))
    >>> y.shape
    (2, 1)
    >>> x = layers.Input((3,))
    >>> functional = fx.Model(x, layers.Dense(2)(LearnedScale(name="scale")(x)))
    >>> rebuilt = fx.model_from_config(functional.get_config())  # works because it is registered
    >>> type(rebuilt.get_layer("scale")).__name__
    'LearnedScale'
"""
from __future__ import annotations

import inspect
import re
import zlib
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from fluxnet import dtype_policies
from fluxnet.errors import ArgumentError, ArgumentTypeError
from fluxnet.registry import Registry

Shape = tuple  # full shape including the batch axis (None), as Keras' KerasTensor.shape
Variables = dict  # {collection: {variable name: array}} for one layer

LAYERS: Registry[type] = Registry("layer")


register = LAYERS.register  # @register("MyLayer"): model configs can rebuild the class by that name


def layer_class_name(layer: "Layer") -> str:
    """The registered class name that a model config records for ``layer``."""
    name = LAYERS.name_of(type(layer))
    if name is None:
        raise ArgumentError(f"{layer.describe()} has an unregistered class {type(layer).__name__}: decorate it "
                            "with @fluxnet.layers.register(NAME) so model configs can rebuild it.")
    return name


def to_snake_case(name: str) -> str:
    """Keras' default-name rule: ``Conv2D -> conv2d``, ``MaxPooling2D -> max_pooling2d``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def stable_hash(text: str) -> int:
    """A hash of ``text`` that is the same in every process (Python's ``hash`` is salted)."""
    return zlib.crc32(text.encode("utf-8")) & 0x7FFFFFFF


def layer_rng(rng: jax.Array | None, name: str, call_index: int = 0) -> jax.Array | None:
    """The random key of one layer call, derived from the model's key and the layer's name."""
    if rng is None:
        return None
    key = jax.random.fold_in(rng, stable_hash(name))
    return jax.random.fold_in(key, call_index) if call_index else key


def format_shape(shape: Sequence | None) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


class LayerError(ArgumentError):
    """A layer does not fit the input it is given (raised while the graph is built)."""


class SymbolicTensor:
    """A placeholder for a layer's output while a graph is being built (Keras' KerasTensor).

    ``shape`` includes the batch axis as ``None``. ``node`` is the layer call that produced it.
    """

    def __init__(self, shape: Shape, dtype: str, node: "Node"):
        self.shape = tuple(shape)
        self.dtype = dtype
        self.node = node

    @property
    def layer(self) -> "Layer":
        return self.node.layer

    def __repr__(self) -> str:
        return f"<SymbolicTensor shape={format_shape(self.shape)} from {self.node.layer.describe()}>"


class Node:
    """One call of a layer on symbolic inputs: the edges of the model graph.

    ``training`` is the call's own mode (Keras' ``layer(x, training=False)``): None follows the model's
    ``apply``, a bool overrides it for this call.
    """

    def __init__(self, layer: "Layer", inputs: Any, call_index: int, training: bool | None = None):
        if training is not None and not isinstance(training, bool):
            raise ArgumentTypeError(f"training must be None, True or False, got {training!r}.")
        self.layer = layer
        self.inputs = inputs  # a SymbolicTensor, a list of them (merge layers) or a dict (a model's inputs)
        self.call_index = call_index
        self.training = training
        self.output: SymbolicTensor | None = None

    @property
    def parents(self) -> list[SymbolicTensor]:
        return flatten_inputs(self.inputs)


def flatten_inputs(inputs: Any) -> list:
    if isinstance(inputs, Mapping):
        return list(inputs.values())
    if isinstance(inputs, (list, tuple)):
        return list(inputs)
    return [] if inputs is None else [inputs]


class _RecordArgs(type):
    """Metaclass recording each layer's constructor arguments for ``get_config``."""

    def __call__(cls, *args, **kwargs):
        obj = super().__call__(*args, **kwargs)
        if "_config_args" not in obj.__dict__:
            bound = inspect.signature(cls.__init__).bind(obj, *args, **kwargs)
            bound.apply_defaults()
            config = dict(bound.arguments)
            config.pop("self")
            for param in bound.signature.parameters.values():  # fold **kwargs into the config
                if param.kind is inspect.Parameter.VAR_KEYWORD:
                    config.update(config.pop(param.name, {}))
            obj._config_args = config
        return obj


class Layer(metaclass=_RecordArgs):
    """Base class of all layers (see the module docstring for the contract)."""

    accepts_mask = False  # True: apply() takes mask= (a (batch,) bool array, False for padding rows)
    autocast = True  # False: the model never casts this layer's inputs and parameters (it keeps float32 itself)

    def __init__(self, name: str | None = None, trainable: bool = True, input_shape: Sequence | None = None,
                 dtype: str = "float32"):
        if name is not None and (not isinstance(name, str) or not name or "/" in name):
            raise ArgumentError(f"Layer name must be a non-empty string without '/', got {name!r}.")
        self.name = name
        self._trainable = bool(trainable)
        # Run as in inference even when the model trains (Keras: a sub-model called with training=False),
        # e.g. a transfer backbone whose BatchNormalization keeps its moving statistics while it trains.
        self.inference_mode = False
        self._dtype_policy = dtype_policies.get(dtype)
        # Keras 2 style: the first layer of a Sequential may declare its input shape.
        self.input_shape_arg = None if input_shape is None else tuple(input_shape)
        self.built_input_shape: Shape | None = None  # set by the first call on a symbolic tensor
        self._nodes: list[Node] = []

    @property
    def dtype_policy(self) -> dtype_policies.DTypePolicy:
        """The layer's ``DTypePolicy`` (Keras); set it with a name or a policy."""
        return self._dtype_policy

    @dtype_policy.setter
    def dtype_policy(self, value: "str | dtype_policies.DTypePolicy") -> None:
        self._dtype_policy = dtype_policies.get(value)
        if "_config_args" in self.__dict__:  # get_config records the policy set
            self._config_args["dtype"] = self._dtype_policy.name

    @property
    def dtype(self) -> str:
        """The dtype of the layer's variables (Keras' ``layer.dtype``)."""
        return self._dtype_policy.variable_dtype

    @property
    def compute_dtype(self) -> str:
        return self._dtype_policy.compute_dtype

    @property
    def trainable(self) -> bool:
        """Whether the optimizer updates this layer's params (False: frozen; a frozen BatchNormalization
        also runs in inference mode, as Keras)."""
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self._trainable = bool(value)

    # ----------------------------------------------------------------------------------- contract
    def compute_output_shape(self, input_shape: Shape) -> Shape:
        """The output shape for ``input_shape``; raise ValueError when the input does not fit."""
        return input_shape

    def init(self, rng: jax.Array, input_shape: Shape) -> Variables:
        """This layer's variables for an input of ``input_shape`` (default: none)."""
        return {}

    def call(self, variables: Variables, inputs: Any, *, training: bool = False,
             rng: jax.Array | None = None) -> jax.Array:
        raise NotImplementedError(f"{type(self).__name__} must implement call().")

    def apply(self, variables: Variables, inputs: Any, *, training: bool = False,
              rng: jax.Array | None = None) -> tuple[jax.Array, Variables]:
        """``(outputs, updates)``: updates of non-trainable collections (none by default)."""
        return self.call(variables, inputs, training=training, rng=rng), {}

    def get_config(self) -> dict:
        """Constructor arguments (JSON-friendly) that rebuild this layer with ``from_config``."""
        config = {k: _serialize_arg(k, v) for k, v in self._config_args.items()}
        config.update(name=self.name, trainable=self.trainable)
        if config.get("input_shape") is None:
            config.pop("input_shape", None)
        return config

    @classmethod
    def from_config(cls, config: Mapping) -> "Layer":
        return cls(**config)

    # ----------------------------------------------------------------------------------- graph
    def __call__(self, inputs: Any, training: bool | None = None) -> SymbolicTensor:
        """Call the layer on symbolic tensors (``layers.Input`` or other layers' outputs).

        ``training=False`` / ``True`` fixes this call's mode whatever mode the model runs in; None (the
        default) follows ``model.apply(..., training=...)``.
        """
        flat = flatten_inputs(inputs)
        if isinstance(inputs, Mapping) or not flat or not all(isinstance(t, SymbolicTensor) for t in flat):
            raise ArgumentTypeError(
                f"{self.describe()} was called on {type(inputs).__name__}; layers are called on symbolic "
                "tensors (layers.Input(...) or another layer's output) to build a model. To compute on "
                "arrays, build a model and use model.apply(variables, x).")
        in_shape = [t.shape for t in inputs] if isinstance(inputs, (list, tuple)) else inputs.shape
        if self.built_input_shape is not None and _strip_batch(self.built_input_shape) != _strip_batch(in_shape):
            raise LayerError(
                f"{self.describe()} was first called on inputs of shape {_fmt(self.built_input_shape)} and "
                f"now on {_fmt(in_shape)}: a layer called twice shares its weights, so the input shapes "
                "must match.")
        out_shape = self.output_shape_for(in_shape)
        if self.built_input_shape is None:
            self.built_input_shape = in_shape
        node = Node(self, list(inputs) if isinstance(inputs, (list, tuple)) else inputs, len(self._nodes),
                    training)
        node.output = SymbolicTensor(out_shape, self.compute_dtype, node)
        self._nodes.append(node)
        return node.output

    def output_shape_for(self, input_shape: Any) -> Shape:
        """``compute_output_shape`` with errors that name this layer and the shape it got."""
        try:
            return tuple(self.compute_output_shape(input_shape))
        except (ValueError, TypeError) as err:
            raise LayerError(f"{self.describe()} cannot take input of shape {_fmt(input_shape)}: {err}") from None

    @property
    def output(self) -> SymbolicTensor:
        """The output of this layer's first call (Keras' ``layer.output``)."""
        if not self._nodes:
            raise ArgumentError(f"{self.describe()} has not been called on any input yet, so it has no output.")
        if len(self._nodes) > 1:
            raise ArgumentError(f"{self.describe()} has been called {len(self._nodes)} times; "
                                "use the tensor each call returned.")
        return self._nodes[0].output

    @property
    def input(self) -> Any:
        return self._nodes[0].inputs if self._nodes else None

    def describe(self) -> str:
        label = repr(self.name) if self.name else "(not yet named)"
        return f"{type(self).__name__} layer {label}"

    def __repr__(self) -> str:
        return f"<{self.describe()}>"


def _strip_batch(shape: Any) -> Any:
    if isinstance(shape, list):
        return [_strip_batch(s) for s in shape]
    return tuple(shape[1:])


def _fmt(shape: Any) -> str:
    if isinstance(shape, list):
        return "[" + ", ".join(format_shape(s) for s in shape) + "]"
    return format_shape(shape)


def _serialize_arg(arg: str, value: Any) -> Any:
    """``value`` as JSON-friendly data: callables by registered name, tuples and NumPy values as lists."""
    from fluxnet import activations, initializers

    if callable(value) and not isinstance(value, type):
        for module in (activations, initializers):
            try:
                return module.serialize(value)
            except ValueError:
                continue
        raise ArgumentError(f"Cannot record {arg}={value!r} in a model config: register it by name with "
                            "fluxnet.activations.register(name, fn) or fluxnet.initializers.register(name, fn) "
                            "and pass the name.")
    if isinstance(value, (tuple, list)):
        return [_serialize_arg(arg, v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return value


def config_constant(value: Any, arg: str) -> float | list:
    """A number or an array-like of finite numbers (NumPy, JAX) as JSON-friendly floats: a float or nested lists."""
    try:
        array = None if value is None else np.asarray(value, np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or not np.all(np.isfinite(array)):
        raise ArgumentError(f"{arg} must be a finite number or an array of them, got {value!r}.")
    return array.tolist()


def normalize_tuple(value: int | Sequence[int], n: int, arg: str) -> tuple[int, ...]:
    """Keras' ``standardize_tuple``: an int or an n-tuple of positive ints."""
    if isinstance(value, int):
        value = (value,) * n
    value = tuple(value)
    if len(value) != n or not all(isinstance(v, int) and v > 0 for v in value):
        raise ArgumentError(f"{arg} must be a positive int or a tuple of {n} positive ints, got {value!r}.")
    return value


def positive_int(value: Any, arg: str) -> int:
    """``value`` when it is a positive int, else an ArgumentError naming ``arg``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ArgumentError(f"{arg} must be a positive int, got {value!r}.")
    return value


def check_data_format(data_format: str | None) -> None:
    """Only channels_last (NHWC), Keras' default, is supported."""
    if data_format not in (None, "channels_last"):
        raise ArgumentError(f"Only data_format='channels_last' (NHWC) is supported, got {data_format!r}.")


def check_padding(padding: str) -> str:
    padding = str(padding).lower()
    if padding not in ("valid", "same"):
        raise ArgumentError(f"padding must be 'valid' or 'same', got {padding!r}.")
    return padding


def conv_output_length(length: int | None, kernel: int, stride: int, padding: str, dilation: int = 1) -> int | None:
    """Spatial output size of a convolution or pooling window (Keras/TensorFlow rules)."""
    if length is None:
        return None
    effective = (kernel - 1) * dilation + 1
    if padding == "same":
        return -(-length // stride)
    return (length - effective) // stride + 1 if length >= effective else 0


def same_padding(length: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow/Keras "same" padding: the extra cell of an odd total goes after (bottom/right)."""
    effective = (kernel - 1) * dilation + 1
    out = -(-length // stride)
    total = max((out - 1) * stride + effective - length, 0)
    return total // 2, total - total // 2
