"""The train state: everything a step reads and writes, as one pytree (checkpointed whole)."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from fluxnet import tree


@flax.struct.dataclass
class TrainState:
    """``step`` counts optimizer updates and ``epoch`` completed epochs (the data position at an epoch
    boundary); ``params`` are trained, ``model_state`` holds the non-trainable collections
    (BatchNormalization statistics); ``rng`` is raw key data (``jax.random.key_data``) so checkpoints
    store plain uint32 arrays. Each step's randomness is ``fold_in(rng, step)``: never consumed, so a
    resumed run draws exactly what an uninterrupted one would."""

    step: jax.Array
    epoch: jax.Array
    params: Any
    model_state: Any
    opt_state: Any
    rng: jax.Array

    @property
    def variables(self) -> dict:
        """The model's variables, as ``model.apply`` takes them."""
        return tree.join_variables(self.params, self.model_state)

    def with_variables(self, variables: dict) -> "TrainState":
        """This state with the model's variables replaced (optimizer state untouched)."""
        params, model_state = tree.split_variables(variables)
        return self.replace(params=params, model_state=model_state)

    def step_key(self) -> jax.Array:
        return jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)


def create_state(variables: dict, opt_state: Any, rng: jax.Array) -> TrainState:
    params, model_state = tree.split_variables(variables)
    return TrainState(step=jnp.zeros((), jnp.int32), epoch=jnp.zeros((), jnp.int32), params=params,
                      model_state=model_state, opt_state=opt_state, rng=jax.random.key_data(rng))
