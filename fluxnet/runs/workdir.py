"""Run directories: what a workdir holds, whether a config may continue it, and reading a run back.

A workdir holds ``config.json`` (the resolved config), ``model.json`` (the architecture),
``checkpoints/`` (orbax, one step per saved epoch), ``metrics.jsonl``, ``tensorboard/``, plots,
``summary.json`` and ``.lock`` (:mod:`fluxnet.runs.lock`). Only a larger ``train.epochs`` may differ
between the saved config and the one that continues it. Reading a run (:func:`load_run`,
:func:`evaluate_run`) writes nothing and takes no lock.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, TypeVar

import jax
from ml_collections import ConfigDict

from fluxnet.errors import ArgumentError, CheckpointError, ConfigMismatchError, NotFoundError
from fluxnet.models import Model, model_from_config
from fluxnet.runs.build import build_trainer, checkpoint_monitor, early_stopping, prepare_data, schedule_name
from fluxnet.runs.config import MISSING, config_diff, load_saved_config
from fluxnet.train import Trainer
from fluxnet.train.trainer import restore_callbacks
from fluxnet.train.checkpoint import Checkpointer
from fluxnet.train.faults import CrashPoint
from fluxnet.train.state import TrainState
from fluxnet.tree import plain

CONFIG_FILE, MODEL_FILE, SUMMARY_FILE, CHECKPOINT_DIR = "config.json", "model.json", "summary.json", "checkpoints"
SPLITS = ("train", "validation", "test")
DAMAGED_DIR = "damaged_checkpoints"  # where a damaged checkpoint is set aside
T = TypeVar("T")


def latest_meta(workdir: Path) -> dict | None:
    """The ``meta`` of the newest checkpoint whose meta reads, or None when the workdir has no checkpoint
    (a damaged checkpoint is skipped here; :func:`restore_newest` sets it aside)."""
    if not (workdir / CHECKPOINT_DIR).is_dir():
        return None
    checkpointer = Checkpointer(workdir / CHECKPOINT_DIR, monitor=None, read_only=True)
    try:
        for step in sorted(checkpointer.all_steps(), reverse=True):
            try:
                return checkpointer.read_meta(step)
            except Exception:  # noqa: BLE001 -- orbax/tensorstore/JSON errors of a damaged checkpoint
                continue
        return None
    finally:
        checkpointer.close()


def saved_config(workdir: Path, meta: Mapping | None) -> ConfigDict:
    """The run's config as its checkpoint records it (``config.json`` for checkpoints without one)."""
    if meta is not None and "config" in meta:
        return ConfigDict(meta["config"])
    return load_saved_config(workdir / CONFIG_FILE)


def check_workdir(config: ConfigDict, workdir: Path) -> list[str]:
    """Refuse a workdir that holds a run of another config: only a ``train.epochs`` at least the epochs
    already trained may differ, and keys the saved config does not have at all (settings added to
    fluxnet or to the config file after the run began) are accepted. A workdir without a checkpoint (a
    first attempt that failed before its first epoch was saved) holds no run to protect. The config
    compared is the one the checkpoint recorded, so an edited or deleted ``config.json`` cannot switch
    the check off. Returns the notes a continued run should print (added keys, a stretched schedule)."""
    meta = latest_meta(workdir)
    if meta is None:
        return []
    saved = saved_config(workdir, meta)
    diff = config_diff(saved, config, ignore=("train.epochs",))
    changed = [d for d in diff if d[1] is not MISSING]
    if changed:
        lines = "\n  ".join(f"{k}: {old!r} (saved) -> {new!r}" for k, old, new in changed)
        raise ConfigMismatchError(
            f"{workdir} holds a run with a different config; nothing was changed. Differing keys:\n  "
            f"{lines}\nUse another --workdir, or the saved config (only train.epochs may grow).")
    if config.train.epochs < meta["epoch"]:
        raise ConfigMismatchError(
            f"{workdir} holds a run of {meta['epoch']} trained epochs, more than train.epochs="
            f"{config.train.epochs}; nothing was changed. Evaluate it (fluxnet evaluate), continue it with "
            f"train.epochs >= {meta['epoch']}, or use another --workdir.")
    added = [(k, new) for k, old, new in diff if old is MISSING]  # settings fluxnet gained after the run began
    notes = [f"Note: the run in {workdir} predates the config key(s) "
             f"{', '.join(f'{k} (now {new!r})' for k, new in added)}; it continues with those values."] if added else []
    schedule, name = plain(config.optimizer.get("schedule")), schedule_name(config)
    if saved.train.epochs != config.train.epochs and name in ("cosine", "warmup_cosine") \
            and not (isinstance(schedule, Mapping) and schedule.get("decay_steps")):
        notes.append(f"Note: train.epochs changed, so the {name!r} learning-rate schedule now spans "
                     f"{config.train.epochs} epochs from here on, and the result will differ from a run started "
                     f"with train.epochs={config.train.epochs} (a constant schedule, or a fixed decay_steps, "
                     "would not).")
    return notes


def open_checkpoints(config: ConfigDict, workdir: Path, *, read_only: bool = True, meta: Mapping | None = None,
                     crash_at: CrashPoint | None = None) -> Checkpointer:
    """The run's checkpoints, ranked by ``train.checkpoint.monitor``."""
    return Checkpointer(workdir / CHECKPOINT_DIR, keep=plain(config.train.checkpoint).get("keep", 2),
                        monitor=checkpoint_monitor(config), meta=meta, read_only=read_only, crash_at=crash_at)


def restore(trainer: Trainer, checkpointer: Checkpointer, step: int) -> tuple[TrainState, dict]:
    """``(state, meta)`` of checkpoint ``step``, with the callbacks' arrays in ``meta["arrays"]``."""
    state, meta, arrays = checkpointer.restore(step, trainer.abstract_state(),
                                               fresh=lambda: trainer.init(jax.random.key(0)))
    return state, {**meta, "arrays": arrays}


def restore_step(checkpointer: Checkpointer, restore_fn: Callable[[int], T], step: int, *,
                 set_aside: Path | None = None) -> T | None:
    """``restore_fn(step)``, or None when checkpoint ``step`` is damaged (unreadable, truncated): a note
    on stderr says so and, with ``set_aside``, the checkpoint is moved into that folder (never deleted).
    A checkpoint that does not fit the model raises CheckpointError."""
    try:
        return restore_fn(step)
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 -- orbax/tensorstore/JSON errors of a damaged checkpoint
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0].split(" See full")[0][:200]
        where = ""
        if set_aside is not None:
            set_aside.mkdir(parents=True, exist_ok=True)
            target = set_aside / f"{step}-{time.strftime('%Y%m%dT%H%M%S')}"
            os.replace(Path(checkpointer.directory) / str(step), target)
            where = f"; moved to {target}"
        print(f"Note: checkpoint {step} in {checkpointer.directory} is damaged and was skipped "
              f"({type(err).__name__}: {reason}){where}.", file=sys.stderr)
        return None


def restore_newest(checkpointer: Checkpointer, restore_fn: Callable[[int], T], *,
                   set_aside: Path | None = None) -> T | None:
    """:func:`restore_step` of the newest checkpoint that restores, or None when none does."""
    for step in sorted(checkpointer.all_steps(), reverse=True):
        found = restore_step(checkpointer, restore_fn, step, set_aside=set_aside)
        if found is not None:
            return found
    return None


def _restore_run(workdir: Path, best: bool) -> tuple[ConfigDict, Model, Trainer, TrainState]:
    """The run's config, model, an evaluation Trainer and the state to report: the best checkpoint's,
    or the latest's (for a finished run, as ``fit`` returned it: EarlyStopping's best weights). The
    config and architecture are the checkpoint's own; an edited ``model.json`` is refused."""
    if not (workdir / CHECKPOINT_DIR).is_dir():
        raise NotFoundError(f"{workdir} has no {CHECKPOINT_DIR}/ to load.")
    meta = latest_meta(workdir)
    if meta is None:
        raise NotFoundError(f"{workdir} has no checkpoint to load.")
    config = saved_config(workdir, meta)
    written = _read_model_json(workdir)
    model_config = meta.get("model_config") or written
    if written is not None and written != model_config:
        raise CheckpointError(f"{workdir / MODEL_FILE} differs from the architecture its checkpoints record; "
                              "it was edited or replaced. Restore it (or delete it: the checkpoints suffice).")
    model = model_from_config(model_config)
    trainer = build_trainer(config, model, steps=1)
    checkpointer = open_checkpoints(config, workdir)
    try:
        best_step = checkpointer.best_step() if best else None
        if best and best_step is None:
            raise NotFoundError(f"{workdir} has no best checkpoint to load.")

        def read(step: int):
            return step, checkpointer.restore_variables(step, model.abstract_variables())

        found = restore_step(checkpointer, read, best_step) if best else restore_newest(checkpointer, read)
    finally:
        checkpointer.close()
    if found is None:
        raise NotFoundError(f"{workdir} has no {'best ' if best else ''}checkpoint that restores.")
    _, (variables, meta, arrays) = found
    state = trainer.with_variables(trainer.init(jax.random.key(0)), variables)  # evaluation needs no optimizer
    if not best and (meta.get("stopped") or meta["epoch"] >= config.train.epochs):
        callbacks = [cb for cb in (early_stopping(config),) if cb is not None]
        restore_callbacks(callbacks, {**meta, "arrays": arrays})
        state = trainer.final_state(state, callbacks)
    return config, model, trainer, state


def _read_model_json(workdir: Path) -> dict | None:
    """``model.json`` (None if absent); a damaged one is refused by name."""
    if not (workdir / MODEL_FILE).exists():
        return None
    try:
        return json.loads((workdir / MODEL_FILE).read_text())
    except ValueError as err:
        raise CheckpointError(f"{workdir / MODEL_FILE} is damaged ({err}); delete it: the checkpoints record the "
                              "architecture too.") from None


def load_run(workdir: str | os.PathLike, best: bool = False) -> tuple[Model, dict]:
    """``(model, variables)`` of a run directory: the recorded architecture with the latest checkpoint's
    variables (those ``summary.json``'s ``test`` reports; for a finished run with EarlyStopping's
    ``restore_best_weights``, its best weights), or with ``best=True`` the best checkpoint's by
    ``train.checkpoint.monitor`` (``summary.json``'s ``best_checkpoint``)."""
    _, model, _, state = _restore_run(Path(workdir), best)
    return model, jax.device_get(state.variables)


def evaluate_run(workdir: str | os.PathLike, split: str = "test", best: bool = False) -> dict[str, float]:
    """``fluxnet evaluate``: a run's checkpoint on one split of its configured data."""
    if split not in SPLITS:
        raise ArgumentError(f"Split {split!r} is not a run split; choose one of {', '.join(SPLITS)}.")
    config, _, trainer, state = _restore_run(Path(workdir), best)
    data = getattr(prepare_data(config, allow_streaming=True)[0], split)
    if data is None:
        raise ArgumentError(f"This run's data has no {split} split.")
    return trainer.evaluate(state, data)
