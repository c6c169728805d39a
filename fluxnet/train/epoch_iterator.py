"""From the data ``fit``/``evaluate``/``predict`` are given to the batches their steps take (after
Keras' ``epoch_iterator.py``): the data adapter (:func:`as_xy`), and :class:`EpochIterator`, which
slices batches on the host and lays them out for the device mesh.

On CPU devices batches go to the steps as the numpy arrays they are: the jitted step places them
(``in_shardings``) in ~10 us, where ``jax.device_put`` costs ~150 us per array and there is no transfer
to overlap; on accelerators a :class:`~fluxnet.data.Prefetcher` places the next batches while the
current one runs.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh

from fluxnet.data.batching import BatchIterator
from fluxnet.data.prefetch import Prefetcher
from fluxnet.errors import ArgumentTypeError
from fluxnet.train import sharding


def as_xy(data: Any, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``(x, y)`` numpy arrays from a tuple or a split object with ``images``/``labels``."""
    if isinstance(data, (tuple, list)) and len(data) in (1, 2):
        x, y = data[0], data[1] if len(data) == 2 else None
    elif hasattr(data, "images") and hasattr(data, "labels"):
        x, y = data.images, data.labels
    else:
        raise ArgumentTypeError(f"{what} must be (x, y) arrays or a fluxnet data split, got {type(data).__name__}.")
    return np.asarray(x), None if y is None else np.asarray(y)


def class_ids(y: np.ndarray) -> np.ndarray:
    """Integer class ids of sparse or one-hot targets."""
    return y.argmax(-1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(len(y)).astype(np.int64)


def gather(arrays: dict, batch: dict, with_mask: bool = True) -> dict:
    """Slice every array at a batch of example indices (``BatchIterator`` over ``arange(n)``), with the
    batch's mask of real rows unless the batch is known to be full."""
    out = {k: a[batch["image"]] for k, a in arrays.items()}
    return {**out, "mask": batch["mask"]} if with_mask else out


class EpochIterator:
    """Batches for a ``("data",)`` mesh: sharded over it (``parallel="sharding"``), or with a leading
    device axis (``"pmap"``)."""

    def __init__(self, mesh: Mesh, parallel: str = "sharding"):
        self.mesh, self.parallel = mesh, parallel
        self.host_batches = all(d.platform == "cpu" for d in mesh.devices.flat)

    def train(self, batches: BatchIterator, arrays: dict, k: int) -> Iterator[tuple[dict, int]]:
        """``(device batch, steps in it)`` for one epoch: single batches, or groups of ``k`` stacked on a
        leading axis for fused steps (the epoch's last ``steps % k`` batches go one by one)."""
        host = (gather(arrays, b, with_mask=False) for b in batches)  # drop_remainder: every row is real
        groups = batches.steps_per_epoch // k if k > 1 else 0
        stacked = (jax.tree.map(lambda *a: np.stack(a), *[next(host) for _ in range(k)]) for _ in range(groups))
        single = sharding.batch_sharded(self.mesh)
        if self.parallel == "pmap":  # pmap's layout: a leading device axis, sharded over the mesh like a batch
            yield from ((b, k) for b in self._placed((self._split_for_pmap(b, True) for b in stacked), single))
            yield from ((b, 1) for b in self._placed((self._split_for_pmap(b, False) for b in host), single))
            return
        yield from ((b, k) for b in self._placed(stacked, sharding.stacked_batch_sharded(self.mesh)))
        yield from ((b, 1) for b in self._placed(host, single))

    def padded(self, arrays: dict, batch_size: int) -> Iterable[dict]:
        """Every example once, in order; the last batch padded (mask False) to the fixed batch shape, a
        multiple of the device count (capped at the data size so small sets do not pad needlessly)."""
        n, devices = len(next(iter(arrays.values()))), self.mesh.devices.size
        size = min(-(-batch_size // devices), -(-n // devices)) * devices
        it = BatchIterator(np.arange(n), None, size, shuffle=False, drop_remainder=False)
        return self._placed((gather(arrays, b) for b in it), sharding.batch_sharded(self.mesh))

    def _split_for_pmap(self, batch: dict, stacked: bool) -> dict:
        """Host batches reshaped for ``pmap``: ``(devices, batch / devices, ...)``, or
        ``(devices, k, batch / devices, ...)`` for ``k`` stacked batches."""
        n = self.mesh.devices.size

        def split(a):
            if stacked:
                return a.reshape(a.shape[0], n, a.shape[1] // n, *a.shape[2:]).swapaxes(0, 1)
            return a.reshape(n, a.shape[0] // n, *a.shape[1:])

        return jax.tree.map(split, batch)

    def _placed(self, host: Iterable, where: jax.sharding.Sharding) -> Iterable:
        """Host batches as the steps take them: unchanged on CPU (the step places them), else
        prefetched onto ``where``."""
        return host if self.host_batches else Prefetcher(host, 2, where)
