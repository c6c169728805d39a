"""One trial (or fold) of an experiment: an ordinary run directory trained and scored on validation.

Selection never reads the test split: ``summary.json`` of a trial holds validation metrics, baselines
scored on validation and no ``test`` key. It is written last and atomically, so a trial is finished
once it exists, and a finished trial's files are never rewritten. A trial whose training fails (a NaN
loss, a bad value of a swept key) is recorded as failed with its error; an interrupted one (a signal,
a kill) resumes from its checkpoint when its experiment is run again.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ml_collections import ConfigDict

from fluxnet.errors import FluxnetError, TrainingInterrupted
from fluxnet.files import write_atomic
from fluxnet.runs.baselines import baselines
from fluxnet.runs.build import configured_model
from fluxnet.runs.fit import FitResult, fit_run
from fluxnet.runs.lock import RunLock
from fluxnet.runs.population import Pool, fit_population
from fluxnet.runs.report import git_revision, versions
from fluxnet.runs.workdir import SUMMARY_FILE
from fluxnet.train import Callback, Population


@dataclasses.dataclass(frozen=True)
class TrialOutcome:
    """``state``: complete, pruned or failed; ``validation``: the final state's ``val_*`` metrics."""

    state: str
    validation: dict[str, float]
    epochs: int
    seconds: float
    error: str | None = None

    @classmethod
    def read(cls, workdir: Path) -> "TrialOutcome | None":
        """The outcome a finished trial recorded, or None if it has not finished."""
        path = workdir / SUMMARY_FILE
        if not path.is_file():
            return None
        s = json.loads(path.read_text())
        return cls(s["state"], s.get("validation", {}), s.get("epochs_completed", 0), s.get("seconds", 0.0),
                   s.get("error"))


class Pruning(Callback):
    """Reports a validation metric to an Optuna trial after every epoch and stops training when the
    study's pruner says so (the trial is then recorded as pruned, its run directory kept)."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric, self.pruned = trial, metric, False

    def get_state(self) -> dict:  # saved with each checkpoint: a resumed pruned trial is still pruned
        return {"pruned": self.pruned}

    def set_state(self, state: dict) -> None:
        self.pruned = bool(state.get("pruned", False))

    def on_epoch_end(self, epoch, logs, state):
        if self.metric in logs:
            self.trial.report(float(logs[self.metric]), epoch)
            if self.trial.should_prune():
                self.pruned = True
                return True
        return None


def record(workdir: Path, outcome: TrialOutcome, fields: dict) -> TrialOutcome:
    """Write a finished trial's ``summary.json`` (last, atomically): its outcome and ``fields``."""
    workdir.mkdir(parents=True, exist_ok=True)
    summary = {"state": outcome.state, "validation": outcome.validation, "epochs_completed": outcome.epochs,
               "seconds": outcome.seconds, **({"error": outcome.error} if outcome.error else {}), **fields}
    write_atomic(workdir / SUMMARY_FILE, json.dumps(summary, indent=1))
    return outcome


def record_failure(workdir: Path, err: Exception, seconds: float, extra: dict | None = None) -> TrialOutcome:
    """Record a trial whose config or training failed, with its error (it is not run again)."""
    return record(workdir, TrialOutcome("failed", {}, 0, seconds, f"{type(err).__name__}: {err}"), extra or {})


def train_validated(config: ConfigDict, workdir: str | os.PathLike, splits: Any, *, verbose: int = 0,
                    should_stop: Callable[[int], Any] | None = None, callbacks: Sequence[Callback] = (),
                    lock: RunLock | None = None, extra: dict | None = None) -> TrialOutcome:
    """Train (or resume, or read back) the run in ``workdir`` on ``splits`` (train and validation; its
    test split is never read) and record its outcome in ``summary.json``."""
    workdir = Path(workdir)
    finished = TrialOutcome.read(workdir)
    if finished is not None:
        return finished
    start = time.perf_counter()
    try:
        model = configured_model(config, splits.metadata)
        fit = fit_run(config, workdir, model, splits, verbose=verbose, should_stop=should_stop, callbacks=callbacks,
                      lock=lock)
    except TrainingInterrupted:
        raise
    except FluxnetError as err:
        return record_failure(workdir, err, time.perf_counter() - start, extra)
    return record_fit(config, workdir, fit, splits, time.perf_counter() - start, callbacks, extra or {})


def train_together(configs: Sequence[ConfigDict], workdirs: Sequence[Path], pool: Pool, *, verbose: int = 0,
                   should_stop: Callable[[int], Any] | None = None,
                   callbacks: Sequence[Sequence[Callback]] | None = None, locks: Sequence[RunLock | None] | None = None,
                   extras: Sequence[dict] | None = None, population: Population | None = None) -> list[TrialOutcome]:
    """:func:`train_validated` of several runs at once, as one population (``runs.population``) on
    ``pool``'s rows: each still gets its own run directory and ``summary.json`` (``seconds``: its share
    of the population's time). Finished runs are read back; a run that fails is recorded as failed
    while the others go on (a config or data error before training fails them all). ``population``:
    the one ``runs.population.choose_population`` measured (its step compiled), else one is built."""
    workdirs = [Path(w) for w in workdirs]
    extras = list(extras) if extras is not None else [{} for _ in configs]
    callbacks = list(callbacks) if callbacks is not None else [() for _ in configs]
    outcomes: list[TrialOutcome | None] = [TrialOutcome.read(w) for w in workdirs]
    todo = [i for i, o in enumerate(outcomes) if o is None]
    if not todo:
        return outcomes
    start = time.perf_counter()
    pick = lambda seq: [seq[i] for i in todo]  # noqa: E731
    sub = Pool(pool.x, pool.y, pick(pool.train_rows), pick(pool.validation_rows), pool.metadata)
    try:
        model = population.trainer.model if population is not None else configured_model(configs[todo[0]],
                                                                                        pool.metadata)
        fits = fit_population(pick(configs), pick(workdirs), model, sub, verbose=verbose, should_stop=should_stop,
                              callbacks=pick(callbacks), locks=pick(locks) if locks is not None else None,
                              population=population)
    except TrainingInterrupted:
        raise
    except FluxnetError as err:
        fits = [err] * len(todo)
    seconds = (time.perf_counter() - start) / len(todo)
    for j, (i, fit) in enumerate(zip(todo, fits)):
        extra = {**extras[i], "population": {"size": len(todo), "member": j}}
        if isinstance(fit, Exception):
            outcomes[i] = record_failure(workdirs[i], fit, seconds, extra)
        else:
            outcomes[i] = record_fit(configs[i], workdirs[i], fit, sub.splits(j), seconds, callbacks[i], extra)
    return outcomes


def record_fit(config: ConfigDict, workdir: Path, fit: FitResult, splits: Any, seconds: float,
               callbacks: Sequence[Callback], extra: dict) -> TrialOutcome:
    """Record a trained run: its validation metrics, epochs, history, baselines scored on validation."""
    pruned = any(getattr(cb, "pruned", False) for cb in callbacks)
    outcome = TrialOutcome("pruned" if pruned else "complete", fit.validation, int(fit.state.epoch), seconds)
    train, validation = splits.train, splits.validation
    fields = {"baseline": baselines(train.images, train.labels, validation.images, validation.labels, seed=config.seed),
              "steps": int(fit.state.step), "history": fit.history.history,
              "data": {"name": splits.metadata.name, "train": len(train), "validation": len(validation)},
              "versions": versions(), "git_revision": git_revision(), **extra}
    return record(workdir, outcome, fields)
