"""Keras 3 weights files (``.weights.h5``, or the weights inside a ``.keras`` archive) as fluxnet variables.

How Keras 3 stores weights: ``model.save_weights`` walks ``model.layers`` and writes each layer's
variables as ``layers/<key>/vars/<i>``, and a nested model's layers under ``layers/<its key>/layers/`` (its key:
``functional`` or ``sequential`` with the same counters); fluxnet nests their variables under the inner
model's name. ``<key>`` is the snake-case class name plus a per-class counter in
``model.layers`` order (``conv2d``, ``conv2d_1``, ...), not the layer's name (recent Keras versions keep
the name as an attribute only), and ``<i>`` is the variable's position in the layer: Conv2D and Dense
``kernel, bias``; BatchNormalization ``gamma, beta, moving_mean, moving_variance`` (each only when the
layer has it). Keras itself loads by these positions, so does this module.

Matching: ``model.layers`` follows Keras' ``Functional.layers`` order on a fluxnet graph, so
every fluxnet layer gets the key Keras would give the same layer in the same architecture. Counters run
per class, so only the order of layers of one class matters. Loading is strict: every array the model
needs and the file lacks, every array under ``layers/`` that no layer takes, and every shape mismatch is
listed in one CheckpointError (a ValueError); nothing is dropped, padded or reshaped. Groups outside
``layers/`` (optimizer state) are not model variables and are not read.
"""
from __future__ import annotations

import contextlib
import functools
import io
import os
import zipfile
from typing import Iterator, NamedTuple

import h5py
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from fluxnet.errors import CheckpointError, NotFoundError
from fluxnet.layers.base import format_shape
from fluxnet.layers.variable_order import keras_variables
from fluxnet.models.functional import Model
from fluxnet.transfer import keras_archive

_HOW_TO_CONVERT = ("With Keras 3 installed: `m = <the same Keras model>; m.load_weights(OLD_FILE); "
                   "m.save_weights('model.weights.h5')`, then load that file.")


class _Slot(NamedTuple):
    """One model variable and the file entry that holds it."""
    collection: str
    layers: tuple[str, ...]  # the layer's name, after the names of the models it is nested in
    variable: str
    path: str  # e.g. "layers/conv2d_3/vars/1"
    shape: tuple
    dtype: np.dtype


@contextlib.contextmanager
def _open(path: str | os.PathLike) -> Iterator[h5py.File]:
    """The weights HDF5 file at ``path`` (or inside a ``.keras`` archive, read through its checks),
    checked to be Keras 3's."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise NotFoundError(f"No Keras weights file at {path!r}.")
    if zipfile.is_zipfile(path):
        with keras_archive.open_archive(path) as archive:
            source = io.BytesIO(keras_archive.read_member(archive, keras_archive.WEIGHTS,
                                                          keras_archive.MAX_ARCHIVE_BYTES, path))
    elif h5py.is_hdf5(path):
        source = path
    else:
        raise CheckpointError(f"{path!r} is neither an HDF5 file (Keras 3 '.weights.h5') "
                              "nor a '.keras' archive.")
    with _h5(source, path) as file:
        yield file


@contextlib.contextmanager
def _h5(source: str | io.BytesIO, path: str) -> Iterator[h5py.File]:
    """``source`` opened as HDF5 and checked to be a Keras 3 weights file (``path`` names it in errors)."""
    try:
        file = h5py.File(source, "r")
    except OSError as err:
        raise CheckpointError(f"{path!r} cannot be read as HDF5 ({err}): the file is damaged or truncated; "
                              "save or download it again.") from None
    with file:
        if "layer_names" in file.attrs or "model_weights" in file:
            raise CheckpointError(f"{path!r} is a legacy Keras 2 '.h5' weights file (keyed by layer name), "
                                  f"not a Keras 3 '.weights.h5' file. {_HOW_TO_CONVERT}")
        if not isinstance(file.get("layers"), h5py.Group):
            raise CheckpointError(f"{path!r} has no 'layers' group, so it is not a Keras 3 weights file "
                                  "(written by keras.Model.save_weights).")
        yield file


def layer_slots(model: Model, problems: list[str]) -> list[_Slot]:
    """The slots of ``model``'s variables; a nested model's layers under ``<its key>/layers/``, as
    Keras saves them."""
    abstract = model.abstract_variables()
    slots = []
    for entry in keras_variables(model):
        label, cls = "/".join(entry.names), type(entry.layer).__name__
        if entry.order is None:
            problems.append(f"layer {label!r}: no Keras variable order is known for class {cls}; register "
                            "it in fluxnet.layers.variable_order.VARIABLE_ORDERS")
            continue
        unknown = sorted(set(entry.collections) - set(entry.order))
        if unknown:
            problems.append(f"layer {label!r}: variables {unknown} are not in Keras' order {list(entry.order)} "
                            f"for {cls}")
            continue
        group = "layers/" + "/layers/".join(entry.keys)
        for index, variable in enumerate(v for v in entry.order if v in entry.collections):
            collection = entry.collections[variable]
            leaf = functools.reduce(dict.__getitem__, (*entry.names, variable), abstract[collection])
            slots.append(_Slot(collection, entry.names, variable, f"{group}/vars/{index}", tuple(leaf.shape),
                               leaf.dtype))
    return slots


def _plan(model: Model, file: h5py.File, source: str) -> list[_Slot]:
    """Which file entry feeds each model variable; one CheckpointError listing every problem."""
    problems: list[str] = []
    slots = layer_slots(model, problems)

    stored: dict[str, h5py.Dataset] = {}
    file["layers"].visititems(
        lambda name, obj: stored.__setitem__(f"layers/{name}", obj) if isinstance(obj, h5py.Dataset) else None)

    def keras_name(entry: str) -> str:
        name = file[entry.rsplit("/", 1)[0]].attrs.get("name")
        return f" (Keras layer {name!r})" if name is not None else ""

    for slot in slots:
        target, shape = f"{'/'.join(slot.layers)}/{slot.variable} ({slot.collection})", format_shape(slot.shape)
        if slot.path not in stored:
            problems.append(f"missing: {slot.path} for {target}, shape {shape}")
        elif tuple(stored[slot.path].shape) != slot.shape:
            problems.append(f"shape mismatch: {slot.path}{keras_name(slot.path)} has shape "
                            f"{format_shape(stored[slot.path].shape)}, {target} needs {shape}")
    for path in sorted(set(stored) - {slot.path for slot in slots}):
        problems.append(f"unexpected: {path}{keras_name(path)}, shape {format_shape(stored[path].shape)}, "
                        "is used by no layer of the model")
    if problems:
        raise CheckpointError(f"The Keras weights file {source!r} does not fit model {model.name!r} "
                              f"({len(problems)} problems; entries are keyed by layer class and order, "
                              "as Keras saves them):\n  " + "\n  ".join(problems))
    return slots


def check_keras_weights(model: Model, path: str | os.PathLike) -> None:
    """Raise the CheckpointError :func:`load_keras_weights` would, reading shapes only (no arrays)."""
    with _open(path) as file:
        _plan(model, file, os.fspath(path))


def load_keras_weights(model: Model, path: str | os.PathLike) -> dict:
    """Variables for ``model`` (the structure and dtypes of ``model.init``) from a Keras 3 weights file.

    ``path`` is a ``.weights.h5`` file from ``keras.Model.save_weights`` (or a ``.keras`` archive) of the
    same architecture: layers are matched by class and Keras' layer order (see the module docstring), as
    Keras does, so layer names need not agree.
    """
    with _open(path) as file:
        return _read(model, file, os.fspath(path))


def variables_from_weights(model: Model, data: bytes, source: str) -> dict:
    """:func:`load_keras_weights` for the bytes of a ``model.weights.h5`` (read from an archive)."""
    with _h5(io.BytesIO(data), source) as file:
        return _read(model, file, source)


def _read(model: Model, file: h5py.File, source: str) -> dict:
    slots = _plan(model, file, source)
    variables: dict = {"params": {}}
    for slot in slots:
        dataset = file[slot.path]
        if dataset.attrs.get("dtype") == "bfloat16":  # Keras writes bfloat16 with this marker
            array = np.array(dataset, dtype=ml_dtypes.bfloat16)
        else:
            array = dataset[()]
        holder = variables.setdefault(slot.collection, {})
        for name in slot.layers:
            holder = holder.setdefault(name, {})
        holder[slot.variable] = jnp.asarray(array, dtype=slot.dtype)
    return variables
