"""Reliability, run directories and checkpoints: no lost or silently wrong runs. A refused command
leaves the workdir as it was (content hashes; only ``.lock`` may be touched); damaged files are
survived, never deleted, and the resumed run equals an uninterrupted one bit for bit."""
import errno
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from fluxnet import cli, runs
from fluxnet.errors import CheckpointError, ConfigMismatchError, DataError
from runs_support import CONFIG, assert_same_run, cli_error, digest, fluxnet_process, overrides


@pytest.fixture
def finished(straight, tmp_path):
    """A copy of the finished 3-epoch reference run."""
    workdir = tmp_path / "finished"
    shutil.copytree(straight[0], workdir)
    return workdir


def train_args(data_dir, workdir, epochs=3, *extra):
    return ["train", CONFIG, *overrides(data_dir, epochs, *extra), "--workdir", str(workdir), "--quiet"]


def test_a_smaller_train_epochs_is_refused_and_nothing_changes(finished, digits_tfds_dir, capsys):
    before = digest(finished)
    assert cli.main(train_args(digits_tfds_dir, finished, 2)) == 2
    err = cli_error(capsys)
    assert "holds a run of 3 trained epochs, more than train.epochs=2" in err
    assert digest(finished) == before


def test_a_deleted_config_json_does_not_switch_the_guard_off(finished, digits_tfds_dir, capsys):
    (finished / "config.json").unlink()
    before = digest(finished)
    assert cli.main(train_args(digits_tfds_dir, finished, 3, "optimizer.learning_rate=0.01")) == 2
    assert "optimizer.learning_rate: 0.002 (saved) -> 0.01" in capsys.readouterr().err
    assert digest(finished) == before


def test_a_damaged_config_json_is_repaired_from_the_checkpoint(finished, straight, digits_tfds_dir, capsys):
    text = (finished / "config.json").read_text()
    (finished / "config.json").write_text(text[: len(text) // 2])   # torn
    assert cli.main(train_args(digits_tfds_dir, finished)) == 0
    assert (finished / "config.json").read_text() == text
    assert_same_run(finished, straight[0])


def test_a_damaged_config_json_names_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"seed": ')
    with pytest.raises(runs.config.ConfigError, match="config.json' is damaged"):
        runs.config.load_saved_config(path)


def test_an_edited_model_json_is_refused_by_evaluate_and_load_run(finished, capsys):
    model = json.loads((finished / "model.json").read_text())
    model["layers"][-1]["config"]["units"] = 11
    (finished / "model.json").write_text(json.dumps(model))
    before = digest(finished)
    assert cli.main(["evaluate", str(finished)]) == 2
    assert "model.json differs from the architecture its checkpoints record" in cli_error(capsys)
    with pytest.raises(CheckpointError, match="model.json differs"):
        runs.load_run(finished)
    assert digest(finished) == before


@pytest.mark.parametrize("damage", ["truncate arrays", "delete meta", "garble meta"])
def test_a_damaged_latest_checkpoint_is_set_aside_and_the_run_resumes_exactly(damage, finished, straight,
                                                                              digits_tfds_dir, capsys):
    latest = finished / "checkpoints" / "3"
    if damage == "truncate arrays":
        for f in (latest / "state").rglob("d/*"):
            f.write_bytes(f.read_bytes()[:10])
    elif damage == "delete meta":
        shutil.rmtree(latest / "meta")
    else:
        for f in (latest / "meta").rglob("*"):
            if f.is_file():
                f.write_text("{not json")
    assert cli.main(train_args(digits_tfds_dir, finished)) == 0
    err = capsys.readouterr().err
    assert "checkpoint 3" in err and "is damaged and was skipped" in err and "Traceback" not in err
    kept = list((finished / "damaged_checkpoints").iterdir())
    assert len(kept) == 1 and kept[0].name.startswith("3-")   # set aside, never deleted
    assert_same_run(finished, straight[0])


def test_evaluate_reads_past_a_damaged_checkpoint_without_changing_anything(finished, capsys):
    for f in (finished / "checkpoints" / "3" / "state").rglob("d/*"):
        f.write_bytes(f.read_bytes()[:10])
    before = digest(finished)
    assert cli.main(["evaluate", str(finished)]) == 0
    out, err = capsys.readouterr()
    assert "checkpoint 3" in err and "skipped" in err and "moved" not in err
    assert set(json.loads(out.strip().splitlines()[-1])) == {"loss", "accuracy"}
    assert digest(finished) == before


def test_a_torn_metrics_line_is_dropped_and_the_run_resumes_exactly(straight, tmp_path, digits_tfds_dir, capsys):
    workdir = tmp_path / "torn"
    assert cli.main(train_args(digits_tfds_dir, workdir, 2)) == 0
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "loss": 0.1')            # what kill -9 mid-append leaves
    assert cli.main(train_args(digits_tfds_dir, workdir, 3)) == 0
    assert "metrics.jsonl line 3 is torn and was dropped" in capsys.readouterr().err
    assert_same_run(workdir, straight[0])


def test_a_failed_first_attempt_does_not_poison_the_workdir(tmp_path, digits_tfds_dir, capsys):
    workdir = tmp_path / "retry"
    assert cli.main(train_args(digits_tfds_dir, workdir, 2, "optimizer.learning_rate=1e30")) == 1  # NaN
    assert "The training loss became nan" in capsys.readouterr().err
    assert not any((workdir / "checkpoints").iterdir())
    assert cli.main(train_args(digits_tfds_dir, workdir, 2)) == 0     # the corrected command is accepted
    assert json.loads((workdir / "summary.json").read_text())["epochs_completed"] == 2


@pytest.mark.parametrize("override, message", [
    ("train.class_weight={12: 2.0}", "class_weight has class 12, outside [0, 10)"),
    ("data.splits.validation=0.999", "validation"),
])
def test_errors_found_by_the_data_checks_write_nothing(override, message, tmp_path, digits_tfds_dir, capsys):
    workdir = tmp_path / "w"
    assert cli.main(train_args(digits_tfds_dir, workdir, 2, override)) == 2
    assert message in cli_error(capsys) and not workdir.exists()


def make_folder(root, per_class=20):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (8, 8), np.uint8)).save(root / cls / f"{i}.png")


def test_a_changed_data_set_under_a_resumed_run_is_refused(tmp_path, capsys):
    folder, workdir = tmp_path / "images", tmp_path / "run"
    make_folder(folder)
    args = ["train", CONFIG, f"data.name={folder}", f"data.data_dir={tmp_path / 'tfds'}", "model.name=mlp",
            "train.batch_size=8", "--workdir", str(workdir), "--quiet"]
    assert cli.main([*args, "train.epochs=1"]) == 0
    capsys.readouterr()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "a" / "new.png")
    before = digest(workdir)
    assert cli.main([*args, "train.epochs=2"]) == 2
    err = cli_error(capsys)
    assert f"The data of the run in {workdir} changed since it was trained" in err and "nothing was changed" in err
    assert digest(workdir) == before
    with pytest.raises(DataError, match="changed since it was trained"):
        runs.train(runs.resolve_config(CONFIG, [a for a in args[2:-3]] + ["train.epochs=2"]), workdir, verbose=0)


def test_a_workdir_that_is_a_file_is_one_line(tmp_path, digits_tfds_dir, capsys):
    path = tmp_path / "file"
    path.write_text("not a folder")
    assert cli.main(train_args(digits_tfds_dir, path, 1)) == 2
    err = cli_error(capsys)
    assert str(path) in err and path.read_text() == "not a folder"


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, digits_tfds_dir, capsys, monkeypatch):
    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(runs.report, "write_atomic", full)
    assert cli.main(train_args(digits_tfds_dir, tmp_path / "full", 1)) == 2
    err = cli_error(capsys)
    assert "summary.json: No space left on device (free some disk space" in err
    assert not (tmp_path / "full" / "summary.json").exists()


def test_evaluate_without_checkpoints_is_one_line(tmp_path, capsys):
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    assert cli.main(["evaluate", str(tmp_path / "empty")]) == 2
    assert "has no checkpoint to load" in cli_error(capsys)


def test_a_config_mismatch_error_is_raised_by_the_api_too(finished, digits_tfds_dir):
    config = runs.resolve_config(CONFIG, overrides(digits_tfds_dir, 3, "train.batch_size=32"))
    with pytest.raises(ConfigMismatchError, match="train.batch_size: 64 \\(saved\\) -> 32"):
        runs.train(config, finished, verbose=0)


def test_the_run_files_are_written_atomically(finished, digits_tfds_dir, monkeypatch):
    """A crash while summary.json is written leaves the old one whole (and no temporary file behind)."""
    old = (finished / "summary.json").read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    config_json = (finished / "config.json").read_bytes()
    monkeypatch.setattr("fluxnet.files.os.replace", crash)   # dies between writing and renaming
    with pytest.raises(KeyboardInterrupt):
        runs.train(runs.resolve_config(CONFIG, overrides(digits_tfds_dir)), finished, verbose=0)
    monkeypatch.undo()
    assert (finished / "summary.json").read_bytes() == old and (finished / "config.json").read_bytes() == config_json
    assert not list(finished.glob(".*.tmp"))
    proc = fluxnet_process(train_args(digits_tfds_dir, finished))
    assert proc.returncode == 0


def test_library_chatter_stays_out_of_the_terminal(straight):
    """No absl warnings (orbax's read-only notice, tfds' OpenCV notice) and no tfds progress bars."""
    proc = fluxnet_process(["evaluate", str(straight[0])])
    assert proc.returncode == 0 and proc.stderr == ""


def test_a_planted_lock_link_is_refused_and_its_target_untouched(tmp_path, digits_tfds_dir, capsys):
    workdir, victim = tmp_path / "w", tmp_path / "victim.txt"
    workdir.mkdir()
    victim.write_text("precious")
    os.symlink(victim, workdir / ".lock")
    assert cli.main(train_args(digits_tfds_dir, workdir, 1)) == 2
    assert "cannot be used as the run directory's lock" in cli_error(capsys)
    assert victim.read_text() == "precious"


def test_a_damaged_best_checkpoint_is_noted_not_a_traceback(finished, capsys):
    summary = json.loads((finished / "summary.json").read_text())
    best = finished / "checkpoints" / str(summary["best_checkpoint"]["epoch"])
    for f in (best / "meta").rglob("*"):
        if f.is_file():
            f.write_text("{bad")
    assert cli.main(["evaluate", str(finished), "--best"]) == 2
    err = capsys.readouterr().err
    assert "is damaged and was skipped" in err and "has no best checkpoint that restores" in err
    assert "Traceback" not in err


def test_a_damaged_model_json_is_named(finished, capsys):
    (finished / "model.json").write_text("{torn")
    assert cli.main(["evaluate", str(finished)]) == 2
    assert "model.json is damaged" in cli_error(capsys)


def test_a_tensorstore_resource_error_is_a_machine_fault():
    from fluxnet.cli.errors import environment_fault

    err = ValueError("RESOURCE_EXHAUSTED: Error writing local file: No space left on device [os_error_code='28']")
    assert environment_fault(RuntimeError("save failed")) is None
    wrapped = RuntimeError("checkpoint save failed")
    wrapped.__cause__ = err
    assert environment_fault(wrapped).errno == errno.ENOSPC


def test_pretrain_refuses_another_runs_zoo_entry_before_training(tmp_path, digits_tfds_dir, capsys):
    from runs_support import CONFIGS_DIR

    common = [f"data.data_dir={digits_tfds_dir}", "model.cnn.filters=(8,)", "model.cnn.dense_units=16",
              "train.epochs=1", "pretrain.cut=pool1", f"pretrain.zoo={tmp_path / 'zoo'}", "--quiet"]
    pretrain = ["pretrain", str(CONFIGS_DIR / "digits_pretrain.py"), *common]
    assert cli.main([*pretrain, "--workdir", str(tmp_path / "a")]) == 0
    assert cli.main([*pretrain, "--workdir", str(tmp_path / "a")]) == 0     # its own entry: a rerun is fine
    capsys.readouterr()                                                      # (the short runs' warnings)
    assert cli.main([*pretrain, "--workdir", str(tmp_path / "b")]) == 2
    assert "digits04 exists (from another run)" in cli_error(capsys)
    assert not (tmp_path / "b").exists()


def test_a_run_older_than_a_config_key_continues_with_a_note(finished, straight, digits_tfds_dir, capsys):
    """A key the saved config lacks (fluxnet gained a setting) is no reason to refuse the run."""
    from fluxnet.runs.workdir import latest_meta

    path = finished / "checkpoints" / "3" / "meta" / "metadata"
    meta = json.loads(path.read_text())
    assert meta == latest_meta(finished)
    del meta["config"]["model"]["mlp"]
    path.write_text(json.dumps(meta))
    assert cli.main(train_args(digits_tfds_dir, finished)) == 0
    err = capsys.readouterr().err
    assert "predates the config key(s) model.mlp.dropout (now 0.2), model.mlp.units (now [128])" in err
    assert err.count("predates") == 1                                     # said once
    assert_same_run(finished, straight[0])
