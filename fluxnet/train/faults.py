"""A testing hook that kills the process (SIGKILL, as ``kill -9``) at a chosen point of training, so
tests can prove that an interrupted and resumed run equals an uninterrupted one.

``FLUXNET_CRASH_AT=epoch:E`` dies halfway through epoch ``E`` (1-based, the run's absolute epoch);
``FLUXNET_CRASH_AT=save:E`` dies while epoch ``E``'s checkpoint is being written: after orbax has written
its items into the temporary folder, before it is finalised (renamed). Unset (normal use), nothing happens.
"""
from __future__ import annotations

import os
import signal

ENV = "FLUXNET_CRASH_AT"
KINDS = ("epoch", "save")


def crash_point() -> tuple[str, int] | None:
    """``(kind, epoch)`` from ``$FLUXNET_CRASH_AT``, or None when unset."""
    value = os.environ.get(ENV)
    if not value:
        return None
    kind, _, number = value.partition(":")
    if kind not in KINDS or not number.isdigit():
        raise ValueError(f"{ENV}={value!r}: expected 'epoch:E' or 'save:E' with E a positive epoch number.")
    return kind, int(number)


def armed(kind: str) -> bool:
    """Whether the hook asks for a crash of this kind (at some epoch)."""
    point = crash_point()
    return point is not None and point[0] == kind


def maybe_crash(kind: str, epoch: int) -> None:
    """Kill this process now if ``$FLUXNET_CRASH_AT`` is ``kind:epoch``."""
    if crash_point() == (kind, epoch):
        os.kill(os.getpid(), signal.SIGKILL)
