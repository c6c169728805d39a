"""What every study in ``experiments/`` shares: its command line, and its results written as
``<out>/<study>.json`` (numbers, with the revision, command and wall time that produced them) and
``<out>/<study>.md`` (the table), beside the plot the study draws into ``<out>/<study>.png``.

A study is a script with ``main(argv=None)``: ``args = common.parse(NAME, __doc__, argv, add)`` then
``common.write(args, results, table)``. ``--quick`` runs a tiny version of it (seconds, the test
suite's smoke run); the full run's files in ``experiments/results/`` are the ones the README quotes.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

RESULTS = Path(__file__).resolve().with_name("results")


def parse(name: str, doc: str, argv: list[str] | None = None,
          add: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The study's arguments: ``--quick``, ``--out`` (default ``experiments/results``), ``--data-dir``
    (tfds data dir; default tfds' own) and what ``add`` adds. ``args.study`` is ``name`` and
    ``args.started`` the start time, for :func:`write`."""
    p = argparse.ArgumentParser(prog=f"experiments/{name}.py", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a tiny run (seconds) that checks the study works")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the .json, .md and .png results")
    p.add_argument("--data-dir", default=None, help="tfds data dir (default: tfds' own)")
    if add is not None:
        add(p)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.study, args.started = name, time.perf_counter()
    args.argv = sys.argv[1:] if argv is None else list(argv)
    return args


def revision() -> str:
    """The git commit of this checkout (``-dirty`` when files other than results differ from it: ``make
    experiments`` rewrites the results of the studies before), or ``"unknown"``."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)experiments/results"], cwd=root, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def script_hash(name: str) -> str:
    """Git's blob hash of ``experiments/<name>.py`` as it is on disk (``git hash-object``): with the
    revision, what pins the code of a result even when the study was run before its commit."""
    import hashlib

    data = (Path(__file__).resolve().with_name(f"{name}.py")).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def png(args: argparse.Namespace) -> Path:
    """Where the study draws its plot."""
    return args.out / f"{args.study}.png"


def write(args: argparse.Namespace, results: Any, table: str) -> dict:
    """Write ``results`` (JSON-friendly) and the Markdown ``table`` with what produced them; returns the
    record written to ``<study>.json``."""
    seconds = time.perf_counter() - args.started
    record = {"study": args.study, "revision": revision(), "script": script_hash(args.study), "command": " ".join(
        ["python", f"experiments/{args.study}.py", *args.argv]), "quick": bool(args.quick),
              "seconds": round(seconds, 1), "results": results}
    (args.out / f"{args.study}.json").write_text(json.dumps(record, indent=1, default=float) + "\n")
    footer = (f"\n\n`{record['command']}` at revision `{record['revision'][:12]}`, "
              f"{seconds:.0f} s on this machine{' (quick mode)' if args.quick else ''}.\n")
    (args.out / f"{args.study}.md").write_text(table.rstrip() + footer)
    print(table.rstrip() + footer)
    return record


@contextlib.contextmanager
def compilation_cache(directory: Path) -> Iterator[None]:
    """A persistent compilation cache for the duration, so that the study's runs that compile the same
    program (another seed, the same model on other data of one shape) load it instead of compiling it
    again: the cache already set up in this process (the test suite's) if there is one, else one in
    ``directory`` (every program kept), switched off again on exit so that a study run in-process leaves
    no cache pointing at a folder about to be deleted."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as jax_cache
    from ml_collections import ConfigDict

    from fluxnet.runs import compilation_cache as cache

    if jax.config.jax_compilation_cache_dir:
        yield
        return
    names = ("jax_persistent_cache_min_compile_time_secs", "jax_persistent_cache_min_entry_size_bytes")
    before = {name: getattr(jax.config, name) for name in names}
    cache.configure(ConfigDict({"train": {"compilation_cache": str(directory)}}))
    try:
        yield
    finally:
        jax.config.update("jax_compilation_cache_dir", None)
        for name, value in before.items():
            jax.config.update(name, value)
        jax_cache.reset_cache()


def pyplot():
    """``matplotlib.pyplot`` drawing to files only (the Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, axes=(), rect=(0, 0, 1, 1)) -> None:
    """A light grid on ``axes``, a tight layout within ``rect``, ``fig`` written to ``path`` (110 dpi) and
    closed."""
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


def mean_std(values: list[float]) -> str:
    """``"0.912 ± 0.013"`` (population std; a single value has none)."""
    import numpy as np

    values = np.asarray(values, float)
    return f"{values.mean():.3f} ± {values.std():.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def markdown(header: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    """A Markdown table; ``align`` one character per column (``l`` or ``r``; default: first left)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
