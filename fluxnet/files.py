"""Writing files so that a crash never leaves half of one: write a temporary file beside it, flush it
to disk, then rename it over the target (``os.replace`` is atomic on POSIX). In a multi-process job
(``fx.initialize_distributed``) every process computes the same contents and only process 0 writes
them (:func:`writes_here`); orbax checkpoints are the exception, written by all together."""
from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Callable


def writes_here() -> bool:
    """Whether this process writes a run's files: the only one, or process 0 of a multi-process job."""
    import jax

    return jax.process_index() == 0


def write_atomic(path: str | os.PathLike, content: str | bytes) -> None:
    """Replace ``path`` with ``content`` (text, or bytes) in one step: readers see the old file or the
    new, never a part. The file gets the usual permissions (0666 less the umask), like one written in
    place."""
    if not writes_here():
        return
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb" if isinstance(content, bytes) else "w") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_dir_atomic(path: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Replace the folder ``path`` with one that ``fill(tmp)`` assembles in a temporary folder beside
    it, renamed into place when complete: a failure never leaves half a folder under ``path`` (the old
    one is moved aside just before the new one is renamed in, then deleted)."""
    path = Path(path).resolve()
    if not writes_here():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir()  # the umask's usual mode (mkdtemp's 0700 would make a shared folder private)
    try:
        fill(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path
