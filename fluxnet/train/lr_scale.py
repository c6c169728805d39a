"""The learning-rate scale: every Trainer optimizer ends in ``inject_hyperparams(scale)``.

An optax schedule recomputes its learning rate on every update (``inject_hyperparams`` overwrites what
a callback writes into it), and an opaque optax transform has no learning rate in its state at all. So
the Trainer wraps every optimizer as ``optax.chain(tx, inject_hyperparams(scale)(step_size=1.0))`` and
Keras' learning-rate callbacks (``ReduceLROnPlateau``, ``LearningRateScheduler``) change that scale: it
lives in the optimizer state (checkpointed, resumed), changing it recompiles nothing, and it works on
top of a schedule (Keras refuses callbacks on a schedule). The populations issue varies it per member.
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax

from fluxnet import optimizers
from fluxnet.errors import ArgumentError


def with_scale(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """``tx`` followed by a multiplicative scale of its updates (1.0 until a callback changes it)."""
    return optax.chain(tx, optax.inject_hyperparams(optax.scale)(step_size=1.0))


def get_scale(opt_state: Any) -> float:
    """The current scale of a ``with_scale`` optimizer's state."""
    return float(opt_state[-1].hyperparams["step_size"])


def set_scale(state: Any, scale: float) -> Any:
    """``state`` (a TrainState) with the learning-rate scale set to ``scale``; nothing else changes."""
    if not (isinstance(scale, (int, float)) or jnp.ndim(scale) == 0) or not float(scale) >= 0:
        raise ArgumentError(f"A learning-rate scale must be a number >= 0, got {scale!r}.")
    *inner, last = state.opt_state
    old = last.hyperparams["step_size"]
    hyperparams = {**last.hyperparams, "step_size": jnp.asarray(scale, old.dtype)}
    return state.replace(opt_state=type(state.opt_state)((*inner, last._replace(hyperparams=hyperparams))))


def learning_rate(opt_state: Any) -> float | None:
    """The learning rate the next update uses, as Keras logs it: the optimizer's own rate (injected by
    fluxnet's optimizers and schedules) times the scale; for an opaque optax transform, the scale."""
    base, scale = base_learning_rate(opt_state), get_scale(opt_state)
    return scale if base is None else base * scale


def base_learning_rate(opt_state: Any) -> float | None:
    """The optimizer's own learning rate (before the scale), or None for an opaque transform."""
    base = optimizers.current_learning_rate(opt_state[0])
    return None if base is None else float(base)


def set_learning_rate(state: Any, learning_rate: float, owner: str) -> Any:
    """``state`` with the scale that makes the learning rate ``learning_rate``: that rate over the
    optimizer's own (a schedule's current value), or the rate itself for an opaque optax transform
    (whose updates the scale multiplies). ``owner`` names who set it, for the errors."""
    if not learning_rate >= 0:
        raise ArgumentError(f"{owner} set the learning rate to {learning_rate!r}; it must be a number >= 0.")
    base = base_learning_rate(state.opt_state)
    if base is None:
        return set_scale(state, learning_rate)
    if base == 0:
        raise ArgumentError(f"{owner} cannot set the learning rate to {learning_rate}: the optimizer's own rate is 0 "
                            "at this step (a schedule's start or end), so no scale of it gives another rate.")
    return set_scale(state, learning_rate / base)
