"""A trained model as one folder (``model.save``, ``fx.load_model``): architecture, variables,
optimizer state and compile settings.

``save_model(path, trainer, state)`` writes ``path/`` atomically (assembled beside it, renamed into
place): ``fluxnet_model.json`` (the format, the model's ``get_config()``, the compile settings) and
``checkpoint/`` (one orbax checkpoint of the whole TrainState, read by ``Checkpointer``). The compile
settings are recorded when every piece has a name (losses, metrics, the optimizer as a name or a
``{"name": ..., **arguments}`` dict); a user's own optax transform or callable has none, so such a
model saves its variables and optimizer state and the loader says that ``compile`` must be called
again. ``save_variables``/``load_variables``: the variables alone (Keras' ``save_weights``).
"""
from __future__ import annotations

import functools
import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp

from fluxnet import losses as losses_lib
from fluxnet import metrics as metrics_lib
from fluxnet import tree
from fluxnet.errors import CheckpointError, NotFoundError
from fluxnet.files import write_dir_atomic
from fluxnet.models import model_from_config
from fluxnet.train.checkpoint import Checkpointer
from fluxnet.transfer.keras_file import load_keras_model

FORMAT = "fluxnet-model"
VERSION = 1
MODEL_FILE = "fluxnet_model.json"
CHECKPOINT_DIR = "checkpoint"


class NotSerializable(Exception):
    """A compile setting without a name (an optax transform, a plain callable)."""


def _spec(identifier: Any, registry) -> Any:
    """A loss or metric as JSON: its name, or ``{"name", "options"}`` for one with bound options."""
    if isinstance(identifier, str):
        return identifier
    fn, options = identifier, {}
    if isinstance(fn, functools.partial):
        fn, options = fn.func, dict(fn.keywords)
    name = registry.name_of(fn)
    if name is None or not all(isinstance(v, (str, int, float, bool, type(None))) for v in options.values()):
        raise NotSerializable(f"{identifier!r}")
    return {"name": name, "options": options} if options else name


def _structure(spec: Any, registry) -> Any:
    if isinstance(spec, Mapping):
        return {k: _structure(v, registry) for k, v in spec.items()}
    if isinstance(spec, (list, tuple)):
        return [_structure(v, registry) for v in spec]
    return None if spec is None else _spec(spec, registry)


def compile_config(loss: Any, optimizer: Any, metrics: Any, loss_weights: Any) -> dict | None:
    """The compile settings as JSON, or None when one of them has no name."""
    if not (isinstance(optimizer, str) or (isinstance(optimizer, Mapping) and isinstance(optimizer.get("name"), str))):
        return None
    try:
        config = {"loss": _structure(loss, losses_lib.LOSSES), "metrics": _structure(metrics, metrics_lib.METRICS),
                  "optimizer": optimizer if isinstance(optimizer, str) else dict(optimizer),
                  "loss_weights": jax.tree.map(float, loss_weights)}
        json.dumps(config)  # e.g. a schedule as the optimizer's learning rate has no name either
    except (NotSerializable, TypeError, ValueError):
        return None
    return config


def revive(spec: Any, get) -> Any:
    """A loss or metric structure from ``compile_config`` back as the identifiers ``get`` resolves."""
    if isinstance(spec, Mapping) and set(spec) == {"name", "options"}:
        return get(spec["name"], **spec["options"])
    if isinstance(spec, Mapping):
        return {k: revive(v, get) for k, v in spec.items()}
    if isinstance(spec, list):
        return [revive(v, get) for v in spec]
    return spec


def save_model(path: str | os.PathLike, trainer, state) -> Path:
    """Write the model of ``trainer`` with ``state`` (variables, optimizer state, step, epoch, rng)."""
    config = {"format": FORMAT, "version": VERSION, "model": trainer.model.get_config(),
              "compile": getattr(trainer, "compile_config", None)}
    host = jax.device_get(state)

    def fill(tmp: Path) -> None:
        (tmp / MODEL_FILE).write_text(json.dumps(config, indent=1))
        ckpt = Checkpointer(tmp / CHECKPOINT_DIR, keep=1, monitor=None, async_save=False)
        ckpt.save(int(host.epoch), host, {"epoch": int(host.epoch), "step": int(host.step)})
        ckpt.close()

    return write_dir_atomic(path, fill)


def read_config(path: str | os.PathLike) -> dict:
    """``fluxnet_model.json`` of a saved model, checked to be one."""
    file = Path(path) / MODEL_FILE
    if not file.is_file():
        raise NotFoundError(f"{path} is not a saved fluxnet model: it has no {MODEL_FILE} "
                            "(write one with model.save(path)).")
    config = json.loads(file.read_text())
    if config.get("format") != FORMAT or config.get("version", 0) > VERSION:
        raise CheckpointError(f"{file} is not a fluxnet model file of version <= {VERSION}: {config.get('format')!r} "
                              f"version {config.get('version')!r}.")
    return config


def checkpointer(path: str | os.PathLike) -> tuple[Checkpointer, int]:
    """The saved model's checkpoint, opened read-only, and its one step."""
    ckpt = Checkpointer(Path(path) / CHECKPOINT_DIR, monitor=None, read_only=True)
    step = ckpt.latest_step()
    if step is None:
        raise CheckpointError(f"The saved model {path} has no complete checkpoint in {CHECKPOINT_DIR}/.")
    return ckpt, step


def save_variables(path: str | os.PathLike, variables: Mapping) -> Path:
    """The variables alone, as an orbax checkpoint folder written atomically."""
    host = jax.device_get(dict(variables))

    def fill(tmp: Path) -> None:
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(tmp / "variables", host)

    return write_dir_atomic(path, fill)


def load_variables(path: str | os.PathLike, abstract_variables: Any) -> dict:
    """Variables written by ``save_variables``, onto ``abstract_variables``' shapes (mismatches listed)."""
    folder = Path(path) / "variables"
    if not folder.is_dir():
        raise NotFoundError(f"{path} holds no saved variables (write them with model.save_weights(path)).")
    with ocp.StandardCheckpointer() as ckptr:
        saved = ckptr.metadata(folder)
        saved = getattr(saved, "item_metadata", saved)
        problems = tree.mismatches(abstract_variables, saved, "weights file")
        if problems:
            raise CheckpointError(f"The weights in {path} do not fit this model:\n  " + "\n  ".join(problems))
        return ckptr.restore(folder, abstract_variables)


def load_model(path: str | os.PathLike):
    """A model written by ``model.save``: compiled again from its recorded settings with the saved
    optimizer state, step and random key, so it predicts identically and continues training exactly.
    A model compiled with an optax transform or callable has no recorded settings: it comes back with
    its variables and a warning that ``compile`` must be called again. A Keras 3 ``.keras`` archive
    comes back with its variables, not compiled (``fx.load_keras_model``)."""
    if os.fspath(path).endswith(".keras"):
        model, variables = load_keras_model(path)
        model._set_variables(variables)
        return model
    if not os.path.isdir(path):
        raise NotFoundError(f"No saved fluxnet model at {path!r} (model.save(path) writes a folder).")
    config = read_config(path)
    model = model_from_config(config["model"])
    ckpt, step = checkpointer(path)
    try:
        compiled = config.get("compile")
        if compiled is None:
            variables, _, _ = ckpt.restore_variables(step, model.abstract_variables())
            model._set_variables(variables)
            warnings.warn(f"{path} was compiled with an optax transform or a callable, which cannot be saved by "
                          "name: its variables are loaded; call model.compile(...) again to train it.",
                          stacklevel=2)
            return model
        model.compile(optimizer=compiled["optimizer"], loss=revive(compiled["loss"], losses_lib.get),
                      metrics=revive(compiled["metrics"], metrics_lib.get), loss_weights=compiled["loss_weights"])
        state, _, _ = ckpt.restore(step, model.trainer.abstract_state(),
                                   fresh=lambda: model.trainer.init(jax.random.key(0)))
        model._state = state
    finally:
        ckpt.close()
    return model
