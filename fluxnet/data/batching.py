"""Fixed-shape batches over in-memory arrays, with a per-epoch seeded shuffle and a resumable position.

- Epoch ``e``'s order is a pure function of ``(seed, e)`` (``np.random.default_rng([seed, e])``), so
  any epoch can be replayed without replaying the ones before it.
- The position, ``{"epoch": e, "step": s}`` (plain ints: checkpoint them with the model), is the
  number of batches handed out; restoring it continues with exactly the batches that had not been.
- Every batch has the same shapes, so a jitted step compiles once: a batch is
  ``{"image": (B, ...), "label": (B,), "mask": (B,) bool}``. The last partial batch of an epoch is
  dropped (``drop_remainder=True``) or padded with zero rows that ``mask`` marks False.
- Batches are sliced in numpy (indexing a jax array from a Python loop costs ~260 us a step); move
  them to the device with ``fluxnet.data.prefetch.Prefetcher``.
- ``oversample=True`` redraws, each epoch, extra examples of the rarer classes until every class
  present has as many as the majority class (``imbalance.oversample_indices``).
"""
from __future__ import annotations

import numbers
from typing import Iterator, Mapping

import numpy as np

from fluxnet.data.imbalance import oversample_indices
from fluxnet.errors import ArgumentError, DataError


def num_batches(n: int, batch_size: int, drop_remainder: bool) -> int:
    """Batches in an epoch of ``n`` examples: ``n // batch_size``, plus a partial one unless dropped."""
    return n // batch_size if drop_remainder else -(-n // batch_size)


def train_rows(indices: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``(rows, mask)`` of a training batch from its example ``indices``: a full batch as it is (mask
    None); a last partial one padded to ``batch_size`` with copies of its own rows, ``mask`` marking the
    real ones (Keras trains it; the padding counts nowhere)."""
    if indices.size == batch_size:
        return indices, None
    return np.resize(indices, batch_size), np.arange(batch_size) < indices.size


def _non_negative_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ArgumentError(f"{what} must be a non-negative int, got {value!r}.")
    return int(value)


class BatchIterator:
    """Epochs of fixed-shape batches (see the module docstring).

    ``iter(it)`` yields the remaining batches of the current epoch and leaves the position at the
    start of the next, so ``for epoch ...: for batch in it: ...`` walks the epochs in order.
    ``labels=None`` gives batches without ``"label"`` (for prediction).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray | None = None, batch_size: int = 32, *,
                 shuffle: bool = True, seed: int = 0, drop_remainder: bool = False,
                 oversample: bool = False):
        self.images = np.asarray(images)
        self.labels = None if labels is None else np.asarray(labels)
        if self.labels is not None and self.labels.shape != self.images.shape[:1]:
            raise DataError(f"Got {self.images.shape[0]} images but labels of shape {self.labels.shape}; "
                            "expected one label per image.")
        if oversample and self.labels is None:
            raise ArgumentError("oversample=True needs labels.")
        self.batch_size = _non_negative_int(batch_size, "batch_size")
        if self.batch_size == 0:
            raise ArgumentError("batch_size must be positive, got 0.")
        self.seed = _non_negative_int(seed, "seed")
        self.shuffle, self.drop_remainder = bool(shuffle), bool(drop_remainder)
        self.oversample = bool(oversample)
        if oversample:
            _, counts = np.unique(self.labels, return_counts=True)
            self.examples_per_epoch = int(counts.max()) * counts.size
        else:
            self.examples_per_epoch = self.images.shape[0]
        self.steps_per_epoch = num_batches(self.examples_per_epoch, self.batch_size, self.drop_remainder)
        if self.steps_per_epoch == 0:      # only possible with drop_remainder
            raise DataError(f"{self.examples_per_epoch} examples make no batch of batch_size "
                            f"{self.batch_size} with drop_remainder=True.")
        self.epoch = self.step = 0

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The example indices of epoch ``epoch`` in the order they are batched (pure in seed, epoch)."""
        rng = np.random.default_rng([self.seed, _non_negative_int(epoch, "epoch")])
        order = oversample_indices(self.labels, rng) if self.oversample else np.arange(self.images.shape[0])
        return rng.permutation(order) if self.shuffle else order

    def state(self) -> dict[str, int]:
        """The position: ``{"epoch", "step"}`` of the next batch, as plain ints."""
        return {"epoch": self.epoch, "step": self.step}

    def restore(self, state: Mapping[str, int]) -> None:
        """Continue from a position returned by ``state()``."""
        epoch = _non_negative_int(state["epoch"], "state['epoch']")
        step = _non_negative_int(state["step"], "state['step']")
        if step >= self.steps_per_epoch:
            raise ArgumentError(f"state['step'] = {step} is past the {self.steps_per_epoch} steps of an epoch.")
        self.epoch, self.step = epoch, step

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        epoch, order = self.epoch, self.epoch_order(self.epoch)
        for step in range(self.step, self.steps_per_epoch):
            batch = self._gather(order[step * self.batch_size:(step + 1) * self.batch_size])
            self.epoch, self.step = (epoch + 1, 0) if step + 1 == self.steps_per_epoch else (epoch, step + 1)
            yield batch

    def _gather(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        real, pad = indices.size, self.batch_size - indices.size
        arrays = {"image": self.images[indices]}
        if self.labels is not None:
            arrays["label"] = self.labels[indices]
        if pad:
            arrays = {k: np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)])
                      for k, a in arrays.items()}
        return {**arrays, "mask": np.arange(self.batch_size) < real}
