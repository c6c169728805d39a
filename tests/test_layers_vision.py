"""DepthwiseConv2D, SeparableConv2D, ReLU, LayerNormalization, Normalization, per-channel Rescaling and
Cropping2D against Keras 3 (same weights, same outputs), their configs, errors, training and weights files."""
import inspect
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fluxnet as fx
from fluxnet import layers
from fluxnet.errors import ArgumentError
from fluxnet.layers import base
from fluxnet.layers.variable_order import VARIABLE_ORDERS

RNG = np.random.default_rng(0)
NEW = ["DepthwiseConv2D", "SeparableConv2D", "ReLU", "LayerNormalization", "Normalization", "Rescaling", "Cropping2D"]


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def one_layer(layer, shape):
    inp = layers.Input(shape)
    return fx.Model(inp, layer(inp))


def variables_from_keras(model, layer, weights):
    """The variables of ``model`` (one ``layer``) from Keras' ``get_weights()``, matched by VARIABLE_ORDERS."""
    abstract = model.abstract_variables()
    where = {name: c for c, sub in abstract.items() for name in sub.get(layer.name, {})}
    names = [n for n in VARIABLE_ORDERS.get(type(layer).__name__) if n in where] if where else []
    assert len(names) == len(weights), (names, [w.shape for w in weights])
    variables = {c: {} for c in abstract}
    for name, weight in zip(names, weights):
        leaf = abstract[where[name]][layer.name][name]
        assert (leaf.shape, leaf.dtype) == (weight.shape, weight.dtype), name
        variables[where[name]].setdefault(layer.name, {})[name] = weight
    return variables


def assert_matches_keras(ours, theirs, x, spatial=None, randomize=True):
    """Same output shape (also on an input of unknown ``spatial`` sizes), parameter count and outputs
    as the Keras layer, with the Keras layer's (randomised) weights copied in."""
    expected_shape = theirs.compute_output_shape((None, *x.shape[1:]))
    theirs(x)  # builds it
    if randomize:
        theirs.set_weights([w if w.dtype.kind == "i" else np.abs(rand(*w.shape)) + 0.1 if "variance" in v.path
                            else rand(*w.shape) for v, w in zip(theirs.weights, theirs.get_weights())])
    model = one_layer(ours, x.shape[1:])
    assert model.outputs[0].shape == tuple(expected_shape)
    assert model.count_params() == theirs.count_params()
    out, _ = model.apply(variables_from_keras(model, ours, theirs.get_weights()), x)
    np.testing.assert_allclose(out, np.asarray(theirs(x)), rtol=1e-5, atol=1e-5)
    if spatial is not None:
        open_shape = (*spatial, *x.shape[len(spatial) + 1:])
        assert one_layer(type(ours).from_config(ours.get_config() | {"name": None}), open_shape).outputs[0].shape \
            == tuple(theirs.compute_output_shape((None, *open_shape)))


# ------------------------------------------------------------------------------------ convolutions
CONV_ARGS = [
    dict(kernel_size=3),
    dict(kernel_size=(3, 2), strides=2, padding="same", depth_multiplier=2, activation="relu"),
    # strides and dilation both > 1: allowed (Keras on JAX)
    dict(kernel_size=(2, 3), strides=(2, 1), dilation_rate=2, padding="same", depth_multiplier=3, use_bias=False),
]


@pytest.mark.parametrize("cls, filters", [("DepthwiseConv2D", ()), ("SeparableConv2D", (4,))])
def test_depthwise_and_separable_conv_match_keras(keras, cls, filters):
    x = rand(2, 9, 8, 3)
    for kwargs in CONV_ARGS:
        assert_matches_keras(getattr(layers, cls)(*filters, **kwargs), getattr(keras.layers, cls)(*filters, **kwargs),
                             x, spatial=(None, None))


def test_conv_variables_shapes_and_initializers():
    v = one_layer(layers.DepthwiseConv2D(3, depth_multiplier=2, bias_initializer="ones"), (5, 5, 3)).init(
        jax.random.key(0))["params"]["depthwise_conv2d"]
    assert v["kernel"].shape == (3, 3, 3, 2) and np.array_equal(v["bias"], np.ones(6))
    limit = np.sqrt(6 / (9 * 3 + 9 * 2))  # Keras' glorot_uniform fans of a depthwise kernel
    assert 0.8 * limit < np.abs(v["kernel"]).max() <= limit
    v = one_layer(layers.SeparableConv2D(5, 3, depth_multiplier=2, use_bias=False), (5, 5, 3)).init(
        jax.random.key(0))["params"]["separable_conv2d"]
    assert {k: a.shape for k, a in v.items()} == {"depthwise_kernel": (3, 3, 3, 2), "pointwise_kernel": (1, 1, 6, 5)}


# ------------------------------------------------------------------------------------ ReLU
def test_relu_matches_keras_formula(keras):
    x = np.concatenate([np.linspace(-10, 10, 81), [0.0, 1.0, 2.0, 6.0, 4.5]]).astype(np.float32)[None]
    for kwargs in [{}, {"max_value": 6}, {"max_value": 4.5}, {"negative_slope": 0.3}, {"threshold": 2.0},
                   {"max_value": 8.0, "negative_slope": 0.2, "threshold": 1.0}, {"negative_slope": 0.5, "max_value": 6},
                   {"threshold": 1.0, "max_value": 0.0}]:
        model = one_layer(layers.ReLU(**kwargs), (x.shape[1],))
        out, _ = model.apply({"params": {}}, x)
        np.testing.assert_allclose(out, keras.layers.ReLU(**kwargs)(x), rtol=1e-6, atol=1e-6, err_msg=str(kwargs))
    assert model.count_params() == 0


# ------------------------------------------------------------------------------------ LayerNormalization
def test_layer_normalization_matches_keras(keras):
    x = rand(2, 4, 5, 3) * 3 + 1
    for kwargs in [{}, {"axis": [1, 2]}, {"axis": (-2, -1), "epsilon": 1e-5}, {"center": False},
                   {"scale": False, "center": False}]:
        assert_matches_keras(layers.LayerNormalization(**kwargs), keras.layers.LayerNormalization(**kwargs), x,
                             spatial=(None, None) if kwargs.get("axis", -1) == -1 else None)
    with pytest.warns(UserWarning, match="rms_scaling"):
        ours = layers.LayerNormalization(rms_scaling=True)
    with pytest.warns(UserWarning):
        assert_matches_keras(ours, keras.layers.LayerNormalization(rms_scaling=True), x)
    ours = layers.LayerNormalization(axis=[2, 1])
    assert one_layer(ours, (4, 5, 3)).init(jax.random.key(0))["params"][ours.name]["gamma"].shape == (4, 5)


def test_normalizations_compute_in_float32_under_mixed_precision():
    x = rand(3, 6) + 1000  # bfloat16 (spacing 4 near 1000) would lose the spread around 1000
    model = one_layer(layers.LayerNormalization(dtype="mixed_bfloat16"), (6,))
    v = model.init(jax.random.key(0))
    out, _ = model.apply(v, x)
    assert out.dtype == jnp.bfloat16 and v["params"]["layer_normalization"]["gamma"].dtype == jnp.float32
    reference = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-3)
    np.testing.assert_allclose(np.asarray(out, np.float32), reference, rtol=1e-2, atol=1e-2)
    out, _ = one_layer(layers.Normalization(mean=1000.0, variance=1.0, dtype="mixed_bfloat16"), (6,)).apply(
        {"params": {}}, x)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), x - 1000, rtol=1e-2, atol=1e-2)


# ------------------------------------------------------------------------------------ Normalization
def test_normalization_adapt_and_outputs_match_keras(keras):
    x = rand(6, 4, 5, 3) * 2 + 3
    for kwargs in [{}, {"axis": None}, {"axis": (1, -1), "invert": True}]:
        theirs = keras.layers.Normalization(**kwargs)
        theirs.adapt(x)
        ours = layers.Normalization(**kwargs)
        model = one_layer(ours, x.shape[1:])
        assert model.count_params() == theirs.count_params()
        adapted = ours.adapt(x)["batch_stats"]
        for name, weight in zip(VARIABLE_ORDERS.get("Normalization"), theirs.get_weights()):
            assert adapted[name].dtype == weight.dtype, name
            np.testing.assert_allclose(adapted[name], weight, rtol=1e-5, atol=1e-6, err_msg=name)
        variables = model.init(jax.random.key(0))
        variables["batch_stats"][ours.name] = adapted
        np.testing.assert_allclose(model.apply(variables, x)[0], theirs(x), rtol=1e-5, atol=1e-5)
    theirs = keras.layers.Normalization()
    theirs.adapt(x)
    merged = layers.Normalization().adapt(iter([x[:2], x[2:3], x[3:]]))["batch_stats"]  # Keras' merge of batches
    for ours_, theirs_ in zip([merged["mean"], merged["variance"]], theirs.get_weights()):
        np.testing.assert_allclose(ours_, theirs_, rtol=1e-5, atol=1e-6)
    built = keras.layers.Normalization()
    built.build((None, 32, 32, 3))
    assert one_layer(layers.Normalization(), (32, 32, 3)).count_params() == built.count_params() == 7


def test_normalization_with_given_mean_and_variance_matches_keras(keras):
    x = rand(2, 4, 5, 3)
    for kwargs in [{"mean": 2.0, "variance": 4.0}, {"mean": [1.0, 2.0, 3.0], "variance": [1.0, 4.0, 9.0]},
                   {"mean": np.arange(3.0), "variance": np.array([0.0, 1.0, 2.0]), "invert": True},
                   {"axis": (1, 2), "mean": np.arange(4.0)[:, None], "variance": np.full((4, 1), 2.0)}]:
        assert_matches_keras(layers.Normalization(**kwargs), keras.layers.Normalization(**kwargs), x,
                             randomize=False)
    layer = layers.Normalization(mean=jnp.arange(3.0), variance=np.ones(3, np.float32))
    assert one_layer(layer, (4, 3)).abstract_variables() == {"params": {}}
    config = json.loads(json.dumps(layer.get_config()))
    assert config["mean"] == [0.0, 1.0, 2.0] and config["variance"] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_normalization_variables_survive_training_and_saving(policy, tmp_path):
    x, y = rand(32, 4, 4, 2) * 5 + 2, RNG.integers(0, 3, 32)
    norm = layers.Normalization()
    model = fx.Sequential([layers.Input((4, 4, 2)), norm, layers.Flatten(), layers.Dense(3, activation="softmax")])
    model.dtype_policy = policy
    trainer = fx.Trainer(model, loss="sparse_categorical_crossentropy", optimizer="adam")
    variables = model.init(jax.random.key(0))
    variables["batch_stats"][norm.name] = norm.adapt(x)["batch_stats"]
    state, history = trainer.fit(trainer.with_variables(trainer.init(jax.random.key(0)), variables), (x, y),
                                 epochs=1, batch_size=16, verbose=0)
    stats = state.model_state["batch_stats"][norm.name]
    assert stats["count"].dtype == jnp.int32 and np.isfinite(history.history["loss"][0])
    for name in ("mean", "variance"):
        assert stats[name].dtype == jnp.float32
        np.testing.assert_array_equal(stats[name], variables["batch_stats"][norm.name][name])
    assert not np.array_equal(state.params["dense"]["kernel"], variables["params"]["dense"]["kernel"])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")  # Keras' way, count included
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.save(tmp_path / "m")
    restored = fx.load_model(tmp_path / "m")
    assert restored.variables["batch_stats"][norm.name]["count"].dtype == np.int32
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))


# ------------------------------------------------------------------------------------ Rescaling, Cropping2D
def test_per_channel_rescaling_matches_keras(keras):
    x = RNG.integers(0, 256, (2, 3, 4, 3)).astype(np.float32)
    for kwargs in [{"scale": 1 / 255}, {"scale": [1 / 58.4, 1 / 57.1, 1 / 57.4], "offset": [-2.1, -2.0, -1.8]},
                   {"scale": np.array([0.5, 1.0, 2.0]), "offset": 1.0}, {"scale": 2.0, "offset": (1.0, 0.0, -1.0)},
                   {"scale": np.full((1, 4, 1), 0.5)}]:
        ours = layers.Rescaling(**kwargs)
        assert_matches_keras(ours, keras.layers.Rescaling(**kwargs), x, randomize=False)
        config = json.loads(json.dumps(ours.get_config()))
        assert np.array_equal(config["scale"], np.asarray(kwargs["scale"], np.float64))
    assert layers.Rescaling(jnp.array([1.0, 2.0])).get_config()["scale"] == [1.0, 2.0]


def test_cropping2d_matches_keras(keras):
    x = rand(2, 7, 6, 3)
    for cropping in [1, (2, 1), ((1, 0), (2, 3)), ((0, 2), 1), ((0, 0), (0, 0))]:
        assert_matches_keras(layers.Cropping2D(cropping), keras.layers.Cropping2D(cropping), x, spatial=(None, None),
                             randomize=False)
        assert layers.Cropping2D(cropping).cropping == keras.layers.Cropping2D(cropping).cropping
    assert layers.ZeroPadding2D(((0, 2), 1)).padding == keras.layers.ZeroPadding2D(((0, 2), 1)).padding


# ------------------------------------------------------------------------------------ Dropout noise_shape
@pytest.mark.parametrize("noise_shape, shared", [((None, 1, 1, 1), (1, 2, 3)), ((None, 1, 1, None), (1, 2)),
                                                 ((1, None, None, None), (0,))])
def test_dropout_noise_shape_broadcasts_the_mask_as_keras(keras, noise_shape, shared):
    """Keras' semantics (EfficientNet's drop connect): a None entry takes the input's size, a 1 shares the
    mask along that axis; kept values scaled by 1 / (1 - rate)."""
    x = np.ones((16, 4, 4, 3), np.float32)
    ours, _ = one_layer(layers.Dropout(0.5, noise_shape=noise_shape), x.shape[1:]).apply(
        {"params": {}}, x, training=True, rng=jax.random.key(0))
    theirs = keras.layers.Dropout(0.5, noise_shape=noise_shape, seed=1)(x, training=True)
    for out in (np.asarray(ours), np.asarray(theirs)):
        assert set(np.unique(out)) == {0.0, 2.0}
        np.testing.assert_array_equal(out, np.broadcast_to(out.max(axis=shared, keepdims=True), out.shape))


# ------------------------------------------------------------------------------------ configs, names, errors
def test_config_round_trip_of_a_model_with_every_new_layer():
    inp = layers.Input((9, 9, 3))
    h = layers.Normalization(mean=[1.0, 2.0, 3.0], variance=[1.0, 2.0, 3.0], invert=True)(inp)
    h = layers.Rescaling([0.5, 1.0, 2.0], offset=0.1)(h)
    h = layers.Cropping2D(((1, 0), 1))(h)
    h = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="relu")(h)
    h = layers.SeparableConv2D(4, (3, 2), strides=2, dilation_rate=1)(h)
    h = layers.ReLU(max_value=3.0, negative_slope=0.1, threshold=0.5)(h)
    h = layers.LayerNormalization(axis=[1, 2, 3], center=False)(h)
    model = fx.Model(inp, layers.Normalization(axis=None)(h))
    config = json.loads(json.dumps(model.get_config()))
    rebuilt = fx.model_from_config(config)
    assert rebuilt.get_config() == config
    assert [type(l).__name__ for l in rebuilt.layers] == [type(l).__name__ for l in model.layers]
    variables = model.init(jax.random.key(1))
    x = rand(2, 9, 9, 3)
    np.testing.assert_array_equal(jax.jit(model.apply)(variables, x)[0], jax.jit(rebuilt.apply)(variables, x)[0])


def test_names_and_arguments_follow_keras(keras):
    for cls in NEW:
        assert base.to_snake_case(cls) == keras.src.utils.naming.to_snake_case(cls), cls
        ours = [p for p in inspect.signature(getattr(layers, cls)).parameters.values()
                if p.name != "name" and p.kind is p.POSITIONAL_OR_KEYWORD]
        theirs = list(inspect.signature(getattr(keras.layers, cls)).parameters.values())[:len(ours)]
        assert [(p.name, p.default) for p in ours] == [(p.name, p.default) for p in theirs], cls
        assert cls in layers.__all__ and base.LAYERS.get(cls) is getattr(layers, cls)


@pytest.mark.parametrize("make, message", [
    (lambda: layers.DepthwiseConv2D(3, depth_multiplier=0), "depth_multiplier must be a positive int, got 0"),
    (lambda: layers.DepthwiseConv2D((3, 0)), "kernel_size must be a positive int"),
    (lambda: layers.DepthwiseConv2D(3, data_format="channels_first"), "Only data_format='channels_last'"),
    (lambda: layers.SeparableConv2D(0, 3), "SeparableConv2D filters must be a positive int, got 0"),
    (lambda: layers.SeparableConv2D(2, 3, strides=0), "strides must be a positive int"),
    (lambda: layers.SeparableConv2D(2, 3, padding="causal"), "padding must be 'valid' or 'same', got 'causal'"),
    (lambda: layers.ReLU(max_value=-1), r"ReLU max_value must be a number >= 0, got -1"),
    (lambda: layers.ReLU(negative_slope=None), "ReLU negative_slope must be a number >= 0, got None"),
    (lambda: layers.ReLU(threshold=-0.5), "ReLU threshold must be a number >= 0, got -0.5"),
    (lambda: layers.LayerNormalization(axis="last"), "axis must be an int or a non-empty list of ints"),
    (lambda: layers.LayerNormalization(epsilon=0), "epsilon must be > 0"),
    (lambda: layers.Normalization(mean=1.0), "needs both mean and variance, or neither"),
    (lambda: layers.Normalization(mean=[1.0, 2.0], variance=[1.0]), r"same shape, got \(2,\) and \(1,\)"),
    (lambda: layers.Normalization(mean=np.ones((2, 2)), variance=np.ones((2, 2))), "rank 2, more than the 1 axes"),
    (lambda: layers.Normalization(axis="x"), "axis must be None, an int or a tuple of ints"),
    (lambda: layers.Normalization(mean="a", variance="b"), "mean must be a finite number or an array"),
    (lambda: layers.Rescaling([1.0, None]), "Rescaling scale must be a finite number or an array"),
    (lambda: layers.Cropping2D(-1), r"cropping must be an int, \(rows, cols\) or \(\(top, bottom\), \(left, "
                                    r"right\)\) of non-negative ints, got -1"),
    (lambda: layers.Cropping2D((1, 2, 3)), "cropping must be an int"),
    (lambda: layers.Cropping2D(((1, 2), (3,))), "cropping must be an int"),
])
def test_invalid_arguments(make, message):
    with pytest.raises(ArgumentError, match=message):
        make()


@pytest.mark.parametrize("layer, shape, message", [
    (layers.DepthwiseConv2D(3), (5, 5), "DepthwiseConv2D needs a 4-D input"),
    (layers.DepthwiseConv2D(3), (5, 5, None), "the channel axis must have a known size"),
    (layers.SeparableConv2D(2, 5), (3, 3, 1), r"the input is smaller than the dilated kernel \(5, 5\)"),
    (layers.LayerNormalization(axis=3), (4, 2), r"axis=\[3\] is out of range for a rank-3 input"),
    (layers.LayerNormalization(axis=[1, -2]), (4, 2), "names an axis twice"),
    (layers.LayerNormalization(axis=1), (None, 2), "axis 1 does not"),
    (layers.Normalization(axis=0), (4,), "axis 0 does not"),
    (layers.Normalization(mean=[1.0, 2.0], variance=[1.0, 1.0]), (4, 3), r"shape \(2,\) do not broadcast"),
    (layers.Rescaling([1.0, 2.0]), (4, 3), r"scale of shape \(2,\) does not broadcast"),
    (layers.Cropping2D(((2, 2), 0)), (4, 5, 1), "must leave part of each spatial axis; it removes 4 of 4"),
    (layers.Cropping2D(1), (4, 5), "Cropping2D needs a 4-D input"),
])
def test_inputs_that_do_not_fit(layer, shape, message):
    with pytest.raises(layers.LayerError, match=message):
        layer(layers.Input(shape))


def test_adapt_errors():
    norm = layers.Normalization()
    norm(layers.Input((4, 3)))
    with pytest.raises(ValueError, match=r"adapts to inputs of shape \(None, 4, 3\); a batch of shape \(2, 4, 2\)"):
        norm.adapt(np.ones((2, 4, 2)))
    with pytest.raises(ValueError, match=r"a batch of shape \(1, 1\) has other sizes on the kept axes \(1,\)"):
        layers.Normalization().adapt([np.ones((2, 3)), np.ones((1, 1))])
    with pytest.raises(ValueError, match="got no batches"):
        layers.Normalization().adapt([])
    with pytest.raises(ValueError, match="empty batch"):
        layers.Normalization().adapt(np.ones((0, 3)))
    with pytest.raises(ValueError, match="has no variables to adapt"):
        layers.Normalization(mean=0.0, variance=1.0).adapt(np.ones((2, 3)))


# ------------------------------------------------------------------------------------ Keras weights files
def test_keras_weights_file_with_the_new_layers_loads_and_predicts_the_same(keras, tmp_path):
    x = rand(4, 9, 9, 3) * 4 + 1

    def build(lib):
        inp = lib.Input((9, 9, 3))
        norm = lib.Normalization()
        h = lib.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(norm(inp))
        h = lib.ReLU(max_value=6.0)(lib.Cropping2D(1)(h))
        h = lib.SeparableConv2D(4, 3, strides=2, depth_multiplier=2)(h)
        h = lib.LayerNormalization(axis=[1, 2, 3])(lib.DepthwiseConv2D(1, use_bias=False)(h))
        return inp, norm, lib.Dense(2)(lib.GlobalAveragePooling2D()(lib.LayerNormalization()(h)))

    inp, knorm, out = build(keras.layers)
    kmodel = keras.Model(inp, out)
    knorm.adapt(x)
    kmodel.set_weights([np.int32(7) if w.dtype.kind == "i" else w if n.path.startswith("normalization")
                        else rand(*w.shape) for n, w in zip(kmodel.weights, kmodel.get_weights())])
    kmodel.save_weights(tmp_path / "x.weights.h5")
    inp, norm, out = build(layers)
    model = fx.Model(inp, out)
    assert model.count_params() == kmodel.count_params()
    variables = fx.load_keras_weights(model, tmp_path / "x.weights.h5")
    stats = variables["batch_stats"][norm.name]
    assert stats["count"].dtype == jnp.int32 and stats["count"] == 7  # as the file holds it
    np.testing.assert_allclose(stats["mean"], norm.adapt(x)["batch_stats"]["mean"], rtol=1e-5)
    np.testing.assert_allclose(jax.jit(model.apply)(variables, x)[0], kmodel.predict(x, verbose=0),  # one compile each
                               rtol=1e-4, atol=1e-5)
