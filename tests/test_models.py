"""Models: Sequential and Functional graphs, variables, apply, naming, summary, config round-trip, errors."""
import contextlib
import io
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

import fluxnet as fx
from fluxnet import layers

RNG = np.random.default_rng(0)
KEY = jax.random.key(0)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def params(variables, name):
    return {k: np.asarray(v) for k, v in variables["params"][name].items()}


def dense_ref(x, p):
    return x @ p["kernel"] + p["bias"]


def small_cnn():
    x = layers.Input((6, 6, 2))
    h = layers.Conv2D(3, 3, padding="same", name="c1")(x)
    h = layers.BatchNormalization()(h)
    h = layers.MaxPooling2D()(h)
    h = layers.Dropout(0.5)(layers.Flatten()(h))
    return fx.Model(x, layers.Dense(4)(h), name="cnn")


# ------------------------------------------------------------------------------------ Sequential
def test_sequential_construction_styles_agree():
    def stack():
        return [layers.Dense(4, activation="relu"), layers.Dense(2)]

    from_list = fx.Sequential([layers.Input((3,)), *stack()])
    added = fx.Sequential()
    added.add(layers.Input((3,)))
    for layer in stack():
        added.add(layer)
    first = stack()
    keras2 = fx.Sequential([layers.Dense(4, activation="relu", input_shape=(3,)), first[1]])
    built = fx.Sequential(stack())
    built.build((None, 3))
    x = rand(5, 3)
    v = from_list.init(KEY)
    expected = dense_ref(np.maximum(dense_ref(x, params(v, "dense")), 0), params(v, "dense_1"))
    for model in (from_list, added, keras2, built):
        assert [layer.name for layer in model.layers] == ["dense", "dense_1"]  # the Input is not a layer
        assert model.count_params() == (3 + 1) * 4 + (4 + 1) * 2
        np.testing.assert_allclose(model.apply(v, x)[0], expected, atol=1e-5)
    assert from_list.get_layer(index=0).name == "dense" and from_list.get_layer("dense_1").units == 2


def test_sequential_shape_error_names_the_layer_and_leaves_the_model_unchanged():
    model = fx.Sequential([layers.Input((4,)), layers.Dense(3)])
    with pytest.raises(layers.LayerError, match=r"Conv2D layer 'conv2d' cannot take input of shape \(None, 3\): "
                                                "Conv2D needs a 4-D input"):
        model.add(layers.Conv2D(2, 3))
    model.add(layers.Dense(2))
    assert [layer.name for layer in model.layers] == ["dense", "dense_1"]
    assert model.count_params() == (4 + 1) * 3 + (3 + 1) * 2


def test_sequential_without_input_shape_and_misplaced_input():
    model = fx.Sequential([layers.Dense(2)])
    with pytest.raises(ValueError, match="has no input shape yet: start it with layers.Input"):
        model.init(KEY)
    with pytest.raises(ValueError, match="Input must come first"):
        fx.Sequential([layers.Dense(2, input_shape=(3,)), layers.Input((2,))])


# ------------------------------------------------------------------------------------ Functional graphs
def test_functional_multiple_inputs_and_outputs_as_list_and_dict():
    a, b = layers.Input((3,), name="a"), layers.Input((3,), name="b")
    ha, hb = layers.Dense(2, name="da")(a), layers.Dense(2, name="db")(b)
    added, joined = layers.Add()([ha, hb]), layers.Concatenate()([ha, hb])
    xa, xb = rand(4, 3), rand(4, 3)

    as_list = fx.Model([a, b], [added, joined])
    assert [layer.name for layer in as_list.layers][:2] == ["a", "b"]  # InputLayers first (Keras)
    assert as_list.get_layer(index=0).name == "a"
    v = as_list.init(KEY)
    ya, yb = dense_ref(xa, params(v, "da")), dense_ref(xb, params(v, "db"))
    (out_add, out_cat), _ = as_list.apply(v, [xa, xb])
    np.testing.assert_allclose(out_add, ya + yb, atol=1e-5)
    np.testing.assert_allclose(out_cat, np.concatenate([ya, yb], -1), atol=1e-5)

    as_dict = fx.Model({"left": a, "right": b}, {"sum": added, "cat": joined})
    out, _ = as_dict.apply(v, {"left": xa, "right": xb})
    assert set(out) == {"sum", "cat"}
    np.testing.assert_allclose(out["sum"], ya + yb, atol=1e-5)
    with pytest.raises(ValueError, match=r"expects a dict of inputs with keys \['left', 'right'\]"):
        as_dict.apply(v, {"left": xa})
    with pytest.raises(ValueError, match="expects a list of 2 inputs"):
        as_list.apply(v, xa)


def test_layer_called_twice_shares_weights():
    a, b = layers.Input((3,)), layers.Input((3,))
    shared = layers.Dense(2)
    model = fx.Model([a, b], layers.Add()([shared(a), shared(b)]))
    v = model.init(KEY)
    assert list(v["params"]) == ["dense"] and model.count_params() == 8
    xa, xb = rand(2, 3), rand(2, 3)
    np.testing.assert_allclose(model.apply(v, [xa, xb])[0], dense_ref(xa, params(v, "dense")) +
                               dense_ref(xb, params(v, "dense")), atol=1e-5)
    assert "dense[0][0]" in model.summary(print_fn=None)  # Connected to: the shared layer's calls
    with pytest.raises(ValueError, match="called 2 times"):
        _ = shared.output


def test_sub_model_runs_on_parent_variables():
    model = small_cnn()
    v = model.init(KEY)
    conv = model.get_layer("c1")
    assert conv.output.shape == (None, 6, 6, 3) and conv.output.layer is conv
    sub = fx.Model(model.inputs, model.get_layer("flatten").output)
    assert [layer.name for layer in sub.layers] == [layer.name for layer in model.layers][:5]  # same names
    np.testing.assert_array_equal(sub.init(KEY)["params"]["c1"]["kernel"], v["params"]["c1"]["kernel"])
    x = rand(2, 6, 6, 2)
    features, _ = sub.apply(v, x)
    full, _ = model.apply(v, x)  # inference: Dropout is the identity, so full = dense(features)
    assert features.shape == (2, 27)
    np.testing.assert_allclose(dense_ref(np.asarray(features), params(v, "dense")), full, atol=1e-5)
    _, state = sub.apply(v, x, training=True)
    assert not np.allclose(state["batch_stats"]["batch_normalization"]["moving_mean"], 0)  # BN updated


def test_jit_apply_and_training_state():
    model = small_cnn()
    v, x = model.init(KEY), rand(2, 6, 6, 2)
    eager, state = model.apply(v, x)
    jitted = jax.jit(model.apply)
    np.testing.assert_allclose(jitted(v, x)[0], eager, atol=1e-6)
    np.testing.assert_array_equal(state["batch_stats"]["batch_normalization"]["moving_mean"],
                                  v["batch_stats"]["batch_normalization"]["moving_mean"])  # no update
    train = jax.jit(model.apply, static_argnames="training")
    y1, s1 = train(v, x, training=True, rng=jax.random.key(1))
    y2, _ = model.apply(v, x, training=True, rng=jax.random.key(1))
    y3, _ = train(v, x, training=True, rng=jax.random.key(2))
    np.testing.assert_allclose(y1, y2, atol=1e-5)  # same key, same dropout mask
    assert not np.allclose(y1, y3)
    assert set(s1) == {"batch_stats"} and set(s1["batch_stats"]) == {"batch_normalization"}


# ------------------------------------------------------------------------------------ counts, summary
def test_count_params_and_summary_totals():
    model = small_cnn()
    conv, bn, dense = 2 * 3 * 3 * 3 + 3, 4 * 3, (3 * 3 * 3 + 1) * 4
    assert model.count_params() == conv + bn + dense
    assert model.param_counts() == {"trainable": conv + 6 + dense, "non_trainable": 6}
    printed = []
    text = model.summary(print_fn=printed.append)
    assert printed == [text]
    assert f"Total params: {conv + bn + dense:,}" in text
    assert f"Trainable params: {conv + 6 + dense:,}" in text and "Non-trainable params: 6 " in text
    assert "c1 (Conv2D)" in text and "(None, 6, 6, 3)" in text and "input_layer[0][0]" in text
    model.get_layer("dense").trainable = False
    assert model.param_counts()["non_trainable"] == 6 + dense
    assert model.param_labels()["dense"] == {"kernel": "frozen", "bias": "frozen"}


def test_sequential_summary_hides_input():
    text = fx.Sequential([layers.Input((3,)), layers.Dense(2)]).summary(print_fn=None)
    assert "input_layer" not in text and "dense (Dense)" in text and "Total params: 8 (32.00 B)" in text


# ------------------------------------------------------------------------------------ config round trip
def roundtrip(model):
    config = json.loads(json.dumps(model.get_config()))
    rebuilt = fx.model_from_config(config)
    assert rebuilt.get_config() == config
    return rebuilt


def test_config_roundtrip_functional_and_sequential():
    a, b = layers.Input((4,), name="a"), layers.Input((4,), name="b")
    shared = layers.Dense(3, activation="tanh", trainable=False)
    ha, hb = shared(a), shared(b)
    h = layers.Concatenate()([ha, hb])
    functional = fx.Model({"a": a, "b": b}, {"y": layers.Dense(2)(layers.Dropout(0.2)(h)), "h": h,
                                             "sum": layers.Add()([ha, hb])})
    rebuilt = roundtrip(functional)
    assert rebuilt.get_layer("dense").trainable is False
    v, xs = functional.init(KEY), {"a": rand(2, 4), "b": rand(2, 4)}
    for key in ("y", "h", "sum"):
        np.testing.assert_array_equal(rebuilt.apply(v, xs)[0][key], functional.apply(v, xs)[0][key])

    seq = fx.Sequential([layers.Rescaling(np.float32(0.5), input_shape=(5, 5, 1)),
                         layers.ZeroPadding2D(((0, 1), (1, 0))),
                         layers.Conv2D(2, (2, 3), strides=2, padding="same"),
                         layers.BatchNormalization(epsilon=0.01, center=False), layers.AveragePooling2D(),
                         layers.Reshape((-1,)), layers.Activation("gelu")], name="seq")
    rebuilt = roundtrip(seq)
    assert isinstance(rebuilt, fx.Sequential) and rebuilt.name == "seq"
    v, x = seq.init(KEY), rand(2, 5, 5, 1)
    np.testing.assert_array_equal(rebuilt.apply(v, x)[0], seq.apply(v, x)[0])


# ------------------------------------------------------------------------------------ names
def test_names_are_keras_style_and_fixed_for_life():
    x = layers.Input((3,))
    d1, d2, d3 = layers.Dense(2), layers.Dense(2), layers.Dense(2, name="dense")
    h = d1(x)
    first = fx.Model(x, h)
    assert d1.name == "dense" and d2.name is None
    bigger = fx.Model(x, d2(h))
    assert [layer.name for layer in bigger.layers] == ["input_layer", "dense", "dense_1"]
    assert first.get_layer("dense") is d1  # unchanged by the bigger model
    with pytest.raises(ValueError, match="Duplicate layer name 'dense' in model 'functional': used by a Dense and "):
        fx.Model(x, d3(bigger.output))
    with pytest.raises(ValueError, match="Duplicate layer name 'x' in model 'sequential'"):
        fx.Sequential([layers.Input((2,)), layers.Dense(2, name="x"), layers.Dense(2, name="x")])


BUILD_SCRIPT = """
import jax, numpy as np, fluxnet as fx
from fluxnet import layers
x = layers.Input((5, 5, 1))
h = layers.Conv2D(2, 3)(x)
h = layers.BatchNormalization()(layers.Conv2D(2, 3, padding="same")(h))
model = fx.Model(x, layers.Dense(3)(layers.Flatten()(h)))
v = model.init(jax.random.key(0))
print([layer.name for layer in model.layers])
print({name: float(np.abs(p["kernel"]).sum()) for name, p in v["params"].items() if "kernel" in p})
"""


def test_names_and_init_values_are_the_same_in_a_fresh_process():
    child = subprocess.run([sys.executable, "-c", BUILD_SCRIPT], capture_output=True, text=True, check=True,
                           timeout=120)
    here = io.StringIO()
    with contextlib.redirect_stdout(here):
        exec(BUILD_SCRIPT, {})
    assert child.stdout == here.getvalue()
    assert child.stdout.startswith(
        "['input_layer', 'conv2d', 'conv2d_1', 'batch_normalization', 'flatten', 'dense']")


# ------------------------------------------------------------------------------------ errors
def test_outputs_must_depend_on_inputs():
    a, b = layers.Input((3,)), layers.Input((3,))
    with pytest.raises(ValueError, match=r"do not depend on its input inputs\[1\] of shape \(None, 3\)"):
        fx.Model([a, b], layers.Dense(1)(a))
    with pytest.raises(ValueError, match="depend on an Input that is not among its inputs"):
        fx.Model(a, layers.Add()([a, b]))


def test_inputs_of_wrong_shape_or_rank():
    model = small_cnn()
    v = model.init(KEY)
    for bad in (rand(2, 6, 5, 2), rand(6, 6, 2)):
        message = (r"Input 'input_layer' of model 'cnn' expects shape \(None, 6, 6, 2\), got "
                   + str(bad.shape).replace("(", r"\(").replace(")", r"\)"))
        with pytest.raises(ValueError, match=message):
            model.apply(v, bad)
        with pytest.raises(ValueError, match=message):  # a plain ValueError at trace time
            jax.jit(model.apply)(v, bad)


def test_variables_that_do_not_fit_list_every_path():
    model = small_cnn()
    v = model.init(KEY)
    bad = {"params": {**v["params"], "c1": {"kernel": np.zeros((3, 3, 1, 3), np.float32), "scale": np.ones(3)}}}
    with pytest.raises(ValueError) as info:
        model.apply(bad, rand(1, 6, 6, 2))
    message = str(info.value)
    assert "do not fit model 'cnn'" in message
    for line in ["params/c1/kernel: variables shape (3, 3, 1, 3), model expects (3, 3, 2, 3)",
                 "params/c1/bias: missing from the variables", "params/c1/scale: unexpected (in the variables",
                 "batch_stats/batch_normalization/moving_mean: missing from the variables"]:
        assert line in message


def test_get_layer_errors():
    model = small_cnn()
    with pytest.raises(ValueError, match=r"Unknown layer in model 'cnn': 'c2'\. Did you mean 'c1'\?.*Valid names:"):
        model.get_layer("c2")
    with pytest.raises(ValueError, match="Layer index 9 is out of range: model 'cnn' has 7 layers"):
        model.get_layer(index=9)
    with pytest.raises(ValueError, match="exactly one of name= or index="):
        model.get_layer()
