"""Transfer learning: a new head on a pretrained backbone, trained as a linear probe or fine-tuned.

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
        raise ValueError("A transfer backbone must have a single output.")
    if len(x.shape) > 2:
        pools = {"flatten": layers.Flatten, "avg": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D}
        if pooling not in pools:
            raise ValueError(f"head pooling must be one of {sorted(pools)} for a backbone output of shape "
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
        raise ValueError(f"transfer mode must be one of {MODES}, got {mode!r}.")
    inner = backbone_layers(backbone)
    sizes = model.abstract_variables()["params"]
    with_weights = [layer for layer in inner if layer.name in sizes]
    if mode == "linear_probe":
        unfrozen: Sequence = ()
    elif fine_tune_layers is None:
        unfrozen = with_weights
    else:
        if not isinstance(fine_tune_layers, int) or fine_tune_layers < 0:
            raise ValueError(f"fine_tune_layers must be a non-negative int or None, got {fine_tune_layers!r}.")
        unfrozen = with_weights[len(with_weights) - fine_tune_layers:] if fine_tune_layers else ()
    unfrozen_names = {layer.name for layer in unfrozen}
    for layer in inner:
        layer.inference_mode = True
        layer.trainable = layer.name in unfrozen_names or layer.name not in sizes
    inner_names = {layer.name for layer in inner}
    return {layer.name: ("backbone" if layer.name in inner_names else "head")
            for layer in model.layers if layer.name in sizes and layer.trainable}


# ------------------------------------------------------------------------------------------------ runs


def pretrain(config, workdir, verbose: int = 1) -> dict:
    """``fluxnet pretrain``: train the configured model, then export the layers up to
    ``pretrain.cut`` to ``WORKDIR/backbone`` and, when ``pretrain.name`` is set, to the zoo."""
    from pathlib import Path

    from fluxnet import pretrained, run

    p = config.pretrain
    if p.name is not None:
        pretrained.entry_dir(p.name, p.zoo)  # a bad zoo name fails before training
    run.check_workdir(config, Path(workdir))
    splits, _ = run.prepare_data(config)
    model = run.build_configured_model(config, splits.metadata.image_shape, splits.metadata.num_classes)
    model.get_layer(p.cut)  # an unknown cut layer fails before training (listing the layer names)
    summary = run.fit_run(config, workdir, model, splits, verbose=verbose)
    _, variables = run.load_run(workdir)
    backbone = Model(model.inputs, model.get_layer(p.cut).output, name="backbone")
    info = {"source": {"data": config.data.name, "classes": list(config.data.get("classes") or []) or None,
                       "class_names": list(splits.metadata.class_names)},
            "cut": p.cut, "test": summary["test"], "workdir": str(Path(workdir).resolve())}
    pretrained.save_backbone(backbone, variables, Path(workdir) / pretrained.RUN_BACKBONE_DIR, info=info,
                             overwrite=True)
    if p.name is not None:
        path = pretrained.save_backbone(backbone, variables, pretrained.entry_dir(p.name, p.zoo), info=info,
                                        overwrite=p.overwrite)
        if verbose:
            print(f"Backbone exported to the zoo as {p.name!r}: {path}")
    return summary


def transfer(config, workdir, verbose: int = 1) -> dict:
    """``fluxnet transfer``: a new head on the configured backbone, trained in the configured mode."""
    import jax

    from fluxnet import optimizers, pretrained, run
    from fluxnet.config import plain
    from fluxnet.data import num_batches

    t = config.transfer
    backbone, backbone_variables = pretrained.load(t.backbone, t.zoo)
    splits, _ = run.prepare_data(config)
    head = plain(t.head)
    model = build_transfer_model(backbone, splits.metadata.num_classes, **head)
    groups = configure(model, backbone, t.mode, t.fine_tune_layers)
    init = pretrained.restore_into(model.init(jax.random.key(config.seed)), backbone_variables,
                                   exclude=list(t.exclude))
    steps = max(1, config.train.epochs * num_batches(len(splits.train), config.train.batch_size, True))
    opt = plain(config.optimizer)
    head_lr = opt.get("learning_rate") or optimizers.default_learning_rate(opt["name"])
    txs = {"head": optimizers.build_optimizer(opt, total_steps=steps),
           "backbone": optimizers.build_optimizer({**opt, "learning_rate": head_lr * t.backbone_lr_factor},
                                                  total_steps=steps)}
    if verbose:
        model.summary()
    extra = {"transfer": {"mode": t.mode, "backbone": str(pretrained.resolve(t.backbone, t.zoo))}}
    return run.fit_run(config, workdir, model, splits, verbose=verbose, optimizer=txs, param_groups=groups,
                       init_variables=init, extra_summary=extra)
