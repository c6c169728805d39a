"""The applications catalog, fx.applications.table / plot_table and ``fluxnet applications``: fast on a
stubbed registry of one tiny network; the real table of every registered network is marked slow."""
import dataclasses
import json

import pytest

import fluxnet as fx
from fluxnet import cli, layers
from fluxnet.applications import (APPLICATIONS, Application, ConvNeXtTiny, DenseNet121, EfficientNetB0, MobileNetV2,
                                  ResNet50, VGG16, Xception, comparison)
from fluxnet.applications import convnext, densenet, efficientnet, mobilenet_v2, resnet50, vgg16, xception
from fluxnet.registry import Registry


def _tiny(input_shape=None):
    """A network whose parameters depend on the input size (Flatten -> Dense), as VGG16's do."""
    x = layers.Input(input_shape)
    y = layers.Conv2D(4, 1, activation="relu")(x)
    return fx.Model(x, layers.Dense(10, activation="softmax")(layers.Flatten()(y)), name="tiny")


@pytest.fixture
def tiny_registry(monkeypatch):
    """A registry of the tiny network only, also the one ``fluxnet applications`` compares."""
    registry = Registry("application")
    registry.register("tiny", Application(_tiny, vgg16.preprocess_input, min_size=8, default_size=16,
                                          keras_top1=50.0, keras_top5=75.0, keras_params=0.01, keras_depth=3))
    monkeypatch.setattr(comparison, "APPLICATIONS", registry)
    return registry


def test_catalog_holds_keras_figures():
    assert {"vgg16", "resnet50", "densenet121", "mobilenet_v2", "xception", "efficientnetb0",
            "convnext_tiny"} <= set(APPLICATIONS.names())
    assert APPLICATIONS.get("vgg16") == Application(VGG16, vgg16.preprocess_input, 32, 224, 71.3, 90.1, 138.4, 16)
    assert APPLICATIONS.get("resnet50") == Application(ResNet50, resnet50.preprocess_input, 32, 224, 74.9, 92.1,
                                                       25.6, 107)
    assert APPLICATIONS.get("densenet121") == Application(DenseNet121, densenet.preprocess_input, 32, 224, 75.0,
                                                          92.3, 8.1, 242)
    assert APPLICATIONS.get("mobilenet_v2") == Application(MobileNetV2, mobilenet_v2.preprocess_input, 32, 224,
                                                           71.3, 90.1, 3.5, 105)
    assert APPLICATIONS.get("xception") == Application(Xception, xception.preprocess_input, 71, 299, 79.0, 94.5, 22.9,
                                                       81)
    assert APPLICATIONS.get("efficientnetb0") == Application(EfficientNetB0, efficientnet.preprocess_input, 32, 224,
                                                             77.1, 93.3, 5.3, 132)
    # Keras lists no top-5 accuracy and no depth for ConvNeXtTiny
    assert APPLICATIONS.get("convnext_tiny") == Application(ConvNeXtTiny, convnext.preprocess_input, 32, 224, 81.3,
                                                            None, 28.6, None)
    with pytest.raises(ValueError, match="Did you mean 'vgg16'"):
        APPLICATIONS.get("vgg61")


@pytest.mark.parametrize("name", APPLICATIONS.names())
def test_every_application_has_its_sizes_and_keras_parameter_count(name):
    app = APPLICATIONS.get(name)
    model = app.builder()
    assert model.inputs[0].shape == (None, app.default_size, app.default_size, 3)
    assert round(model.count_params() / 1e6, 1) == app.keras_params
    app.builder(include_top=False, input_shape=(app.min_size, app.min_size, 3))
    with pytest.raises(ValueError, match=f"at least {app.min_size}x{app.min_size}"):
        app.builder(include_top=False, input_shape=(app.min_size - 1, app.min_size, 3))


def test_table_measures_each_network(tiny_registry):
    rows = comparison.table(size=4, batch=2, seconds=0.01)
    assert [row.name for row in rows] == ["tiny"]
    row = rows[0]
    assert (row.size, row.batch) == (8, 2)  # raised to the network's minimum
    assert row.params == _tiny((16, 16, 3)).count_params() != _tiny((8, 8, 3)).count_params()  # at default size
    macs = 8 * 8 * 3 * 4 + 8 * 8 * 4 * 10  # the 1x1 convolution and the Dense layer
    assert 2 * macs <= row.gflops * 1e9 <= 1.3 * 2 * macs  # XLA counts a multiply-add as two FLOPs
    assert row.images_per_s > 0 and row.compile_s > 0 and row.device
    assert (row.keras_top1, row.keras_top5, row.keras_depth) == (50.0, 75.0, 3)
    text = comparison.format_table(rows)
    assert "batch 2" in text and "https://keras.io/api/applications/" in text
    assert text.splitlines()[1].split() == ["name", "input", "params", "depth", "top-1", "%", "top-5", "%",
                                            "GFLOPs/image", "images/s", "compile", "s"]
    assert text.splitlines()[2].split()[:6] == ["tiny", "8x8", f"{row.params:,}", "3", "50.0", "75.0"]
    unlisted = dataclasses.replace(row, keras_top5=None, keras_depth=None)  # as Keras lists ConvNeXtTiny
    assert comparison.format_table([unlisted]).splitlines()[2].split()[3:6] == ["-", "50.0", "-"]


@pytest.mark.parametrize("kwargs, message", [(dict(size=0), "`size` must be a positive integer. Received: size=0"),
                                             (dict(batch=2.5), "`batch` must be a positive integer")])
def test_table_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        comparison.table(**kwargs)


def test_plot_table_writes_a_png(tiny_registry, tmp_path):
    rows = comparison.table(size=8, batch=1, seconds=0.01)
    path = comparison.plot_table(rows * 2, tmp_path / "plots" / "table.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["table.png"]
    with pytest.raises(ValueError, match="at least one row"):
        comparison.plot_table([], tmp_path / "empty.png")


def test_command_prints_the_table_and_writes_png_and_json(tiny_registry, tmp_path, capsys):
    png, rows = tmp_path / "apps.png", tmp_path / "new" / "rows.json"
    assert cli.main(["applications", "--size", "8", "--batch", "2", "--output", str(png), "--json", str(rows)]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "8x8" in out and str(png) in out
    assert png.stat().st_size > 0
    (row,) = json.loads(rows.read_text())
    assert row["name"] == "tiny" and row["size"] == 8 and row["batch"] == 2 and row["gflops"] > 0


def test_command_reports_a_bad_size(capsys):
    assert cli.main(["applications", "--size", "0"]) == 2
    assert "size=0" in capsys.readouterr().err


@pytest.mark.slow
def test_table_of_every_registered_application():
    rows = fx.applications.table(batch=2, seconds=0.1)
    assert [row.name for row in rows] == APPLICATIONS.names()
    for row in rows:
        app = APPLICATIONS.get(row.name)
        assert row.size == max(comparison.DEFAULT_SIZE, app.min_size)
        assert row.params == app.builder().count_params() and row.gflops > 0 and row.images_per_s > 0
