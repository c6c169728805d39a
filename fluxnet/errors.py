"""The errors fluxnet raises for a user's mistakes, all under one root, ``FluxnetError``.

Each also inherits the builtin it stands for (``ConfigError`` is a ``ValueError``), so a caller's
``except ValueError`` keeps working. The command line prints a ``FluxnetError`` as one line and exits
with its ``exit_code`` (2: the command was wrong; 1: the run failed, e.g. a diverged loss); any other
exception is a bug in fluxnet and keeps its traceback.
"""
from __future__ import annotations


class FluxnetError(Exception):
    """Root of the errors a user can cause and fix: bad arguments, configs, data, files."""

    exit_code = 2


class ArgumentError(FluxnetError, ValueError):
    """An argument has a value that is not allowed (a layer's ``padding``, a loss option...)."""


class ArgumentTypeError(FluxnetError, TypeError):
    """An argument has the wrong type (a model where a layer was expected...)."""


class UnknownNameError(ArgumentError):
    """A name not in its registry (a loss, layer, optimizer...); the message lists the valid ones."""


class ConfigError(FluxnetError, ValueError):
    """A config file, an override or a saved config is wrong."""


class ConfigMismatchError(ConfigError):
    """A workdir holds a run with another config."""


class DataError(FluxnetError, ValueError):
    """Data does not fit: shapes, labels, NaN values, empty or unusable splits."""


class CheckpointError(FluxnetError, ValueError):
    """A checkpoint or saved variables do not fit the model they are restored into."""


class NotFoundError(FluxnetError, FileNotFoundError):
    """A file, run directory, checkpoint or zoo entry that should exist does not."""


class AlreadyExistsError(FluxnetError, FileExistsError):
    """A file or zoo entry exists and would be replaced without being asked to."""


class RunLockedError(FluxnetError, RuntimeError):
    """Another process holds the run directory's lock."""


class TrainingDivergedError(FluxnetError, FloatingPointError):
    """The training loss became NaN or inf; the last good checkpoint is kept."""

    exit_code = 1


class TrainingInterrupted(FluxnetError):
    """Training was asked to stop (SIGTERM, SIGINT); its ``exit_code`` follows the shell's 128 + signal."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
