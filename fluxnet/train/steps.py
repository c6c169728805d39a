"""Pure train/eval steps ``(state, batch) -> (state, metrics)``; the trainer jits them once.

A batch is ``{"x": inputs, "y": targets, "mask": real rows}`` plus an optional ``"weight"`` (sample or
class weights). Metrics come back as sums over real rows, ``{name: (weighted sum, weight)}``, so an
epoch's averages count real examples only, however the last batch was padded.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from fluxnet import losses
from fluxnet.train.state import TrainState

Batch = dict
Metrics = dict
Augment = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def metric_sums(loss: jax.Array, y: Any, preds: Any, mask: jax.Array | None, weight: jax.Array | None,
                metric_fns: Mapping[str, Callable]) -> Metrics:
    """Sums that average, over an epoch, to Keras' reported loss and metrics.

    The loss is weighted by real rows (Keras' loss tracker weights each batch by its size); metrics
    by ``mask * sample_weight`` as Keras' compiled metrics. ``mask=None``: every row is real.
    """
    real = jnp.ones(jax.tree.leaves(preds)[0].shape[:1], jnp.float32) if mask is None else mask.astype(jnp.float32)
    count = jnp.sum(real)
    out = {"loss": (loss * count, count)}
    w = real if weight is None else real * weight
    for name, fn in metric_fns.items():
        values = fn(y, preds)
        out[name] = (jnp.sum(jnp.where(w > 0, values * w, 0.0)), jnp.sum(w))
    return out


def make_train_step(model, loss_fn: Callable, tx: optax.GradientTransformation,
                    metric_fns: Mapping[str, Callable], augment: Augment | None = None,
                    axis_name: str | None = None):
    """The train step: augmentation (if any), forward in training mode, loss over real rows, update.

    With ``axis_name`` the step runs per device under ``jax.pmap``: each device draws its own
    randomness, gradients are averaged over the axis (``lax.pmean``; training batches are full, so this
    is the global batch's gradient), metric sums added up (``lax.psum``) and the updated
    BatchNormalization moving statistics averaged, as Flax's ImageNet example does: the statistics a
    step normalises with are each device's own batch's, not the global batch's.
    """

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        key = state.step_key()
        if axis_name is not None:
            key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
        aug_key, model_key = jax.random.split(key)
        # Training batches are full (the last partial one is dropped), so they carry no mask.
        x, y, mask, weight = batch["x"], batch["y"], batch.get("mask"), batch.get("weight")
        if augment is not None:
            x, y = augment(aug_key, x, y)

        def objective(params):
            preds, model_state = model.apply({"params": params, **state.model_state}, x, training=True,
                                             rng=model_key)
            loss = losses.compute_loss(loss_fn, y, preds, sample_weight=weight, mask=mask)
            return loss, (preds, model_state)

        (loss, (preds, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        metrics = metric_sums(loss, y, preds, mask, weight, metric_fns)
        if axis_name is not None:
            grads = jax.lax.pmean(grads, axis_name)
            model_state = jax.tree.map(lambda v: jax.lax.pmean(v, axis_name)
                                       if jnp.issubdtype(v.dtype, jnp.floating) else v, model_state)
            metrics = jax.lax.psum(metrics, axis_name)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              model_state=model_state, opt_state=opt_state)
        return state, metrics

    return train_step


def make_eval_step(model, loss_fn: Callable, metric_fns: Mapping[str, Callable]):
    """The eval step: inference mode, unweighted loss and metrics over real rows; state unchanged."""

    def eval_step(state: TrainState, batch: Batch) -> Metrics:
        preds, _ = model.apply(state.variables, batch["x"], training=False)
        loss = losses.compute_loss(loss_fn, batch["y"], preds, mask=batch["mask"])
        return metric_sums(loss, batch["y"], preds, batch["mask"], None, metric_fns)

    return eval_step


def make_predict_step(model):
    def predict_step(state: TrainState, x: Any) -> Any:
        return model.apply(state.variables, x, training=False)[0]

    return predict_step


def fuse_steps(step: Callable, n: int):
    """``n`` train steps in one dispatch, as an unrolled Python loop inside ``jit`` (``lax.scan`` of a
    conv step ran about 7x slower than per-batch dispatch on XLA:CPU). Batches are stacked on a leading axis."""

    def fused(state: TrainState, batches: Batch) -> tuple[TrainState, Metrics]:
        total = None
        for i in range(n):
            state, metrics = step(state, jax.tree.map(lambda b: b[i], batches))
            total = metrics if total is None else jax.tree.map(jnp.add, total, metrics)
        return state, total

    return fused


def finalize(sums: Metrics) -> dict[str, float]:
    """Epoch averages from accumulated ``(sum, weight)`` pairs (host floats)."""
    return {name: float(s / w) if w > 0 else float("nan") for name, (s, w) in sums.items()}
