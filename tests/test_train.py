"""Trainer: the Keras-style contract, exact resumes, weights, early stopping, bad data, NaN losses,
checkpoint mismatches, and data parallelism (4 CPU devices in a subprocess: sharding == 1 device,
pmap close to sharding). Models are tiny and share the persistent compile cache (conftest)."""
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fluxnet as fx
from fluxnet import layers
from fluxnet.train.checkpoint import Checkpointer
from fluxnet.models.builders import build_model
from fluxnet.tree import path_str
from fluxnet.train import EarlyStopping
from runs_support import device_flags

LOGITS_CE = fx.losses.get("sparse_categorical_crossentropy", from_logits=True)


def tiny_cnn():
    """Conv(8)-BN-ReLU-Pool-Flatten-Dropout-Dense(16)-Dense(10): BN statistics and dropout randomness."""
    return build_model("cnn", (8, 8, 1), 10, filters=(8,), dense_units=16, dropout=0.2)


def tiny_mlp(units=(32,)):
    return build_model("mlp", (8, 8, 1), 10, units=units, dropout=0.0)


def leaves_equal(a, b) -> bool:
    """Bit-identical pytrees (same structure, same values)."""
    la, lb = jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def log_softmax_ce(probs_or_logits, y, logits: bool) -> np.ndarray:
    """Keras' sparse categorical crossentropy per example, in float64 numpy."""
    p = np.asarray(probs_or_logits, np.float64)
    if logits:
        p = p - p.max(-1, keepdims=True)
        logp = p - np.log(np.exp(p).sum(-1, keepdims=True))
    else:
        p = np.clip(p / p.sum(-1, keepdims=True), 1e-7, 1 - 1e-7)
        logp = np.log(p)
    return -logp[np.arange(len(y)), y]


# ------------------------------------------------------------------------------------------ contract


@pytest.fixture(scope="module")
def fitted(digits_splits):
    """The contract's calls on a softmax MLP: init, fit 2 epochs, fit 2 more on the returned state."""
    model = fx.Sequential([layers.Input((8, 8, 1)), layers.Flatten(), layers.Dense(64, activation="relu"),
                           layers.Dense(10, activation="softmax")])
    trainer = fx.Trainer(model, loss="sparse_categorical_crossentropy", optimizer=optax.adam(1e-2),
                         metrics=["accuracy"])
    state = trainer.init(jax.random.key(0))
    train, val = digits_splits.train, digits_splits.validation
    state, first = trainer.fit(state, (train.images, train.labels), epochs=2, batch_size=64,
                               validation_data=(val.images, val.labels), verbose=0)
    state, second = trainer.fit(state, (train.images, train.labels), epochs=2, batch_size=64,
                                validation_data=(val.images, val.labels), verbose=0)
    return trainer, state, first, second


def test_fit_learns_and_continues_without_recompiling(fitted, digits_splits):
    trainer, state, first, second = fitted
    assert set(first.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
    assert all(len(v) == 2 for v in first.history.values()) and second.epoch == [2, 3]
    n = len(digits_splits.train)
    assert n % 64 and int(state.epoch) == 4 and int(state.step) == 4 * -(-n // 64)  # the partial batch too
    # one compilation for full batches and one for the last partial batch, however many epochs
    assert trainer.train_step._cache_size() == 2 and trainer.eval_step._cache_size() == 1
    assert second.history["loss"][-1] < first.history["loss"][0]
    assert second.history["val_accuracy"][-1] > 0.9
    test = digits_splits.test
    assert trainer.evaluate(state, (test.images, test.labels), batch_size=256)["accuracy"] > 0.9


def test_evaluate_averages_over_real_examples_only(fitted, digits_splits):
    trainer, state, _, _ = fitted
    x, y = digits_splits.validation            # 270 examples: batches of 64 leave 14 real rows in the last
    assert len(y) % 64
    probs = trainer.predict(state, x, batch_size=64)
    assert probs.shape == (len(y), 10)
    metrics = trainer.evaluate(state, (x, y), batch_size=64)
    np.testing.assert_allclose(metrics["loss"], log_softmax_ce(probs, y, logits=False).mean(), rtol=1e-5)
    assert metrics["accuracy"] == np.mean(probs.argmax(-1) == y)
    whole = trainer.evaluate(state, (x, y), batch_size=len(y))
    np.testing.assert_allclose(whole["loss"], metrics["loss"], rtol=1e-6)
    assert whole["accuracy"] == metrics["accuracy"]


def test_bad_data_fails_before_anything_compiles(digits_splits):
    trainer = fx.Trainer(tiny_mlp(), loss=LOGITS_CE, optimizer="adam", metrics=["accuracy"])
    state = trainer.init(jax.random.key(0))
    x, y = digits_splits.train.images[:64], digits_splits.train.labels[:64]
    nan_x = x.copy()
    nan_x[3, 2, 2, 0] = np.nan
    cases = [((x, np.where(y == 3, 10, y)), "must lie in \\[0, 10\\)"),
             ((np.repeat(x, 3, axis=-1), y), "shape \\(8, 8, 3\\) per example.*\\(8, 8, 1\\)"),
             ((nan_x, y), "non-finite values \\(NaN or inf\\).*indices 3"),
             ((x[:0], y[:0]), "empty")]
    for data, message in cases:
        with pytest.raises(ValueError, match=message):
            trainer.fit(state, data, epochs=1, batch_size=32, verbose=0)
    with pytest.raises(ValueError, match="validation.*must lie in"):
        trainer.fit(state, (x, y), epochs=1, batch_size=32, validation_data=(x, y + 10), verbose=0)
    with pytest.raises(ValueError, match="class_weight or sample_weight, not both"):
        trainer.fit(state, (x, y), class_weight={0: 2.0}, sample_weight=np.ones(64), verbose=0)
    assert trainer.train_step._cache_size() == 0 and trainer.eval_step._cache_size() == 0
    with pytest.raises(ValueError, match="Unknown parallel mode 'pmapp'"):
        fx.Trainer(tiny_mlp(), parallel="pmapp")


# ------------------------------------------------------------------------------------------ resume


def test_resume_from_a_checkpoint_equals_the_straight_run(digits_splits, tmp_path):
    """Fit 3 epochs straight vs fit 2 with a Checkpointer, restore into a fresh Trainer, fit 1 more:
    identical state (params, BN statistics, optimizer state, rng), history and EarlyStopping state."""
    train, val = digits_splits.train, digits_splits.validation

    def trainer():
        return fx.Trainer(tiny_cnn(), loss=LOGITS_CE, optimizer=optax.adam(3e-3), metrics=["accuracy"])

    def stopper():
        return EarlyStopping(monitor="val_accuracy", patience=10, restore_best_weights=True)

    def fit(t, state, epochs, **kw):
        return t.fit(state, train, epochs=epochs, batch_size=64, validation_data=val, verbose=0, **kw)

    t = trainer()
    straight_stop = stopper()
    straight, straight_history = fit(t, t.init(jax.random.key(0)), 3, callbacks=[straight_stop])

    t = trainer()
    checkpointer = Checkpointer(tmp_path / "ck", monitor="val_accuracy")
    fit(t, t.init(jax.random.key(0)), 2, callbacks=[stopper()], checkpointer=checkpointer)
    checkpointer.close()

    t = trainer()                                    # a fresh process would do exactly this
    checkpointer = Checkpointer(tmp_path / "ck", monitor="val_accuracy")
    state, meta, arrays = checkpointer.restore(checkpointer.latest_step(), t.abstract_state())
    assert int(state.epoch) == 2
    resumed_stop = stopper()
    resumed, resumed_history = fit(t, state, 1, callbacks=[resumed_stop], checkpointer=checkpointer,
                                   resume={**meta, "arrays": arrays})
    checkpointer.close()
    assert leaves_equal(straight, resumed)
    assert resumed_history.history == straight_history.history and len(straight_history.epoch) == 3
    assert resumed_stop.get_state() == straight_stop.get_state()
    assert leaves_equal(resumed_stop.best_weights, straight_stop.best_weights)


def test_early_stopping_restores_the_best_weights(digits_splits, tmp_path):
    """val_loss in mode "max" never improves on epoch 1: patience 1 stops after epoch 2 and the returned
    state holds epoch 1's variables (as checkpointed then)."""
    t = fx.Trainer(tiny_cnn(), loss=LOGITS_CE, optimizer=optax.adam(3e-3), metrics=["accuracy"])
    stop = EarlyStopping(monitor="val_loss", mode="max", patience=1, restore_best_weights=True)
    checkpointer = Checkpointer(tmp_path / "ck", keep=5, monitor=None)
    state, history = t.fit(t.init(jax.random.key(1)), digits_splits.train, epochs=5, batch_size=64,
                           validation_data=digits_splits.validation, callbacks=[stop], checkpointer=checkpointer,
                           verbose=0)
    assert len(history.epoch) == 2 and stop.stopped_epoch == 1 and stop.best_epoch == 0
    first, _, _ = checkpointer.restore(1, t.abstract_state())
    checkpointer.close()
    assert leaves_equal(state.variables, first.variables)
    assert int(state.epoch) == 2


def test_early_stopping_matches_keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    nan = float("nan")
    cases = [({"patience": 2}, [1.0, 0.9, 0.95, 0.93, 0.8, 0.85, 0.86, 0.87]),
             ({"patience": 1, "min_delta": 0.05}, [1.0, 0.97, 0.9, 0.88, 0.7]),
             ({"patience": 2, "baseline": 0.5}, [1.0, 0.9, 0.8, 0.7, 0.6]),
             ({"patience": 0, "start_from_epoch": 2}, [1.0, 2.0, 3.0, 2.0, 2.5]),
             ({"patience": 1}, [1.0, nan, 0.5, nan, nan]),
             ({"patience": 3, "mode": "max", "monitor": "val_accuracy"}, [0.1, 0.3, 0.2, 0.3, 0.25, 0.28])]

    class DummyModel:
        stop_training = False

    for options, values in cases:
        options = {"monitor": "val_loss", **options}
        ours, theirs = EarlyStopping(**options), keras.callbacks.EarlyStopping(**options)
        model = DummyModel()
        theirs.set_model(model)
        ours.on_train_begin(None, None)
        theirs.on_train_begin()
        for epoch, value in enumerate(values):
            logs = {options["monitor"]: value}
            stopped = bool(ours.on_epoch_end(epoch, logs, None))
            theirs.on_epoch_end(epoch, logs)
            assert stopped == model.stop_training, (options, epoch)
            assert (ours.wait, ours.best_epoch, ours.stopped_epoch) == \
                (theirs.wait, theirs.best_epoch, theirs.stopped_epoch), (options, epoch)
            assert ours.best == pytest.approx(None if theirs.best is None else float(theirs.best), nan_ok=True)
            if stopped:
                break


# ------------------------------------------------------------------------------------------ weights


def test_class_and_sample_weights_weigh_the_loss_as_keras(digits_splits):
    """Zero learning rate, one full batch: the logged loss is sum(w * loss) / rows (Keras), the logged
    accuracy the w-weighted mean (Keras' compiled metrics); "balanced" is scikit-learn's formula."""
    from sklearn.utils.class_weight import compute_class_weight

    x, y = digits_splits.train.images[:200], digits_splits.train.labels[:200]
    t = fx.Trainer(tiny_mlp(), loss=LOGITS_CE, optimizer=optax.sgd(0.0), metrics=["accuracy"])
    state = t.init(jax.random.key(0))
    logits = t.predict(state, x)
    per_example, correct = log_softmax_ce(logits, y, logits=True), logits.argmax(-1) == y
    balanced = compute_class_weight("balanced", classes=np.arange(10), y=y)
    rng = np.random.default_rng(0)
    sample = rng.uniform(0.1, 3.0, len(y))
    for kw, w in [({"class_weight": {0: 3.0, 7: 0.25}}, np.where(y == 0, 3.0, np.where(y == 7, 0.25, 1.0))),
                  ({"class_weight": "balanced"}, balanced[y]),
                  ({"sample_weight": sample}, sample)]:
        state, history = t.fit(state, (x, y), epochs=1, batch_size=len(y), verbose=0, **kw)
        np.testing.assert_allclose(history.history["loss"][0], np.sum(w * per_example) / len(y), rtol=1e-5)
        np.testing.assert_allclose(history.history["accuracy"][0], np.sum(w * correct) / np.sum(w), rtol=1e-6)
    assert t.train_step._cache_size() == 1


def test_oversampling_balances_the_epoch(digits_splits):
    x, y = digits_splits.train.images[:300], digits_splits.train.labels[:300].copy()
    y[y == 1] = 2                                   # class 1 absent, class 2 twice as frequent
    counts = np.bincount(y, minlength=10)
    t = fx.Trainer(tiny_mlp(), loss=LOGITS_CE, optimizer=optax.sgd(0.0))
    state, _ = t.fit(t.init(jax.random.key(0)), (x, y), epochs=2, batch_size=10, oversample=True, verbose=0)
    assert int(state.step) == 2 * -(-counts.max() * np.count_nonzero(counts) // 10)  # the last partial batch too


def test_param_groups_and_frozen_layers(digits_splits):
    model = build_model("mlp", (8, 8, 1), 10, units=(16, 16), dropout=0.0)
    first, second, logits = [layer.name for layer in model.layers if layer.name in model.abstract_variables()["params"]]
    model.get_layer(second).trainable = False
    t = fx.Trainer(model, loss=LOGITS_CE, optimizer={"fast": optax.sgd(0.5), "still": optax.sgd(0.0)},
                   param_groups={first: "fast", logits: "still"})
    state = t.init(jax.random.key(0))
    before = jax.device_get(state.params)
    state, _ = t.fit(state, digits_splits.train, epochs=1, batch_size=64, verbose=0)
    after = jax.device_get(state.params)
    assert not leaves_equal(before[first], after[first])
    assert leaves_equal(before[second], after[second]) and leaves_equal(before[logits], after[logits])
    with pytest.raises(ValueError, match=f"no group to the trainable layers \\['{first}'\\]"):
        fx.Trainer(model, loss=LOGITS_CE, optimizer={"still": "sgd"}, param_groups={logits: "still"})


# ------------------------------------------------------------------------------------------ failures


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(digits_splits, tmp_path):
    def nan_on_nines(y_true, y_pred):
        return jnp.where(y_true == 9, jnp.nan, LOGITS_CE(y_true, y_pred))

    x, y = digits_splits.train
    t = fx.Trainer(tiny_mlp(), loss=nan_on_nines, optimizer=optax.adam(1e-3))
    checkpointer = Checkpointer(tmp_path / "ck", monitor=None)
    state, _ = t.fit(t.init(jax.random.key(0)), (x[y != 9], y[y != 9]), epochs=1, batch_size=64,
                     checkpointer=checkpointer, verbose=0)
    good = jax.device_get(state)
    with pytest.raises(FloatingPointError, match="training loss became nan in epoch 2.*last checkpoint"):
        t.fit(state, (x, y), epochs=1, batch_size=64, checkpointer=checkpointer, verbose=0)
    assert checkpointer.all_steps() == [1]
    restored, _, _ = checkpointer.restore(1, t.abstract_state())
    checkpointer.close()
    assert leaves_equal(restored, good)


def test_a_checkpoint_that_does_not_fit_lists_every_mismatch(tmp_path):
    saved = fx.Trainer(tiny_mlp((16,)), loss=LOGITS_CE)
    checkpointer = Checkpointer(tmp_path / "ck", monitor=None)
    checkpointer.save(1, saved.init(jax.random.key(0)), meta={"epoch": 1})
    checkpointer.wait()
    target = fx.Trainer(tiny_mlp((32,)), loss=LOGITS_CE)
    old = {path_str(p): v.shape for p, v in jax.tree_util.tree_leaves_with_path(saved.abstract_state())}
    new = {path_str(p): v.shape for p, v in jax.tree_util.tree_leaves_with_path(target.abstract_state())}
    expected = [f"{p}: missing from the checkpoint (model expects {new[p]})" for p in new if p not in old]
    expected += [f"{p}: unexpected (in the checkpoint, not in the model), shape {old[p]}" for p in old if p not in new]
    expected += [f"{p}: checkpoint shape {old[p]}, model expects {new[p]}" for p in new
                 if p in old and old[p] != new[p]]
    assert len(expected) >= 6        # both Dense layers in params, Adam's mu and nu; plus renamed layers
    with pytest.raises(ValueError, match="does not fit") as err:
        checkpointer.restore(1, target.abstract_state())
    checkpointer.close()
    listed = str(err.value).splitlines()[1:]
    assert sorted(line.strip() for line in listed) == sorted(expected)


def test_a_checkpoint_from_before_the_weight_decay_was_injected_restores_with_its_value(tmp_path):
    from fluxnet.train.checkpoint import _without_hyperparameters

    trainer = fx.Trainer(tiny_mlp((16,)), loss=LOGITS_CE, optimizer=fx.optimizers.get("adamw", weight_decay=0.01))
    state = trainer.init(jax.random.key(0))
    old_layout = _without_hyperparameters(state, {"opt_state/0/hyperparams/weight_decay"})  # as written before
    checkpointer = Checkpointer(tmp_path / "ck", monitor=None)
    checkpointer.save(1, old_layout, meta={"epoch": 1})
    checkpointer.wait()
    with pytest.raises(ValueError, match="weight_decay: missing from the checkpoint"):
        checkpointer.restore(1, trainer.abstract_state())          # without a fresh state to take it from
    restored, _, _ = checkpointer.restore(1, trainer.abstract_state(), fresh=lambda: trainer.init(jax.random.key(1)))
    checkpointer.close()
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        assert np.array_equal(jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a,
                              jax.random.key_data(b) if jnp.issubdtype(b.dtype, jax.dtypes.prng_key) else b)


# ------------------------------------------------------------------------------------------ devices

MULTI_DEVICE = textwrap.dedent("""
    import json, sys
    import jax, optax, fluxnet as fx
    from fluxnet import data
    from fluxnet.models.builders import build_model
    from test_train import ODD, summarize

    assert len(jax.devices()) == 4
    splits = data.load_dataset("digits", data_dir=sys.argv[1], splits={"validation": 0.15, "test": 0.2}, seed=0)
    train = data.preprocess_splits(splits, {"rescale": 1 / 255})[0].train
    loss = fx.losses.get("sparse_categorical_crossentropy", from_logits=True)
    models = {"cnn": dict(filters=(8,), dense_units=16, dropout=0.2), "mlp": dict(units=(32,), dropout=0.0)}
    odd = (train.images[:ODD], train.labels[:ODD])   # a last batch of 15: padded to 16, one row masked
    out = {}
    for name, model, parallel, data in [("cnn", "cnn", "sharding", train), ("mlp", "mlp", "sharding", train),
                                        ("mlp_pmap", "mlp", "pmap", train), ("cnn_odd", "cnn", "sharding", odd),
                                        ("mlp_odd", "mlp", "sharding", odd), ("mlp_pmap_odd", "mlp", "pmap", odd)]:
        t = fx.Trainer(build_model(model, (8, 8, 1), 10, **models[model]), loss=loss, optimizer=optax.adam(3e-3),
                       metrics=["accuracy"], parallel=parallel)
        out[name] = summarize(*t.fit(t.init(jax.random.key(0)), data, epochs=2, batch_size=64, verbose=0))
    print(json.dumps(out))
""")


ODD = 1167  # training rows whose last batch of 64 (15 rows) does not divide over 4 devices


def summarize(state, history) -> dict:
    """Per-epoch loss and accuracy, and the sums of the BatchNormalization moving statistics."""
    stats = state.model_state.get("batch_stats", {})
    return {"loss": history.history["loss"], "accuracy": history.history["accuracy"],
            "stats": [float(v.sum()) for v in jax.tree.leaves(stats)]}


def test_data_parallel_equals_one_device(digits_tfds_dir, digits_splits):
    """Sharding over 4 CPU devices (a subprocess) equals this process' single device, BatchNormalization
    statistics included (they are over the global batch), also when the last batch is padded for the
    devices (its padded rows count nowhere); pmap is close to sharding for a model without
    BatchNormalization."""
    env = {**os.environ, "XLA_FLAGS": device_flags(4), "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join(filter(None, [os.path.dirname(__file__), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-c", MULTI_DEVICE, str(digits_tfds_dir)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t = fx.Trainer(tiny_cnn(), loss=LOGITS_CE, optimizer=optax.adam(3e-3), metrics=["accuracy"])
    one = summarize(*t.fit(t.init(jax.random.key(0)), digits_splits.train, epochs=2, batch_size=64, verbose=0))
    x, y = digits_splits.train
    one_odd = summarize(*t.fit(t.init(jax.random.key(0)), (x[:ODD], y[:ODD]), epochs=2, batch_size=64, verbose=0))
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    out = json.loads(stdout.strip().splitlines()[-1])
    assert len(one["stats"]) == 2                    # BN moving mean and variance are compared
    for key in ("loss", "accuracy", "stats"):
        np.testing.assert_allclose(out["cnn"][key], one[key], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(out["cnn_odd"][key], one_odd[key], rtol=1e-4, atol=1e-6)
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(out["mlp_pmap"][key], out["mlp"][key], rtol=1e-4)
        np.testing.assert_allclose(out["mlp_pmap_odd"][key], out["mlp_odd"][key], rtol=1e-4)


# ------------------------------------------------------------------------------------------ memory

def _fit_params(x, y, **trainer_args):
    trainer = fx.Trainer(tiny_mlp(), loss=LOGITS_CE, optimizer=optax.sgd(0.1), metrics=["accuracy"], **trainer_args)
    state, history = trainer.fit(trainer.init(jax.random.key(0)), (x, y), epochs=2, batch_size=64, verbose=0,
                                 shuffle=False)
    return trainer, jax.device_get(state.params), history.history


def test_gradient_accumulation_equals_one_big_batch_in_a_quarter_of_the_memory():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(250, 8, 8, 1)).astype("float32"), rng.integers(0, 10, 250)  # a last batch of 58
    _, big, big_history = _fit_params(x, y)
    trainer, accumulated, history = _fit_params(x, y, grad_accum_steps=4)
    for a, b in zip(jax.tree.leaves(accumulated), jax.tree.leaves(big)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for key in big_history:
        np.testing.assert_allclose(history[key], big_history[key], rtol=1e-6, err_msg=key)
    batch = {"x": np.zeros((256, 8, 8, 1), np.float32), "y": np.zeros(256, np.int64)}
    one = fx.Trainer(tiny_mlp((512,)), loss=LOGITS_CE)
    four = fx.Trainer(tiny_mlp((512,)), loss=LOGITS_CE, grad_accum_steps=4)
    temp = [t.train_step.lower(t.init(jax.random.key(0)), batch).compile().memory_analysis().temp_size_in_bytes
            for t in (one, four)]
    assert temp[1] < 0.5 * temp[0], temp                               # one micro-batch's activations at a time
    with pytest.raises(ValueError, match="does not split into grad_accum_steps=3"):
        trainer = fx.Trainer(tiny_mlp(), loss=LOGITS_CE, grad_accum_steps=3)
        trainer.fit(trainer.init(jax.random.key(0)), (x, y), batch_size=64, verbose=0)


@pytest.mark.parametrize("remat", ["full", "layers"])
def test_rematerialisation_recomputes_the_forward_pass_with_the_same_result(remat):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(128, 8, 8, 1)).astype("float32"), rng.integers(0, 10, 128)
    _, plain, _ = _fit_params(x, y)
    trainer, recomputed, _ = _fit_params(x, y, remat=remat)
    for a, b in zip(jax.tree.leaves(recomputed), jax.tree.leaves(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    state, batch = trainer.init(jax.random.key(0)), {"x": x[:64], "y": y[:64]}
    plain_text = _fit_params(x[:64], y[:64])[0].train_step.lower(state, batch).as_text()
    assert trainer.train_step.lower(state, batch).as_text().count("dot_general") > plain_text.count("dot_general")
    with pytest.raises(ValueError, match="remat mode"):
        fx.Trainer(tiny_mlp(), loss=LOGITS_CE, remat="some")


def test_steps_per_execution_auto_measures_once_and_trains_as_single_steps_do():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(512, 8, 8, 1)).astype("float32"), rng.integers(0, 10, 512)
    _, plain, plain_history = _fit_params(x, y)
    trainer, chosen, history = _fit_params(x, y, steps_per_execution="auto")
    assert trainer.steps_per_execution in (1, 8, 4)                    # measured: a scan of 8, else 4 unrolled
    assert (trainer.fused_train_step is not None) == (trainer.steps_per_execution > 1)
    np.testing.assert_allclose(history["loss"], plain_history["loss"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(chosen), jax.tree.leaves(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    first = trainer.steps_per_execution
    trainer.fit(trainer.init(jax.random.key(1)), (x, y), epochs=1, batch_size=64, verbose=0)
    assert trainer.steps_per_execution == first                        # chosen once per Trainer
    with pytest.raises(ValueError, match="an int >= 1 or 'auto'"):
        fx.Trainer(tiny_mlp(), loss=LOGITS_CE, steps_per_execution="fast")


@pytest.mark.parametrize("scan", [False, True])
def test_fused_steps_unrolled_or_scanned_equal_single_steps(scan):
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(4, 32, 8, 8, 1)).astype("float32"), rng.integers(0, 10, (4, 32))
    trainer = fx.Trainer(tiny_mlp(), loss=LOGITS_CE, optimizer=optax.sgd(0.1), metrics=["accuracy"])
    state = trainer.init(jax.random.key(0))
    single, totals = jax.tree.map(jnp.copy, state), []
    for i in range(4):
        single, metrics = trainer.train_step(single, {"x": x[i], "y": y[i]})
        totals.append(metrics)
    fused_step = trainer._fused(4, scan)
    stacked = trainer.batches.place({"x": x, "y": y}, stacked=True)
    fused, fused_totals = fused_step(jax.tree.map(jnp.copy, state), stacked)
    for a, b in zip(jax.tree.leaves(fused), jax.tree.leaves(single)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for name, (total, weight) in fused_totals.items():
        np.testing.assert_allclose(total, sum(m[name][0] for m in totals), rtol=1e-6)
        assert float(weight) == 4 * 32
    text = fused_step.lower(state, stacked).as_text()
    dots = trainer.train_step.lower(state, {"x": x[0], "y": y[0]}).as_text().count("stablehlo.dot_general")
    assert ("stablehlo.while" in text) == scan                         # one loop body, or four copies of the step
    assert text.count("stablehlo.dot_general") == (1 if scan else 4) * dots


def test_what_accumulation_and_auto_steps_cannot_do_is_refused_or_falls_back():
    masked = fx.losses.get("sparse_categorical_crossentropy", from_logits=True, ignore_class=3)
    with pytest.raises(ValueError, match="cannot split a loss with ignore_class"):
        fx.Trainer(tiny_mlp(), loss=masked, grad_accum_steps=2)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(64, 8, 8, 1)).astype("float32"), rng.integers(0, 10, 64)
    trainer = fx.Trainer(tiny_mlp(), loss=LOGITS_CE, parallel="pmap", steps_per_execution="auto")
    trainer.fit(trainer.init(jax.random.key(0)), (x, y), epochs=1, batch_size=16, verbose=0)
    assert trainer.steps_per_execution == 1                            # pmap: single steps, nothing measured
    from fluxnet.train.population import Member, Population
    accumulating = fx.Trainer(tiny_mlp(), loss=LOGITS_CE, grad_accum_steps=4)
    with pytest.raises(ValueError, match="does not split into grad_accum_steps=4"):
        Population(accumulating).fit([Member(0)], (x, y), batch_size=10)
