"""How the command line ends on an error: a user's mistake (a ``FluxnetError``) or a fault of the
machine (a full disk, a read-only or unwritable folder, a file where a folder belongs) is one line on
stderr and its exit code; anything else is a bug in fluxnet and keeps its traceback."""
from __future__ import annotations

import errno
import os
import re
import sys
from typing import Callable

from fluxnet.errors import FluxnetError

# errno -> what to do about it
ENVIRONMENT_FAULTS = {
    errno.ENOSPC: "free some disk space, or use another --workdir",
    errno.EDQUOT: "free some of your disk quota, or use another --workdir",
    errno.EROFS: "the file system is read-only: use another --workdir",
    errno.EACCES: "check the permissions, or use another --workdir",
    errno.EPERM: "check the permissions, or use another --workdir",
    errno.ENOTDIR: "a part of the path is a file, not a folder: use another path",
    errno.EISDIR: "the path is a folder where a file was expected: use another path",
    errno.EEXIST: "the path exists and is not a folder: use another path",
    errno.ENAMETOOLONG: "use a shorter path",
}


def quiet_closed_loop_reports(previous: Callable) -> Callable:
    """A ``sys.unraisablehook`` that drops the reports of orbax/tensorstore reads finishing into a closed
    event loop (what restoring a damaged checkpoint leaves in flight once it has failed: dozens of
    tracebacks that say nothing the one-line note does not) and passes everything else on."""

    def hook(unraisable) -> None:
        value, code = unraisable.exc_value, getattr(unraisable.object, "cr_code", None)
        from_storage = code is not None and any(lib in code.co_filename for lib in ("orbax", "tensorstore"))
        if not (from_storage or isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
            previous(unraisable)

    return hook


def environment_fault(err: BaseException) -> OSError | None:
    """The OSError of a machine fault behind ``err``, or None. Libraries wrap them: orbax chains them,
    tensorstore reports them as a ValueError carrying ``[os_error_code='28']``."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in ENVIRONMENT_FAULTS:
            return err
        code = re.search(r"os_error_code='?(\d+)", str(err))
        if code and int(code.group(1)) in ENVIRONMENT_FAULTS:
            return OSError(int(code.group(1)), os.strerror(int(code.group(1))))
        err = err.__cause__ or err.__context__
    return None


def report(command: str, err: BaseException) -> int | None:
    """Print ``err`` as one line and return the exit code; None for a bug (the caller re-raises it)."""
    if isinstance(err, FluxnetError):
        print(f"fluxnet {command}: error: {err}", file=sys.stderr)
        return err.exit_code
    fault = environment_fault(err)
    if fault is None:
        return None
    where = f"{fault.filename}: " if fault.filename else ""
    print(f"fluxnet {command}: error: {where}{fault.strerror or fault} ({ENVIRONMENT_FAULTS[fault.errno]}).",
          file=sys.stderr)
    return 2
