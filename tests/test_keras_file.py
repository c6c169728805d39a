"""Keras 3 ``.keras`` archives both ways (``fx.load_keras_model``, ``model.save("m.keras")``): Keras models
load into fluxnet and predict as Keras does, fluxnet models open in ``keras.saving.load_model`` and predict
as fluxnet does, and archives fluxnet cannot honour or should not trust are refused with errors that say why.

Adding a layer class to the translation tests is one entry in ``LAYER_CASES``; an entry for a class
fluxnet does not register yet is skipped."""

import json
import warnings
import zipfile

import jax
import numpy as np
import pytest

import fluxnet as fx
from fluxnet import layers
from fluxnet.errors import ArgumentError, CheckpointError, ConfigError
from fluxnet.layers.base import LAYERS
from fluxnet.transfer import keras_archive, save_keras_model

RNG = np.random.default_rng(0)
TOL = {"rtol": 1e-5, "atol": 1e-6}


def _randomize(model, seed=0):
    """Random values for every float variable of a Keras model (positive variances), so that loading a
    wrong or default value shows."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape) if "variance" in w.name else
                       rng.normal(0.0, 0.5, w.shape) if "float" in str(w.dtype) else np.asarray(w)
                       for w in model.weights])


def _assert_same_outputs(actual, expected):
    """Every output (one array or a list of them) equal within TOL."""
    for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)


def _from_keras(model, x, path):
    """Save a Keras model, load it into fluxnet, check the outputs equal Keras'; the fluxnet model and
    variables."""
    model.save(str(path))
    loaded, variables = fx.load_keras_model(path)
    _assert_same_outputs(loaded.apply(variables, x)[0], model(x, training=False))
    return loaded, variables


def _to_keras(keras, model, variables, x, path):
    """Save a fluxnet model as .keras, open it with Keras, check the outputs equal fluxnet's."""
    save_keras_model(model, variables, path)
    reopened = keras.saving.load_model(str(path))
    _assert_same_outputs(reopened(x, training=False), model.apply(variables, x)[0])
    return reopened


# ------------------------------------------------------------------------------------------- layer by layer
LAYER_CASES = [  # (id, Keras layer from keras.layers, input shape without the batch axis)
    ("dense", lambda L: L.Dense(3, activation="gelu", kernel_initializer="he_normal"), (5,)),
    ("dense_no_bias", lambda L: L.Dense(2, use_bias=False, activation="softmax"), (4,)),
    ("conv2d_same_strided", lambda L: L.Conv2D(4, 3, strides=2, padding="same", activation="relu"), (7, 7, 2)),
    ("conv2d_dilated_grouped", lambda L: L.Conv2D(4, 3, dilation_rate=2, groups=2), (7, 7, 4)),
    ("batch_normalization", lambda L: L.BatchNormalization(epsilon=1e-5, momentum=0.9), (4, 4, 3)),
    ("batch_normalization_no_center", lambda L: L.BatchNormalization(center=False), (6,)),
    ("max_pooling2d_same", lambda L: L.MaxPooling2D(3, strides=2, padding="same"), (5, 5, 2)),
    ("average_pooling2d_same", lambda L: L.AveragePooling2D(2, padding="same"), (5, 5, 2)),
    ("global_average_pooling2d", lambda L: L.GlobalAveragePooling2D(keepdims=True), (4, 4, 3)),
    ("global_max_pooling2d", lambda L: L.GlobalMaxPooling2D(), (4, 4, 3)),
    ("zero_padding2d", lambda L: L.ZeroPadding2D(((1, 2), (0, 1))), (3, 3, 2)),
    ("flatten", lambda L: L.Flatten(), (3, 2, 2)),
    ("reshape", lambda L: L.Reshape((3, -1)), (6, 2)),
    ("rescaling", lambda L: L.Rescaling(1 / 255, offset=-0.5), (4,)),
    ("activation", lambda L: L.Activation("hard_sigmoid"), (4,)),
    ("dropout", lambda L: L.Dropout(0.5, seed=1), (4,)),
    # layers being added to fluxnet: skipped until their class is registered
    ("depthwise_conv2d", lambda L: L.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), (5, 5, 2)),
    ("separable_conv2d", lambda L: L.SeparableConv2D(4, 3, padding="same"), (5, 5, 2)),
    ("relu", lambda L: L.ReLU(max_value=1.0, negative_slope=0.1), (4,)),
    ("layer_normalization", lambda L: L.LayerNormalization(epsilon=1e-5), (3, 4)),
    ("normalization", lambda L: L.Normalization(mean=[0.5, -1.0], variance=[2.0, 0.5]), (3, 2)),
    ("cropping2d", lambda L: L.Cropping2D(((1, 0), (0, 2))), (5, 5, 2)),
    ("rescaling_per_channel", lambda L: L.Rescaling([0.5, 2.0, -1.0], offset=[0.0, 1.0, 0.5]), (2, 2, 3)),
]


@pytest.mark.parametrize("make,shape", [c[1:] for c in LAYER_CASES], ids=[c[0] for c in LAYER_CASES])
def test_each_layer_translates_both_ways(keras, tmp_path, make, shape):
    """Keras -> fluxnet -> Keras: a one-layer model predicts the same in both, every variable random."""
    layer = make(keras.layers)
    if type(layer).__name__ not in LAYERS:
        pytest.skip(f"fluxnet has no {type(layer).__name__} yet")
    model = keras.Sequential([keras.Input(shape), layer])
    _randomize(model)
    x = RNG.normal(size=(3, *shape)).astype(np.float32)
    loaded, variables = _from_keras(model, x, tmp_path / "k.keras")
    assert type(loaded.layers[0]).__name__ == type(layer).__name__
    _to_keras(keras, loaded, variables, x, tmp_path / "f.keras")


# ------------------------------------------------------------------------------------------- Keras -> fluxnet
def test_keras_sequential_loads_and_predicts_as_keras(keras, tmp_path):
    L = keras.layers
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3, padding="same", activation="relu"),
                              L.BatchNormalization(), L.MaxPooling2D(), L.Dropout(0.3), L.Flatten(),
                              L.Dense(3, activation="softmax")], name="seq")
    _randomize(model)
    loaded, variables = _from_keras(model, RNG.normal(size=(2, 8, 8, 3)).astype(np.float32), tmp_path / "s.keras")
    assert isinstance(loaded, fx.Sequential) and loaded.name == "seq"
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]


def test_keras_functional_with_branches_shared_and_nested_models(keras, tmp_path):
    """Two inputs, two outputs, Add and Concatenate branches, a layer called twice, a nested Sequential and
    a nested Functional model called with training=False whose output is also the model's (Keras counts
    a functional model's calls from 1 there)."""
    L = keras.layers
    image, extra = keras.Input((6, 6, 3), name="image"), keras.Input((4,), name="extra")
    a = L.BatchNormalization()(L.Conv2D(4, 3, padding="same")(image))
    h = L.AveragePooling2D(2)(L.Add()([a, L.Conv2D(4, 1)(image)]))
    block = keras.Sequential([keras.Input((3, 3, 4)), L.Conv2D(2, 1), L.BatchNormalization()], name="block")
    t = keras.Input((4,))
    tower = keras.Model(t, L.Dense(4, activation="tanh")(L.BatchNormalization()(t)), name="tower")
    shared = L.Dense(5, name="shared")
    v = tower(extra, training=False)
    merged = L.Concatenate()([L.Flatten()(block(h)), shared(v), shared(L.Dropout(0.2)(extra))])
    model = keras.Model({"image": image, "extra": extra}, [L.Dense(2)(merged), v])
    _randomize(model)
    x = {"image": RNG.normal(size=(3, 6, 6, 3)).astype(np.float32),
         "extra": RNG.normal(size=(3, 4)).astype(np.float32)}
    loaded, variables = _from_keras(model, x, tmp_path / "f.keras")
    _, state = loaded.apply(variables, x, training=True, rng=jax.random.key(0))
    stats, new_stats = variables["batch_stats"], state["batch_stats"]
    jax.tree.map(np.testing.assert_array_equal, new_stats["tower"], stats["tower"])  # called with training=False
    block_bn = loaded.get_layer("block").layers[1].name
    assert not np.array_equal(new_stats["block"][block_bn]["moving_mean"], stats["block"][block_bn]["moving_mean"])
    _to_keras(keras, loaded, variables, x, tmp_path / "back.keras")


def test_keras_initializers_without_a_fluxnet_equivalent_warn_and_load(keras, tmp_path):
    L = keras.layers
    model = keras.Sequential([keras.Input((3,)), L.Dense(2, kernel_initializer=keras.initializers.RandomNormal(
        stddev=0.3), bias_initializer=keras.initializers.Constant(0.1))])
    model.save(str(tmp_path / "i.keras"))
    with pytest.warns(UserWarning) as record:
        loaded, variables = fx.load_keras_model(tmp_path / "i.keras")
    x = RNG.normal(size=(2, 3)).astype(np.float32)
    _assert_same_outputs(loaded.apply(variables, x)[0], model(x))
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert "(Dense), argument 'kernel_initializer': fluxnet has no initializer RandomNormal({'mean': 0.0, " \
           "'stddev': 0.3})" in messages[0]
    assert "argument 'bias_initializer': fluxnet has no initializer Constant({'value': 0.1})" in messages[1]


# ------------------------------------------------------------------------------------------- fluxnet -> Keras
def _fluxnet_model():
    """Branches, a nested Sequential called with training=False, a layer called twice, BN, Dropout."""
    x = layers.Input((6, 6, 2), name="pixels")
    base = fx.Sequential([layers.Input((6, 6, 2)), layers.Conv2D(3, 3, padding="same"), layers.BatchNormalization()],
                         name="base")
    h = layers.Add()([base(x, training=False), layers.Conv2D(3, 1, use_bias=False)(x)])
    pooled = layers.GlobalAveragePooling2D()(layers.MaxPooling2D(padding="same")(h))
    shared = layers.Dense(4, activation="relu", name="shared")
    h = layers.Concatenate()([shared(pooled), shared(layers.Dropout(0.5)(pooled)), layers.Flatten()(h)])
    return fx.Model(x, layers.Dense(3, activation="softmax")(layers.BatchNormalization()(h)), name="net")


def _random_variables(model, seed=1):
    """Variables of ``model``'s shapes, uniform in [0.5, 1.5] (valid variances; no initializer to compile)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: rng.uniform(0.5, 1.5, leaf.shape).astype(leaf.dtype), model.abstract_variables())


def test_fluxnet_functional_opens_in_keras_and_predicts_the_same(keras, tmp_path):
    model = _fluxnet_model()
    variables = _random_variables(model)
    x = RNG.normal(size=(4, 6, 6, 2)).astype(np.float32)
    reopened = _to_keras(keras, model, variables, x, tmp_path / "net.keras")
    assert [l.name for l in reopened.layers] == [l.name for l in model.layers]
    assert reopened.get_layer("base").layers[1].moving_variance.shape == (3,)


def test_model_save_writes_keras_and_load_model_reads_it(keras, tmp_path):
    """``model.save("m.keras")`` (the Keras-style shell) and ``fx.load_model`` of the archive."""
    model = fx.Sequential([layers.Input((5,)), layers.Dense(4, activation="relu"), layers.BatchNormalization(),
                           layers.Dense(2)], name="mlp")
    model.compile(optimizer="adam", loss="mse")
    x = RNG.normal(size=(3, 5)).astype(np.float32)
    model.save(tmp_path / "mlp.keras")
    np.testing.assert_allclose(np.asarray(keras.saving.load_model(str(tmp_path / "mlp.keras"))(x)), model.predict(x),
                               **TOL)
    reloaded = fx.load_model(tmp_path / "mlp.keras")
    assert reloaded.get_config() == fx.load_keras_model(tmp_path / "mlp.keras")[0].get_config()
    jax.tree.map(np.testing.assert_array_equal, reloaded.variables, model.variables)


def test_round_trip_through_keras_archive_keeps_model_and_variables(tmp_path):
    model = _fluxnet_model()
    variables = _random_variables(model)
    save_keras_model(model, variables, tmp_path / "a.keras")
    loaded, loaded_variables = fx.load_keras_model(tmp_path / "a.keras")
    jax.tree.map(np.testing.assert_array_equal, loaded_variables, variables)
    assert loaded.get_config() == model.get_config()
    x = RNG.normal(size=(2, 6, 6, 2)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(loaded.apply(loaded_variables, x)[0]),
                                  np.asarray(model.apply(variables, x)[0]))


def test_writer_refusals(tmp_path):
    x = layers.Input((3,))
    with_lambda = fx.Model(x, layers.Lambda("relu")(x))
    with pytest.raises(ArgumentError, match="Lambda layer 'lambda' cannot be written to a .keras archive"):
        save_keras_model(with_lambda, {"params": {}}, tmp_path / "l.keras")
    model = fx.Sequential([layers.Input((3,)), layers.Dense(2)])
    with pytest.raises(ArgumentError, match=r"named \*\.keras"):
        save_keras_model(model, _random_variables(model), tmp_path / "m.h5")
    with pytest.raises(ArgumentError, match="dense/kernel: missing"):
        save_keras_model(model, {"params": {}}, tmp_path / "m.keras")
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------- refused configs
def test_unsupported_layer_is_named_with_the_supported_ones(keras, tmp_path):
    keras.Sequential([keras.Input((4, 3)), keras.layers.GRU(2, name="rnn")]).save(str(tmp_path / "g.keras"))
    with pytest.raises(ConfigError) as err:
        fx.load_keras_model(tmp_path / "g.keras")
    message = str(err.value)
    assert "Keras layer 'rnn' (GRU): fluxnet has no layer class 'GRU'" in message
    assert "Supported classes:" in message and "Conv2D" in message and "BatchNormalization" in message
    assert "Lambda," not in message


def test_lambda_is_refused_without_running_it(keras, tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda t: t * 2, name="double")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns that it serializes a lambda
        model.save(str(tmp_path / "l.keras"))
    with pytest.raises(ConfigError, match=r"Keras layer 'double' \(Lambda\): .*never runs code from a file"):
        fx.load_keras_model(tmp_path / "l.keras")


@pytest.mark.parametrize("make,expected", [
    (lambda k: k.layers.Dense(2, kernel_regularizer="l2"), r"argument kernel_regularizer=L2\(\{'l2': 0.01\}\)"),
    (lambda k: k.layers.Dense(2, kernel_constraint="non_neg"), "argument kernel_constraint=NonNeg"),
    (lambda k: k.layers.Dense(2, activation="celu"), "Unknown activation 'celu'"),
], ids=["regularizer", "constraint", "activation"])
def test_keras_arguments_fluxnet_cannot_honour_are_refused(keras, tmp_path, make, expected):
    keras.Sequential([keras.Input((3,)), make(keras)]).save(str(tmp_path / "a.keras"))
    with pytest.raises(ConfigError, match=r"Keras layer 'dense.*' \(Dense\): .*" + expected):
        fx.load_keras_model(tmp_path / "a.keras")


# ------------------------------------------------------------------------------------------- unsafe archives
@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """The members of a small valid archive written by fluxnet."""
    model = fx.Sequential([layers.Input((3,)), layers.Dense(2)])
    path = tmp_path_factory.mktemp("archive") / "m.keras"
    save_keras_model(model, _random_variables(model), path)
    with zipfile.ZipFile(path) as z:
        return {"path": path, "members": {name: z.read(name) for name in z.namelist()}}


def _zip(path, members, compression=zipfile.ZIP_STORED):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w", compression) as z:
            for name, data in members:
                z.writestr(name, data)
    return path


@pytest.mark.parametrize("name,expected", [
    ("../evil", "outside the archive"), ("/etc/evil", "an absolute path"), ("assets/../../evil", "outside"),
    ("C:/evil", "an absolute path"), ("config.json", "holds the member 'config.json' 2 times"),
])
def test_unsafe_member_names_are_refused(archive, tmp_path, name, expected):
    path = _zip(tmp_path / "bad.keras", [*archive["members"].items(), (name, b"{}")])
    with pytest.raises(CheckpointError, match=expected):
        fx.load_keras_model(path)


def test_declared_and_compressed_bombs_are_refused_before_reading(archive, tmp_path, monkeypatch):
    path = tmp_path / "declared.keras"
    with zipfile.ZipFile(path, "w") as z:  # a directory entry declaring 1 TiB for 2 stored bytes
        for name, data in archive["members"].items():
            z.writestr(name, data)
        z.writestr("assets/blob", b"00")
        z.filelist[-1].file_size = 1 << 40
    with pytest.raises(CheckpointError, match=r"'assets/blob' declares 1099511627776 bytes from 2 stored.*bomb"):
        fx.load_keras_model(path)
    deflated = _zip(tmp_path / "zeros.keras", [*archive["members"].items(), ("assets/zeros", bytes(8 << 20))],
                    zipfile.ZIP_DEFLATED)
    with pytest.raises(CheckpointError, match="'assets/zeros' declares 8388608 bytes.*decompression bomb"):
        fx.load_keras_model(deflated)
    monkeypatch.setattr(keras_archive, "MAX_ARCHIVE_BYTES", 1000)
    with pytest.raises(CheckpointError, match="bytes uncompressed, more than the 1000 read"):
        fx.load_keras_model(archive["path"])


@pytest.mark.parametrize("cut", [0.5, 0.98], ids=["half", "directory"])
def test_truncated_archive_is_one_line_checkpoint_error(archive, tmp_path, cut):
    data = archive["path"].read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[:int(len(data) * cut)])
    with pytest.raises(CheckpointError, match="truncated or damaged") as err:
        fx.load_keras_model(tmp_path / "cut.keras")
    assert "\n" not in str(err.value)


def test_archives_that_are_not_keras_3_models_are_refused(archive, tmp_path):
    members = archive["members"]
    no_config = _zip(tmp_path / "a.keras", [(n, d) for n, d in members.items() if n != "config.json"])
    with pytest.raises(CheckpointError, match="without 'config.json' and 'model.weights.h5'"):
        fx.load_keras_model(no_config)
    old = _zip(tmp_path / "b.keras", [*((n, d) for n, d in members.items() if n != "metadata.json"),
                                      ("metadata.json", json.dumps({"keras_version": "2.15.0"}))])
    with pytest.raises(CheckpointError, match="written by Keras 2.15.0"):
        fx.load_keras_model(old)
    subclassed = json.loads(members["config.json"]) | {"class_name": "MyModel", "registered_name": "pkg>MyModel"}
    custom = _zip(tmp_path / "c.keras", [*((n, d) for n, d in members.items() if n != "config.json"),
                                         ("config.json", json.dumps(subclassed))])
    with pytest.raises(ConfigError, match="'pkg>MyModel' model; only Sequential and Functional"):
        fx.load_keras_model(custom)
    with pytest.raises(fx.errors.NotFoundError):
        fx.load_keras_model(tmp_path / "absent.keras")
