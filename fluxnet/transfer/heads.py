"""A new classifier head on a pretrained backbone, set up for a linear probe or fine-tuning.

The transfer model is ``Model(backbone.inputs, head(backbone.output))``: the backbone's layers keep
their names at the top level of the variables, so backbone and transfer variables compare leaf by leaf.
As in Keras' transfer-learning guide, the backbone runs in inference mode in both modes (its
BatchNormalization uses and keeps its moving statistics, its Dropout is off):

* ``linear_probe``: every backbone layer is frozen (``trainable=False``): exactly zero updates and no
  weight decay (``optax.set_to_zero`` through the trainer's parameter groups); only the head trains.
* ``fine_tune``: the head and the top ``fine_tune_layers`` backbone layers with weights (all, if None)
  train; the backbone's group has its own learning rate, ``backbone_lr_factor`` times the head's.
  BatchNormalization scale and offset train, its moving statistics stay fixed.
"""
from __future__ import annotations

from typing import Sequence

from fluxnet import layers
from fluxnet.errors import ArgumentError
from fluxnet.layers.core import InputLayer
from fluxnet.models import Model

MODES = ("linear_probe", "fine_tune")
HEAD_PREFIX = "head_"


def build_transfer_model(backbone: Model, num_classes: int, *, pooling: str | None = "flatten",
                         dropout: float = 0.0, hidden_units: int = 0, name: str = "transfer") -> Model:
    """A classifier head (``head_*`` layers: pooling, dropout, optional hidden Dense, logits) on the
    backbone's output."""
    x = backbone.output
    if isinstance(x, (list, tuple, dict)):
        raise ArgumentError("A transfer backbone must have a single output.")
    if len(x.shape) > 2:
        pools = {"flatten": layers.Flatten, "avg": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D}
        if pooling not in pools:
            raise ArgumentError(f"head pooling must be one of {sorted(pools)} for a backbone output of shape "
                                f"{x.shape}, got {pooling!r}.")
        x = pools[pooling](name=f"{HEAD_PREFIX}pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name=f"{HEAD_PREFIX}dropout")(x)
    if hidden_units:
        x = layers.Dense(hidden_units, activation="relu", name=f"{HEAD_PREFIX}dense")(x)
    outputs = layers.Dense(num_classes, name=f"{HEAD_PREFIX}logits")(x)
    return Model(backbone.inputs, outputs, name=name)


def backbone_layers(backbone: Model) -> list:
    return [layer for layer in backbone.layers if not isinstance(layer, InputLayer)]


def configure(model: Model, backbone: Model, mode: str, fine_tune_layers: int | None = None) -> dict[str, str]:
    """Set the backbone layers' ``trainable`` and inference mode for ``mode``; returns the optimizer
    group of each trainable layer (``"backbone"`` or ``"head"``) for ``Trainer(param_groups=...)``."""
    if mode not in MODES:
        raise ArgumentError(f"transfer mode must be one of {MODES}, got {mode!r}.")
    inner = backbone_layers(backbone)
    sizes = model.abstract_variables()["params"]
    with_weights = [layer for layer in inner if layer.name in sizes]
    if mode == "linear_probe":
        unfrozen: Sequence = ()
    elif fine_tune_layers is None:
        unfrozen = with_weights
    else:
        if not isinstance(fine_tune_layers, int) or fine_tune_layers < 0:
            raise ArgumentError("fine_tune_layers must be a non-negative int or None, "
                                f"got {fine_tune_layers!r}.")
        unfrozen = with_weights[len(with_weights) - fine_tune_layers:] if fine_tune_layers else ()
    unfrozen_names = {layer.name for layer in unfrozen}
    for layer in inner:
        layer.inference_mode = True
        layer.trainable = layer.name in unfrozen_names or layer.name not in sizes
    inner_names = {layer.name for layer in inner}
    return {layer.name: ("backbone" if layer.name in inner_names else "head")
            for layer in model.layers if layer.name in sizes and layer.trainable}
