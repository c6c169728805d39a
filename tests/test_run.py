"""Run directories and the command line: ``fluxnet train`` end to end, exact resumes (a longer run,
kill -9 in an epoch and in a save), refused config changes, config errors, NaN losses, ``evaluate``
and ``load_run``. One straight 3-epoch run (a subprocess, as users run it) is the reference."""
import dataclasses
import glob
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import fluxnet as fx
from fluxnet import cli, runs
from fluxnet.errors import RunLockedError
from fluxnet.runs import RunLock
from fluxnet.runs.build import configured_model, prepare_data
from fluxnet.runs.config import load_saved_config
from fluxnet.runs.workdir import check_workdir
from fluxnet.train.checkpoint import Checkpointer
from runs_support import (CONFIG, assert_same_run, fluxnet_process, latest_state, overrides, snapshot,
                          start_until)

def tensorboard_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of TensorBoard event files (TFRecord framing, parsed without TensorFlow)."""
    from tensorboardX.proto import event_pb2

    scalars: dict = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_train_writes_the_run_directory(straight):
    workdir, stdout = straight
    for name in ("config.json", "model.json", "metrics.jsonl", "summary.json"):
        assert (workdir / name).is_file(), name
    assert not list(workdir.glob("*.png"))                          # train.plots=False (the tests' default)
    assert (workdir / "checkpoints").is_dir() and (workdir / "tensorboard").is_dir()
    text = (workdir / "summary.json").read_text()
    summary = json.loads(text)
    assert set(summary["test"]) == {"loss", "accuracy"} and summary["epochs_completed"] == 3
    base = summary["baseline"]
    assert base["accuracy"] == max(base["majority"], base["logistic_regression"]) > 0.9
    for value in (summary["test"]["loss"], base["logistic_regression"], *summary["history"]["loss"]):
        assert repr(value) in text                    # full precision, not rounded
    assert summary["versions"]["jax"] == jax.__version__ and summary["versions"]["fluxnet"]
    assert len(summary["git_revision"].removesuffix("-dirty")) == 40
    assert json.loads(stdout.strip().splitlines()[-1])["test"] == summary["test"]
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["loss"] for r in records] == summary["history"]["loss"]
    scalars = tensorboard_scalars(workdir / "tensorboard")
    assert [step for step, _ in scalars["val_accuracy"]] == [1, 2, 3]
    np.testing.assert_allclose([v for _, v in scalars["loss"]], summary["history"]["loss"], rtol=1e-6)
    assert json.loads((workdir / "config.json").read_text())["train"]["epochs"] == 3


def test_evaluate_and_load_run_reproduce_the_summary(straight, capsys):
    workdir, _ = straight
    summary = json.loads((workdir / "summary.json").read_text())
    assert cli.main(["evaluate", str(workdir), "--split", "test"]) == 0
    assert json.loads(capsys.readouterr().out) == summary["test"]
    test = prepare_data(load_saved_config(workdir / "config.json"))[0].test
    for best, expected in ((False, summary["test"]), (True, summary["best_checkpoint"]["test"])):
        model, variables = fx.load_run(workdir, best=best)
        logits, _ = model.apply(variables, test.images)
        assert np.mean(np.asarray(logits).argmax(-1) == test.labels) == expected["accuracy"]
    # the final model is EarlyStopping's epoch-1 weights, not the last epoch's
    final = fx.load_run(workdir)[1]
    assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, final["params"], latest_state(workdir).params)))


def test_a_longer_run_continues_exactly(straight, tmp_path, digits_tfds_dir, capsys):
    reference, _ = straight
    workdir = tmp_path / "grown"
    for epochs in (2, 3):
        assert cli.main(["train", CONFIG, *overrides(digits_tfds_dir, epochs), "--workdir", str(workdir),
                         "--quiet"]) == 0
    assert json.loads((workdir / "summary.json").read_text())["epochs_completed"] == 3
    assert_same_run(workdir, reference)


def test_killed_runs_resume_exactly(straight, tmp_path, digits_tfds_dir):
    """kill -9 halfway through epoch 3, then (resumed) while checkpoint 3 is written; a third run
    finishes and equals the straight one. The half-written checkpoint never counts."""
    reference, _ = straight
    workdir = tmp_path / "killed"
    args = ["train", CONFIG, *overrides(digits_tfds_dir), "--workdir", str(workdir), "--quiet"]
    proc = fluxnet_process(args, crash_at="epoch:3")
    assert proc.returncode == -9, proc.stderr[-3000:]
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    proc = fluxnet_process(args, crash_at="save:3")
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert len((workdir / "metrics.jsonl").read_text().splitlines()) == 3    # epoch 3 logged, then killed
    assert glob.glob(str(workdir / "checkpoints" / "3.orbax-checkpoint-tmp*"))
    checkpointer = Checkpointer(workdir / "checkpoints", read_only=True)
    assert checkpointer.latest_step() == 2
    checkpointer.close()
    assert cli.main(args) == 0
    assert_same_run(workdir, reference)


def test_a_changed_config_is_refused_and_nothing_is_touched(straight, digits_tfds_dir, capsys):
    workdir, _ = straight
    before = snapshot(workdir)
    code = cli.main(["train", CONFIG, *overrides(digits_tfds_dir, 4, "optimizer.learning_rate=0.01",
                                                 "model.cnn.dense_units=32"), "--workdir", str(workdir)])
    err = capsys.readouterr().err
    assert code == 2
    assert "optimizer.learning_rate: 0.002 (saved) -> 0.01" in err and "model.cnn.dense_units: 16 (saved) -> 32" in err
    assert "train.epochs:" not in err                 # a larger train.epochs alone would be fine
    assert snapshot(workdir) == before


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "Unknown config key 'train.epoch'. Did you mean 'train.epochs'"),
    ("train.epochs=three", "Config key 'train.epochs' expects a value of type int"),
    ("model.name=transformer", "Unknown model 'transformer'"),
    ("optimizer.name=adamm", "Unknown optimizer 'adamm'. Did you mean 'adam'"),
    ("loss.name=crossentropy", "Unknown loss 'crossentropy'"),
    ("data.name=mnistt", "Unknown data set 'mnistt'"),
    ("train.parallel=pmapp", "Unknown parallel mode 'pmapp'. Did you mean 'pmap'"),
])
def test_config_errors_exit_2_with_one_line_and_write_nothing(override, message, tmp_path, digits_tfds_dir,
                                                              capsys):
    workdir = tmp_path / "run"
    assert cli.main(["train", CONFIG, *overrides(digits_tfds_dir), override, "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fluxnet train: error: ") and message in err and "\n" not in err
    assert not workdir.exists()


def test_a_nan_loss_ends_the_run_with_a_clear_message(tmp_path, digits_tfds_dir, capsys):
    workdir = tmp_path / "nan"
    code = cli.main(["train", CONFIG, *overrides(digits_tfds_dir, 2, "optimizer.learning_rate=1e30"),
                     "--workdir", str(workdir), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert "The training loss became nan in epoch 1" in err and "last checkpoint" in err
    assert not (workdir / "metrics.jsonl").exists() and not (workdir / "summary.json").exists()


def test_growing_a_run_notes_a_schedule_that_spans_train_epochs(tmp_path, digits_tfds_dir):
    for schedule, noted in (("constant", False), ("cosine", True)):
        workdir = tmp_path / schedule
        runs.train(runs.resolve_config(CONFIG, overrides(digits_tfds_dir, 1, f"optimizer.schedule={schedule}")),
                   workdir, verbose=0)
        config = runs.resolve_config(CONFIG, overrides(digits_tfds_dir, 5, f"optimizer.schedule={schedule}"))
        notes = check_workdir(config, workdir)
        assert any("'cosine' learning-rate schedule now spans 5 epochs" in n for n in notes) == noted


def test_overrides_may_follow_options(tmp_path, digits_tfds_dir, capsys):
    """``fluxnet train CONFIG --workdir DIR key=value``: the override is read, not rejected by argparse."""
    code = cli.main(["train", CONFIG, "--workdir", str(tmp_path / "w"), f"data.data_dir={digits_tfds_dir}",
                     "model.name=nope"])
    assert code == 2 and "'nope'" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
    with pytest.raises(SystemExit):
        cli.main(["evaluate", str(tmp_path), "--bogus"])


def test_a_short_run_ends_with_a_warning_naming_its_step_count(tmp_path, digits_tfds_dir, capsys):
    """Also under --quiet (a likely mistake, not progress); steps count as Keras batches:
    epochs * ceil(training examples / batch size)."""
    workdir = tmp_path / "short"
    args = ["train", CONFIG, "--workdir", str(workdir)]
    assert cli.main([*args, *overrides(digits_tfds_dir, 2), "--quiet"]) == 0
    examples = json.loads((workdir / "summary.json").read_text())["data"]["train"]
    per_epoch = -(-examples // 64)
    assert capsys.readouterr().err.splitlines() == [
        f"Warning: this run trains only {2 * per_epoch} optimisation steps (train.epochs=2 x ceil({examples} "
        "training examples / train.batch_size=64)); fewer than 100 rarely train a model: raise train.epochs or "
        "lower train.batch_size."]
    assert cli.main([*args, *overrides(digits_tfds_dir, -(-100 // per_epoch))]) == 0   # 100 steps or more
    assert "Warning" not in capsys.readouterr().err


def test_steps_per_epoch_counts_the_partial_batch_and_oversampled_examples():
    from ml_collections import ConfigDict

    from fluxnet.data.splits import Split
    from fluxnet.runs.build import steps_per_epoch

    train = Split(np.zeros((50, 8, 8, 1), np.float32), np.array([0] * 30 + [1] * 15 + [2] * 5))
    config = ConfigDict({"train": {"batch_size": 32, "oversample": False}})
    assert steps_per_epoch(config, train) == 2                      # 32 + 18
    config.train.oversample = True
    assert steps_per_epoch(config, train) == 3                      # 3 classes x 30 = 90 examples


def test_the_plots_name_the_test_split_and_mark_the_best_epoch(tmp_path, digits_tfds_dir, monkeypatch):
    from matplotlib.figure import Figure

    figures, save = {}, Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **k: (figures.update({Path(path).name: fig}),
                                                                     save(fig, path, **k))[1])
    config = runs.resolve_config(CONFIG, overrides(digits_tfds_dir, 2, "train.plots=True"))
    summary = runs.train(config, tmp_path / "plots", verbose=0)
    assert sorted(p.name for p in (tmp_path / "plots").glob("*.png")) == ["confusion_matrix.png", "curves.png"]
    matrix = figures["confusion_matrix.png"]
    assert matrix.axes[0].get_title().startswith("digits, test split: accuracy")
    assert len(matrix.axes) == 2 and matrix.axes[1].get_ylabel() == "examples"   # the colour bar
    best = summary["best_checkpoint"]["epoch"]
    for ax in figures["curves.png"].axes:                          # loss and accuracy
        marks = [line for line in ax.get_lines() if line.get_label() == f"best (epoch {best})"]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [best, best], ax.get_title()


def test_baseline_names_the_split_it_scores(digits_tfds_dir, capsys):
    assert cli.main(["baseline", CONFIG, f"data.data_dir={digits_tfds_dir}"]) == 0
    report = json.loads(capsys.readouterr().out)
    test = prepare_data(runs.resolve_config(CONFIG, [f"data.data_dir={digits_tfds_dir}"]))[0].test
    assert report["split"] == "test" and report["examples"]["test"] == len(test)
    assert report["accuracy"] == max(report["majority"], report["logistic_regression"])


# ------------------------------------------------------------------------------------------------ the lock

HOLD_LOCK = """
import sys, time
from fluxnet.runs import RunLock
lock = RunLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
time.sleep(300)
"""


def test_a_second_train_process_on_one_workdir_stops_at_once(tmp_path, digits_tfds_dir):
    """Two ``fluxnet train`` processes on one workdir: the second stops with one line naming the first."""
    workdir = tmp_path / "shared"
    args = ["train", CONFIG, *overrides(digits_tfds_dir, 100_000, "train.early_stopping=None"), "--workdir",
            str(workdir), "--quiet"]  # runs until it is stopped
    first = start_until(args, workdir / "metrics.jsonl")  # training has begun: the lock is held
    try:
        second = fluxnet_process(args)
        assert first.poll() is None       # the first was still training when the second was refused
    finally:
        first.kill()
        first.wait()
    err = second.stderr.strip()
    assert second.returncode == 2 and "\n" not in err and "Traceback" not in err
    assert err.startswith("fluxnet train: error: ") and "is locked" in err and f"process {first.pid} " in err


def test_a_refused_command_touches_nothing_but_the_lock_and_the_lock_dies_with_its_process(
        straight, tmp_path, digits_tfds_dir, capsys):
    workdir = tmp_path / "held"
    shutil.copytree(straight[0], workdir)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(workdir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(workdir)
        args = ["train", CONFIG, *overrides(digits_tfds_dir), "--workdir", str(workdir), "--quiet"]
        assert cli.main(args) == 2
        err = capsys.readouterr().err.strip()
        assert f"{workdir} is locked: process {holder.pid} on " in err and "\n" not in err
        assert snapshot(workdir) == before
        with pytest.raises(RunLockedError):   # the API refuses too, with the same error
            runs.train(runs.resolve_config(CONFIG, overrides(digits_tfds_dir)), workdir, verbose=0)
    finally:
        holder.kill()
        holder.wait()
    assert cli.main(args) == 0            # killed (no clean-up ran): the lock went with it
    assert json.loads((workdir / ".lock").read_text())["pid"] == os.getpid()


def test_the_lock_is_reentrant_and_released_by_the_outermost_with(tmp_path):
    lock = RunLock(tmp_path / "w")
    with lock:
        with lock:
            lock.acquire()
            lock.acquire()
        assert lock.held                  # the inner with did not release it
    assert not lock.held
    with RunLock(tmp_path / "w") as again:
        again.acquire()                   # free again in this process
        assert again.held


# ------------------------------------------------------------------------------------------------ layers of a run


class Untouchable:
    """A split that fails the test on any use."""

    def __getattr__(self, name):
        raise AssertionError(f"the test split was read (.{name})")

    def __len__(self):
        raise AssertionError("the test split was read (len)")

    def __bool__(self):
        raise AssertionError("the test split was read (bool)")


def test_fit_run_returns_validation_metrics_without_touching_the_test_split(tmp_path, digits_tfds_dir):
    config = runs.resolve_config(CONFIG, overrides(digits_tfds_dir, 2))
    splits, _ = prepare_data(config)
    blind = dataclasses.replace(splits, test=Untouchable())
    model = configured_model(config, splits.metadata)
    result = runs.fit_run(config, tmp_path / "fit", model, blind, verbose=0)
    assert set(result.validation) == {"val_loss", "val_accuracy"}
    assert result.validation == {f"val_{k}": v for k, v in result.trainer.evaluate(
        result.state, splits.validation).items()}
    assert int(result.state.epoch) == 2 and len(result.history.history["val_accuracy"]) == 2
    assert not (tmp_path / "fit" / "summary.json").exists()   # the report (test split) is another step


def test_user_errors_print_one_line_and_bugs_keep_their_traceback(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "nothing_here"
    assert cli.main(["evaluate", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fluxnet evaluate: error: ") and "Traceback" not in err

    def bug(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(runs, "evaluate_run", bug)
    with pytest.raises(KeyError, match="a bug"):   # not turned into an exit code: the traceback shows
        cli.main(["evaluate", str(missing)])


def test_the_crash_hook_is_off_unless_passed_explicitly(monkeypatch, digits_splits):
    """The library never reads $FLUXNET_CRASH_AT: only the command line turns it into a CrashPoint."""
    from fluxnet.train import faults

    monkeypatch.setenv(faults.ENV, "epoch:1")
    model = fx.Sequential([fx.layers.Input((8, 8, 1)), fx.layers.Flatten(), fx.layers.Dense(10)])
    trainer = fx.Trainer(model, loss=fx.losses.get("sparse_categorical_crossentropy", from_logits=True))
    state, history = trainer.fit(trainer.init(jax.random.key(0)), digits_splits.train, epochs=1, verbose=0)
    assert int(state.epoch) == 1          # still alive
    assert faults.from_environment() == faults.CrashPoint("epoch", 1)
    with pytest.raises(ValueError, match="expected 'epoch:E', 'save:E' or 'sigterm:E'"):
        faults.CrashPoint.parse("step:3")
