"""Stopping a run cleanly on SIGTERM (how clusters preempt jobs) and SIGINT (Ctrl-C).

Single process: :class:`StopSignals` replaces both handlers with one that only records the signal; the
trainer asks after every step and stops there (``TrainingInterrupted``), the last epoch's checkpoint
being complete, and a job checks between its phases (data loading, training, report), so a signal
never leaves a half-written file. The command line exits with 128 + the signal (143, 130).
Multi-process (``jax.distributed``): JAX's preemption service owns SIGTERM, so no handler is installed
(one would replace JAX's and deadlock the collective save); every process instead stops at the step
``multihost_utils.reached_preemption_sync_point`` names, together.
"""
from __future__ import annotations

import signal
import threading

import jax

from fluxnet.errors import TrainingInterrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """``with StopSignals() as stop: job(..., should_stop=stop)``; ``stop(step)`` is the signal received
    (or, across processes, SIGTERM at the agreed preemption step), else None."""

    def __init__(self):
        self.received: signal.Signals | None = None
        self._previous: dict = {}
        self._distributed = False

    def __enter__(self) -> "StopSignals":
        self._distributed = jax.process_count() > 1
        if not self._distributed and threading.current_thread() is threading.main_thread():
            # a signal the parent chose to ignore (``fluxnet train &`` in a script: SIGINT) stays ignored
            self._previous = {s: signal.signal(s, self._record) for s in SIGNALS
                              if signal.getsignal(s) is not signal.SIG_IGN}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _record(self, signum: int, frame) -> None:
        del frame
        self.received = signal.Signals(signum)

    def __call__(self, step: int) -> signal.Signals | None:
        if self._distributed and self.received is None:
            from jax.experimental import multihost_utils

            if multihost_utils.reached_preemption_sync_point(step):
                self.received = signal.SIGTERM
        return self.received

    def check(self, what: str) -> None:
        """Raise ``TrainingInterrupted`` if a signal came (``what``: the state the run is left in)."""
        if self.received is not None:
            raise TrainingInterrupted(f"Stopped by {self.received.name}; {what}.", exit_code=128 + self.received)
