"""Data parallelism over local devices: a ``("data",)`` mesh, batches sharded, train state replicated.

With ``jax.jit`` and these shardings XLA inserts the gradient all-reduce, and BatchNormalization's
``jnp.mean`` over the batch axis becomes a mean over the *global* batch. Batches are placed from host
memory; a multi-host job (:func:`initialize_distributed`) feeds every host the same global batches.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fluxnet.errors import ArgumentError


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
        raise ArgumentError(f"batch_size={batch_size} must be divisible by the number of devices ({n}) for "
                         f"data parallelism; use a multiple of {n}.")


def replicate(tree: Any, mesh: Mesh) -> Any:
    """``tree`` placed on every device of ``mesh``."""
    return jax.device_put(tree, replicated(mesh))


def stacked_batch_sharded(mesh: Mesh) -> NamedSharding:
    """Groups of batches stacked on a leading axis (fused steps): split along the batch axis."""
    return NamedSharding(mesh, P(None, "data"))


def initialize_distributed() -> bool:
    """Join a multi-host job when the environment describes one (``JAX_COORDINATOR_ADDRESS`` set, or
    ``FLUXNET_DISTRIBUTED=1`` on a cluster ``jax.distributed.initialize`` detects, e.g. SLURM or TPU
    pods); then the mesh spans every host's devices and each host feeds the same global batches, of
    which jit transfers only its own devices' shards. Returns whether it initialised. Single-host runs
    (everything tested here) skip it."""
    if not (os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("FLUXNET_DISTRIBUTED") == "1"):
        return False
    jax.distributed.initialize()
    return True
