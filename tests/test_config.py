"""fluxnet.runs.config: loading, overrides with type checks, JSON records, diffs."""
import json

import ml_collections
import pytest

from fluxnet.runs import config as fc

CONFIG_FILE = '''
import ml_collections


def get_config():
    cfg = ml_collections.ConfigDict()
    cfg.seed = 0
    cfg.data = ml_collections.ConfigDict({"name": "digits", "augment": ["flip"]})
    cfg.model = ml_collections.ConfigDict({"name": "mlp", "hidden": (64, 32)})
    cfg.train = ml_collections.ConfigDict({"epochs": 3, "batch_size": 128, "shuffle": True})
    cfg.optimizer = ml_collections.ConfigDict({
        "name": "adam", "learning_rate": 1e-3, "clipnorm": None,
        "schedule": {"name": "constant"}})
    return cfg
'''


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "exp.py"
    path.write_text(CONFIG_FILE)
    return fc.load_config(path)


def test_load_config(cfg, tmp_path):
    assert isinstance(cfg, ml_collections.ConfigDict)
    assert cfg.train.epochs == 3 and cfg.model.hidden == (64, 32)
    with pytest.raises(FileNotFoundError, match="nope.py"):
        fc.load_config(tmp_path / "nope.py")
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ValueError, match=r"defines no get_config\(\)"):
        fc.load_config(empty)


def test_overrides_of_each_type(cfg):
    out = fc.apply_overrides(cfg, [
        "train.epochs=5", "optimizer.learning_rate=1", "train.shuffle=false", "model.name=cnn",
        "data.name='123'", "model.hidden=[8]", "data.augment=['flip', 'crop']",
        "optimizer.clipnorm=1.0", "optimizer.schedule={'name': 'cosine', 'alpha': 0.1}",
        "seed = 7"])
    assert out.train.epochs == 5 and type(out.train.epochs) is int
    assert out.optimizer.learning_rate == 1.0 and type(out.optimizer.learning_rate) is float
    assert out.train.shuffle is False
    assert out.model.name == "cnn" and out.data.name == "123"
    assert out.model.hidden == (8,) and out.data.augment == ["flip", "crop"]
    assert out.optimizer.clipnorm == 1.0  # a None field accepts anything
    assert out.optimizer.schedule.to_dict() == {"name": "cosine", "alpha": 0.1}
    assert out.seed == 7
    assert cfg.train.epochs == 3 and cfg.model.name == "mlp"  # the input is not modified
    assert fc.apply_overrides(cfg, ["model.name=123"]).model.name == "123"  # str fields keep text
    assert fc.apply_overrides(cfg, ["train.shuffle=True"]).train.shuffle is True


def test_unknown_key_suggests_closest(cfg):
    with pytest.raises(ValueError, match=r"Unknown config key 'optimizer.lr'. Did you mean "
                                         r"'optimizer.learning_rate'"):
        fc.apply_overrides(cfg, ["optimizer.lr=0.1"])
    with pytest.raises(ValueError, match=r"'train.epoch'. Did you mean 'train.epochs'\?"):
        fc.apply_overrides(cfg, ["train.epoch=3"])
    with pytest.raises(ValueError, match=r"'optimiser.name'. Did you mean 'optimizer.name'.*"
                                         r"Valid keys: data.augment, data.name"):
        fc.apply_overrides(cfg, ["optimiser.name=sgd"])
    with pytest.raises(ValueError, match="'seed' is a value, not a group"):
        fc.apply_overrides(cfg, ["seed.x=1"])


@pytest.mark.parametrize("override, expected", [
    ("train.epochs=3.5", r"'train.epochs' expects a value of type int \(currently 3\), got '3.5'"),
    ("train.epochs=True", r"'train.epochs' expects a value of type int"),
    ("train.shuffle=1", r"'train.shuffle' expects a value of type bool \(currently True\), got '1'"),
    ("optimizer.learning_rate=fast", r"'optimizer.learning_rate' expects a value of type float"),
    ("model.hidden=5", r"'model.hidden' expects a value of type tuple"),
    ("train.epochs=None", r"'train.epochs' expects a value of type int"),
    ("optimizer.schedule=3", r"'optimizer.schedule' expects a value of type dict \(currently a group\)"),
])
def test_wrong_type_names_key_type_and_value(cfg, override, expected):
    with pytest.raises(ValueError, match=expected):
        fc.apply_overrides(cfg, [override])


def test_malformed_override(cfg):
    with pytest.raises(ValueError, match=r"'train.epochs' is not of the form 'dotted.key=value'"):
        fc.apply_overrides(cfg, ["train.epochs"])
    with pytest.raises(TypeError, match="list of 'key=value' strings"):
        fc.apply_overrides(cfg, "train.epochs=3")


def test_flatten(cfg):
    flat = fc.flatten(cfg)
    assert flat["optimizer.schedule.name"] == "constant"
    assert flat["train.epochs"] == 3 and "train" not in flat
    assert fc.flatten({"a": {}, "b": {"c": 1}}) == {"a": {}, "b.c": 1}


def test_save_load_round_trip(cfg, tmp_path):
    cfg = fc.apply_overrides(cfg, ["optimizer.learning_rate=0.30000000000000004"])
    path = tmp_path / "config.json"
    fc.save_config(cfg, path)
    assert json.loads(path.read_text())["optimizer"]["learning_rate"] == 0.1 + 0.2
    back = fc.load_saved_config(path)
    assert isinstance(back, ml_collections.ConfigDict)
    assert back.optimizer.learning_rate == 0.1 + 0.2
    assert fc.config_diff(cfg, back, ignore=()) == []  # the tuple read back as a list is equal
    cfg.model.activation = print
    with pytest.raises(TypeError, match="'model.activation' holds"):
        fc.save_config(cfg, tmp_path / "bad.json")


def test_config_diff(cfg):
    new = fc.apply_overrides(cfg, ["train.epochs=10", "optimizer.learning_rate=0.01",
                                   "model.hidden=[64, 32]", "train.shuffle=False"])
    new.model.dropout = 0.5
    assert fc.config_diff(cfg, new) == [
        ("model.dropout", fc.MISSING, 0.5),
        ("optimizer.learning_rate", 1e-3, 0.01),
        ("train.shuffle", True, False),
    ]
    assert ("train.epochs", 3, 10) in fc.config_diff(cfg, new, ignore=())
    assert fc.config_diff(cfg, new, ignore=("train", "optimizer", "model")) == []
