"""The three experiments: ``sweep`` (grid or random points), ``search`` (Optuna's samplers and pruners)
and, in ``folds``, ``cross_validate``; each an experiment directory of trial run directories that a
rerun resumes. The test split is read once, for the best trial, into ``best.json``."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import optuna
from ml_collections import ConfigDict

from fluxnet.errors import ConfigError
from fluxnet.runs import jobs, workdir as run_dirs
from fluxnet.tune import results
from fluxnet.tune import space as spaces
from fluxnet.tune.study import (ERROR, Experiment, enqueue, open_study, population_order, pruner_for, run_worker,
                                sampler_for, trial_seed)

METHODS = ("grid", "random")


def sweep(config: ConfigDict, workdir: str | os.PathLike, space: dict[str, spaces.Dimension], *,
          method: str = "grid", trials: int | None = None, seed: int = 0, cv: int | None = None,
          metric: str = "val_accuracy", verbose: int = 1, should_stop: Callable[[int], Any] | None = None,
          population: int | None = None) -> dict:
    """Train every point of a grid (the first ``trials`` of it), or ``trials`` random points (default 10),
    into ``workdir/trials/<id>/``; returns ``best.json``'s content. Points that differ only in traced
    values (learning rate, weight decay, seed) train together as populations of ``population``
    (None: as many as fit; 1: one after another)."""
    if method not in METHODS:
        raise ConfigError(f"--method must be grid or random, got {method!r}.")
    exp = Experiment(config, space, Path(workdir), metric=metric, cv=cv)
    points = spaces.grid(space, trials) if method == "grid" else spaces.random_points(space, trials or 10, seed)
    study = open_study(exp, sampler=optuna.samplers.RandomSampler(seed=seed), pruner=optuna.pruners.NopPruner())
    enqueue(study, points, order=population_order(exp, points) if population != 1 else None)
    run_worker(exp, study, len(points), prune=False, count_failed=True, verbose=0, should_stop=should_stop,
               on_trial=_progress(exp, study, verbose), population=population, log=print if verbose else None,
               until_mismatch=True)
    return finish(exp, study, verbose)


def search(config: ConfigDict, workdir: str | os.PathLike, space: dict[str, spaces.Dimension], trials: int, *,
           storage: str | None = None, study_name: str | None = None, sampler: str = "tpe", pruner: str = "median",
           metric: str = "val_accuracy", direction: str | None = None, seed: int = 0, cv: int | None = None,
           verbose: int = 1, should_stop: Callable[[int], Any] | None = None, population: int = 1) -> dict:
    """An Optuna study of ``trials`` finished trials (over every worker sharing ``workdir`` or
    ``storage``); returns ``best.json``'s content. ``population`` > 1 asks that many trials at once
    (Optuna's batch ask/tell), trains those that differ only in traced values as one population (a
    pruned member is masked out while the others go on) and tells each result."""
    exp = Experiment(config, space, Path(workdir), metric=metric, direction=direction, cv=cv)
    if sampler == "grid" and trials > spaces.grid_size(space):
        raise ConfigError(f"--trials {trials} exceeds the grid's {spaces.grid_size(space)} points.")
    study = open_study(exp, storage=storage, name=study_name, sampler=sampler_for(sampler, space, seed),
                       pruner=pruner_for(pruner, trials))
    reseed = None
    if sampler == "grid":  # in the order listed, each point once (duplicates in a list are kept)
        enqueue(study, spaces.grid(space))
    else:
        reseed = lambda number: sampler_for(sampler, space, trial_seed(seed, number))  # noqa: E731
    run_worker(exp, study, trials, prune=pruner != "none" and not cv, verbose=0, should_stop=should_stop,
               on_trial=_progress(exp, study, verbose, search=True), reseed=reseed, population=population,
               log=print if verbose else None)
    return finish(exp, study, verbose, search=True)


PLOT_EVERY_S = 60.0  # a worker redraws an experiment's plots after a trial at most this often (and at the end)


def _progress(exp: Experiment, study: optuna.Study, verbose: int, search: bool = False):
    """After each trial: rewrite the reports (the plots at most every :data:`PLOT_EVERY_S`: drawing
    them took longer than a small trial) and print one line (id, params, metric, best so far)."""
    drawn = time.monotonic()

    def on_trial(trial: optuna.trial.FrozenTrial) -> None:
        nonlocal drawn
        plots = time.monotonic() - drawn >= PLOT_EVERY_S
        best = results.write(exp, study, search=search, plots=plots)
        if plots:
            drawn = time.monotonic()
        if verbose:
            params = " ".join(f"{k}={v!r}" for k, v in trial.params.items())
            value = f"{exp.metric} {trial.value:.4f}" if trial.value is not None else ""
            state = results.STATES[trial.state]
            if state != "complete":  # pruned: its last reported value; failed: its error
                value += f" ({state}: {trial.user_attrs[ERROR]})" if ERROR in trial.user_attrs else f" ({state})"
            best_text = f"best {best['value']:.4f} (trial {best['trial']})" if best else "no complete trial yet"
            print(f"trial {trial.number}: {params} -> {value}; {best_text}", flush=True)

    return on_trial


def finish(exp: Experiment, study: optuna.Study, verbose: int, search: bool = False) -> dict | None:
    """The final reports: the best trial's test metrics (read once; with cross-validation the best config
    is retrained on train + validation into ``workdir/best/``), ``best.json`` and the leaderboard."""
    best = results.write(exp, study, search=search, plots=False)
    if best is None:
        return None
    test = best["test"]
    if test is None:
        if exp.cv:  # the folds' runs never saw all of train + validation: retrain the best config on it
            config = spaces.with_params(exp.config, {**best["params"], "data.splits.validation": None,
                                                     "train.checkpoint.monitor": None, "train.early_stopping": None})
            test = jobs.train(config, exp.workdir / "best", verbose=0)["test"]
        else:
            test = run_dirs.evaluate_run(exp.trial_dir(best["trial"]), split="test")
    best = results.write(exp, study, test=test, search=search)
    if verbose:
        print((exp.workdir / results.RESULTS_MD).read_text().rstrip())
        print(f"best: trial {best['trial']} {exp.metric} {best['value']:.4f}; test "
              + " - ".join(f"{k}: {v:.4f}" for k, v in test.items()))
    return best
