"""Keras 3 ``.keras`` archives both ways: ``load_keras_model(path) -> (model, variables)`` and
``save_keras_model(model, variables, path)`` (what ``model.save("m.keras")`` calls).

An archive is a zip of ``metadata.json`` (Keras' version, the date), ``config.json`` (the serialized
model; ``keras_config`` translates it) and ``model.weights.h5`` (``layers/<key>/vars/<i>`` in Keras'
variable order; ``keras_weights`` reads it). It is read as data only and checked
before anything is read (``keras_archive``). Written archives are what Keras writes (members stored, not
compressed) and replace the target file in one step.
"""
from __future__ import annotations

import datetime
import functools
import io
import json
import operator
import os
import zipfile
from pathlib import Path
from typing import Mapping

import h5py
import ml_dtypes
import numpy as np

from fluxnet import tree
from fluxnet.errors import ArgumentError, CheckpointError
from fluxnet.files import write_atomic
from fluxnet.layers.variable_order import keras_layer_keys
from fluxnet.models import Model, model_from_config
from fluxnet.transfer import keras_config
from fluxnet.transfer.keras_archive import (CONFIG, MAX_ARCHIVE_BYTES, METADATA, WEIGHTS, open_archive, read_json,
                                            read_member)
from fluxnet.transfer.keras_weights import layer_slots, variables_from_weights

KERAS_VERSION = "3.15.1"  # the Keras release whose archive format the writer follows (and the tests check)


# ------------------------------------------------------------------------------------------- reading
def load_keras_model(path: str | os.PathLike) -> tuple[Model, dict]:
    """``(model, variables)`` of a Keras 3 ``.keras`` archive of a Sequential or Functional model (nested
    models included) whose layers fluxnet has; ``model.apply(variables, x)`` predicts what Keras does.

    Errors: CheckpointError for an archive that is damaged, unsafe (see the module docstring) or not
    Keras 3's; ConfigError naming the layer for a class fluxnet lacks (listing the supported ones), a
    Lambda, or a Keras argument fluxnet cannot honour (a regularizer, an unknown activation...).
    """
    source = os.fspath(path)
    with open_archive(source) as archive:  # read once: config, metadata and weights of one archive
        config = read_json(archive, CONFIG, source)
        metadata = read_json(archive, METADATA, source) if METADATA in archive.namelist() else {}
        weights = read_member(archive, WEIGHTS, MAX_ARCHIVE_BYTES, source)
    version = str(metadata.get("keras_version", "3."))
    if not version.startswith("3."):
        raise CheckpointError(f"{source!r} was written by Keras {version}; fluxnet reads Keras 3 archives. Open "
                              "and save it again with Keras 3.")
    model = model_from_config(keras_config.from_keras(config, source))
    return model, variables_from_weights(model, weights, source)


# ------------------------------------------------------------------------------------------- writing
def save_keras_model(model: Model, variables: Mapping, path: str | os.PathLike) -> Path:
    """Write ``model`` with ``variables`` as a Keras 3 ``.keras`` archive at ``path`` (replaced in one step),
    which ``keras.saving.load_model`` opens and which predicts what ``model.apply`` does. Every layer must
    be one Keras has under the same class name (no Lambda); no optimizer state is written."""
    path = _target(path, ".keras", model, variables)
    metadata = {"keras_version": KERAS_VERSION, "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")}
    config = json.dumps(keras_config.to_keras(model))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # members stored, as Keras writes them
        archive.writestr(METADATA, json.dumps(metadata))
        archive.writestr(CONFIG, config)
        archive.writestr(WEIGHTS, _weights_file(model, variables))
    write_atomic(path, buffer.getvalue())
    return path


def save_keras_weights(model: Model, variables: Mapping, path: str | os.PathLike) -> Path:
    """Write ``variables`` as Keras 3's ``save_weights`` does (``model.weights.h5``'s layout) at ``path``,
    a name ending in ``.weights.h5``: the same Keras architecture's ``load_weights`` and
    ``fx.load_keras_weights`` read it."""
    path = _target(path, ".weights.h5", model, variables)
    write_atomic(path, _weights_file(model, variables))
    return path


def _target(path: str | os.PathLike, suffix: str, model: Model, variables: Mapping) -> Path:
    """``path`` checked to end in ``suffix`` (Keras refuses other names), its folder made, and
    ``variables`` checked to fit ``model``."""
    path = Path(path)
    if not path.name.endswith(suffix):
        raise ArgumentError(f"A Keras file of this kind is named *{suffix} (Keras refuses others), got {str(path)!r}.")
    problems = tree.mismatches(model.abstract_variables(), variables, "variables")
    if problems:
        raise ArgumentError(f"The variables do not fit model {model.name!r}:\n  " + "\n  ".join(problems))
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _weights_file(model: Model, variables: Mapping) -> bytes:
    """``model.weights.h5`` as Keras' save writes it: a ``vars`` group (with the layer's name) for the
    model and every layer, nested models' layers under ``layers/<key>/layers/``, the arrays in Keras'
    variable order (the slots ``load_keras_weights`` reads)."""
    problems: list[str] = []
    slots = layer_slots(model, problems)
    if problems:
        raise ArgumentError(f"Model {model.name!r} cannot be written in Keras' weights layout:\n  " +
                            "\n  ".join(problems))
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        file.create_group("vars").attrs["name"] = model.name
        _layer_groups(file, model, "")
        for slot in slots:
            array = np.asarray(functools.reduce(operator.getitem, (slot.collection, *slot.layers, slot.variable),
                                                variables))
            dataset = file.create_dataset(slot.path, data=array)
            if array.dtype == ml_dtypes.bfloat16:
                dataset.attrs["dtype"] = "bfloat16"  # Keras' marker (h5py stores it as 2 opaque bytes)
    return buffer.getvalue()


def _layer_groups(file: h5py.File, model: Model, prefix: str) -> None:
    keys = keras_layer_keys(model)
    for layer in model.layers:
        group = f"{prefix}layers/{keys[layer.name]}"
        file.create_group(f"{group}/vars").attrs["name"] = layer.name
        if isinstance(layer, Model):
            _layer_groups(file, layer, f"{group}/")

