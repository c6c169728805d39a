"""Keras 3 model configs (the ``config.json`` of a ``.keras`` archive) as fluxnet model configs, and back.

Reading is generic, so a layer that fluxnet registers under Keras' class name needs no code here: a Keras
layer entry becomes the fluxnet layer of the same class name (``fluxnet.layers.LAYERS``), and its Keras
arguments the constructor arguments of the same names. Serialized values are read as data only: a
``DTypePolicy`` becomes its name, an initializer its registered fluxnet name, a ``__numpy__`` array a
list; anything holding code (``Lambda``, ``__lambda__``) is refused. A Keras argument that fluxnet's
constructor lacks is accepted only with a value that leaves the result as fluxnet computes it (None, or
the value ``NEUTRAL_ARGUMENTS`` lists); any other (a regularizer, a constraint, ``data_format=
"channels_first"``) is a ConfigError naming the layer and the argument, never silently dropped.

Writing turns ``model.get_config()`` into Keras' serialized form: each layer as ``{"module",
"class_name", "config", "registered_name", "build_config"}`` with Keras' dtype-policy and initializer
objects, a functional model's calls as ``inbound_nodes`` of ``__keras_tensor__`` references
``[layer, call, 0]``. A call counts among the calls in the model, from 0, except in a model's
``input_layers``/``output_layers``, where a nested functional model's calls count from 1 (Keras gives it
a node of its own first).
"""
from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable, Mapping

from fluxnet import activations, initializers
from fluxnet.errors import ArgumentError, ConfigError, FluxnetError
from fluxnet.layers.base import LAYERS, Layer
from fluxnet.layers.core import InputLayer
from fluxnet.models.functional import Model
from fluxnet.models.sequential import Sequential

NEUTRAL_ARGUMENTS: dict[str, tuple] = {
    "data_format": ("channels_last",),  # fluxnet layers compute NHWC
    "sparse": (False,), "ragged": (False,), "optional": (False,),  # InputLayer: one dense array
    "synchronized": (False,),  # BatchNormalization's statistics per device
    "renorm": (False,), "renorm_momentum": (0.99,),  # BatchNormalization without batch renormalization
    "rms_scaling": (False,),  # LayerNormalization: centred variance
    "invert": (False,),  # Normalization: normalises, does not denormalise
}
"""Keras arguments a fluxnet layer may lack, with the values that mean "feature off" (None always does)."""

_MODELS = ("Sequential", "Functional")
# Keras initializer arguments besides ``seed`` (fluxnet draws from the model's key) that are not None,
# at their defaults; other initializer classes have none.
_INITIALIZER_DEFAULTS = {"RandomNormal": {"mean": 0.0, "stddev": 0.05},
                         "TruncatedNormal": {"mean": 0.0, "stddev": 0.05},
                         "RandomUniform": {"minval": -0.05, "maxval": 0.05}, "Orthogonal": {"gain": 1.0}}
_USE_DEFAULT = object()  # an argument to leave at fluxnet's default
_FUNCTIONAL_MODULE = "keras.src.models.functional"


# ------------------------------------------------------------------------------------------- Keras -> fluxnet
def from_keras(serialized: Mapping, source: str) -> dict:
    """The fluxnet model config (``fx.model_from_config``) of a Keras serialized Sequential or Functional
    model (the content of ``config.json``); ``source`` names the file in errors."""
    return _model(serialized, source, "")


def _model(entry: Mapping, source: str, prefix: str) -> dict:
    class_name, config = entry.get("class_name"), entry.get("config")
    if not isinstance(config, Mapping) or not isinstance(config.get("layers"), list):
        raise ConfigError(f"{source}: the config of model {prefix + str(entry.get('name', ''))!r} has no list of "
                          "layers: not a Keras 3 model config.")
    if class_name == "Sequential":
        layers = [_layer(e, source, prefix) for e in config["layers"]]
        if not layers or layers[0]["class_name"] != "InputLayer":
            raise ConfigError(f"{source}: Sequential model {config.get('name')!r} was saved without an input shape "
                              "(never built), so it has no weights to load.")
        built = {"class_name": "Sequential", "name": config.get("name"), "layers": layers}
    elif class_name == "Functional" and entry.get("registered_name") in (None, "Functional"):
        built = _functional(config, source, prefix)
    else:
        raise ConfigError(f"{source}: model {prefix + str(config.get('name'))!r} is a "
                          f"{entry.get('registered_name') or class_name!r} model; only Sequential and Functional "
                          "models keep their graph in the config (a subclassed keras.Model does not).")
    return built if config.get("trainable", True) else {**built, "trainable": False}


def _layer(entry: Mapping, source: str, prefix: str) -> dict:
    """``{"class_name", "config"}`` of the fluxnet layer (or nested model) for one Keras layer entry."""
    class_name, config = entry.get("class_name"), entry.get("config")
    if not isinstance(config, Mapping):
        raise ConfigError(f"{source}: layer entry {entry.get('name')!r} has no config.")
    name = entry.get("name", config.get("name"))
    where = f"{source}: Keras layer {prefix + str(name)!r} ({class_name})"
    if class_name in _MODELS:
        nested = _model(entry, source, f"{prefix}{name}/")
        return {"class_name": nested["class_name"], "config": nested}
    if class_name == "Lambda":
        raise ConfigError(f"{where}: a Lambda layer's function is Python bytecode in the file, and fluxnet never "
                          "runs code from a file. Replace it in the Keras model (an Activation or another built-in "
                          "layer), or rebuild the model in fluxnet and load its weights with fx.load_keras_weights.")
    if class_name not in LAYERS:
        supported = [n for n in LAYERS.names() if n != "Lambda"]
        raise ConfigError(f"{where}: fluxnet has no layer class {class_name!r}. Supported classes: "
                          f"{', '.join(supported)}.")
    cls = LAYERS.get(class_name)
    if cls is InputLayer:
        config = _input_arguments(config, where)
    args = _arguments(cls, config, where)
    try:
        cls(**args)  # the constructor's own checks, reported with the layer's name
    except (FluxnetError, TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None
    return {"class_name": class_name, "config": args}


def _input_arguments(config: Mapping, where: str) -> dict:
    """An InputLayer's Keras ``batch_shape`` as fluxnet's ``shape`` (the batch axis excluded)."""
    batch_shape = config.get("batch_shape")
    if not isinstance(batch_shape, list) or not batch_shape:
        raise ConfigError(f"{where}: an InputLayer needs a 'batch_shape' list, got {batch_shape!r}.")
    rest = {k: v for k, v in config.items() if k != "batch_shape"}
    return {**rest, "shape": batch_shape[1:]}  # a fixed batch size only restricts the inputs Keras accepts


def _parameters(cls: type) -> dict[str, Any]:
    """``{argument: default}`` of the keyword arguments ``cls`` takes, its base classes' included where it
    passes on ``**kwargs`` (``inspect.Parameter.empty``: no default)."""
    defaults: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = list(inspect.signature(klass.__init__).parameters.values())[1:]
        for p in params:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                defaults.setdefault(p.name, p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return defaults


def _arguments(cls: type, config: Mapping, where: str) -> dict:
    """Constructor arguments from Keras ones; those at fluxnet's default are left out (so a fluxnet model
    written and read back has its own config)."""
    accepted = _parameters(cls)
    args = {}
    for key, value in config.items():
        if key not in accepted:
            if value is not None and value not in NEUTRAL_ARGUMENTS.get(key, ()):
                raise ConfigError(f"{where}: argument {key}={_describe(value)} has no counterpart in fluxnet's "
                                  f"{cls.__name__} (arguments: {', '.join(sorted(accepted))}), and leaving it "
                                  "out would change the model. Remove it from the Keras model to load it.")
            continue
        value = _value(value, f"{where}, argument {key!r}")
        if value is not _USE_DEFAULT and value != accepted[key]:
            args[key] = value
    return args


def _value(value: Any, where: str) -> Any:
    """A serialized Keras argument as plain data for a fluxnet constructor."""
    if isinstance(value, list):
        return [_value(v, where) for v in value]
    if not isinstance(value, Mapping):
        return value
    class_name, config = value.get("class_name"), value.get("config")
    if class_name in ("__numpy__", "__tensor__") and isinstance(config, Mapping):
        return config.get("value")
    if "class_name" not in value:
        return {k: _value(v, where) for k, v in value.items()}
    module = str(value.get("module"))
    if class_name in ("DTypePolicy", "FloatDTypePolicy") and isinstance(config, Mapping):
        return config.get("name")
    if module.startswith("keras") and module.endswith("initializers"):
        return _initializer(class_name, config or {}, where)
    if class_name == "function" and isinstance(config, str) and config in activations.ACTIVATIONS:
        return config
    raise ConfigError(f"{where}: {_describe(value)} is a serialized Keras object that fluxnet does not "
                      "translate (it reads initializers, dtype policies, activations by name and arrays; it never "
                      "runs code from a file).")


def _initializer(class_name: str, config: Mapping, where: str) -> Any:
    """The fluxnet name of a Keras initializer at its default arguments; otherwise a warning and
    fluxnet's default (initializers only shape fresh weights: the loaded ones are unaffected)."""
    options = {k: v for k, v in config.items() if k != "seed" and v is not None}
    if class_name in initializers.INITIALIZERS and options == _INITIALIZER_DEFAULTS.get(class_name, {}):
        return initializers.serialize(initializers.INITIALIZERS.get(class_name))
    warnings.warn(f"{where}: fluxnet has no initializer {class_name}({options}); the layer keeps fluxnet's default "
                  "initializer for it. The loaded weights are unaffected; it only matters if the layer is "
                  "initialised afresh.", stacklevel=2)
    return _USE_DEFAULT


def _describe(value: Any) -> str:
    if isinstance(value, Mapping) and "class_name" in value:
        return f"{value['class_name']}({value.get('config')})"
    return repr(value)


def _functional(config: Mapping, source: str, prefix: str) -> dict:
    """A functional model's layers and calls: Keras lists each layer's calls (``inbound_nodes``) with
    the layer; fluxnet lists calls in an order where each one's inputs exist."""
    entries = config["layers"]
    layers = [_layer(e, source, prefix) for e in entries]
    names = [layer["config"]["name"] for layer in layers]
    functional = {n for n, l in zip(names, layers) if l["class_name"] == "Functional"}
    calls_made = {n: int(l["class_name"] == "InputLayer") for n, l in zip(names, layers)}
    pending = {n: list(e.get("inbound_nodes") or []) for n, e in zip(names, entries)}

    def ref(history: Any, where: str, in_io: bool = False) -> list:
        layer, node, tensor = history if isinstance(history, list) and len(history) == 3 else (None, None, None)
        first = int(in_io and layer in functional)  # see the module docstring
        if not (isinstance(layer, str) and layer in calls_made and isinstance(node, int) and node >= first):
            raise ConfigError(f"{where}: {history!r} does not refer to a layer call of model {config.get('name')!r}.")
        if tensor != 0:
            raise ConfigError(f"{where}: it uses output {tensor} of layer {layer!r}; fluxnet layers have one output.")
        return [layer, node - first]

    def tensors(struct: Any, where: str) -> Any:
        if _is_tensor(struct):
            return ref((struct.get("config") or {}).get("keras_history"), where)
        if isinstance(struct, list) and struct and all(_is_tensor(s) for s in struct):
            return [tensors(s, where) for s in struct]
        if isinstance(struct, Mapping) and struct and all(_is_tensor(s) for s in struct.values()):
            return {k: tensors(v, where) for k, v in struct.items()}  # a nested model's dict of inputs
        raise ConfigError(f"{where}: it is called on {_describe(struct)}; fluxnet calls layers on tensors only.")

    nodes: list[dict] = []
    while any(pending.values()):
        before = len(nodes)
        for name in names:
            while pending[name]:
                node = _node(pending[name][0], tensors, f"{source}: the call of Keras layer {prefix + name!r}")
                if not all(r[1] < calls_made[r[0]] for r in _refs(node["inputs"])):
                    break  # an input comes from a call not yet made
                nodes.append(node | {"layer": name})
                calls_made[name] += 1
                pending[name].pop(0)
        if len(nodes) == before:
            stuck = sorted(n for n, p in pending.items() if p)
            raise ConfigError(f"{source}: the calls of layers {stuck} in model {config.get('name')!r} wait on each "
                              "other or on calls that do not exist: the graph is not a valid Keras model.")

    def io(struct: Any, what: str) -> Any:
        where = f"{source}: the {what} of model {prefix + str(config.get('name'))!r}"
        if isinstance(struct, list) and len(struct) == 3 and isinstance(struct[0], str):
            return ref(struct, where, in_io=True)
        if isinstance(struct, list):
            return [ref(s, where, in_io=True) for s in struct]
        if isinstance(struct, Mapping):
            return {k: ref(s, where, in_io=True) for k, s in struct.items()}
        raise ConfigError(f"{where} are {struct!r}, not tensor references.")

    return {"class_name": "Functional", "name": config.get("name"), "layers": layers, "nodes": nodes,
            "inputs": io(config.get("input_layers"), "inputs"), "outputs": io(config.get("output_layers"), "outputs")}


def _is_tensor(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get("class_name") == "__keras_tensor__"


def _node(data: Any, tensors: Callable[[Any, str], Any], where: str) -> dict:
    """One Keras call ``{"args": [inputs], "kwargs": {...}}`` as a fluxnet node (without its layer)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} is in the Keras 2 node format {data!r}; fluxnet reads Keras 3 archives.")
    args, kwargs = data.get("args") or [], dict(data.get("kwargs") or {})
    if len(args) != 1:
        raise ConfigError(f"{where} passes {len(args)} positional arguments; fluxnet layers take one input.")
    node = {"inputs": tensors(args[0], where)}
    training = kwargs.pop("training", None)
    if training is not None:
        node["training"] = bool(training)
    other = {k: v for k, v in kwargs.items() if v is not None}
    if other:
        raise ConfigError(f"{where} passes {other}; fluxnet calls take only 'training' (and no mask).")
    return node


# ------------------------------------------------------------------------------------------- fluxnet -> Keras
def to_keras(model: Model) -> dict:
    """The Keras serialized form (``config.json``) of a fluxnet Sequential or Functional model, which
    ``keras.saving.load_model`` rebuilds; every layer must be one Keras has under the same class name."""
    return _keras_model(model, model.get_config())


def _keras_model(model: Model, config: Mapping) -> dict:
    if isinstance(model, Sequential):
        layers = [_keras_layer(model.get_layer(c["config"]["name"]), c) for c in config["layers"]]
        inner = {"name": model.name, "trainable": model.trainable, "layers": layers,
                 "build_input_shape": list(model.inputs[0].shape)}
        return {"module": "keras", "class_name": "Sequential", "config": inner, "registered_name": None,
                "build_config": {"input_shape": list(model.inputs[0].shape)}}
    return {"module": _FUNCTIONAL_MODULE, "class_name": "Functional", "config": _keras_graph(model, config),
            "registered_name": "Functional", "build_config": {"input_shape": _shape(model.built_input_shape)}}


def _keras_graph(model: Model, config: Mapping) -> dict:
    """A functional model's layers with their ``inbound_nodes``, and its inputs and outputs."""
    layers = {c["config"]["name"]: (model.get_layer(c["config"]["name"]), c) for c in config["layers"]}
    offset = {name: int(isinstance(layer, Model) and not isinstance(layer, Sequential))
              for name, (layer, _) in layers.items()}
    outputs: dict[tuple, tuple] = {(name, 0): ((None, *layer.shape), layer.input_dtype)
                                   for name, (layer, _) in layers.items() if isinstance(layer, InputLayer)}

    def history(ref: list, in_io: bool = False) -> list:
        return [ref[0], ref[1] + (in_io and offset[ref[0]]), 0]  # see the module docstring

    def tensor(ref: list) -> dict:
        shape, dtype = outputs[tuple(ref)]
        return {"class_name": "__keras_tensor__",
                "config": {"shape": list(shape), "dtype": dtype, "keras_history": history(ref)}}

    inbound: dict[str, list] = {name: [] for name in layers}
    for node in config["nodes"]:  # in graph order: every input's shape is known
        layer = layers[node["layer"]][0]
        inbound[layer.name].append({"args": [_map_refs(tensor, node["inputs"])],
                                    "kwargs": {"training": node["training"]} if "training" in node else {}})
        if isinstance(layer, Model):
            out = (layer.outputs[0].shape, layer.outputs[0].dtype)
        else:
            out = (layer.output_shape_for(_map_refs(lambda r: outputs[tuple(r)][0], node["inputs"])),
                   layer.compute_dtype)
        outputs[(layer.name, len(inbound[layer.name]) - 1)] = out

    def io(ref: list) -> list:
        return history(ref, in_io=True)

    return {"name": model.name, "trainable": model.trainable,
            "layers": [{**_keras_layer(layer, c), "name": name, "inbound_nodes": inbound[name]}
                       for name, (layer, c) in layers.items()],
            "input_layers": _map_refs(io, config["inputs"]), "output_layers": _map_refs(io, config["outputs"])}


def _map_refs(fn: Callable[[list], Any], struct: Any) -> Any:
    """``fn`` of each ``[layer, call]`` reference of a fluxnet inputs structure (one, a list or a dict)."""
    if isinstance(struct, Mapping):
        return {k: fn(r) for k, r in struct.items()}
    return [fn(r) for r in struct] if isinstance(struct[0], list) else fn(struct)


def _refs(struct: Any) -> list[list]:
    """The references of a fluxnet inputs structure, as a list."""
    found: list[list] = []
    _map_refs(found.append, struct)
    return found


def _keras_layer(layer: Layer, entry: Mapping) -> dict:
    """One layer's Keras entry (without a functional model's ``name`` and ``inbound_nodes``)."""
    if isinstance(layer, Model):
        return _keras_model(layer, entry["config"])
    if isinstance(layer, InputLayer):
        config = {"batch_shape": [None, *layer.shape], "dtype": layer.input_dtype, "sparse": False, "ragged": False,
                  "name": layer.name, "optional": False}
        return {"module": "keras.layers", "class_name": "InputLayer", "config": config, "registered_name": None}
    if entry["class_name"] == "Lambda":
        raise ArgumentError(f"{layer.describe()} cannot be written to a .keras archive: Keras stores a Lambda's "
                            "function as Python bytecode, which fluxnet does not write. Use an Activation layer or "
                            "a layer class Keras also has.")
    config = {k: _keras_initializer(layer, k, v) if k.endswith("_initializer") else v
              for k, v in entry["config"].items() if k != "input_shape"}
    config["dtype"] = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": layer.dtype_policy.name},
                       "registered_name": None}
    return {"module": "keras.layers", "class_name": entry["class_name"], "config": config, "registered_name": None,
            "build_config": {"input_shape": _shape(layer.built_input_shape)}}


def _keras_initializer(layer: Layer, arg: str, name: str) -> dict:
    """Keras' serialized initializer for a fluxnet one (by its CamelCase alias, ``GlorotUniform``)."""
    fn = initializers.get(name)
    keras_names = [n for n in initializers.INITIALIZERS.names()
                   if n[:1].isupper() and initializers.INITIALIZERS.get(n) is fn]
    if not keras_names:
        raise ArgumentError(f"{layer.describe()}: {arg}={name!r} has no Keras initializer class, so a .keras archive "
                            "cannot record it. Use a Keras initializer (glorot_uniform, he_normal, zeros, ...).")
    return {"module": "keras.initializers", "class_name": keras_names[0], "config": {}, "registered_name": None}


def _shape(shape: Any) -> Any:
    """A shape, or a list of them, as JSON lists."""
    if isinstance(shape, list):
        return [_shape(s) for s in shape]
    return None if shape is None else list(shape)
