"""Models as layers of bigger models (Keras' transfer-learning idiom), ``model.trainable``, ``Lambda``,
and the row mask of ``Model.apply`` (BatchNormalization's statistics over real rows only)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fluxnet as fx
from fluxnet import activations, layers
from fluxnet.errors import ArgumentError, ArgumentTypeError, DataError
from fluxnet.layers.base import layer_rng
from test_models import roundtrip

RNG = np.random.default_rng(0)
KEY = jax.random.key(0)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def make_base(name="base", dropout=0.5):
    """Conv -> BN -> (Dropout) -> pooling -> Dense: every kind of variable and randomness."""
    x = layers.Input((5, 5, 2))
    h = layers.BatchNormalization()(layers.Conv2D(3, 3, name="conv")(x))
    if dropout:
        h = layers.Dropout(dropout)(h)
    h = layers.Dense(4, name="proj")(layers.GlobalAveragePooling2D()(h))
    return fx.Model(x, h, name=name)


def nested(base, training=None):
    x = layers.Input((5, 5, 2))
    return fx.Model(x, layers.Dense(2, name="head")(base(x, training=training)), name="outer")


def inner_variables(variables, name="base"):
    return {c: sub[name] for c, sub in variables.items() if name in sub}


def head(h, p):
    return np.asarray(h) @ np.asarray(p["kernel"]) + np.asarray(p["bias"])


# ------------------------------------------------------------------------------------ structure, outputs
def test_nested_functional_is_one_layer_with_its_variables_under_its_name():
    base = make_base()
    model = nested(base)
    assert [l.name for l in model.layers] == ["input_layer", "base", "head"]
    assert model.get_layer("base") is base and model.get_layer(index=1) is base
    v = model.init(KEY)
    assert set(v["params"]) == {"base", "head"} and set(v["batch_stats"]) == {"base"}
    assert set(v["params"]["base"]) == {"conv", "batch_normalization", "proj"}
    jax.tree.map(np.testing.assert_array_equal, v["params"]["base"],
                 base.init(layer_rng(KEY, "base"))["params"])  # the inner init gets the layer's key
    x = rand(3, 5, 5, 2)
    y, state = model.apply(v, x)
    h, _ = base.apply(inner_variables(v), x)
    np.testing.assert_allclose(y, head(h, v["params"]["head"]), rtol=1e-6, atol=1e-6)
    assert jax.tree.structure(state) == jax.tree.structure({"batch_stats": v["batch_stats"]})
    # a sub-model cut at the nested model's output runs on the bigger model's variables
    sub = fx.Model(model.inputs, model.get_layer("head").input)
    np.testing.assert_array_equal(sub.apply(v, x)[0], h)


def test_nested_in_sequential_and_added_with_add():
    base = make_base()
    seq = fx.Sequential([base, layers.Dense(2, name="head")])
    assert seq.inputs[0].shape == (None, 5, 5, 2)  # the model's input shape
    assert [l.name for l in seq.layers] == ["base", "head"]
    v, x = seq.init(KEY), rand(2, 5, 5, 2)
    h, _ = base.apply(inner_variables(v), x)
    np.testing.assert_allclose(seq.apply(v, x)[0], head(h, v["params"]["head"]), rtol=1e-6, atol=1e-6)

    added = fx.Sequential([layers.Input((5, 5, 2))])
    added.add(base)
    added.add(layers.Dense(2))
    assert [l.name for l in added.layers] == ["base", "dense"]
    assert set(added.init(KEY)["params"]) == {"base", "dense"}
    # an unbuilt Sequential takes its input shape from its first call, as Keras
    block = fx.Sequential([layers.Dense(3), layers.Dense(2)], name="block")
    x_in = layers.Input((4,))
    outer = fx.Model(x_in, block(x_in))
    assert block.inputs[0].shape == (None, 4) and outer.count_params() == (4 + 1) * 3 + (3 + 1) * 2


def test_training_argument_of_a_call_overrides_the_model_mode():
    base = make_base()
    x, key = rand(4, 5, 5, 2), jax.random.key(3)
    frozen_call = nested(base, training=False)
    v = frozen_call.init(KEY)
    y, state = frozen_call.apply(v, x, training=True, rng=key)
    np.testing.assert_array_equal(state["batch_stats"]["base"]["batch_normalization"]["moving_mean"],
                                  v["batch_stats"]["base"]["batch_normalization"]["moving_mean"])
    np.testing.assert_array_equal(y, frozen_call.apply(v, x)[0])  # no dropout, moving statistics

    base = make_base()  # a fresh one: a second call of the first would draw with call index 1
    following = nested(base)  # training=None: the inner model follows the outer one
    y, state = following.apply(v, x, training=True, rng=key)
    h, inner_state = base.apply(inner_variables(v), x, training=True, rng=layer_rng(key, "base"))
    np.testing.assert_allclose(y, head(h, v["params"]["head"]), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(state["batch_stats"]["base"]["batch_normalization"]["moving_mean"],
                                  inner_state["batch_stats"]["batch_normalization"]["moving_mean"])
    assert not np.allclose(y, following.apply(v, x)[0])

    no_dropout = make_base("bn_only", dropout=0)
    forced = nested(no_dropout, training=True)  # batch statistics even in inference
    v = forced.init(KEY)
    _, state = forced.apply(v, x)
    assert not np.allclose(state["batch_stats"]["bn_only"]["batch_normalization"]["moving_mean"], 0)

    # a plain layer's call takes the same argument
    x_in = layers.Input((3,))
    bn_model = fx.Model(x_in, layers.BatchNormalization()(x_in, training=False))
    v = bn_model.init(KEY)
    _, state = bn_model.apply(v, rand(4, 3), training=True)
    np.testing.assert_array_equal(state["batch_stats"]["batch_normalization"]["moving_mean"], 0)
    with pytest.raises(ArgumentTypeError, match="training must be None, True or False"):
        layers.Dense(1)(x_in, training="no")


def test_a_model_called_twice_shares_its_variables():
    base = make_base()
    a, b = layers.Input((5, 5, 2)), layers.Input((5, 5, 2))
    model = fx.Model([a, b], layers.Add()([base(a), base(b)]))
    v = model.init(KEY)
    assert set(v["params"]) == {"base"}
    xa, xb = rand(2, 5, 5, 2), rand(2, 5, 5, 2)
    iv = inner_variables(v)
    np.testing.assert_allclose(model.apply(v, [xa, xb])[0], base.apply(iv, xa)[0] + base.apply(iv, xb)[0],
                               rtol=1e-6, atol=1e-6)
    key = jax.random.key(1)  # each call draws its own dropout mask: layer_rng(key, name, call_index)
    y, _ = model.apply(v, [xa, xa], training=True, rng=key)
    expected = [base.apply(iv, xa, training=True, rng=layer_rng(key, "base", i))[0] for i in (0, 1)]
    np.testing.assert_allclose(y, expected[0] + expected[1], rtol=1e-6, atol=1e-6)
    assert not np.allclose(expected[0], expected[1])


def test_calling_a_model_on_arrays_or_with_several_outputs_is_refused():
    base = make_base()
    with pytest.raises(ArgumentTypeError, match=r"model.apply\(variables, x"):
        base(rand(1, 5, 5, 2))
    x = layers.Input((3,))
    two = fx.Model(x, [layers.Dense(1)(x), layers.Dense(2)(x)], name="two")
    with pytest.raises(ArgumentError, match="'two' has 2 outputs"):
        two(layers.Input((3,)))
    with pytest.raises(layers.LayerError, match=r"expects shape \(None, 5, 5, 2\), got \(None, 4, 4, 2\)"):
        base(layers.Input((4, 4, 2)))
    seq = fx.Sequential([layers.Input((5, 5, 2))])
    with pytest.raises(ArgumentError, match="cannot contain itself"):
        seq.add(seq)


def test_nested_models_get_unique_default_names_and_layers_have_one_owner():
    first = fx.Sequential([layers.Input((3,)), layers.Dense(3)])
    second = fx.Sequential([layers.Input((3,)), layers.Dense(3)])
    outer = fx.Sequential([layers.Input((3,)), first, second], name="outer")
    assert [l.name for l in outer.layers] == ["sequential", "sequential_1"] and second.name == "sequential_1"
    named = fx.Sequential([layers.Input((3,)), layers.Dense(3)], name="block")
    with pytest.raises(ArgumentError, match="Duplicate layer name 'block'"):
        fx.Sequential([named, fx.Sequential([layers.Input((3,)), layers.Dense(3)], name="block")])
    base = make_base()
    x = layers.Input((5, 5, 2))
    with pytest.raises(ArgumentError, match="both as 'base/proj' and as 'proj'"):
        fx.Model(x, layers.Add()([base(x), base.get_layer("proj")(layers.Dense(3)(layers.Flatten()(x)))]))


# ------------------------------------------------------------------------------------ trainable
def test_model_trainable_false_freezes_all_its_layers_recursively():
    base = make_base()
    model = nested(base)
    everything = model.count_params()
    base.trainable = False
    assert base.trainable is False and all(not l.trainable for l in base.layers)
    head_size = 4 * 2 + 2
    assert model.param_counts() == {"trainable": head_size, "non_trainable": everything - head_size}
    labels = model.param_labels()
    assert set(jax.tree.leaves(labels["base"])) == {"frozen"} and set(jax.tree.leaves(labels["head"])) == {"trainable"}
    v, x = model.init(KEY), rand(4, 5, 5, 2)
    _, state = model.apply(v, x, training=True, rng=KEY)  # a frozen BatchNormalization runs in inference mode
    np.testing.assert_array_equal(state["batch_stats"]["base"]["batch_normalization"]["moving_variance"], 1)

    model.trainable = False
    assert model.trainable is False and model.param_counts() == {"trainable": 0, "non_trainable": everything}
    assert set(jax.tree.leaves(model.param_labels())) == {"frozen"}
    base.get_layer("proj").trainable = True  # Keras: a layer of a frozen model stays frozen
    assert model.param_counts()["trainable"] == 0
    model.trainable = True
    assert model.param_counts() == {"trainable": everything - 6, "non_trainable": 6}  # BN moving stats


def test_param_labels_recurse_with_groups_and_frozen_inner_layers():
    base = make_base()
    model = nested(base)
    base.get_layer("conv").trainable = False
    labels = model.param_labels(groups={"base": "backbone", "head": "head"})
    assert labels["base"]["conv"] == {"kernel": "frozen", "bias": "frozen"}
    assert set(jax.tree.leaves(labels["base"]["proj"])) == {"backbone"}
    assert set(jax.tree.leaves(labels["base"]["batch_normalization"])) == {"backbone"}
    assert set(jax.tree.leaves(labels["head"])) == {"head"}
    assert jax.tree.structure(labels) == jax.tree.structure(model.abstract_variables()["params"])


# ------------------------------------------------------------------------------------ summary, config
def test_summary_shows_a_nested_model_as_one_row():
    base = make_base()
    model = nested(base)
    text = model.summary(print_fn=None)
    assert "base (Functional)" in text and f"{base.count_params():,}" in text and "base[0][0]" in text
    assert "(None, 4)" in text and "conv (Conv2D)" not in text
    assert f"Total params: {model.count_params():,}" in text
    seq = fx.Sequential([layers.Input((3,)), fx.Sequential([layers.Input((3,)), layers.Dense(2)], name="block")])
    assert "block (Sequential)" in seq.summary(print_fn=None)


def test_config_roundtrip_of_nested_models():
    base = make_base()
    base.get_layer("conv").trainable = False
    model = nested(base, training=False)
    block = fx.Sequential([layers.Input((4,)), layers.Dense(3)], name="block")
    block.trainable = False
    model = fx.Model(model.inputs, layers.Concatenate()([model.output, block(model.get_layer("head").input)]))
    rebuilt = roundtrip(model)
    assert type(rebuilt.get_layer("base")) is fx.Model and type(rebuilt.get_layer("block")) is fx.Sequential
    assert rebuilt.get_layer("block").trainable is False and rebuilt.get_layer("base").trainable is True
    assert rebuilt.get_layer("base").get_layer("conv").trainable is False
    v, x = model.init(KEY), rand(3, 5, 5, 2)
    for training in (False, True):
        ours = model.apply(v, x, training=training, rng=KEY)
        theirs = rebuilt.apply(v, x, training=training, rng=KEY)
        jax.tree.map(np.testing.assert_array_equal, ours, theirs)
    assert rebuilt.param_counts() == model.param_counts()

    seq = fx.Sequential([make_base("b2"), layers.Dense(2)])
    rebuilt = roundtrip(seq)
    v = seq.init(KEY)
    np.testing.assert_array_equal(rebuilt.apply(v, x)[0], seq.apply(v, x)[0])


# ------------------------------------------------------------------------------------ Lambda
def test_lambda_infers_shapes_takes_lists_and_has_no_variables():
    x = layers.Input((3, 4))
    flat = layers.Lambda(lambda t: t.reshape(t.shape[0], -1))(x)
    assert flat.shape == (None, 12)
    ragged = layers.Input((None, 4))
    assert layers.Lambda(lambda t: t.sum(axis=1))(ragged).shape == (None, 4)
    assert layers.Lambda(lambda t: t[:, :, :2])(ragged).shape == (None, None, 2)
    a, b = layers.Input((4,)), layers.Input((4,))
    prod = layers.Lambda(lambda ts: ts[0] * ts[1], name="prod")([a, b])
    given = layers.Lambda(jnp.square, output_shape=(4,))(prod)
    assert given.shape == (None, 4)
    assert layers.Lambda(lambda t: t[:, :2], output_shape=lambda s: (s[0], 2))(a).shape == (None, 2)
    model = fx.Model([a, b], given)
    assert model.count_params() == 0 and model.init(KEY) == {"params": {}}
    xa, xb = rand(2, 4), rand(2, 4)
    np.testing.assert_allclose(model.apply(model.init(KEY), [xa, xb])[0], (xa * xb) ** 2, rtol=1e-6)
    with pytest.raises(layers.LayerError, match="must return one array"):
        layers.Lambda(lambda t: (t, t))(a)


def test_lambda_config_refuses_code_and_round_trips_registered_activations():
    x = layers.Input((3,))
    model = fx.Model(x, layers.Lambda(lambda t: t * 2, name="double")(x))
    with pytest.raises(ArgumentError, match="Lambda layer 'double'.*not a registered activation.*bytecode"):
        model.get_config()
    by_name = layers.Lambda("relu", name="by_name")(x)
    by_fn = layers.Lambda(activations.get("tanh"), output_shape=(3,), name="by_fn")(by_name)
    model = fx.Model(x, by_fn)
    rebuilt = roundtrip(model)
    config = rebuilt.get_layer("by_fn").get_config()
    assert config["function"] == "tanh" and config["output_shape"] == [3]
    xs = rand(4, 3)
    np.testing.assert_allclose(rebuilt.apply({"params": {}}, xs)[0], np.tanh(np.maximum(xs, 0)), rtol=1e-6)


# ------------------------------------------------------------------------------------ row mask
def test_batch_normalization_masked_statistics_equal_the_unpadded_batch():
    x_in = layers.Input((4, 4, 3))
    model = fx.Model(x_in, layers.BatchNormalization(momentum=0.5)(layers.Conv2D(3, 1)(x_in)))
    v = model.init(KEY)
    real = rand(5, 4, 4, 3) * 3 + 1
    padded = np.concatenate([real, np.full((3, 4, 4, 3), np.nan, np.float32)])  # padding never counts
    mask = np.arange(8) < 5
    y, state = model.apply(v, real, training=True)
    y_pad, state_pad = model.apply(v, padded, training=True, mask=mask)
    np.testing.assert_allclose(y_pad[:5], y, rtol=1e-6, atol=1e-6)
    jax.tree.map(lambda p, r: np.testing.assert_allclose(p, r, rtol=1e-6), state_pad, state)
    _, kept = model.apply(v, padded, training=True, mask=np.zeros(8, bool))  # no real rows: no update
    jax.tree.map(np.testing.assert_array_equal, kept, {"batch_stats": v["batch_stats"]})
    np.testing.assert_array_equal(model.apply(v, padded, mask=mask)[0], model.apply(v, padded)[0])  # inference
    with pytest.raises(DataError, match=r"bool array of shape \(8,\)"):
        model.apply(v, padded, training=True, mask=np.ones(8, np.float32))
    with pytest.raises(DataError, match=r"bool array of shape \(8,\)"):
        model.apply(v, padded, training=True, mask=mask[:5])


def test_without_a_mask_batch_normalization_keeps_its_two_pass_numerics():
    x_in = layers.Input((3,))
    model = fx.Model(x_in, layers.BatchNormalization(name="bn")(x_in))
    v, x = model.init(KEY), jnp.asarray(rand(6, 3) * 2 + 1)
    y, state = model.apply(v, x, training=True)
    mean, var = jnp.mean(x, axis=(0,)), jnp.var(x, axis=(0,))  # the same ops, one by one
    inv = jax.lax.rsqrt(var + 1e-3) * v["params"]["bn"]["gamma"]
    shift = -mean * inv + v["params"]["bn"]["beta"]
    np.testing.assert_array_equal(y, x * inv.reshape(1, 3) + shift.reshape(1, 3))
    np.testing.assert_array_equal(state["batch_stats"]["bn"]["moving_mean"], 0.0 * 0.99 + mean * (1.0 - 0.99))


def test_the_mask_reaches_nested_models_and_skips_layers_without_accepts_mask():
    @layers.register("MaskFreeShift")
    class Shift(layers.Layer):  # an older custom layer: its apply has no mask argument
        def call(self, variables, inputs, *, training=False, rng=None):
            return inputs + 1.0

    base = make_base(dropout=0)
    x = layers.Input((5, 5, 2))
    model = fx.Model(x, Shift()(base(x)))
    v = model.init(KEY)
    real = rand(3, 5, 5, 2)
    padded = np.concatenate([real, np.zeros((2, 5, 5, 2), np.float32)])
    y, state = model.apply(v, real, training=True)
    y_pad, state_pad = jax.jit(model.apply, static_argnames="training")(v, padded, training=True,
                                                                       mask=np.arange(5) < 3)
    np.testing.assert_allclose(y_pad[:3], y, rtol=1e-6, atol=1e-6)
    jax.tree.map(lambda p, r: np.testing.assert_allclose(p, r, rtol=1e-6), state_pad, state)


# ------------------------------------------------------------------------------------ Keras comparison


def test_nested_counts_and_trainable_split_match_keras(keras):
    def build(lib, Model, Sequential, Input):
        x = Input((5, 5, 2))
        h = lib.GlobalAveragePooling2D()(lib.BatchNormalization()(lib.Conv2D(3, 3)(x)))
        base = Model(x, lib.Dense(4)(h), name="base")
        block = Sequential([Input((5, 5, 2)), lib.Conv2D(2, 1), lib.BatchNormalization(), lib.Flatten()],
                           name="block")
        y = Input((5, 5, 2))
        outer = Model(y, lib.Concatenate()([lib.Dense(2)(base(y, training=False)), block(y)]))
        return outer, base

    kouter, kbase = build(keras.layers, keras.Model, keras.Sequential, keras.Input)
    outer, base = build(layers, fx.Model, fx.Sequential, layers.Input)
    assert [type(l).__name__ for l in kouter.layers] == ["InputLayer", "Functional", "Dense", "Sequential",
                                                         "Concatenate"]
    assert [l.name for l in outer.layers][1:] == ["base", "dense", "block", "concatenate"]

    def split(kmodel):
        trainable = sum(int(np.prod(w.shape)) for w in kmodel.trainable_weights)
        return {"trainable": trainable, "non_trainable": kmodel.count_params() - trainable}

    for step in ("all", "inner layer", "inner model", "outer"):
        if step == "inner layer":
            kbase.layers[1].trainable = base.layers[1].trainable = False
        elif step == "inner model":
            kbase.trainable = base.trainable = False
        elif step == "outer":
            kouter.trainable = outer.trainable = False
            kbase.layers[-1].trainable = base.layers[-1].trainable = True
        assert outer.count_params() == kouter.count_params(), step
        assert outer.param_counts() == split(kouter), step


def test_keras_weights_of_a_nested_model_load_into_the_nested_layout(keras, tmp_path):
    """Keras saves an inner model's layers under ``layers/<its key>/layers/``; they load into the
    variables nested under the inner model's name, and the outputs equal Keras'."""
    def build(lib, Model, Sequential, Input, base_name):
        base = Sequential([Input((6, 6, 2)), lib.Conv2D(3, 3), lib.BatchNormalization()], name=base_name)
        x = Input((6, 6, 2))
        return Model(x, lib.Dense(2)(lib.Flatten()(base(x, training=False))))

    k = build(keras.layers, keras.Model, keras.Sequential, keras.Input, "base")
    rng = np.random.default_rng(0)
    k.set_weights([rng.normal(size=w.shape).astype("float32") + (3 if w.ndim == 1 else 0) for w in k.get_weights()])
    k.save_weights(tmp_path / "n.weights.h5")
    model = build(layers, fx.Model, fx.Sequential, layers.Input, "feature_base")   # names need not agree
    variables = fx.load_keras_weights(model, tmp_path / "n.weights.h5")
    assert set(variables["params"]["feature_base"]) == {"conv2d", "batch_normalization"}
    x = rng.normal(size=(4, 6, 6, 2)).astype("float32")
    np.testing.assert_allclose(model.apply(variables, x)[0], np.asarray(k(x, training=False)), rtol=1e-5, atol=1e-5)
