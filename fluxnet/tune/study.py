"""Experiments as Optuna studies: a sweep (grid or random points, enqueued) or a search (a sampler and a
pruner), run by one or more workers that share the study's storage.

The storage is an Optuna ``JournalStorage`` file in the experiment directory unless a URL is given
(``sqlite:///...`` for one machine, ``postgresql://...`` for many). ``n_trials`` is the study's total of
finished trials (complete + pruned; a sweep counts failed points too) over all workers: after each
``ask`` (trial numbers are atomic in the storage) a worker counts the smaller-numbered trials that
finished or are still running, and a trial past the total is marked surplus (recorded as failed with
the ``surplus`` attribute; not a result) instead of being run. A trial left running by a dead worker
(its run directory unlocked, its process gone) is resumed from its checkpoint in its directory, once.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import optuna
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from ml_collections import ConfigDict

from fluxnet.errors import ConfigError, RunLockedError, TrainingInterrupted
from fluxnet.metrics import monitor_mode
from fluxnet.runs.build import configured_model, prepare_data
from fluxnet.runs.config import config_diff, to_json
from fluxnet.runs.lock import RunLock
from fluxnet.runs.population import Pool, blocker, choose_population, population_key
from fluxnet.runs.schema import check_run_config, logged_names
from fluxnet.runs.workdir import latest_meta
from fluxnet.tune import space as spaces
from fluxnet.tune.folds import cross_validated_trial
from fluxnet.tune.trial import Pruning, TrialOutcome, record_failure, train_together, train_validated

JOURNAL = "study.journal"
TRIALS = "trials"
SAMPLERS = ("tpe", "random", "cmaes", "grid")
PRUNERS = ("median", "hyperband", "none")
OWNER, POINT, SURPLUS, ERROR = "owner", "point", "surplus", "error"  # trial user attributes
EXPERIMENT = "experiment"  # the study's user attribute: what it searches
T = optuna.trial.TrialState


@dataclasses.dataclass
class Experiment:
    """What every trial shares: the base config, the space, where trials live and how they are scored
    (``metric`` of the final state on validation, or its mean over ``cv`` folds)."""

    config: ConfigDict
    space: dict[str, spaces.Dimension]
    workdir: Path
    metric: str = "val_accuracy"
    direction: str | None = None  # default: the metric's own ("max" for accuracy-like names)
    cv: int | None = None

    def __post_init__(self):
        self.workdir = Path(self.workdir)
        if self.direction is None:
            self.direction = "maximize" if monitor_mode(self.metric) == "max" else "minimize"
        if self.direction not in ("maximize", "minimize"):
            raise ConfigError(f"--direction must be maximize or minimize, got {self.direction!r}.")
        check_run_config(self.config)
        logged = [n for n in logged_names(self.config) if n.startswith("val_")]
        if self.metric not in logged:
            raise ConfigError(f"--metric {self.metric!r} is not a validation metric the trials log; choose one of "
                              f"{', '.join(logged) or 'none (the config has no validation split)'}.")
        if self.cv is not None and (isinstance(self.cv, bool) or not isinstance(self.cv, int) or self.cv < 2):
            raise ConfigError(f"--cv must be an int >= 2, got {self.cv!r}.")
        spaces.check(self.space, self.config)

    def fingerprint(self) -> dict:
        """What the study searches, as JSON: the space and the base config every trial starts from."""
        return {"space": {k: dataclasses.asdict(d) for k, d in self.space.items()},
                "config": to_json(self.config), "metric": self.metric, "cv": self.cv}

    def trial_dir(self, number: int) -> Path:
        return self.workdir / TRIALS / str(number)


def quiet_optuna() -> None:
    """Optuna's INFO lines and experimental warnings stay out of the terminal."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial ``number`` of a study seeded with ``seed``: ``seed * 2**16 + number``
    (mod 2**32), so that studies with other seeds draw other trials (with ``seed + number``, seed 1's
    trial n was seed 0's trial n + 1)."""
    return (seed * 2**16 + number) % 2**32


def sampler_for(name: str, space: dict[str, spaces.Dimension], seed: int) -> optuna.samplers.BaseSampler:
    """The sampler ``name`` seeded with ``seed`` (a worker reseeds it with :func:`trial_seed` before each
    trial, so workers never repeat each other's draws and one worker's search is reproducible)."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "grid":
        return optuna.samplers.GridSampler({k: list(d.grid_values()) for k, d in space.items()}, seed=seed)
    raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {name!r}.")


def pruner_for(name: str, n_trials: int) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=min(5, max(1, n_trials // 4)), n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner must be one of {', '.join(PRUNERS)}, got {name!r}.")


def open_study(exp: Experiment, *, storage: str | None = None, name: str | None = None,
               sampler: optuna.samplers.BaseSampler | None = None,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """The experiment's study, created on first use (``storage`` None: a journal file in its workdir)."""
    quiet_optuna()
    if storage is None:
        exp.workdir.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        storage = optuna.storages.JournalStorage(JournalFileBackend(str(exp.workdir / JOURNAL)))
    for attempt in range(5):
        try:
            study = optuna.create_study(study_name=name or exp.workdir.name, storage=storage, sampler=sampler,
                                        pruner=pruner, direction=exp.direction, load_if_exists=True)
            break
        except OperationalError as err:  # two workers creating a database's tables at once: try again
            if attempt == 4:
                raise ConfigError(f"Cannot open the study storage {storage!r}: {err}") from None
            time.sleep(0.5 + random.random())
        except (ValueError, ImportError, SQLAlchemyError) as err:  # a malformed URL, a missing database driver
            raise ConfigError(f"Cannot open the study storage {storage!r}: {err}") from None
    _check_same_experiment(exp, study)
    return study


def _check_same_experiment(exp: Experiment, study: optuna.Study) -> None:
    """Record what the study searches (the space and the base config); refuse to continue it with
    another, since its trials would be reported under the new settings."""
    recorded = study.user_attrs.get(EXPERIMENT)
    current = exp.fingerprint()
    if recorded is None:
        study.set_user_attr(EXPERIMENT, current)
        return
    diff = config_diff(recorded, current, ignore=())
    if diff:
        lines = "; ".join(f"{k}: {old!r} (recorded) -> {new!r}" for k, old, new in diff[:8])
        raise ConfigError(f"{exp.workdir} holds an experiment with another space or config ({lines}"
                          f"{'; ...' if len(diff) > 8 else ''}); nothing was run. Use another --workdir.")


def enqueue(study: optuna.Study, points: list[dict[str, Any]], order: list[int] | None = None) -> None:
    """Queue the points not yet in the study (each tagged with its index; duplicates from workers that
    queued at once are resolved at run time: the smallest-numbered trial of a point runs), in ``order``
    (indices; default: as listed)."""
    queued = {t.user_attrs[POINT]: t for t in study.get_trials(deepcopy=False) if POINT in t.user_attrs}
    for i in (range(len(points)) if order is None else order):
        params = points[i]
        if i not in queued:
            study.enqueue_trial(params, user_attrs={POINT: i}, skip_if_exists=False)
        elif {k: queued[i].params.get(k, queued[i].system_attrs.get("fixed_params", {}).get(k)) for k in params} \
                != params:
            raise ConfigError(f"Point {i} of this study was {queued[i].params or 'queued'} and is now {params}: it was "
                              "swept with another --method, --seed or space. Use another --workdir.")


def population_order(exp: Experiment, points: list[dict[str, Any]]) -> list[int]:
    """The points' indices with those that can share a population next to each other (in their first
    point's place; a stable order), so that a worker's batch is one population."""
    keys = []
    for params in points:
        try:
            config = _point_config(exp, params)
            keys.append(population_key(config, 1) if blocker(config) is None else None)
        except ConfigError:
            keys.append(None)
    first: dict[str, int] = {}
    rank = [first.setdefault(k, i) if k is not None else i for i, k in enumerate(keys)]
    return sorted(range(len(points)), key=lambda i: (rank[i], i))


def _owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _owner_alive(trial: optuna.trial.FrozenTrial) -> bool:
    owner = trial.user_attrs.get(OWNER)
    if not owner or owner.get("host") != socket.gethostname():
        return True  # not provably dead: its run-directory lock decides
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return owner["pid"] != os.getpid()


def _counts(trial: optuna.trial.FrozenTrial, count_failed: bool) -> bool:
    """Whether ``trial`` is one of the study's ``n_trials``: finished or running, not surplus."""
    if trial.user_attrs.get(SURPLUS):
        return False
    return trial.state in (T.COMPLETE, T.PRUNED, T.RUNNING) or (count_failed and trial.state == T.FAIL)


def _duplicate_point(study: optuna.Study, trial: optuna.trial.Trial) -> bool:
    point = trial.user_attrs.get(POINT)
    return point is not None and any(t.user_attrs.get(POINT) == point and t.number < trial.number
                                     and not t.user_attrs.get(SURPLUS) for t in study.get_trials(deepcopy=False))


def run_worker(exp: Experiment, study: optuna.Study, n_trials: int, *, prune: bool, count_failed: bool = False,
               verbose: int = 0, should_stop: Callable[[int], Any] | None = None,
               on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None,
               reseed: Callable[[int], optuna.samplers.BaseSampler] | None = None,
               population: int | None = 1, log: Callable[[str], None] | None = None,
               until_mismatch: bool = False) -> None:
    """Run trials of ``study`` until it holds ``n_trials`` of them (see the module docstring);
    ``reseed(n)``: a fresh sampler for trial number ``n``. ``population``: trials claimed at once (asked
    together: Optuna's batch ask/tell) and trained as populations of those that differ only in traced
    values (:mod:`fluxnet.runs.population`); None claims up to :data:`AUTO_BATCH` and sizes each
    population by its memory. Stops with a ConfigError when ``n_trials`` trials failed and none
    finished (a space or config no trial can train). ``log`` hears how each population was sized;
    ``until_mismatch``: a batch ends at a trial of another population (:func:`_claim_batch`)."""
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError(f"--trials must be an int >= 1, got {n_trials!r}.")
    if population is not None and (isinstance(population, bool) or not isinstance(population, int) or population < 1):
        raise ConfigError(f"--population must be an int >= 1, got {population!r}.")
    data_cache: dict[str, Any] = {}
    keys: dict[int, Any] = {}
    key_of = lambda number, params: _group_key(exp, number, params, data_cache, keys)  # noqa: E731
    while True:
        with contextlib.ExitStack() as held:
            size = 1 if exp.cv else population or AUTO_BATCH  # a cross-validated trial's folds are its population
            batch = _claim_batch(exp, study, n_trials, count_failed, reseed, held, size,
                                 key_of if until_mismatch else None)
            if not batch:
                return
            _run_batch(exp, study, batch, key_of, prune, verbose, should_stop, data_cache, on_trial, population, log)


AUTO_BATCH = 16  # trials a worker claims at once when --population is not given


def _claim_batch(exp: Experiment, study: optuna.Study, n_trials: int, count_failed: bool, reseed, held,
                 size: int, key_of: Callable | None) -> list[tuple[optuna.trial.Trial, RunLock]]:
    """Up to ``size`` trials this worker claims: orphans (left running by a dead worker) first, then newly
    asked ones, each with its run directory locked (the locks live as long as ``held``). With
    ``key_of``, claiming stops at the first trial that cannot join the first one's population (it is
    kept and trains alone): a sweep queues its points population by population, so a worker holds
    one population at a time and other workers take the next ones."""
    batch: list[tuple[optuna.trial.Trial, RunLock]] = []
    tried: set[int] = set()
    while len(batch) < size:
        trials = study.get_trials(deepcopy=False)
        failed = [t for t in trials if t.state == T.FAIL and not t.user_attrs.get(SURPLUS)]
        if not batch and not count_failed and len(failed) >= n_trials and not any(_counts(t, False) for t in trials):
            raise ConfigError(f"All {len(failed)} trials of {exp.workdir} failed (the last: "
                              f"{failed[-1].user_attrs.get(ERROR)}); fix the space or the config.")
        orphans = [t for t in trials if t.state == T.RUNNING and not t.user_attrs.get(SURPLUS)
                   and t.number not in tried and not _owner_alive(t)]
        if orphans:
            tried.add(orphans[0].number)
            claimed = _claim(exp, optuna.trial.Trial(study, orphans[0]._trial_id), held)
            if claimed is not None:
                batch.append(claimed)
                if key_of is not None and _batch_full(exp, batch, key_of, None):
                    break
                continue
        if sum(_counts(t, count_failed) for t in trials) >= n_trials:
            break
        if reseed is not None:
            study.sampler = reseed(len(trials))  # relative samplers (CMA-ES) draw inside ask()
        trial = study.ask()
        if reseed is not None:
            study.sampler = reseed(trial.number)  # independent draws happen at suggest: keyed on the number
        trial.set_user_attr(OWNER, _owner())
        earlier = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number and _counts(t, count_failed)]
        if len(earlier) >= n_trials or _duplicate_point(study, trial):
            trial.set_user_attr(SURPLUS, True)
            study.tell(trial, state=T.FAIL)
            continue
        claimed = _claim(exp, trial, held)
        if claimed is not None:
            batch.append(claimed)
            if key_of is not None and _batch_full(exp, batch, key_of, _next_waiting(study)):
                break
    return batch


def _batch_full(exp: Experiment, batch: list, key_of: Callable, waiting: optuna.trial.FrozenTrial | None) -> bool:
    """Whether the batch ends here: its newest trial cannot share the first one's population, or the
    next queued trial (the one ``ask`` gives next) could not."""
    first = key_of(batch[0][0].number, spaces.suggest(batch[0][0], exp.space))
    if first is None or key_of(batch[-1][0].number, spaces.suggest(batch[-1][0], exp.space)) != first:
        return True
    return waiting is not None and key_of(waiting.number, waiting.system_attrs.get("fixed_params", {})) != first


def _next_waiting(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    waiting = [t for t in study.get_trials(deepcopy=False, states=(T.WAITING,))]
    return min(waiting, key=lambda t: t.number) if waiting else None


def _claim(exp: Experiment, trial: optuna.trial.Trial, held) -> tuple[optuna.trial.Trial, RunLock] | None:
    """Lock ``trial``'s run directory for this worker; None if another process holds it."""
    lock = held.enter_context(RunLock(exp.trial_dir(trial.number)))
    try:
        lock.acquire()
    except RunLockedError:
        return None
    trial.set_user_attr(OWNER, _owner())
    # the params are drawn now, in trial order, by the sampler reseeded for this trial: a batch's trials
    # are asked before any is told, and drawn later they would all take the last trial's seed
    spaces.suggest(trial, exp.space)
    return trial, lock


def _run_batch(exp: Experiment, study: optuna.Study, batch, key_of: Callable, prune: bool, verbose: int,
               should_stop, data_cache: dict, on_trial, population: int | None, log) -> None:
    """Train the claimed trials -- those that can share a population together, the others one by one --
    and tell the study each outcome. A bug fails the trials it struck (the traceback shows); the
    batch's others stay running, to be resumed."""
    groups: dict[Any, list[int]] = {}
    for i, (trial, _) in enumerate(batch):
        key = key_of(trial.number, spaces.suggest(trial, exp.space))
        groups.setdefault(("alone", i) if key is None else key, []).append(i)
    for members in groups.values():
        claimed = [batch[i] for i in members]
        try:
            if len(claimed) == 1:
                (trial, lock), = claimed
                outcome = run_trial(exp, trial, spaces.suggest(trial, exp.space), prune, lock, verbose, should_stop,
                                    data_cache)
                _tell(exp, study, trial, outcome, on_trial)
            else:
                _run_group(exp, study, claimed, prune, verbose, should_stop, data_cache, on_trial, population, log)
        except TrainingInterrupted:
            raise  # the trials stay running; a rerun resumes them
        except Exception as err:  # a bug: the trials are not retried forever
            for trial, _ in claimed:
                if study._storage.get_trial(trial._trial_id).state == T.RUNNING:
                    trial.set_user_attr(ERROR, f"{type(err).__name__}: {err}")
                    study.tell(trial.number, state=T.FAIL)
            raise


def _group_key(exp: Experiment, number: int, params: dict, data_cache: dict, keys: dict) -> Any:
    """What the trials of one population share: :func:`population_key` and whether trial ``number``
    resumes a checkpoint (fresh and resumed runs train apart); None for a trial that trains alone (with
    ``--cv``, a point the config cannot take, a config a population cannot train)."""
    if number not in keys:
        key = None
        if not exp.cv:
            try:
                config = _point_config(exp, params)
            except ConfigError:
                config = None
            if config is not None and blocker(config) is None:
                resumed = latest_meta(exp.trial_dir(number)) is not None
                key = (population_key(config, len(_data(config, data_cache).train)), resumed)
        keys[number] = key
    return keys[number]


def _run_group(exp: Experiment, study, claimed, prune, verbose, should_stop, data_cache, on_trial,
               population: int | None, log) -> None:
    """Train one group of trials that can share a population (in populations of ``population``, or
    sized by :func:`choose_population`) and tell the study each outcome."""
    params = [spaces.suggest(trial, exp.space) for trial, _ in claimed]
    configs = [_point_config(exp, p) for p in params]
    splits = [_data(c, data_cache) for c in configs]
    size, chosen = population, None
    if len(claimed) > 1 and population is None:
        pool = Pool.of_splits(splits)
        size, why, chosen = choose_population(configs[0], configured_model(configs[0], splits[0].metadata), pool)
        if log is not None:
            log(f"trials {', '.join(str(t.number) for t, _ in claimed)}: {why}.")
    for first in range(0, len(claimed), size or 1):
        part = range(first, min(len(claimed), first + (size or 1)))
        if len(part) == 1:
            (trial, lock), = [claimed[i] for i in part]
            _tell(exp, study, trial, run_trial(exp, trial, params[first], prune, lock, verbose, should_stop,
                                               data_cache), on_trial)
            continue
        group = [claimed[i] for i in part]
        outcomes = train_together(
            [configs[i] for i in part], [exp.trial_dir(t.number) for t, _ in group],
            Pool.of_splits([splits[i] for i in part]), verbose=verbose, should_stop=should_stop,
            callbacks=[[Pruning(t, exp.metric)] if prune else [] for t, _ in group],
            locks=[lock for _, lock in group], population=chosen if len(part) == size else None,
            extras=[{"trial": t.number, "params": params[i]} for (t, _), i in zip(group, part)])
        for (trial, _), outcome in zip(group, outcomes):
            _tell(exp, study, trial, outcome, on_trial)


def _tell(exp: Experiment, study: optuna.Study, trial: optuna.trial.Trial, outcome: TrialOutcome, on_trial) -> None:
    if outcome.state == "complete":
        study.tell(trial.number, outcome.validation[exp.metric])
    elif outcome.state == "pruned":
        study.tell(trial.number, state=T.PRUNED)
    else:
        trial.set_user_attr(ERROR, outcome.error)
        study.tell(trial.number, state=T.FAIL)
    if on_trial is not None:
        on_trial(next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number))


def _point_config(exp: Experiment, params: dict) -> ConfigDict:
    """The config of a point of the space; ConfigError when the config cannot take it."""
    config = spaces.with_params(exp.config, params)
    check_run_config(config)
    if exp.metric not in logged_names(config):
        raise ConfigError(f"this point's config does not log {exp.metric!r} (no validation split?)")
    return config


def _data(config: ConfigDict, data_cache: dict):
    """The prepared splits of ``config``'s data (trials that share the data config and seed share them)."""
    key = json.dumps([to_json(config.data), config.seed], sort_keys=True)
    if key not in data_cache:
        if len(data_cache) >= 4:
            data_cache.clear()
        data_cache[key] = prepare_data(config)[0]
    return data_cache[key]


def run_trial(exp: Experiment, trial: optuna.trial.Trial, params: dict, prune: bool, lock: RunLock, verbose: int,
              should_stop, data_cache: dict) -> TrialOutcome:
    """Train ``trial`` with ``params`` into its run directory (its folds with ``exp.cv``)."""
    workdir, extra = exp.trial_dir(trial.number), {"trial": trial.number, "params": params}
    try:
        config = _point_config(exp, params)
    except ConfigError as err:  # a swept value the config cannot take
        return record_failure(workdir, err, 0.0, extra)
    if exp.cv:
        return cross_validated_trial(config, workdir, exp.cv, extra=extra, should_stop=should_stop)
    callbacks = [Pruning(trial, exp.metric)] if prune else []
    return train_validated(config, workdir, _data(config, data_cache), verbose=verbose, should_stop=should_stop,
                           callbacks=callbacks, lock=lock, extra=extra)
