"""Populations of run directories (``runs.population``): cross-validation folds trained as one population
equal the same folds trained one after another, write ordinary run directories, resume bit-exactly after
an interruption (also when the members were saved at different epochs), vary the learning rate and the
weight decay per member, mask out a member that stops early, and are refused where they cannot work."""
import csv
import json
import shutil
import signal
from pathlib import Path

import jax
import numpy as np
import pytest

from fluxnet import cli, runs, tune
from fluxnet.errors import ArgumentError, TrainingInterrupted
from fluxnet.runs.build import configured_model, prepare_data, steps_per_epoch
from fluxnet.runs.population import Pool, blocker, choose_population, fit_population
from fluxnet.tune import folds as folds_lib
from fluxnet.tune.folds import folds_of
from fluxnet.tune.trial import train_together
from runs_support import cli_error

MLP = str(Path(__file__).resolve().parent.parent / "configs" / "digits_mlp.py")
FOLDS, EPOCHS = 3, 3


def small(data_dir, epochs=EPOCHS, *extra):
    # the MLP config trains with dropout (model.mlp.dropout=0.2); a constant rate, small enough that the
    # population's batched kernels (which round differently) keep the losses close over a few epochs
    return [f"data.data_dir={data_dir}", "model.mlp.units=(16,)", "train.batch_size=64", f"train.epochs={epochs}",
            "optimizer.schedule=constant", "optimizer.learning_rate=3e-3", *extra]


@pytest.fixture(scope="module")
def config(digits_tfds_dir):
    return runs.resolve_config(MLP, small(digits_tfds_dir))


@pytest.fixture(scope="module")
def together(config, tmp_path_factory):
    """The reference: a 3-fold cross-validation, its folds trained as one population, uninterrupted."""
    workdir = tmp_path_factory.mktemp("population") / "cv"
    return workdir, tune.cross_validate(config, workdir, FOLDS, verbose=0, population=FOLDS)


def fold_steps(config) -> list[int]:
    """Each fold's optimisation steps per epoch."""
    raw = runs.build.load_splits(config)
    return [-(-len(f.train_rows) // config.train.batch_size) for f in folds_of(config, raw, FOLDS)]


def stop_after(steps: int):
    """A ``should_stop`` that answers SIGTERM on the first step after ``steps``."""
    return lambda step: signal.SIGTERM if step > steps else None


def summary(fold: Path) -> dict:
    return json.loads((fold / "summary.json").read_text())


def metrics_epochs(fold: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (fold / "metrics.jsonl").read_text().splitlines()]


def checkpoint_steps(fold: Path) -> list[int]:
    return sorted(int(p.name) for p in (fold / "checkpoints").iterdir() if p.name.isdigit())


def assert_identical_folds(workdir: Path, reference: Path):
    """Bit-identical folds: their summaries' histories and the variables of their final checkpoints."""
    for k in range(FOLDS):
        ours, theirs = workdir / "folds" / str(k), reference / "folds" / str(k)
        assert summary(ours)["history"] == summary(theirs)["history"], k
        assert summary(ours)["validation"] == summary(theirs)["validation"], k
        assert metrics_epochs(ours) == list(range(1, EPOCHS + 1)), k
        (_, a), (_, b) = runs.load_run(ours), runs.load_run(theirs)
        assert jax.tree.structure(a) == jax.tree.structure(b)
        assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))), k
    assert json.loads((workdir / "cv.json").read_text()) == json.loads((reference / "cv.json").read_text())


# ------------------------------------------------------------------------------------------------ folds

def test_folds_trained_together_equal_folds_trained_one_after_another(config, together, tmp_path):
    workdir, cv = together
    alone = tmp_path / "alone"
    cv_alone = tune.cross_validate(config, alone, FOLDS, verbose=0, population=1)
    raw = runs.build.load_splits(config)
    validation_sizes = [len(f.validation_rows) for f in folds_of(config, raw, FOLDS)]
    for k in range(FOLDS):
        ours, theirs = summary(workdir / "folds" / str(k)), summary(alone / "folds" / str(k))
        assert ours["state"] == theirs["state"] == "complete"
        assert set(ours["validation"]) == set(theirs["validation"]) == {"val_loss", "val_accuracy"}
        np.testing.assert_allclose(ours["validation"]["val_loss"], theirs["validation"]["val_loss"], rtol=1e-4)
        assert abs(ours["validation"]["val_accuracy"] - theirs["validation"]["val_accuracy"]) \
            <= 1 / validation_sizes[k] + 1e-12                               # within one example
        assert set(ours["history"]) == set(theirs["history"])
        assert all(len(v) == EPOCHS for v in ours["history"].values())
        np.testing.assert_allclose(ours["history"]["loss"][0], theirs["history"]["loss"][0], rtol=1e-6)
        np.testing.assert_allclose(ours["history"]["loss"], theirs["history"]["loss"], rtol=1e-4)
        assert ours["epochs_completed"] == theirs["epochs_completed"] == EPOCHS
        assert ours["steps"] == theirs["steps"]
        assert ours["population"]["size"] == FOLDS and ours["population"]["member"] == k
        assert "population" not in theirs and "test" not in ours
        for directory in (workdir, alone):                                  # ordinary run directories
            fold = directory / "folds" / str(k)
            assert {"config.json", "model.json", "metrics.jsonl", "summary.json"} <= {p.name for p in fold.iterdir()}
            assert (fold / "checkpoints").is_dir() and checkpoint_steps(fold)[-1] == EPOCHS
            assert metrics_epochs(fold) == list(range(1, EPOCHS + 1))       # one record per epoch
    for result, directory in ((cv, workdir), (cv_alone, alone)):
        written = json.loads((directory / "cv.json").read_text())
        assert written == result
        values = [f["val_accuracy"] for f in written["folds"]]
        assert len(values) == FOLDS and written["mean"]["val_accuracy"] == float(np.mean(values))
        assert written["std"]["val_accuracy"] == float(np.std(values))   # ddof=0
        assert written["folds"] == [summary(directory / "folds" / str(k))["validation"] for k in range(FOLDS)]


# ------------------------------------------------------------------------------------------------ resuming

def test_an_interrupted_population_resumes_bit_exactly(config, together, tmp_path):
    workdir = tmp_path / "interrupted"
    steps = fold_steps(config)
    assert len(set(steps)) == 1                                              # the folds' epochs are equally long
    with pytest.raises(TrainingInterrupted, match="Training stopped by SIGTERM in epoch 2") as caught:
        tune.cross_validate(config, workdir, FOLDS, verbose=0, population=FOLDS, should_stop=stop_after(steps[0]))
    assert caught.value.exit_code == 128 + signal.SIGTERM
    assert "run the same command to resume" in str(caught.value)
    for k in range(FOLDS):
        fold = workdir / "folds" / str(k)
        assert checkpoint_steps(fold) == [1] and metrics_epochs(fold) == [1]
        assert not (fold / "summary.json").exists()
    assert not (workdir / "cv.json").exists()
    tune.cross_validate(config, workdir, FOLDS, verbose=0, population=FOLDS)
    assert_identical_folds(workdir, together[0])


def test_members_saved_at_different_epochs_each_continue_from_their_own(config, together, tmp_path):
    workdir = tmp_path / "uneven"
    steps = fold_steps(config)[0]
    with pytest.raises(TrainingInterrupted, match="in epoch 3"):
        tune.cross_validate(config, workdir, FOLDS, verbose=0, population=FOLDS, should_stop=stop_after(2 * steps))
    assert all(checkpoint_steps(workdir / "folds" / str(k)) == [1, 2] for k in range(FOLDS))
    shutil.rmtree(workdir / "folds" / "0" / "checkpoints" / "2")          # a kill between two members' saves
    tune.cross_validate(config, workdir, FOLDS, verbose=0, population=FOLDS)
    assert_identical_folds(workdir, together[0])


def test_members_trained_to_the_end_but_not_recorded_are_recorded_without_training(config, together, tmp_path):
    # a kill after the population's last epoch, between two folds' summary.json writes
    workdir = tmp_path / "unrecorded"
    shutil.copytree(together[0], workdir)
    for k in (1, 2):
        (workdir / "folds" / str(k) / "summary.json").unlink()
    (workdir / "cv.json").unlink()
    checkpoints = {k: checkpoint_steps(workdir / "folds" / str(k)) for k in range(FOLDS)}
    assert tune.cross_validate(config, workdir, FOLDS, verbose=0, population=FOLDS) == together[1]
    assert {k: checkpoint_steps(workdir / "folds" / str(k)) for k in range(FOLDS)} == checkpoints  # nothing redone
    for k in range(FOLDS):
        ours, theirs = summary(workdir / "folds" / str(k)), summary(together[0] / "folds" / str(k))
        for key in ("history", "validation", "epochs_completed", "steps", "baseline"):
            assert ours[key] == theirs[key], (k, key)
        assert metrics_epochs(workdir / "folds" / str(k)) == list(range(1, EPOCHS + 1))


# ------------------------------------------------------------------------------------------------ traced values

@pytest.mark.parametrize("key, values, extra", [
    ("optimizer.learning_rate", (3e-3, 1e-3), ()),
    ("optimizer.weight_decay", (0.05, 0.5), ("optimizer.name=adamw",)),
])
def test_members_varying_a_traced_value_equal_the_same_runs_trained_alone(key, values, extra, digits_tfds_dir,
                                                                          tmp_path):
    configs = [runs.resolve_config(MLP, small(digits_tfds_dir, 2, *extra, f"{key}={v}")) for v in values]
    splits = prepare_data(configs[0])[0]
    pool = Pool.of_splits([splits, splits])
    model = configured_model(configs[0], splits.metadata)
    fits = fit_population(configs, [tmp_path / f"member{i}" for i in range(2)], model, pool)
    alone = [runs.fit_run(c, tmp_path / f"alone{i}", configured_model(c, splits.metadata), splits, verbose=0)
             for i, c in enumerate(configs)]
    for fit, single in zip(fits, alone):
        assert not isinstance(fit, Exception), fit
        for name in ("loss", "val_loss"):
            np.testing.assert_allclose(fit.history.history[name], single.history.history[name], rtol=1e-4,
                                       err_msg=name)
        np.testing.assert_allclose(fit.history.history["learning_rate"], single.history.history["learning_rate"],
                                   rtol=1e-6)
        np.testing.assert_allclose(fit.validation["val_loss"], single.validation["val_loss"], rtol=1e-4)
        assert int(fit.state.step) == int(single.state.step) == 2 * steps_per_epoch(configs[0], splits.train)
    # the value matters: the members' losses differ by far more than the tolerance
    last = [fit.history.history["val_loss"][-1] for fit in fits]
    assert abs(last[0] - last[1]) > 1e-3 * abs(last[1])
    for i in range(2):
        assert metrics_epochs(tmp_path / f"member{i}") == [1, 2] and checkpoint_steps(tmp_path / f"member{i}")[-1] == 2


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_a_member_with_its_own_rate_is_an_ordinary_run_that_continues_anywhere(schedule, digits_tfds_dir, tmp_path):
    configs = [runs.resolve_config(MLP, small(digits_tfds_dir, 2, f"optimizer.schedule={schedule}",
                                              f"optimizer.learning_rate={lr}")) for lr in (3e-3, 1e-3)]
    splits = prepare_data(configs[0])[0]
    pool = Pool.of_splits([splits, splits])
    model = lambda c: configured_model(c, splits.metadata)  # noqa: E731
    reference = fit_population(configs, [tmp_path / "ref0", tmp_path / "ref1"], model(configs[0]), pool)
    alone = runs.fit_run(configs[1], tmp_path / "alone", model(configs[1]), splits, verbose=0)
    dirs = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(TrainingInterrupted):
        fit_population(configs, dirs, model(configs[0]), pool,
                       should_stop=stop_after(steps_per_epoch(configs[0], splits.train)))
    for d in dirs:
        shutil.copytree(d, d.with_name(d.name + "_copy"))
    # member 1 continued on its own, as the run directory it is
    continued = runs.fit_run(configs[1], dirs[1], model(configs[1]), splits, verbose=0)
    # both continued by a population whose first member is the other one
    swapped = fit_population(configs[::-1], [tmp_path / "b_copy", tmp_path / "a_copy"], model(configs[1]), pool)
    wrong = []
    for what, got, want in [("fit_run", continued, alone), ("swapped member 1", swapped[0], reference[1]),
                            ("swapped member 0", swapped[1], reference[0])]:
        rates, expected = got.history.history["learning_rate"], want.history.history["learning_rate"]
        if not np.allclose(rates, expected, rtol=1e-6, atol=0):
            wrong.append(f"{what}: learning rates {rates}, expected {expected}")
        elif not np.allclose(got.history.history["loss"], want.history.history["loss"], rtol=1e-4, atol=0):
            wrong.append(f"{what}: losses {got.history.history['loss']}, expected {want.history.history['loss']}")
    assert not wrong, "; ".join(wrong)


@pytest.mark.parametrize("override", ["model.mlp.units=(32,)", "train.batch_size=32", "optimizer.name=sgd"])
def test_members_differing_in_what_is_compiled_are_refused_before_any_write(override, config, digits_tfds_dir,
                                                                          tmp_path):
    other = runs.resolve_config(MLP, small(digits_tfds_dir, EPOCHS, override))
    splits = prepare_data(config)[0]
    dirs = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(ArgumentError, match="must differ only in seed, data rows and optimizer.learning_rate, "
                                            "optimizer.weight_decay"):
        fit_population([config, other], dirs, configured_model(config, splits.metadata),
                       Pool.of_splits([splits, splits]))
    assert not any(d.exists() for d in dirs)


def test_class_weights_block_a_population(config, digits_tfds_dir, tmp_path):
    weighed = runs.resolve_config(MLP, small(digits_tfds_dir, EPOCHS, "train.class_weight=balanced"))
    assert blocker(config) is None
    assert "train.class_weight" in blocker(weighed)
    splits = prepare_data(weighed)[0]
    dirs = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(ArgumentError, match="cannot train as one population: train.class_weight is set"):
        fit_population([weighed, weighed], dirs, configured_model(weighed, splits.metadata),
                       Pool.of_splits([splits, splits]))
    assert not any(d.exists() for d in dirs)


# ------------------------------------------------------------------------------------------------ early stopping

def test_a_member_that_stops_early_is_masked_out_while_the_other_goes_on(digits_tfds_dir, tmp_path):
    # at a rate of 1e-7 the val_loss moves by far less than min_delta: EarlyStopping (patience 1) stops
    # that member after its second epoch; the other member's val_loss improves by more every epoch
    stopping = ("train.early_stopping={'monitor': 'val_loss', 'patience': 1, 'min_delta': 0.01, "
                "'restore_best_weights': True}")
    configs = [runs.resolve_config(MLP, small(digits_tfds_dir, 4, stopping, f"optimizer.learning_rate={lr}"))
               for lr in (3e-3, 1e-7)]
    splits = prepare_data(configs[0])[0]
    dirs = [tmp_path / "learns", tmp_path / "frozen"]
    outcomes = train_together(configs, dirs, Pool.of_splits([splits, splits]))
    assert [o.state for o in outcomes] == ["complete", "complete"]
    learns, frozen = summary(dirs[0]), summary(dirs[1])
    assert frozen["epochs_completed"] == 2 < learns["epochs_completed"] == 4
    assert len(frozen["history"]["loss"]) == 2 and len(learns["history"]["loss"]) == 4
    assert abs(frozen["history"]["val_loss"][0] - frozen["history"]["val_loss"][1]) < 0.01
    assert all(a - b > 0.01 for a, b in zip(learns["history"]["val_loss"], learns["history"]["val_loss"][1:]))
    assert metrics_epochs(dirs[1]) == [1, 2] and metrics_epochs(dirs[0]) == [1, 2, 3, 4]
    steps = steps_per_epoch(configs[0], splits.train)
    assert frozen["steps"] == 2 * steps and learns["steps"] == 4 * steps   # no update while masked out
    alone = runs.fit_run(configs[0], tmp_path / "alone", configured_model(configs[0], splits.metadata), splits,
                         verbose=0)
    np.testing.assert_allclose(learns["history"]["loss"], alone.history.history["loss"], rtol=1e-4)
    # a rerun reads both back: the stopped member is not trained again
    stamps = [(d / "summary.json").stat().st_mtime_ns for d in dirs]
    train_together(configs, dirs, Pool.of_splits([splits, splits]))
    assert [(d / "summary.json").stat().st_mtime_ns for d in dirs] == stamps
    # interrupted after the member stopped: the rerun keeps it stopped (masked, from its own last
    # checkpoint, an epoch behind the other's) and both end bit-identical to the uninterrupted run
    again = [tmp_path / "again_learns", tmp_path / "again_frozen"]
    with pytest.raises(TrainingInterrupted, match="in epoch 4"):
        train_together(configs, again, Pool.of_splits([splits, splits]), should_stop=stop_after(3 * steps))
    assert checkpoint_steps(again[0])[-1] == 3 and checkpoint_steps(again[1])[-1] == 2
    assert not any((d / "summary.json").exists() for d in again)
    assert [o.state for o in train_together(configs, again, Pool.of_splits([splits, splits]))] == ["complete"] * 2
    for ours, theirs in zip(again, dirs):
        for key in ("history", "validation", "epochs_completed", "steps"):
            assert summary(ours)[key] == summary(theirs)[key], (ours.name, key)
        assert metrics_epochs(ours) == metrics_epochs(theirs)
        (_, a), (_, b) = runs.load_run(ours), runs.load_run(theirs)
        assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))), ours.name


def test_a_member_that_diverges_fails_alone_while_the_other_goes_on(digits_tfds_dir, tmp_path):
    configs = [runs.resolve_config(MLP, small(digits_tfds_dir, 2, f"optimizer.learning_rate={lr}"))
               for lr in (3e-3, 1e30)]
    splits = prepare_data(configs[0])[0]
    dirs = [tmp_path / "fine", tmp_path / "diverges"]
    outcomes = train_together(configs, dirs, Pool.of_splits([splits, splits]))
    assert [o.state for o in outcomes] == ["complete", "failed"]
    assert "TrainingDivergedError" in outcomes[1].error and summary(dirs[1])["state"] == "failed"
    assert not (dirs[1] / "checkpoints").is_dir() or checkpoint_steps(dirs[1]) == []   # its epoch was not saved
    alone = runs.fit_run(configs[0], tmp_path / "alone", configured_model(configs[0], splits.metadata), splits,
                         verbose=0)
    np.testing.assert_allclose(summary(dirs[0])["history"]["loss"], alone.history.history["loss"], rtol=1e-4)
    assert summary(dirs[0])["epochs_completed"] == 2


# ------------------------------------------------------------------------------------------------ command line

def test_the_cv_command_trains_folds_as_a_population(tmp_path, digits_tfds_dir, capsys):
    workdir = tmp_path / "cli"
    assert cli.main(["cv", MLP, *small(digits_tfds_dir, 2), "--folds", "2", "--population", "2",
                     "--workdir", str(workdir), "--quiet"]) == 0
    cv = json.loads((workdir / "cv.json").read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"mean": cv["mean"], "std": cv["std"]}
    for k in range(2):
        s = summary(workdir / "folds" / str(k))
        assert s["population"] == {"size": 2, "member": k} and s["validation"] == cv["folds"][k]
    bad = tmp_path / "bad"
    assert cli.main(["cv", MLP, *small(digits_tfds_dir, 2), "--folds", "2", "--population", "0",
                     "--workdir", str(bad), "--quiet"]) == 2
    assert "--population must be an int >= 1, got 0" in cli_error(capsys)
    assert not (bad / "folds").exists()


# ------------------------------------------------------------------------------------------------ choosing

def test_choose_population_takes_every_member_of_a_small_model_with_its_step_compiled(digits_tfds_dir, tmp_path,
                                                                                    monkeypatch, capsys):
    one_epoch = runs.resolve_config(MLP, small(digits_tfds_dir, 1))
    raw = runs.build.load_splits(one_epoch)
    folds = folds_of(one_epoch, raw, FOLDS)
    pool = Pool.of_parts([(f.x, f.y, f.train_rows, f.validation_rows) for f in folds], raw.metadata)
    model = configured_model(one_epoch, raw.metadata)
    size, why, population = choose_population(one_epoch, model, pool)
    assert (size, why) == (FOLDS, f"{FOLDS} at a time as one population")
    assert population is not None and population.trainer.model is model and population.train_step._cache_size() == 1
    weighed = runs.resolve_config(MLP, small(digits_tfds_dir, 1, "train.class_weight=balanced"))
    assert choose_population(weighed, model, pool) == \
        (1, "one run after another: train.class_weight is set (populations do not weigh examples yet)", None)
    # cross_validate's default chooses, says so, and trains with the step it compiled (nothing compiled again)
    chosen = []

    def spy(*args, **kwargs):
        chosen.append(choose_population(*args, **kwargs))
        assert chosen[-1][2].train_step._cache_size() == 1
        return chosen[-1]

    monkeypatch.setattr(folds_lib, "choose_population", spy)
    capsys.readouterr()
    tune.cross_validate(one_epoch, tmp_path / "cv", FOLDS, verbose=1)
    assert f"cv: {FOLDS} at a time as one population." in capsys.readouterr().out
    assert len(chosen) == 1 and chosen[0][2].train_step._cache_size() == 1
    assert all(summary(tmp_path / "cv" / "folds" / str(k))["population"] == {"size": FOLDS, "member": k}
               for k in range(FOLDS))
    monkeypatch.setattr(folds_lib, "choose_population", lambda *a, **k: pytest.fail("chose for one fold left"))
    (tmp_path / "cv" / "folds" / "2" / "summary.json").unlink()     # one fold left to train: nothing to choose
    tune.cross_validate(one_epoch, tmp_path / "cv", FOLDS, verbose=0)


def test_folds_whose_epochs_differ_in_steps_train_in_populations_of_their_own(digits_tfds_dir, tmp_path):
    base = runs.resolve_config(MLP, small(digits_tfds_dir, 1))
    sizes = sorted(len(f.train_rows) for f in folds_of(base, runs.build.load_splits(base), 4))
    assert sizes[0] < sizes[-1]                                          # 4 folds of an odd pool differ by one
    config = runs.resolve_config(MLP, small(digits_tfds_dir, 1, f"train.batch_size={sizes[0]}"))
    cv = tune.cross_validate(config, tmp_path / "cv", 4, verbose=0)     # 1 step for the smallest, 2 for the others
    assert len(cv["folds"]) == 4
    populations = [summary(tmp_path / "cv" / "folds" / str(k)).get("population") for k in range(4)]
    steps = [summary(tmp_path / "cv" / "folds" / str(k))["steps"] for k in range(4)]
    for population, n in zip(populations, steps):
        assert (population or {"size": 1})["size"] == steps.count(n)     # grouped by their epochs' steps


def test_a_pruned_member_is_still_pruned_after_a_resume():
    from fluxnet.tune.trial import Pruning

    first = Pruning(trial=None, metric="val_loss")
    first.pruned = True
    again = Pruning(trial=None, metric="val_loss")
    again.set_state(json.loads(json.dumps(first.get_state())))           # as a checkpoint's meta carries it
    assert again.pruned


def test_a_bug_in_one_population_fails_its_trials_only(digits_tfds_dir, tmp_path, monkeypatch):
    import optuna

    from fluxnet.tune import study as study_lib

    config = runs.resolve_config(MLP, small(digits_tfds_dir, 1))
    space = tune.space.parse({"optimizer.learning_rate": [1e-3, 3e-3], "model.mlp.dropout": [0.0, 0.2]})
    real = study_lib.train_together
    monkeypatch.setattr(study_lib, "train_together", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        tune.sweep(config, tmp_path / "s", space, verbose=0)
    study = optuna.load_study(study_name="s", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "s" / "study.journal"))))
    states = [t.state.name for t in study.get_trials() if not t.user_attrs.get("surplus")]
    assert states == ["FAIL", "FAIL", "WAITING", "WAITING"], states     # the second population never ran
    monkeypatch.setattr(study_lib, "train_together", real)
    tune.sweep(config, tmp_path / "s", space, verbose=0)                # the others train on a rerun
    with open(tmp_path / "s" / "results.csv") as f:
        states = sorted(r["state"] for r in csv.DictReader(f))
    assert states == ["complete", "complete", "failed", "failed"]
