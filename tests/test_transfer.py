"""Pretrained backbones (zoo export/load, strict restores), transfer learning (linear probe leaves the
backbone bit-identical; fine-tuning moves it but not BN's moving statistics), class imbalance, and the
pretrain -> transfer commands end to end on digits."""
import json
from pathlib import Path

import jax
import numpy as np
import pytest

import fluxnet as fx
from fluxnet import layers, optimizers, pretrained, transfer
from fluxnet.data import limit_per_class, select_classes
from fluxnet.models.builders import build_model

LOSS = fx.losses.get("sparse_categorical_crossentropy", from_logits=True)
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def small_cnn():
    return fx.Sequential([layers.Input((8, 8, 1)), layers.Conv2D(4, 3, padding="same", name="c1"),
                          layers.BatchNormalization(name="bn1"), layers.Activation("relu", name="a1"),
                          layers.MaxPooling2D(name="p1"), layers.Conv2D(8, 3, padding="same", name="c2"),
                          layers.BatchNormalization(name="bn2"), layers.Activation("relu", name="a2"),
                          layers.Flatten(name="flat"), layers.Dense(5, name="logits")], name="small")


def randomised(variables, seed=1):
    """Variables with random values everywhere (BN moving statistics positive), so nothing is trivial."""
    leaves, tree = jax.tree.flatten(variables)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(tree, [np.abs(rng.normal(size=l.shape)).astype(np.float32) + 0.1 for l in leaves])


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    model = small_cnn()
    variables = randomised(model.init(jax.random.key(0)))
    root = tmp_path_factory.mktemp("zoo")
    backbone, path = pretrained.export(model, variables, "small", cut="a2", zoo=root, info={"note": "test"})
    return root, variables, path


def test_zoo_export_load_round_trip(zoo, monkeypatch):
    root, variables, path = zoo
    assert path == root / "small" and (path / "backbone.json").is_file()
    backbone, loaded = pretrained.load("small", zoo=root)
    assert [l.name for l in backbone.layers][1:] == ["c1", "bn1", "a1", "p1", "c2", "bn2", "a2"]
    assert sorted(loaded["params"]) == ["bn1", "bn2", "c1", "c2"]  # the head is not part of the backbone
    for path_, leaf in jax.tree_util.tree_leaves_with_path(loaded):
        source = variables
        for k in path_:
            source = source[k.key]
        np.testing.assert_array_equal(leaf, source)
    monkeypatch.setenv("FLUXNET_ZOO", str(root))
    assert pretrained.load("small")[1]["params"]["c1"]["kernel"].shape == (3, 3, 1, 4)
    assert pretrained.load(str(path))[0].output.shape == (None, 4, 4, 8)  # an entry folder works too
    assert pretrained.info("small")["cut"] == "a2"


def test_zoo_names_cannot_escape_and_entries_are_not_overwritten(zoo, tmp_path):
    root, variables, path = zoo
    for bad in ("../evil", "a/b", "..", "", "/abs", "x" * 200):
        with pytest.raises(ValueError, match="zoo name|Zoo name"):
            pretrained.entry_dir(bad, zoo=root)
    before = (path / "backbone.json").read_text()
    with pytest.raises(FileExistsError, match="already exists"):
        pretrained.export(small_cnn(), variables, "small", cut="a2", zoo=root)
    assert (path / "backbone.json").read_text() == before and not list(root.glob(".small*"))
    with pytest.raises(FileNotFoundError, match="small"):  # unknown names list the entries there are
        pretrained.load("nope", zoo=root)


def test_restore_is_strict_unless_paths_are_excluded(zoo):
    root, _, _ = zoo
    backbone, source = pretrained.load("small", zoo=root)
    model = transfer.build_transfer_model(backbone, 3)
    target = model.init(jax.random.key(5))
    with pytest.raises(ValueError) as err:
        pretrained.restore_into(target, source)
    assert "params/head_logits/kernel: missing from the source" in str(err.value)
    restored = pretrained.restore_into(target, source, exclude=["params/head_*"])
    np.testing.assert_array_equal(restored["params"]["c2"]["kernel"], source["params"]["c2"]["kernel"])
    np.testing.assert_array_equal(restored["params"]["head_logits"]["kernel"],
                                  target["params"]["head_logits"]["kernel"])
    wrong = jax.tree.map(lambda a: a, source)
    wrong["params"]["c1"] = {"kernel": np.zeros((5, 5, 1, 4), np.float32), "bias": source["params"]["c1"]["bias"]}
    wrong["params"]["extra"] = {"w": np.zeros(3, np.float32)}
    with pytest.raises(ValueError) as err:
        pretrained.restore_into(target, wrong, exclude=["params/head_*"])
    text = str(err.value)
    assert "params/c1/kernel: source shape (5, 5, 1, 4), model expects (3, 3, 1, 4)" in text
    assert "params/extra/w: unexpected" in text


def transfer_run(zoo, mode, digits_splits, fine_tune_layers=None, epochs=2):
    root, _, _ = zoo
    backbone, source = pretrained.load("small", zoo=root)
    model = transfer.build_transfer_model(backbone, 5, pooling="flatten")
    groups = transfer.configure(model, backbone, mode, fine_tune_layers)
    txs = {"head": optimizers.get("adam", 1e-2), "backbone": optimizers.get("adam", 1e-3)}
    trainer = fx.Trainer(model, loss=LOSS, optimizer=txs, param_groups=groups, metrics=["accuracy"])
    init = pretrained.restore_into(model.init(jax.random.key(0)), source, exclude=["params/head_*"])
    state = trainer.with_variables(trainer.init(jax.random.key(0)), init)
    target = select_classes(digits_splits, range(5, 10))
    state, _ = trainer.fit(state, limit_per_class(target.train, 20, seed=0), epochs=epochs, batch_size=20,
                           verbose=0)
    return model, source, jax.device_get(state.variables)


def changed(a, b):
    return not np.array_equal(np.asarray(a), np.asarray(b))


def test_linear_probe_leaves_every_backbone_variable_bit_identical(zoo, digits_splits):
    model, source, after = transfer_run(zoo, "linear_probe", digits_splits)
    for collection in ("params", "batch_stats"):
        for name, sub in source[collection].items():
            for leaf, value in sub.items():
                np.testing.assert_array_equal(after[collection][name][leaf], value, err_msg=f"{name}/{leaf}")
    initial = model.init(jax.random.key(0))["params"]["head_logits"]["kernel"]
    assert changed(after["params"]["head_logits"]["kernel"], initial)
    counts = model.param_counts()
    assert counts["trainable"] == 8 * 4 * 4 * 5 + 5  # only the head
    assert counts["trainable"] + counts["non_trainable"] == model.count_params()


def test_fine_tune_moves_unfrozen_layers_but_not_bn_moving_statistics(zoo, digits_splits):
    _, source, after = transfer_run(zoo, "fine_tune", digits_splits)
    for name in ("c1", "c2", "bn1", "bn2"):
        assert all(changed(after["params"][name][k], v) for k, v in source["params"][name].items()), name
    for name, stats in source["batch_stats"].items():
        for k, v in stats.items():
            np.testing.assert_array_equal(after["batch_stats"][name][k], v)
    _, source, after = transfer_run(zoo, "fine_tune", digits_splits, fine_tune_layers=1, epochs=1)
    assert changed(after["params"]["bn2"]["gamma"], source["params"]["bn2"]["gamma"])  # the top weighted layer
    for name in ("c1", "bn1", "c2"):
        for k, v in source["params"][name].items():
            np.testing.assert_array_equal(after["params"][name][k], v)


def test_balanced_class_weights_raise_balanced_accuracy_on_imbalanced_digits(digits_splits):
    from sklearn.metrics import balanced_accuracy_score

    train = digits_splits.train
    rng = np.random.default_rng(0)
    keep = np.concatenate([np.flatnonzero(train.labels == c) if c < 5 else
                           rng.permutation(np.flatnonzero(train.labels == c))[:4] for c in range(10)])
    x, y = train.images[keep], train.labels[keep]
    scores = {}
    for weighting in (None, "balanced"):
        model = build_model("mlp", (8, 8, 1), 10, units=(32,), dropout=0.0)
        trainer = fx.Trainer(model, loss=LOSS, optimizer=optimizers.get("adam", 3e-3))
        state, _ = trainer.fit(trainer.init(jax.random.key(0)), (x, y), epochs=4, batch_size=32, verbose=0,
                               class_weight=weighting)
        predictions = trainer.predict(state, digits_splits.test.images).argmax(-1)
        scores[weighting] = balanced_accuracy_score(digits_splits.test.labels, predictions)
    assert scores["balanced"] > scores[None] + 0.05, scores


def test_pretrain_then_transfer_commands(tmp_path, digits_tfds_dir):
    from fluxnet import cli

    common = [f"data.data_dir={digits_tfds_dir}", "train.epochs=2", "model.cnn.filters=(8, 8)",
              "model.cnn.dense_units=16"]
    zoo_dir = tmp_path / "zoo"
    assert cli.main(["pretrain", str(CONFIGS / "digits_pretrain.py"), *common, f"pretrain.zoo={zoo_dir}",
                     "--workdir", str(tmp_path / "pre"), "--quiet"]) == 0
    assert (zoo_dir / "digits04" / "backbone.json").is_file()
    backbone, variables = fx.pretrained.load(str(tmp_path / "pre"))  # a pretrain workdir works as well
    assert backbone.output.shape == (None, 2, 2, 8)
    for mode in ("linear_probe", "fine_tune"):
        workdir = tmp_path / mode
        args = ["transfer", str(CONFIGS / "digits_transfer.py"), f"data.data_dir={digits_tfds_dir}",
                "train.epochs=2", "data.train_per_class=10", f"transfer.zoo={zoo_dir}", f"transfer.mode={mode}",
                "augment=({'op': 'RandomTranslation', 'height_factor': 0.1, 'width_factor': 0.1},)",
                "--workdir", str(workdir), "--quiet"]
        assert cli.main(args) == 0
        summary = json.loads((workdir / "summary.json").read_text())
        assert summary["transfer"]["mode"] == mode and 0 <= summary["test"]["accuracy"] <= 1
        head = 2 * 2 * 8 * 5 + 5
        if mode == "linear_probe":
            assert summary["trainable_params"] == head
        else:
            assert summary["trainable_params"] > head
        model, trained = fx.load_run(workdir)
        probe = pretrained.restore_into(trained, variables, exclude=["params/head_*"])
        if mode == "linear_probe":  # the backbone in the run's checkpoint is the pretrained one, exactly
            assert all(jax.tree.leaves(jax.tree.map(np.array_equal, probe, jax.device_get(trained))))
    assert cli.main(["augment-preview", str(CONFIGS / "digits_transfer.py"), f"data.data_dir={digits_tfds_dir}",
                     "augment=({'op': 'RandomRotation', 'factor': 0.1},)", "--output",
                     str(tmp_path / "preview.png")]) == 0
    assert (tmp_path / "preview.png").stat().st_size > 1000


def test_mixup_in_the_train_step_trains_sparse_labels_on_their_dense_loss(digits_splits):
    """MixUp makes soft labels inside the step; the trainer then trains on categorical cross-entropy
    (same from_logits) while evaluation keeps the sparse loss -- and the step compiles no more often than
    without it (once for full batches, once for the last partial one)."""
    from fluxnet.augment import Pipeline

    pipeline = Pipeline.from_config([{"op": "RandomTranslation", "height_factor": 0.1, "width_factor": 0.1},
                                     {"op": "MixUp", "alpha": 0.2}], num_classes=10)
    model = build_model("mlp", (8, 8, 1), 10, units=(32,), dropout=0.0)
    trainer = fx.Trainer(model, loss=LOSS, optimizer=optimizers.get("adam", 3e-3), metrics=["accuracy"],
                         augment=pipeline)
    state, history = trainer.fit(trainer.init(jax.random.key(0)), digits_splits.train, epochs=3, batch_size=64,
                                 verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert trainer.evaluate(state, digits_splits.test)["accuracy"] > 0.6  # 10 classes: chance is 0.1
    assert len(digits_splits.train) % 64 and trainer.train_step._cache_size() == 2


@pytest.mark.slow  # builds, trains and evaluates a MobileNetV2: make test-slow
def test_transfer_on_a_keras_application_backbone(tmp_path, digits_tfds_dir, capsys):
    """``transfer.backbone=mobilenet_v2:FILE.weights.h5``: digits upsampled to 32x32 RGB with the
    network's preprocess_input; a linear probe leaves the file's weights exactly as they were; a zoo entry
    made from an application feeds the same inputs."""
    from fluxnet import cli
    from fluxnet.runs.build import application_input
    from fluxnet.runs.config import resolve_config

    backbone = fx.applications.MobileNetV2(include_top=False, input_shape=(32, 32, 3))
    variables = randomised(backbone.init(jax.random.key(0)))
    weights = fx.transfer.save_keras_weights(backbone, variables, tmp_path / "mnv2.weights.h5")
    config = [str(CONFIGS / "digits_transfer.py"), f"data.data_dir={digits_tfds_dir}", "train.epochs=1",
              "data.train_per_class=5", "transfer.head.pooling=avg", f"transfer.backbone=mobilenet_v2:{weights}"]
    workdir = tmp_path / "run"
    assert cli.main(["transfer", *config, "--workdir", str(tmp_path / "refused"), "--quiet"]) == 2
    assert "takes its own inputs" in capsys.readouterr().err  # data.preprocess rescales: refused, not ignored
    assert cli.main(["transfer", *config[:-1], "transfer.backbone=mobilenet:x.weights.h5", "--workdir",
                     str(tmp_path / "unknown"), "--quiet"]) == 2
    assert "Unknown application" in capsys.readouterr().err
    assert cli.main(["transfer", *config, "data.preprocess.rescale=None", "--workdir", str(workdir), "--quiet"]) == 0
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["transfer"]["backbone"] == str(weights) and summary["trainable_params"] == 1280 * 5 + 5
    model, trained = fx.load_run(workdir)
    assert model.inputs[0].shape == (None, 32, 32, 3)
    probe = pretrained.restore_into(trained, fx.load_keras_weights(backbone, weights), exclude=["params/head_*"])
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, probe, jax.device_get(trained))))
    assert cli.main(["evaluate", str(workdir)]) == 0  # the saved config reproduces the inputs

    entry = pretrained.save_backbone(backbone, variables, tmp_path / "zoo" / "mnv2",
                                     info={"application": "mobilenet_v2"})
    cfg = resolve_config(config[0], [*config[1:-1], f"transfer.backbone={entry}", "transfer.input_size=40"])
    assert application_input(cfg) == ("mobilenet_v2", 40)
