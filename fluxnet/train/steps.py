"""Pure train/eval steps ``(state, batch) -> (state, metrics)``; the trainer jits them once per batch shape.

A batch is ``{"x": inputs, "y": targets}`` plus an optional ``"mask"`` of real rows (a last batch padded
for several devices, or any evaluation batch) and ``"weight"`` (sample or class weights); inputs and
targets are arrays, or lists/dicts of them for several inputs or outputs. Metrics come back as sums
over real rows, ``{name: (weighted sum, weight)}``, so an epoch's averages count real examples only,
however a batch was padded.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fluxnet.train import loss_scale
from fluxnet.train.objective import Objective
from fluxnet.train.state import TrainState

Batch = dict
Metrics = dict
Augment = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def _apply(model, variables: dict, x: Any, mask: jax.Array | None, **kwargs) -> tuple[Any, dict]:
    """``model.apply``, with the row mask only when a batch has padding (BatchNormalization's batch
    statistics then skip the padded rows)."""
    return model.apply(variables, x, **kwargs) if mask is None else model.apply(variables, x, mask=mask, **kwargs)


REMAT = ("none", "full", "layers")


def make_train_step(model, objective: Objective, tx: optax.GradientTransformation,
                    augment: Augment | None = None, axis_name: str | None = None,
                    loss_fns: Sequence[Callable] | None = None, grad_accum_steps: int = 1, remat: str = "none"):
    """The train step: augmentation (if any), forward in training mode, loss over real rows, update.

    ``grad_accum_steps`` k > 1 splits the batch into k micro-batches, run one after another
    (``lax.scan``: one micro-batch's activations live at a time) and adds their gradients, each
    weighted by its share of the batch's real rows, so the update is the whole batch's (within float
    rounding); BatchNormalization's batch statistics are each micro-batch's, its moving statistics
    updated k times. ``remat`` trades compute for memory: "full" recomputes the forward pass in the
    backward one (``jax.checkpoint`` of the loss), "layers" recomputes each top-level layer (a
    nested model is one block) from its input.

    The optimizer gets the batch's loss as ``value`` (``optax.contrib.reduce_on_plateau`` reads it;
    other transforms ignore it). ``loss_fns`` replaces the objective's losses (MixUp's dense ones).
    With ``axis_name`` the step runs per device under ``jax.pmap``: each device draws its own
    randomness, gradients are averaged over the axis (``lax.pmean``; each device's loss is scaled by
    its share of the global batch's real rows, so a padded last batch still gives the global mean's
    gradient), metric sums added up (``lax.psum``) and the updated BatchNormalization moving
    statistics averaged, as Flax's ImageNet example does.
    """

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        key = state.step_key()
        if axis_name is not None:
            key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
        aug_key, model_key = jax.random.split(key)
        x, y, mask, weight = batch["x"], batch["y"], batch.get("mask"), batch.get("weight")
        if augment is not None:
            x, y = augment(aug_key, x, y)
        share = None
        if axis_name is not None and mask is not None:
            count = jnp.sum(mask.astype(jnp.float32))
            share = count * jax.lax.psum(1, axis_name) / jnp.maximum(jax.lax.psum(count, axis_name), 1.0)

        def objective_fn(params, model_state, x, y, mask, weight, key, scale):
            preds, model_state = _apply(model, {"params": params, **model_state}, x, mask, training=True,
                                        rng=key, **({"remat": True} if remat == "layers" else {}))
            total, parts = objective.loss(y, preds, weight, mask, loss_fns)
            return total * scale, (total, parts, preds, model_state)

        grad_fn = jax.value_and_grad(jax.checkpoint(objective_fn) if remat == "full" else objective_fn, has_aux=True)
        scaled = loss_scale.current(state.opt_state)  # mixed_float16: the gradients come back scaled
        if scaled is not None:
            share = scaled if share is None else share * scaled
        if grad_accum_steps == 1:
            (_, (loss, parts, preds, model_state)), grads = grad_fn(
                state.params, state.model_state, x, y, mask, weight, model_key, 1.0 if share is None else share)
            metrics = objective.sums(loss, parts, y, preds, mask, weight)
        else:
            loss, grads, model_state, metrics = _accumulated(grad_fn, objective, state, x, y, mask, weight,
                                                             model_key, share, grad_accum_steps)
        if axis_name is not None:
            grads = jax.lax.pmean(grads, axis_name)
            model_state = jax.tree.map(lambda v: jax.lax.pmean(v, axis_name)
                                       if jnp.issubdtype(v.dtype, jnp.floating) else v, model_state)
            metrics = jax.lax.psum(metrics, axis_name)
            loss = jax.lax.pmean(loss, axis_name)
        updates, opt_state = tx.update(grads, state.opt_state, state.params, value=loss)
        state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              model_state=model_state, opt_state=opt_state)
        return state, metrics

    return train_step


def _accumulated(grad_fn, objective: Objective, state: TrainState, x, y, mask, weight, key, share, k: int):
    """``(loss, grads, model_state, metric sums)`` of the batch from ``k`` micro-batches in turn."""
    rows = jax.tree.leaves(x)[0].shape[0]
    split = lambda a: a.reshape(k, rows // k, *a.shape[1:])  # noqa: E731
    real = jnp.ones((rows,), bool) if mask is None else mask
    total_rows = jnp.maximum(jnp.sum(real.astype(jnp.float32)), 1.0)
    micro = {"x": jax.tree.map(split, x), "y": jax.tree.map(split, y), "mask": split(real),
             "weight": None if weight is None else split(weight), "i": jnp.arange(k)}

    def one(carry, b):
        grads, model_state, loss = carry
        scale = jnp.sum(b["mask"].astype(jnp.float32)) / total_rows * (1.0 if share is None else share)
        mb_mask = None if mask is None else b["mask"]
        (part, (total, parts, preds, model_state)), g = grad_fn(
            state.params, model_state, b["x"], b["y"], mb_mask, b["weight"], jax.random.fold_in(key, b["i"]), scale)
        sums = objective.sums(total, parts, b["y"], preds, mb_mask, b["weight"])
        return (jax.tree.map(jnp.add, grads, g), model_state, loss + part / (1.0 if share is None else share)), sums

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (grads, model_state, loss), sums = jax.lax.scan(one, (zeros, state.model_state, jnp.zeros((), jnp.float32)), micro)
    return loss, grads, model_state, jax.tree.map(lambda a: jnp.sum(a, axis=0), sums)


def make_eval_step(model, objective: Objective):
    """The eval step: inference mode, unweighted loss and metrics over real rows; state unchanged."""

    def eval_step(state: TrainState, batch: Batch) -> Metrics:
        preds, _ = model.apply(state.variables, batch["x"], training=False)
        total, parts = objective.loss(batch["y"], preds, mask=batch["mask"])
        return objective.sums(total, parts, batch["y"], preds, batch["mask"], None)

    return eval_step


def make_predict_step(model):
    def predict_step(state: TrainState, x: Any) -> Any:
        return model.apply(state.variables, x, training=False)[0]

    return predict_step


def fuse_steps(step: Callable, n: int, scan: bool = False):
    """``n`` train steps in one dispatch; batches stacked on a leading axis. Unrolled (a Python loop
    inside ``jit``: compile time grows with ``n``), or ``scan``: one ``lax.scan`` over the batches, which
    compiles about like a single step and on XLA:CPU runs dense steps as fast as unrolled ones but conv
    steps about 6x slower (``steps_per_execution="auto"`` measures which to use)."""

    def unrolled(state: TrainState, batches: Batch) -> tuple[TrainState, Metrics]:
        total = None
        for i in range(n):
            state, metrics = step(state, jax.tree.map(lambda b: b[i], batches))
            total = metrics if total is None else jax.tree.map(jnp.add, total, metrics)
        return state, total

    def scanned(state: TrainState, batches: Batch) -> tuple[TrainState, Metrics]:
        state, metrics = jax.lax.scan(step, state, batches)
        return state, jax.tree.map(lambda m: m.sum(axis=0), metrics)

    return scanned if scan else unrolled


def sum_metrics(per_step: list) -> dict:
    """Add up ``{name: (sum, weight)}`` over steps in float64 on the host."""
    total: dict = {}
    for metrics in per_step:
        for name, (s, w) in metrics.items():
            ts, tw = total.get(name, (0.0, 0.0))
            total[name] = (ts + np.float64(s), tw + np.float64(w))
    return total


def finalize(sums: Metrics) -> dict[str, float]:
    """Epoch averages from accumulated ``(sum, weight)`` pairs (host floats)."""
    return {name: float(s / w) if w > 0 else float("nan") for name, (s, w) in sums.items()}
