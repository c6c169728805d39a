"""Layers: Keras 3 argument names, shapes, parameter counts and numerics (NumPy references; Keras where cheap)."""
import doctest
import inspect
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fluxnet as fx
from fluxnet import activations, initializers, layers
from fluxnet.layers import base

RNG = np.random.default_rng(0)


def run(layer, x, training=False, rng=None, variables=None):
    """Build a one-layer model on ``x``'s shape and apply it: ``(outputs, variables, state, model)``."""
    inp = layers.Input(x.shape[1:])
    model = fx.Model(inp, layer(inp))
    variables = model.init(jax.random.key(0)) if variables is None else variables
    out, state = model.apply(variables, x, training=training, rng=rng)
    return np.asarray(out), variables, state, model


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------------------------ NumPy references
def same_pads(n, k, s, d=1):
    """TensorFlow's "same": out = ceil(n / s); the odd extra cell of padding goes after."""
    total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def windows(x, size, strides, padding, dilation=(1, 1), fill=0.0):
    """Yield ``(i, j, window)`` with window ``x[:, rows, cols, :]`` of shape (n, kh, kw, c)."""
    (kh, kw), (sh, sw), (dh, dw) = size, strides, dilation
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if padding == "same":
        x = np.pad(x, ((0, 0), same_pads(x.shape[1], kh, sh, dh), same_pads(x.shape[2], kw, sw, dw), (0, 0)),
                   constant_values=fill)
    oh, ow = (x.shape[1] - eh) // sh + 1, (x.shape[2] - ew) // sw + 1
    for i in range(oh):
        for j in range(ow):
            yield i, j, x[:, i * sh:i * sh + eh:dh, j * sw:j * sw + ew:dw, :]


def np_conv2d(x, kernel, bias, strides, padding, dilation):
    items = list(windows(x, kernel.shape[:2], strides, padding, dilation))
    out = np.zeros((x.shape[0], items[-1][0] + 1, items[-1][1] + 1, kernel.shape[-1]))
    for i, j, win in items:
        out[:, i, j] = np.einsum("nhwc,hwcf->nf", win, kernel) + bias
    return out


def np_pool(x, size, strides, padding, reduce):
    """Padded cells are NaN, so nanmax/nanmean see only the real cells (Keras' average pooling)."""
    items = list(windows(x.astype(np.float64), size, strides, padding, fill=np.nan))
    out = np.zeros((x.shape[0], items[-1][0] + 1, items[-1][1] + 1, x.shape[-1]))
    for i, j, win in items:
        out[:, i, j] = reduce(win, axis=(1, 2))
    return out


# ------------------------------------------------------------------------------------ Dense
def test_dense_shapes_params_and_numerics():
    x = rand(2, 4, 3)  # Dense acts on the last axis of any rank
    out, v, _, model = run(layers.Dense(5, activation="relu"), x)
    assert out.shape == (2, 4, 5) and model.outputs[0].shape == (None, 4, 5)
    assert model.count_params() == (3 + 1) * 5
    p = v["params"]["dense"]
    assert p["kernel"].shape == (3, 5) and not np.any(p["bias"])  # Keras: bias zeros
    np.testing.assert_allclose(out, np.maximum(x @ np.asarray(p["kernel"]) + np.asarray(p["bias"]), 0), atol=1e-5)
    _, v, _, model = run(layers.Dense(5, use_bias=False), x)
    assert model.count_params() == 15 and set(v["params"]["dense"]) == {"kernel"}


# ------------------------------------------------------------------------------------ Conv2D
@pytest.mark.parametrize("hw, kernel, strides, padding, dilation", [
    ((7, 6), 3, 2, "same", 1),            # odd size, stride 2: the extra pad cell goes bottom/right
    ((5, 8), (2, 3), (2, 1), "same", 1),  # even kernel, mixed strides
    ((7, 5), 3, 1, "same", 2),            # dilation with "same"
    ((7, 7), 3, 2, "valid", 1),
    ((8, 6), (3, 2), 1, "valid", (2, 1)),
])
def test_conv2d_matches_numpy(hw, kernel, strides, padding, dilation):
    x = rand(2, *hw, 3)
    layer = layers.Conv2D(4, kernel, strides=strides, padding=padding, dilation_rate=dilation,
                          bias_initializer="random_normal")
    out, v, _, model = run(layer, x)
    p = {k: np.asarray(a) for k, a in v["params"]["conv2d"].items()}
    ref = np_conv2d(x, p["kernel"], p["bias"], layer.strides, padding, layer.dilation_rate)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    kh, kw = layer.kernel_size
    assert p["kernel"].shape == (kh, kw, 3, 4) and model.count_params() == kh * kw * 3 * 4 + 4
    sh, sw = layer.strides
    eh, ew = [(k - 1) * d + 1 for k, d in zip(layer.kernel_size, layer.dilation_rate)]
    expected = ((-(-hw[0] // sh), -(-hw[1] // sw)) if padding == "same"
                else ((hw[0] - eh) // sh + 1, (hw[1] - ew) // sw + 1))
    assert model.outputs[0].shape == (None, *expected, 4) == (None, *out.shape[1:])


def test_conv2d_arguments_and_unknown_spatial_size():
    layer = layers.Conv2D(2, 3, activation="relu", use_bias=False, padding="SAME")
    assert layer.strides == (1, 1) and layer.dilation_rate == (1, 1) and layer.padding == "same"
    x = layers.Input((None, None, 3))  # variables do not depend on the spatial size
    model = fx.Model(x, layer(x))
    v = model.init(jax.random.key(0))
    assert model.count_params() == 3 * 3 * 3 * 2
    out, _ = model.apply(v, rand(1, 5, 4, 3))
    assert out.shape == (1, 5, 4, 2) and float(jnp.min(out)) >= 0


# ------------------------------------------------------------------------------------ pooling
@pytest.mark.parametrize("cls, reduce", [(layers.MaxPooling2D, np.nanmax), (layers.AveragePooling2D, np.nanmean)])
@pytest.mark.parametrize("hw, pool, strides, padding", [
    ((5, 7), 2, None, "valid"),
    ((5, 7), 2, None, "same"),
    ((7, 6), 3, 2, "same"),   # windows at the border hold padding: average only the real cells
    ((7, 6), (3, 2), (2, 1), "valid"),
])
def test_pooling_matches_numpy(cls, reduce, hw, pool, strides, padding):
    x = rand(2, *hw, 3)
    layer = cls(pool, strides=strides, padding=padding)
    out, _, _, model = run(layer, x)
    assert layer.strides == (layer.pool_size if strides is None else layer.strides)  # default: pool_size
    np.testing.assert_allclose(out, np_pool(x, layer.pool_size, layer.strides, padding, reduce), atol=1e-6)
    assert model.outputs[0].shape == (None, *out.shape[1:]) and model.count_params() == 0


@pytest.mark.parametrize("hw, pool, strides, padding", [
    ((6, 8), 2, None, "valid"), ((7, 6), 3, 2, "same"), ((7, 6), (3, 2), (2, 1), "valid"), ((5, 5), 5, 1, "valid")])
def test_max_pooling_derivatives_equal_reduce_windows(hw, pool, strides, padding):
    """MaxPooling2D takes windows as strided slices (XLA:CPU's reduce_window gradient is a slow scatter); its
    gradient and forward derivative equal JAX's for reduce_window bit for bit, ties included (after a ReLU
    and rounding, windows hold several equal maxima: the first in row-major order takes the gradient)."""
    import flax.linen as nn

    layer = layers.MaxPooling2D(pool, strides=strides, padding=padding)
    x = jax.nn.relu(jnp.round(jnp.asarray(rand(2, *hw, 3)) * 4 - 2))
    pads = layer._pads(x)
    ours = lambda a: layer.call({}, a)
    reference = lambda a: nn.max_pool(a, layer.pool_size, layer.strides, pads)
    weights = jnp.asarray(rand(*reference(x).shape))
    np.testing.assert_array_equal(ours(x), reference(x))
    grads = [jax.grad(lambda a: jnp.sum(f(a) * weights))(x) for f in (ours, reference)]
    np.testing.assert_array_equal(*grads)
    assert float(jnp.abs(grads[0]).sum()) > 0
    tangent = jnp.asarray(rand(*x.shape))
    np.testing.assert_array_equal(jax.jvp(ours, (x,), (tangent,))[1], jax.jvp(reference, (x,), (tangent,))[1])


def test_pooling_defaults_and_global_pooling():
    assert layers.MaxPooling2D().pool_size == (2, 2) and layers.MaxPooling2D().strides == (2, 2)
    x = rand(2, 3, 5, 4)
    out, _, _, model = run(layers.GlobalAveragePooling2D(), x)
    np.testing.assert_allclose(out, x.mean(axis=(1, 2)), atol=1e-6)
    assert model.outputs[0].shape == (None, 4)
    out, _, _, model = run(layers.GlobalMaxPooling2D(keepdims=True), x)
    np.testing.assert_allclose(out, x.max(axis=(1, 2), keepdims=True))
    assert model.outputs[0].shape == (None, 1, 1, 4)


# ------------------------------------------------------------------------------------ BatchNormalization
def np_bn(x, mean, var, gamma, beta, eps=1e-3):
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def test_batch_normalization_training_inference_and_moving_update():
    layer = layers.BatchNormalization(momentum=0.9, gamma_initializer="random_normal",
                                      beta_initializer="random_normal")
    assert (layers.BatchNormalization().momentum, layers.BatchNormalization().epsilon) == (0.99, 1e-3)
    x = (rand(4, 3, 2, 5) * 3 + 2).astype(np.float32)
    _, v, _, model = run(layer, x)
    assert model.param_counts() == {"trainable": 10, "non_trainable": 10} and model.count_params() == 20
    g, b = (np.asarray(v["params"]["batch_normalization"][k]) for k in ("gamma", "beta"))
    assert not np.allclose(g, b)  # each variable draws from its own key
    stats = {k: np.asarray(a) for k, a in v["batch_stats"]["batch_normalization"].items()}
    np.testing.assert_array_equal(stats["moving_mean"], 0)
    np.testing.assert_array_equal(stats["moving_variance"], 1)

    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))  # biased variance
    out, state = model.apply(v, x, training=True)
    np.testing.assert_allclose(out, np_bn(x, mean, var, g, b), atol=1e-5)
    new = state["batch_stats"]["batch_normalization"]
    np.testing.assert_allclose(new["moving_mean"], 0.9 * 0 + 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(new["moving_variance"], 0.9 * 1 + 0.1 * var, rtol=1e-5)

    v2 = {"params": v["params"], "batch_stats": state["batch_stats"]}
    out, state2 = model.apply(v2, x)  # inference: moving statistics, no update
    np.testing.assert_allclose(out, np_bn(x, new["moving_mean"], new["moving_variance"], g, b), atol=1e-5)
    for key in ("moving_mean", "moving_variance"):
        np.testing.assert_array_equal(state2["batch_stats"]["batch_normalization"][key], new[key])


def test_batch_normalization_frozen_runs_in_inference_mode():
    x = rand(4, 3) * 2 + 1
    layer = layers.BatchNormalization(trainable=False)
    out, v, state, model = run(layer, x, training=True)
    np.testing.assert_allclose(out, x / np.sqrt(1 + 1e-3), atol=1e-6)  # moving stats 0 / 1
    np.testing.assert_array_equal(state["batch_stats"]["batch_normalization"]["moving_mean"], 0)
    assert model.param_counts() == {"trainable": 0, "non_trainable": 12}


def test_batch_normalization_axis_and_no_center_scale():
    x = rand(3, 4, 2, 2)
    out, v, _, model = run(layers.BatchNormalization(axis=1, center=False, scale=False), x, training=True)
    mean, var = x.mean(axis=(0, 2, 3), keepdims=True), x.var(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(out, (x - mean) / np.sqrt(var + 1e-3), atol=1e-5)
    assert "params" not in v or "batch_normalization" not in v["params"]
    assert model.param_counts() == {"trainable": 0, "non_trainable": 8}


# ------------------------------------------------------------------------------------ Dropout
def test_dropout_statistics_scaling_and_inference():
    x = np.ones((100, 100), np.float32)
    layer = layers.Dropout(0.3)
    out, v, _, model = run(layer, x)
    np.testing.assert_array_equal(out, x)  # identity in inference
    out, _ = model.apply(v, x, training=True, rng=jax.random.key(1))
    out = np.asarray(out)
    assert abs((out == 0).mean() - 0.3) < 0.02
    np.testing.assert_allclose(out[out != 0], 1 / 0.7, rtol=1e-6)  # inverted dropout


def test_dropout_masks_follow_key_and_layer_name():
    x = layers.Input((200,))
    a, b = layers.Dropout(0.5, name="a")(x), layers.Dropout(0.5, name="b")(x)
    model = fx.Model(x, [a, b])
    v, ones = model.init(jax.random.key(0)), np.ones((1, 200), np.float32)
    (a1, b1), _ = model.apply(v, ones, training=True, rng=jax.random.key(7))
    (a2, b2), _ = model.apply(v, ones, training=True, rng=jax.random.key(7))
    (a3, _), _ = model.apply(v, ones, training=True, rng=jax.random.key(8))
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(b1, b2)
    assert np.any(np.asarray(a1) != np.asarray(b1))  # different names: different masks
    assert np.any(np.asarray(a1) != np.asarray(a3))  # different key: different mask


def test_dropout_seed_and_missing_key():
    x = np.ones((1, 50), np.float32)
    out1, v, _, model = run(layers.Dropout(0.5, seed=3), x, training=True)
    out2, _ = model.apply(v, x, training=True)
    np.testing.assert_array_equal(out1, out2)
    assert np.any(out1 == 0)
    _, v, _, model = run(layers.Dropout(0.5, name="drop"), x)
    with pytest.raises(ValueError, match="'drop' needs a random key in training"):
        model.apply(v, x, training=True)


# ------------------------------------------------------------------------------------ reshaping, merging
def test_flatten_is_row_major_nhwc():
    x = np.arange(2 * 3 * 2 * 4, dtype=np.float32).reshape(2, 3, 2, 4)
    out, _, _, model = run(layers.Flatten(), x)
    np.testing.assert_array_equal(out, x.reshape(2, -1))
    np.testing.assert_array_equal(out[0, :5], [0, 1, 2, 3, 4])  # channels vary fastest
    assert model.outputs[0].shape == (None, 24)


def test_reshape_rescaling_zero_padding():
    x = rand(2, 3, 4)
    out, _, _, model = run(layers.Reshape((4, -1)), x)
    np.testing.assert_array_equal(out, x.reshape(2, 4, 3))
    assert model.outputs[0].shape == (None, 4, 3)
    pixels = np.array([[0, 51, 255]], np.uint8)
    out, *_ = run(layers.Rescaling(1 / 127.5, offset=-1), pixels)
    np.testing.assert_allclose(out, [[-1, 51 / 127.5 - 1, 1]], atol=1e-6)
    x = rand(1, 2, 3, 1)
    for padding, pads in [(1, ((1, 1), (1, 1))), ((2, 0), ((2, 2), (0, 0))), (((0, 1), (2, 3)), ((0, 1), (2, 3)))]:
        out, _, _, model = run(layers.ZeroPadding2D(padding), x)
        np.testing.assert_array_equal(out, np.pad(x, ((0, 0), *pads, (0, 0))))
        assert model.outputs[0].shape == (None, *out.shape[1:])


def test_add_and_concatenate():
    a, b = layers.Input((2, 3)), layers.Input((2, 1))
    added = layers.Add()([a, a])
    joined = layers.Concatenate()([added, b])
    model = fx.Model([a, b], joined)
    assert joined.shape == (None, 2, 4)
    xa, xb = rand(2, 2, 3), rand(2, 2, 1)
    out, _ = model.apply(model.init(jax.random.key(0)), [xa, xb])
    np.testing.assert_allclose(out, np.concatenate([xa + xa, xb], axis=-1), atol=1e-6)


# ------------------------------------------------------------------------------------ activations, initialisers
def test_activations_by_keras_name():
    x = np.linspace(-4, 4, 17).astype(np.float32)
    erf = np.vectorize(math.erf)
    expected = {
        "gelu": 0.5 * x * (1 + erf(x / np.sqrt(2))),  # exact, not the tanh approximation
        "leaky_relu": np.where(x > 0, x, 0.2 * x),
        "hard_sigmoid": np.clip(x + 3, 0, 6) / 6,
        "relu": np.maximum(x, 0), "sigmoid": 1 / (1 + np.exp(-x)), "tanh": np.tanh(x),
        "elu": np.where(x > 0, x, np.exp(x) - 1), "softplus": np.log1p(np.exp(x)),
        "swish": x / (1 + np.exp(-x)), "silu": x / (1 + np.exp(-x)), "linear": x,
        "selu": 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * (np.exp(x) - 1)),
        "softmax": np.exp(x) / np.exp(x).sum(),
    }
    for name, ref in expected.items():
        np.testing.assert_allclose(activations.get(name)(x), ref, rtol=1e-5, atol=1e-6, err_msg=name)
    out, *_ = run(layers.Activation("hard_sigmoid"), x[None])
    np.testing.assert_allclose(out[0], expected["hard_sigmoid"], atol=1e-6)


def test_initializers_by_keras_name():
    key, shape = jax.random.key(0), (3, 3, 40, 60)  # conv kernel: fans include the receptive field
    fan_in, fan_out = 9 * 40, 9 * 60
    w = np.asarray(initializers.get("glorot_uniform")(key, shape, jnp.float32))
    limit = np.sqrt(6 / (fan_in + fan_out))
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.95 * limit
    w = np.asarray(initializers.get("he_normal")(key, shape, jnp.float32))
    assert abs(w.std() / np.sqrt(2 / fan_in) - 1) < 0.05  # truncated normal rescaled to the target std
    assert np.abs(w).max() <= 2 * np.sqrt(2 / fan_in) / 0.87962566103423978 + 1e-6
    assert not np.any(initializers.get("zeros")(key, (2,), jnp.float32))
    _, v, _, _ = run(layers.Dense(2, kernel_initializer="ones", bias_initializer="ones"), rand(1, 3))
    np.testing.assert_array_equal(v["params"]["dense"]["kernel"], 1)


def test_custom_activation_and_initializer_by_name(tmp_path):
    name_act, name_init = "test_layers_cube", "test_layers_twos"
    activations.register(name_act, lambda x: x ** 3)
    initializers.register(name_init, lambda key, shape, dtype=jnp.float32: jnp.full(shape, 2.0, dtype))
    x = layers.Input((2,))
    model = fx.Model(x, layers.Dense(1, activation=name_act, kernel_initializer=name_init)(x))
    config = json.loads(json.dumps(model.get_config()))
    rebuilt = fx.model_from_config(config)
    v = model.init(jax.random.key(0))
    np.testing.assert_array_equal(v["params"]["dense"]["kernel"], 2)
    xs = np.array([[1.0, 0.5]], np.float32)
    np.testing.assert_allclose(model.apply(v, xs)[0], [[27.0]])
    np.testing.assert_allclose(rebuilt.apply(v, xs)[0], [[27.0]])
    unregistered = layers.Dense(1, activation=lambda x: x)
    with pytest.raises(ValueError, match=r"Cannot record activation=.*fluxnet.activations.register"):
        unregistered.get_config()


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("make, message", [
    (lambda: layers.Dense(2, activation="rleu"),
     r"Unknown activation 'rleu'\. Did you mean 'relu'.*Valid names: .*gelu.*"),
    (lambda: layers.Conv2D(2, 3, kernel_initializer="he_uniformm"),
     r"Unknown initializer 'he_uniformm'\. Did you mean 'he_uniform'.*Valid names: .*glorot_uniform"),
    (lambda: layers.Conv2D(2, 3, padding="full"), "padding must be 'valid' or 'same', got 'full'"),
    (lambda: layers.MaxPooling2D(padding="causal"), "padding must be 'valid' or 'same', got 'causal'"),
    (lambda: layers.Dropout(1.0), r"Dropout rate must be a number in \[0, 1\), got 1.0"),
    (lambda: layers.Dropout(-0.1), r"Dropout rate must be a number in \[0, 1\), got -0.1"),
    (lambda: layers.Conv2D(2, 3, strides=2, dilation_rate=2),
     "strides > 1 cannot be combined with dilation_rate > 1"),
    (lambda: layers.Conv2D(2, 0), "kernel_size must be a positive int"),
    (lambda: layers.Dense(0), "Dense units must be a positive int, got 0"),
    (lambda: layers.Reshape((-1, -1)), "at most one -1"),
])
def test_invalid_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("layer, shape, message", [
    (layers.Conv2D(2, 3, name="c"), (4,),
     r"Conv2D layer 'c' cannot take input of shape \(None, 4\): Conv2D needs a 4-D input"),
    (layers.Conv2D(2, 5, name="c"), (3, 3, 1),
     r"'c' cannot take input of shape \(None, 3, 3, 1\): the input is smaller than the dilated kernel \(5, 5\)"),
    (layers.MaxPooling2D(3, name="p"), (2, 2, 1), r"'p' cannot take input of shape \(None, 2, 2, 1\)"),
    (layers.Reshape((5,), name="r"), (2, 3), r"'r' cannot take input of shape \(None, 2, 3\): 6 values cannot"),
    (layers.BatchNormalization(axis=3, name="bn"), (4,), r"'bn' cannot take input of shape \(None, 4\): axis=3"),
    (layers.Dropout(0.5, noise_shape=(None, 1, 1), name="d"), (4,), r"'d' cannot take input.*noise_shape"),
])
def test_layer_that_does_not_fit_its_input(layer, shape, message):
    with pytest.raises(layers.LayerError, match=message):
        layer(layers.Input(shape))


def test_merge_shape_errors():
    a, b = layers.Input((2, 3)), layers.Input((3, 3))
    with pytest.raises(ValueError, match=r"Add layer.*cannot take input of shape \[\(None, 2, 3\), \(None, 3, 3\)\]"):
        layers.Add()([a, b])
    with pytest.raises(ValueError, match="all axes except the concatenation axis"):
        layers.Concatenate()([a, b])
    with pytest.raises(TypeError, match="layers are called on symbolic tensors"):
        layers.Dense(2)(np.ones((1, 2)))


# ------------------------------------------------------------------------------------ custom layers
def test_custom_layer_docstring_example():
    """The example in fluxnet/layers/base.py runs as written (Sequential, Functional, counts, config)."""
    example = doctest.DocTestParser().get_doctest(base.__doc__, {}, "fluxnet.layers.base", base.__file__, 0)
    result = doctest.DocTestRunner().run(example, clear_globs=False)
    assert result.attempted >= 10 and result.failed == 0
    scale = example.globs["LearnedScale"](3.0, name="s")
    assert scale.get_config()["initial_value"] == 3.0
    model = fx.Sequential([layers.Input((2,)), scale])
    assert "s (LearnedScale)" in model.summary(print_fn=None) and model.count_params() == 2


def test_custom_layer_records_any_kwargs_name():
    class Shift(layers.Layer):
        def __init__(self, amount=1.0, **options):
            super().__init__(**options)
            self.amount = amount

        def call(self, variables, inputs, *, training=False, rng=None):
            return inputs + self.amount

    config = Shift(2.0, name="shift", trainable=False).get_config()
    assert config["amount"] == 2.0 and config["name"] == "shift" and config["trainable"] is False
    assert "options" not in config
    with pytest.raises(ValueError, match="unregistered class Shift"):
        fx.Sequential([layers.Input((1,)), Shift()]).get_config()


# ------------------------------------------------------------------------------------ Keras comparison


def test_stack_matches_keras(keras):
    """Conv(same, stride 2, odd size) -> BN -> MaxPool(same) -> AvgPool(same) -> Flatten -> Dense."""
    def build(lib, init="glorot_uniform"):  # Keras' weights are overwritten: "zeros" saves its compiles
        return [lib.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="conv",
                           kernel_initializer=init),
                lib.BatchNormalization(momentum=0.8, name="bn"),
                lib.MaxPooling2D(2, padding="same", name="maxpool"),
                lib.AveragePooling2D(3, strides=1, padding="same", name="avgpool"),
                lib.Flatten(name="flatten"), lib.Dense(3, activation="gelu", name="dense", kernel_initializer=init)]

    kmodel = keras.Sequential([keras.Input((9, 7, 2)), *build(keras.layers, "zeros")])
    model = fx.Sequential([layers.Input((9, 7, 2)), *build(layers)])
    assert model.count_params() == kmodel.count_params() == (18 + 1) * 4 + 4 * 4 + (3 * 2 * 4 + 1) * 3
    v = jax.tree.map(np.asarray, model.init(jax.random.key(0)))
    v["params"]["bn"] = {"gamma": rand(4) + 1, "beta": rand(4)}
    v["batch_stats"]["bn"] = {"moving_mean": rand(4), "moving_variance": np.abs(rand(4)) + 0.5}
    kmodel.get_layer("conv").set_weights([v["params"]["conv"]["kernel"], v["params"]["conv"]["bias"]])
    kmodel.get_layer("bn").set_weights([v["params"]["bn"]["gamma"], v["params"]["bn"]["beta"],
                                        v["batch_stats"]["bn"]["moving_mean"],
                                        v["batch_stats"]["bn"]["moving_variance"]])
    kmodel.get_layer("dense").set_weights([v["params"]["dense"]["kernel"], v["params"]["dense"]["bias"]])
    x = rand(3, 9, 7, 2)
    out, _ = model.apply(v, x)
    np.testing.assert_allclose(out, np.asarray(kmodel(x, training=False)), atol=1e-5)
    out, state = model.apply(v, x, training=True)
    np.testing.assert_allclose(out, np.asarray(kmodel(x, training=True)), atol=1e-5)
    moving = [np.asarray(w) for w in kmodel.get_layer("bn").weights[2:]]
    np.testing.assert_allclose(state["batch_stats"]["bn"]["moving_mean"], moving[0], atol=1e-6)
    np.testing.assert_allclose(state["batch_stats"]["bn"]["moving_variance"], moving[1], atol=1e-6)


def test_names_activations_and_counts_match_keras(keras):
    for cls in ["Dense", "Conv2D", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
                "GlobalMaxPooling2D", "BatchNormalization", "Dropout", "Flatten", "Reshape", "Rescaling",
                "ZeroPadding2D", "Add", "Concatenate", "Activation"]:
        assert base.to_snake_case(cls) == keras.src.utils.naming.to_snake_case(cls), cls
    x = np.linspace(-5, 5, 21).astype(np.float32)
    for name in ["relu", "sigmoid", "softmax", "tanh", "elu", "selu", "gelu", "softplus", "swish", "silu",
                 "leaky_relu", "hard_sigmoid", "linear"]:
        np.testing.assert_allclose(activations.get(name)(x), keras.activations.get(name)(x), atol=1e-6,
                                   err_msg=name)
    def build(lib, init="glorot_uniform"):
        return [lib.Conv2D(4, (3, 2), use_bias=False, kernel_initializer=init),
                lib.BatchNormalization(center=False), lib.GlobalMaxPooling2D(), lib.Dense(7, kernel_initializer=init)]

    kmodel = keras.Sequential([keras.Input((6, 5, 3)), *build(keras.layers, "zeros")])
    model = fx.Sequential([layers.Input((6, 5, 3)), *build(layers)])
    ktrainable = sum(int(np.prod(w.shape)) for w in kmodel.trainable_weights)
    assert model.param_counts() == {"trainable": ktrainable, "non_trainable": kmodel.count_params() - ktrainable}


def test_constructor_arguments_follow_keras(keras):
    """Each layer's own arguments are a prefix of the Keras layer's, in order, with Keras' defaults."""
    for cls in ["Dense", "Conv2D", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
                "GlobalMaxPooling2D", "Dropout", "BatchNormalization", "Reshape", "Rescaling", "ZeroPadding2D",
                "Concatenate", "Activation", "Lambda"]:
        ours = [p for p in inspect.signature(getattr(layers, cls)).parameters.values()
                if p.name != "name" and p.kind is p.POSITIONAL_OR_KEYWORD]
        theirs = list(inspect.signature(getattr(keras.layers, cls)).parameters.values())[:len(ours)]
        assert [(p.name, p.default) for p in ours] == [(p.name, p.default) for p in theirs], cls


def test_user_errors_are_fluxnet_errors_and_keep_their_builtin():
    """Mistakes in layer, model, loss and optimizer arguments raise fluxnet's error classes, which are
    still the ValueError/TypeError that callers may catch."""
    from fluxnet import errors, losses, optimizers

    value_errors = [
        (lambda: layers.Dense(0), errors.ArgumentError),
        (lambda: layers.Conv2D(4, 3, padding="full"), errors.ArgumentError),
        (lambda: layers.Conv2D(4, 3)(layers.Input((3,))), layers.LayerError),
        (lambda: losses.categorical_crossentropy(np.ones((2, 3)), np.ones((2, 4))), errors.DataError),
        (lambda: losses.get("categorical_crossentropy", label_smoothing=2.0)(np.ones((2, 3)), np.ones((2, 3))),
         errors.ArgumentError),
        (lambda: optimizers.get("adam", beta_1=2.0), errors.ArgumentError),
        (lambda: optimizers.build_optimizer({"learning_rate": 0.1}, total_steps=10), errors.ConfigError),
    ]
    type_errors = [
        (lambda: layers.Dense(2)(np.ones((1, 3))), errors.ArgumentTypeError),
        (lambda: losses.get("mse", bogus=1), errors.ArgumentTypeError),
        (lambda: optimizers.get("adam", amsgrad=1), errors.ArgumentTypeError),
    ]
    for builtin, cases in [(ValueError, value_errors), (TypeError, type_errors)]:
        for make, cls in cases:
            with pytest.raises(cls) as info:
                make()
            assert isinstance(info.value, errors.FluxnetError) and isinstance(info.value, builtin)
    assert issubclass(layers.LayerError, errors.ArgumentError)
