"""The run-directory lock: one process at a time trains a workdir.

``WORKDIR/.lock`` is held with ``flock`` by the process that writes the run (train, pretrain,
transfer; later each trial or fold of a sweep) and records its pid, host and start time. The kernel
releases an flock when its process dies, however it dies, so a lock is never stale; the file itself
stays (deleting it would let two processes lock two different files). A process that finds the lock
held stops with ``RunLockedError`` naming the holder, having touched nothing but ``.lock``. In a
multi-process job only process 0 takes it. Reading a run (``evaluate``, ``load_run``) takes none.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
import time
from pathlib import Path

import jax

from fluxnet.errors import RunLockedError

LOCK_FILE = ".lock"


class RunLock:
    """``with RunLock(workdir) as lock: ... lock.acquire()`` -- taken on the first ``acquire`` (which
    creates the workdir), released when the outermost ``with`` ends. Re-entrant within a process."""

    def __init__(self, workdir: str | os.PathLike):
        self.workdir = Path(workdir)
        self.path = self.workdir / LOCK_FILE
        self._fd: int | None = None
        self._depth = 0

    def __enter__(self) -> "RunLock":
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.release()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock (idempotent); RunLockedError if another process holds it."""
        if self._fd is not None or jax.process_index() != 0:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:  # never through a link: a planted .lock -> ~/.bashrc must not be truncated
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            raise RunLockedError(f"{self.path} cannot be used as the run directory's lock ({err.strerror}); it "
                                 "must be a plain file. Remove it, or use another --workdir.") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RunLockedError(f"{self.path} is not a plain file; remove it, or use another --workdir.")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"{self.workdir} is locked: process {holder.get('pid', '?')} on {holder.get('host', '?')} "
                f"(since {holder.get('started', '?')}) is training it. Wait for it to finish, or use "
                "another --workdir.") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)  # never keep a lock this object does not hold
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _read_holder(fd: int) -> dict:
    """The holder's record (pid, host, start time); empty while the holder is still writing it."""
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, OSError):
        return {}
