"""Data parallelism over local devices: a ``("data",)`` mesh, batches sharded, train state replicated.

With ``jax.jit`` and these shardings XLA inserts the gradient all-reduce, and BatchNormalization's
``jnp.mean`` over the batch axis becomes a mean over the *global* batch. Multi-host runs call
:func:`maybe_initialize_distributed` first (``jax.distributed.initialize`` reads the cluster from the
environment).
"""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def maybe_initialize_distributed() -> None:
    """Join a multi-host job when the environment describes one (coordinator address set)."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("COORDINATOR_ADDRESS"):
        jax.distributed.initialize()


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


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """A host batch (numpy arrays) split along its first axis over the mesh."""
    if jax.process_count() > 1:  # each host holds its own slice of the global batch
        sharding = batch_sharded(mesh)
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
    return jax.device_put(batch, batch_sharded(mesh))


def stacked_batch_sharded(mesh: Mesh) -> NamedSharding:
    """Groups of batches stacked on a leading axis (fused steps): split along the batch axis."""
    return NamedSharding(mesh, P(None, "data"))
