"""Keras-style callbacks (``self.model``, ``on_epoch_end(epoch, logs=None)``) on the Trainer's protocol.

A Keras callback reaches the training through its model: it reads the weights, calls
``set_weights``, sets ``model.optimizer.learning_rate`` or ``model.stop_training``. The Trainer's
callbacks instead receive the train state and return a replacement. ``as_trainer_callback`` bridges
the two: before each hook the model shows the current state (``model._set_fit_state``), after it the
state the hook left (``model._take_fit_state``) goes back to the Trainer, and ``stop_training``
becomes the answer that ends training after the epoch.
"""
from __future__ import annotations

from typing import Any, Mapping

from fluxnet.errors import ArgumentTypeError
from fluxnet.train.callbacks import Callback as TrainerCallback

BATCH_HOOKS = ("on_train_batch_end", "on_batch_end")


class Callback:
    """Keras' ``Callback``: override the hooks you need. ``self.model`` is the model being trained and
    ``self.params`` the fit's settings (``verbose``, ``epochs``, ``steps``) where the caller gave them.
    ``on_train_batch_end`` (by default ``on_batch_end``) sees the epoch's running logs; the weights
    are not readable mid-epoch (the train steps own their buffers), only in the other hooks."""

    def __init__(self):
        self.params: dict | None = None
        self._model = None

    def set_params(self, params: dict) -> None:
        self.params = params

    def set_model(self, model: Any) -> None:
        self._model = model

    @property
    def model(self) -> Any:
        return self._model

    def on_train_begin(self, logs: dict | None = None) -> None:
        pass

    def on_train_end(self, logs: dict | None = None) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        pass

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.on_batch_end(batch, logs=logs)

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        pass


class KerasCallbackAdapter(TrainerCallback):
    """A Keras-style ``callback`` of ``model`` as a Trainer callback (see the module docstring)."""

    def __init__(self, callback: Any, model: Any, params: Mapping | None = None):
        self.callback, self.model = callback, model
        callback.set_model(model)
        if params is not None:
            callback.set_params(dict(params))
        self._logs: dict = {}

    def _run(self, state, hook, *args):
        """``hook(*args)`` with the model showing ``state``; the state it left, or None if unchanged. A
        model without the Keras shell shows nothing."""
        show = getattr(self.model, "_set_fit_state", None)
        if show is None:
            hook(*args)
            return None
        show(state)
        hook(*args)
        left = self.model._take_fit_state()
        return None if left is state else left

    def _stop_requested(self) -> bool:
        """Whether the callback set ``model.stop_training`` (reset here: it is answered)."""
        stop = bool(getattr(self.model, "stop_training", False))
        if stop:
            self.model.stop_training = False
        return stop

    def on_train_begin(self, trainer, state):
        self._logs = {}
        return self._run(state, self.callback.on_train_begin, {})

    def on_epoch_begin(self, epoch, state):
        return self._run(state, self.callback.on_epoch_begin, epoch, {})

    def on_epoch_end(self, epoch, logs, state):
        self._logs = logs
        replaced = self._run(state, self.callback.on_epoch_end, epoch, logs)
        if self._stop_requested():
            return True if replaced is None else (replaced, True)
        return replaced

    def on_train_end(self, state):
        return self._run(state, self.callback.on_train_end, self._logs)


class KerasBatchCallbackAdapter(KerasCallbackAdapter):
    """The adapter of a Keras-style callback with a batch hook (the Trainer syncs for those only):
    ``model.stop_training`` set there ends training after that step."""

    def on_train_batch_end(self, batch, logs):
        hide = getattr(self.model, "_hide_fit_state", None)
        if hide is not None:
            hide()  # mid-epoch the train step owns the weights' buffers: reading them is a clear error
        self.callback.on_train_batch_end(batch, logs=logs)
        return bool(getattr(self.model, "stop_training", False)) or None


def _overrides(callback: Any, name: str) -> bool:
    """Whether ``callback`` defines hook ``name`` itself, not as Keras' or fluxnet's base ``Callback``."""
    if name in vars(callback):
        return True
    owner = next((k for k in type(callback).__mro__ if name in vars(k)), None)
    return owner is not None and owner is not Callback and not (
        owner.__name__ == "Callback" and owner.__module__.startswith("keras."))


def as_trainer_callback(callback: Any, model: Any, params: Mapping | None = None) -> TrainerCallback:
    """``callback`` for ``Trainer.fit``: a Trainer callback as it is, a Keras-style one (fluxnet's
    ``Callback`` or any object with Keras' hooks and ``set_model``) adapted to train ``model``;
    ``params`` becomes its ``self.params``."""
    if isinstance(callback, TrainerCallback):
        return callback
    if not callable(getattr(callback, "set_model", None)):
        raise ArgumentTypeError(f"A callback must be a fluxnet.callbacks.Callback (Keras-style) or a "
                                f"fluxnet.callbacks.TrainerCallback, got {type(callback).__name__}.")
    batch = any(_overrides(callback, name) for name in BATCH_HOOKS)
    return (KerasBatchCallbackAdapter if batch else KerasCallbackAdapter)(callback, model, params)
