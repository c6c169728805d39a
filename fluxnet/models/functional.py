"""``Model``: a Keras-style functional model, a DAG of layer calls from ``Input`` tensors to outputs.

The model owns no arrays. ``init(rng)`` makes ``{"params": {layer_name: ...}, "batch_stats": {...}}``
and ``apply(variables, inputs, training=False, rng=None, mask=None) -> (outputs, state)`` runs the graph;
both are pure and jittable. Because variables are keyed by layer name, a model built from intermediate
outputs of another (a feature extractor) runs on the parent's variables.

A model is also a layer (Keras): called on symbolic tensors, ``base(x, training=False)``, it becomes one
layer of the bigger model, whose variables hold the nested model's own variables under its name
(``{"params": {"base": {"conv2d": ...}}}``).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fluxnet import tree
from fluxnet.errors import ArgumentError, ArgumentTypeError, DataError
from fluxnet import dtype_policies
from fluxnet.layers.base import (LAYERS, Layer, LayerError, Node, SymbolicTensor, flatten_inputs, format_shape,
                                 layer_class_name, layer_rng, register, to_snake_case)
from fluxnet.layers.core import InputLayer
from fluxnet.models.summary import summary_table
from fluxnet.models.training import KerasMethods
from fluxnet.registry import unknown_name_error

Variables = dict


def _flatten(struct: Any, what: str) -> list[SymbolicTensor]:
    """The tensors of a model's inputs/outputs given as a tensor, a list/tuple or a dict."""
    if isinstance(struct, Mapping):
        flat = list(struct.values())
    elif isinstance(struct, (list, tuple)):
        flat = list(struct)
    else:
        flat = [struct]
    if not flat or not all(isinstance(t, SymbolicTensor) for t in flat):
        raise ArgumentTypeError(f"Model {what} must be symbolic tensors (from layers.Input or layer calls), "
                                f"as a tensor, a list or a dict; got {struct!r}.")
    return flat


def _pack(struct: Any, values: list) -> Any:
    """``values`` arranged like ``struct`` (tensor, list, tuple or dict)."""
    if isinstance(struct, Mapping):
        return dict(zip(struct.keys(), values))
    if isinstance(struct, (list, tuple)):
        return type(struct)(values)
    return values[0]


def _topological_nodes(inputs: list[SymbolicTensor], outputs: list[SymbolicTensor]) -> list[Node]:
    """Nodes that the outputs depend on, parents first; the declared inputs lead, in order."""
    order: list[Node] = [t.node for t in inputs]
    seen = {id(n) for n in order}
    for out in outputs:  # iterative post-order DFS, parents in call order (deterministic)
        stack = [(out.node, False)]
        while stack:
            node, expanded = stack.pop()
            if id(node) in seen:
                continue
            if expanded:
                seen.add(id(node))
                order.append(node)
                continue
            stack.append((node, True))
            stack.extend((p.node, False) for p in reversed(node.parents) if id(p.node) not in seen)
    return order


def _ancestors(outputs: list[SymbolicTensor]) -> set[int]:
    seen, stack = set(), [t.node for t in outputs]
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen.add(id(node))
            stack.extend(p.node for p in node.parents)
    return seen


def keras_layer_order(outputs: list[SymbolicTensor]) -> list[Layer]:
    """The layers feeding ``outputs`` in the order Keras' ``Functional.layers`` lists the same graph.

    Keras (``keras/src/ops/function.py: map_graph``) sorts layers by depth, the longest path to an
    output, deepest first, and breaks ties by the order in which a depth-first walk from the outputs
    (parents in call order) first reaches each layer. A Sequential's chain comes out in stack order.
    """
    first_visit: dict[int, int] = {}
    layers: list[Layer] = []
    post_order: list[Node] = []
    finished: set[int] = set()
    for output in outputs:
        stack: list[tuple[Node, bool]] = [(output.node, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                finished.add(id(node))
                post_order.append(node)
                continue
            if id(node) in finished:
                continue
            if id(node.layer) not in first_visit:
                first_visit[id(node.layer)] = len(first_visit)
                layers.append(node.layer)
            stack.append((node, True))
            stack.extend((parent.node, False) for parent in reversed(node.parents))
    node_depth: dict[int, int] = {}
    layer_depth: dict[int, int] = {}
    for node in reversed(post_order):  # outputs first: a node is deeper than everything it feeds
        depth = max(node_depth.setdefault(id(node), 0), layer_depth.get(id(node.layer), 0))
        layer_depth[id(node.layer)] = node_depth[id(node)] = depth
        for parent in node.parents:
            node_depth[id(parent.node)] = max(depth + 1, node_depth.get(id(parent.node), 0))
    return sorted(layers, key=lambda l: (-layer_depth[id(l)], first_visit[id(l)]))


def assign_names(layers: Sequence[Layer]) -> None:
    """Name unnamed layers Keras-style (``dense``, ``dense_1``, ...) unique within ``layers``.

    Names are given once and kept for life, so every model holding a layer sees the same name. A model
    still holding its default name (``functional``, ``sequential``) is named the same way the first time
    it is nested, so two such models in one bigger model become ``sequential`` and ``sequential_1``.
    """
    def unnamed(layer: Layer) -> bool:
        return not layer.name or (isinstance(layer, Model) and layer._default_name)

    taken = {layer.name for layer in layers if not unnamed(layer)}
    for layer in layers:
        if not unnamed(layer):
            continue
        if isinstance(layer, Model):
            base = layer.name
            layer._default_name = False
        else:
            base = "input_layer" if isinstance(layer, InputLayer) else to_snake_case(type(layer).__name__)
        name, i = base, 0
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        layer.name = name
        taken.add(name)


def check_unique_names(layers: Sequence[Layer], model_name: str) -> None:
    """ValueError naming the first layer name that two different layers of a model share."""
    by_name: dict[str, Layer] = {}
    for layer in layers:
        other = by_name.setdefault(layer.name, layer)
        if other is not layer:
            raise ArgumentError(f"Duplicate layer name {layer.name!r} in model {model_name!r}: used by a "
                                f"{type(other).__name__} and a {type(layer).__name__}. Layer names must be "
                                "unique in a model.")


def check_single_owner(layers: Sequence[Layer], model_name: str) -> None:
    """ArgumentError for a layer used both inside a nested model and elsewhere in the same model: its
    variables live under one path (``base/dense``), so the two uses could not share them."""
    paths: dict[int, str] = {}

    def visit(members: Sequence[Layer], prefix: str) -> None:
        for layer in members:
            if isinstance(layer, InputLayer):  # no variables: a model may start at its nested model's Input
                continue
            path = prefix + layer.name
            first = paths.setdefault(id(layer), path)
            if first != path:
                raise ArgumentError(
                    f"{layer.describe()} is used in model {model_name!r} both as {first!r} and as {path!r}. "
                    "A nested model keeps its layers' variables under its own name, so the two uses would not "
                    "share weights: use the layer in one place, or build on the nested model's output.")
            if isinstance(layer, Model):
                visit(layer._layers, path + "/")

    visit(layers, "")


def _compatible(expected: tuple, given: tuple) -> bool:
    """Whether a symbolic shape fits a model input's shape (same rank, known sizes equal)."""
    return len(expected) == len(given) and all(e is None or g is None or e == g for e, g in zip(expected, given))


@register("Functional")
class Model(KerasMethods, Layer):
    """A functional model from ``inputs`` to ``outputs`` (each a tensor, a list or a dict).

    As a layer (``model(x, training=None)`` on symbolic tensors) it keeps its own variables under its
    name in the bigger model; ``trainable = False`` freezes all its layers.
    """

    shows_connections = True  # summary's "Connected to" column (a Sequential's chain needs none)
    accepts_mask = True

    def __init__(self, inputs: Any, outputs: Any, name: str | None = None):
        self._init_model(name, "functional")
        self._set_graph(inputs, outputs)

    def _init_model(self, name: str | None, default: str) -> None:
        super().__init__(name=name)
        self.name = name or default
        self._default_name = name is None  # see assign_names: made unique the first time it is nested

    # ------------------------------------------------------------------------------ graph building
    def _set_graph(self, inputs: Any, outputs: Any) -> None:
        flat_in, flat_out = _flatten(inputs, "inputs"), _flatten(outputs, "outputs")
        for t in flat_in:
            if not isinstance(t.layer, InputLayer):
                raise ArgumentTypeError(f"Model inputs must be layers.Input tensors; {t!r} is the output of a layer. "
                                        "To start a model in the middle of a graph, give it a new Input.")
        if isinstance(inputs, Mapping) and any(not isinstance(k, str) for k in inputs):
            raise ArgumentTypeError("Keys of a dict of model inputs must be strings.")
        used = _ancestors(flat_out)
        for i, t in enumerate(flat_in):
            if id(t.node) not in used:
                label = repr(t.layer.name) if t.layer.name else f"inputs[{i}]"
                raise ArgumentError(f"The model's outputs do not depend on its input {label} of shape "
                                    f"{format_shape(t.shape)}: every input must feed at least one output.")
        nodes = _topological_nodes(flat_in, flat_out)
        declared = {id(t.node) for t in flat_in}
        for node in nodes:
            if isinstance(node.layer, InputLayer) and id(node) not in declared:
                raise ArgumentError(f"The model's outputs depend on an Input that is not among its inputs: "
                                    f"{node.output!r}. Pass it in `inputs`.")
        assign_names([n.layer for n in nodes])  # graph order, so names follow the order of the calls
        layers = keras_layer_order(flat_out)
        check_unique_names(layers, self.name)
        check_single_owner(layers, self.name)
        self._inputs, self._outputs = inputs, outputs
        self._flat_inputs, self._flat_outputs = flat_in, flat_out
        self._graph_nodes = nodes
        self._layers = layers
        self._abstract = None
        shapes = [t.shape for t in flat_in]
        self.built_input_shape = shapes[0] if len(shapes) == 1 else shapes

    @property
    def trainable(self) -> bool:
        """The value last set (default True). Setting it sets it on every layer, recursively into nested
        models (Keras); while it is False all the model's params are frozen, whatever a layer says."""
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self._trainable = bool(value)
        for layer in self.layers:
            layer.trainable = value

    @Layer.dtype_policy.setter
    def dtype_policy(self, value) -> None:
        """Setting a model's policy sets every layer's, recursively (``fluxnet.dtype_policies``); its
        variables' dtype changes only with a policy of another variable dtype ("bfloat16")."""
        self._dtype_policy = dtype_policies.get(value)  # the model's config is its layers'
        for layer in self.layers:
            if not isinstance(layer, InputLayer):  # an Input's dtype is its data's
                layer.dtype_policy = value
        self._abstract = None

    def describe(self) -> str:
        return f"model {self.name!r}"

    @property
    def inputs(self) -> list[SymbolicTensor]:
        return list(self._flat_inputs)

    @property
    def outputs(self) -> list[SymbolicTensor]:
        return list(self._flat_outputs)

    @property
    def input(self) -> Any:
        return self._inputs

    @property
    def output(self) -> Any:
        return self._outputs

    @property
    def layers(self) -> list[Layer]:
        """Layers in graph order; a functional model lists its InputLayers first (as Keras)."""
        return list(self._layers)

    def get_layer(self, name: str | None = None, index: int | None = None) -> Layer:
        """A layer by name or by index into ``layers`` (Keras' ``get_layer``)."""
        if (name is None) == (index is None):
            raise ArgumentError("Pass exactly one of name= or index= to get_layer.")
        if index is not None:
            layers = self.layers
            if not -len(layers) <= index < len(layers):
                raise ArgumentError(f"Layer index {index} is out of range: model {self.name!r} has "
                                    f"{len(layers)} layers.")
            return layers[index]
        for layer in self._layers:
            if layer.name == name:
                return layer
        raise unknown_name_error(f"layer in model {self.name!r}:", name, [l.name for l in self._layers])

    # ------------------------------------------------------------------------------ variables
    def init(self, rng: jax.Array, input_shape: Any = None) -> Variables:
        """Fresh variables ``{"params": {layer_name: {...}}, <state collections>: {...}}``.

        Each layer's initial values depend only on ``rng`` and the layer's name. ``input_shape`` is
        there for the layer contract (a nested model's init) and unused: the model's Inputs fix shapes.
        """
        variables: Variables = {"params": {}}
        for layer in self._layers:
            layer_vars = layer.init(layer_rng(rng, layer.name), layer.built_input_shape)
            if layer.dtype != "float32" and layer.autocast and not isinstance(layer, Model):  # "bfloat16"
                layer_vars = {c: _cast_floats(layer.dtype, v) for c, v in layer_vars.items()}
            for collection, values in layer_vars.items():
                if values:
                    variables.setdefault(collection, {})[layer.name] = values
        return variables

    def abstract_variables(self) -> Variables:
        """Shapes and dtypes of ``init``'s result (``jax.ShapeDtypeStruct`` leaves), computed once."""
        if self._abstract is None:
            self._abstract = jax.eval_shape(self.init, jax.random.key(0))
        return self._abstract

    def param_labels(self, params: Mapping | None = None, groups: Mapping[str, str] | None = None) -> dict:
        """A label for every leaf of ``params``, for ``optax.multi_transform``: ``"frozen"`` for layers
        with ``trainable=False`` or inside a frozen model (they get exactly zero updates), else the
        layer's entry in ``groups`` (layer name -> optimizer group; a nested model's entry covers all its
        layers), else ``"trainable"``."""
        params = self.abstract_variables()["params"] if params is None else params
        return self._labels(params, dict(groups or {}), "trainable", frozen=not self.trainable)

    def _labels(self, params: Mapping, groups: Mapping[str, str], default: str, frozen: bool) -> dict:
        layers = {layer.name: layer for layer in self._layers}
        labels = {}
        for name, sub in params.items():
            layer = layers.get(name)
            group = groups.get(name, default)
            off = frozen or (layer is not None and not layer.trainable)
            if isinstance(layer, Model):
                labels[name] = layer._labels(sub, {}, group, off)
            else:
                labels[name] = jax.tree.map(lambda _, l="frozen" if off else group: l, sub)
        return labels

    def count_params(self) -> int:
        """All variables' sizes, BN moving statistics included (as Keras)."""
        return sum(self.param_counts().values())

    def param_counts(self) -> dict[str, int]:
        """``{"trainable": n, "non_trainable": m}`` with Keras' split: params of trainable layers in a
        trainable model (nested models recursively) are trainable, everything else is not."""
        total = trainable = 0
        for layer in self._layers:
            sizes = self.layer_param_sizes(layer)
            total += sum(sizes.values())
            if isinstance(layer, Model):
                trainable += layer.param_counts()["trainable"]
            elif layer.trainable:
                trainable += sizes.get("params", 0)
        trainable = trainable if self.trainable else 0
        return {"trainable": trainable, "non_trainable": total - trainable}

    def layer_param_sizes(self, layer: Layer) -> dict[str, int]:
        """Number of values per collection held by ``layer``."""
        return {collection: sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(sub[layer.name]))
                for collection, sub in self.abstract_variables().items() if layer.name in sub}

    # ------------------------------------------------------------------------------ forward
    def apply(self, variables: Variables, inputs: Any, training: bool = False,
              rng: jax.Array | None = None, mask: jax.Array | None = None, remat: bool = False
              ) -> tuple[Any, Variables]:
        """Run the graph: ``(outputs, state)``; state holds the non-trainable collections, updated
        in training (BatchNormalization's moving statistics). Randomness comes from ``rng`` folded with
        each layer's name, so the same key gives the same dropout masks. A call made with its own
        ``training=`` runs in that mode. ``mask`` (bool, shape ``(batch,)``, False for rows that only pad
        the batch) goes to the layers with ``accepts_mask`` (BatchNormalization's statistics skip them).
        ``remat=True`` wraps each layer in ``jax.checkpoint``: a gradient recomputes the layer's
        activations from its input instead of keeping them (a nested model is one block)."""
        arrays = self._check_inputs(inputs)
        self._check_variables(variables)
        mask = self._check_mask(mask, arrays)
        values: dict[int, jax.Array] = {}
        for tensor, x in zip(self._flat_inputs, arrays):
            values[id(tensor)] = x
        updates: dict[str, dict] = {}
        for node in self._graph_nodes:
            layer = node.layer
            if isinstance(layer, InputLayer):
                continue
            args = _pack(node.inputs, [values[id(t)] for t in node.parents])
            layer_vars = {c: sub[layer.name] for c, sub in variables.items() if layer.name in sub}
            node_training = training if node.training is None else node.training
            extra = {"mask": mask} if mask is not None and layer.accepts_mask else {}
            mode = node_training and not layer.inference_mode
            if layer.autocast and not isinstance(layer, Model):  # a nested model casts its own layers
                args, layer_vars = _autocast(layer.compute_dtype, args, layer_vars)
            call = lambda v, a, r, layer=layer, mode=mode, extra=extra: layer.apply(  # noqa: E731
                v, a, training=mode, rng=r, **extra)
            out, upd = (jax.checkpoint(call) if remat else call)(layer_vars, args,
                                                                  layer_rng(rng, layer.name, node.call_index))
            values[id(node.output)] = out
            for collection, value in upd.items():
                updates.setdefault(collection, {})[layer.name] = value
        outputs = _pack(self._outputs, [values[id(t)] for t in self._flat_outputs])
        state = {c: {**sub, **updates.get(c, {})} for c, sub in tree.split_variables(variables)[1].items()}
        return outputs, state

    def __call__(self, inputs: Any, training: bool | None = None) -> SymbolicTensor:
        """Call the model on symbolic tensors (Keras): it becomes one layer of the model built from the
        result. ``training=False`` runs it in inference mode whatever the bigger model does (the
        transfer-learning idiom ``base(x, training=False)``), True in training mode, None follows."""
        flat = flatten_inputs(inputs)
        if not flat or not all(isinstance(t, SymbolicTensor) for t in flat):
            raise ArgumentTypeError(
                f"Model {self.name!r} was called on {type(inputs).__name__}. To compute on arrays use "
                "model.apply(variables, x, training=..., rng=...); a model is called only on symbolic tensors "
                "(layers.Input(...) or layer outputs), to use it as a layer of a bigger model.")
        if len(self._flat_outputs) != 1:
            raise ArgumentError(f"Model {self.name!r} has {len(self._flat_outputs)} outputs; only a model with "
                                "one output can be called as a layer. Build the bigger model on its outputs "
                                "instead (model.outputs).")
        for expected, tensor in zip(self._flat_inputs, self._given_inputs(inputs, LayerError)):
            if not _compatible(expected.shape, tensor.shape):
                raise LayerError(f"Input {expected.layer.name!r} of model {self.name!r} expects shape "
                                 f"{format_shape(expected.shape)}, got {format_shape(tensor.shape)}.")
        inputs = dict(inputs) if isinstance(inputs, Mapping) else list(inputs) if isinstance(
            inputs, (list, tuple)) else inputs
        node = Node(self, inputs, len(self._nodes), training)
        output = self._flat_outputs[0]
        node.output = SymbolicTensor(output.shape, output.dtype, node)
        self._nodes.append(node)
        return node.output

    def _given_inputs(self, inputs: Any, error: type[Exception]) -> list:
        """``inputs`` (a value, a list or a dict) as a list in the order of ``self.inputs``; ``error``
        when their structure does not fit the model's."""
        if isinstance(self._inputs, Mapping):
            if not isinstance(inputs, Mapping) or set(inputs) != set(self._inputs):
                got = sorted(inputs) if isinstance(inputs, Mapping) else type(inputs).__name__
                raise error(f"Model {self.name!r} expects a dict of inputs with keys "
                            f"{sorted(self._inputs)}, got {got}.")
            return [inputs[k] for k in self._inputs]
        if isinstance(inputs, Mapping):
            raise error(f"Model {self.name!r} expects {len(self._flat_inputs)} input(s) as a value or a list, "
                        f"got a dict with keys {sorted(inputs)}.")
        if len(self._flat_inputs) > 1:
            if not isinstance(inputs, (list, tuple)) or len(inputs) != len(self._flat_inputs):
                got = f"{len(inputs)} inputs" if isinstance(inputs, (list, tuple)) else type(inputs).__name__
                raise error(f"Model {self.name!r} expects a list of {len(self._flat_inputs)} inputs, "
                            f"got {got}.")
            return list(inputs)
        return [inputs[0] if isinstance(inputs, (list, tuple)) and len(inputs) == 1 else inputs]

    def _check_inputs(self, inputs: Any) -> list[jax.Array]:
        given = self._given_inputs(inputs, DataError)
        arrays = []
        for tensor, x in zip(self._flat_inputs, given):
            shape = np.shape(x)
            expected = tensor.shape
            if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape)):
                raise DataError(f"Input {tensor.layer.name!r} of model {self.name!r} expects shape "
                                f"{format_shape(expected)}, got {format_shape(shape)}.")
            x = jnp.asarray(x)
            if x.dtype != tensor.dtype and jnp.issubdtype(jnp.dtype(tensor.dtype), jnp.floating):
                x = x.astype(tensor.dtype)
            arrays.append(x)
        return arrays

    def _check_mask(self, mask: Any, arrays: list[jax.Array]) -> jax.Array | None:
        if mask is None:
            return None
        mask = jnp.asarray(mask)
        batch = arrays[0].shape[0]
        if mask.shape != (batch,) or mask.dtype != jnp.bool_:
            raise DataError(f"The mask of model {self.name!r} must be a bool array of shape ({batch},), one "
                            f"entry per row (False: a padding row); got {mask.dtype} of shape "
                            f"{format_shape(mask.shape)}.")
        return mask

    def _check_variables(self, variables: Variables) -> None:
        if not isinstance(variables, Mapping) or "params" not in variables:
            raise ArgumentError(f"variables must be a dict like model.init(rng) returns, with a 'params' entry; "
                                f"got {type(variables).__name__}.")
        expected = self.abstract_variables()
        # only this model's layers: a sub-model runs on its parent's (larger) variables
        given = {c: {name: variables[c][name] for name in sub if name in variables.get(c, {})}
                 for c, sub in expected.items()}
        problems = tree.mismatches(expected, given, "variables")
        if problems:
            raise ArgumentError(f"The variables do not fit model {self.name!r}:\n  " + "\n  ".join(problems))

    # ------------------------------------------------------------------------------ reporting
    def summary(self, print_fn=print) -> str:
        """Print and return a Keras-like table of layers, output shapes and parameter counts."""
        table = summary_table(self)
        if print_fn is not None:
            print_fn(table)
        return table

    # ------------------------------------------------------------------------------ serialisation
    def get_config(self) -> dict:
        """A JSON-friendly description of the architecture that ``from_config`` rebuilds."""
        local_index: dict[int, int] = {}
        per_layer: dict[str, int] = {}
        for node in self._graph_nodes:
            local_index[id(node)] = per_layer.get(node.layer.name, 0)
            per_layer[node.layer.name] = local_index[id(node)] + 1

        def ref(t: SymbolicTensor) -> list:
            return [t.layer.name, local_index[id(t.node)]]

        def refs(struct: Any) -> Any:
            if isinstance(struct, Mapping):
                return {k: ref(v) for k, v in struct.items()}
            if isinstance(struct, (list, tuple)):
                return [ref(t) for t in struct]
            return ref(struct)

        def node(n: Node) -> dict:
            entry = {"layer": n.layer.name, "inputs": refs(n.inputs)}
            return entry if n.training is None else {**entry, "training": n.training}

        config = {
            "class_name": "Functional",
            "name": self.name,
            "layers": [{"class_name": layer_class_name(l), "config": l.get_config()}
                       for l in self._layers],
            "nodes": [node(n) for n in self._graph_nodes if not isinstance(n.layer, InputLayer)],
            "inputs": refs(self._inputs),
            "outputs": refs(self._outputs),
        }
        return config if self.trainable else {**config, "trainable": False}

    @classmethod
    def from_config(cls, config: Mapping) -> "Model":
        """Rebuild a functional model (fresh layer objects with the recorded names) from ``get_config``;
        ``fluxnet.model_from_config`` rebuilds either kind."""
        layers = {c["config"]["name"]: LAYERS.get(c["class_name"]).from_config(dict(c["config"]))
                  for c in config["layers"]}
        tensors: dict[tuple, SymbolicTensor] = {}
        for name, layer in layers.items():
            if isinstance(layer, InputLayer):
                tensors[(name, 0)] = layer.output
        calls: dict[str, int] = {}

        def get(struct: Any) -> Any:
            if isinstance(struct, Mapping):
                return {k: tensors[tuple(v)] for k, v in struct.items()}
            if struct and isinstance(struct[0], list):
                return [tensors[tuple(r)] for r in struct]
            return tensors[tuple(struct)]

        for node in config["nodes"]:
            index = calls.get(node["layer"], 0)
            calls[node["layer"]] = index + 1
            tensors[(node["layer"], index)] = layers[node["layer"]](get(node["inputs"]),
                                                                    training=node.get("training"))
        model = Model(get(config["inputs"]), get(config["outputs"]), name=config.get("name"))
        model._trainable = config.get("trainable", True)  # the layers' own flags come from their configs
        return model



def _cast_floats(dtype: str, tree_: Any) -> Any:
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree_)


def _autocast(dtype: str, args: Any, layer_vars: Variables) -> tuple[Any, Variables]:
    """A layer's inputs and float parameters in its compute ``dtype``; its other collections (moving
    statistics) stay as they are. Nothing changes for float32 layers on float32 arrays."""
    floats = [a for a in jax.tree.leaves((args, layer_vars.get("params", {}))) if jnp.issubdtype(a.dtype, jnp.floating)]
    if all(a.dtype == jnp.dtype(dtype) for a in floats):
        return args, layer_vars
    return _cast_floats(dtype, args), {c: _cast_floats(dtype, v) if c == "params" else v for c, v in layer_vars.items()}
