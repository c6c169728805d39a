"""Loss functions with Keras 3 numerics, and Keras' "sum_over_batch_size" reduction.

Every loss is a pure, jittable function ``(y_true, y_pred, **options) -> per-sample losses`` that reduces
the last axis as Keras does, so 2-D inputs give shape ``(batch,)``. Options are static Python values
(checked before any JAX op runs); bind them with ``get(name, **options)`` or ``functools.partial``.

As Keras' ``compile(loss=...)`` does (its ``LossFunctionWrapper``), ``y_true`` and ``y_pred`` whose ranks
differ by one with a trailing axis of size 1 are first brought to the same rank, so labels of shape
``(batch,)`` work with predictions of shape ``(batch, 1)``.

Masked losses: ``sparse_categorical_crossentropy(..., ignore_class=c)`` gives 0 at positions labelled
``c``, and those positions must not count in the mean either. A loss declares such positions through a
``valid_mask`` attribute (a function taking the loss' arguments and returning a boolean array shaped
like the per-sample losses, or None); ``valid_mask(loss, y_true, y_pred, **options)`` reads it, and
``compute_loss`` combines it with the caller's row mask before ``reduce_loss``. User losses may set the
attribute too.
"""
from __future__ import annotations

import functools
import numbers
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from fluxnet.errors import ArgumentError, ArgumentTypeError, DataError
from fluxnet.registry import Registry, name_for, resolve

EPSILON = 1e-7  # keras.backend.epsilon()

LossFn = Callable[..., jax.Array]

LOSSES: Registry[LossFn] = Registry("loss")


# ----------------------------------------------------------------------------------------------
# Input preparation and static checks (shared with fluxnet.metrics)
# ----------------------------------------------------------------------------------------------

def _as_float(x: ArrayLike) -> jax.Array:
    """``x`` as a float array: float32 (Keras' floatx) unless already floating."""
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _as_float_pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """``y_pred`` as a float array and ``y_true`` in its dtype."""
    y_pred = _as_float(y_pred)
    return jnp.asarray(y_true).astype(y_pred.dtype), y_pred


def _align_ranks(y_true: jax.Array, y_pred: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Keras' ``squeeze_or_expand_to_same_rank``: fix a rank difference of one on a size-1 last axis."""
    if y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
        if y_pred.ndim == 1:
            y_pred = y_pred[:, None]
        else:
            y_true = jnp.squeeze(y_true, -1)
    elif y_pred.ndim == y_true.ndim + 1 and y_pred.shape[-1] == 1:
        if y_true.ndim == 1:
            y_true = y_true[:, None]
        else:
            y_pred = jnp.squeeze(y_pred, -1)
    return y_true, y_pred


def _prepare(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[jax.Array, jax.Array]:
    return _align_ranks(*_as_float_pair(y_true, y_pred))


def _check_broadcastable(name: str, y_true: jax.Array, y_pred: jax.Array) -> None:
    try:
        jnp.broadcast_shapes(y_true.shape, y_pred.shape)
    except ValueError:
        raise DataError(f"{name}: y_true of shape {y_true.shape} does not broadcast against y_pred of "
                        f"shape {y_pred.shape}.") from None


def _check_same_shape(name: str, y_true: jax.Array, y_pred: jax.Array, sparse_name: str | None) -> None:
    """Equal shapes, as the categorical losses need; integer labels get a pointer to ``sparse_name``."""
    if y_true.shape == y_pred.shape:
        return
    msg = (f"{name}: y_true and y_pred must have the same shape, got y_true {y_true.shape} and "
           f"y_pred {y_pred.shape}.")
    if sparse_name and y_pred.ndim and y_true.shape in (y_pred.shape[:-1], y_pred.shape[:-1] + (1,)):
        msg += (f" y_true looks like integer class labels: use {sparse_name!r} for those, "
                "or one-hot encode them.")
    raise DataError(msg)


def _canonical_axis(name: str, axis: Any, ndim: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise ArgumentTypeError(f"{name}: axis must be an int, got {axis!r}.")
    if not -ndim <= axis < ndim:
        raise ArgumentError(f"{name}: axis={axis} is out of range for y_pred of rank {ndim}.")
    return int(axis) % ndim


def _sparse_labels(name: str, y_true: ArrayLike, y_pred: jax.Array, axis: int,
                   dense_name: str) -> jax.Array:
    """Integer-label targets without the class axis (a size-1 class axis is squeezed, as Keras does).

    ``axis`` is the canonical class axis of ``y_pred``; one-hot targets get a pointer to ``dense_name``.
    """
    y_true = jnp.asarray(y_true)
    if y_true.ndim == y_pred.ndim and y_true.shape[axis] == 1:
        y_true = jnp.squeeze(y_true, axis)
    expected = y_pred.shape[:axis] + y_pred.shape[axis + 1:]
    if y_true.shape != expected:
        msg = (f"{name}: expected integer labels of shape {expected} (or with a size-1 class axis) for "
               f"y_pred of shape {y_pred.shape}, got y_true of shape {y_true.shape}.")
        if y_true.shape == y_pred.shape:
            msg += f" y_true looks one-hot encoded: use {dense_name!r} for that."
        raise DataError(msg)
    return y_true


def _check_bool(name: str, option: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{name}: {option} must be True or False, got {value!r}.")


def _check_label_smoothing(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ArgumentError(f"{name}: label_smoothing must be a number in [0, 1], got {value!r}.")
    return float(value)


# ----------------------------------------------------------------------------------------------
# Regression losses
# ----------------------------------------------------------------------------------------------

def _elementwise_mean(name: str, fn: Callable[[jax.Array, jax.Array], jax.Array],
                      y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """Mean over the last axis of ``fn(y_true, y_pred)`` after Keras' rank alignment."""
    y_true, y_pred = _prepare(y_true, y_pred)
    _check_broadcastable(name, y_true, y_pred)
    return jnp.mean(fn(y_true, y_pred), axis=-1)


def mean_squared_error(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """``mean((y_true - y_pred) ** 2, axis=-1)``."""
    return _elementwise_mean("mean_squared_error", lambda t, p: jnp.square(t - p), y_true, y_pred)


def mean_absolute_error(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """``mean(|y_true - y_pred|, axis=-1)``."""
    return _elementwise_mean("mean_absolute_error", lambda t, p: jnp.abs(t - p), y_true, y_pred)


def mean_absolute_percentage_error(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """``100 * mean(|(y_true - y_pred) / max(|y_true|, eps)|, axis=-1)``: zero targets stay finite."""
    return 100.0 * _elementwise_mean(
        "mean_absolute_percentage_error",
        lambda t, p: jnp.abs((t - p) / jnp.maximum(jnp.abs(t), EPSILON)), y_true, y_pred)


def mean_squared_logarithmic_error(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """``mean((log(max(y_pred, eps) + 1) - log(max(y_true, eps) + 1)) ** 2, axis=-1)``.

    Values below epsilon (negative ones included) are raised to epsilon, as in Keras.
    """
    def sq_log_diff(t: jax.Array, p: jax.Array) -> jax.Array:
        return jnp.square(jnp.log(jnp.maximum(p, EPSILON) + 1.0) - jnp.log(jnp.maximum(t, EPSILON) + 1.0))

    return _elementwise_mean("mean_squared_logarithmic_error", sq_log_diff, y_true, y_pred)


def log_cosh(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """``mean(log(cosh(y_pred - y_true)), axis=-1)``, as ``x + softplus(-2x) - log 2`` (no overflow)."""
    def logcosh(t: jax.Array, p: jax.Array) -> jax.Array:
        x = p - t
        return x + jax.nn.softplus(-2.0 * x) - jnp.log(2.0).astype(x.dtype)

    return _elementwise_mean("log_cosh", logcosh, y_true, y_pred)


# ----------------------------------------------------------------------------------------------
# Probabilistic losses
# ----------------------------------------------------------------------------------------------

def _log_probs(y_pred: jax.Array, from_logits: bool, axis: int) -> jax.Array:
    """Log-probabilities as Keras' JAX backend computes them.

    Logits go through ``log_softmax``; probabilities are renormalised to sum to 1 and clipped to
    ``[eps, 1 - eps]``, which keeps exact zeros and ones finite (values and gradients).
    """
    if from_logits:
        return jax.nn.log_softmax(y_pred, axis=axis)
    y_pred = y_pred / jnp.sum(y_pred, axis=axis, keepdims=True)
    return jnp.log(jnp.clip(y_pred, EPSILON, 1.0 - EPSILON))


def categorical_crossentropy(y_true: ArrayLike, y_pred: ArrayLike, from_logits: bool = False,
                             label_smoothing: float = 0.0, axis: int = -1) -> jax.Array:
    """Crossentropy between one-hot (or soft) targets and predicted class probabilities.

    ``label_smoothing`` s in [0, 1] replaces the targets by ``y_true * (1 - s) + s / num_classes``.
    Integer labels belong to ``sparse_categorical_crossentropy``; this raises a ValueError saying so.
    """
    name = "categorical_crossentropy"
    _check_bool(name, "from_logits", from_logits)
    smoothing = _check_label_smoothing(name, label_smoothing)
    y_true, y_pred = _prepare(y_true, y_pred)
    _check_same_shape(name, y_true, y_pred, "sparse_categorical_crossentropy")
    axis = _canonical_axis(name, axis, y_pred.ndim)
    if y_pred.shape[axis] == 1:
        warnings.warn(f"{name}: y_pred has a single class (shape {y_pred.shape}), so the loss is always "
                      "0; use 'binary_crossentropy' for two classes.", stacklevel=2)
    if smoothing:
        y_true = y_true * (1.0 - smoothing) + smoothing / y_pred.shape[axis]
    return -jnp.sum(y_true * _log_probs(y_pred, from_logits, axis), axis=axis)


def _sparse_valid(labels: jax.Array, ignore_class: int | None) -> jax.Array | None:
    return None if ignore_class is None else labels != ignore_class


def _check_ignore_class(name: str, ignore_class: Any) -> None:
    if ignore_class is not None and (isinstance(ignore_class, bool)
                                     or not isinstance(ignore_class, numbers.Integral)):
        raise ArgumentTypeError(f"{name}: ignore_class must be an int or None, got {ignore_class!r}.")


def sparse_categorical_crossentropy(y_true: ArrayLike, y_pred: ArrayLike, from_logits: bool = False,
                                    ignore_class: int | None = None, axis: int = -1) -> jax.Array:
    """Crossentropy between integer class labels (shape ``(batch,)`` or ``(batch, 1)``) and predictions.

    Positions labelled ``ignore_class`` give a loss of 0 and are excluded from the mean by
    ``compute_loss`` (see ``sparse_categorical_crossentropy.valid_mask``). Labels outside
    ``[0, num_classes)`` give 0, as in Keras.
    """
    name = "sparse_categorical_crossentropy"
    _check_bool(name, "from_logits", from_logits)
    _check_ignore_class(name, ignore_class)
    y_pred = _as_float(y_pred)
    axis = _canonical_axis(name, axis, y_pred.ndim)
    labels = _sparse_labels(name, y_true, y_pred, axis, "categorical_crossentropy").astype(jnp.int32)
    valid = _sparse_valid(labels, ignore_class)
    if valid is not None:
        # Ignored positions get label 0 and uniform scores, so no NaN arises there even in gradients.
        labels = jnp.where(valid, labels, 0)
        y_pred = jnp.where(jnp.expand_dims(valid, axis), y_pred, 1.0)
    log_probs = _log_probs(y_pred, from_logits, axis)
    one_hot = jax.nn.one_hot(labels, y_pred.shape[axis], axis=axis, dtype=log_probs.dtype)
    losses = -jnp.sum(one_hot * log_probs, axis=axis)
    return losses if valid is None else jnp.where(valid, losses, 0.0)


def _sparse_categorical_valid_mask(y_true: ArrayLike, y_pred: ArrayLike, from_logits: bool = False,
                                   ignore_class: int | None = None, axis: int = -1) -> jax.Array | None:
    """Positions whose label is not ``ignore_class`` (None when nothing is ignored); takes the loss' arguments."""
    name = "sparse_categorical_crossentropy"
    _check_ignore_class(name, ignore_class)
    y_pred = jnp.asarray(y_pred)
    axis = _canonical_axis(name, axis, y_pred.ndim)
    labels = _sparse_labels(name, y_true, y_pred, axis, "categorical_crossentropy").astype(jnp.int32)
    return _sparse_valid(labels, ignore_class)


sparse_categorical_crossentropy.valid_mask = _sparse_categorical_valid_mask  # type: ignore[attr-defined]


def binary_crossentropy(y_true: ArrayLike, y_pred: ArrayLike, from_logits: bool = False,
                        label_smoothing: float = 0.0, axis: int = -1) -> jax.Array:
    """Elementwise binary crossentropy, averaged over ``axis``.

    ``label_smoothing`` s squeezes targets towards 0.5: ``y_true * (1 - s) + 0.5 * s``. Probabilities
    are clipped to ``[eps, 1 - eps]``; logits go through ``log_sigmoid``.
    """
    name = "binary_crossentropy"
    _check_bool(name, "from_logits", from_logits)
    smoothing = _check_label_smoothing(name, label_smoothing)
    y_true, y_pred = _prepare(y_true, y_pred)
    _check_same_shape(name, y_true, y_pred, None)
    axis = _canonical_axis(name, axis, y_pred.ndim)
    if smoothing:
        y_true = y_true * (1.0 - smoothing) + 0.5 * smoothing
    if from_logits:
        log_p, log_not_p = jax.nn.log_sigmoid(y_pred), jax.nn.log_sigmoid(-y_pred)
    else:
        p = jnp.clip(y_pred, EPSILON, 1.0 - EPSILON)
        log_p, log_not_p = jnp.log(p), jnp.log(1.0 - p)
    return jnp.mean(-(y_true * log_p + (1.0 - y_true) * log_not_p), axis=axis)


def kl_divergence(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """``sum(y_true * log(y_true / y_pred), axis=-1)`` with both clipped to ``[eps, 1]``."""
    y_true, y_pred = _prepare(y_true, y_pred)
    _check_same_shape("kl_divergence", y_true, y_pred, None)
    y_true = jnp.clip(y_true, EPSILON, 1.0)
    y_pred = jnp.clip(y_pred, EPSILON, 1.0)
    return jnp.sum(y_true * jnp.log(y_true / y_pred), axis=-1)


# ----------------------------------------------------------------------------------------------
# Hinge and similarity losses
# ----------------------------------------------------------------------------------------------

def convert_binary_labels_to_hinge(y_true: jax.Array) -> jax.Array:
    """Labels as -1/1: ``2 * y_true - 1`` when ALL labels in the batch are 0 or 1, else unchanged (Keras)."""
    is_binary = jnp.all((y_true == 0) | (y_true == 1))
    return jnp.where(is_binary, 2.0 * y_true - 1.0, y_true)


def _hinge_margins(name: str, y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    y_true, y_pred = _prepare(y_true, y_pred)
    _check_broadcastable(name, y_true, y_pred)
    return jnp.maximum(1.0 - convert_binary_labels_to_hinge(y_true) * y_pred, 0.0)


def hinge(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """``mean(max(1 - y_true * y_pred, 0), axis=-1)`` with labels in -1/1 (0/1 converted, see above)."""
    return jnp.mean(_hinge_margins("hinge", y_true, y_pred), axis=-1)


def squared_hinge(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """``mean(max(1 - y_true * y_pred, 0) ** 2, axis=-1)`` with labels in -1/1 (0/1 converted)."""
    return jnp.mean(jnp.square(_hinge_margins("squared_hinge", y_true, y_pred)), axis=-1)


def categorical_hinge(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """``max(neg - pos + 1, 0)`` with ``pos = sum(y_true * y_pred)``, ``neg = max((1 - y_true) * y_pred)``."""
    y_true, y_pred = _prepare(y_true, y_pred)
    _check_same_shape("categorical_hinge", y_true, y_pred, None)
    pos = jnp.sum(y_true * y_pred, axis=-1)
    neg = jnp.max((1.0 - y_true) * y_pred, axis=-1)
    return jnp.maximum(neg - pos + 1.0, 0.0)


def _l2_normalize(x: jax.Array, axis: int) -> jax.Array:
    """Keras' ``normalize``: ``x * min(rsqrt(sum(x**2)), 1/eps)``.

    Written as ``rsqrt(max(sum(x**2), eps**2))`` (the same value), whose gradient stays finite at 0.
    """
    square_sum = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(square_sum, EPSILON ** 2))


def cosine_similarity(y_true: ArrayLike, y_pred: ArrayLike, axis: int = -1) -> jax.Array:
    """Negative cosine similarity along ``axis`` (-1: same direction); 0 when either vector is zero."""
    name = "cosine_similarity"
    y_true, y_pred = _prepare(y_true, y_pred)
    _check_same_shape(name, y_true, y_pred, None)
    axis = _canonical_axis(name, axis, y_pred.ndim)
    return -jnp.sum(_l2_normalize(y_true, axis) * _l2_normalize(y_pred, axis), axis=axis)


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

register = LOSSES.register  # register(name, fn, aliases=...) or @register(name): a custom loss


for _fn, _aliases in [
    (mean_squared_error, ("mse",)),
    (mean_absolute_error, ("mae",)),
    (mean_absolute_percentage_error, ("mape",)),
    (mean_squared_logarithmic_error, ("msle",)),
    (log_cosh, ("logcosh",)),
    (categorical_crossentropy, ()),
    (sparse_categorical_crossentropy, ()),
    (binary_crossentropy, ("bce",)),
    (kl_divergence, ("kld", "kullback_leibler_divergence")),
    (hinge, ()),
    (squared_hinge, ()),
    (categorical_hinge, ()),
    (cosine_similarity, ("cosine_proximity",)),
]:
    register(_fn.__name__, _fn, aliases=_aliases)
del _fn, _aliases


def get(identifier: str | LossFn, **options: Any) -> LossFn:
    """The loss function for a name or alias (a callable passes through).

    With ``options`` (e.g. ``from_logits=True``) the function comes back with them bound
    (``functools.partial``); option names are checked here. Unknown names raise a ValueError that lists
    the valid names and the closest ones.
    """
    return resolve(LOSSES, identifier, **options)


def name_of(identifier: str | LossFn) -> str:
    """A loss' name for configs and logs: a string as given, else the name it was registered under
    (``functools.partial`` is seen through) or the function's ``__name__``."""
    return name_for(LOSSES, identifier)


# ----------------------------------------------------------------------------------------------
# Reduction
# ----------------------------------------------------------------------------------------------

def _broadcast_leading(x: jax.Array, shape: tuple[int, ...], what: str) -> jax.Array:
    """``x`` broadcast to ``shape`` from the leading axes.

    ``x.shape`` is a leading part of ``shape`` (e.g. ``(batch,)``), or ``(batch, 1)`` for ``(batch,)``.
    """
    if x.ndim == len(shape) + 1 and x.shape[-1] == 1:
        x = jnp.squeeze(x, -1)
    if x.ndim > len(shape) or x.shape != shape[:x.ndim]:
        raise DataError(f"{what} of shape {x.shape} does not match per-sample losses of shape {shape}: "
                        f"expected a leading part of it, e.g. {shape[:1]}.")
    return jnp.broadcast_to(x.reshape(x.shape + (1,) * (len(shape) - x.ndim)), shape)


def reduce_loss(per_sample: ArrayLike, sample_weight: ArrayLike | None = None,
                mask: ArrayLike | None = None) -> jax.Array:
    """Keras' "sum_over_batch_size" reduction to a scalar.

    ``sum(per_sample * sample_weight)`` over the real elements, divided by the NUMBER of real elements
    (not by the sum of the weights), as Keras 3's ``reduce_weighted_values``/``apply_mask`` do.
    ``sample_weight`` and ``mask`` have the shape of ``per_sample`` or a leading part of it (``(batch,)``
    for per-timestep losses). ``mask`` is boolean or 0/1 and marks the real entries, e.g. the rows that
    do not pad a last batch; masked entries never count, even when they hold NaN. An all-masked batch
    gives 0.
    """
    values = _as_float(per_sample)
    if values.ndim == 0:
        raise DataError("reduce_loss needs per-sample losses with a batch axis, got a scalar. A loss "
                        "reduces the last axis of y_pred: give predictions shape (batch, 1), not (batch,).")
    if sample_weight is not None:
        values = values * _broadcast_leading(jnp.asarray(sample_weight, values.dtype), values.shape,
                                             "sample_weight")
    if mask is None:
        return jnp.sum(values) / max(values.size, 1)
    keep = _broadcast_leading(jnp.asarray(mask) != 0, values.shape, "mask")
    count = jnp.sum(keep, dtype=values.dtype)
    total = jnp.sum(jnp.where(keep, values, 0.0))
    return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)


def valid_mask(loss: str | LossFn, y_true: ArrayLike, y_pred: ArrayLike,
               **options: Any) -> jax.Array | None:
    """The loss' own mask of counted positions (shaped like its output), or None when all count.

    Read from the loss' ``valid_mask`` attribute; options bound with ``functools.partial`` are honoured.
    """
    fn = get(loss)
    while isinstance(fn, functools.partial):
        if fn.args:
            raise ArgumentTypeError("valid_mask: a loss given as functools.partial may bind keyword options only.")
        options = {**fn.keywords, **options}
        fn = fn.func
    hook = getattr(fn, "valid_mask", None)
    return None if hook is None else hook(y_true, y_pred, **options)


def compute_loss(loss: str | LossFn, y_true: ArrayLike, y_pred: ArrayLike,
                 sample_weight: ArrayLike | None = None, mask: ArrayLike | None = None,
                 **options: Any) -> jax.Array:
    """The reduced loss as Keras' ``Loss.__call__`` gives it: per-sample losses, the loss' own valid
    mask (e.g. ``ignore_class``) combined with the caller's row ``mask``, then ``reduce_loss``."""
    fn = get(loss)
    per_sample = fn(y_true, y_pred, **options)
    own = valid_mask(fn, y_true, y_pred, **options)
    if own is not None:
        mask = own if mask is None else own & _broadcast_leading(jnp.asarray(mask) != 0, own.shape, "mask")
    return reduce_loss(per_sample, sample_weight, mask)


def dense_equivalent(loss: str | LossFn) -> LossFn:
    """The loss for one-hot/soft targets that matches ``loss``: a sparse categorical cross-entropy
    becomes ``categorical_crossentropy`` with the same ``from_logits`` (MixUp/CutMix mix labels into
    soft targets); any other loss is returned unchanged."""
    fn, options = get(loss), {}
    while isinstance(fn, functools.partial):
        options = {**fn.keywords, **options}
        fn = fn.func
    if fn is not sparse_categorical_crossentropy:
        return get(loss)
    if options.get("ignore_class") is not None:
        raise ArgumentError("sparse_categorical_crossentropy with ignore_class cannot train on mixed (soft) "
                            "labels from MixUp/CutMix.")
    return get("categorical_crossentropy", from_logits=options.get("from_logits", False))
