"""Cross-validation: stratified K folds of train + validation, each fold an ordinary run directory.

The test split is never read. Each fold's preprocessing statistics are fitted on its own training part.
``DIR/folds/<k>/summary.json`` holds the fold's validation metrics; ``DIR/cv.json`` holds every fold's
metrics with their mean and standard deviation (ddof=0), floats at full precision.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from ml_collections import ConfigDict

from fluxnet.data.preprocess import fit_preprocessor
from fluxnet.data.splits import DatasetMetadata, DatasetSplits, Split
from fluxnet.errors import ArgumentError, DataError, FluxnetError, TrainingInterrupted
from fluxnet.files import write_atomic
from fluxnet.runs.build import configured_model, load_splits
from fluxnet.runs.population import Pool, choose_population, population_key
from fluxnet.tree import plain
from fluxnet.tune.trial import TrialOutcome, record, record_failure, train_together, train_validated

CV_FILE = "cv.json"


@dataclasses.dataclass(frozen=True)
class Fold:
    """One fold: ``x`` the pool (train + validation) preprocessed with this fold's training statistics
    (one array shared by every fold when the preprocessing has none), ``y`` its labels, and the fold's
    training and validation rows into them."""

    x: np.ndarray
    y: np.ndarray
    train_rows: np.ndarray
    validation_rows: np.ndarray

    def splits(self, metadata: DatasetMetadata) -> DatasetSplits:
        return DatasetSplits(train=Split(self.x[self.train_rows], self.y[self.train_rows]),
                             validation=Split(self.x[self.validation_rows], self.y[self.validation_rows]),
                             test=None, metadata=metadata)


def folds_of(config: ConfigDict, raw: DatasetSplits, folds: int) -> list[Fold]:
    """``folds`` stratified, seeded (``config.seed``) folds of train + validation, each preprocessed
    with its own training part's statistics; the test split is not read."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ArgumentError(f"--folds must be an int >= 2, got {folds!r}.")
    parts = [s for s in (raw.train, raw.validation) if s is not None]
    images = np.concatenate([s.images for s in parts])
    labels = np.concatenate([s.labels for s in parts])
    smallest = int(np.bincount(labels).min(initial=len(labels)) if len(labels) else 0)
    if smallest < folds:
        raise DataError(f"{folds} stratified folds need at least {folds} examples of every class; the smallest "
                        f"class of train + validation has {smallest}.")
    from sklearn.model_selection import StratifiedKFold  # where used, as elsewhere (~1 s to import)

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.seed)
    out, shared = [], None
    for train_idx, val_idx in splitter.split(np.zeros(len(labels)), labels):
        preprocessor = fit_preprocessor(plain(config.data.preprocess), images[train_idx])
        if preprocessor.mean is None:  # no statistics: every fold sees the same preprocessed pool
            shared = np.asarray(preprocessor(images)) if shared is None else shared
            x = shared
        else:
            x = np.asarray(preprocessor(images))
        out.append(Fold(x, labels, train_idx, val_idx))
    return out


def fold_splits(config: ConfigDict, raw: DatasetSplits, folds: int) -> list[DatasetSplits]:
    """:func:`folds_of` as train/validation splits (no test split)."""
    return [fold.splits(raw.metadata) for fold in folds_of(config, raw, folds)]


def summarize(folds: list[dict[str, float]]) -> dict[str, Any]:
    """``{"folds": [...], "mean": {...}, "std": {...}}`` of the folds' validation metrics."""
    names = sorted(set().union(*folds)) if folds else []
    return {"folds": folds, "mean": {n: float(np.mean([f[n] for f in folds])) for n in names},
            "std": {n: float(np.std([f[n] for f in folds])) for n in names}}


def cross_validated_trial(config: ConfigDict, workdir: Path, folds: int, *, extra: dict,
                          should_stop: Callable[[int], Any] | None = None) -> TrialOutcome:
    """A trial scored by ``folds``-fold cross-validation (its folds in ``workdir/folds/<k>/``): its value
    is the folds' mean; ``summary.json`` adds their standard deviations and each fold's metrics."""
    finished = TrialOutcome.read(workdir)
    if finished is not None:
        return finished
    start = time.perf_counter()
    try:
        cv = cross_validate(config, workdir, folds, verbose=0, should_stop=should_stop)
    except TrainingInterrupted:
        raise
    except FluxnetError as err:  # a fold that fails fails the trial; the experiment goes on
        return record_failure(workdir, err, time.perf_counter() - start, extra)
    epochs = [TrialOutcome.read(workdir / "folds" / str(k)).epochs for k in range(folds)]
    outcome = TrialOutcome("complete", cv["mean"], max(epochs), time.perf_counter() - start)
    return record(workdir, outcome, {"validation_std": cv["std"], "folds": cv["folds"], **extra})


def _groups(config: ConfigDict, pool: Pool, size: int) -> list[list[int]]:
    """The folds in populations of at most ``size``, in order; folds whose epochs have another number of
    steps (sizes straddling a multiple of the batch size) train in a population of their own."""
    by_key: dict[str, list[int]] = {}
    for k, rows in enumerate(pool.train_rows):
        by_key.setdefault(population_key(config, len(rows)), []).append(k)
    return sorted((ks[i:i + size] for ks in by_key.values() for i in range(0, len(ks), size)), key=lambda g: g[0])


def cross_validate(config: ConfigDict, workdir: str | os.PathLike, folds: int, *, verbose: int = 1,
                   should_stop: Callable[[int], Any] | None = None, population: int | None = None) -> dict[str, Any]:
    """Train one run per fold into ``workdir/folds/<k>/`` (resuming finished or interrupted ones) and
    write ``workdir/cv.json``; returns its content. A fold that fails stops the cross-validation.
    ``population``: folds trained together as one population (``runs.population``), P at a time; 1
    trains them one after another; None chooses (:func:`choose_population`) and says what it chose."""
    workdir = Path(workdir)
    raw = load_splits(config)
    fold_list = folds_of(config, raw, folds)
    dirs = [workdir / "folds" / str(k) for k in range(folds)]
    pool = Pool.of_parts([(f.x, f.y, f.train_rows, f.validation_rows) for f in fold_list], raw.metadata)
    chosen = None
    if population is None:
        todo = [k for k in range(folds) if TrialOutcome.read(dirs[k]) is None]
        population, why, chosen = (choose_population(config, configured_model(config, raw.metadata), pool)
                                   if len(todo) > 1 else (1, "", None))
        if verbose and why:
            print(f"cv: {why}.", flush=True)
    elif isinstance(population, bool) or not isinstance(population, int) or population < 1:
        raise ArgumentError(f"--population must be an int >= 1, got {population!r}.")
    outcomes: dict[int, TrialOutcome] = {}
    first_key = population_key(config, len(pool.train_rows[0]))
    for group in _groups(config, pool, population):
        if len(group) == 1:
            outcomes[group[0]] = train_validated(config, dirs[group[0]], pool.splits(group[0]),
                                                 should_stop=should_stop)
        else:  # the measured population was built for fold 0's epoch length (its schedule's span)
            same = population_key(config, len(pool.train_rows[group[0]])) == first_key
            sub = Pool(pool.x, pool.y, [pool.train_rows[k] for k in group],
                       [pool.validation_rows[k] for k in group], pool.metadata)
            outcomes.update(zip(group, train_together([config] * len(group), [dirs[k] for k in group], sub,
                                                      should_stop=should_stop, population=chosen if same else None)))
        for k in group:
            if outcomes[k].state != "complete":
                raise DataError(f"Fold {k} of {workdir} did not complete: {outcomes[k].error}")
    scores = [outcomes[k].validation for k in range(folds)]
    if verbose:
        for k, score in enumerate(scores):
            print(f"fold {k}: " + " - ".join(f"{n}: {v:.4f}" for n, v in sorted(score.items())))
    result = summarize(scores)
    workdir.mkdir(parents=True, exist_ok=True)
    write_atomic(workdir / CV_FILE, json.dumps(result, indent=1))
    return result
