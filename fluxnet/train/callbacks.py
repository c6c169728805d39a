"""The Trainer's callbacks: History, EarlyStopping, CSVLogger, TerminateOnNaN, LambdaCallback, TensorBoard
and a JSON-lines metrics log (the learning-rate and checkpoint callbacks live beside this module).

The pure API's protocol: hooks receive the epoch number (0-based, Keras), the epoch's logs and the
train state. ``on_train_begin`` and ``on_epoch_begin`` may return a replacement state; ``on_epoch_end``
may return True to stop after this epoch, a replacement state (the learning-rate callbacks return the
state with a new learning-rate scale), which is what gets checkpointed, or both as ``(state, True)``;
``on_train_batch_end`` (called only for classes that define it) may return True to end training after
that step. Callbacks that must survive a resume expose ``get_state`` / ``set_state`` (JSON) and
``get_arrays`` / ``set_arrays`` (a pytree checkpointed with the train state). The Trainer runs
``runs_last`` callbacks after the others and lists the fit's callbacks in ``trainer.fit_callbacks``
(BackupAndRestore saves and restores them all). Keras-style callbacks (``self.model``,
``on_epoch_end(epoch, logs=None)``) are ``fluxnet.callbacks.Callback``.
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
from collections.abc import Iterable
from typing import Any, Callable

import jax

from fluxnet.errors import ArgumentError, ArgumentTypeError, ConfigError, TrainingDivergedError
from fluxnet.files import write_atomic, writes_here
from fluxnet.metrics import monitor_mode
from fluxnet.train.state import TrainState


class Callback:
    """Base class; every hook is optional. ``runs_last``: the Trainer runs this callback's hooks after
    every other's (BackupAndRestore, which saves and restores the others' states)."""

    runs_last = False

    def on_train_begin(self, trainer, state):
        """May return a replacement state (BackupAndRestore's restored one)."""
        return None

    def on_epoch_begin(self, epoch: int, state):
        """May return a replacement state (LearningRateScheduler's new scale)."""
        return None

    def on_train_batch_end(self, batch: int, logs: dict):
        """After each step (``batch`` counts from 0 in the epoch) with the epoch's running averages;
        True ends training after this step (TerminateOnNaN). Only a callback whose class overrides
        it costs the device sync it needs."""
        return None

    def on_epoch_end(self, epoch: int, logs: dict, state):
        """Return True to stop training after this epoch, a replacement state, or both as
        ``(state, True)`` (a Keras-style callback that set weights and ``stop_training``)."""
        return None

    def on_train_end(self, state):
        """May return a replacement state (EarlyStopping's best weights)."""
        return None

    def get_state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None:
        pass

    def get_arrays(self) -> Any:
        return None

    def set_arrays(self, arrays: Any) -> None:
        pass


def replacement(answer: Any) -> TrainState | None:
    """The state a hook returned to replace the current one, or None; anything else is an error."""
    if answer is not None and not isinstance(answer, TrainState):
        raise ArgumentTypeError(f"A callback hook returned {type(answer).__name__}; hooks return None or a "
                                "TrainState (on_epoch_end: also True to stop).")
    return answer


def epoch_end_answer(answer: Any) -> tuple[TrainState | None, bool]:
    """What ``on_epoch_end`` returned, as ``(replacement state or None, whether to stop)``."""
    if isinstance(answer, tuple):  # (state, True): replaced and stop
        return replacement(answer[0]), True
    if isinstance(answer, TrainState):
        return answer, False
    return None, bool(answer)


class History(Callback):
    """``history.history``: per-epoch lists of every logged value; ``history.epoch``: epoch numbers."""

    def __init__(self):
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []

    def on_epoch_end(self, epoch, logs, state):
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def get_state(self):
        return {"history": self.history, "epoch": self.epoch}

    def set_state(self, state):
        self.history = {k: list(v) for k, v in state.get("history", {}).items()}
        self.epoch = list(state.get("epoch", []))


class MonitorCallback(Callback):
    """A callback that watches one logged value (Keras' ``MonitorCallback``): ``mode`` "min" or "max"
    ("auto": from the name, ``fluxnet.metrics.monitor_mode``); a change by no more than ``min_delta``
    is no improvement, and neither is NaN. Unlike Keras, a monitor that is not logged is an error,
    not a warning."""

    def __init__(self, monitor: str, mode: str = "auto", min_delta: float = 0.0):
        self.monitor = monitor
        self.mode = monitor_mode(monitor, mode)
        self.min_delta = abs(min_delta) * (1 if self.mode == "max" else -1)

    def _monitored(self, logs: dict) -> float:
        if self.monitor not in logs:
            raise ConfigError(f"{type(self).__name__} monitors {self.monitor!r}, which is not logged; logged values: "
                              f"{sorted(logs)}. Pass validation_data for val_* values.")
        return float(logs[self.monitor])

    def _improved(self, value: float, reference: float | None) -> bool:
        """Keras' ``_is_improvement``: any value improves on no reference."""
        if reference is None:
            return True
        return value - self.min_delta > reference if self.mode == "max" else value - self.min_delta < reference


class EarlyStopping(MonitorCallback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs (Keras 3 semantics,
    including ``baseline``, ``start_from_epoch`` and ``restore_best_weights``)."""

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline: float | None = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0):
        super().__init__(monitor, mode, min_delta)
        self.patience, self.verbose = patience, verbose
        self.baseline, self.restore_best_weights = baseline, restore_best_weights
        self.start_from_epoch = start_from_epoch
        self.best: float | None = None
        self.best_epoch, self.wait, self.stopped_epoch = 0, 0, 0
        self.best_weights = None

    def on_train_begin(self, trainer, state):
        # As Keras: each fit starts afresh (a resumed run then loads its checkpointed state).
        self.best, self.best_epoch, self.wait, self.stopped_epoch = None, 0, 0, 0
        self.best_weights = None

    def on_epoch_end(self, epoch, logs, state):
        value = self._monitored(logs)
        if epoch < self.start_from_epoch:
            return None
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = _copy(state.variables), epoch
        self.wait += 1
        if self._improved(value, self.best):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_weights = _copy(state.variables)
            if self._improved(value, self.baseline):
                self.wait = 0
            return None
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            if self.verbose:
                print(f"Epoch {epoch + 1}: early stopping (best {self.monitor}={self.best:.6g} "
                      f"at epoch {self.best_epoch + 1}).")
            return True
        return None

    def on_train_end(self, state):
        if self.restore_best_weights and self.best_weights is not None:
            return state.with_variables(self.best_weights)
        return None

    def get_state(self):
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "stopped_epoch": self.stopped_epoch}

    def set_state(self, state):
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch", 0)
        self.wait, self.stopped_epoch = state.get("wait", 0), state.get("stopped_epoch", 0)

    def get_arrays(self):
        return self.best_weights if self.restore_best_weights else None

    def set_arrays(self, arrays):
        self.best_weights = arrays


class CSVLogger(Callback):
    """Each epoch's logs as a row of a CSV file, as Keras writes it: an ``epoch`` column (from 0), then
    the first epoch's log names sorted (with ``val_*`` columns, ``NA``, when nothing is validated).
    ``append=True`` continues an existing file (no second header). A resumed run (a run directory,
    BackupAndRestore) cuts the file back to what it held at the restored checkpoint, so no epoch
    appears twice; the file is opened at the first epoch end, after any resume."""

    def __init__(self, filename: str | os.PathLike, separator: str = ",", append: bool = False):
        self.filename, self.sep, self.append = os.fspath(filename), separator, append
        self.keys: list[str] | None = None
        self._size: int | None = None  # bytes written up to the last row; a resume's set_state sets it

    def on_train_begin(self, trainer, state):
        self.keys, self._size = None, None

    def on_epoch_end(self, epoch, logs, state):
        header = self.keys is None
        if header:
            self.keys = sorted(logs)
            if not any(k.startswith("val_") for k in self.keys):
                self.keys += [f"val_{k}" for k in self.keys]
            header = not (self.append and os.path.exists(self.filename) and os.path.getsize(self.filename))
            mode = "a" if self.append else "w"
        else:  # cut back to this logger's last row: after a resume, drops the later epochs' rows (a torn one too)
            if os.path.exists(self.filename) and os.path.getsize(self.filename) > self._size:
                os.truncate(self.filename, self._size)
            mode = "a"
        with open(self.filename, mode, newline="") as f:
            writer = csv.DictWriter(f, ["epoch", *self.keys], delimiter=self.sep)
            if header:
                writer.writeheader()
            writer.writerow({"epoch": epoch, **{k: _csv_value(logs.get(k, "NA")) for k in self.keys}})
            self._size = f.tell()

    def get_state(self):
        return {} if self.keys is None else {"keys": self.keys, "size": self._size}

    def set_state(self, state):
        if state:
            self.keys, self._size = list(state["keys"]), state["size"]


def _csv_value(value: Any) -> Any:
    """Keras' cell: a string as is, a sequence as ``"[a, b]"``, anything else for ``csv`` to print."""
    if isinstance(value, str) or not isinstance(value, Iterable) or getattr(value, "ndim", 1) == 0:
        return value
    return f'"[{", ".join(map(str, value))}]"'


class TerminateOnNaN(Callback):
    """End training at the first step whose running loss is NaN or inf, without an error (Keras'
    graceful stop): the rest of that epoch is skipped, ``on_epoch_end`` hooks still run and ``fit``
    returns the state as it is. Without it the Trainer raises TrainingDivergedError at the end of
    such an epoch. ``raise_error=True`` raises TrainingDivergedError at once instead (Keras raises a
    RuntimeError). Checking every step costs a device sync per step."""

    def __init__(self, raise_error: bool = False):
        self.raise_error = raise_error

    def on_train_batch_end(self, batch, logs):
        loss = logs.get("loss")
        if loss is None or math.isfinite(loss):
            return None
        if self.raise_error:
            raise TrainingDivergedError(f"NaN or Inf loss encountered at batch {batch}. Loss value: {loss}. "
                                        "Terminating training immediately (TerminateOnNaN(raise_error=True)).")
        print(f"Batch {batch}: Invalid loss, terminating training")
        return True


class LambdaCallback(Callback):
    """A callback from plain functions with Keras' signatures: ``on_epoch_begin(epoch, logs)``,
    ``on_epoch_end(epoch, logs)``, ``on_train_begin(logs)``, ``on_train_end(logs)`` (the last epoch's
    logs, as Keras) and ``on_train_batch_end(batch, logs=logs)`` (or Keras' ``on_batch_end``; a batch
    function costs a device sync per step). They see logs and return nothing; a callback that needs
    the train state subclasses ``fluxnet.callbacks.TrainerCallback``."""

    def __init__(self, on_epoch_begin: Callable | None = None, on_epoch_end: Callable | None = None,
                 on_train_begin: Callable | None = None, on_train_end: Callable | None = None,
                 on_train_batch_begin: Callable | None = None, on_train_batch_end: Callable | None = None,
                 **kwargs: Callable):
        unsupported = sorted(set(kwargs) - {"on_batch_end"})
        if on_train_batch_begin is not None:
            unsupported.insert(0, "on_train_batch_begin")
        if unsupported:
            raise ArgumentError(f"LambdaCallback got {', '.join(unsupported)}, which the Trainer never calls; its "
                                "hooks are on_train_begin, on_epoch_begin, on_train_batch_end (alias on_batch_end), "
                                "on_epoch_end and on_train_end.")
        self.functions = {"epoch_begin": on_epoch_begin, "epoch_end": on_epoch_end, "train_begin": on_train_begin,
                          "train_end": on_train_end, "batch_end": on_train_batch_end or kwargs.get("on_batch_end")}
        self._logs: dict = {}
        if self.functions["batch_end"] is not None:
            # the Trainer calls (and syncs for) batch hooks only of classes that define one
            self.__class__ = _BatchLambdaCallback

    def _call(self, name: str, *args, **kwargs) -> None:
        if self.functions[name] is not None:
            self.functions[name](*args, **kwargs)

    def on_train_begin(self, trainer, state):
        self._logs = {}
        self._call("train_begin", {})

    def on_epoch_begin(self, epoch, state):
        self._call("epoch_begin", epoch, {})

    def on_epoch_end(self, epoch, logs, state):
        self._logs = logs
        self._call("epoch_end", epoch, logs)

    def on_train_end(self, state):
        self._call("train_end", self._logs)


class _BatchLambdaCallback(LambdaCallback):
    """A LambdaCallback with a batch function."""

    def on_train_batch_end(self, batch, logs):
        self._call("batch_end", batch, logs=logs)


class TensorBoard(Callback):
    """Per-epoch scalars as TensorBoard event files (tensorboardX: no TensorFlow needed)."""

    def __init__(self, log_dir: str = "logs"):
        self.log_dir = log_dir
        self._writer = None

    def on_train_begin(self, trainer, state):
        if not writes_here():  # process 0 of a multi-process job writes the logs
            return
        from tensorboardX import SummaryWriter

        # A resumed run hides what an interrupted one logged after its checkpoint (steps are epochs).
        self._writer = SummaryWriter(self.log_dir, purge_step=int(state.epoch) + 1)

    def on_epoch_end(self, epoch, logs, state):
        if self._writer is None:
            return
        for key, value in logs.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(key, value, epoch + 1)
        self._writer.flush()

    def on_train_end(self, state):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class Profile(Callback):
    """A ``jax.profiler`` trace of ``steps`` training steps from step ``start`` (1-based, counted in the
    first epoch trained; the first steps compile) into ``log_dir`` (``plugins/profile/``, which
    TensorBoard's profile plugin and Perfetto read). While it traces, each step ends with a device
    sync, so the trace shows each step whole."""

    def __init__(self, log_dir: str, start: int = 3, steps: int = 5):
        self.log_dir, self.start, self.steps = log_dir, start, steps
        self._tracing, self._done, self._first = False, False, 0

    def on_train_batch_end(self, batch, logs):
        if self._done:
            return None
        if not self._tracing and batch + 1 >= self.start:
            jax.profiler.start_trace(self.log_dir)
            self._tracing, self._first = True, batch
        elif self._tracing and batch - self._first >= self.steps:
            self._stop()
        return None

    def on_epoch_end(self, epoch, logs, state):  # an epoch shorter than the trace ends it
        if self._tracing:
            self._stop()
        self._done = True
        return None

    def on_train_end(self, state):
        if self._tracing:
            self._stop()

    def _stop(self) -> None:
        jax.profiler.stop_trace()
        self._tracing, self._done = False, True


class LastEpochState(Callback):
    """Keeps a copy of the state after each completed epoch (``self.state``), so that a fit that fails
    or is interrupted later still leaves the training done so far (``model.fit`` uses it, as Keras
    keeps its weights)."""

    def __init__(self):
        self.state = None

    def on_epoch_end(self, epoch, logs, state):
        self.state = _copy(state)


class MetricsLog(Callback):
    """``metrics.jsonl``: one JSON object per epoch (``epoch`` counts from 1), full float precision."""

    def __init__(self, path: str):
        self.path = path

    def on_epoch_end(self, epoch, logs, state):
        if not writes_here():
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"epoch": epoch + 1, "step": int(state.step), **logs}) + "\n")

    def truncate(self, epochs: int) -> None:
        """Drop records after ``epochs`` (a resume from an earlier checkpoint rewrites them) and any torn
        line, with a note on stderr."""
        if not os.path.exists(self.path):
            return
        kept = []
        with open(self.path) as f:
            for number, line in enumerate(f, 1):
                try:
                    record = json.loads(line) if line.strip() else None
                except ValueError:  # a torn last line (kill -9 or a full disk mid-append)
                    print(f"Note: {self.path} line {number} is torn and was dropped: {line.strip()[:80]!r}",
                          file=sys.stderr)
                    continue
                if record is not None and record.get("epoch", 0) <= epochs:
                    kept.append(line if line.endswith("\n") else line + "\n")
        write_atomic(self.path, "".join(kept))


def _copy(tree: Any) -> Any:
    """Fresh buffers: the train step donates the state's, which would delete a kept reference."""
    return jax.tree.map(lambda a: a.copy(), tree)
