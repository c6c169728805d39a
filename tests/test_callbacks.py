"""Keras' callbacks (``fx.callbacks``): each one's decisions against Keras' own class driven with the
same logs where Keras can run the scenario cheaply, and its effect on a real ``Trainer.fit`` of a tiny
Dense model (learning-rate scales on a schedule without recompiling, checkpoints, an interrupted fit
that BackupAndRestore resumes bit for bit, Keras-style callbacks through the adapter)."""
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fluxnet as fx
from fluxnet import callbacks as cbs
from fluxnet import layers
from fluxnet.errors import ArgumentError, ConfigError
from fluxnet.train import lr_scale, saving

os.environ.setdefault("KERAS_BACKEND", "jax")
LOGITS_CE = fx.losses.get("sparse_categorical_crossentropy", from_logits=True)
NAN = float("nan")

# The Trainer change these tests need (trainer.fit_callbacks, runs_last callbacks run last, a batch hook's
# True ends training, on_epoch_end's (state, True)); delete this marker with that change.


def dense_model():
    return fx.Sequential([layers.Input((8,)), layers.Dense(16, activation="relu"), layers.Dense(4)])


def leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    y = (x[:, :4].argmax(-1)).astype(np.int32)
    return (x[:160], y[:160]), (x[160:], y[160:])


@pytest.fixture(scope="module")
def trainer():
    """Adam with fluxnet's injected learning rate (1e-2): the learning rate is base x scale."""
    return fx.Trainer(dense_model(), loss=LOGITS_CE, optimizer=fx.optimizers.get("adam", 1e-2))


@pytest.fixture(scope="module")
def optax_trainer():
    """An opaque optax transform: the learning rate is the scale alone."""
    return fx.Trainer(dense_model(), loss=LOGITS_CE, optimizer=optax.adam(1e-2))


def fit(trainer, data, epochs, callbacks=(), state=None):
    train, val = data
    state = trainer.init(jax.random.key(0)) if state is None else state
    return trainer.fit(state, train, epochs=epochs, batch_size=32, validation_data=val, verbose=0,
                       callbacks=callbacks)


def keras():
    return pytest.importorskip("keras")


class KerasModel:
    """What Keras' callbacks touch of a model: an optimizer whose learning rate is a float32 variable,
    ``stop_training`` and the saving methods (recorded)."""

    class Optimizer:
        def __init__(self, learning_rate):
            self.learning_rate = learning_rate

        @property
        def learning_rate(self):
            return self._lr

        @learning_rate.setter
        def learning_rate(self, value):
            self._lr = np.float32(value)

    def __init__(self, learning_rate=1e-2):
        self.optimizer, self.stop_training, self.saved = self.Optimizer(learning_rate), False, []

    def save_weights(self, path, overwrite=True):
        self.saved.append(path)

    save = save_weights


# ------------------------------------------------------------------------------------------ learning rate


@pytest.mark.parametrize("options, values", [
    ({"patience": 2}, [1.0, 0.9, 0.95, 0.93, 0.92, 0.91, 0.8, 0.85, 0.86, 0.87, 0.88]),
    ({"patience": 1, "cooldown": 2, "factor": 0.5}, [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 0.5, 0.6, 0.7, 0.8]),
    ({"patience": 1, "min_lr": 8.4e-5, "factor": 0.2}, [1.0] * 8),  # min_lr an ulp off via the scale
    ({"patience": 1, "min_delta": 0.05}, [1.0, 0.97, 0.9, 0.88, 0.87, NAN, 0.5, NAN]),
    ({"patience": 2, "mode": "max", "monitor": "val_accuracy"}, [0.1, 0.3, 0.2, 0.3, 0.25, 0.28, 0.4, 0.3]),
])
@pytest.mark.parametrize("which, initial_lr", [("trainer", 1e-2), ("optax_trainer", 1.0)], ids=["named", "optax"])
def test_reduce_lr_on_plateau_matches_keras(options, values, which, initial_lr, request):
    """The same monitored values give Keras' learning rates and counters, with the rate as base x
    scale (fluxnet's adam) or the scale alone (an opaque optax transform)."""
    options = {"monitor": "val_loss", **options}
    trainer = request.getfixturevalue(which)
    state = trainer.init(jax.random.key(0))
    ours, theirs = cbs.ReduceLROnPlateau(**options), keras().callbacks.ReduceLROnPlateau(**options)
    model = KerasModel(initial_lr)
    theirs.set_model(model)
    ours.on_train_begin(trainer, state)
    theirs.on_train_begin()
    for epoch, value in enumerate(values):
        replaced = ours.on_epoch_end(epoch, {options["monitor"]: value}, state)
        state = state if replaced is None else replaced
        theirs.on_epoch_end(epoch, {options["monitor"]: value})
        assert lr_scale.learning_rate(state.opt_state) == pytest.approx(float(model.optimizer.learning_rate),
                                                                        rel=1e-6), (options, epoch)
        assert (ours.wait, ours.cooldown_counter) == (theirs.wait, theirs.cooldown_counter), (options, epoch)
        assert ours.best == pytest.approx(None if theirs.best is None else float(theirs.best), nan_ok=True)
    restored = cbs.ReduceLROnPlateau(**options)
    restored.set_state(ours.get_state())
    assert restored.get_state() == ours.get_state()
    with pytest.raises(ArgumentError, match="factor >= 1.0"):
        cbs.ReduceLROnPlateau(factor=1.5)
    with pytest.raises(ConfigError, match="monitors 'val_loss', which is not logged.*'loss'"):
        cbs.ReduceLROnPlateau().on_epoch_end(0, {"loss": 1.0}, state)


def test_learning_rate_scheduler_matches_keras(trainer, data):
    schedules = [lambda epoch, lr: lr if epoch < 2 else lr * float(np.exp(-0.1)),
                 lambda epoch: 1e-3 / (epoch + 1),               # Keras' old one-argument API
                 lambda epoch, lr: np.float32(lr * 0.5)]
    for schedule in schedules:
        state = trainer.init(jax.random.key(0))
        ours, theirs = cbs.LearningRateScheduler(schedule), keras().callbacks.LearningRateScheduler(schedule)
        model = KerasModel(1e-2)
        theirs.set_model(model)
        for epoch in range(5):
            state = ours.on_epoch_begin(epoch, state)
            theirs.on_epoch_begin(epoch)
            assert lr_scale.learning_rate(state.opt_state) == pytest.approx(float(model.optimizer.learning_rate),
                                                                            rel=1e-6)
    _, history = fit(trainer, data, 3, [cbs.LearningRateScheduler(lambda epoch, lr: 0.0 if epoch == 1 else 1e-3)])
    assert history.history["learning_rate"] == pytest.approx([1e-3, 0.0, 1e-3], rel=1e-6)
    with pytest.raises(ArgumentError, match="must return a float.*epoch 0 it returned 1 \\(int\\)"):
        cbs.LearningRateScheduler(lambda epoch, lr: 1).on_epoch_begin(0, state)
    with pytest.raises(ArgumentError, match="learning rate to -0.1; it must be a number >= 0"):
        cbs.LearningRateScheduler(lambda epoch, lr: -0.1).on_epoch_begin(0, state)


def test_reduce_lr_on_plateau_scales_a_cosine_schedule_without_recompiling(data):
    """On an optax cosine schedule: the scale halves at each plateau, the logged rate is the schedule's
    times the scale, the updates change from the first reduction on and nothing recompiles."""
    schedule = optax.cosine_decay_schedule(0.05, decay_steps=40)
    t = fx.Trainer(dense_model(), loss=LOGITS_CE, optimizer=fx.optimizers.get("sgd", schedule))
    plain, plain_history = fit(t, data, 3)
    compiled = t.train_step._cache_size()
    reduce = cbs.ReduceLROnPlateau(monitor="loss", mode="max", patience=1, factor=0.5, min_delta=0.0)
    state, history = fit(t, data, 3, [reduce])
    assert t.train_step._cache_size() == compiled
    assert lr_scale.get_scale(state.opt_state) == 0.25  # reduced after epochs 2 and 3
    rates = plain_history.history["learning_rate"]
    assert rates[0] > rates[1] > rates[2] > 0  # the schedule decays
    np.testing.assert_allclose(history.history["learning_rate"], [rates[0], rates[1], rates[2] / 2], rtol=1e-6)
    assert history.history["loss"][:2] == plain_history.history["loss"][:2]
    assert history.history["loss"][2] != plain_history.history["loss"][2]
    assert not leaves_equal(state.params, plain.params)


# ------------------------------------------------------------------------------------------ logs


def test_csv_logger_writes_what_keras_writes(tmp_path):
    epochs = [{"loss": 0.5, "accuracy": 0.25, "learning_rate": 0.01},
              {"loss": 0.25, "accuracy": 0.5, "learning_rate": 0.001},
              {"loss": NAN, "accuracy": 1 / 3, "learning_rate": 0.001}]
    validated = [{**logs, "val_loss": logs["loss"] * 2} for logs in epochs]
    def ours(path, runs, **options):
        logger = cbs.CSVLogger(path, **options)
        for run in runs:
            logger.on_train_begin(None, None)
            for epoch, logs in enumerate(run):
                logger.on_epoch_end(epoch, dict(logs), None)
            logger.on_train_end(None)

    def theirs(path, runs, **options):
        logger = keras().callbacks.CSVLogger(path, **options)
        for run in runs:
            logger.on_train_begin()
            for epoch, logs in enumerate(run):
                logger.on_epoch_end(epoch, dict(logs))
            logger.on_train_end()

    for options, runs in [({}, [epochs]), ({"separator": ";"}, [validated]),
                          ({"append": True}, [epochs, epochs[1:]]), ({}, [validated, epochs])]:
        for write in (ours, theirs):
            (tmp_path / write.__name__).unlink(missing_ok=True)
            write(tmp_path / write.__name__, runs, **options)
        assert (tmp_path / "ours").read_bytes() == (tmp_path / "theirs").read_bytes(), options
        if options == {"separator": ";"}:
            assert (tmp_path / "ours").read_text().startswith(
                "epoch;accuracy;learning_rate;loss;val_loss\n0;0.25;0.01;0.5;1.0\n")


def test_terminate_on_nan_decides_per_batch(capsys):
    stop = cbs.TerminateOnNaN()
    assert stop.on_train_batch_end(0, {"loss": 1.0}) is None
    assert stop.on_train_batch_end(3, {"loss": math.inf}) is True
    assert capsys.readouterr().out == "Batch 3: Invalid loss, terminating training\n"
    with pytest.raises(FloatingPointError, match="NaN or Inf loss encountered at batch 2"):
        cbs.TerminateOnNaN(raise_error=True).on_train_batch_end(2, {"loss": NAN})


def test_terminate_on_nan_ends_the_fit_without_an_error(data, capsys):
    """A NaN loss in the 4th step of the second epoch: the fit returns after that step with the
    history of both epochs (the second NaN), where without the callback it raises."""
    (x, y), _ = data
    x, y = x[:128], np.where(np.arange(128) == 100, 3, np.minimum(y[:128], 2))  # one 3, in the 4th batch
    t = fx.Trainer(dense_model(), loss=lambda y_true, y_pred: jnp.where(y_true == 3, jnp.nan,
                                                                        LOGITS_CE(y_true, y_pred)))
    state = t.init(jax.random.key(0))
    with pytest.raises(FloatingPointError, match="loss became nan in epoch 1"):
        t.fit(state, (x, y), epochs=1, batch_size=32, shuffle=False, verbose=0)
    state, _ = t.fit(state, (x[:96], y[:96]), epochs=1, batch_size=32, verbose=0)
    state, history = t.fit(state, (x, y), epochs=3, batch_size=32, shuffle=False,
                           callbacks=[cbs.TerminateOnNaN()], verbose=0)
    assert history.epoch == [1] and math.isnan(history.history["loss"][0])
    assert int(state.step) == 3 + 4 and int(state.epoch) == 2
    assert "Batch 3: Invalid loss, terminating training" in capsys.readouterr().out


def test_lambda_callback_calls_with_keras_signatures(trainer, data):
    calls = []
    plain = cbs.LambdaCallback(on_train_begin=lambda logs: calls.append(("train_begin", logs)),
                               on_epoch_begin=lambda epoch, logs: calls.append(("epoch_begin", epoch, logs)),
                               on_epoch_end=lambda epoch, logs: calls.append(("epoch_end", epoch, sorted(logs))),
                               on_train_end=lambda logs: calls.append(("train_end", sorted(logs))))
    batches = cbs.LambdaCallback(on_batch_end=lambda batch, logs: calls.append(("batch", batch, sorted(logs))))
    assert type(plain).on_train_batch_end is cbs.TrainerCallback.on_train_batch_end  # no sync per step
    assert isinstance(batches, cbs.LambdaCallback)
    fit(trainer, data, 2, [plain, batches])
    keys = ["learning_rate", "loss", "val_loss"]

    def epoch(e):
        return [("epoch_begin", e, {}), *[("batch", b, ["loss"]) for b in range(5)], ("epoch_end", e, keys)]

    assert calls == [("train_begin", {}), *epoch(0), *epoch(1), ("train_end", keys)]
    with pytest.raises(ArgumentError, match="on_train_batch_begin, on_test_end, which the Trainer never calls"):
        cbs.LambdaCallback(on_train_batch_begin=print, on_test_end=print)


# ------------------------------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize("options, values", [
    ({"save_best_only": True}, [1.0, 0.9, 0.95, 0.9, 0.8, NAN, 0.7]),
    ({"save_best_only": True, "mode": "max", "monitor": "val_accuracy", "initial_value_threshold": 0.3},
     [0.1, 0.4, 0.35, 0.5, 0.5, 0.6]),
    ({}, [1.0, 0.5, 2.0]),
])
def test_model_checkpoint_saves_when_keras_does(options, values, trainer, tmp_path):
    state = trainer.init(jax.random.key(0))
    monitor = options.get("monitor", "val_loss")
    pattern = str(tmp_path / ("{epoch:02d}-{%s:.2f}.weights.h5" % monitor))
    ours = cbs.ModelCheckpoint(pattern, save_weights_only=True, **options)
    theirs = keras().callbacks.ModelCheckpoint(pattern, save_weights_only=True, **options)
    model = KerasModel()
    theirs.set_model(model)
    ours.on_train_begin(trainer, state)
    for epoch, value in enumerate(values):
        ours.on_epoch_end(epoch, {monitor: value, "loss": 1.0}, state)
        theirs.on_epoch_end(epoch, {monitor: value, "loss": 1.0})
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in model.saved)
    loaded = saving.load_variables(model.saved[-1], trainer.model.abstract_variables())
    assert leaves_equal(loaded, state.variables)


def test_model_checkpoint_checks_its_arguments(trainer, tmp_path):
    state = trainer.init(jax.random.key(0))
    with pytest.raises(ArgumentError, match="only save_freq='epoch' is supported"):
        cbs.ModelCheckpoint(tmp_path / "m", save_freq=100)
    with pytest.raises(ConfigError, match="ModelCheckpoint monitors 'val_loss', which is not logged"):
        cbs.ModelCheckpoint(tmp_path / "m", save_best_only=True).on_epoch_end(0, {"loss": 1.0}, state)
    with pytest.raises(ConfigError, match="cannot fill in its filepath .*val_acc.*'loss'"):
        cbs.ModelCheckpoint(str(tmp_path / "{val_acc}")).on_epoch_end(0, {"loss": 1.0}, state)
    assert not os.listdir(tmp_path)


def test_model_checkpoint_saves_a_model_that_loads(trainer, data, tmp_path):
    state, _ = fit(trainer, data, 2, [cbs.ModelCheckpoint(str(tmp_path / "model-{epoch}"))])
    assert sorted(os.listdir(tmp_path)) == ["model-1", "model-2"]
    ckpt, step = saving.checkpointer(tmp_path / "model-2")
    restored, _, _ = ckpt.restore(step, trainer.abstract_state())
    ckpt.close()
    assert leaves_equal(restored, state)


def test_backup_and_restore_resumes_an_interrupted_fit_exactly(trainer, data, tmp_path):
    """A fit of 5 epochs that fails in epoch 4's on_epoch_end (after the CSV row, before the backup),
    run again the same way: only epochs 4-5 train, and the state (variables, optimizer state with the
    learning-rate scale, step, rng), the history, the callbacks' states and the CSV file equal an
    uninterrupted fit's bit for bit; the backup is gone afterwards."""
    def callbacks(csv, *extra):
        return [cbs.EarlyStopping(patience=10, restore_best_weights=True),
                cbs.ReduceLROnPlateau(monitor="loss", mode="max", patience=1, factor=0.5),
                cbs.CSVLogger(tmp_path / csv), *extra]

    straight_callbacks = callbacks("straight.csv")
    straight, straight_history = fit(trainer, data, 5, straight_callbacks)

    def crash(epoch, logs):
        if epoch == 3:
            raise RuntimeError("interrupted")

    backup = tmp_path / "backup"
    initial = trainer.init(jax.random.key(0))
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(trainer, data, 5, [cbs.BackupAndRestore(backup), *callbacks("resumed.csv", cbs.LambdaCallback(
            on_epoch_end=crash))], state=initial)
    assert os.listdir(backup) == ["3"]
    resumed_callbacks, trained = callbacks("resumed.csv"), []
    count = cbs.LambdaCallback(on_epoch_begin=lambda epoch, logs: trained.append(epoch))
    resumed, resumed_history = fit(trainer, data, 5, [cbs.BackupAndRestore(backup), *resumed_callbacks, count],
                                   state=initial)
    assert trained == [3, 4]
    assert leaves_equal(resumed, straight) and int(resumed.epoch) == 5
    assert resumed_history.history == straight_history.history and resumed_history.epoch == [0, 1, 2, 3, 4]
    assert [c.get_state() for c in resumed_callbacks[:2]] == [c.get_state() for c in straight_callbacks[:2]]
    assert (tmp_path / "resumed.csv").read_bytes() == (tmp_path / "straight.csv").read_bytes()
    assert not backup.exists()


# ------------------------------------------------------------------------------------------ Keras-style


class Shell:
    """The Keras shell's side of the adapter: the state a hook sees, ``stop_training`` and a learning
    rate setter (as ``model.optimizer.learning_rate = ...``)."""

    stop_training = False

    def _set_fit_state(self, state):
        self._state = state

    def _take_fit_state(self):
        return self._state

    def set_learning_rate(self, value):
        self._state = lr_scale.set_scale(self._state, value / lr_scale.base_learning_rate(self._state.opt_state))


def test_keras_style_callbacks_act_through_the_model(trainer, data):
    """A Keras-style callback zeroes the learning rate at epoch 1's start (the variables stop changing)
    and stops training at epoch 2's end; Keras' own callback classes are adapted too."""
    seen = []

    class Freezer(cbs.Callback):
        def on_train_begin(self, logs=None):
            seen.append(("begin", logs, self.params))

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                self.model.set_learning_rate(0.0)

        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch, jax.device_get(self.model._state.params)))
            self.model.stop_training = epoch == 2

    shell = Shell()
    keras_lambda = keras().callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(("keras", epoch)))
    adapted = [cbs.as_trainer_callback(cb, shell, params={"epochs": 5}) for cb in (Freezer(), keras_lambda)]
    early = cbs.EarlyStopping()
    assert cbs.as_trainer_callback(early, shell) is early
    state, history = fit(trainer, data, 5, adapted)
    assert history.epoch == [0, 1, 2] and history.history["learning_rate"][1:] == [0.0, 0.0]
    assert seen[0] == ("begin", {}, {"epochs": 5})
    params = [p for e, p in seen[1:] if e != "keras"]
    assert leaves_equal(params[0], params[1]) and leaves_equal(params[1], params[2])
    assert leaves_equal(params[2], state.params)
    assert [e for k, e in seen[1:] if k == "keras"] == [0, 1, 2] and shell.stop_training is False
    with pytest.raises(TypeError, match="must be a fluxnet.callbacks.Callback .*got int"):
        cbs.as_trainer_callback(3, shell)


def test_keras_style_callbacks_stop_mid_epoch_and_with_a_replaced_state(trainer, data):
    """``stop_training`` set in a batch hook ends training after that step (Keras); set together with a
    new learning rate at an epoch end, both take effect."""
    class StopAtBatch(cbs.Callback):
        def on_batch_end(self, batch, logs=None):
            self.model.stop_training = batch == 1

    state, history = fit(trainer, data, 3, [cbs.as_trainer_callback(StopAtBatch(), Shell())])
    assert int(state.step) == 2 and history.epoch == [0]

    class ZeroAndStop(cbs.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.set_learning_rate(0.0)
            self.model.stop_training = True

    state, history = fit(trainer, data, 3, [cbs.as_trainer_callback(ZeroAndStop(), Shell())])
    assert history.epoch == [0] and lr_scale.get_scale(state.opt_state) == 0.0
