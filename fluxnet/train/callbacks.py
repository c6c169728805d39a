"""Keras-like callbacks: History, EarlyStopping, TensorBoard and a JSON-lines metrics log.

Hooks receive the epoch number (0-based, Keras) and the epoch's logs; ``on_epoch_end`` may ask the
trainer to stop by returning True. Callbacks that must survive a resume expose ``get_state`` /
``set_state`` (JSON) and ``get_arrays`` / ``set_arrays`` (a pytree checkpointed with the train state).
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

import jax

from fluxnet.errors import ConfigError
from fluxnet.files import write_atomic
from fluxnet.metrics import monitor_mode


class Callback:
    """Base class; every hook is optional."""

    def on_train_begin(self, trainer, state) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict, state) -> bool | None:
        """Return True to stop training after this epoch."""
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


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs (Keras 3 semantics,
    including ``baseline``, ``start_from_epoch`` and ``restore_best_weights``; a NaN value is no
    improvement). Unlike Keras, a monitor that is not logged is an error, not a warning."""

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline: float | None = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0):
        self.monitor, self.patience, self.verbose = monitor, patience, verbose
        self.mode = monitor_mode(monitor, mode)
        self.min_delta = abs(min_delta) * (1 if self.mode == "max" else -1)
        self.baseline, self.restore_best_weights = baseline, restore_best_weights
        self.start_from_epoch = start_from_epoch
        self.best: float | None = None
        self.best_epoch, self.wait, self.stopped_epoch = 0, 0, 0
        self.best_weights = None

    def _improved(self, value: float, reference: float) -> bool:
        return value - self.min_delta > reference if self.mode == "max" else value - self.min_delta < reference

    def on_train_begin(self, trainer, state):
        # As Keras: each fit starts afresh (a resumed run then loads its checkpointed state).
        self.best, self.best_epoch, self.wait, self.stopped_epoch = None, 0, 0, 0
        self.best_weights = None

    def on_epoch_end(self, epoch, logs, state):
        if self.monitor not in logs:
            raise ConfigError(f"EarlyStopping monitors {self.monitor!r}, which is not logged; logged values: "
                             f"{sorted(logs)}. Pass validation_data for val_* values.")
        value = float(logs[self.monitor])
        if epoch < self.start_from_epoch:
            return None
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = _copy(state.variables), epoch
        self.wait += 1
        if self.best is None or self._improved(value, self.best):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_weights = _copy(state.variables)
            if self.baseline is None or self._improved(value, self.baseline):
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


class TensorBoard(Callback):
    """Per-epoch scalars as TensorBoard event files (tensorboardX: no TensorFlow needed)."""

    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        self._writer = None

    def on_train_begin(self, trainer, state):
        from tensorboardX import SummaryWriter

        # A resumed run hides what an interrupted one logged after its checkpoint (steps are epochs).
        self._writer = SummaryWriter(self.log_dir, purge_step=int(state.epoch) + 1)

    def on_epoch_end(self, epoch, logs, state):
        for key, value in logs.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(key, value, epoch + 1)
        self._writer.flush()

    def on_train_end(self, state):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class MetricsLog(Callback):
    """``metrics.jsonl``: one JSON object per epoch (``epoch`` counts from 1), full float precision."""

    def __init__(self, path: str):
        self.path = path

    def on_epoch_end(self, epoch, logs, state):
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
