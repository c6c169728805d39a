"""Class imbalance: balanced class weights, and oversampling rare classes to the majority count."""
from __future__ import annotations

import numpy as np

from fluxnet.data.checks import check_labels
from fluxnet.errors import DataError


def class_weights_balanced(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class weights ``n_samples / (num_classes * bincount)``, float64 of shape (num_classes,).

    scikit-learn's ``compute_class_weight("balanced", ...)`` formula: each class then contributes the
    same total weight. Index with the labels to weigh examples (``weights[labels]``). Every class must
    occur, as in scikit-learn: a class without examples has no defined weight.
    """
    labels = check_labels(labels, num_classes, split="class weight")
    counts = np.bincount(labels, minlength=num_classes)
    absent = np.flatnonzero(counts == 0)
    if absent.size:
        raise DataError(f"Balanced class weights need every class among the labels; classes "
                        f"{absent.tolist()} of {num_classes} have no examples.")
    return labels.size / (num_classes * counts.astype(np.float64))


def oversample_indices(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Example indices in which every class present occurs as often as the majority class.

    Each class keeps all of its examples and draws the missing ones from them with replacement, so
    the result (sorted by class) has ``majority_count * classes_present`` entries; ``rng`` makes the
    draw reproducible (a new draw per epoch with a per-epoch generator).
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    majority = counts.max()
    parts = []
    for cls, count in zip(classes, counts):
        members = np.flatnonzero(labels == cls)
        parts += [members, rng.choice(members, size=majority - count, replace=True)]
    return np.concatenate(parts)
