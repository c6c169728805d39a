"""Keras' saving callbacks: ``ModelCheckpoint`` (the model or its variables, every epoch or the best)
and ``BackupAndRestore`` (the whole training, so an interrupted ``fit`` continues where it stopped).

Both write with orbax into a temporary folder renamed into place when complete, so a process killed
mid-save never leaves half a checkpoint under the final name.
"""
from __future__ import annotations

import jax
import os
import shutil
import sys

from fluxnet.errors import ArgumentError, CheckpointError, ConfigError
from fluxnet.train import saving
from fluxnet.train.callbacks import Callback, MonitorCallback
from fluxnet.train.checkpoint import Checkpointer
from fluxnet.train.trainer import restore_callbacks, save_checkpoint


def _epoch_saves_only(owner: str, save_freq) -> None:
    if save_freq != "epoch":
        raise ArgumentError(f"{owner}(save_freq={save_freq!r}): only save_freq='epoch' is supported (a save in the "
                            "middle of an epoch is no point to resume exactly from).")


class ModelCheckpoint(MonitorCallback):
    """Save the model at the end of every epoch, or with ``save_best_only`` only when ``monitor``
    improves on the best so far (``initial_value_threshold`` is the first best), as Keras 3.

    ``filepath`` may hold Keras' fields, filled from the epoch (counted from 1) and the logs:
    ``"ckpt/{epoch:02d}-{val_loss:.2f}"``. Each save is a folder in fluxnet's format, whatever its
    suffix: ``fx.load_model(path)`` reads the whole model (``save_weights_only=False``: variables,
    optimizer state, compile settings), ``model.load_weights(path)`` the variables alone
    (``save_weights_only=True``). A missing monitor is an error (Keras warns and saves)."""

    def __init__(self, filepath: str | os.PathLike, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False, mode: str = "auto",
                 save_freq: str = "epoch", initial_value_threshold: float | None = None):
        super().__init__(monitor, mode)
        _epoch_saves_only("ModelCheckpoint", save_freq)
        self.filepath, self.verbose = os.fspath(filepath), verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        self.best = initial_value_threshold
        self._trainer = None

    def on_train_begin(self, trainer, state):
        self._trainer = trainer

    def on_epoch_end(self, epoch, logs, state):
        try:
            path = self.filepath.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as error:
            raise ConfigError(f"ModelCheckpoint cannot fill in its filepath {self.filepath!r} ({error!r}); it may use "
                              f"{{epoch}} and the logged values {sorted(logs)}.") from None
        if self.save_best_only:
            current = self._monitored(logs)
            best = "None" if self.best is None else f"{self.best:.5f}"
            if not self._improved(current, self.best):
                if self.verbose > 0:
                    print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {best}")
                return None
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {best} to {current:.5f}, saving model to "
                      f"{path}")
            self.best = current
        elif self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: saving model to {path}")
        if self.save_weights_only:
            saving.save_variables(path, state.variables)
        else:
            saving.save_model(path, self._trainer, state)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: finished saving model to {path}")
        return None

    def get_state(self):
        return {"best": self.best}

    def set_state(self, state):
        self.best = state.get("best", self.best)


class BackupAndRestore(Callback):
    """Back up the whole training at each epoch end -- the train state (variables, optimizer state,
    step, epoch, random key), the history and every other callback's state -- into ``backup_dir``
    (orbax, the latest only), so that an interrupted ``fit`` called again the same way continues
    after the last completed epoch and ends exactly as an uninterrupted one. ``fit(epochs=N)`` on the
    same starting state then trains only the epochs left. After a ``fit`` that completes, the backup
    is deleted (``delete_checkpoint=True``). ``double_checkpoint=True`` also keeps the backup before,
    restored when the latest cannot be read. Its hooks run after every other callback's
    (``runs_last``). ``backup_dir`` belongs to it alone (as Keras)."""

    runs_last = True

    def __init__(self, backup_dir: str | os.PathLike, save_freq: str = "epoch", double_checkpoint: bool = False,
                 delete_checkpoint: bool = True):
        if not backup_dir:
            raise ArgumentError("BackupAndRestore needs a backup_dir, got an empty one.")
        _epoch_saves_only("BackupAndRestore", save_freq)
        self.backup_dir = os.fspath(backup_dir)
        self.double_checkpoint, self.delete_checkpoint = double_checkpoint, delete_checkpoint
        self._checkpointer: Checkpointer | None = None
        self._callbacks: list[Callback] = []

    def on_train_begin(self, trainer, state):
        callbacks = getattr(trainer, "fit_callbacks", None)
        if not callbacks or callbacks[-1] is not self:
            raise ConfigError("BackupAndRestore must see every callback of the fit and run after them all: it needs "
                              "a Trainer that sets trainer.fit_callbacks and runs runs_last callbacks last.")
        self._callbacks = callbacks
        self._close()  # a fit that failed left it open
        self._checkpointer = Checkpointer(self.backup_dir, keep=2 if self.double_checkpoint else 1, monitor=None,
                                          async_save=False)
        steps = sorted(self._checkpointer.all_steps(), reverse=True)
        for i, step in enumerate(steps):
            try:
                restored, meta, arrays = self._checkpointer.restore(
                    step, trainer.abstract_state(), fresh=lambda: trainer.init(jax.random.key(0)))
            except CheckpointError:  # another model's backup: never silently skipped
                raise
            except Exception as error:  # noqa: BLE001 -- orbax/tensorstore errors of a damaged backup
                if i + 1 == len(steps):
                    raise
                print(f"Note: the backup of epoch {step} in {self.backup_dir} cannot be read ({type(error).__name__}); "
                      f"restoring the one of epoch {steps[i + 1]}.", file=sys.stderr)
                continue
            restore_callbacks(callbacks, {**meta, "arrays": arrays})
            return restored
        return None

    def on_epoch_end(self, epoch, logs, state):
        save_checkpoint(self._checkpointer, state, self._callbacks, logs, stopped=False)

    def on_train_end(self, state):
        self._close()
        if self.delete_checkpoint:
            shutil.rmtree(self.backup_dir, ignore_errors=True)

    def _close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
