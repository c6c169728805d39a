"""``Trainer``: Keras' compile/fit/evaluate/predict for fluxnet models, on jitted pure steps.

The shell around the pure steps (``steps.py``): batches from ``epoch_iterator.py`` (in-memory arrays, or
streams read by worker processes: ``fluxnet.data.streaming``), progress bars, callbacks, checkpoints.
Inside an epoch nothing waits on the device except the progress bar's periodic read of the latest loss;
each step function is compiled once per batch shape: full batches, and at most one more for an epoch's
last partial batch (evaluation pads it with a mask).
"""
from __future__ import annotations

import math
import numbers
import time
import warnings
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import numpy as np
import optax

from fluxnet import activations
from fluxnet import losses as losses_lib
from fluxnet import optimizers
from fluxnet.data.batching import BatchIterator
from fluxnet.data.checks import check_labels
from fluxnet.data.imbalance import class_weights_balanced
from fluxnet.data.streaming import (EvalFeed, SequentialFeed, SequentialPlan, SequentialStream, Stream, TrainFeed,
                                    is_streamable, read_batch, stream as as_stream)
from fluxnet.errors import ArgumentError, ArgumentTypeError, DataError, TrainingDivergedError, TrainingInterrupted
from fluxnet.models import Model
from fluxnet.registry import unknown_name_error
from fluxnet.train import loss_scale, lr_scale, saving, sharding
from fluxnet.train.callbacks import Callback, History, epoch_end_answer, replacement
from fluxnet.train.data_adapter import (SPARSE_LOSSES, as_xy, check_data, check_fit_counts, class_ids, num_rows,
                                       split_validation, validation_rows)
from fluxnet.train.epoch_iterator import EpochIterator, gather
from fluxnet.train.faults import CrashPoint
from fluxnet.train.objective import Objective
from fluxnet.train.state import TrainState, create_state
from fluxnet.train.steps import (REMAT, finalize, fuse_steps, make_eval_step, make_predict_step, make_train_step,
                                 sum_metrics)

PARALLEL = ("sharding", "pmap")
PROBE_ROWS = 32  # the examples of a stream read and checked before anything is traced
FEEDS = (TrainFeed, EvalFeed, SequentialFeed)  # streamed batches, in place of in-memory arrays


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

    ``loss``, ``optimizer`` and ``metrics`` are names, callables or optax transforms; for a model with
    several outputs ``loss``, ``metrics`` and ``loss_weights`` may be lists or dicts per output
    (``objective.py``). Every optimizer ends in a learning-rate scale (``lr_scale.py``) that the
    learning-rate callbacks change. Layers with
    ``trainable=False`` get exactly zero updates (``optax.set_to_zero``). ``param_groups`` maps layer
    names to group labels and ``optimizer`` then maps each label to its transform or name (e.g. a smaller
    learning rate for a pretrained backbone). ``augment(key, x, y) -> (x, y)`` runs on the device inside
    the train step. ``steps_per_execution > 1`` fuses that many steps per dispatch (unrolled); ``"auto"``
    measures at the start of the first fit whether fused steps are faster, for steps under 5 ms (a scan
    of 8, then 4 unrolled: :meth:`_choose_steps_per_execution`).
    ``grad_accum_steps`` k splits each batch into k micro-batches whose gradients add up to the
    batch's (the memory of a batch k times smaller; ``batch_size`` must divide by k); ``remat``
    ("none", "full", "layers") recomputes activations in the backward pass instead of keeping them
    (``steps.make_train_step``).

    ``parallel``: ``"sharding"`` (default) jits the step over a ``("data",)`` mesh: XLA all-reduces the
    gradients and BatchNormalization normalises over the global batch, so results equal one device's.
    ``"pmap"`` runs it under ``jax.pmap(axis_name="data")`` on a copy of the state per device, with
    gradients ``pmean``-ed and metrics ``psum``-ed; BatchNormalization then normalises with each
    device's own batch statistics and the moving statistics are averaged over devices after each step.
    """

    def __init__(self, model: Model, loss: str | Callable = "sparse_categorical_crossentropy",
                 optimizer: str | optax.GradientTransformation | Mapping = "adam", metrics: Any = (), *,
                 loss_weights: Any = None, augment: Callable | None = None, devices: Sequence | None = None,
                 steps_per_execution: int = 1, parallel: str = "sharding",
                 param_groups: Mapping[str, str] | None = None, grad_accum_steps: int = 1, remat: str = "none"):
        if not isinstance(model, Model):
            raise ArgumentTypeError(f"Trainer needs a fluxnet Model or Sequential, got {type(model).__name__}.")
        if parallel not in PARALLEL:
            raise unknown_name_error("parallel mode", parallel, PARALLEL)
        self.model = model
        self.objective = objective = Objective(model, loss, metrics, loss_weights)
        for output, name, fn in zip(model.outputs, objective.loss_names, objective.loss_fns):
            _warn_if_logits_mismatch(output, name, fn)
        inner = _optimizer(model, optimizer, param_groups)
        if any(layer.dtype_policy.needs_loss_scale for layer in _all_layers(model)):
            inner = loss_scale.dynamic(inner)  # float16 compute: Keras' LossScaleOptimizer
        self.tx = tx = lr_scale.with_scale(inner)
        # what model.save / ModelCheckpoint record to compile a loaded model again (None: not by name)
        self.compile_config = (saving.compile_config(loss, optimizer, metrics, loss_weights)
                               if param_groups is None and augment is None else None)
        self.mesh = sharding.data_mesh(devices)
        self.parallel = parallel
        if steps_per_execution != "auto" and (isinstance(steps_per_execution, bool) or not isinstance(
                steps_per_execution, numbers.Integral) or steps_per_execution < 1):
            raise ArgumentError(f"steps_per_execution must be an int >= 1 or 'auto', got {steps_per_execution!r}.")
        # "auto": chosen by measuring at the start of the first fit (_choose_steps_per_execution)
        self.steps_per_execution = None if steps_per_execution == "auto" else int(steps_per_execution)
        if isinstance(grad_accum_steps, bool) or not isinstance(grad_accum_steps, numbers.Integral) \
                or grad_accum_steps < 1:
            raise ArgumentError(f"grad_accum_steps must be an int >= 1, got {grad_accum_steps!r}.")
        if remat not in REMAT:
            raise unknown_name_error("remat mode", remat, REMAT)
        self.grad_accum_steps, self.remat = int(grad_accum_steps), remat
        if self.grad_accum_steps > 1 and any(getattr(fn, "keywords", {}).get("ignore_class") is not None
                                             for fn in objective.loss_fns):
            raise ArgumentError("grad_accum_steps > 1 cannot split a loss with ignore_class: each micro-batch would "
                                "average over its own valid positions, not the batch's; use grad_accum_steps=1.")
        self.batches = EpochIterator(self.mesh, parallel)
        replicated = sharding.replicated(self.mesh)
        # MixUp/CutMix turn labels into soft one-hot targets: train on the loss' dense equivalent.
        self.augment = augment
        self.train_loss_fns = dense = ([losses_lib.dense_equivalent(fn) for fn in objective.loss_fns]
                                       if getattr(augment, "mixes_labels", False) else None)
        train_step = make_train_step(model, objective, tx, augment, axis_name="data" if parallel == "pmap" else None,
                                     loss_fns=dense, grad_accum_steps=self.grad_accum_steps, remat=remat)
        single = sharding.batch_sharded(self.mesh)

        def compile_step(fn: Callable, batch_sharding: jax.sharding.Sharding) -> Callable:
            """``pmap``-ed, or jitted with the batch (numpy too) placed on ``batch_sharding`` and the
            state left on its own (replicated) sharding."""
            if parallel == "pmap":
                return jax.pmap(fn, axis_name="data", donate_argnums=0,
                                devices=list(self.mesh.devices.ravel()))
            return jax.jit(fn, in_shardings=(None, batch_sharding), donate_argnums=0, out_shardings=replicated)

        self.train_step = compile_step(train_step, single)
        self._fused = lambda k, scan=False: compile_step(fuse_steps(train_step, k, scan),
                                                         sharding.stacked_batch_sharded(self.mesh))
        self.fused_train_step = (self._fused(self.steps_per_execution)
                                 if (self.steps_per_execution or 1) > 1 else None)
        self.eval_step = jax.jit(make_eval_step(model, objective),
                                 in_shardings=(None, single), out_shardings=replicated)
        self.predict_step = jax.jit(make_predict_step(model), in_shardings=(None, single))
        self._jitted_init = jax.jit(self._init, out_shardings=replicated)

    # -------------------------------------------------------------------------------- state
    def _init(self, rng: jax.Array) -> TrainState:
        init_key, state_key = jax.random.split(rng)
        variables = self.model.init(init_key)
        return create_state(variables, self.tx.init(variables["params"]), state_key)

    def init(self, rng: jax.Array) -> TrainState:
        """A fresh train state (variables from ``model.init``), replicated over the devices. Jitted, so
        every leaf owns its buffer (the train step donates them); compiled once per Trainer."""
        return self._jitted_init(rng)

    def with_variables(self, state: TrainState, variables: Mapping) -> TrainState:
        """``state`` with its model variables replaced (e.g. a pretrained backbone's) and a fresh
        optimizer state for them."""
        new = state.with_variables(variables)
        new = new.replace(opt_state=self.tx.init(new.params))
        return sharding.owned_copy(new, sharding.replicated(self.mesh))  # own buffers: steps donate them

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and shardings of ``init``'s result (a checkpoint restore target)."""
        repl = sharding.replicated(self.mesh)
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=repl),
                            jax.eval_shape(self._init, jax.random.key(0)))

    # -------------------------------------------------------------------------------- checks
    def _num_classes(self) -> int | None:
        out = self.model.outputs
        return out[0].shape[-1] if len(out) == 1 else None

    def _batch_weights(self, rows: int, labels: Callable[[], np.ndarray], class_weight: Any,
                       sample_weight: np.ndarray | None):
        """Per-example weights of ``rows`` examples (Keras: class weights become sample weights; not both at
        once), or None; ``labels()`` gives their class ids where class weights need them."""
        if class_weight is None and sample_weight is None:
            return None
        if class_weight is not None and self.objective.multi:
            raise ArgumentError("class_weight is for models with one output (as Keras); weigh the examples of a "
                                "model with several outputs with sample_weight.")
        if class_weight is not None and sample_weight is not None:
            raise ArgumentError("Pass class_weight or sample_weight, not both (as Keras): fold the class "
                             "weights into the sample weights instead.")
        if sample_weight is not None:
            weights = np.asarray(sample_weight, np.float32)
            if weights.shape != (rows,):
                raise DataError(f"sample_weight must have shape ({rows},), got {weights.shape}.")
            bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
            if bad.size:
                raise DataError(f"sample_weight must be finite and >= 0: {bad.size} are not (first at index "
                                f"{bad[0]}: {weights[bad[0]]}).")
            return weights
        n, labels = self._num_classes(), labels()
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
            validation_data: Any = None, validation_split: float = 0.0, validation_batch_size: int | None = None,
            verbose: int = 1, callbacks: Iterable[Callback] = (), class_weight: Any = None,
            sample_weight: Any = None, shuffle: bool = True, oversample: bool = False, seed: int | None = None,
            checkpointer: Any = None, resume: Mapping | None = None,
            crash_at: CrashPoint | None = None, should_stop: Callable[[int], Any] | None = None
            ) -> tuple[TrainState, History]:
        """Train ``epochs`` more epochs; returns the new state and a Keras-like ``History``. The state
        passed in stays valid (the steps donate the buffers of a copy).

        ``data`` is ``(x, y)`` arrays, a data split, or streamed data (``fluxnet.data.stream``: a tfds data
        source, an ArrayRecord path, an image folder, a grain dataset or a ``Stream``), read batch by batch
        by worker processes into the same batches the arrays would give; ``validation_data`` likewise.
        Every example is trained once per epoch, the last partial batch too (as Keras). The shuffle of
        epoch ``e`` depends only on ``seed`` (default: derived from the state's key) and ``e``, and each
        step's randomness on the state's key and step, so a resumed run repeats an uninterrupted one
        exactly. ``validation_split`` holds out the last fraction of the rows, before shuffling (Keras).
        With ``checkpointer`` every epoch is saved (state, callback states, history, the data position:
        next epoch, seed, batch size, examples; ``stopped``: whether a callback ended training); ``resume``
        is the meta ``restore`` returned, to continue callbacks where they were (its data position must be
        this fit's). ``crash_at`` is a test hook (``faults``).
        ``class_weight`` (a dict, a sequence or ``"balanced"``) or ``sample_weight`` weigh each example
        as Keras does: the loss is ``sum(w * loss) / rows``, metrics are ``w``-weighted means.
        ``oversample=True`` redraws examples of the rarer classes each epoch up to the majority count.
        A NaN or inf epoch loss raises TrainingDivergedError (a FloatingPointError) before that epoch is saved.
        ``should_stop(step)`` is asked after every step (no device sync): a truthy answer (e.g. the
        signal that asked to stop) ends training at once with ``TrainingInterrupted``; the epoch under
        way is not saved, so a resume from the last checkpoint repeats it exactly.

        Callbacks (``callbacks.py``) see the state at each hook; ``on_train_begin`` and
        ``on_epoch_begin`` may return a replacement state, ``on_epoch_end`` ``True`` (stop) or one.
        """
        if seed is None:
            seed = int(np.asarray(jax.device_get(state.rng)).ravel()[-1]) % (2 ** 31)
        arrays, batches, validation_data = self._fit_inputs(
            data, epochs, batch_size, validation_data, validation_split, class_weight, sample_weight, oversample,
            shuffle, seed)
        if isinstance(validation_data, (Stream, SequentialStream)):  # one pipeline for every epoch's validation
            validation_data = self._eval_feed(validation_data, validation_batch_size or batch_size, "validation",
                                              True, epochs)
        feeds = [f for f in (arrays, validation_data) if isinstance(f, FEEDS)]
        # the steps donate their input buffers: train on a copy, so the caller's state stays valid
        state = sharding.owned_copy(state, sharding.replicated(self.mesh))
        if self.steps_per_execution is None:
            if self.parallel == "sharding":
                self._choose_steps_per_execution(state, arrays.probe() if isinstance(arrays, FEEDS) else gather(
                    arrays, np.arange(batches.batch_size) % num_rows(arrays["x"])))
            else:  # pmap's per-device layout is not measured: single steps
                self.steps_per_execution = 1
        callbacks = list(callbacks)
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise ArgumentTypeError(
                    f"Trainer.fit takes the Trainer's callbacks (fluxnet.callbacks.TrainerCallback, whose hooks "
                    f"receive the state); {type(cb).__name__} is not one. Keras-style callbacks (self.model) run in "
                    "model.fit, or wrap one with fluxnet.callbacks.as_trainer_callback(cb, model).")
        history = History()
        # BackupAndRestore (runs_last) runs after the others: it restores their states after their
        # on_train_begin and saves them after their on_epoch_end (the sort is stable)
        cbs = sorted([history, *callbacks], key=lambda cb: getattr(cb, "runs_last", False))
        self.fit_callbacks = cbs
        end = int(state.epoch) + epochs
        for cb in cbs:
            state = self._replaced(state, cb.on_train_begin(self, state))
        if resume is not None:
            restore_callbacks(cbs, resume)
            check_position(resume.get("data"), data_position(batches, seed, int(state.epoch)))
        batch_hooks = [cb for cb in cbs if type(cb).on_train_batch_end is not Callback.on_train_batch_end]
        try:
            for epoch in range(int(state.epoch), end):
                for cb in cbs:
                    state = self._replaced(state, cb.on_epoch_begin(epoch, state))
                batches.restore({"epoch": epoch, "step": 0})
                state, logs, halted = self._train_epoch(state, batches, arrays, epoch, verbose, crash_at,
                                                        should_stop, batch_hooks)
                if validation_data is not None:
                    val = self._evaluate_checked(state, validation_data, validation_batch_size or batch_size, 0)
                    logs.update({f"val_{k}": v for k, v in val.items()})
                logs["learning_rate"] = lr_scale.learning_rate(jax.device_get(state.opt_state))
                if verbose == 2 or (verbose and validation_data is not None):
                    print(f"Epoch {epoch + 1}: " + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
                state = state.replace(epoch=sharding.replicate(np.int32(epoch + 1), self.mesh))
                stop = halted
                for cb in cbs:
                    new, halt = epoch_end_answer(cb.on_epoch_end(epoch, logs, state))
                    state, stop = self._replaced(state, new), stop or halt
                if checkpointer is not None and not halted:  # an epoch cut short is no point to resume from
                    save_checkpoint(checkpointer, state, cbs, logs, stopped=stop,
                                    data=data_position(batches, seed, epoch + 1))
                if stop:
                    break
        finally:  # also on a failure: the last good checkpoint must be complete; stream workers stop
            for feed in feeds:
                feed.close()
            if checkpointer is not None:
                checkpointer.wait()
        return self.final_state(state, cbs), history

    def _choose_steps_per_execution(self, state: TrainState, host: dict) -> None:
        """``steps_per_execution="auto"``: time single steps on a copy of ``state`` and one full host
        batch; where a step is short enough for its dispatch to matter (under :data:`AUTO_FUSE_BELOW` s),
        try the fused programs of :data:`AUTO_FUSED` in turn and keep the first measured 3% faster a step
        (a scan of 8 steps, which compiles like one step and pays on dense models; else 4 unrolled steps,
        which pay on convolutions too). The compilation this adds is bounded: two programs at most, only
        for short steps."""
        batch = self.batches.place(host)
        single = median_step_seconds(self.train_step, state, batch)
        self.steps_per_execution, self.fused_train_step = 1, None
        if single >= AUTO_FUSE_BELOW:
            return
        for k, scan in AUTO_FUSED:
            fused = self._fused(k, scan)
            stacked = self.batches.place(jax.tree.map(lambda a: np.stack([a] * k), host), stacked=True)
            if median_step_seconds(fused, state, stacked, repeats=5) / k < 0.97 * single:
                self.steps_per_execution, self.fused_train_step = k, fused
                return

    def _replaced(self, state: TrainState, answer: Any) -> TrainState:
        """The state a callback hook returned (on the mesh, owning its buffers), else ``state``."""
        if replacement(answer) is None:
            return state
        return sharding.owned_copy(answer, sharding.replicated(self.mesh))

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
        self._fit_inputs(data, epochs, batch_size, validation_data, 0.0, class_weight, sample_weight, oversample,
                         shuffle=True, seed=0)

    def _fit_inputs(self, data, epochs, batch_size, validation_data, validation_split, class_weight, sample_weight,
                    oversample, shuffle, seed) -> tuple[dict | TrainFeed | SequentialFeed, Any, Any]:
        """The host arrays (or the feed of a stream), the batch plan and the validation data (checked
        arrays or a stream) of a ``fit``, after checking every argument."""
        check_fit_counts(epochs, batch_size)
        if validation_split and validation_data is not None:
            raise ArgumentError("Pass validation_data or validation_split, not both.")
        if is_streamable(data):
            return self._stream_fit_inputs(data, epochs, batch_size, validation_data, validation_split, class_weight,
                                           sample_weight, oversample, shuffle, seed)
        x, y = as_xy(data, "fit data", streams=True)
        if y is None:
            raise ArgumentError("fit needs targets: pass (x, y).")
        if validation_split:
            (x, y, sample_weight), validation_data = split_validation(x, y, sample_weight, validation_split)
        x, y = check_data(self.objective, self.model, x, y, "train")
        sharding.check_batch_size(batch_size, self.mesh)
        arrays = {"x": x, "y": y}
        weights = self._batch_weights(num_rows(y), lambda: class_ids(y), class_weight, sample_weight)
        if weights is not None:
            arrays["weight"] = weights
        batches = self._plan(num_rows(x), class_ids(y) if oversample else None, batch_size, shuffle, seed, oversample)
        return arrays, batches, self._validation_inputs(validation_data)

    def _plan(self, n: int, labels: np.ndarray | None, batch_size: int, shuffle: bool, seed: int,
              oversample: bool) -> BatchIterator:
        """The batches of a fit on ``n`` examples (``labels``: their class ids, to oversample)."""
        def batches_of(size: int) -> BatchIterator:
            return BatchIterator(np.arange(n), labels, size, shuffle=shuffle, seed=seed,
                                 drop_remainder=False, oversample=oversample)

        batches = batches_of(batch_size)
        if batches.examples_per_epoch < batch_size:  # fewer examples than a batch: one smaller batch (Keras)
            devices = self.mesh.devices.size * self.grad_accum_steps
            batches = batches_of(-(-batches.examples_per_epoch // devices) * devices)
        self._check_accumulation(batches.batch_size)
        return batches

    def _check_accumulation(self, batch_size: int) -> None:
        if batch_size % self.grad_accum_steps:
            raise ArgumentError(f"batch_size {batch_size} does not split into grad_accum_steps="
                                f"{self.grad_accum_steps} equal micro-batches; use a multiple of it.")

    def _validation_inputs(self, validation_data: Any) -> Any:
        """``validation_data`` checked: arrays, or a stream (its first examples checked)."""
        if validation_data is None:
            return None
        if is_streamable(validation_data):
            return self._checked_stream(validation_data, "validation", targets=True)
        vx, vy = as_xy(validation_data, "validation_data", streams=True)
        if vy is None:
            raise ArgumentError("validation_data needs targets: pass (x_val, y_val).")
        return check_data(self.objective, self.model, vx, vy, "validation")

    # -------------------------------------------------------------------------------- streams
    def _stream_fit_inputs(self, data, epochs, batch_size, validation_data, validation_split, class_weight,
                           sample_weight, oversample, shuffle, seed) -> tuple[TrainFeed | SequentialFeed, Any, Any]:
        """``_fit_inputs`` for streamed data: the stream's first examples are checked here, every batch as
        it is read (``_stream_check``); labels are read up front only for class weights and oversampling."""
        s = as_stream(data)
        if validation_split:
            if isinstance(s, SequentialStream):
                raise ArgumentError("validation_split needs random access, which a grain IterDataset lacks; pass "
                                    "validation_data (or a MapDataset).")
            head, tail = validation_rows(len(s), validation_split)
            sample_weight = None if sample_weight is None else np.asarray(sample_weight)[head]
            s, validation_data = s.take(head), s.take(tail)
        s = self._checked_stream(s, "train", targets=True)
        sharding.check_batch_size(batch_size, self.mesh)
        validation = self._validation_inputs(validation_data)
        check = self._stream_check("train", targets=True)
        if isinstance(s, SequentialStream):
            given = [name for name, v in (("class_weight", class_weight), ("sample_weight", sample_weight),
                                          ("oversample", oversample or None)) if v is not None]
            if given:
                raise ArgumentError(f"{', '.join(given)} need every example's label up front, but a grain IterDataset "
                                    "is read in order only; pass a grain MapDataset (or weigh in its elements).")
            self._check_accumulation(batch_size)
            plan = SequentialPlan(batch_size)
            return SequentialFeed(s, batch_size, self.batches.share(batch_size), False, True, check, plan), plan, \
                validation
        if (class_weight is not None or oversample) and self.objective.loss_names[0] in SPARSE_LOSSES:
            check_labels(s.labels, self._num_classes(), split="train")
        weights = self._batch_weights(len(s), lambda: s.labels, class_weight, sample_weight)
        plan = self._plan(len(s), s.labels if oversample else None, batch_size, shuffle, seed, oversample)
        return TrainFeed(s, plan, weights, self.batches.share(plan.batch_size), epochs, check), plan, validation

    def _checked_stream(self, data: Any, split: str, targets: bool) -> Stream | SequentialStream:
        """``data`` as a stream whose first examples pass the checks of in-memory data."""
        s = as_stream(data)
        if self.parallel == "pmap" and jax.process_count() > 1:
            raise ArgumentError("parallel='pmap' across processes takes in-memory data; stream with "
                                "parallel='sharding'.")
        if isinstance(s, SequentialStream):
            probe = next(iter(SequentialFeed(s, PROBE_ROWS, slice(None), False, targets, lambda b: b).batches()),
                         None)
            if probe is None:
                raise DataError(f"The {split} data (a grain IterDataset) holds no examples.")
        else:
            probe = read_batch(s, np.arange(min(len(s), PROBE_ROWS)), None, None, targets)
        self._stream_check(split, targets)(probe)
        return s

    def _stream_check(self, split: str, targets: bool) -> Callable[[dict], dict]:
        """The checks and structuring of in-memory data (``check_data``) for each streamed host batch."""
        def check(batch: dict) -> dict:
            if targets and "y" not in batch:
                raise ArgumentError(f"The {split} data needs targets, but the streamed examples have none (give "
                                    "(x, y) elements, or labelled records).")
            x, y = check_data(self.objective, self.model, batch["x"], batch.get("y"), split)
            return {**batch, "x": x, "y": y} if targets else {**batch, "x": x}

        return check

    def _eval_feed(self, s: Stream | SequentialStream, batch_size: int, split: str, targets: bool,
                   repeats: int = 1) -> EvalFeed | SequentialFeed:
        """The evaluation (or, without ``targets``, prediction) batches of a checked stream, in the
        padded batch shape of in-memory data; ``repeats`` passes (a fit's epochs) share its workers."""
        size = self.batches.eval_batch_size(None if isinstance(s, SequentialStream) else len(s), batch_size)
        check = self._stream_check(split, targets)
        if isinstance(s, SequentialStream):
            return SequentialFeed(s, size, self.batches.share(size), True, targets, check)
        return EvalFeed(s, size, self.batches.share(size), targets, repeats, check)

    def _train_epoch(self, state, batches: BatchIterator | SequentialPlan, arrays: dict | TrainFeed | SequentialFeed,
                     epoch: int, verbose: int,
                     crash_at: CrashPoint | None = None, should_stop: Callable[[int], Any] | None = None,
                     batch_hooks: Sequence[Callback] = ()):
        from tqdm.auto import tqdm

        steps, k = batches.steps_per_epoch, self.steps_per_execution
        crash_step = (max(1, steps // 2) if crash_at is not None and crash_at.mid_epoch(epoch + 1) and steps
                      else None)  # (an IterDataset's first epoch has no known length)
        first_step = int(state.step)
        bar = tqdm(total=steps, desc=f"Epoch {epoch + 1}", unit="step", disable=verbose != 1, leave=True,
                   dynamic_ncols=True)
        if self.parallel == "pmap":
            state = self._per_device(state)
        sums, start, last_print, done, halted = [], time.perf_counter(), 0.0, 0, False
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
                    raise interrupted(reason, epoch)
            if batch_hooks:  # Keras' batch-level hooks: a device sync per step, only when asked for
                running = finalize(sum_metrics(self._host_metrics(sums)))
                halted = any([cb.on_train_batch_end(done - 1, running) is True for cb in batch_hooks])
            now = time.perf_counter()
            if verbose == 1 and now - last_print > 0.5:  # the only sync inside an epoch
                last_print = now
                bar.set_postfix(_postfix(finalize(self._host_metrics(sums[-1:])[0]), done * batches.batch_size,
                                         now - start), refresh=False)
            bar.update(n)
            if halted:  # a batch hook (TerminateOnNaN) ended training: the rest of the epoch is skipped
                break
        if self.parallel == "pmap":
            state = self._unreplicate(state)
        logs = self._ordered(finalize(sum_metrics(self._host_metrics(sums))))
        bar.set_postfix(_postfix(logs, batches.examples_per_epoch or done * batches.batch_size,
                                 time.perf_counter() - start))
        bar.close()
        if not halted and not math.isfinite(logs["loss"]):
            raise diverged(logs["loss"], epoch, int(state.step))
        return state, logs, halted

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
        """Loss and metrics averaged over every real example of ``data`` (inference mode), in Keras'
        log order (``objective.log_names``). ``data`` as ``fit`` takes it, streamed data included."""
        if is_streamable(data):
            feed = self._eval_feed(self._checked_stream(data, "evaluation", True), batch_size, "evaluation", True)
            try:
                return self._evaluate_checked(state, feed, batch_size, verbose)
            finally:
                feed.close()
        x, y = as_xy(data, "evaluate data", streams=True)
        if y is None:
            raise ArgumentError("evaluate needs targets: pass (x, y).")
        return self._evaluate_checked(state, check_data(self.objective, self.model, x, y, "evaluation"), batch_size,
                                      verbose)

    def _evaluate_checked(self, state: TrainState, xy: tuple | EvalFeed | SequentialFeed, batch_size: int,
                          verbose: int) -> dict[str, float]:
        """Evaluate checked arrays ``(x, y)``, or a stream's feed (one pass)."""
        batches = (self.batches.streamed(xy.batches()) if isinstance(xy, FEEDS)
                   else self.batches.padded({"x": xy[0], "y": xy[1]}, batch_size))
        sums = [self.eval_step(state, b) for b in batches]
        logs = self._ordered(finalize(sum_metrics(_to_host(sums))))
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        return logs

    def _ordered(self, logs: dict) -> dict:
        """Logs in Keras' order (``objective.log_names``): the host copy sorts dict keys."""
        return {k: logs[k] for k in self.objective.log_names()}

    def predict(self, state: TrainState, x: Any, batch_size: int = 256) -> Any:
        """Model outputs for every example of ``x`` (inference mode), as numpy, structured like the
        model's outputs. ``x`` is arrays or streamed data (its targets, if any, are not read)."""
        if is_streamable(x):
            feed = self._eval_feed(self._checked_stream(x, "predict", False), batch_size, "predict", False)
            try:
                host = sharding.gathered([(self.predict_step(state, b["x"]), b["mask"])
                                          for b in self.batches.streamed(feed.batches())])
            finally:
                feed.close()
        else:
            x, _ = check_data(self.objective, self.model, x, None, "predict")
            host = sharding.gathered([(self.predict_step(state, b["x"]), b["mask"])
                                      for b in self.batches.padded({"x": x}, batch_size)])
        return jax.tree.map(lambda *parts: np.concatenate(parts), *[
            jax.tree.map(lambda o, m=np.asarray(m): o[m], o) for o, m in host])


def _to_host(tree: Any) -> Any:
    """``jax.device_get`` for many small arrays (per-step metrics): ``np.asarray`` per leaf costs ~1 us,
    ``device_get`` ~9 us per array."""
    return jax.tree.map(np.asarray, tree)


PROBABILITY_LOSSES = ("categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy", "bce")
PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid")


def _warn_if_logits_mismatch(output, loss_name: str, loss_fn: Callable) -> None:
    """Warn once when a crossentropy's ``from_logits`` contradicts the activation of the output it
    trains: logits into a probability loss, or softmax/sigmoid outputs into a ``from_logits=True``
    loss. Both train badly without an error (Keras is silent about it)."""
    if loss_name not in PROBABILITY_LOSSES:
        return
    layer = output.layer
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


AUTO_FUSE_BELOW = 5e-3  # steps_per_execution="auto" fuses steps that take less (s)
AUTO_FUSED = ((8, True), (4, False))  # its candidates in turn: (steps, scanned)


def median_step_seconds(step: Callable, state: TrainState, batch: dict, repeats: int = 7) -> float:
    """The median wall time of ``step`` on copies of ``state`` (the steps donate it), after a warm-up
    that compiles it."""
    times = []
    for i in range(repeats + 1):
        probe = sharding.owned_copy(state, jax.tree.map(lambda a: a.sharding, state))
        jax.block_until_ready(probe)
        start = time.perf_counter()
        jax.block_until_ready(step(probe, batch))
        if i:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def interrupted(reason: Any, epoch: int) -> TrainingInterrupted:
    """The error for ``should_stop``'s truthy ``reason`` (a signal) during 0-based ``epoch``."""
    done_text = f"epoch {epoch} was the last one completed" if epoch else "no epoch was completed"
    return TrainingInterrupted(f"Training stopped by {getattr(reason, 'name', reason)} in epoch {epoch + 1} "
                               f"({done_text}).", exit_code=128 + int(reason) if isinstance(reason, int) else 1)


def diverged(loss: float, epoch: int, step: int) -> TrainingDivergedError:
    """The error for a non-finite epoch loss (the epoch is not saved)."""
    return TrainingDivergedError(
        f"The training loss became {loss} in epoch {epoch + 1} (step {step}); training stopped and this epoch "
        "was not saved, so the last checkpoint is the last good state. Lower the learning rate, clip gradients "
        "(optimizer.clipnorm) or check the data.")


def _all_layers(model: Model) -> Iterable:
    """Every layer of ``model``, recursively into nested models."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, Model):
            yield from _all_layers(layer)


def _postfix(logs: dict, images: int, seconds: float) -> dict:
    return {**{k: f"{v:.4f}" for k, v in logs.items()}, "img/s": f"{images / max(seconds, 1e-9):.0f}"}


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


def save_checkpoint(checkpointer, state: TrainState, cbs: list[Callback], logs: dict, stopped: bool,
                    data: Mapping | None = None) -> None:
    """One epoch's checkpoint: the state, each callback's state and arrays, the logs, whether it stopped,
    and where given the data position (:func:`data_position`)."""
    keys = callback_keys(cbs)
    meta = {"epoch": int(state.epoch), "step": int(state.step), "stopped": bool(stopped),
            "callbacks": {key: cb.get_state() for key, cb in zip(keys, cbs)}, "logs": logs,
            **({} if data is None else {"data": dict(data)})}
    arrays = {key: cb.get_arrays() for key, cb in zip(keys, cbs) if cb.get_arrays() is not None}
    checkpointer.save(int(state.epoch), state, meta, metrics=logs, extra=arrays or None)


def data_position(batches: BatchIterator | SequentialPlan, seed: int, epoch: int) -> dict:
    """Where a fit's data stands at the start of 0-based ``epoch``: with the seed, the batch size and
    the examples of an epoch, its batches are determined (each epoch's order is a pure function of the
    seed and the epoch, streamed or not), so a resumed fit reads exactly the batches it would have."""
    return {"epoch": int(epoch), "step": 0, "seed": int(seed), "batch_size": int(batches.batch_size),
            "examples": batches.examples_per_epoch}


def check_position(saved: Mapping | None, current: Mapping) -> None:
    """Refuse to resume from a checkpoint whose data position (:func:`data_position`) is not this fit's:
    its batches would differ. Checkpoints written before positions were recorded pass."""
    if saved is None:
        return
    differ = [k for k in ("epoch", "seed", "batch_size", "examples")
              if saved.get(k) is not None and current[k] is not None and saved.get(k) != current[k]]
    if differ:
        raise DataError("The checkpoint to resume from was written at another data position ("
                        + ", ".join(f"{k} {saved[k]}, now {current[k]}" for k in differ)
                        + "): the resumed fit would not see the batches the interrupted one would have. Resume with "
                        "the same data, seed and batch size.")


def restore_callbacks(cbs: Iterable[Callback], meta: Mapping) -> None:
    """Give callbacks the state a checkpoint's ``meta`` (with its arrays in ``meta["arrays"]``) saved."""
    cbs = list(cbs)
    states, arrays = meta.get("callbacks", {}), meta.get("arrays") or {}
    for key, cb in zip(callback_keys(cbs), cbs):
        if key in states:
            cb.set_state(states[key])
        if key in arrays:
            cb.set_arrays(arrays[key])
