"""Keras' learning-rate callbacks, ``ReduceLROnPlateau`` and ``LearningRateScheduler``, on the Trainer's
learning-rate scale (``lr_scale.py``).

Each reads the learning rate as Keras logs it (the optimizer's own rate times the scale) and sets a new
one by changing the scale only: the new state recompiles nothing, is checkpointed and resumed with the
optimizer state, and works on top of an optax schedule -- Keras refuses these callbacks on a schedule;
here the schedule keeps running and the callback scales it.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from fluxnet.errors import ArgumentError
from fluxnet.train import lr_scale
from fluxnet.train.callbacks import Callback, MonitorCallback


class ReduceLROnPlateau(MonitorCallback):
    """Multiply the learning rate by ``factor`` (down to ``min_lr``) when ``monitor`` has not improved by
    ``min_delta`` for ``patience`` epochs, then wait ``cooldown`` epochs before counting again (Keras 3
    semantics). On a schedule the reduction scales the schedule from then on, and ``min_lr`` bounds the
    rate at the moment of a reduction. Its counters are checkpointed, so a resumed run carries on."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, verbose: int = 0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0):
        super().__init__(monitor, mode, min_delta)
        if factor >= 1.0:
            raise ArgumentError(f"ReduceLROnPlateau does not support a factor >= 1.0, got factor={factor}.")
        self.factor, self.patience, self.verbose = factor, patience, verbose
        self.cooldown, self.min_lr = cooldown, min_lr
        self.best: float | None = None
        self.wait, self.cooldown_counter = 0, 0

    def on_train_begin(self, trainer, state):
        self.best, self.wait, self.cooldown_counter = None, 0, 0

    def on_epoch_end(self, epoch, logs, state):
        current = self._monitored(logs)
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(current, self.best):
            self.best, self.wait = current, 0
            return None
        if self.cooldown_counter > 0:
            return None
        self.wait += 1
        if self.wait < self.patience:
            return None
        old = lr_scale.learning_rate(state.opt_state)
        # Keras compares its float32 rate with float32(min_lr); a rate set to min_lr through the scale
        # may come back an ulp above it, which is min_lr all the same
        if not np.float32(old) > np.float32(self.min_lr) or math.isclose(old, self.min_lr, rel_tol=1e-6):
            return None
        new = max(old * self.factor, self.min_lr)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.")
        self.cooldown_counter, self.wait = self.cooldown, 0
        return lr_scale.set_learning_rate(state, new, "ReduceLROnPlateau")

    def get_state(self):
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter}

    def set_state(self, state):
        self.best, self.wait = state.get("best"), state.get("wait", 0)
        self.cooldown_counter = state.get("cooldown_counter", 0)


class LearningRateScheduler(Callback):
    """At each epoch's start set the learning rate to ``schedule(epoch, lr)`` (``epoch`` from 0, ``lr``
    the current rate; a one-argument ``schedule(epoch)`` works too, as Keras). It must return a float.
    On top of an optax schedule, ``lr`` is the schedule's current value times the scale, and the new
    rate scales the schedule for the epoch."""

    def __init__(self, schedule: Callable, verbose: int = 0):
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, state):
        try:
            new = self.schedule(epoch, lr_scale.learning_rate(state.opt_state))
        except TypeError:  # Keras' old API: schedule(epoch)
            new = self.schedule(epoch)
        if not isinstance(new, (float, np.floating)):
            raise ArgumentError(f"LearningRateScheduler's schedule must return a float (as Keras); for epoch {epoch} "
                                f"it returned {new!r} ({type(new).__name__}).")
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {new}.")
        return lr_scale.set_learning_rate(state, float(new), "LearningRateScheduler")
