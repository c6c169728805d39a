"""The batches the steps take (after Keras' ``epoch_iterator.py``): :class:`EpochIterator` slices
them on the host from the arrays ``data_adapter.py`` checked, and lays them out for the device mesh.

Training batches are full, except an epoch's last one when the data does not divide into batches:
it is trained, as Keras does (``ceil(n / batch_size)`` steps), padded to the batch size with copies of
its own rows, which a ``mask`` excludes from the loss, the metrics and BatchNormalization's
statistics. A padded batch has the full batch's shapes, so its step compiles once more at most (a
masked batch is a second signature), the same on one device or many, and its randomness (dropout
masks) has the shapes it would have in a population of models trained together.

On CPU devices batches go to the steps as the numpy arrays they are: the jitted step places them
(``in_shardings``) in ~10 us, where ``jax.device_put`` costs ~150 us per array and there is no transfer
to overlap; on accelerators a :class:`~fluxnet.data.Prefetcher` places the next batches while the
current one runs.

Streamed data (``fluxnet.data.streaming``) comes as host batches from a feed (``TrainFeed``, ``EvalFeed``,
``SequentialFeed``) in place of the arrays: the same batches, read by worker processes, and placed the
same way. In a multi-process job each process holds the whole of every in-memory batch and places its
devices' shards of it (``sharding.global_batch``); a streamed batch is read only in part, each process
its own rows (:meth:`EpochIterator.share`), made one global array with
``jax.make_array_from_process_local_data``.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh

from fluxnet.data.batching import BatchIterator, train_rows
from fluxnet.data.prefetch import Prefetcher
from fluxnet.errors import ArgumentError
from fluxnet.train import sharding


def gather(arrays: dict, rows: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """Every array (inputs and targets may be lists or dicts of arrays) at the example indices ``rows``,
    with ``mask`` (the real rows) when the batch has padding."""
    out = {k: jax.tree.map(lambda a: a[rows], v) for k, v in arrays.items()}
    return out if mask is None else {**out, "mask": mask}


class EpochIterator:
    """Batches for a ``("data",)`` mesh: sharded over it (``parallel="sharding"``), or with a leading
    device axis (``"pmap"``)."""

    def __init__(self, mesh: Mesh, parallel: str = "sharding"):
        self.mesh, self.parallel = mesh, parallel
        self.host_batches = all(d.platform == "cpu" for d in mesh.devices.flat)

    def train(self, batches: BatchIterator, arrays: dict | Any, k: int) -> Iterator[tuple[dict, int]]:
        """``(device batch, steps in it)`` for one epoch: single batches, or groups of ``k`` stacked on a
        leading axis for fused steps (the epoch's last ``steps % k`` batches go one by one). ``arrays``
        is a dict of host arrays, or a stream's feed (its epoch ``batches.epoch``)."""
        local = not isinstance(arrays, dict)
        if local:
            host, full = arrays.epoch(batches.epoch), arrays.full_batches
        else:
            host = (self._train_batch(arrays, b) for b in batches)
            full = batches.examples_per_epoch // batches.batch_size
        groups = full // k if k > 1 and full else 0  # full batches only
        stacked = (jax.tree.map(lambda *a: np.stack(a), *[next(host) for _ in range(k)]) for _ in range(groups))
        single = sharding.batch_sharded(self.mesh)
        if self.parallel == "pmap":  # pmap's layout: a leading device axis, sharded over the mesh like a batch
            yield from ((b, k) for b in self._placed((self._split_for_pmap(b, True) for b in stacked), single))
            yield from ((b, 1) for b in self._placed((self._split_for_pmap(b, False) for b in host), single))
            return
        yield from ((b, k) for b in self._placed(stacked, sharding.stacked_batch_sharded(self.mesh), local))
        yield from ((b, 1) for b in self._placed(host, single, local))

    def padded(self, arrays: dict, batch_size: int) -> Iterable[dict]:
        """Every example once, in order; the last batch padded (mask False) to the fixed batch shape
        (:meth:`eval_batch_size`)."""
        n = len(jax.tree.leaves(arrays)[0])
        it = BatchIterator(np.arange(n), None, self.eval_batch_size(n, batch_size), shuffle=False,
                           drop_remainder=False)
        return self._placed((gather(arrays, b["image"], b["mask"]) for b in it), sharding.batch_sharded(self.mesh))

    def eval_batch_size(self, n: int | None, batch_size: int) -> int:
        """The batch shape of evaluation and prediction: ``batch_size`` rounded up to a multiple of the
        device count, capped at the data size (``n``, where known) so small sets do not pad needlessly."""
        devices = self.mesh.devices.size
        return min(-(-batch_size // devices), -(-(n or batch_size) // devices)) * devices

    def streamed(self, host: Iterable[dict]) -> Iterable[dict]:
        """A stream's evaluation or prediction batches (this process's rows of each) placed for the steps."""
        return self._placed(host, sharding.batch_sharded(self.mesh), local=True)

    def share(self, batch_size: int) -> slice:
        """The rows of each global batch of ``batch_size`` this process reads of a stream: those of its own
        devices' shards, one contiguous block (all of them in a single process)."""
        if jax.process_count() == 1:
            return slice(0, batch_size)
        spans = sorted(index[0].indices(batch_size)[:2] for index in
                       sharding.batch_sharded(self.mesh).addressable_devices_indices_map((batch_size,)).values())
        start, stop = spans[0][0], spans[-1][1]
        if sum(b - a for a, b in spans) != stop - start:
            raise ArgumentError("This process's devices do not hold one block of each batch, so it cannot read its "
                                "share of a stream alone; order the mesh's devices by process (jax.devices()).")
        return slice(start, stop)

    def _train_batch(self, arrays: dict, batch: dict) -> dict:
        """A training batch: full ones without a mask; a last partial one padded to the batch size with
        copies of its own rows and a mask (the step's second and last shape)."""
        mask = batch["mask"]
        if mask.all():
            return gather(arrays, batch["image"])
        return gather(arrays, *train_rows(batch["image"][mask], mask.size))

    def place(self, batch: dict, stacked: bool = False) -> dict:
        """One host batch (``stacked``: several on a leading axis) as the steps take it."""
        where = sharding.stacked_batch_sharded(self.mesh) if stacked else sharding.batch_sharded(self.mesh)
        return next(iter(self._placed([batch], where)))

    def _split_for_pmap(self, batch: dict, stacked: bool) -> dict:
        """Host batches reshaped for ``pmap``: ``(devices, batch / devices, ...)``, or
        ``(devices, k, batch / devices, ...)`` for ``k`` stacked batches."""
        n = self.mesh.devices.size

        def split(a):
            if stacked:
                return a.reshape(a.shape[0], n, a.shape[1] // n, *a.shape[2:]).swapaxes(0, 1)
            return a.reshape(n, a.shape[0] // n, *a.shape[1:])

        return jax.tree.map(split, batch)

    def _placed(self, host: Iterable, where: jax.sharding.Sharding, local: bool = False) -> Iterable:
        """Host batches as the steps take them: unchanged on CPU (the step places them), else
        prefetched onto ``where``. In a multi-process job every process holds the same global batch
        and gives its own devices their shards of it (``jax.make_array_from_callback``), or, ``local``
        (streamed), holds only its share of it (``jax.make_array_from_process_local_data``)."""
        if jax.process_count() > 1:
            return (local_batch(b, where) if local else sharding.global_batch(b, where) for b in host)
        return host if self.host_batches else Prefetcher(host, 2, where)


def local_batch(tree: Any, where: jax.sharding.NamedSharding) -> Any:
    """This process's rows of a global batch (its devices' shards, :meth:`EpochIterator.share`) as global
    arrays on ``where``, every process giving its own."""
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(where, a), tree)
