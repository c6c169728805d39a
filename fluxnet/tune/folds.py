"""Cross-validation: stratified K folds of train + validation, each fold an ordinary run directory.

The test split is never read. Each fold's preprocessing statistics are fitted on its own training part.
``DIR/folds/<k>/summary.json`` holds the fold's validation metrics; ``DIR/cv.json`` holds every fold's
metrics with their mean and standard deviation (ddof=0), floats at full precision.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from ml_collections import ConfigDict
from sklearn.model_selection import StratifiedKFold

from fluxnet.data.splits import DatasetSplits, Split
from fluxnet.errors import ArgumentError, DataError, FluxnetError, TrainingInterrupted
from fluxnet.files import write_atomic
from fluxnet.runs.build import load_splits, preprocess
from fluxnet.tune.trial import TrialOutcome, record, record_failure, train_validated

CV_FILE = "cv.json"


def fold_splits(config: ConfigDict, raw: DatasetSplits, folds: int) -> list[DatasetSplits]:
    """``folds`` stratified, seeded (``config.seed``) train/validation splits of train + validation,
    each preprocessed with its own training part's statistics; no test split."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ArgumentError(f"--folds must be an int >= 2, got {folds!r}.")
    parts = [s for s in (raw.train, raw.validation) if s is not None]
    images = np.concatenate([s.images for s in parts])
    labels = np.concatenate([s.labels for s in parts])
    smallest = int(np.bincount(labels).min(initial=len(labels)) if len(labels) else 0)
    if smallest < folds:
        raise DataError(f"{folds} stratified folds need at least {folds} examples of every class; the smallest "
                        f"class of train + validation has {smallest}.")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.seed)
    out = []
    for train_idx, val_idx in splitter.split(np.zeros(len(labels)), labels):
        fold = DatasetSplits(train=Split(images[train_idx], labels[train_idx]),
                             validation=Split(images[val_idx], labels[val_idx]), test=None, metadata=raw.metadata)
        out.append(preprocess(config, fold)[0])
    return out


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


def cross_validate(config: ConfigDict, workdir: str | os.PathLike, folds: int, *, verbose: int = 1,
                   should_stop: Callable[[int], Any] | None = None) -> dict[str, Any]:
    """Train one run per fold into ``workdir/folds/<k>/`` (resuming finished or interrupted ones) and
    write ``workdir/cv.json``; returns its content. A fold that fails stops the cross-validation."""
    workdir = Path(workdir)
    scores = []
    for k, splits in enumerate(fold_splits(config, load_splits(config), folds)):
        outcome = train_validated(config, workdir / "folds" / str(k), splits, should_stop=should_stop)
        if outcome.state != "complete":
            raise DataError(f"Fold {k} of {workdir} did not complete: {outcome.error}")
        scores.append(outcome.validation)
        if verbose:
            print(f"fold {k}: " + " - ".join(f"{n}: {v:.4f}" for n, v in sorted(outcome.validation.items())))
    result = summarize(scores)
    workdir.mkdir(parents=True, exist_ok=True)
    write_atomic(workdir / CV_FILE, json.dumps(result, indent=1))
    return result
