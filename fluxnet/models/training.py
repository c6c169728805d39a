"""Keras' model methods -- ``compile``, ``fit``, ``evaluate``, ``predict``, ``get_weights``,
``set_weights``, ``save`` -- as a thin stateful shell over the pure API.

The core stays ``model.init``/``model.apply`` and ``fluxnet.Trainer`` with an explicit state; these
methods hold one ``Trainer`` and one ``TrainState`` on the model and pass them along, so a Keras
program runs unchanged except for its imports. ``model.variables`` is an ordinary variables pytree
(usable with ``model.apply``). What differs from Keras, on purpose:

- Variables are created by ``compile`` (from ``seed``), not when the model is built; a model that
  already has variables (trained, loaded, ``set_weights``) keeps them when compiled again, with a
  fresh optimizer state (as Keras).
- Variables belong to the model that trains them, not to layers. A model used as a layer of a bigger
  one (``base(x, training=False)``) is the exception Keras' transfer recipes need: after the bigger
  model's ``fit``/``set_weights`` the inner model holds its part of the variables, and a model compiled
  around an inner model that has variables starts from them.
- ``fit(epochs=N)`` trains ``N - initial_epoch`` epochs; the epoch counter (callbacks, logs) carries on
  across calls where Keras restarts it at ``initial_epoch``; a given ``initial_epoch`` sets it.
- The learning rate is a scale on the optimizer's own (schedules included): ``model.optimizer.
  learning_rate`` reads and sets base rate x scale (``fluxnet.train.lr_scale``).

This is the one models module that imports ``fluxnet.train`` (``pyproject.toml``'s import contracts),
lazily: ``fluxnet.train`` imports the models.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import jax
import numpy as np

from fluxnet.errors import ArgumentError, ArgumentTypeError
from fluxnet.layers.variable_order import keras_variables

if TYPE_CHECKING:
    from fluxnet.train.callbacks import History


_MID_EPOCH = object()  # model._state during a Keras-style batch hook


class LearningRate:
    """``model.optimizer``: the compiled optimizer's ``learning_rate`` (read and set, as Keras'
    ``model.optimizer.learning_rate``) and ``iterations`` (updates so far)."""

    def __init__(self, model: "KerasMethods"):
        self._model = model

    @property
    def learning_rate(self) -> float:
        from fluxnet.train import lr_scale

        return lr_scale.learning_rate(jax.device_get(self._model._fit_state().opt_state))

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        from fluxnet.train import lr_scale

        self._model._state = lr_scale.set_learning_rate(self._model._fit_state(), float(value),
                                                        "model.optimizer.learning_rate")

    @property
    def iterations(self) -> int:
        return int(self._model._fit_state().step)


class KerasMethods:
    """Keras' ``Model`` training methods; ``fluxnet.Model`` inherits them (see the module docstring)."""

    stop_training = False  # a Keras-style callback sets it to end fit after the epoch

    # ------------------------------------------------------------------------------------ state
    def _fit_state(self):
        state = getattr(self, "_state", None)
        if state is _MID_EPOCH:
            raise ArgumentError("The weights are not readable in a batch hook (on_train_batch_end): the train step "
                                "owns their buffers until the epoch ends. Read them in on_epoch_end.")
        if state is None:
            raise ArgumentError(f"Model {self.name!r} is not compiled: call model.compile(optimizer, loss, "
                                "metrics) first.")
        return state

    def _set_fit_state(self, state) -> None:
        """The state a Keras-style callback sees through the model during ``fit``."""
        self._state = state

    def _hide_fit_state(self) -> None:
        """During a batch hook: the state is the train step's (donated) buffers, so nothing shows."""
        self._state = _MID_EPOCH

    def _take_fit_state(self):
        """The state after a Keras-style callback's hook (``set_weights`` or a learning rate may have
        replaced it)."""
        return self._state

    @property
    def variables(self) -> dict:
        """The variables the model methods train (``{"params": ..., "batch_stats": ...}``): an
        ordinary pytree, usable with ``model.apply``."""
        state = getattr(self, "_state", None)
        if state is not None:
            return jax.device_get(self._fit_state().variables)
        if getattr(self, "_variables", None) is not None:
            return self._variables
        raise ArgumentError(f"Model {self.name!r} has no variables yet: call model.compile(...) (or "
                            "model.init(rng) for the pure API).")

    @property
    def optimizer(self) -> LearningRate:
        self._fit_state()
        return LearningRate(self)

    @property
    def trainer(self):
        """The ``fluxnet.Trainer`` that ``compile`` built (the pure API under these methods)."""
        self._fit_state()
        return self._trainer

    # ------------------------------------------------------------------------------------ compile
    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, metrics: Any = None, loss_weights: Any = None,
                *, seed: int = 0, steps_per_execution: int = 1, **trainer_args: Any) -> None:
        """Keras' ``compile``: ``optimizer`` a name (Keras defaults), a ``{"name": ..., **arguments}``
        dict (``{"name": "adam", "learning_rate": 1e-3}``) or an optax transform; ``loss`` one, a
        list or a dict per output; ``metrics`` likewise; ``loss_weights`` a list or dict. ``seed``
        initialises the variables of a model that has none. Other keywords go to ``fluxnet.Trainer``
        (``augment``, ``devices``, ``param_groups``...)."""
        from fluxnet import optimizers
        from fluxnet.train import Trainer, saving

        if loss is None:
            raise ArgumentError("compile needs a loss (e.g. loss='sparse_categorical_crossentropy').")
        named = isinstance(optimizer, Mapping) and "name" in optimizer
        tx = optimizers.get(**{k if k != "name" else "name_or_transform": v for k, v in optimizer.items()}) \
            if named else optimizer
        trainer = Trainer(self, loss=loss, optimizer=tx, metrics=metrics or (), loss_weights=loss_weights,
                          steps_per_execution=steps_per_execution, **trainer_args)
        keep = getattr(self, "_state", None)
        variables = keep.variables if keep is not None else getattr(self, "_variables", None)
        state = trainer.init(jax.random.key(seed))
        if variables is None and self._nested_with_variables():
            variables = self._with_nested(jax.device_get(state.variables))
        if variables is not None:
            state = trainer.with_variables(state, variables)
        trainer.compile_config = None if trainer_args else saving.compile_config(loss, optimizer, metrics,
                                                                                 loss_weights)
        self._trainer, self._state, self._variables = trainer, state, None

    # ------------------------------------------------------------------------------------ fit
    def fit(self, x: Any = None, y: Any = None, batch_size: int | None = None, epochs: int = 1,
            verbose: int | str = "auto", callbacks: Iterable | None = None, validation_split: float = 0.0,
            validation_data: Any = None, shuffle: bool = True, class_weight: Any = None,
            sample_weight: Any = None, initial_epoch: int = 0, validation_batch_size: int | None = None,
            ) -> "History":
        """Keras' ``fit``: train ``epochs - initial_epoch`` epochs on ``x``/``y`` (arrays, lists or
        dicts per input/output, or a fluxnet data split as ``x``); returns the ``History``."""
        from fluxnet.train.callbacks import LastEpochState
        from fluxnet.train.keras_callback import as_trainer_callback

        trainer, state = self.trainer, self._fit_state()
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, int) or not 0 <= initial_epoch <= epochs:
            raise ArgumentError(f"initial_epoch must be an int in [0, epochs={epochs}], got {initial_epoch!r}.")
        if initial_epoch:
            state = state.replace(epoch=np.int32(initial_epoch))
        self.stop_training = False
        params = {"verbose": _verbose(verbose), "epochs": epochs}
        if callbacks is not None and not isinstance(callbacks, (list, tuple)):
            callbacks = [callbacks]  # Keras flattens a single callback too
        cbs = [as_trainer_callback(cb, self, params) for cb in (callbacks or [])]
        before, last = self._state, LastEpochState()
        try:
            self._state, history = trainer.fit(
                state, _data(x, y), epochs=epochs - initial_epoch, batch_size=batch_size or 32,
                validation_data=validation_data, validation_split=validation_split,
                validation_batch_size=validation_batch_size, verbose=_verbose(verbose),
                class_weight=class_weight, sample_weight=sample_weight, shuffle=shuffle, callbacks=[*cbs, last])
        except BaseException:
            # keep the epochs completed (as Keras keeps its weights); never a state whose buffers were donated
            self._state = before if last.state is None else last.state
            raise
        self.history = history
        self._publish(self.variables)
        return history

    def evaluate(self, x: Any = None, y: Any = None, batch_size: int | None = None, verbose: int | str = "auto",
                 return_dict: bool = False) -> float | list[float] | dict[str, float]:
        """Keras' ``evaluate``: the loss alone, or ``[loss, <output>_loss..., metrics...]``, or with
        ``return_dict`` a dict of every logged name."""
        logs = self.trainer.evaluate(self._fit_state(), _data(x, y), batch_size=batch_size or 32,
                                     verbose=_verbose(verbose))
        if return_dict:
            return logs
        order = self.trainer.objective.evaluate_order()
        return logs["loss"] if len(order) == 1 else [logs[k] for k in order]

    def predict(self, x: Any, batch_size: int | None = None, verbose: int | str = "auto") -> Any:
        """Keras' ``predict``: the outputs (numpy, structured like the model's outputs) in inference mode."""
        return self.trainer.predict(self._fit_state(), x, batch_size=batch_size or 32)

    # ------------------------------------------------------------------------------------ weights
    def _weight_slots(self) -> list[tuple[str, tuple[str, ...], str]]:
        """``(collection, path, variable)`` of every variable in Keras' ``model.weights`` order: layer
        by layer (nested models recursively), each layer's own variables in Keras' creation order
        (sorted by name for a class whose order is not known)."""
        return [(entry.collections[v], entry.names, v) for entry in keras_variables(self)
                for v in (entry.order or sorted(entry.collections)) if v in entry.collections]

    def get_weights(self) -> list[np.ndarray]:
        """Every variable as numpy, in Keras' ``model.get_weights()`` order."""
        variables = self.variables
        return [np.asarray(_at(variables[c], path)[v]) for c, path, v in self._weight_slots()]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Replace every variable from a list in ``get_weights()`` order (shapes checked)."""
        slots = self._weight_slots()
        if len(weights) != len(slots):
            raise ArgumentError(f"set_weights got {len(weights)} arrays, but model {self.name!r} has {len(slots)} "
                                "weights (see model.get_weights()).")
        variables = jax.tree.map(np.asarray, self.variables)
        for (c, path, v), value in zip(slots, weights):
            holder = _at(variables[c], path)
            value = np.asarray(value, holder[v].dtype)
            if value.shape != holder[v].shape:
                raise ArgumentError(f"set_weights: {c}/{'/'.join(path)}/{v} has shape {holder[v].shape}, got "
                                    f"{value.shape}.")
            holder[v] = value
        self._set_variables(variables)

    def _set_variables(self, variables: Mapping) -> None:
        state = getattr(self, "_state", None)
        if state is None:
            self._check_variables(variables)
            self._variables = dict(variables)
        else:
            self._state = state.with_variables(jax.device_put(dict(variables)))
        self._publish(variables)

    def _nested(self) -> list["KerasMethods"]:
        return [layer for layer in self.layers if isinstance(layer, KerasMethods)]

    def _nested_with_variables(self) -> list["KerasMethods"]:
        return [m for m in self._nested() if getattr(m, "_state", None) is not None
                or getattr(m, "_variables", None) is not None]

    def _publish(self, variables: Mapping) -> None:
        """Give each inner model its part of ``variables`` (nested under its name), as Keras' shared
        layers would see the trained weights."""
        for inner in self._nested():
            part = {c: sub[inner.name] for c, sub in variables.items() if inner.name in sub}
            inner._set_variables(part)

    def _with_nested(self, variables: dict) -> dict:
        """Fresh ``variables`` with the parts of inner models that hold variables replaced by theirs."""
        out = {c: dict(sub) for c, sub in variables.items()}
        for inner in self._nested_with_variables():
            for c, sub in inner.variables.items():
                out.setdefault(c, {})[inner.name] = sub
        return out

    # ------------------------------------------------------------------------------------ saving
    def save(self, path: str | os.PathLike) -> None:
        """The whole model -- architecture, variables, optimizer state, compile settings -- as a
        folder that ``fx.load_model(path)`` reads (written atomically). A path ending in ``.keras`` gets a
        Keras 3 archive instead (architecture and variables), which ``keras.saving.load_model`` and
        ``fx.load_model`` open."""
        if os.fspath(path).endswith(".keras"):
            from fluxnet.transfer.keras_file import save_keras_model

            save_keras_model(self, self.variables, path)
            return
        from fluxnet.train import saving

        saving.save_model(path, self.trainer, self._fit_state())

    def save_weights(self, path: str | os.PathLike) -> None:
        """The variables alone (Keras' ``save_weights``): a path ending in ``.weights.h5`` is Keras 3's
        file (Keras' ``load_weights`` reads it), any other an orbax folder."""
        if os.fspath(path).endswith(".weights.h5"):
            from fluxnet.transfer.keras_file import save_keras_weights

            save_keras_weights(self, self.variables, path)
            return
        from fluxnet.train import saving

        saving.save_variables(path, self.variables)

    def load_weights(self, path: str | os.PathLike) -> None:
        """Variables written by ``save_weights`` (or ``ModelCheckpoint(save_weights_only=True)``), or a
        Keras 3 ``.weights.h5`` file / ``.keras`` archive of the same architecture."""
        if os.fspath(path).endswith((".weights.h5", ".keras")):
            from fluxnet.transfer.keras_weights import load_keras_weights

            self._set_variables(load_keras_weights(self, path))
            return
        from fluxnet.train import saving

        self._set_variables(saving.load_variables(path, self.abstract_variables()))


def _at(tree: Mapping, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _data(x: Any, y: Any) -> Any:
    if x is None:
        raise ArgumentError("Pass the data as x (and y).")
    if y is None and hasattr(x, "images") and hasattr(x, "labels"):
        return x
    if isinstance(x, tuple) and y is None:
        raise ArgumentTypeError("x is a tuple: pass inputs as x and targets as y (a list of arrays for several "
                                "inputs), or a fluxnet data split as x.")
    return (x, y)


def _verbose(verbose: int | str) -> int:
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2):
        raise ArgumentError(f"verbose must be 'auto', 0, 1 or 2, got {verbose!r}.")
    return int(verbose)
