"""Experiments: search spaces, grid and random sweeps, Optuna searches (pruning, shared storages, two
workers), cross-validation, resuming, and the promise that selection never reads the test split."""
import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from fluxnet import cli, runs, tune
from fluxnet.errors import ConfigError
from fluxnet.runs.build import load_splits
from fluxnet.tune import folds as folds_lib
from fluxnet.tune import results as results_lib
from fluxnet.tune import study as study_lib
from runs_support import cli_error, finish, fluxnet_process, start_until

MLP = str(Path(__file__).resolve().parent.parent / "configs" / "digits_mlp.py")


def small(data_dir, epochs=2, *extra):
    return [f"data.data_dir={data_dir}", "model.mlp.units=(16,)", "train.batch_size=64", f"train.epochs={epochs}",
            "train.plots=False", *extra]


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def config(digits_tfds_dir):
    return runs.resolve_config(MLP, small(digits_tfds_dir))


# ------------------------------------------------------------------------------------------------ spaces

def test_spaces_parse_every_kind_and_the_command_line_replaces_dimensions(config):
    space = tune.space.parse({"optimizer.learning_rate": {"loguniform": [1e-4, 1e-2]}, "model.mlp.dropout": [0.0, 0.5]},
                             ["train.batch_size={'int': [16, 64], 'step': 16}", "model.mlp.dropout=[0.1]"])
    assert space["model.mlp.dropout"].values == (0.1,)
    assert space["train.batch_size"].grid_values() == (16, 32, 48, 64)
    tune.space.check(space, config)
    points = tune.space.random_points(space, 5, seed=3)
    assert points == tune.space.random_points(space, 5, seed=3)
    assert all(1e-4 <= p["optimizer.learning_rate"] <= 1e-2 and p["train.batch_size"] in (16, 32, 48, 64)
               for p in points)
    assert tune.space.grid({"a": tune.space.dimension("a", [1, 2]), "b": tune.space.dimension("b", ["x", "y"])}) \
        == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]


@pytest.mark.parametrize("args, message", [
    (["--space", "optimizer.learning_rat=[0.1]"], "Unknown config key 'optimizer.learning_rat'. Did you mean "
                                                  "'optimizer.learning_rate'"),
    (["--space", "model.mlp.dropout=['high']"], "Config key 'model.mlp.dropout' expects a value of type float"),
    (["--space", "optimizer.learning_rate={'uniform': [1]}"], "uniform needs [lo, hi] with lo < hi"),
    (["--space", "optimizer.learning_rate={'normal': [0, 1]}"], "must be a list or one of"),
    (["--space", "optimizer.learning_rate={'loguniform': [0, 1]}"], "loguniform needs lo > 0"),
    (["--space", "optimizer.learning_rate=[)"], "SPEC must be a Python literal"),
    (["--space", "train.batch_size=[(1, 2)]"], "categorical values must be None, bool, int, float or str"),
    ([], "A grid cannot cover the continuous dimension 'optimizer.learning_rate'"),
])
def test_a_bad_space_is_one_line_before_any_training(args, message, tmp_path, digits_tfds_dir, capsys):
    workdir = tmp_path / "exp"
    assert cli.main(["sweep", MLP, *small(digits_tfds_dir), *args, "--workdir", str(workdir)]) == 2
    assert message in cli_error(capsys)
    assert not (workdir / "trials").exists()


@pytest.mark.parametrize("command, message", [
    (["cv", "--folds", "1"], "--folds must be an int >= 2, got 1"),
    (["tune", "--trials", "0"], "--trials must be an int >= 1, got 0"),
    (["tune", "--trials", "2", "--metric", "val_auc"], "--metric 'val_auc' is not a validation metric"),
    (["sweep", "--cv", "1", "--space", "model.mlp.dropout=[0.0]"], "--cv must be an int >= 2, got 1"),
    (["tune", "--trials", "2", "--storage", "nosuch://x"], "Cannot open the study storage"),
])
def test_bad_experiment_arguments_are_one_line(command, message, tmp_path, digits_tfds_dir, capsys):
    name, *rest = command
    workdir = tmp_path / "exp"
    assert cli.main([name, MLP, *small(digits_tfds_dir), *rest, "--workdir", str(workdir)]) == 2
    assert message in cli_error(capsys)
    assert not (workdir / "trials").exists() and not (workdir / "folds").exists()


# ------------------------------------------------------------------------------------------------ sweeps

def test_a_grid_sweep_writes_its_reports_and_a_rerun_trains_nothing(tmp_path, digits_tfds_dir, capsys, monkeypatch):
    workdir = tmp_path / "grid"
    args = ["sweep", MLP, *small(digits_tfds_dir), "--space", "optimizer.learning_rate=[0.01, 0.001]",
            "--space", "model.mlp.dropout=[0.0]", "--space", "train.batch_size=[64]", "--workdir", str(workdir)]
    drawn = []
    monkeypatch.setattr(results_lib, "_plots", lambda *a, _draw=results_lib._plots: drawn.append(_draw(*a)))
    assert cli.main(args) == 0
    assert len(drawn) == 1                             # the plots once, at the end: not after each short trial
    out = capsys.readouterr().out
    assert "trial 0: optimizer.learning_rate=0.01" in out and "best: trial" in out
    rows = read_csv(workdir / "results.csv")
    assert [r["trial"] for r in rows] == ["0", "1"] and {r["state"] for r in rows} == {"complete"}
    assert list(rows[0])[:5] == ["trial", "optimizer.learning_rate", "model.mlp.dropout", "train.batch_size", "state"]
    assert {"val_accuracy", "val_loss", "epochs", "seconds"} <= set(rows[0])
    best = json.loads((workdir / "best.json").read_text())
    assert set(best) == {"trial", "params", "value", "metric", "config", "test"}
    winner = rows[best["trial"]]
    assert repr(best["value"]) == winner["val_accuracy"] and set(best["test"]) == {"loss", "accuracy"}
    for trial in (workdir / "trials").iterdir():      # selection never wrote a test metric
        summary = json.loads((trial / "summary.json").read_text())
        assert "test" not in json.dumps(summary) and set(summary["baseline"]) == {"majority", "logistic_regression",
                                                                                  "accuracy"}
    rebuilt = runs.resolve_config(str(workdir / "best_config.py"))
    assert runs.config.to_json(rebuilt) == best["config"]
    stamps = {p: p.stat().st_mtime_ns for p in workdir.rglob("trials/*/summary.json")}
    assert cli.main(args) == 0                        # a rerun: finished trials are not run again
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert (workdir / "results.md").read_text().startswith("# grid: val_accuracy (maximize)")
    assert (workdir / "val_accuracy_by_key.png").stat().st_size > 1000


def test_random_sweeps_are_reproducible_and_a_failing_trial_is_recorded(tmp_path, config):
    space = tune.space.parse({"optimizer.learning_rate": [1e30, 0.01], "model.mlp.dropout": [0.0]})
    best = tune.sweep(config, tmp_path / "a", space, method="grid", verbose=0)
    rows = {r["trial"]: r for r in read_csv(tmp_path / "a" / "results.csv")}
    assert rows["0"]["state"] == "failed" and "TrainingDivergedError" in rows["0"]["error"]
    assert rows["1"]["state"] == "complete" and best["trial"] == 1
    space = tune.space.parse({"optimizer.learning_rate": {"loguniform": [1e-3, 1e-2]}})
    for name in ("r1", "r2"):
        tune.sweep(config, tmp_path / name, space, method="random", trials=2, seed=7, verbose=0)
    params = [[r["optimizer.learning_rate"] for r in read_csv(tmp_path / name / "results.csv")]
              for name in ("r1", "r2")]
    assert params[0] == params[1] and len(set(params[0])) == 2


def test_a_killed_sweep_loses_nothing_and_resumes_its_running_trial(tmp_path, digits_tfds_dir):
    workdir = tmp_path / "killed"
    args = ["sweep", MLP, *small(digits_tfds_dir, 40), "--space", "model.mlp.dropout=[0.0, 0.1, 0.2]", "--space",
            "optimizer.learning_rate=[0.01]", "--space", "train.batch_size=[64]", "--workdir", str(workdir), "--quiet"]
    # trial 1 has started once trial 0 is finished
    proc = start_until(args, workdir / "trials" / "1" / "metrics.jsonl", start_new_session=True)
    os.killpg(proc.pid, signal.SIGKILL)               # the whole process group, as a scheduler would
    proc.wait()
    first = (workdir / "trials" / "0" / "summary.json").read_bytes()
    assert not (workdir / "trials" / "1" / "summary.json").exists()
    done = fluxnet_process(args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (workdir / "trials" / "0" / "summary.json").read_bytes() == first   # never rewritten
    rows = read_csv(workdir / "results.csv")
    assert [r["trial"] for r in rows] == ["0", "1", "2"] and {r["state"] for r in rows} == {"complete"}
    lines = (workdir / "trials" / "1" / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(line)["epoch"] for line in lines]
    assert epochs == list(range(1, 41))               # resumed in its directory, each epoch once


def test_points_that_differ_in_traced_values_train_as_populations_with_the_same_results(tmp_path, config):
    space = tune.space.parse({"optimizer.learning_rate": [1e-3, 3e-3], "model.mlp.dropout": [0.0, 0.2]})
    base = runs.config.apply_overrides(config, ["optimizer.schedule=constant"])
    tune.sweep(base, tmp_path / "together", space, verbose=0)
    tune.sweep(base, tmp_path / "alone", space, verbose=0, population=1)
    summaries = {name: {int(t.name): json.loads((t / "summary.json").read_text())
                        for t in (tmp_path / name / "trials").iterdir()} for name in ("together", "alone")}
    by_point = {json.dumps(s["params"], sort_keys=True): s for s in summaries["together"].values()}
    for alone in summaries["alone"].values():
        together = by_point[json.dumps(alone["params"], sort_keys=True)]
        assert "population" not in alone and together["population"]["size"] == 2
        assert together["history"]["loss"][0] == pytest.approx(alone["history"]["loss"][0], rel=1e-6)
        assert together["validation"]["val_loss"] == pytest.approx(alone["validation"]["val_loss"], rel=1e-4)
        assert abs(together["validation"]["val_accuracy"] - alone["validation"]["val_accuracy"]) * \
            together["data"]["validation"] <= 1 + 1e-9
    # the grid is lr-major; its points are queued population by population: dropout 0.0 first
    params = {n: (s["params"]["model.mlp.dropout"], s["population"]["member"])
              for n, s in summaries["together"].items()}
    assert params == {0: (0.0, 0), 1: (0.0, 1), 2: (0.2, 0), 3: (0.2, 1)}


@pytest.mark.slow  # a killed sweep of single runs resumes in the default suite
def test_a_killed_population_sweep_resumes_every_member_in_its_directory(tmp_path, digits_tfds_dir):
    workdir = tmp_path / "killed"
    args = ["sweep", MLP, *small(digits_tfds_dir, 30), "--space", "optimizer.learning_rate=[0.01, 0.003]",
            "--space", "model.mlp.dropout=[0.0]", "--space", "train.batch_size=[64]", "--workdir", str(workdir),
            "--quiet"]
    proc = start_until(args, workdir / "trials" / "1" / "checkpoints" / "3", start_new_session=True)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (workdir / "trials" / "0" / "summary.json").exists()
    done = fluxnet_process(args)
    assert done.returncode == 0, done.stderr[-3000:]
    for trial in ("0", "1"):
        summary = json.loads((workdir / "trials" / trial / "summary.json").read_text())
        assert summary["state"] == "complete" and summary["population"]["size"] == 2
        epochs = [json.loads(line)["epoch"] for line in
                  (workdir / "trials" / trial / "metrics.jsonl").read_text().splitlines()]
        assert epochs == list(range(1, 31))          # resumed, each epoch once


# ------------------------------------------------------------------------------------------------ searches

def test_pruning_stops_the_trials_that_learn_nothing(tmp_path, digits_tfds_dir, capsys):
    workdir = tmp_path / "pruned"
    assert cli.main(["tune", MLP, *small(digits_tfds_dir, 3), "--space",
                     "optimizer.learning_rate=[3e-3, 3e-3, 1e-7, 1e-7]", "--space", "model.mlp.dropout=[0.0]",
                     "--space", "train.batch_size=[64]", "--sampler", "grid", "--trials", "4",
                     "--workdir", str(workdir), "--quiet"]) == 0
    states = {r["optimizer.learning_rate"]: set() for r in read_csv(workdir / "results.csv")}
    for r in read_csv(workdir / "results.csv"):
        states[r["optimizer.learning_rate"]].add(r["state"])
    assert states == {"0.003": {"complete"}, "1e-07": {"pruned"}}
    pruned = [r for r in read_csv(workdir / "results.csv") if r["state"] == "pruned"]
    assert all(int(r["epochs"]) < 3 for r in pruned)  # stopped early, run directories kept
    assert all((workdir / "trials" / r["trial"] / "checkpoints").is_dir() for r in pruned)


def test_a_search_asks_a_batch_trains_it_together_and_prunes_members(tmp_path, digits_tfds_dir):
    workdir = tmp_path / "batched"
    assert cli.main(["tune", MLP, *small(digits_tfds_dir, 3), "--space",
                     "optimizer.learning_rate=[3e-3, 2e-3, 1e-7, 2e-7]", "--space", "model.mlp.dropout=[0.0]",
                     "--space", "train.batch_size=[64]", "--sampler", "grid", "--trials", "4", "--population", "2",
                     "--workdir", str(workdir), "--quiet"]) == 0
    rows = read_csv(workdir / "results.csv")
    states = {r["optimizer.learning_rate"]: r["state"] for r in rows}
    assert states == {"0.003": "complete", "0.002": "complete", "1e-07": "pruned", "2e-07": "pruned"}
    for r in rows:  # two batches of two, each one population
        summary = json.loads((workdir / "trials" / r["trial"] / "summary.json").read_text())
        assert summary["population"]["size"] == 2
    assert all(int(r["epochs"]) < 3 for r in rows if r["state"] == "pruned")


@pytest.mark.slow  # random sweeps' reproducibility is in the default suite
def test_each_trial_is_drawn_with_its_own_seed_in_a_batch_and_per_study_seed(tmp_path, config):
    """``--population`` changes how trials train, not what a random search draws (each trial's sampler
    is seeded with its number, also when a batch is asked before any trial is drawn); ``--seed`` changes
    every draw."""
    space = tune.space.parse({"optimizer.learning_rate": {"loguniform": [1e-4, 1e-2]}})
    drawn = {}
    for seed, population in ((0, 1), (0, 3), (1, 1)):
        workdir = tmp_path / f"s{seed}p{population}"
        tune.search(config, workdir, space, 3, sampler="random", pruner="none", seed=seed, verbose=0,
                    population=population)
        drawn[seed, population] = [r["optimizer.learning_rate"] for r in read_csv(workdir / "results.csv")]
    assert drawn[0, 1] == drawn[0, 3] and len(set(drawn[0, 1])) == 3
    assert not set(drawn[0, 1]) & set(drawn[1, 1])  # another seed, other trials


def test_two_workers_on_one_journal_finish_exactly_n_trials(tmp_path, digits_tfds_dir):
    workdir = tmp_path / "shared"
    args = [sys.executable, "-m", "fluxnet.cli", "tune", MLP, *small(digits_tfds_dir, 2), "--trials", "5",
            "--sampler", "random", "--pruner", "none", "--workdir", str(workdir), "--quiet"]
    workers = [subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for worker in workers:
        assert worker.wait(timeout=600) == 0, worker.stderr.read()[-3000:]
    study = optuna.load_study(study_name="shared", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(workdir / "study.journal"))))
    finished = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE
                and not t.user_attrs.get(study_lib.SURPLUS)]
    assert len(finished) == 5 and len({t.number for t in finished}) == 5
    assert len({json.dumps(t.params, sort_keys=True) for t in finished}) == 5   # no worker repeats another's draw
    assert {t.user_attrs["owner"]["pid"] for t in finished} == {w.pid for w in workers}   # both did work
    assert len(read_csv(workdir / "results.csv")) == 5


def test_an_sqlite_storage_url_is_used_as_given(tmp_path, config):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    space = tune.space.parse({"optimizer.learning_rate": {"loguniform": [1e-3, 1e-2]}})
    best = tune.search(config, tmp_path / "sql", space, 2, storage=url, study_name="s", sampler="random",
                       pruner="none", verbose=0)
    assert (tmp_path / "study.db").stat().st_size > 0 and not (tmp_path / "sql" / "study.journal").exists()
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 2 and best["metric"] == "val_accuracy"


# ------------------------------------------------------------------------------------------------ cross-validation

def test_folds_are_disjoint_stratified_and_cover_train_and_validation(config):
    raw = load_splits(config)
    parts = [raw.train, raw.validation]
    pool_labels = np.concatenate([p.labels for p in parts])
    folds = folds_lib.fold_splits(config, raw, 4)
    assert all(f.test is None for f in folds)
    sizes = [len(f.validation) for f in folds]
    assert sum(sizes) == len(pool_labels) and max(sizes) - min(sizes) <= 1
    vals = np.concatenate([f.validation.labels for f in folds])
    assert np.array_equal(np.sort(vals), np.sort(pool_labels))          # every example validates once
    for f in folds:
        assert len(f.train) + len(f.validation) == len(pool_labels)
        share = np.bincount(f.validation.labels, minlength=10) / len(f.validation)
        assert np.abs(share - np.bincount(pool_labels) / len(pool_labels)).max() < 0.02   # stratified
    with pytest.raises(ConfigError.__mro__[2]):                         # a ValueError
        folds_lib.fold_splits(config, raw, 1)


def test_cross_validation_writes_fold_runs_and_their_mean_and_std(tmp_path, digits_tfds_dir, capsys):
    workdir = tmp_path / "cv"
    assert cli.main(["cv", MLP, *small(digits_tfds_dir), "--folds", "3", "--workdir", str(workdir), "--quiet"]) == 0
    cv = json.loads((workdir / "cv.json").read_text())
    values = [f["val_accuracy"] for f in cv["folds"]]
    assert len(values) == 3 and cv["mean"]["val_accuracy"] == float(np.mean(values))
    assert cv["std"]["val_accuracy"] == float(np.std(values))           # ddof=0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["mean"] == cv["mean"]
    for k in range(3):
        summary = json.loads((workdir / "folds" / str(k) / "summary.json").read_text())
        assert summary["validation"] == cv["folds"][k] and "test" not in summary


class Untouchable:
    def __getattr__(self, name):
        raise AssertionError(f"the test split was read (.{name})")

    def __len__(self):
        raise AssertionError("the test split was read (len)")


def test_selection_never_reads_the_test_split(tmp_path, config, monkeypatch):
    real_prepare, real_load = study_lib.prepare_data, folds_lib.load_splits
    monkeypatch.setattr(study_lib, "prepare_data",
                        lambda c: (dataclasses.replace(real_prepare(c)[0], test=Untouchable()), None))
    monkeypatch.setattr(folds_lib, "load_splits", lambda c: dataclasses.replace(real_load(c), test=Untouchable()))
    finished = []
    monkeypatch.setattr(tune.experiments, "finish", lambda exp, study, verbose, search=False: finished.append(exp))
    space = tune.space.parse({"model.mlp.dropout": [0.0, 0.3]})
    tune.sweep(config, tmp_path / "s", space, verbose=0)
    tune.search(config, tmp_path / "t", space, 2, sampler="random", verbose=0)
    tune.sweep(config, tmp_path / "c", space, cv=2, verbose=0)
    tune.cross_validate(config, tmp_path / "cv", 2, verbose=0)
    assert len(finished) == 3 and len(read_csv(tmp_path / "t" / "results.csv")) == 2


def test_a_cross_validated_sweep_retrains_the_best_config_for_its_test_score(tmp_path, config):
    space = tune.space.parse({"model.mlp.dropout": [0.0, 0.3]})
    best = tune.sweep(config, tmp_path / "cvs", space, cv=2, verbose=0)
    trial = tmp_path / "cvs" / "trials" / str(best["trial"])
    assert sorted(p.name for p in (trial / "folds").iterdir()) == ["0", "1"]
    summary = json.loads((trial / "summary.json").read_text())
    assert best["value"] == summary["validation"]["val_accuracy"] and len(summary["folds"]) == 2
    retrained = json.loads((tmp_path / "cvs" / "best" / "summary.json").read_text())
    assert best["test"] == retrained["test"] and retrained["data"]["validation"] == 0


@pytest.mark.slow  # SIGKILL of a sweep is in the default suite, SIGTERM of a run in test_faults_signals
def test_sigterm_saves_the_running_trial_and_a_rerun_finishes_the_sweep(tmp_path, digits_tfds_dir):
    workdir = tmp_path / "term"
    args = ["sweep", MLP, *small(digits_tfds_dir, 30), "--space", "model.mlp.dropout=[0.0, 0.1]", "--space",
            "optimizer.learning_rate=[0.01]", "--space", "train.batch_size=[64]", "--workdir", str(workdir), "--quiet"]
    proc = start_until(args, workdir / "trials" / "0" / "metrics.jsonl")
    proc.send_signal(signal.SIGTERM)
    err = finish(proc, timeout=300)
    assert proc.returncode == 143, err[-3000:]
    assert len(err.strip().splitlines()) == 1 and "Training stopped by SIGTERM" in err
    assert not (workdir / "trials" / "0" / "summary.json").exists()
    done = fluxnet_process(args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["state"] for r in read_csv(workdir / "results.csv")] == ["complete", "complete"]


def test_a_space_no_trial_can_train_stops_with_one_line(tmp_path, digits_tfds_dir, capsys):
    workdir = tmp_path / "hopeless"
    assert cli.main(["tune", MLP, *small(digits_tfds_dir), "--space", "model.mlp.dropout=[1.5]", "--trials", "2",
                     "--workdir", str(workdir), "--quiet"]) == 2
    assert "All 2 trials of" in cli_error(capsys) and len(list((workdir / "trials").iterdir())) == 2


def test_failing_points_are_recorded_and_the_experiment_goes_on(tmp_path, config):
    space = tune.space.parse({"optimizer.learning_rate": [1e30, 0.01], "model.mlp.dropout": [0.0]})
    best = tune.sweep(config, tmp_path / "cvnan", space, cv=2, verbose=0)           # a fold diverges
    rows = read_csv(tmp_path / "cvnan" / "results.csv")
    assert [r["state"] for r in rows] == ["failed", "complete"] and best["trial"] == 1
    assert int(rows[1]["epochs"]) == 2                                               # the folds' epochs
    space = tune.space.parse({"data.splits.validation": [None, 0.2]})
    tune.sweep(config, tmp_path / "noval", space, verbose=0)                          # no validation split
    rows = read_csv(tmp_path / "noval" / "results.csv")
    assert [r["state"] for r in rows] == ["failed", "complete"] and "does not log 'val_accuracy'" in rows[0]["error"]


def test_a_rerun_with_another_space_or_config_is_refused(tmp_path, digits_tfds_dir, capsys):
    workdir = tmp_path / "fixed"
    base = ["sweep", MLP, *small(digits_tfds_dir), "--space", "model.mlp.dropout=[0.0]", "--space",
            "optimizer.learning_rate=[0.01]", "--space", "train.batch_size=[64]", "--workdir", str(workdir), "--quiet"]
    assert cli.main(base) == 0
    capsys.readouterr()
    assert cli.main([*base, "--space", "model.mlp.dropout=[0.3]"]) == 2
    assert "holds an experiment with another space or config" in cli_error(capsys)
    assert cli.main([*base, "train.epochs=4"]) == 2
    assert "config.train.epochs: 2 (recorded) -> 4" in cli_error(capsys)
    random_base = ["sweep", MLP, *small(digits_tfds_dir), "--space",
                   "optimizer.learning_rate={'uniform': [0.001, 0.01]}", "--method", "random", "--trials", "1",
                   "--workdir", str(tmp_path / "rnd"), "--quiet"]
    assert cli.main(random_base) == 0
    capsys.readouterr()
    assert cli.main([*random_base, "--seed", "5"]) == 2
    assert "swept with another --method, --seed or space" in cli_error(capsys)


def test_huge_grids_are_refused_or_taken_lazily(config, tmp_path):
    space = tune.space.parse({"seed": {"int": [0, 1_000_000]}, "model.mlp.dropout": [0.0, 0.1]})
    with pytest.raises(ConfigError, match="The grid has 2,000,002 points; pass --trials N"):
        tune.space.grid(space)
    assert tune.space.grid(space, 3) == [{"seed": 0, "model.mlp.dropout": 0.0}, {"seed": 0, "model.mlp.dropout": 0.1},
                                         {"seed": 1, "model.mlp.dropout": 0.0}]
    with pytest.raises(ConfigError, match="--trials 5 exceeds the grid's 2 points"):
        tune.search(config, tmp_path / "grid", tune.space.parse({"model.mlp.dropout": [0.0, 0.1]}), 5,
                    sampler="grid", verbose=0)
    assert not (tmp_path / "grid").exists()
