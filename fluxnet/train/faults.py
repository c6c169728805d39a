"""A testing hook that kills the process (SIGKILL, as ``kill -9``) at a chosen point of training, so
tests can prove that an interrupted and resumed run equals an uninterrupted one.

The hook is off unless a ``CrashPoint`` is passed explicitly (``Trainer.fit(crash_at=...)``,
``Checkpointer(crash_at=...)``); the library never reads the environment for it. The command line
switches it on from ``$FLUXNET_CRASH_AT`` (:func:`from_environment`): ``epoch:E`` dies halfway through
epoch ``E`` (1-based, the run's absolute epoch), ``save:E`` while epoch ``E``'s checkpoint is being
written (after orbax has written its items into the temporary folder, before it is finalised), and
``sigterm:E`` sends the process a SIGTERM halfway through epoch ``E`` (as a cluster preempting it).
"""
from __future__ import annotations

import dataclasses
import os
import signal
from typing import Mapping

from fluxnet.errors import ConfigError

ENV = "FLUXNET_CRASH_AT"
KINDS = ("epoch", "save", "sigterm")
MID_EPOCH = {"epoch": signal.SIGKILL, "sigterm": signal.SIGTERM}  # the signal each mid-epoch kind sends


@dataclasses.dataclass(frozen=True)
class CrashPoint:
    """Where to die: ``kind`` ("epoch" or "save") of the 1-based ``epoch``."""

    kind: str
    epoch: int

    @classmethod
    def parse(cls, text: str) -> "CrashPoint":
        kind, _, number = text.partition(":")
        if kind not in KINDS or not number.isdigit() or int(number) < 1:
            raise ConfigError(f"{ENV}={text!r}: expected 'epoch:E', 'save:E' or 'sigterm:E' with E a positive "
                              "epoch number.")
        return cls(kind, int(number))

    def at(self, kind: str, epoch: int) -> bool:
        return (self.kind, self.epoch) == (kind, epoch)

    def mid_epoch(self, epoch: int) -> bool:
        """Whether this point lies halfway through ``epoch``."""
        return self.kind in MID_EPOCH and self.epoch == epoch

    def fire(self) -> None:
        """Send this point's mid-epoch signal to this process."""
        os.kill(os.getpid(), MID_EPOCH[self.kind])

    def crash_if_at(self, kind: str, epoch: int) -> None:
        """Kill this process now if this is the point."""
        if self.at(kind, epoch):
            os.kill(os.getpid(), signal.SIGKILL)


def from_environment(environ: Mapping[str, str] = os.environ) -> CrashPoint | None:
    """The crash point ``$FLUXNET_CRASH_AT`` asks for, or None when it is unset (normal use)."""
    value = environ.get(ENV)
    return CrashPoint.parse(value) if value else None
