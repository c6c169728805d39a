"""Metrics with Keras 3 semantics, as per-sample values.

Every metric is a pure, jittable function ``(y_true, y_pred, **options) -> values of shape (batch,)``:
what Keras' metric function computes, with every axis after the batch axis averaged, as Keras' ``Mean``
metric does before accumulating. A trainer averages them over the real rows of each batch with
``mean_over(values, mask)`` (the same reduction as ``fluxnet.losses.reduce_loss``), or accumulates
``sum(values * mask)`` and ``sum(mask)`` across batches.

``accuracy`` (alias ``acc``) picks its kind from the static shapes, as Keras' ``compile(metrics=
["accuracy"])`` does:

- binary (``binary_accuracy``, threshold 0.5) when ``y_pred`` has a last axis of size 1, or rank 1;
- else sparse (``sparse_categorical_accuracy``) when ``y_true`` has a lower rank than ``y_pred``, or a
  last axis of size 1;
- else categorical (``categorical_accuracy``).

(For a rank-1 ``y_pred``, Keras' rule would test the batch size; here it is taken as binary.)
The losses are metrics too, under the same names (e.g. ``"binary_crossentropy"``, ``"mae"``), except
``cosine_similarity``, whose Keras metric has the opposite sign of the loss.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from fluxnet import losses
from fluxnet.errors import ArgumentError
from fluxnet.losses import _align_ranks, _as_float, _check_same_shape, _sparse_labels
from fluxnet.registry import Registry, name_for, resolve

MetricFn = Callable[..., jax.Array]

METRICS: Registry[MetricFn] = Registry("metric")


def _per_sample(values: jax.Array) -> jax.Array:
    """Float values reduced to shape ``(batch,)`` by averaging the other axes (Keras' ``Mean``)."""
    values = _as_float(values)
    return jnp.mean(values, axis=tuple(range(1, values.ndim))) if values.ndim > 1 else values


def mean_over(values: ArrayLike, mask: ArrayLike | None = None) -> jax.Array:
    """The mean of per-sample ``values`` over the rows ``mask`` marks as real (0 if none is)."""
    return losses.reduce_loss(values, mask=mask)


# ----------------------------------------------------------------------------------------------
# Accuracy metrics
# ----------------------------------------------------------------------------------------------

def _check_k(name: str, k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ArgumentError(f"{name}: k must be a positive int, got {k!r}.")


def _matches(labels: jax.Array, predicted: jax.Array) -> jax.Array:
    """Per-sample 1.0 where ``labels == predicted`` (compared as floats, as Keras casts them)."""
    return _per_sample(_as_float(labels) == _as_float(predicted))


def binary_accuracy(y_true: ArrayLike, y_pred: ArrayLike, threshold: float = 0.5) -> jax.Array:
    """Fraction of entries where ``y_pred > threshold`` equals ``y_true`` (0/1 labels)."""
    y_true, y_pred = _align_ranks(jnp.asarray(y_true), jnp.asarray(y_pred))
    return _matches(y_true, y_pred > threshold)


def categorical_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """1.0 where the arg-max of ``y_pred`` is the arg-max of one-hot ``y_true``."""
    y_true, y_pred = jnp.asarray(y_true), jnp.asarray(y_pred)
    _check_same_shape("categorical_accuracy", y_true, y_pred, "sparse_categorical_accuracy")
    return _matches(jnp.argmax(y_true, axis=-1), jnp.argmax(y_pred, axis=-1))


def sparse_categorical_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """1.0 where the arg-max of ``y_pred`` equals the integer label (``(batch,)`` or ``(batch, 1)``)."""
    y_pred = jnp.asarray(y_pred)
    labels = _sparse_labels("sparse_categorical_accuracy", y_true, y_pred, y_pred.ndim - 1,
                            "categorical_accuracy")
    return _matches(labels, jnp.argmax(y_pred, axis=-1))


def _in_top_k(labels: jax.Array, y_pred: jax.Array, k: int) -> jax.Array:
    """Keras' ``in_top_k``: the label's score has rank <= k (ties count in the label's favour, NaN last)."""
    at_label = jnp.take_along_axis(y_pred, labels[..., None].astype(jnp.int32), axis=-1)
    at_label = jnp.where(jnp.isnan(at_label), -jnp.inf, at_label)
    return _per_sample(1 + jnp.sum(y_pred > at_label, axis=-1) <= k)


def top_k_categorical_accuracy(y_true: ArrayLike, y_pred: ArrayLike, k: int = 5) -> jax.Array:
    """1.0 where the one-hot label is among the ``k`` highest scores of ``y_pred``."""
    name = "top_k_categorical_accuracy"
    _check_k(name, k)
    y_true, y_pred = jnp.asarray(y_true), _as_float(y_pred)
    _check_same_shape(name, y_true, y_pred, "sparse_top_k_categorical_accuracy")
    return _in_top_k(jnp.argmax(y_true, axis=-1), y_pred, k)


def sparse_top_k_categorical_accuracy(y_true: ArrayLike, y_pred: ArrayLike, k: int = 5) -> jax.Array:
    """1.0 where the integer label is among the ``k`` highest scores of ``y_pred``."""
    name = "sparse_top_k_categorical_accuracy"
    _check_k(name, k)
    y_pred = _as_float(y_pred)
    labels = _sparse_labels(name, y_true, y_pred, y_pred.ndim - 1, "top_k_categorical_accuracy")
    return _in_top_k(labels, y_pred, k)


def accuracy_kind(y_true_shape: tuple[int, ...], y_pred_shape: tuple[int, ...]) -> str:
    """``"binary"``, ``"sparse"`` or ``"categorical"``: the accuracy Keras' compile picks (module doc)."""
    if len(y_pred_shape) <= 1 or y_pred_shape[-1] == 1:
        return "binary"
    if len(y_true_shape) < len(y_pred_shape) or y_true_shape[-1] == 1:
        return "sparse"
    return "categorical"


_ACCURACY_BY_KIND: dict[str, MetricFn] = {
    "binary": binary_accuracy,
    "sparse": sparse_categorical_accuracy,
    "categorical": categorical_accuracy,
}


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """Binary, sparse or categorical accuracy, chosen from the static shapes (see ``accuracy_kind``)."""
    y_true, y_pred = jnp.asarray(y_true), jnp.asarray(y_pred)
    return _ACCURACY_BY_KIND[accuracy_kind(y_true.shape, y_pred.shape)](y_true, y_pred)


# ----------------------------------------------------------------------------------------------
# Losses as metrics
# ----------------------------------------------------------------------------------------------

def _samplewise(loss: losses.LossFn) -> MetricFn:
    """The loss ``loss`` as a metric: its values averaged to shape ``(batch,)``."""
    def metric(y_true: ArrayLike, y_pred: ArrayLike, **options: Any) -> jax.Array:
        return _per_sample(loss(y_true, y_pred, **options))

    # The loss' attributes (e.g. its valid_mask, shaped like the loss) are not the metric's.
    return functools.update_wrapper(metric, loss, updated=())


mean_squared_error = _samplewise(losses.mean_squared_error)
mean_absolute_error = _samplewise(losses.mean_absolute_error)
mean_absolute_percentage_error = _samplewise(losses.mean_absolute_percentage_error)
mean_squared_logarithmic_error = _samplewise(losses.mean_squared_logarithmic_error)
log_cosh = _samplewise(losses.log_cosh)
kl_divergence = _samplewise(losses.kl_divergence)
hinge = _samplewise(losses.hinge)
squared_hinge = _samplewise(losses.squared_hinge)
categorical_hinge = _samplewise(losses.categorical_hinge)
binary_crossentropy = _samplewise(losses.binary_crossentropy)
categorical_crossentropy = _samplewise(losses.categorical_crossentropy)
sparse_categorical_crossentropy = _samplewise(losses.sparse_categorical_crossentropy)


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

register = METRICS.register  # register(name, fn, aliases=...) or @register(name): a custom metric


for _fn, _aliases in [
    (accuracy, ("acc",)),
    (binary_accuracy, ()),
    (categorical_accuracy, ()),
    (sparse_categorical_accuracy, ()),
    (top_k_categorical_accuracy, ()),
    (sparse_top_k_categorical_accuracy, ()),
    (mean_squared_error, ("mse",)),
    (mean_absolute_error, ("mae",)),
    (mean_absolute_percentage_error, ("mape",)),
    (mean_squared_logarithmic_error, ("msle",)),
    (log_cosh, ("logcosh",)),
    (kl_divergence, ("kld", "kullback_leibler_divergence")),
    (hinge, ()),
    (squared_hinge, ()),
    (categorical_hinge, ()),
    (binary_crossentropy, ("bce",)),
    (categorical_crossentropy, ()),
    (sparse_categorical_crossentropy, ()),
]:
    register(_fn.__name__, _fn, aliases=_aliases)
del _fn, _aliases


def get(identifier: str | MetricFn, **options: Any) -> MetricFn:
    """The metric function for a name or alias (a callable passes through); ``options`` are bound.

    Unknown names raise a ValueError that lists the valid names and the closest ones.
    """
    return resolve(METRICS, identifier, **options)


def name_of(identifier: str | MetricFn) -> str:
    """The name to log a metric under: a string as given (``"acc"`` stays ``"acc"``, as in Keras'
    history), else its registered name or the function's ``__name__``."""
    return name_for(METRICS, identifier)


def monitor_mode(monitor: str, mode: str = "auto") -> str:
    """Whether a monitored value improves going up (``"max"``) or down (``"min"``); ``"auto"`` follows
    Keras: accuracy-like names (acc, auc, precision, recall) go up, everything else (losses) down."""
    if mode not in ("auto", "min", "max"):
        raise ArgumentError(f"mode must be 'auto', 'min' or 'max', got {mode!r}.")
    if mode != "auto":
        return mode
    return "max" if any(k in monitor for k in ("acc", "auc", "precision", "recall")) else "min"
