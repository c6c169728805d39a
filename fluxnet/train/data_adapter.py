"""From what ``fit``/``evaluate``/``predict`` are given to checked host arrays (Keras' data adapters).

Data is ``(x, y)`` (or ``(x,)``), or a fluxnet data split (``images``/``labels``); streamed data (a tfds
data source, an ArrayRecord path, an image folder, a grain dataset: ``fluxnet.data.streaming``) takes
the Trainer's streamed path instead, whose batches pass these same checks (``check_data``) as they are
read. ``x`` is an array,
or a list (in ``model.inputs`` order) or dict (keyed by Input layer name, or by the keys of a dict of
model inputs) for several inputs; ``y`` likewise per output (see ``objective.py``). Every check runs
here, on the host, before anything is traced: shapes against the model's Inputs, row counts, label
kinds and ranges, NaN/inf.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Mapping

import jax
import numpy as np

from fluxnet.data.checks import check_labels, validate
from fluxnet.data.streaming import STREAMABLE
from fluxnet.errors import ArgumentError, ArgumentTypeError, DataError
from fluxnet.layers.base import format_shape
from fluxnet.train.objective import Objective, input_names, structured

SPARSE_LOSSES = ("sparse_categorical_crossentropy",)


def as_xy(data: Any, what: str, streams: bool = False) -> tuple[Any, Any]:
    """``(x, y)`` from a tuple or a split object with ``images``/``labels`` (``y`` None if absent); the
    error for anything else names streamed data too where the caller also takes it (``streams``)."""
    if isinstance(data, (tuple, list)) and len(data) in (1, 2):
        return data[0], data[1] if len(data) == 2 else None
    if hasattr(data, "images") and hasattr(data, "labels"):
        return data.images, data.labels
    also = f", or streamed data ({STREAMABLE})" if streams else ""
    raise ArgumentTypeError(f"{what} must be (x, y) arrays or a fluxnet data split{also}, got {type(data).__name__}.")


def num_rows(tree: Any) -> int:
    return len(jax.tree.leaves(tree)[0])


def check_fit_counts(epochs: Any, batch_size: Any) -> None:
    """``epochs`` an int >= 0 and ``batch_size`` an int >= 1, else an error naming the argument."""
    for name, value, low in (("epochs", epochs, 0), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ArgumentError(f"{name} must be an int >= {low}, got {value!r}.")


def class_ids(y: np.ndarray) -> np.ndarray:
    """Integer class ids of sparse or one-hot targets."""
    return y.argmax(-1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(len(y)).astype(np.int64)


def take(tree: Any, rows: np.ndarray | slice) -> Any:
    """The rows ``rows`` of every array in ``tree``."""
    return jax.tree.map(lambda a: a[rows], tree)


def validation_rows(n: int, fraction: float) -> tuple[slice, slice]:
    """Keras' ``validation_split`` of ``n`` rows: ``(training rows, validation rows)``, the validation
    data the last ``fraction`` of them (before any shuffling)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ArgumentError(f"validation_split must be a fraction in (0, 1), got {fraction!r}.")
    keep = int(math.floor(n * (1.0 - fraction)))  # Keras' train_validation_split
    val = n - keep
    if val == 0 or keep == 0:
        raise DataError(f"validation_split={fraction} of {n} examples leaves {keep} for training and {val} for "
                        "validation; both need at least one.")
    return slice(0, keep), slice(keep, n)


def split_validation(x: Any, y: Any, sample_weight: Any, fraction: float) -> tuple[tuple, tuple]:
    """Keras' ``validation_split`` of arrays (:func:`validation_rows`). Returns ``((x, y,
    sample_weight), (val_x, val_y))``."""
    head, tail = validation_rows(num_rows(x), fraction)
    weights = None if sample_weight is None else np.asarray(sample_weight)[head]
    return (take(x, head), take(y, head), weights), (take(x, tail), take(y, tail))


def check_inputs(model, x: Any, split: str) -> Any:
    """``x`` in the structure ``model.apply`` takes, checked against the model's Inputs."""
    names = input_names(model)
    x = structured(x, names, f"{split} inputs", keyed=isinstance(model.input, Mapping))
    arrays = list(x.values()) if isinstance(x, Mapping) else x if isinstance(x, list) else [x]
    n = len(arrays[0]) if arrays[0].ndim else 0
    for name, tensor, a in zip(names, model.inputs, arrays):
        label = f"input {name!r}" if len(names) > 1 else "inputs"
        if a.ndim == 0 or a.shape[0] == 0:
            raise DataError(f"The {split} data is empty (0 examples).")
        expected = tuple(tensor.shape[1:])
        if a.ndim != len(expected) + 1 or any(e is not None and e != s for e, s in zip(expected, a.shape[1:])):
            raise DataError(f"The {split} {label} have shape {a.shape[1:]} per example, but the model's Input "
                            f"expects {format_shape(expected)}.")
        if len(a) != n:
            raise DataError(f"The {split} inputs have different numbers of rows: {n} for {names[0]!r}, {len(a)} "
                            f"for {name!r}.")
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise DataError(f"The {split} {label} contain NaN or inf values.")
    return x


def check_targets(objective: Objective, model, y: Any, rows: int, split: str) -> Any:
    """Targets in the steps' structure, checked: numbers, one per input row, whole class ids in range
    for a sparse loss (as integers)."""
    y = objective.targets(y)
    flat = objective.flat(y)
    for i, (name, t, loss, out) in enumerate(zip(objective.names, flat, objective.loss_names, model.outputs)):
        label = f"targets of output {name!r}" if objective.multi else "targets"
        _check_numbers(t, label, split)
        if t.ndim == 0 or len(t) != rows:
            raise DataError(f"The {split} data has {rows} inputs but {len(t) if t.ndim else 0} {label}.")
        if loss in SPARSE_LOSSES:
            flat[i] = check_labels(_sparse_ids(t, split), out.shape[-1], split=split)
    return flat[0] if not objective.multi else flat


def _check_numbers(t: np.ndarray, label: str, split: str) -> None:
    if not (np.issubdtype(t.dtype, np.number) or t.dtype == bool):
        raise DataError(f"The {split} {label} must be numbers, got dtype {t.dtype} (e.g. {t.ravel()[:1]}); "
                        "map class names to integer ids first.")


def _sparse_ids(t: np.ndarray, split: str) -> np.ndarray:
    """Class ids of sparse targets, ``(n,)`` or ``(n, 1)``, as integers."""
    return class_id_labels(t.reshape(len(t)) if t.ndim == 2 and t.shape[1] == 1 else t, split)


def check_data(objective: Objective, model, x: Any, y: Any, split: str) -> tuple[Any, Any]:
    """``(x, y)`` checked and structured for the steps (``y`` may be None: prediction)."""
    if (len(model.inputs) == 1 and not objective.multi and y is not None and objective.loss_names[0] in SPARSE_LOSSES
            and not isinstance(x, Mapping) and not isinstance(y, Mapping)):
        x, t = np.asarray(x[0] if isinstance(x, (list, tuple)) and len(x) == 1 else x), np.asarray(y)
        _check_numbers(t, "targets", split)
        t = _sparse_ids(t, split)
        validate(x, t, model.outputs[0].shape[-1], model.inputs[0].shape[1:], split=split)
        return x, t
    x = check_inputs(model, x, split)
    return x, None if y is None else check_targets(objective, model, y, num_rows(x), split)


def class_id_labels(y: np.ndarray, split: str) -> np.ndarray:
    """Class ids for a sparse loss: integers as they are; floats only when every value is a whole
    number (Keras would floor 3.7 for the loss yet compare it raw for accuracy)."""
    if np.issubdtype(y.dtype, np.integer):
        return y
    if y.dtype == bool:
        return y.astype(np.int64)
    fractional = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
    if fractional.size:
        raise DataError(f"The {split} labels must be whole class ids: {fractional.size} of {y.size} are not "
                        f"(first at index {fractional[0]}: {y[fractional[0]]}).")
    return y.astype(np.int64)
