"""fx.applications.ResNet50, resnet50.preprocess_input and fx.load_keras_weights, checked against Keras 3."""
import os

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fluxnet as fx
from fluxnet import layers
from fluxnet.applications import ResNet50, resnet50
from fluxnet.transfer.keras_weights import load_keras_weights

KERAS_RESNET50_PARAMS = 25_636_712  # keras.applications.ResNet50(weights=None).count_params()
KERAS_RESNET50_NOTOP_PARAMS = 23_587_712


def _keras():
    os.environ["KERAS_BACKEND"] = "jax"  # must precede the first keras import
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("keras was imported with another backend")
    return keras


# ------------------------------------------------------------------------------------------- ResNet50
def test_resnet50_parameter_counts_equal_keras():
    model = ResNet50()
    assert model.count_params() == KERAS_RESNET50_PARAMS
    assert model.param_counts() == {"trainable": 25_583_592, "non_trainable": 53_120}
    assert model.outputs[0].shape == (None, 1000)
    assert model.inputs[0].shape == (None, 224, 224, 3)
    assert model.name == "resnet50"
    bn = model.get_layer("conv3_block2_2_bn")
    assert bn.epsilon == 1.001e-5


@pytest.mark.parametrize("pooling, shape, top", [(None, (None, 2, 2, 2048), "conv5_block3_out"),
                                                 ("avg", (None, 2048), "avg_pool"),
                                                 ("max", (None, 2048), "max_pool")])
def test_resnet50_without_top(pooling, shape, top):
    model = ResNet50(include_top=False, input_shape=(64, 64, 3), pooling=pooling)
    assert model.outputs[0].shape == shape
    assert model.layers[-1].name == top
    assert model.count_params() == KERAS_RESNET50_NOTOP_PARAMS


def test_resnet50_default_headless_input_is_any_size():
    model = ResNet50(include_top=False)
    assert model.inputs[0].shape == (None, None, None, 3)
    assert model.outputs[0].shape == (None, None, None, 2048)
    assert model.count_params() == KERAS_RESNET50_NOTOP_PARAMS


def test_resnet50_builds_on_an_input_tensor():
    image = layers.Input((40, 48, 3))
    scaled = layers.Rescaling(1.0)(image)
    model = ResNet50(include_top=False, input_tensor=scaled, pooling="avg", name="backbone")
    assert model.inputs == [image] and model.outputs[0].shape == (None, 2048)
    with pytest.raises(TypeError, match="symbolic tensor"):
        ResNet50(input_tensor=np.zeros((1, 224, 224, 3)))


@pytest.mark.parametrize("kwargs, message", [
    (dict(weights="imagenet"), "no network access(.|\n)*save_weights"),
    (dict(weights="no/such/file.weights.h5"), "path to a Keras 3 weights file"),
    (dict(include_top=False, input_shape=(31, 64, 3)), "at least 32x32"),
    (dict(include_top=False, input_shape=(64, 64)), "three integers"),
    (dict(input_shape=(None, None, 3)), "static `input_shape`"),
    (dict(include_top=False, pooling="mean"), "pooling"),
])
def test_resnet50_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNet50(**kwargs)


def test_resnet50_with_weights_allows_only_softmax_or_logits(tmp_path):
    path = tmp_path / "any.weights.h5"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="classifier_activation"):
        ResNet50(weights=str(path), classifier_activation="relu")


# ------------------------------------------------------------------------------------------- preprocess_input
def _caffe(x):
    return x.astype(np.float32)[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)


def test_preprocess_input_numpy_matches_formula_and_keeps_input():
    x = np.random.default_rng(0).integers(0, 256, (2, 5, 4, 3), dtype=np.uint8)
    before = x.copy()
    out = resnet50.preprocess_input(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, _caffe(x), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(x, before)
    channels_first = resnet50.preprocess_input(np.moveaxis(x[0], -1, 0), data_format="channels_first")
    np.testing.assert_allclose(np.moveaxis(channels_first, 0, -1), _caffe(x[0]), atol=1e-5)


def test_preprocess_input_jax_is_jittable():
    x = np.random.default_rng(1).uniform(0, 255, (2, 3, 3, 3)).astype(np.float32)
    out = jax.jit(resnet50.preprocess_input)(jnp.asarray(x))
    assert isinstance(out, jax.Array)
    np.testing.assert_allclose(np.asarray(out), _caffe(x), atol=1e-5)


def test_preprocess_input_errors():
    with pytest.raises(ValueError, match="RGB"):
        resnet50.preprocess_input(np.zeros((2, 4, 4, 1)))
    with pytest.raises(ValueError, match="data_format"):
        resnet50.preprocess_input(np.zeros((4, 4, 3)), data_format="nhwc")


# ------------------------------------------------------------------------------------------- against Keras
@pytest.fixture(scope="module")
def keras_resnet(tmp_path_factory):
    """A Keras ResNet50 (32x32, logits) with random BN statistics, its weights file, a batch and its logits."""
    keras = _keras()
    model = keras.applications.ResNet50(weights=None, classifier_activation=None, input_shape=(32, 32, 3))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0.0, 0.5, layer.moving_mean.shape).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape).astype(np.float32))
    path = tmp_path_factory.mktemp("keras") / "r.weights.h5"
    model.save_weights(str(path))
    x = rng.uniform(0.0, 255.0, (2, 32, 32, 3)).astype(np.float32)
    x = keras.applications.resnet50.preprocess_input(x)
    return {"names": [layer.name for layer in model.layers], "path": path, "x": x,
            "logits": np.asarray(model.predict(x, verbose=0))}


def test_resnet50_layers_and_keras_order_equal_keras(keras_resnet):
    model = ResNet50(input_shape=(32, 32, 3))
    names = keras_resnet["names"]
    # the Input's name carries Keras' session counter (input_layer, input_layer_1, ...)
    assert [layer.name for layer in model.layers][1:] == names[1:]
    assert sorted(layer.name for layer in model.layers[1:]) == sorted(names[1:])


def test_resnet50_loads_keras_weights_and_matches_keras_logits(keras_resnet):
    model = ResNet50(weights=keras_resnet["path"], classifier_activation=None, input_shape=(32, 32, 3))
    variables = load_keras_weights(model, keras_resnet["path"])
    abstract = model.abstract_variables()
    assert jax.tree.structure(variables) == jax.tree.structure(abstract)
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(variables))
    logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x)[0])(variables, keras_resnet["x"]))
    expected = keras_resnet["logits"]
    assert np.abs(logits - expected).max() / np.abs(expected).max() < 1e-4


def test_resnet50_rejects_weights_of_another_head(keras_resnet):
    with pytest.raises(ValueError, match=r"shape mismatch: layers/dense/vars/0 \(Keras layer 'predictions'\)"):
        ResNet50(weights=keras_resnet["path"], classes=10, input_shape=(32, 32, 3))


# ------------------------------------------------------------------------------------------- loader
def _small_keras(keras):
    """Branches whose Keras order (by depth) differs from creation and depth-first order; BN without beta."""
    x = keras.Input((6, 6, 3))
    deep = keras.layers.Conv2D(5, 1)(x)
    deep = keras.layers.BatchNormalization(center=False)(deep)
    deep = keras.layers.Conv2D(4, 3, padding="same")(deep)
    wide = keras.layers.Conv2D(4, 1, use_bias=False)(x)
    h = keras.layers.Add()([wide, keras.layers.BatchNormalization()(deep)])
    y = keras.layers.Dense(2)(keras.layers.Flatten()(h))
    return keras.Model(x, y)


def _small_fluxnet(units=2, center=False):
    x = layers.Input((6, 6, 3))
    wide = layers.Conv2D(4, 1, use_bias=False)(x)  # created and reached first here, last in Keras' order
    deep = layers.Conv2D(5, 1)(x)
    deep = layers.BatchNormalization(center=center)(deep)
    deep = layers.Conv2D(4, 3, padding="same")(deep)
    h = layers.Add()([wide, layers.BatchNormalization()(deep)])
    return fx.Model(x, layers.Dense(units)(layers.Flatten()(h)))


def _sequential(module, units=2):
    """The same Conv2D-BN-Dense stack in Keras (``module=keras``) or fluxnet (``module=fx``)."""
    lib = module.layers
    return module.Sequential([lib.Input((6, 6, 3)), lib.Conv2D(3, 3), lib.BatchNormalization(), lib.Flatten(),
                              lib.Dense(units)])


@pytest.fixture(scope="module")
def small_keras(tmp_path_factory):
    """Weights files of the Keras models above (non-trivial BN statistics), a batch and Keras' outputs."""
    keras = _keras()
    folder = tmp_path_factory.mktemp("small")
    x = np.random.default_rng(2).normal(size=(3, 6, 6, 3)).astype(np.float32)
    outputs = {}
    for stem, model in [("s", _small_keras(keras)), ("seq", _sequential(keras))]:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.moving_variance.assign(np.linspace(0.5, 2.0, layer.moving_variance.shape[0]))
        model.save_weights(str(folder / f"{stem}.weights.h5"))
        model.save(str(folder / f"{stem}.keras"))
        outputs[stem] = np.asarray(model.predict(x, verbose=0))
    return {"folder": folder, "x": x, "y": outputs}


@pytest.mark.parametrize("file", ["s.weights.h5", "s.keras", "seq.weights.h5"])
def test_loader_matches_by_class_and_keras_order(small_keras, file):
    model = _small_fluxnet() if file.startswith("s.") else _sequential(fx)
    variables = load_keras_weights(model, small_keras["folder"] / file)
    if file.startswith("s."):
        assert set(variables["params"]["batch_normalization"]) == {"gamma"}
    y, _ = model.apply(variables, small_keras["x"])
    np.testing.assert_allclose(np.asarray(y), small_keras["y"][file.split(".")[0]], rtol=1e-5, atol=1e-5)


def test_loader_lists_every_mismatch(small_keras):
    with pytest.raises(ValueError) as err:
        load_keras_weights(_small_fluxnet(units=3, center=True), small_keras["folder"] / "s.weights.h5")
    message = str(err.value)
    assert "3 problems" in message
    assert "shape mismatch: layers/dense/vars/0" in message and "dense/kernel (params) needs (144, 3)" in message
    assert "shape mismatch: layers/dense/vars/1" in message
    assert "missing: layers/batch_normalization/vars/3 for batch_normalization/moving_variance" in message

    x = layers.Input((6, 6, 3))
    one_conv = fx.Model(x, layers.Dense(2)(layers.Flatten()(layers.Conv2D(4, 1, use_bias=False)(x))))
    with pytest.raises(ValueError) as err:
        load_keras_weights(one_conv, small_keras["folder"] / "s.weights.h5")
    for path in ["layers/conv2d/vars/1", "layers/conv2d_1/vars/1", "layers/conv2d_2/vars/0",
                 "layers/batch_normalization_1/vars/3"]:
        assert f"unexpected: {path}" in str(err.value)


def test_loader_file_errors(tmp_path):
    model = _small_fluxnet()
    with pytest.raises(FileNotFoundError):
        load_keras_weights(model, tmp_path / "absent.weights.h5")
    (tmp_path / "text.weights.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match="neither an HDF5 file"):
        load_keras_weights(model, tmp_path / "text.weights.h5")
    with h5py.File(tmp_path / "legacy.h5", "w") as f:
        f.attrs["layer_names"] = [b"dense"]
    with pytest.raises(ValueError, match="legacy Keras 2"):
        load_keras_weights(model, tmp_path / "legacy.h5")
