"""Dtype policies (Keras' names): variables in float32 and compute in bfloat16/float16 for a layer, a model
or a run config; BatchNormalization, losses and metrics in float32; float16's dynamic loss scale;
checkpoints and resume unchanged."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

import fluxnet as fx
from fluxnet import dtype_policies, layers, runs
from fluxnet.models.builders import build_model
from fluxnet.train import loss_scale
from fluxnet.train.checkpoint import Checkpointer

LOSS = fx.losses.get("sparse_categorical_crossentropy", from_logits=True)


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return (d.images[..., None] / 16).astype("float32"), d.target


def cnn(policy="float32"):
    model = build_model("cnn", (8, 8, 1), 10, filters=(16, 32), dense_units=64, dropout=0.0)
    model.dtype_policy = policy
    return model


def test_policies_have_keras_names_and_a_model_sets_every_layer():
    policy = dtype_policies.DTypePolicy("mixed_bfloat16")
    assert (policy.variable_dtype, policy.compute_dtype) == ("float32", "bfloat16")
    assert dtype_policies.get("mixed_float16").needs_loss_scale and not policy.needs_loss_scale
    with pytest.raises(ValueError, match="dtype policy"):
        dtype_policies.get("mixed_int8")
    dense = layers.Dense(4, dtype="mixed_bfloat16")
    assert (dense.dtype, dense.compute_dtype) == ("float32", "bfloat16")
    inner = fx.Sequential([layers.Input((3,)), layers.Dense(4)], name="inner")
    outer = fx.Sequential([layers.Input((3,)), inner, layers.Dense(2)])
    outer.dtype_policy = "mixed_bfloat16"
    assert {l.compute_dtype for l in [*outer.layers, *inner.layers]} == {"bfloat16"}
    rebuilt = fx.models.model_from_config(outer.get_config())           # the policy is part of the architecture
    assert {l.dtype_policy.name for l in [rebuilt.layers[1], *rebuilt.layers[0].layers]} == {"mixed_bfloat16"}
    assert layers.Input((3,), dtype="int32").dtype == "int32"           # an Input's dtype is its data's


def test_mixed_bfloat16_computes_in_bfloat16_keeps_float32_variables_and_matches_float32(digits):
    x, y = digits
    accuracy = {}
    for policy in ("float32", "mixed_bfloat16"):
        trainer = fx.Trainer(cnn(policy), loss=LOSS, optimizer=fx.optimizers.get("adam", learning_rate=3e-3),
                             metrics=["accuracy"])
        state = trainer.init(jax.random.key(0))
        text = trainer.train_step.lower(state, {"x": x[:64], "y": y[:64]}).as_text()
        assert ("bf16" in text) == (policy != "float32")
        state, history = trainer.fit(state, (x[:1400], y[:1400]), epochs=15, batch_size=64, verbose=0)
        assert {leaf.dtype for leaf in jax.tree.leaves(state.variables)} == {jnp.dtype("float32")}
        assert isinstance(history.history["loss"][-1], float)
        accuracy[policy] = trainer.evaluate(state, (x[1400:], y[1400:]))["accuracy"]
    assert abs(accuracy["mixed_bfloat16"] - accuracy["float32"]) <= 0.01, accuracy


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16", "bfloat16"])
def test_a_resumed_run_equals_the_straight_one_in_every_policy(policy, digits, tmp_path):
    x, y = digits[0][:320], digits[1][:320]
    trainer = fx.Trainer(cnn(policy), loss=LOSS, optimizer="adam")
    straight, _ = trainer.fit(trainer.init(jax.random.key(0)), (x, y), epochs=2, batch_size=64, verbose=0)
    first, _ = trainer.fit(trainer.init(jax.random.key(0)), (x, y), epochs=1, batch_size=64, verbose=0)
    checkpointer = Checkpointer(tmp_path / "ck", monitor=None)
    checkpointer.save(1, first, meta={"epoch": 1})
    checkpointer.wait()
    restored, _, _ = checkpointer.restore(1, trainer.abstract_state())
    checkpointer.close()
    resumed, history = trainer.fit(restored, (x, y), epochs=1, batch_size=64, verbose=0)
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(straight.params)):
        assert np.array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
    assert history.history["loss"][0] < 2.3                             # it learns (bfloat16's Adam too)
    dtypes = {leaf.dtype for leaf in jax.tree.leaves(resumed.params)}
    assert dtypes == ({jnp.dtype("bfloat16"), jnp.dtype("float32")} if policy == "bfloat16"  # BN keeps float32
                      else {jnp.dtype("float32")})
    assert (loss_scale.current(resumed.opt_state) is not None) == (policy == "mixed_float16")


def test_the_loss_scale_skips_a_non_finite_step_and_grows_after_finite_ones():
    tx = loss_scale.dynamic(optax.sgd(1.0), initial_scale=8.0, growth_interval=2)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    updates, state = tx.update({"w": jnp.array([8.0, jnp.inf, 8.0])}, state, params)
    assert np.array_equal(updates["w"], np.zeros(3)) and float(state.scale) == 4.0   # skipped, halved
    updates, state = tx.update({"w": jnp.full(3, 4.0)}, state, params)
    np.testing.assert_allclose(updates["w"], -np.ones(3))               # unscaled: 4 / 4
    _, state = tx.update({"w": jnp.full(3, 4.0)}, state, params)
    assert float(state.scale) == 8.0 and int(state.good_steps) == 0     # two finite steps: doubled


def test_a_run_config_takes_a_dtype_policy(digits_tfds_dir):
    config = runs.resolve_config("configs/digits_cnn.py", [f"data.data_dir={digits_tfds_dir}",
                                                          "train.dtype_policy=mixed_bfloat16"])
    splits = runs.build.prepare_data(config)[0]
    model = runs.build.configured_model(config, splits.metadata)
    assert {layer.dtype_policy.name for layer in model.layers} == {"mixed_bfloat16"}


def test_a_functional_model_with_a_policy_saves_and_loads_and_keeps_its_inputs_dtype(tmp_path):
    inputs = layers.Input((8,))
    model = fx.Model(inputs, layers.Dense(4)(layers.Dense(16, activation="relu")(inputs)))
    model.dtype_policy = "mixed_bfloat16"
    assert model.layers[0].get_config()["dtype"] == "float32"           # the Input's data dtype, not a policy
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")
    model.fit(x, x[:, :4], epochs=1, batch_size=16, verbose=0)
    model.save(tmp_path / "m")
    loaded = fx.load_model(tmp_path / "m")
    assert {l.compute_dtype for l in loaded.layers[1:]} == {"bfloat16"}
    np.testing.assert_array_equal(np.asarray(loaded.predict(x), np.float32), np.asarray(model.predict(x), np.float32))
