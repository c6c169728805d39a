"""Training a run into its workdir: config + splits -> state, history and validation metrics.

:func:`fit_run` is the step every job and (later) every trial and fold shares. It reads the training and
validation splits only -- never the test split, which belongs to the report -- so a search or a
cross-validation built on it cannot peek at test data. It resumes from the workdir's latest checkpoint
(bit-identical to an uninterrupted run), and everything that can fail before training (the config,
the checkpoint's fit to the model) is checked before the workdir is written.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from ml_collections import ConfigDict

from fluxnet.data.streaming import Stream
from fluxnet.errors import CheckpointError, DataError, TrainingInterrupted
from fluxnet.files import write_atomic
from fluxnet.models import Model
from fluxnet.runs.build import build_callbacks, build_trainer, steps_per_epoch
from fluxnet.runs.config import save_config, to_json
from fluxnet.runs.lock import RunLock
from fluxnet.runs.schema import check_run_config
from fluxnet.runs.workdir import (CHECKPOINT_DIR, CONFIG_FILE, DAMAGED_DIR, MODEL_FILE, check_workdir,
                                  open_checkpoints, restore, restore_newest)
from fluxnet.train import Callback, History, Trainer
from fluxnet.train.faults import CrashPoint
from fluxnet.train.state import TrainState
from fluxnet.tree import plain


@dataclasses.dataclass
class FitResult:
    """What training a run gives: the final state (as ``Trainer.fit`` returned it), its history, and
    ``validation``: the final state's ``val_*`` metrics (empty without a validation split)."""

    trainer: Trainer
    state: TrainState
    history: History
    validation: dict[str, float]


def data_fingerprint(splits: Any) -> str:
    """A digest of the training and validation examples (shapes, dtypes, bytes; of a streamed split its
    source's files, rows and preprocessing, ``Stream.fingerprint``): a resumed run must see the same data
    it was trained on."""
    digest = hashlib.blake2b(digest_size=16)
    for split in (splits.train, splits.validation):
        if isinstance(split, Stream):
            digest.update(split.fingerprint().encode())
            continue
        for array in (split if split is not None else ()):
            array = np.ascontiguousarray(array)
            digest.update(repr((array.shape, array.dtype.str)).encode())
            digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def fit_run(config: ConfigDict, workdir: str | os.PathLike, model: Model, splits: Any, *, verbose: int = 1,
            optimizer: Any = None, init_variables: Mapping | None = None,
            param_groups: Mapping[str, str] | None = None, lock: RunLock | None = None,
            crash_at: CrashPoint | None = None, should_stop: Callable[[int], Any] | None = None,
            callbacks: Sequence[Callback] = ()) -> FitResult:
    """Train ``model`` on ``splits.train`` (validating on ``splits.validation``) into ``workdir``,
    resuming from its newest checkpoint that restores. ``optimizer``/``param_groups`` replace the
    configured optimizer (per-group transforms), ``init_variables`` the model's initial variables (a
    pretrained backbone). The config, the data and the fit's arguments are checked before the workdir
    is touched; the workdir's ``lock`` (its own if none is given) is held from the first write on.
    ``should_stop(step)`` ends training early (``TrainingInterrupted``: a signal); ``callbacks`` join
    the run's own (e.g. a search's pruning); ``crash_at`` is the resume tests' kill hook."""
    workdir = Path(workdir)
    check_run_config(config)
    train, validation = splits.train, splits.validation
    trainer = build_trainer(config, model, steps_per_epoch(config, train), optimizer, param_groups)
    fit_args = {"batch_size": config.train.batch_size, "validation_data": validation,
                "class_weight": plain(config.train.class_weight), "oversample": config.train.oversample}
    trainer.check_fit(train, config.train.epochs, **fit_args)
    fingerprint = data_fingerprint(splits)
    state = trainer.init(jax.random.key(config.seed))
    if init_variables is not None:
        state = trainer.with_variables(state, init_variables)
    with lock or RunLock(workdir) as lock:
        lock.acquire()
        # every process of a multi-process job sees the folder, so all take the same (collective) orbax paths
        (workdir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        notes = check_workdir(config, workdir)  # again, now that no other process can change the workdir
        found = restore_run(config, trainer, model, workdir, fingerprint, verbose)
        state, resume = found or (state, None)
        for note in notes:
            print(note, file=sys.stderr)
        checkpointer, run_callbacks = open_run(config, workdir, model, fingerprint, int(state.epoch), crash_at)
        remaining = 0 if (resume or {}).get("stopped") else max(0, config.train.epochs - int(state.epoch))
        try:
            state, history = trainer.fit(state, train, epochs=remaining, verbose=verbose,
                                         callbacks=[*run_callbacks, *callbacks],
                                         seed=config.seed, checkpointer=checkpointer, resume=resume,
                                         crash_at=crash_at, should_stop=should_stop, **fit_args)
        except TrainingInterrupted as err:
            raise interrupted_note(err, [(workdir, checkpointer)]) from None
        finally:
            checkpointer.close()
    scores = trainer.evaluate(state, validation, batch_size=256) if validation is not None else {}
    return FitResult(trainer, state, history, {f"val_{k}": v for k, v in scores.items()})


def restore_run(config: ConfigDict, trainer: Trainer, model: Model, workdir: Path, fingerprint: str,
                verbose: int) -> tuple[TrainState, dict] | None:
    """``(state, meta)`` of the workdir's newest checkpoint that restores, checked to be of this
    architecture and data; None without one. Damaged checkpoints are set aside."""
    if not (workdir / CHECKPOINT_DIR).is_dir():
        return None
    reader = open_checkpoints(config, workdir)
    try:
        found = restore_newest(reader, lambda s: restore(trainer, reader, s), set_aside=workdir / DAMAGED_DIR)
    finally:
        reader.close()
    if found is not None:
        _check_resumable(workdir, found[1], model, fingerprint)
        if verbose:
            print(f"Resuming {workdir} from epoch {int(found[0].epoch)}.")
    return found


def open_run(config: ConfigDict, workdir: Path, model: Model, fingerprint: str, epoch: int,
             crash_at: CrashPoint | None = None) -> tuple[Any, list[Callback]]:
    """Write the run's ``config.json`` and ``model.json`` and open what training writes: its
    checkpointer and callbacks (``metrics.jsonl`` cut back to ``epoch``, the epoch it resumes from)."""
    checkpointer = open_checkpoints(config, workdir, read_only=False, crash_at=crash_at,
                                    meta={"model_config": model.get_config(), "config": to_json(config),
                                          "data_fingerprint": fingerprint})
    save_config(config, workdir / CONFIG_FILE)
    write_atomic(workdir / MODEL_FILE, json.dumps(model.get_config(), indent=1))
    run_callbacks = build_callbacks(config, workdir)
    run_callbacks[0].truncate(epoch)  # metrics.jsonl: records after the checkpoint are redone
    return checkpointer, run_callbacks


def interrupted_note(err: TrainingInterrupted, runs: Sequence[tuple[Path, Any]]) -> TrainingInterrupted:
    """``err`` with what each ``(workdir, checkpointer)`` saved, and how to resume."""
    saved = [f"{workdir} is saved at epoch {latest}" for workdir, checkpointer in runs
             if (latest := checkpointer.latest_step())]
    text = f"{'; '.join(saved)}: run the same command to resume." if saved else "Nothing was saved yet."
    return TrainingInterrupted(f"{err} {text}", exit_code=err.exit_code)


def _check_resumable(workdir: Path, meta: Mapping, model: Model, fingerprint: str) -> None:
    """Refuse to continue a checkpoint of another architecture or on other data."""
    if meta.get("model_config") not in (None, model.get_config()):
        raise CheckpointError(f"The checkpoint of {workdir} records another architecture than the config builds "
                              "(the model code changed?); nothing was changed. Use another --workdir.")
    if meta.get("data_fingerprint") not in (None, fingerprint):
        raise DataError(f"The data of the run in {workdir} changed since it was trained (fingerprint "
                        f"{meta['data_fingerprint']}, now {fingerprint}: files added, removed or edited?); "
                        "nothing was changed. Restore the data, or use another --workdir.")
