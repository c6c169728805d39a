"""A Keras user's code carries over: keras.io's simple convnet written the Keras way, a two-input /
two-output model with per-output losses and weights, save/load that continues exactly, weights in
Keras' order, Keras' step counts with a partial last batch, and frozen models."""
import os

import jax
import numpy as np
import optax
import pytest

import fluxnet as fx
from fluxnet import layers


@pytest.fixture(scope="module")
def digits(digits_splits):
    """``(x_train, y_train), (x_test, y_test)`` as keras.io prepares MNIST: float32 in [0, 1]."""
    return tuple(digits_splits.train), tuple(digits_splits.test)


def test_keras_io_simple_convnet_runs_unchanged(digits):
    """keras.io/examples/vision/mnist_convnet, imports aside (digits are 8x8, so one conv block)."""
    (x_train, y_train), (x_test, y_test) = digits
    num_classes, input_shape = 10, (8, 8, 1)
    y_train = fx.utils.to_categorical(y_train, num_classes)
    y_test = fx.utils.to_categorical(y_test, num_classes)
    model = fx.Sequential([
        layers.Input(shape=input_shape),
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(num_classes, activation="softmax"),
    ])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(x_train, y_train, batch_size=32, epochs=15, validation_split=0.1, verbose=0)
    score = model.evaluate(x_test, y_test, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
    assert len(history.history["loss"]) == 15 and history.history["loss"][-1] < history.history["loss"][0]
    # Keras 3 on the same script and data scored 0.891 and 0.889 (seeds 0, 1)
    assert isinstance(score, list) and len(score) == 2 and score[1] > 0.88
    # Keras' step count: the last partial batch trains too; validation_split holds out the last 10%
    train_rows = int(np.floor(len(x_train) * (1 - 0.1)))   # Keras' train_validation_split
    assert model.optimizer.iterations == 15 * -(-train_rows // 32)
    probs = model.predict(x_test, verbose=0)
    assert probs.shape == (len(x_test), 10)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def two_io_model():
    image = layers.Input((8, 8, 1), name="image")
    extra = layers.Input((2,), name="extra")
    h = layers.Concatenate()([layers.Flatten()(image), extra])
    h = layers.Dense(32, activation="relu")(h)
    digit = layers.Dense(10, activation="softmax", name="digit")(h)
    parity = layers.Dense(1, activation="sigmoid", name="parity")(h)
    return fx.Model(inputs=[image, extra], outputs=[digit, parity])


def test_two_inputs_two_outputs_with_per_output_losses_and_weights(digits):
    (x, y), _ = digits
    extra = np.stack([x.mean((1, 2, 3)), x.std((1, 2, 3))], -1)
    targets = {"digit": y, "parity": (y % 2).astype("float32")[:, None]}
    model = two_io_model()
    model.compile(optimizer="adam", loss={"digit": "sparse_categorical_crossentropy", "parity": "binary_crossentropy"},
                  loss_weights={"digit": 1.0, "parity": 0.5}, metrics={"digit": ["accuracy"], "parity": ["accuracy"]})
    history = model.fit({"image": x, "extra": extra}, targets, batch_size=64, epochs=3, verbose=0)
    assert list(history.history) == ["loss", "digit_loss", "digit_accuracy", "parity_loss", "parity_accuracy",
                                     "learning_rate"]
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["digit_accuracy"][-1] > history.history["digit_accuracy"][0]
    # evaluate: Keras' [loss, <output>_loss..., metrics...]; every value equals a hand computation
    loss, digit_loss, parity_loss, digit_acc, parity_acc = model.evaluate([x, extra], [targets["digit"],
                                                                                       targets["parity"]], verbose=0)
    (p_digit, p_parity), _ = model.apply(model.variables, [x, extra])
    p_digit, p_parity = np.asarray(p_digit, np.float64), np.clip(np.asarray(p_parity, np.float64), 1e-7, 1 - 1e-7)
    hand_digit = -np.log(np.clip(p_digit / p_digit.sum(-1, keepdims=True), 1e-7, 1 - 1e-7)[np.arange(len(y)), y]).mean()
    t = targets["parity"]
    hand_parity = -(t * np.log(p_parity) + (1 - t) * np.log(1 - p_parity)).mean()
    np.testing.assert_allclose([digit_loss, parity_loss], [hand_digit, hand_parity], rtol=1e-4)
    np.testing.assert_allclose(loss, hand_digit + 0.5 * hand_parity, rtol=1e-4)
    np.testing.assert_allclose(digit_acc, (p_digit.argmax(-1) == y).mean(), rtol=1e-6)
    np.testing.assert_allclose(parity_acc, ((p_parity > 0.5) == t).mean(), rtol=1e-6)
    assert set(model.evaluate([x, extra], targets, verbose=0, return_dict=True)) == set(history.history) - {
        "learning_rate"}
    predicted = model.predict({"image": x[:5], "extra": extra[:5]})
    assert isinstance(predicted, list) and predicted[0].shape == (5, 10) and predicted[1].shape == (5, 1)


def test_bad_structures_are_named(digits):
    (x, y), _ = digits
    extra = np.zeros((len(x), 2), "float32")
    model = two_io_model()
    with pytest.raises(ValueError, match="loss names outputs the model does not have: \\['digits'\\]"):
        model.compile(optimizer="adam", loss={"digits": "mse", "parity": "mse"})
    model.compile(optimizer="adam", loss=["sparse_categorical_crossentropy", "binary_crossentropy"])
    with pytest.raises(ValueError, match="missing \\['parity'\\]"):
        model.fit([x, extra], {"digit": y}, verbose=0)
    with pytest.raises(ValueError, match="unexpected \\['colour'\\]"):
        model.fit({"image": x, "extra": extra, "colour": extra}, [y, y[:, None] % 2], verbose=0)
    with pytest.raises(ValueError, match="class_weight is for models with one output"):
        model.fit([x, extra], [y, y[:, None] % 2], class_weight={0: 2.0}, verbose=0)


def test_save_load_predicts_identically_and_continues_exactly(digits, tmp_path):
    (x, y), (x_test, _) = digits
    def build():
        model = fx.Sequential([layers.Input((8, 8, 1)), layers.Conv2D(4, 3), layers.BatchNormalization(),
                               layers.Flatten(), layers.Dropout(0.2), layers.Dense(10)])
        model.compile(optimizer={"name": "adam", "learning_rate": 3e-3},
                      loss=fx.losses.get("sparse_categorical_crossentropy", from_logits=True), metrics=["accuracy"])
        return model
    model = build()
    model.fit(x, y, batch_size=100, epochs=2, verbose=0)
    model.save(tmp_path / "m")
    loaded = fx.load_model(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict(x_test), model.predict(x_test))
    assert loaded.optimizer.iterations == model.optimizer.iterations
    after = model.fit(x, y, batch_size=100, epochs=2, verbose=0).history
    again = loaded.fit(x, y, batch_size=100, epochs=2, verbose=0).history
    assert after == again
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    model.save(tmp_path / "m")      # replaces the folder atomically
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_a_model_compiled_with_an_optax_transform_says_compile_again(digits, tmp_path):
    (x, y), _ = digits
    model = fx.Sequential([layers.Input((8, 8, 1)), layers.Flatten(), layers.Dense(10)])
    model.compile(optimizer=optax.sgd(0.1), loss=fx.losses.get("sparse_categorical_crossentropy", from_logits=True))
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "m")
    with pytest.warns(UserWarning, match="call model.compile"):
        loaded = fx.load_model(tmp_path / "m")
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="not compiled"):
        loaded.fit(x, y, verbose=0)
    loaded.compile(optimizer=optax.sgd(0.1), loss=fx.losses.get("sparse_categorical_crossentropy", from_logits=True))
    np.testing.assert_array_equal(loaded.predict(x[:8]), model.predict(x[:8]))


def test_weights_follow_keras_order(keras):
    """Keras' get_weights() of the same architecture loads into fluxnet with set_weights and gives
    Keras' outputs (so both orders agree)."""
    k = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3), keras.layers.BatchNormalization(),
                          keras.layers.Flatten(), keras.layers.Dense(4)])
    rng = np.random.default_rng(0)
    k.set_weights([rng.normal(size=w.shape).astype("float32") + (2 if i == 5 else 0)
                   for i, w in enumerate(k.get_weights())])  # index 5: a positive moving variance
    model = fx.Sequential([layers.Input((6, 6, 2)), layers.Conv2D(3, 3), layers.BatchNormalization(),
                           layers.Flatten(), layers.Dense(4)])
    model.compile(optimizer="sgd", loss="mse")
    model.set_weights(k.get_weights())
    x = rng.normal(size=(5, 6, 6, 2)).astype("float32")
    np.testing.assert_allclose(model.predict(x), np.asarray(k.predict(x, verbose=0)), rtol=1e-5, atol=1e-5)
    assert [w.shape for w in model.get_weights()] == [w.shape for w in k.get_weights()]
    with pytest.raises(ValueError, match="set_weights got 1 arrays"):
        model.set_weights(k.get_weights()[:1])


def test_partial_batches_match_keras_step_counts():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(1293, 4)).astype("float32"), rng.normal(size=(1293, 1)).astype("float32")
    model = fx.Sequential([layers.Input((4,)), layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, batch_size=128, epochs=1, verbose=0)
    assert model.optimizer.iterations == 11            # Keras: ceil(1293 / 128); the last batch has 13 rows
    model.fit(x[:20], y[:20], batch_size=32, epochs=2, verbose=0)   # fewer examples than batch_size: one batch
    assert model.optimizer.iterations == 13
    assert model.trainer.train_step._cache_size() == 3  # 128 rows, 13 rows, 20 rows: one compilation each


def test_learning_rate_reads_and_sets_through_the_scale():
    model = fx.Sequential([layers.Input((4,)), layers.Dense(1)])
    model.compile(optimizer={"name": "sgd", "learning_rate": 0.1}, loss="mse")
    assert model.optimizer.learning_rate == pytest.approx(0.1)
    model.optimizer.learning_rate = 0.025
    assert model.optimizer.learning_rate == pytest.approx(0.025)
    before = model.get_weights()
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 1), "float32")
    model.fit(x, y, batch_size=8, verbose=0)
    # one SGD step at the set rate: w - 0.025 * grad
    (kernel, bias) = before
    pred = x @ kernel + bias
    grad_k, grad_b = x.T @ (2 * (pred - y) / len(x)), (2 * (pred - y) / len(x)).sum(0)
    np.testing.assert_allclose(model.get_weights()[0], kernel - 0.025 * grad_k, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.get_weights()[1], bias - 0.025 * grad_b, rtol=1e-5, atol=1e-7)


def test_model_variables_are_a_plain_pytree(digits):
    (x, y), _ = digits
    model = fx.Sequential([layers.Input((8, 8, 1)), layers.Flatten(), layers.Dense(10, activation="softmax")])
    with pytest.raises(ValueError, match="not compiled"):
        model.fit(x, y)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", seed=3)
    variables = model.variables
    assert set(variables) == {"params"} and isinstance(variables["params"], dict)
    out, _ = model.apply(variables, x[:4])
    np.testing.assert_allclose(np.asarray(out), model.predict(x[:4]), rtol=1e-6)


def test_keras_style_callbacks_see_the_model_in_fit_and_are_refused_by_the_pure_trainer():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.normal(size=(64, 1)).astype("float32")

    class HalveAndStop(fx.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.seen = (epoch, self.model.get_weights()[0].shape, self.params["epochs"])
            self.model.optimizer.learning_rate = self.model.optimizer.learning_rate / 2
            if epoch == 1:
                self.model.stop_training = True

    model = fx.Sequential([layers.Input((4,)), layers.Dense(1)])
    model.compile(optimizer={"name": "sgd", "learning_rate": 0.1}, loss="mse")
    cb = HalveAndStop()
    history = model.fit(x, y, batch_size=16, epochs=5, callbacks=[cb], verbose=0)
    assert history.epoch == [0, 1] and cb.seen == (1, (4, 1), 5)
    np.testing.assert_allclose(history.history["learning_rate"], [0.1, 0.05], rtol=1e-6)
    assert model.optimizer.learning_rate == pytest.approx(0.025)
    with pytest.raises(TypeError, match="Keras-style callbacks \\(self.model\\) run in model.fit"):
        model.trainer.fit(model.trainer.init(jax.random.key(0)), (x, y), callbacks=[HalveAndStop()], verbose=0)


def test_validation_split_holds_out_the_rows_keras_holds_out(keras):
    x, y = np.arange(10, dtype="float32")[:, None], np.zeros((10, 1), "float32")
    k = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    k.compile(optimizer="sgd", loss="mse")
    k.fit(x, y, batch_size=1, epochs=1, validation_split=0.25, verbose=0)
    model = fx.Sequential([layers.Input((1,)), layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, batch_size=1, epochs=1, validation_split=0.25, verbose=0)
    assert model.optimizer.iterations == int(k.optimizer.iterations) == 7


def test_single_input_and_output_given_as_dicts(digits):
    (x, y), _ = digits
    i = layers.Input((8, 8, 1), name="pixels")
    model = fx.Model(i, layers.Dense(10, name="digit")(layers.Flatten()(i)))
    model.compile(optimizer="adam", loss=fx.losses.get("sparse_categorical_crossentropy", from_logits=True))
    model.fit({"pixels": x}, {"digit": y}, epochs=1, verbose=0)
    assert model.optimizer.iterations == -(-len(x) // 32)
    with pytest.raises(ValueError, match="missing \\['pixels'\\]; unexpected \\['pixel'\\]"):
        model.fit({"pixel": x}, y, verbose=0)


def test_a_schedule_saves_the_variables_and_says_compile_again(tmp_path):
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 1), "float32")
    model = fx.Sequential([layers.Input((4,)), layers.Dense(1)])
    model.compile(optimizer={"name": "adam", "learning_rate": optax.cosine_decay_schedule(0.01, 100)}, loss="mse",
                  loss_weights=[np.float32(1.0)])
    model.fit(x, y, verbose=0)
    model.save(tmp_path / "m")
    with pytest.warns(UserWarning, match="call model.compile"):
        loaded = fx.load_model(tmp_path / "m")
    np.testing.assert_array_equal(loaded.get_weights()[0], model.get_weights()[0])


def test_batch_hooks_get_a_clear_error_for_weights_and_one_callback_needs_no_list():
    x, y = np.ones((32, 4), "float32"), np.zeros((32, 1), "float32")

    class ReadsWeights(fx.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.model.get_weights()

    model = fx.Sequential([layers.Input((4,)), layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="not readable in a batch hook"):
        model.fit(x, y, callbacks=[ReadsWeights()], verbose=0)
    assert model.optimizer.iterations == 0 and len(model.get_weights()) == 2   # the model stays usable
    history = model.fit(x, y, epochs=3, callbacks=fx.callbacks.EarlyStopping(monitor="loss", patience=0,
                                                                             min_delta=10.0), verbose=0)
    assert history.epoch == [0, 1]


def test_a_failed_fit_keeps_the_epochs_it_completed():
    x, y = np.ones((32, 4), "float32"), np.zeros((32, 1), "float32")

    class FailsInEpoch3(fx.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    model = fx.Sequential([layers.Input((4,)), layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=16, epochs=5, callbacks=[FailsInEpoch3()], verbose=0)
    assert model.optimizer.iterations == 4          # two epochs of two steps, as Keras keeps its weights
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert model.optimizer.iterations == 6
