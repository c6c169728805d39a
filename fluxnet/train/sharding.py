"""Data parallelism over local devices: a ``("data",)`` mesh, batches sharded, train state replicated.

With ``jax.jit`` and these shardings XLA inserts the gradient all-reduce, and BatchNormalization's
``jnp.mean`` over the batch axis becomes a mean over the *global* batch. Batches are placed from one
host's memory, so training runs in a single process (all of its local devices).
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def data_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh named ``"data"`` over ``devices`` (default: all devices)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f"batch_size={batch_size} must be divisible by the number of devices ({n}) for "
                         f"data parallelism; use a multiple of {n}.")


def replicate(tree: Any, mesh: Mesh) -> Any:
    """``tree`` placed on every device of ``mesh``."""
    return jax.device_put(tree, replicated(mesh))


def stacked_batch_sharded(mesh: Mesh) -> NamedSharding:
    """Groups of batches stacked on a leading axis (fused steps): split along the batch axis."""
    return NamedSharding(mesh, P(None, "data"))
