"""Checks run on the data before training, so that bad data fails early with a message that says why.

Each failure is a ``DataError``, a ValueError (``ArgumentTypeError``, a TypeError, for a wrong kind of
array), naming the split, what is wrong, how often, and where (the first few offending indices),
before anything is traced or compiled.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from fluxnet.errors import ArgumentTypeError, DataError

_SHOWN = 3   # offending examples named in a message


def check_labels(labels: np.ndarray, num_classes: int, *, split: str = "train") -> np.ndarray:
    """``labels`` as a 1-D integer array with every value in [0, num_classes); else a clear error."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"{split} labels must be one class id per example (1-D), "
                        f"got shape {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ArgumentTypeError(f"{split} labels must be integer class ids, got dtype {labels.dtype}.")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        shown = ", ".join(f"label {labels[i]} at index {i}" for i in bad[:_SHOWN])
        raise DataError(f"{split} labels must lie in [0, {num_classes}) for {num_classes} classes: "
                        f"{bad.size} of {labels.size} are outside "
                        f"({shown}{', ...' if bad.size > _SHOWN else ''}).")
    return labels


def validate(images: np.ndarray, labels: np.ndarray, num_classes: int,
             input_shape: Sequence[int | None], *, split: str = "train") -> None:
    """Check one split against the model: non-empty, matching lengths, the model's input shape
    (``None`` entries match any size), labels in [0, num_classes), finite values."""
    images = np.asarray(images)
    if images.ndim == 0 or images.shape[0] == 0:
        raise DataError(f"The {split} split is empty (0 examples).")
    labels = np.asarray(labels)
    if labels.shape != images.shape[:1]:
        raise DataError(f"The {split} split has {images.shape[0]} images but labels of shape "
                        f"{labels.shape}; expected one label per image, shape {images.shape[:1]}.")
    expected = tuple(input_shape)
    shape = images.shape[1:]
    if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape)):
        raise DataError(f"{split} images have shape {shape} per example, but the model's input shape is "
                        f"{expected}.")
    check_labels(labels, num_classes, split=split)
    if np.issubdtype(images.dtype, np.inexact):
        bad_values = ~np.isfinite(images.reshape(images.shape[0], -1))
        bad = np.flatnonzero(bad_values.any(axis=1))
        if bad.size:
            raise DataError(f"{split} images contain {int(bad_values.sum())} non-finite values (NaN or inf) "
                            f"in {bad.size} examples, at indices "
                            f"{', '.join(map(str, bad[:_SHOWN]))}{', ...' if bad.size > _SHOWN else ''}.")


def validate_splits(splits, input_shape: Sequence[int | None]) -> None:
    """``validate`` every present split of a ``DatasetSplits`` (test included) against the model."""
    for name, split in splits.items(include_test=True):
        validate(split.images, split.labels, splits.metadata.num_classes, input_shape, split=name)
