"""fx.applications (ResNet50, VGG16, DenseNet121, MobileNetV2, Xception, EfficientNet, ConvNeXt with its
LayerScale and StochasticDepth layers, the preprocess_input modes) and fx.load_keras_weights, checked
against Keras 3. The tests that build Keras applications are marked slow (``make test-slow``)."""
import inspect
import json
import math
import os

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fluxnet as fx
from fluxnet import layers
from fluxnet.applications import (ConvNeXt, ConvNeXtTiny, DenseNet, DenseNet121, EfficientNet, EfficientNetB0,
                                  MobileNetV2, ResNet50, VGG16, Xception, common, convnext, densenet, efficientnet,
                                  mobilenet_v2, resnet50, vgg16, xception)
from fluxnet.transfer.keras_weights import load_keras_weights

KERAS_RESNET50_PARAMS = 25_636_712  # keras.applications.ResNet50(weights=None).count_params()
KERAS_RESNET50_NOTOP_PARAMS = 23_587_712
# keras.applications.X(weights=None): count_params() and its trainable / non-trainable split, then include_top=False
KERAS_PARAMS = {VGG16: (138_357_544, 0, 14_714_688), DenseNet121: (8_062_504, 83_648, 7_037_504),
                MobileNetV2: (3_538_984, 34_112, 2_257_984), Xception: (22_910_480, 54_528, 20_861_480),
                EfficientNetB0: (5_330_571, 42_023, 4_049_571), ConvNeXtTiny: (28_589_128, 0, 27_820_128)}
BUILDERS = list(KERAS_PARAMS)
TOPS = {builder: "convnext_tiny_head_dense" if builder is ConvNeXtTiny else "predictions" for builder in BUILDERS}
SIZES = {builder: (71, 299) if builder is Xception else (32, 224) for builder in BUILDERS}  # (minimum, default)
# keras.applications.EfficientNetB1..B7(weights=None): count_params() and the non-trainable part
KERAS_EFFICIENTNET_PARAMS = {"b1": (7_856_239, 62_055), "b2": (9_177_569, 67_575), "b3": (12_320_535, 87_303),
                             "b4": (19_466_823, 125_207), "b5": (30_562_527, 172_743), "b6": (43_265_143, 224_439),
                             "b7": (66_658_687, 310_727)}
# each network's Keras class, module (preprocess_input) and compared input size
KERAS_NAMES = {"resnet50": ("ResNet50", "resnet50", 32), "vgg16": ("VGG16", "vgg16", 32),
               "densenet121": ("DenseNet121", "densenet", 32), "mobilenet_v2": ("MobileNetV2", "mobilenet_v2", 32),
               "xception": ("Xception", "xception", 71), "efficientnetb0": ("EfficientNetB0", "efficientnet", 32),
               "convnext_tiny": ("ConvNeXtTiny", "convnext", 32)}


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


# ------------------------------------------------------------------------------------------- VGG16 .. ConvNeXtTiny
@pytest.mark.parametrize("builder", BUILDERS)
def test_parameter_counts_equal_keras(builder):
    params, non_trainable, headless = KERAS_PARAMS[builder]
    model = builder()
    default = SIZES[builder][1]
    assert model.count_params() == params
    assert model.param_counts()["non_trainable"] == non_trainable
    assert model.inputs[0].shape == (None, default, default, 3) and model.outputs[0].shape == (None, 1000)
    assert model.layers[-1].name == TOPS[builder]
    assert builder(include_top=False).count_params() == headless


def test_vgg16_layers():
    model = VGG16(input_shape=(32, 32, 3), classes=10)
    names = [layer.name for layer in model.layers]
    assert names[:4] == ["input_layer", "block1_conv1", "block1_conv2", "block1_pool"]
    assert names[-5:] == ["block5_pool", "flatten", "fc1", "fc2", "predictions"]
    assert model.count_params() == 14_714_688 + (512 + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * 10


def test_densenet_is_keras_densenet_of_blocks():
    model = DenseNet121()
    assert model.name == "densenet121"
    names = [layer.name for layer in model.layers]
    assert names[:7] == ["input_layer", "zero_padding2d", "conv1_conv", "conv1_bn", "conv1_relu",
                         "zero_padding2d_1", "pool1"]
    assert [n for n in names if n.endswith("_pool") and n.startswith("pool")] == ["pool2_pool", "pool3_pool",
                                                                                 "pool4_pool"]
    assert "conv4_block24_concat" in names and "conv5_block16_concat" in names and "conv5_block17_concat" not in names
    assert [model.get_layer(f"pool{i}_conv").filters for i in (2, 3, 4)] == [128, 256, 512]  # halved
    assert model.get_layer("conv1_bn").epsilon == 1.001e-5
    small = DenseNet((1, 1, 1, 1), include_top=False, input_shape=(32, 32, 3), name="tiny")
    assert small.name == "tiny"
    assert small.outputs[0].shape == (None, 1, 1, 68)  # channels 64, 96, 48, 80, 40, 72, 36, 68


@pytest.mark.parametrize("builder, size, pooling, shape, top", [
    (VGG16, 64, None, (None, 2, 2, 512), "block5_pool"),
    (VGG16, 64, "avg", (None, 512), "global_average_pooling2d"),
    (VGG16, 64, "max", (None, 512), "global_max_pooling2d"),
    (DenseNet121, 64, None, (None, 2, 2, 1024), "relu"),
    (DenseNet121, 64, "avg", (None, 1024), "avg_pool"),
    (DenseNet121, 64, "max", (None, 1024), "max_pool"),
    (MobileNetV2, 64, None, (None, 2, 2, 1280), "out_relu"),
    (MobileNetV2, 64, "avg", (None, 1280), "global_average_pooling2d"),
    (MobileNetV2, 64, "max", (None, 1280), "global_max_pooling2d"),
    (Xception, 96, None, (None, 3, 3, 2048), "block14_sepconv2_act"),
    (Xception, 96, "avg", (None, 2048), "global_average_pooling2d"),
    (Xception, 96, "max", (None, 2048), "global_max_pooling2d"),
    (EfficientNetB0, 64, None, (None, 2, 2, 1280), "top_activation"),
    (EfficientNetB0, 64, "avg", (None, 1280), "avg_pool"),
    (EfficientNetB0, 64, "max", (None, 1280), "max_pool"),
    (ConvNeXtTiny, 64, None, (None, 2, 2, 768), "layer_normalization"),  # Keras normalises without pooling too
    (ConvNeXtTiny, 64, "avg", (None, 768), "layer_normalization"),
    (ConvNeXtTiny, 64, "max", (None, 768), "layer_normalization"),
])
def test_without_top(builder, size, pooling, shape, top):
    model = builder(include_top=False, input_shape=(size, size, 3), pooling=pooling)
    assert model.outputs[0].shape == shape
    assert model.layers[-1].name == top
    assert model.count_params() == KERAS_PARAMS[builder][2]


@pytest.mark.parametrize("builder", BUILDERS)
def test_builds_on_an_input_tensor(builder):
    image = layers.Input((40, 48, 3))
    model = builder(include_top=False, input_tensor=layers.Rescaling(1.0)(image), pooling="max", name="backbone")
    assert model.inputs == [image] and model.name == "backbone"
    with pytest.raises(TypeError, match="symbolic tensor"):
        builder(input_tensor=np.zeros((1, 224, 224, 3)))


@pytest.mark.parametrize("builder, keras_name", [(VGG16, "VGG16"), (DenseNet121, "DenseNet121"),
                                                 (ResNet50, "ResNet50"), (Xception, "Xception"),
                                                 (EfficientNetB0, "EfficientNetB0"),
                                                 (efficientnet.EfficientNetB7, "EfficientNetB7"),
                                                 (ConvNeXtTiny, "ConvNeXtTiny")])
def test_imagenet_error_names_the_keras_class_and_file(builder, keras_name):
    with pytest.raises(ValueError) as err:
        builder(weights="imagenet")
    file = f"{keras_name.lower()}.weights.h5"
    assert f"keras.applications.{keras_name}(weights='imagenet').save_weights('{file}')" in str(err.value)
    assert f"fx.load_keras_weights(model, '{file}')" in str(err.value)


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("kwargs, message", [
    (dict(weights="no/such/file.weights.h5"), "path to a Keras 3 weights file"),
    (dict(include_top=False, input_shape=(96, "min - 1", 3)), "at least {min}x{min}"),
    (dict(include_top=False, input_shape=(96, 96)), "three integers"),
    (dict(input_shape=(None, 96, 3)), "static `input_shape`"),
    (dict(include_top=False, pooling="mean"), "pooling='mean'"),
])
def test_argument_errors(builder, kwargs, message):
    smallest = SIZES[builder][0]
    if "input_shape" in kwargs:
        kwargs = dict(kwargs, input_shape=tuple(smallest - 1 if n == "min - 1" else n for n in kwargs["input_shape"]))
    with pytest.raises(ValueError, match=message.format(min=smallest)):
        builder(**kwargs)


def test_densenet_argument_errors():
    with pytest.raises(ValueError, match=r"`blocks` must be four positive integers.*blocks=\(6, 12, 24\)"):
        DenseNet((6, 12, 24))
    with pytest.raises(ValueError, match=r"only for Keras' DenseNets.*blocks=\(1, 1, 1, 1\)"):
        DenseNet((1, 1, 1, 1), weights="imagenet")
    with pytest.raises(ValueError, match=r"keras.applications.DenseNet169\(weights='imagenet'\)"):
        DenseNet([6, 12, 32, 32], weights="imagenet")


@pytest.mark.parametrize("builder", BUILDERS)
def test_channel_warning_points_at_the_caller(builder):
    with pytest.warns(UserWarning, match="4 input channels") as record:
        builder(include_top=False, input_shape=(96, 96, 4))
    assert record[0].filename == __file__


# ------------------------------------------------------------------------------------------- MobileNetV2
def test_mobilenet_v2_layers_and_widths():
    model = MobileNetV2(input_shape=(32, 32, 3))
    names = [layer.name for layer in model.layers]
    assert names[:7] == ["input_layer", "Conv1", "bn_Conv1", "Conv1_relu", "expanded_conv_depthwise",
                         "expanded_conv_depthwise_BN", "expanded_conv_depthwise_relu"]
    assert names[-5:] == ["Conv_1", "Conv_1_bn", "out_relu", "global_average_pooling2d", "predictions"]
    assert [n for n in names if n.endswith("_add")] == [f"block_{i}_add" for i in (2, 4, 5, 7, 8, 9, 11, 12, 14, 15)]
    assert [n for n in names if n.endswith("_pad")] == [f"block_{i}_pad" for i in (1, 3, 6, 13)]
    assert model.get_layer("block_1_pad").padding == ((0, 1), (0, 1))  # Keras' correct_pad on an even side
    assert MobileNetV2(include_top=False, input_shape=(33, 33, 3)).get_layer("block_1_pad").padding == ((1, 1),
                                                                                                       (1, 1))
    bn, relu = model.get_layer("block_5_expand_BN"), model.get_layer("block_5_expand_relu")
    assert (bn.epsilon, bn.momentum, relu.max_value) == (1e-3, 0.999, 6.0)


@pytest.mark.parametrize("alpha, params, widths", [(0.35, 1_691_208, (16, 112, 1280)),
                                                   (1.4, 6_156_712, (48, 448, 1792))])
def test_mobilenet_v2_alpha_scales_widths_as_keras(alpha, params, widths):
    model = MobileNetV2(alpha=alpha, input_shape=(96, 96, 3))
    assert model.count_params() == params  # Keras' count
    assert tuple(model.get_layer(n).filters for n in ("Conv1", "block_16_project", "Conv_1")) == widths
    assert [mobilenet_v2.make_divisible(v) for v in (11.2, 12.0, 36.0, 4.0)] == [16, 16, 40, 8]


@pytest.mark.parametrize("kwargs, name", [
    (dict(), "mobilenetv2_1.00_224"),
    (dict(alpha=0.5, include_top=False), "mobilenetv2_0.50_None"),
    (dict(input_shape=(160, 160, 3)), "mobilenetv2_1.00_160"),
    (dict(include_top=False, input_shape=(160, 128, 3)), "mobilenetv2_1.00_160"),
    (dict(alpha=0.75, include_top=False, input_shape=(96, 96, 3), name="mine"), "mine"),
    (dict(input_tensor="128x128"), "mobilenetv2_1.00_128"),  # an ImageNet size: the default size
    (dict(input_tensor="100x100"), "mobilenetv2_1.00_224"),
])
def test_mobilenet_v2_default_name_as_keras(kwargs, name):
    if "input_tensor" in kwargs:
        side = int(kwargs["input_tensor"].split("x")[0])
        kwargs = dict(kwargs, input_tensor=layers.Input((side, side, 3)))
    assert MobileNetV2(**kwargs).name == name


@pytest.mark.parametrize("kwargs, message", [
    (dict(alpha=0.6), r"alpha must be one of `0.35`, `0.50`, `0.75`, `1.0`, `1.3` or `1.4` only; Received `alpha=0.6`"),
    (dict(classes=10), r"`classes` should be 1000. Received `classes=10`"),
    (dict(input_shape=(100, 100, 3)), r"`input_shape` should be \(224, 224, 3\)"),
    (dict(include_top=False, input_shape=(100, 100, 4)), "The input must have 3 channels"),
    (dict(input_shape=(160, 160, 3), alpha=0.5),
     r"MobileNetV2\(alpha=0.5, input_shape=\(160, 160, 3\), weights='imagenet'\)"
     r".save_weights\('mobilenetv2_0.50_160.weights.h5'\)"),
    (dict(), r"MobileNetV2\(weights='imagenet'\).save_weights\('mobilenetv2_1.00_224.weights.h5'\)"),
])
def test_mobilenet_v2_imagenet_checks_alpha_and_size_as_keras(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MobileNetV2(weights="imagenet", **kwargs)


def test_mobilenet_v2_imagenet_warns_that_224_weights_load():
    with pytest.warns(UserWarning, match=r"Weights for input shape \(224, 224\) will be loaded") as record:
        with pytest.raises(ValueError, match=r"save_weights\('mobilenetv2_1.00_224.weights.h5'\)"):
            MobileNetV2(weights="imagenet", include_top=False, input_shape=(100, 100, 3))
    assert record[0].filename == __file__


@pytest.mark.parametrize("kwargs, message", [
    (dict(alpha=0), "`alpha` must be a positive number"),
    (dict(alpha="1"), "`alpha` must be a positive number"),
    (dict(input_shape=(64, 64, 3), input_tensor="64x48"), r"input_tensor.shape\[2\] must equal input_shape\[1\]"),
])
def test_mobilenet_v2_argument_errors(kwargs, message):
    if "input_tensor" in kwargs:
        kwargs = dict(kwargs, input_tensor=layers.Input((64, 48, 3)))
    with pytest.raises(ValueError, match=message):
        MobileNetV2(**kwargs)


# ------------------------------------------------------------------------------------------- Xception
def test_xception_layers():
    model = Xception(input_shape=(71, 71, 3))
    names = [layer.name for layer in model.layers]
    assert names[:8] == ["input_layer", "block1_conv1", "block1_conv1_bn", "block1_conv1_act", "block1_conv2",
                         "block1_conv2_bn", "block1_conv2_act", "block2_sepconv1"]
    assert names[-3:] == ["block14_sepconv2_act", "avg_pool", "predictions"]
    # Keras leaves the four shortcut convolutions, their BNs and the twelve additions unnamed
    assert [n for n in names if n.startswith("conv2d")] == ["conv2d", "conv2d_1", "conv2d_2", "conv2d_3"]
    assert len([n for n in names if n.startswith("batch_normalization")]) == 4
    assert [n for n in names if n.startswith("add")] == ["add"] + [f"add_{i}" for i in range(1, 12)]
    assert model.get_layer("conv2d_3").filters == 1024 and model.get_layer("block13_sepconv2").filters == 1024
    assert model.get_layer("block13_pool").padding == "same"
    assert Xception(include_top=False).outputs[0].shape == (None, None, None, 2048)


# ------------------------------------------------------------------------------------------- EfficientNet
@pytest.fixture(scope="module")
def efficientnet_b0():
    return EfficientNetB0(input_shape=(32, 32, 3))


def test_efficientnet_starts_with_keras_preprocessing(efficientnet_b0):
    names = [layer.name for layer in efficientnet_b0.layers]
    assert names[:6] == ["input_layer", "rescaling", "normalization", "stem_conv_pad", "stem_conv", "stem_bn"]
    assert efficientnet_b0.get_layer("rescaling").scale == 1 / 255
    normalization = efficientnet_b0.get_layer("normalization")
    stats = efficientnet_b0.abstract_variables()["batch_stats"]["normalization"]
    assert normalization.axis == (3,) and {k: v.shape for k, v in stats.items()} == {
        "mean": (3,), "variance": (3,), "count": ()}
    assert names[-4:] == ["top_activation", "avg_pool", "top_dropout", "predictions"]
    assert efficientnet_b0.get_layer("top_dropout").rate == 0.2


def test_efficientnet_with_a_weights_file_builds_keras_imagenet_graph(tmp_path, monkeypatch):
    path = tmp_path / "efficientnetb0.weights.h5"
    path.write_bytes(b"")
    checked = []
    monkeypatch.setattr(common, "check_keras_weights", lambda model, file: checked.append((model.name, file)))
    model = EfficientNetB0(weights=path, include_top=False, input_shape=(32, 32, 3))
    assert checked == [("efficientnetb0", path)]
    names = [layer.name for layer in model.layers]
    assert names[:5] == ["input_layer", "rescaling", "normalization", "rescaling_1", "stem_conv_pad"]
    np.testing.assert_allclose(model.get_layer("rescaling_1").scale, [1 / math.sqrt(s) for s in (0.229, 0.224, 0.225)])
    assert model.count_params() == KERAS_PARAMS[EfficientNetB0][2]


def test_efficientnet_drop_connect_is_keras_per_image_dropout(efficientnet_b0):
    drops = [layer for layer in efficientnet_b0.layers if layer.name.endswith("_drop")]
    # blocks b = 0..15 drop with 0.2 * b / 16 on their identity shortcuts (Keras' drop_connect_rate)
    assert [(d.name, d.rate) for d in drops[:3]] == [("block2b_drop", 0.2 * 2 / 16), ("block3b_drop", 0.2 * 4 / 16),
                                                     ("block4b_drop", 0.2 * 6 / 16)]
    assert len(drops) == 9 and all(d.noise_shape == (None, 1, 1, 1) for d in drops)
    assert "block1a_add" not in [layer.name for layer in efficientnet_b0.layers]
    # one stage of two blocks: block1b drops with 0.6 * 1 / 2 in training, not in inference
    stage = dict(efficientnet.DEFAULT_BLOCKS_ARGS[0], repeats=2)
    small = EfficientNet(0.5, 1.0, 32, dropout_rate=0.0, drop_connect_rate=0.6, blocks_args=[stage],
                         include_top=False, input_shape=(32, 32, 3))
    assert [(d.name, d.rate) for d in small.layers if d.name.endswith("_drop")] == [("block1b_drop", 0.6 / 2)]
    rng = np.random.default_rng(0)  # positive values, so variances are; model.init compiles for seconds
    variables = jax.tree.map(lambda a: rng.uniform(0.5, 1.5, a.shape).astype(a.dtype), small.abstract_variables())
    forward = jax.jit(lambda x, training, rng: small.apply(variables, x, training=training, rng=rng)[0],
                      static_argnums=1)
    x = rng.uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    assert not np.allclose(forward(x, False, None), forward(x, True, jax.random.key(1)))


def test_efficientnet_config_records_keras_initializers(efficientnet_b0):
    config = json.dumps(efficientnet_b0.get_config())
    assert '"efficientnet_conv_kernel"' in config and '"efficientnet_dense_kernel"' in config
    conv = efficientnet_b0.get_layer("block2a_expand_conv")
    assert conv.kernel_initializer is fx.initializers.get(efficientnet.CONV_KERNEL_INITIALIZER)
    kernel = conv.kernel_initializer(jax.random.key(0), (1, 1, 16, 96))
    assert abs(float(jnp.std(kernel)) - math.sqrt(2.0 / 96)) < 0.01  # Keras' VarianceScaling(2.0, "fan_out")
    dense = fx.initializers.get(efficientnet.DENSE_KERNEL_INITIALIZER)(jax.random.key(0), (1280, 1000))
    assert float(jnp.abs(dense).max()) <= math.sqrt(1.0 / 1000)  # VarianceScaling(1/3, "fan_out", "uniform")


@pytest.mark.parametrize("weights_name", sorted(KERAS_EFFICIENTNET_PARAMS))
def test_efficientnet_b1_to_b7_parameter_counts_equal_keras(weights_name):
    builder = getattr(efficientnet, f"EfficientNet{weights_name.upper()}")
    model = builder(input_shape=(32, 32, 3))
    assert model.name == f"efficientnet{weights_name}" and builder.__name__ == f"EfficientNet{weights_name.upper()}"
    assert (model.count_params(), model.param_counts()["non_trainable"]) == KERAS_EFFICIENTNET_PARAMS[weights_name]
    size = efficientnet.VARIANTS[weights_name][2]
    assert builder(include_top=True).inputs[0].shape == (None, size, size, 3)


def test_efficientnet_argument_errors():
    with pytest.raises(ValueError, match=r"repeats in `EfficientNet` must be > 0. Received: repeats=0"):
        EfficientNet(1.0, 1.0, 224, blocks_args=[dict(efficientnet.DEFAULT_BLOCKS_ARGS[0], repeats=0)])
    with pytest.raises(ValueError, match=r"only for Keras' EfficientNetB0 .. EfficientNetB7.*weights_name=None"):
        EfficientNet(1.0, 1.0, 224, weights="imagenet")
    small = EfficientNet(0.5, 0.5, 64, blocks_args=efficientnet.DEFAULT_BLOCKS_ARGS[:2], name="small")
    assert small.inputs[0].shape == (None, 64, 64, 3) and small.get_layer("stem_conv").filters == 16
    assert [layer.name for layer in small.layers if layer.name.endswith("_project_conv")] == [
        "block1a_project_conv", "block2a_project_conv"]


# ------------------------------------------------------------------------------------------- ConvNeXt
def test_convnext_tiny_layers():
    model = ConvNeXtTiny(input_shape=(32, 32, 3))
    names = [layer.name for layer in model.layers]
    assert names[:4] == ["input_layer", "convnext_tiny_prestem_normalization", "convnext_tiny_stem",
                         "convnext_tiny_stage_0_block_0_depthwise_conv"]
    assert names[-3:] == ["convnext_tiny_head_gap", "convnext_tiny_head_layernorm", "convnext_tiny_head_dense"]
    # Keras' ``inputs + x`` operations, one per block, as Add layers of their names
    assert [n for n in names if n.startswith("add")] == ["add"] + [f"add_{i}" for i in range(1, 18)]
    assert [layer.name for layer in model.get_layer("convnext_tiny_stem").layers] == [
        "convnext_tiny_stem_conv", "convnext_tiny_stem_layernorm"]
    assert [type(model.get_layer(f"convnext_tiny_downsampling_block_{i}")).__name__ for i in range(3)] == [
        "Sequential"] * 3
    conv = model.get_layer("convnext_tiny_stage_2_block_8_depthwise_conv")
    assert (conv.filters, conv.groups, conv.kernel_size) == (384, 384, (7, 7))
    normalization = model.get_layer("convnext_tiny_prestem_normalization")
    np.testing.assert_allclose(normalization.mean, [123.675, 116.28, 103.53])
    np.testing.assert_allclose(normalization.variance, [(0.229 * 255) ** 2, (0.224 * 255) ** 2, (0.225 * 255) ** 2])
    assert model.get_layer("convnext_tiny_stage_0_block_0_layer_scale").init_values == 1e-6
    assert convnext.preprocess_input(names) is names


def test_convnext_preprocessing_only_for_three_channels_when_included():
    without = ConvNeXtTiny(include_top=False, include_preprocessing=False, input_shape=(32, 32, 3))
    assert without.layers[1].name == "convnext_tiny_stem"
    with pytest.warns(UserWarning, match="4 input channels"):
        four = ConvNeXtTiny(include_top=False, input_shape=(32, 32, 4))
    assert four.layers[1].name == "convnext_tiny_stem"


def test_convnext_stochastic_depth_rates_and_config_round_trip():
    model = ConvNeXt((1, 2, 1, 1), (8, 16, 32, 64), drop_path_rate=0.4, layer_scale_init_value=None,
                     include_top=False, input_shape=(32, 32, 3), name="small")
    rates = [(layer.name, layer.drop_path_rate) for layer in model.layers if isinstance(layer, layers.StochasticDepth)]
    assert rates == [("small_stage_1_block_0_stochastic_depth", 0.1), ("small_stage_1_block_1_stochastic_depth", 0.2),
                     ("small_stage_2_block_0_stochastic_depth", 0.30000000000000004),
                     ("small_stage_3_block_0_stochastic_depth", 0.4)]  # linspace(0, 0.4, 5); the first: identity
    assert "small_stage_0_block_0_identity" in [layer.name for layer in model.layers]
    assert not any(isinstance(layer, layers.LayerScale) for layer in model.layers)
    rebuilt = fx.model_from_config(json.loads(json.dumps(model.get_config())))
    assert [(type(a).__name__, a.name) for a in rebuilt.layers] == [(type(b).__name__, b.name) for b in model.layers]
    assert rebuilt.count_params() == model.count_params()


@pytest.mark.parametrize("kwargs, message", [
    (dict(depths=(3, 3, 27, 3)), r"does not match convnext_tiny variant.*Expected depths: \[3, 3, 9, 3\]"),
    (dict(name="convnext"), r'Model name "convnext" does not match weights variant "convnext_tiny"'),
    (dict(weights_name="convnext_huge"), r"only for Keras' ConvNeXts.*weights_name='convnext_huge'"),
    (dict(name="my_convnext_tiny"), r"keras.applications.ConvNeXtTiny\(weights='imagenet'\)"),
])
def test_convnext_imagenet_checks_as_keras(kwargs, message):
    arguments = dict(depths=(3, 3, 9, 3), projection_dims=(96, 192, 384, 768), weights="imagenet",
                     weights_name="convnext_tiny", name="convnext_tiny") | kwargs
    with pytest.raises(ValueError, match=message):
        ConvNeXt(**arguments)


def test_layer_scale_and_stochastic_depth_match_keras(keras):
    from keras.src.applications.convnext import LayerScale as KerasLayerScale
    from keras.src.applications.convnext import StochasticDepth as KerasStochasticDepth

    for ours, theirs in ((layers.LayerScale, KerasLayerScale), (layers.StochasticDepth, KerasStochasticDepth)):
        arguments = [p for p in inspect.signature(ours.__init__).parameters if p not in ("self", "name", "kwargs")]
        assert arguments == [p for p in inspect.signature(theirs.__init__).parameters if p not in ("self", "kwargs")]
    x = np.random.default_rng(0).normal(size=(64, 3, 3, 5)).astype(np.float32)
    inp = layers.Input((3, 3, 5))
    scale = layers.LayerScale(0.5, 5)
    model = fx.Model(inp, layers.StochasticDepth(0.25)(scale(inp)))
    theirs = KerasLayerScale(0.5, 5)
    assert model.count_params() == 5 and np.allclose(model.init(jax.random.key(0))["params"][scale.name]["gamma"], 0.5)
    gamma = np.arange(1.0, 6.0, dtype=np.float32)
    theirs.build(x.shape)
    theirs.set_weights([gamma])
    variables = {"params": {scale.name: {"gamma": gamma}}}
    np.testing.assert_allclose(model.apply(variables, x)[0], np.asarray(theirs(x)), rtol=1e-6)  # inference: identity
    ours, _ = model.apply(variables, x, training=True, rng=jax.random.key(1))
    dropped = KerasStochasticDepth(0.25)(np.asarray(theirs(x)), training=True)
    for out in (np.asarray(ours), np.asarray(dropped)):  # whole examples zeroed, the others scaled by 1 / 0.75
        kept = np.abs(out).reshape(64, -1).max(axis=1) > 0
        np.testing.assert_allclose(out[kept], (x * gamma)[kept] / 0.75, rtol=1e-5)
        assert 0 < kept.sum() < 64
    with pytest.raises(ValueError, match="needs a random key"):
        model.apply(variables, x, training=True)
    with pytest.raises(ValueError, match=r"drop_path_rate must be a number in \[0, 1\)"):
        layers.StochasticDepth(1.0)
    with pytest.raises(ValueError, match="projection_dim=4 channels"):
        layers.LayerScale(1e-6, 4)(inp)


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


def _torch(x):
    return (x.astype(np.float32) / 255.0 - np.array([0.485, 0.456, 0.406], np.float32)) / np.array(
        [0.229, 0.224, 0.225], np.float32)


@pytest.mark.parametrize("mode, formula", [("caffe", _caffe), ("torch", _torch),
                                           ("tf", lambda x: x.astype(np.float32) / 127.5 - 1.0)])
def test_preprocess_input_modes_match_keras_formulas(mode, formula):
    x = np.random.default_rng(3).integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    np.testing.assert_allclose(common.preprocess_input(x, mode=mode), formula(x), rtol=1e-6, atol=1e-5)
    out = jax.jit(lambda a: common.preprocess_input(a, mode=mode))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(out), formula(x), rtol=1e-6, atol=1e-5)
    first = common.preprocess_input(np.moveaxis(x, -1, 1), data_format="channels_first", mode=mode)
    np.testing.assert_allclose(np.moveaxis(first, 1, -1), formula(x), rtol=1e-6, atol=1e-5)
    assert common.preprocess_input(x.astype(np.float64), mode=mode).dtype == np.float64


def test_each_network_preprocesses_as_keras():
    x = np.random.default_rng(4).uniform(0, 255, (3, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(vgg16.preprocess_input(x), _caffe(x), atol=1e-5)
    np.testing.assert_allclose(densenet.preprocess_input(x), _torch(x), rtol=1e-6, atol=1e-5)
    for module in (mobilenet_v2, xception):
        np.testing.assert_allclose(module.preprocess_input(x), x / 127.5 - 1.0, rtol=1e-6, atol=1e-6)
    assert efficientnet.preprocess_input(x) is x  # Keras: the network rescales and normalises itself
    gray = np.zeros((2, 4, 4, 1), np.float32)
    np.testing.assert_array_equal(common.preprocess_input(gray, mode="tf"), gray - 1.0)  # sample-wise: any channels
    with pytest.raises(ValueError, match="RGB"):
        densenet.preprocess_input(gray)
    with pytest.raises(ValueError, match="mode='bgr'"):
        common.preprocess_input(x, mode="bgr")


# ------------------------------------------------------------------------------------------- against Keras
def _randomise_statistics(keras, model, rng):
    """Random BatchNormalization moving statistics, Normalization means and variances and LayerScale
    factors (Keras' initial zeros, ones and 1e-6 would hide a mix-up)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0.0, 0.5, layer.moving_mean.shape).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape).astype(np.float32))
        elif type(layer).__name__ == "LayerScale":  # ConvNeXt's, initialised to 1e-6
            layer.gamma.assign(rng.normal(0.0, 0.5, layer.gamma.shape).astype(np.float32))
        elif isinstance(layer, keras.layers.Normalization) and layer.input_mean is None:
            layer.adapt_mean.assign(rng.uniform(100.0, 150.0, layer.adapt_mean.shape).astype(np.float32))
            layer.adapt_variance.assign(rng.uniform(2e3, 5e3, layer.adapt_variance.shape).astype(np.float32))
            layer.finalize_state()  # Keras computes with copies of the variables made here


def _keras_reference(keras, name, folder, **kwargs):
    """Keras' ``name`` network (at its compared size, logits; ``kwargs`` override) with random statistics:
    the names of its operations (its layers, and ConvNeXt's additions), its weights file, a preprocessed
    batch and its outputs. A cleared Keras session gives unnamed layers their first names.
    ``weights="imagenet"`` builds Keras' ImageNet graph with the download and the loading of the file
    skipped (the random weights stay)."""
    keras_class, module, size = KERAS_NAMES[name]
    keras.utils.clear_session()
    arguments = dict(weights=None, classifier_activation=None, input_shape=(size, size, 3)) | kwargs
    with pytest.MonkeyPatch.context() as patch:
        if arguments["weights"] == "imagenet":
            patch.setattr("keras.src.utils.file_utils.get_file", lambda *args, **kwargs: "not downloaded")
            patch.setattr(keras.Model, "load_weights", lambda self, path, **kwargs: None)
        model = getattr(keras.applications, keras_class)(**arguments)
    rng = np.random.default_rng(0)
    _randomise_statistics(keras, model, rng)
    path = folder / f"{name}.weights.h5"
    model.save_weights(str(path))
    x = rng.uniform(0.0, 255.0, (2, size, size, 3)).astype(np.float32)
    x = getattr(keras.applications, module).preprocess_input(x)
    return {"names": [operation.name for operation in model.operations], "path": path, "x": x,
            "logits": np.asarray(model.predict(x, verbose=0))}


@pytest.fixture(scope="module")
def keras_reference(tmp_path_factory):
    """``keras_reference(name, **kwargs)``: :func:`_keras_reference`, each built once per module."""
    built = {}

    def get(name, **kwargs):
        key = (name, *sorted(kwargs.items()))
        if key not in built:
            built[key] = _keras_reference(_keras(), name, tmp_path_factory.mktemp("keras"), **kwargs)
        return built[key]

    return get


def _max_relative_difference(model, variables, reference):
    outputs = np.asarray(jax.jit(lambda v, x: model.apply(v, x)[0])(variables, reference["x"]))
    expected = reference["logits"]
    return np.abs(outputs - expected).max() / np.abs(expected).max()


@pytest.fixture(scope="module")
def keras_resnet(keras_reference):
    return keras_reference("resnet50")


@pytest.mark.slow
def test_resnet50_layers_and_keras_order_equal_keras(keras_resnet):
    model = ResNet50(input_shape=(32, 32, 3))
    names = keras_resnet["names"]
    # the Input's name carries Keras' session counter (input_layer, input_layer_1, ...)
    assert [layer.name for layer in model.layers][1:] == names[1:]
    assert sorted(layer.name for layer in model.layers[1:]) == sorted(names[1:])


@pytest.mark.slow
def test_resnet50_loads_keras_weights_and_matches_keras_logits(keras_resnet):
    model = ResNet50(weights=keras_resnet["path"], classifier_activation=None, input_shape=(32, 32, 3))
    variables = load_keras_weights(model, keras_resnet["path"])
    abstract = model.abstract_variables()
    assert jax.tree.structure(variables) == jax.tree.structure(abstract)
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(variables))
    assert _max_relative_difference(model, variables, keras_resnet) < 1e-4


@pytest.mark.slow
def test_resnet50_rejects_weights_of_another_head(keras_resnet):
    with pytest.raises(ValueError, match=r"shape mismatch: layers/dense/vars/0 \(Keras layer 'predictions'\)"):
        ResNet50(weights=keras_resnet["path"], classes=10, input_shape=(32, 32, 3))


@pytest.mark.slow
@pytest.mark.parametrize("name, builder", [("vgg16", VGG16), ("densenet121", DenseNet121),
                                           ("mobilenet_v2", MobileNetV2), ("xception", Xception),
                                           ("convnext_tiny", ConvNeXtTiny)])
def test_loads_keras_weights_and_matches_keras_logits(keras_reference, name, builder):
    reference = keras_reference(name)
    size = KERAS_NAMES[name][2]
    model = builder(weights=reference["path"], classifier_activation=None, input_shape=(size, size, 3))
    assert [layer.name for layer in model.layers] == reference["names"]
    variables = load_keras_weights(model, reference["path"])
    assert jax.tree.structure(variables) == jax.tree.structure(model.abstract_variables())
    assert _max_relative_difference(model, variables, reference) < 1e-4
    with pytest.raises(ValueError, match="shape mismatch"):
        builder(weights=reference["path"], classes=10, input_shape=(size, size, 3))


@pytest.mark.slow
def test_efficientnet_weights_none_graph_loads_keras_weights_and_matches_keras(keras_reference):
    reference = keras_reference("efficientnetb0")
    model = EfficientNetB0(classifier_activation=None, input_shape=(32, 32, 3))
    assert [layer.name for layer in model.layers] == reference["names"]
    variables = load_keras_weights(model, reference["path"])
    assert variables["batch_stats"]["normalization"]["count"].dtype == jnp.int32
    assert _max_relative_difference(model, variables, reference) < 1e-4


@pytest.mark.slow
def test_efficientnet_with_weights_file_is_keras_imagenet_graph(keras_reference):
    reference = keras_reference("efficientnetb0", weights="imagenet", include_top=False, pooling="avg")
    model = EfficientNetB0(weights=reference["path"], include_top=False, pooling="avg", input_shape=(32, 32, 3))
    assert [layer.name for layer in model.layers] == reference["names"]  # with Keras' rescaling_1
    variables = load_keras_weights(model, reference["path"])
    assert _max_relative_difference(model, variables, reference) < 1e-4


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
