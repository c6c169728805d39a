"""Reliability, configs: every config no run can use is refused before anything is written, with one
line naming the key; ``key=None`` turns optional settings off."""
import json

import pytest

from fluxnet import cli, runs
from fluxnet.errors import ConfigError, FluxnetError
from runs_support import CONFIG, cli_error, overrides


@pytest.mark.parametrize("override, message", [
    ("optimizer.learning_rate=-1", "'optimizer.learning_rate' must be a finite number > 0"),
    ("optimizer.learning_rate=0", "'optimizer.learning_rate' must be a finite number > 0"),
    ("optimizer.learning_rate=1e999", "'optimizer.learning_rate' must be a finite number > 0"),
    ("train.epochs=-1", "'train.epochs' must be an int >= 1"),
    ("train.epochs=0", "'train.epochs' must be an int >= 1"),
    ("train.epochs=None", "'train.epochs' expects a value of type int"),
    ("train.batch_size=0", "'train.batch_size' must be an int >= 1"),
    ("train.steps_per_execution=0", "'train.steps_per_execution' must be an int >= 1"),
    ("train.plots=3", "'train.plots' expects a value of type bool"),
    ("train.checkpoint.keep=0", "'train.checkpoint.keep' must be an int >= 1"),
    ("train.checkpoint.monitor=val_acc", "'train.checkpoint.monitor' is 'val_acc', which the run does not log"),
    ("data.train_per_class=0", "'data.train_per_class' must be an int >= 1 or None"),
    ("data.preprocess.rescale=0", "'data.preprocess.rescale' must be a finite number > 0"),
    ("train.class_weight={0: -1.0}", "gives class 0 the weight -1.0"),
    ("train.class_weight={3: 'heavy'}", "gives class 3 the weight 'heavy'"),
    ("train.class_weight=heavy", "'train.class_weight' must be None, 'balanced', a dict or a list"),
    ("train.early_stopping={'monitor': 'val_los', 'patience': 2}",
     "'train.early_stopping.monitor' is 'val_los', which the run does not log"),
    ("seed=None", "Config key 'seed' expects a value of type int"),
    ("seed=1.5", "Config key 'seed' expects a value of type int"),
    ("model.cnn.filters=3", "Config key 'model.cnn.filters' expects a value of type tuple"),
    ("seed=-1", "Config key 'seed' must be an int >= 0"),
    ("seed=99999999999", "Config key 'seed' must be below 2**32"),
    ("data.splits.test=None", "Config key 'data.splits.test' expects a fraction or a tfds split string"),
    ("train.early_stopping={'patience': 1, 'bogus': 2}", "'train.early_stopping' has unknown argument(s) ['bogus']"),
    ("train.class_weight={'a': 1.0}", "'train.class_weight' names the class 'a'; classes are ids"),
    ("data.name=''", "Unknown data set ''"),
])
def test_a_bad_setting_is_one_line_naming_the_key_and_nothing_is_written(override, message, tmp_path,
                                                                          digits_tfds_dir, capsys):
    workdir = tmp_path / "run"
    assert cli.main(["train", CONFIG, *overrides(digits_tfds_dir), override, "--workdir", str(workdir)]) == 2
    err = cli_error(capsys)
    assert err.startswith("fluxnet train: error: ") and message in err
    assert not workdir.exists()


def test_a_config_without_its_groups_is_refused_by_name(tmp_path, capsys):
    path = tmp_path / "partial.py"
    path.write_text("from ml_collections import ConfigDict\n\ndef get_config():\n"
                    "    return ConfigDict({'seed': 0, 'data': {'name': 'digits'}})\n")
    assert cli.main(["train", str(path), "--workdir", str(tmp_path / "w")]) == 2
    err = cli_error(capsys)
    assert "The config has no 'loss', 'optimizer', 'train' group" in err and not (tmp_path / "w").exists()


@pytest.mark.parametrize("body, message", [
    (None, "does not exist"),
    ("x = 1\n", "defines no get_config() function"),
    ("def get_config():\n    return 3\n", "must return an ml_collections.ConfigDict"),
])
def test_a_bad_config_file_is_one_line(body, message, tmp_path, capsys):
    path = tmp_path / "c.py"
    if body is not None:
        path.write_text(body)
    assert cli.main(["train", str(path), "--workdir", str(tmp_path / "w")]) == 2
    assert message in cli_error(capsys)


def test_none_turns_optional_settings_off_and_a_run_without_validation_trains(tmp_path, digits_tfds_dir, capsys):
    workdir = tmp_path / "noval"
    args = ["train", CONFIG, *overrides(digits_tfds_dir, 2), "data.splits.validation=None",
            "optimizer.schedule=None", "train.checkpoint.monitor=None", "train.early_stopping=None", "--workdir",
            str(workdir), "--quiet"]
    assert cli.main(args) == 0
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["data"]["validation"] == 0 and summary["epochs_completed"] == 2
    assert "val_loss" not in summary["history"] and summary["test"]["accuracy"] > 0


def test_a_run_without_a_validation_split_needs_nothing_else_changed(tmp_path, digits_tfds_dir):
    config = runs.resolve_config(CONFIG, [f"data.data_dir={digits_tfds_dir}", "model.cnn.filters=(8,)",
                                          "train.epochs=1", "data.splits.validation=None"])
    summary = runs.train(config, tmp_path / "w", verbose=0)   # checkpoints by recency; no val_* monitor
    assert summary["data"]["validation"] == 0 and summary["best_checkpoint"]["epoch"] == 1


def test_a_run_config_whose_default_has_no_test_split_is_refused_before_training(tmp_path, digits_tfds_dir):
    path = tmp_path / "notest.py"
    path.write_text(f"from fluxnet.runs.config import load_config\n\ndef get_config():\n"
                    f"    c = load_config({CONFIG!r})\n    c.data.splits.test = None\n    return c\n")
    with pytest.raises(ConfigError, match="'data.splits.test' is None, but a run reports its test metrics"):
        runs.train(runs.resolve_config(path, [f"data.data_dir={digits_tfds_dir}"]), tmp_path / "w", verbose=0)
    assert not (tmp_path / "w").exists()


def test_the_schema_errors_are_config_errors_and_value_errors(digits_tfds_dir):
    config = runs.resolve_config(CONFIG, overrides(digits_tfds_dir, 2, "train.batch_size=0"))
    with pytest.raises(ConfigError) as err:
        runs.train(config, "/nonexistent/never", verbose=0)
    assert isinstance(err.value, FluxnetError) and isinstance(err.value, ValueError)
