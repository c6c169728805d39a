"""Reliability, API misuse: labels of the wrong kind, impossible counts, bad weights and learning rates
are refused before anything is traced, naming the culprit; a loss that contradicts the model's output
activation is warned about once."""
import warnings

import jax
import numpy as np
import optax
import pytest

import fluxnet as fx
from fluxnet import layers, optimizers
from fluxnet.errors import ArgumentError, DataError, FluxnetError

X = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
Y = np.arange(64) % 3


def trainer(activation=None, **loss_options):
    model = fx.Sequential([layers.Input((4,)), layers.Dense(3, activation=activation, name="out")])
    loss = fx.losses.get("sparse_categorical_crossentropy", **loss_options)
    return fx.Trainer(model, loss=loss, optimizer=optax.sgd(0.1), metrics=["accuracy"])


@pytest.fixture(scope="module")
def fitted():
    t = trainer(from_logits=True)
    return t, t.init(jax.random.key(0))


@pytest.mark.parametrize("labels, message", [
    (np.full(64, 12.0), "labels must lie in [0, 3)"),
    (np.full(64, 3.7), "labels must be whole class ids: 64 of 64 are not (first at index 0: 3.7)"),
    (np.array(["cat"] * 64), "targets must be numbers, got dtype <U3"),
    (np.full(64, -1), "labels must lie in [0, 3)"),
    (np.full(64, np.nan), "labels must be whole class ids"),
])
def test_bad_labels_are_refused_before_tracing(fitted, labels, message):
    t, state = fitted
    with pytest.raises(DataError) as err:
        t.fit(state, (X, labels), epochs=1, batch_size=16, verbose=0)
    assert message in str(err.value)
    with pytest.raises(DataError):
        t.evaluate(state, (X, labels))


def test_whole_float_labels_train_like_integers(fitted):
    t, state = fitted
    assert t.evaluate(state, (X, Y.astype(np.float32))) == t.evaluate(state, (X, Y))


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": -1}, "epochs must be an int >= 0, got -1"),
    ({"epochs": 1.5}, "epochs must be an int >= 0, got 1.5"),
    ({"batch_size": 0}, "batch_size must be an int >= 1, got 0"),
    ({"sample_weight": -np.ones(64)}, "sample_weight must be finite and >= 0"),
    ({"sample_weight": np.full(64, np.nan)}, "sample_weight must be finite and >= 0"),
    ({"class_weight": {0: -2.0}}, "class_weight of class 0 must be a finite number >= 0, got -2.0"),
    ({"class_weight": {0: float("inf")}}, "class_weight of class 0 must be a finite number >= 0, got inf"),
    ({"class_weight": {7: 1.0}}, "class_weight has class 7, outside [0, 3)"),
    ({"validation_data": (X, np.array(["x"] * 64))}, "validation targets must be numbers"),
])
def test_bad_fit_arguments_are_named(fitted, kwargs, message):
    t, state = fitted
    with pytest.raises(FluxnetError) as err:
        t.fit(state, (X, Y), **{"epochs": 1, "batch_size": 16, "verbose": 0, **kwargs})
    assert message in str(err.value) and isinstance(err.value, ValueError)


def test_fit_with_zero_epochs_trains_nothing(fitted):
    t, state = fitted
    after, history = t.fit(state, (X, Y), epochs=0, verbose=0)
    assert int(after.step) == 0 and history.history == {}


@pytest.mark.parametrize("value", [0, -1, 2.5])
def test_steps_per_execution_must_be_a_positive_int(value):
    model = fx.Sequential([layers.Input((4,)), layers.Dense(3)])
    with pytest.raises(ArgumentError, match=f"steps_per_execution must be an int >= 1 or 'auto', got {value}"):
        fx.Trainer(model, loss=fx.losses.get("mse"), steps_per_execution=value)


@pytest.mark.parametrize("lr", [-1.0, float("nan"), float("inf")])  # 0 is allowed, as in Keras
def test_a_scheduled_learning_rate_is_checked_too(lr):
    with pytest.raises(ArgumentError, match="learning_rate must be"):
        optimizers.build_optimizer({"name": "adam", "learning_rate": lr, "schedule": "cosine"}, total_steps=10)


@pytest.mark.parametrize("activation, options, warned", [
    (None, {}, "outputs logits (activation linear), but the loss 'sparse_categorical_crossentropy' expects "
               "probabilities"),
    ("softmax", {"from_logits": True}, "ends in a softmax (probabilities), but the loss "
                                       "'sparse_categorical_crossentropy' has from_logits=True"),
    ("softmax", {}, None),
    (None, {"from_logits": True}, None),
])
def test_a_loss_that_contradicts_the_output_activation_is_warned_about(activation, options, warned):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(activation, **options)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if warned is None:
        assert not messages
    else:
        assert len(messages) == 1 and warned in messages[0] and "output layer 'out'" in messages[0]


def test_fit_leaves_the_callers_state_valid(fitted):
    t, state = fitted
    before = jax.device_get(state.params)
    after, _ = t.fit(state, (X, Y), epochs=1, batch_size=16, verbose=0)
    again, _ = t.fit(state, (X, Y), epochs=1, batch_size=16, verbose=0)   # the same state, reused
    same = jax.tree.map(np.array_equal, jax.device_get(state.params), before)
    assert all(jax.tree.leaves(same)) and int(state.step) == 0
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, jax.device_get(after.params),
                                            jax.device_get(again.params))))


def test_to_categorical_matches_keras():
    keras = pytest.importorskip("keras")
    for y, n in (([0, 2, 1], 3), (np.array([[1], [0], [3]]), None), (np.array([[0, 1], [2, 2]]), 4)):
        np.testing.assert_array_equal(fx.utils.to_categorical(y, n), keras.utils.to_categorical(y, n))
    assert fx.utils.to_categorical(np.array([[1], [0]])).shape == (2, 2)    # a trailing 1 is squeezed
    assert fx.utils.to_categorical([1, 0], 4).dtype == np.float32
    with pytest.raises(ArgumentError, match="class 5 does not fit num_classes=3"):
        fx.utils.to_categorical([5], 3)
    with pytest.raises(DataError, match="non-negative whole class ids"):
        fx.utils.to_categorical([1.5])
