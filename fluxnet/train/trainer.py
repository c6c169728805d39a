"""``Trainer``: Keras' compile/fit/evaluate/predict for fluxnet models, on jitted pure steps.

The shell around the pure steps (``steps.py``): batches from ``epoch_iterator.py``, progress bars,
callbacks, checkpoints. Inside an epoch nothing waits on the device except the progress bar's
periodic read of the latest loss; each step function is compiled once (fixed batch shapes, the last
partial batch dropped in training and padded with a mask in evaluation).
"""
from __future__ import annotations

import math
import numbers
import time
import warnings
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fluxnet import activations
from fluxnet import losses as losses_lib
from fluxnet import metrics as metrics_lib
from fluxnet import optimizers
from fluxnet.data.batching import BatchIterator
from fluxnet.data.checks import validate
from fluxnet.data.imbalance import class_weights_balanced
from fluxnet.errors import ArgumentError, ArgumentTypeError, DataError, TrainingDivergedError, TrainingInterrupted
from fluxnet.models import Model
from fluxnet.registry import unknown_name_error
from fluxnet.train import sharding
from fluxnet.train.callbacks import Callback, History
from fluxnet.train.epoch_iterator import EpochIterator, as_xy, class_ids
from fluxnet.train.faults import CrashPoint
from fluxnet.train.state import TrainState, create_state
from fluxnet.train.steps import finalize, fuse_steps, make_eval_step, make_predict_step, make_train_step

SPARSE_LOSSES = ("sparse_categorical_crossentropy",)
PARALLEL = ("sharding", "pmap")


def _optimizer(model: Model, optimizer: Any, param_groups: Mapping[str, str] | None) -> optax.GradientTransformation:
    """The optimizer over the model's params: frozen layers (``trainable=False``) get exactly zero
    updates; with ``param_groups`` each layer's group gets its own transform from ``optimizer``."""
    labels = model.param_labels(groups=param_groups)
    if param_groups is None:
        if isinstance(optimizer, Mapping):
            raise ArgumentTypeError("optimizer is a mapping of parameter groups, but no param_groups were given.")
        if "frozen" not in jax.tree.leaves(labels):
            return optimizers.get(optimizer)
        optimizer = {"trainable": optimizer}
    else:
        if not isinstance(optimizer, Mapping):
            raise ArgumentTypeError("With param_groups, optimizer must map each group to an optimizer, got "
                            f"{type(optimizer).__name__}.")
        unknown = sorted(set(param_groups) - set(labels))
        if unknown:
            raise ArgumentError(f"param_groups names layers without parameters or not in the model: {unknown}.")
        missing = sorted(name for name, sub in labels.items() if "trainable" in jax.tree.leaves(sub))
        if missing:
            raise ArgumentError(f"param_groups gives no group to the trainable layers {missing}.")
    return optimizers.partitioned(None, labels, {**optimizer, "frozen": optax.set_to_zero()})


class Trainer:
    """Trains a fluxnet model (Keras' ``compile`` + ``fit``), data-parallel over ``devices``.

    ``loss``, ``optimizer`` and ``metrics`` are names, callables or optax transforms. Layers with
    ``trainable=False`` get exactly zero updates (``optax.set_to_zero``). ``param_groups`` maps layer
    names to group labels and ``optimizer`` then maps each label to its transform or name (e.g. a smaller
    learning rate for a pretrained backbone). ``augment(key, x, y) -> (x, y)`` runs on the device inside
    the train step. ``steps_per_execution > 1`` fuses that many steps per dispatch (measure first).

    ``parallel``: ``"sharding"`` (default) jits the step over a ``("data",)`` mesh: XLA all-reduces the
    gradients and BatchNormalization normalises over the global batch, so results equal one device's.
    ``"pmap"`` runs it under ``jax.pmap(axis_name="data")`` on a copy of the state per device, with
    gradients ``pmean``-ed and metrics ``psum``-ed; BatchNormalization then normalises with each
    device's own batch statistics and the moving statistics are averaged over devices after each step.
    """

    def __init__(self, model: Model, loss: str | Callable = "sparse_categorical_crossentropy",
                 optimizer: str | optax.GradientTransformation | Mapping = "adam", metrics: Sequence = (), *,
                 augment: Callable | None = None, devices: Sequence | None = None,
                 steps_per_execution: int = 1, parallel: str = "sharding",
                 param_groups: Mapping[str, str] | None = None):
        if not isinstance(model, Model):
            raise ArgumentTypeError(f"Trainer needs a fluxnet Model or Sequential, got {type(model).__name__}.")
        if parallel not in PARALLEL:
            raise unknown_name_error("parallel mode", parallel, PARALLEL)
        self.model = model
        self.loss_name = losses_lib.name_of(loss)
        self.loss_fn = losses_lib.get(loss)
        _warn_if_logits_mismatch(model, self.loss_name, self.loss_fn)
        self.metric_fns = {metrics_lib.name_of(m): metrics_lib.get(m) for m in metrics}
        self.tx = tx = _optimizer(model, optimizer, param_groups)
        self.mesh = sharding.data_mesh(devices)
        self.parallel = parallel
        if isinstance(steps_per_execution, bool) or not isinstance(steps_per_execution, numbers.Integral) \
                or steps_per_execution < 1:
            raise ArgumentError(f"steps_per_execution must be an int >= 1, got {steps_per_execution!r}.")
        self.steps_per_execution = int(steps_per_execution)
        self.batches = EpochIterator(self.mesh, parallel)
        replicated = sharding.replicated(self.mesh)
        # MixUp/CutMix turn labels into soft one-hot targets: train on the loss' dense equivalent.
        train_loss = losses_lib.dense_equivalent(self.loss_fn) if getattr(augment, "mixes_labels", False) \
            else self.loss_fn
        train_step = make_train_step(model, train_loss, tx, self.metric_fns, augment,
                                     axis_name="data" if parallel == "pmap" else None)
        single = sharding.batch_sharded(self.mesh)

        def compile_step(fn: Callable, batch_sharding: jax.sharding.Sharding) -> Callable:
            """``pmap``-ed, or jitted with the batch (numpy too) placed on ``batch_sharding`` and the
            state left on its own (replicated) sharding."""
            if parallel == "pmap":
                return jax.pmap(fn, axis_name="data", donate_argnums=0,
                                devices=list(self.mesh.devices.ravel()))
            return jax.jit(fn, in_shardings=(None, batch_sharding), donate_argnums=0, out_shardings=replicated)

        self.train_step = compile_step(train_step, single)
        self.fused_train_step = (compile_step(fuse_steps(train_step, self.steps_per_execution),
                                              sharding.stacked_batch_sharded(self.mesh))
                                 if self.steps_per_execution > 1 else None)
        self.eval_step = jax.jit(make_eval_step(model, self.loss_fn, self.metric_fns),
                                 in_shardings=(None, single), out_shardings=replicated)
        self.predict_step = jax.jit(make_predict_step(model), in_shardings=(None, single))

    # -------------------------------------------------------------------------------- state
    def _init(self, rng: jax.Array) -> TrainState:
        init_key, state_key = jax.random.split(rng)
        variables = self.model.init(init_key)
        return create_state(variables, self.tx.init(variables["params"]), state_key)

    def init(self, rng: jax.Array) -> TrainState:
        """A fresh train state (variables from ``model.init``), replicated over the devices. Jitted, so
        every leaf owns its buffer (the train step donates them)."""
        return jax.jit(self._init, out_shardings=sharding.replicated(self.mesh))(rng)

    def with_variables(self, state: TrainState, variables: Mapping) -> TrainState:
        """``state`` with its model variables replaced (e.g. a pretrained backbone's) and a fresh
        optimizer state for them."""
        new = state.with_variables(variables)
        new = new.replace(opt_state=self.tx.init(new.params))
        return sharding.replicate(jax.tree.map(jnp.copy, new), self.mesh)  # own buffers: steps donate them

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and shardings of ``init``'s result (a checkpoint restore target)."""
        repl = sharding.replicated(self.mesh)
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=repl),
                            jax.eval_shape(self._init, jax.random.key(0)))

    # -------------------------------------------------------------------------------- checks
    def _num_classes(self) -> int | None:
        out = self.model.outputs
        return out[0].shape[-1] if len(out) == 1 else None

    def _check_data(self, x: np.ndarray, y: np.ndarray | None, split: str) -> np.ndarray | None:
        """Bad data fails here, before anything is traced: shapes, label kinds and range, NaN/inf.
        Returns the targets to train on (class ids as integers for a sparse loss)."""
        if y is not None and not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
            raise DataError(f"The {split} targets must be numbers, got dtype {y.dtype} (e.g. {y.ravel()[:1]}); "
                            "map class names to integer ids first.")
        if len(self.model.inputs) != 1:
            return y
        input_shape = self.model.inputs[0].shape[1:]
        if y is not None and self.loss_name in SPARSE_LOSSES:
            y = _class_id_labels(y.reshape(len(y)) if y.ndim == 2 and y.shape[1] == 1 else y, split)
            validate(x, y, self._num_classes(), input_shape, split=split)
            return y
        if x.shape[0] == 0:
            raise DataError(f"The {split} data is empty (0 examples).")
        if tuple(x.shape[1:]) != tuple(d if d is not None else s for d, s in zip(input_shape, x.shape[1:])) \
                or x.ndim != len(input_shape) + 1:
            raise DataError(f"The {split} inputs have shape {x.shape[1:]} per example, but the model's Input "
                             f"expects {tuple(input_shape)}.")
        if y is not None and len(y) != len(x):
            raise DataError(f"The {split} data has {len(x)} inputs but {len(y)} targets.")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise DataError(f"The {split} inputs contain NaN or inf values.")
        return y

    def _batch_weights(self, y: np.ndarray, class_weight: Any, sample_weight: np.ndarray | None):
        """Per-example weights (Keras: class weights become sample weights; not both at once), or None."""
        if class_weight is None and sample_weight is None:
            return None
        if class_weight is not None and sample_weight is not None:
            raise ArgumentError("Pass class_weight or sample_weight, not both (as Keras): fold the class "
                             "weights into the sample weights instead.")
        if sample_weight is not None:
            weights = np.asarray(sample_weight, np.float32)
            if weights.shape != (len(y),):
                raise DataError(f"sample_weight must have shape ({len(y)},), got {weights.shape}.")
            bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
            if bad.size:
                raise DataError(f"sample_weight must be finite and >= 0: {bad.size} are not (first at index "
                                f"{bad[0]}: {weights[bad[0]]}).")
            return weights
        n, labels = self._num_classes(), class_ids(y)
        if isinstance(class_weight, str):
            if class_weight != "balanced":
                raise ArgumentError(f"class_weight must be a dict, a sequence or 'balanced', got {class_weight!r}.")
            table = class_weights_balanced(labels, n)
        else:
            table = np.ones(n, np.float32)
            items = class_weight.items() if isinstance(class_weight, Mapping) else enumerate(class_weight)
            for cls, w in items:
                if not 0 <= int(cls) < n:
                    raise ArgumentError(f"class_weight has class {cls}, outside [0, {n}).")
                if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
                    raise ArgumentError(f"class_weight of class {cls} must be a finite number >= 0, got {w!r}.")
                table[int(cls)] = w
        return np.asarray(table, np.float32)[labels]

    # -------------------------------------------------------------------------------- fit
    def fit(self, state: TrainState, data: Any, epochs: int = 1, batch_size: int = 32, *,
            validation_data: Any = None, validation_batch_size: int | None = None, verbose: int = 1,
            callbacks: Iterable[Callback] = (), class_weight: Any = None, sample_weight: Any = None,
            shuffle: bool = True, oversample: bool = False, seed: int | None = None,
            checkpointer: Any = None, resume: Mapping | None = None,
            crash_at: CrashPoint | None = None, should_stop: Callable[[int], Any] | None = None
            ) -> tuple[TrainState, History]:
        """Train ``epochs`` more epochs; returns the new state and a Keras-like ``History``. The state
        passed in stays valid (the steps donate the buffers of a copy).

        The shuffle of epoch ``e`` depends only on ``seed`` (default: derived from the state's key) and
        ``e``, and each step's randomness on the state's key and step, so a resumed run repeats an
        uninterrupted one exactly. With ``checkpointer`` every epoch is saved (state, callback states,
        history; ``stopped``: whether a callback ended training); ``resume`` is the meta ``restore``
        returned, to continue callbacks where they were. ``crash_at`` is a test hook (``faults``).
        ``class_weight`` (a dict, a sequence or ``"balanced"``) or ``sample_weight`` weigh each example
        as Keras does: the loss is ``sum(w * loss) / rows``, metrics are ``w``-weighted means.
        ``oversample=True`` redraws examples of the rarer classes each epoch up to the majority count.
        A NaN or inf epoch loss raises TrainingDivergedError (a FloatingPointError) before that epoch is saved.
        ``should_stop(step)`` is asked after every step (no device sync): a truthy answer (e.g. the
        signal that asked to stop) ends training at once with ``TrainingInterrupted``; the epoch under
        way is not saved, so a resume from the last checkpoint repeats it exactly.
        """
        if seed is None:
            seed = int(np.asarray(jax.device_get(state.rng)).ravel()[-1]) % (2 ** 31)
        arrays, batches = self._fit_inputs(data, epochs, batch_size, validation_data, class_weight, sample_weight,
                                           oversample, shuffle, seed)
        # the steps donate their input buffers: train on a copy, so the caller's state stays valid
        state = sharding.replicate(jax.tree.map(jnp.copy, state), self.mesh)
        history = History()
        cbs = [history, *callbacks]
        for cb in cbs:
            cb.on_train_begin(self, state)
        if resume is not None:
            restore_callbacks(cbs, resume)
        start = int(state.epoch)
        try:
            for epoch in range(start, start + epochs):
                batches.restore({"epoch": epoch, "step": 0})
                state, logs = self._train_epoch(state, batches, arrays, epoch, verbose, crash_at, should_stop)
                if validation_data is not None:
                    val = self.evaluate(state, validation_data, batch_size=validation_batch_size or batch_size)
                    logs.update({f"val_{k}": v for k, v in val.items()})
                lr = optimizers.current_learning_rate(state.opt_state)
                if lr is not None:
                    logs["learning_rate"] = float(lr)
                if verbose == 2 or (verbose and validation_data is not None):
                    print(f"Epoch {epoch + 1}: " + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
                state = state.replace(epoch=sharding.replicate(np.int32(epoch + 1), self.mesh))
                stop = any([cb.on_epoch_end(epoch, logs, state) for cb in cbs])
                if checkpointer is not None:
                    _save(checkpointer, state, cbs, logs, stopped=stop)
                if stop:
                    break
        finally:  # also on a failure: the last good checkpoint must be complete
            if checkpointer is not None:
                checkpointer.wait()
        return self.final_state(state, cbs), history

    def final_state(self, state: TrainState, callbacks: Iterable[Callback]) -> TrainState:
        """The state ``fit`` returns: each callback's ``on_train_end`` may replace it (EarlyStopping's
        ``restore_best_weights``). A run directory applies it to a restored finished run too."""
        for cb in callbacks:
            replaced = cb.on_train_end(state)
            if replaced is not None:
                state = sharding.replicate(replaced, self.mesh)
        return state

    def check_fit(self, data: Any, epochs: int = 1, batch_size: int = 32, *, validation_data: Any = None,
                  class_weight: Any = None, sample_weight: Any = None, oversample: bool = False) -> None:
        """Every check ``fit`` makes of its arguments and data, without training (a run directory is
        checked before anything is written to it)."""
        self._fit_inputs(data, epochs, batch_size, validation_data, class_weight, sample_weight, oversample,
                         shuffle=True, seed=0)

    def _fit_inputs(self, data, epochs, batch_size, validation_data, class_weight, sample_weight, oversample,
                    shuffle, seed) -> tuple[dict, BatchIterator]:
        """The host arrays and the batch iterator of a ``fit``, after checking every argument."""
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
            raise ArgumentError(f"epochs must be an int >= 0, got {epochs!r}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ArgumentError(f"batch_size must be an int >= 1, got {batch_size!r}.")
        x, y = as_xy(data, "fit data")
        if y is None:
            raise ArgumentError("fit needs targets: pass (x, y).")
        y = self._check_data(x, y, "train")
        sharding.check_batch_size(batch_size, self.mesh)
        arrays = {"x": x, "y": y}
        weights = self._batch_weights(y, class_weight, sample_weight)
        if weights is not None:
            arrays["weight"] = weights
        batches = BatchIterator(np.arange(len(x)), class_ids(y) if oversample else None, batch_size,
                                shuffle=shuffle, seed=seed, drop_remainder=True, oversample=oversample)
        if validation_data is not None:
            vx, vy = as_xy(validation_data, "validation_data")
            self._check_data(vx, vy, "validation")
        return arrays, batches

    def _train_epoch(self, state, batches: BatchIterator, arrays: dict, epoch: int, verbose: int,
                     crash_at: CrashPoint | None = None, should_stop: Callable[[int], Any] | None = None):
        from tqdm.auto import tqdm

        steps, k = batches.steps_per_epoch, self.steps_per_execution
        crash_step = max(1, steps // 2) if crash_at is not None and crash_at.mid_epoch(epoch + 1) else None
        first_step = int(state.step)
        bar = tqdm(total=steps, desc=f"Epoch {epoch + 1}", unit="step", disable=verbose != 1, leave=True,
                   dynamic_ncols=True)
        if self.parallel == "pmap":
            state = self._per_device(state)
        sums, start, last_print, done = [], time.perf_counter(), 0.0, 0
        for batch, n in self.batches.train(batches, arrays, k):
            state, metrics = (self.fused_train_step if n > 1 else self.train_step)(state, batch)
            sums.append(metrics)
            done += n
            if crash_step is not None and done >= crash_step:  # the test hook: a signal mid-epoch
                jax.block_until_ready(state)
                crash_at.fire()
                crash_step = None
            if should_stop is not None:
                reason = should_stop(first_step + done)
                if reason:
                    bar.close()
                    done_text = f"epoch {epoch} was the last one completed" if epoch else "no epoch was completed"
                    raise TrainingInterrupted(
                        f"Training stopped by {getattr(reason, 'name', reason)} in epoch {epoch + 1} ({done_text}).",
                        exit_code=128 + int(reason) if isinstance(reason, int) else 1)
            now = time.perf_counter()
            if verbose == 1 and now - last_print > 0.5:  # the only sync inside an epoch
                last_print = now
                bar.set_postfix(_postfix(finalize(self._host_metrics(sums[-1:])[0]), done * batches.batch_size,
                                         now - start), refresh=False)
            bar.update(n)
        if self.parallel == "pmap":
            state = self._unreplicate(state)
        logs = finalize(_sum_metrics(self._host_metrics(sums)))
        bar.set_postfix(_postfix(logs, steps * batches.batch_size, time.perf_counter() - start))
        bar.close()
        if not math.isfinite(logs["loss"]):
            raise TrainingDivergedError(
                f"The training loss became {logs['loss']} in epoch {epoch + 1} (step {int(state.step)}); "
                "training stopped and this epoch was not saved, so the last checkpoint is the last good "
                "state. Lower the learning rate, clip gradients (optimizer.clipnorm) or check the data.")
        return state, logs

    # -------------------------------------------------------------------------------- pmap
    def _per_device(self, state: TrainState) -> TrainState:
        """One copy of ``state`` per device, stacked on a leading axis (``pmap``'s layout)."""
        n = self.mesh.devices.size
        stacked = jax.tree.map(lambda x: np.broadcast_to(x, (n, *np.shape(x))), jax.device_get(state))
        return jax.device_put(stacked, sharding.batch_sharded(self.mesh))

    def _unreplicate(self, state: TrainState) -> TrainState:
        """The per-device copies (identical: gradients and statistics are averaged) as one state,
        replicated over the mesh like ``init``'s."""
        return sharding.replicate(jax.tree.map(lambda x: np.asarray(x)[0], jax.device_get(state)), self.mesh)

    def _host_metrics(self, sums: list) -> list:
        """Step metrics on the host; under ``pmap`` every device holds the same (``psum``-ed) copy."""
        host = _to_host(sums)
        return [jax.tree.map(lambda a: a[0], m) for m in host] if self.parallel == "pmap" else host

    # -------------------------------------------------------------------------------- evaluate / predict
    def evaluate(self, state: TrainState, data: Any, batch_size: int = 256, verbose: int = 0) -> dict[str, float]:
        """Loss and metrics averaged over every real example of ``data`` (inference mode)."""
        x, y = as_xy(data, "evaluate data")
        if y is None:
            raise ArgumentError("evaluate needs targets: pass (x, y).")
        y = self._check_data(x, y, "evaluation")
        sums = [self.eval_step(state, b) for b in self.batches.padded({"x": x, "y": y}, batch_size)]
        logs = finalize(_sum_metrics(_to_host(sums)))
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        return logs

    def predict(self, state: TrainState, x: Any, batch_size: int = 256) -> np.ndarray:
        """Model outputs for every example of ``x`` (inference mode), as numpy."""
        x = np.asarray(x)
        self._check_data(x, None, "predict")
        host = jax.device_get([(self.predict_step(state, b["x"]), b["mask"])
                               for b in self.batches.padded({"x": x}, batch_size)])
        return jax.tree.map(lambda *parts: np.concatenate(parts), *[
            jax.tree.map(lambda o, m=np.asarray(m): o[m], o) for o, m in host])


def _to_host(tree: Any) -> Any:
    """``jax.device_get`` for many small arrays (per-step metrics): ``np.asarray`` per leaf costs ~1 us,
    ``device_get`` ~9 us per array."""
    return jax.tree.map(np.asarray, tree)


PROBABILITY_LOSSES = ("categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy", "bce")
PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid")


def _warn_if_logits_mismatch(model: Model, loss_name: str, loss_fn: Callable) -> None:
    """Warn once when a crossentropy's ``from_logits`` contradicts the model's last activation: logits
    into a probability loss, or softmax/sigmoid outputs into a ``from_logits=True`` loss. Both train
    badly without an error (Keras is silent about it)."""
    if loss_name not in PROBABILITY_LOSSES or len(model.outputs) != 1:
        return
    layer = model.outputs[0].layer
    activation = getattr(layer, "activation", None)
    name = activations.ACTIVATIONS.name_of(activation) if callable(activation) else activation
    probabilities = name in PROBABILITY_ACTIVATIONS
    from_logits = bool(getattr(loss_fn, "keywords", {}).get("from_logits", False))
    if probabilities == from_logits:
        what = (f"ends in a {name} (probabilities), but the loss {loss_name!r} has from_logits=True"
                if probabilities else f"outputs logits (activation {name or 'linear'}), but the loss {loss_name!r} "
                "expects probabilities (from_logits=False)")
        warnings.warn(f"The model's output layer {layer.name!r} {what}; training will work badly. Pass "
                      f"from_logits={not from_logits} to the loss, or change the output activation.", stacklevel=3)


def _class_id_labels(y: np.ndarray, split: str) -> np.ndarray:
    """Class ids for a sparse loss: integers as they are; floats only when every value is a whole
    number (Keras would floor 3.7 for the loss yet compare it raw for accuracy)."""
    if np.issubdtype(y.dtype, np.integer):
        return y
    if y.dtype == bool:
        return y.astype(np.int64)
    fractional = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
    if fractional.size:
        raise DataError(f"The {split} labels must be whole class ids: {fractional.size} of {y.size} are not "
                        f"(first at index {fractional[0]}: {y[fractional[0]]}).")
    return y.astype(np.int64)


def _postfix(logs: dict, images: int, seconds: float) -> dict:
    return {**{k: f"{v:.4f}" for k, v in logs.items()}, "img/s": f"{images / max(seconds, 1e-9):.0f}"}


def _sum_metrics(per_step: list) -> dict:
    """Add up ``{name: (sum, weight)}`` over steps in float64 on the host."""
    total: dict = {}
    for metrics in per_step:
        for name, (s, w) in metrics.items():
            ts, tw = total.get(name, (0.0, 0.0))
            total[name] = (ts + np.float64(s), tw + np.float64(w))
    return total


def callback_keys(cbs: Iterable[Callback]) -> list[str]:
    """The key of each callback's state in a checkpoint: its class name, numbered from the second of a
    class on (``EarlyStopping``, ``EarlyStopping_1``), so the same callbacks find their state again
    whatever else is in the list."""
    seen: dict[str, int] = {}
    keys = []
    for cb in cbs:
        name = type(cb).__name__
        keys.append(f"{name}_{seen[name]}" if name in seen else name)
        seen[name] = seen.get(name, 0) + 1
    return keys


def _save(checkpointer, state: TrainState, cbs: list[Callback], logs: dict, stopped: bool) -> None:
    keys = callback_keys(cbs)
    meta = {"epoch": int(state.epoch), "step": int(state.step), "stopped": bool(stopped),
            "callbacks": {key: cb.get_state() for key, cb in zip(keys, cbs)}, "logs": logs}
    arrays = {key: cb.get_arrays() for key, cb in zip(keys, cbs) if cb.get_arrays() is not None}
    checkpointer.save(int(state.epoch), state, meta, metrics=logs, extra=arrays or None)


def restore_callbacks(cbs: Iterable[Callback], meta: Mapping) -> None:
    """Give callbacks the state a checkpoint's ``meta`` (with its arrays in ``meta["arrays"]``) saved."""
    cbs = list(cbs)
    states, arrays = meta.get("callbacks", {}), meta.get("arrays") or {}
    for key, cb in zip(callback_keys(cbs), cbs):
        if key in states:
            cb.set_state(states[key])
        if key in arrays:
            cb.set_arrays(arrays[key])
