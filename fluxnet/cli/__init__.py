"""The ``fluxnet`` command line: a module per kind of command, each parsing its arguments and calling
``fluxnet.runs`` or ``fluxnet.tune``.

    fluxnet train CONFIG [key=value ...] [--workdir DIR] [--quiet]       (train.py; also pretrain, transfer)
    fluxnet evaluate WORKDIR [--split test] [--best]                     (evaluate.py)
    fluxnet summary CONFIG [key=value ...]                               (summary.py)
    fluxnet baseline CONFIG [key=value ...]                              (baseline.py)
    fluxnet augment-preview CONFIG [key=value ...] [--output PNG]        (augment_preview.py)
    fluxnet sweep | tune | cv CONFIG [key=value ...] ...                 (experiments.py)
    fluxnet applications [--size N] [--batch B] [--output PNG] [--json PATH]   (applications.py)
    fluxnet data prepare NAME [--data_dir D] [--manual_dir M] [--overwrite] | data list [--data_dir D]
                                                                         (data.py)

A user's mistake (a ``FluxnetError``: a bad config, missing data, a locked workdir...) or a fault of the
machine (a full disk, a read-only folder) ends the command with a one-line message and exit code 2; a
training loss that becomes NaN or inf with exit code 1 (the last good checkpoint is kept); SIGTERM and
SIGINT stop a run cleanly with 143 and 130. Anything else is a bug and ends with its traceback (exit
code 1). Library chatter (absl warnings of orbax and tensorflow-datasets, tfds' progress bars) stays out of the
terminal.
"""
from __future__ import annotations

import argparse
import logging
import sys

from absl import logging as absl_logging

from fluxnet.cli import applications, augment_preview, baseline, data, errors, evaluate, experiments, summary, train
from fluxnet.train.sharding import initialize_distributed

COMMANDS = (train, experiments, evaluate, summary, baseline, augment_preview, applications, data)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fluxnet", description="Keras-style deep learning on JAX.")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parsers(sub)
    return p


def _quiet_tfds() -> None:
    """Preparing a data set: fluxnet's own progress is enough (tfds is optional for in-memory data)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return
    tfds.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    # key=value overrides may also come after options (``--workdir DIR train.epochs=3``)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    absl_logging.set_verbosity(absl_logging.FATAL)  # orbax logs what fluxnet then reports in one line
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # "exception was never retrieved" of failed reads
    _quiet_tfds()
    sys.unraisablehook = errors.quiet_closed_loop_reports(sys.unraisablehook)
    try:
        initialize_distributed()
        args.run(args)
    except Exception as err:
        code = errors.report(args.command, err)
        if code is None:
            raise
        return code
    return 0
