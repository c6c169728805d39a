"""Host-to-device prefetch: keep a few batches in flight so the device never waits on Python.

``jax.device_put`` returns at once and copies in the background, so putting the next ``size`` batches
before handing out the current one overlaps their transfer with the current step's compute::

    for batch in Prefetcher(batch_iterator, size=2, sharding=NamedSharding(mesh, P("data"))):
        state, metrics = train_step(state, batch)

The wrapper reads ahead of its source, so the source's own position (``BatchIterator.state()``) runs
``size`` batches ahead; ``Prefetcher.state()`` is the source's position as of the last batch handed
out, which is what a checkpoint should record. After stopping early, ``source.restore(prefetcher.state())``
puts back the batches that were read ahead but never handed out.
"""
from __future__ import annotations

import collections
from typing import Any, Iterable, Iterator, Mapping

import jax

from fluxnet.errors import ArgumentError, ArgumentTypeError

_DONE = object()


class Prefetcher:
    """Iterate ``batches`` with ``size`` of them already put on ``sharding`` (a Sharding or Device;
    None: the default device)."""

    def __init__(self, batches: Iterable[Mapping[str, Any]], size: int = 2,
                 sharding: jax.sharding.Sharding | jax.Device | None = None):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ArgumentError(f"Prefetch size must be a positive int, got {size!r}.")
        self.batches, self.size, self.sharding = batches, size, sharding
        self._state = None

    def _source_state(self):
        state = getattr(self.batches, "state", None)
        return state() if callable(state) else None

    def state(self) -> dict[str, int]:
        """The source's position as of the last batch handed out (for sources with ``state()``)."""
        if not callable(getattr(self.batches, "state", None)):
            raise ArgumentTypeError(f"The prefetched source ({type(self.batches).__name__}) has no state() "
                                    "to report.")
        return self._source_state() if self._state is None else self._state

    def __iter__(self) -> Iterator[Any]:
        source = iter(self.batches)
        self._state = self._source_state()
        in_flight: collections.deque = collections.deque()

        def fill():
            while len(in_flight) < self.size:
                batch = next(source, _DONE)
                if batch is _DONE:
                    return
                in_flight.append((jax.device_put(batch, self.sharding), self._source_state()))

        fill()
        while in_flight:
            batch, self._state = in_flight.popleft()
            fill()
            yield batch
