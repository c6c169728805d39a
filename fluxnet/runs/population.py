"""Run directories trained together as one population (``fluxnet.train.population``): the population
counterpart of :func:`fluxnet.runs.fit.fit_run`.

Each member is an ordinary run directory -- ``config.json``, ``model.json``, ``metrics.jsonl``,
TensorBoard logs, a checkpoint per epoch -- that ``fit_run`` could continue, and that a population
resumes: every member restores its newest checkpoint and trains its own next epochs (members may be
at different epochs: a kill between two members' saves), so a killed population continues
bit-exactly. A population is an execution strategy, not a different result:
each member trains on exactly its own rows with its own seed, and only the batched kernels round
differently from a member trained alone.

Members differ in what the program takes as values: their seed, their data rows (a fold), and the
numeric hyperparameters in :data:`TRACED` (``optimizer.learning_rate``, ``optimizer.weight_decay``).
Everything else -- shapes, code, epochs, batch size -- must be equal: :func:`population_key`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np
from ml_collections import ConfigDict

from fluxnet import optimizers
from fluxnet.data.splits import DatasetMetadata, DatasetSplits, Split
from fluxnet.errors import ArgumentError, TrainingInterrupted
from fluxnet.models import Model
from fluxnet.data import num_batches
from fluxnet.runs.build import build_trainer, schedule_name, steps_per_epoch
from fluxnet.runs.config import to_json
from fluxnet.runs.fit import FitResult, data_fingerprint, interrupted_note, open_run, restore_run
from fluxnet.runs.lock import RunLock
from fluxnet.runs.schema import check_run_config
from fluxnet.runs.workdir import check_workdir
from fluxnet.train import Callback, Trainer, lr_scale
from fluxnet.train.population import Member, Population, stack
from fluxnet.train.state import TrainState
from fluxnet.tree import plain

TRACED = ("optimizer.learning_rate", "optimizer.weight_decay")  # member values, not compiled in
# schedules whose rate is the configured one times a function of the step (a member's rate scales it)
LINEAR_SCHEDULES = ("constant", "cosine", "exponential")


@dataclasses.dataclass(frozen=True)
class Pool:
    """A population's data: arrays stored once (``x``, ``y``) and each member's training and
    validation rows into them."""

    x: np.ndarray
    y: np.ndarray
    train_rows: list[np.ndarray]
    validation_rows: list[np.ndarray]
    metadata: DatasetMetadata

    @classmethod
    def of_parts(cls, parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                 metadata: DatasetMetadata) -> "Pool":
        """From each member's ``(x, y, train_rows, validation_rows)``; members whose ``x`` is the same
        array (folds of one preprocessed pool) share its rows."""
        offsets: dict[int, int] = {}
        xs, ys, train, validation = [], [], [], []
        for x, y, tr, va in parts:
            if id(x) not in offsets:
                offsets[id(x)] = sum(len(a) for a in xs)
                xs.append(x)
                ys.append(y)
            train.append(offsets[id(x)] + np.asarray(tr))
            validation.append(offsets[id(x)] + np.asarray(va))
        x = xs[0] if len(xs) == 1 else np.concatenate(xs)
        y = ys[0] if len(ys) == 1 else np.concatenate(ys)
        return cls(x, y, train, validation, metadata)

    @classmethod
    def of_splits(cls, splits: Sequence[DatasetSplits]) -> "Pool":
        """Members trained on whole splits (``splits[i]``; the same object for members sharing data)."""
        joined: dict[int, tuple] = {}
        for s in splits:
            if id(s) not in joined:
                n = len(s.train)
                joined[id(s)] = (np.concatenate([s.train.images, s.validation.images]),
                                 np.concatenate([s.train.labels, s.validation.labels]),
                                 np.arange(n), n + np.arange(len(s.validation)))
        return cls.of_parts([joined[id(s)] for s in splits], splits[0].metadata)

    def splits(self, i: int) -> DatasetSplits:
        """Member ``i``'s training and validation splits (copies of its rows), no test split."""
        tr, va = self.train_rows[i], self.validation_rows[i]
        return DatasetSplits(train=Split(self.x[tr], self.y[tr]), validation=Split(self.x[va], self.y[va]),
                             test=None, metadata=self.metadata)


def blocker(config: ConfigDict) -> str | None:
    """Why ``config``'s runs cannot train as members of a population, or None when they can."""
    t = config.train
    if plain(t.class_weight) is not None:
        return "train.class_weight is set (populations do not weigh examples yet)"
    if t.oversample:
        return "train.oversample is on (each member would draw its own epoch length)"
    if t.get("parallel", "sharding") != "sharding":
        return f"train.parallel={t.parallel!r} (a population vmaps its members on one device)"
    return None


def traced_values(config: ConfigDict) -> dict[str, Any]:
    """The :data:`TRACED` values of ``config`` that a member may take as values: the learning rate
    where the schedule scales with it, the weight decay where it is set."""
    opt = config.optimizer
    out = {}
    if schedule_name(config) in LINEAR_SCHEDULES:
        out["optimizer.learning_rate"] = opt.get("learning_rate")
    if opt.get("weight_decay"):  # 0 or None: no decay step in the optimizer at all
        out["optimizer.weight_decay"] = opt.weight_decay
    return out


def population_key(config: ConfigDict, train_rows: int) -> str:
    """Runs with equal keys can be members of one population: their configs are equal apart from the
    seed and :func:`traced_values`, and their epochs have the same number of steps."""
    flat = to_json(config)
    flat.pop("seed", None)
    for key in traced_values(config):
        group, name = key.split(".")
        flat[group] = {k: v for k, v in flat[group].items() if k != name}
    steps = num_batches(train_rows, config.train.batch_size, drop_remainder=False)
    return json.dumps([flat, steps], sort_keys=True, default=str)


def choose_population(config: ConfigDict, model: Model, pool: Pool,
                      memory_share: float = 0.5) -> tuple[int, str, Population | None]:
    """How many of ``pool``'s members to train at once, why, and the Population to train them with
    (its step compiled; None for 1). All of them where their compiled step fits in ``memory_share`` of
    the device's free memory (XLA's memory analysis), else as many as fit. On a CPU, a model with
    convolutions is measured first (XLA:CPU lowers a vmapped convolution to a grouped one, which can
    be slower than P plain ones): one member's steps against the population's, with the compilation
    each sequential run pays, and the faster is chosen."""
    k = len(pool.train_rows)
    if (why := blocker(config)) is not None:
        return 1, f"one run after another: {why}", None
    first = pool.splits(0).train
    population = Population(build_trainer(config, model, steps_per_epoch(config, first)))
    data, batch = (pool.x, pool.y), min(config.train.batch_size, min(len(r) for r in pool.train_rows))
    together = population.step_cost(k, data, batch)
    size = max(1, min(k, int(memory_share * free_device_memory() * k // max(1, together.memory_bytes))))
    note = "" if size == k else f"; {k} would need {together.memory_bytes / 2**20:.0f} MiB"
    if size == 1:
        return 1, f"one run after another{note}", None
    if size < k:
        together = population.step_cost(size, data, batch)
    if jax.devices()[0].platform == "cpu" and _has_convolutions(model):
        one = population.step_cost(1, data, batch)
        steps = config.train.epochs * steps_per_epoch(config, first)
        sequential = k * (one.compile_seconds + steps * one.step_seconds)
        grouped = together.compile_seconds + -(-k // size) * steps * together.step_seconds
        if grouped >= sequential:
            return 1, (f"one run after another: measured faster on this CPU (a step of {size} members together "
                       f"{together.step_seconds * 1e3:.2f} ms, of one {one.step_seconds * 1e3:.2f} ms; estimated "
                       f"{grouped:.1f} s together, {sequential:.1f} s one by one)"), None
        note += f"; measured {sequential / grouped:.1f}x faster than one by one"
    return size, f"{size} at a time as one population{note}", population


def _has_convolutions(layer: Any) -> bool:
    return "Conv" in type(layer).__name__ or any(_has_convolutions(inner) for inner in getattr(layer, "layers", ()))


def free_device_memory() -> int:
    """Bytes free on the first device: its allocator's limit less what is in use (accelerators), or
    the host's available memory (CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def fit_population(configs: Sequence[ConfigDict], workdirs: Sequence[Path], model: Model, pool: Pool, *,
                   verbose: int = 0, should_stop: Callable[[int], Any] | None = None,
                   callbacks: Sequence[Sequence[Callback]] | None = None,
                   locks: Sequence[RunLock | None] | None = None,
                   population: Population | None = None) -> list[FitResult | Exception]:
    """Train member ``i`` (``configs[i]`` on ``pool``'s rows ``i``) into ``workdirs[i]``, all as one
    population, resuming where they were saved. Returns each member's ``FitResult``, or the error that
    ended it (a diverged loss) while the others went on. ``callbacks[i]`` join member ``i``'s own
    (a search's pruning); ``locks[i]`` is a lock its caller holds; ``population``: one
    :func:`choose_population` built for the first config (its steps already compiled). Checks
    everything before writing."""
    p = len(configs)
    if not (p == len(workdirs) == len(pool.train_rows)):
        raise ArgumentError(f"A population needs as many workdirs and data rows as configs; got {p} configs, "
                            f"{len(workdirs)} workdirs and {len(pool.train_rows)} members' rows.")
    for config in configs:
        check_run_config(config)
        if (why := blocker(config)) is not None:
            raise ArgumentError(f"These runs cannot train as one population: {why}.")
    keys = {population_key(c, len(r)) for c, r in zip(configs, pool.train_rows)}
    if len(keys) > 1:
        raise ArgumentError("The members of a population must differ only in seed, data rows and "
                            f"{', '.join(TRACED)}; these configs differ in more.")
    first = configs[0]
    workdirs = [Path(w) for w in workdirs]
    splits = [pool.splits(i) for i in range(p)]
    if population is None:
        population = Population(build_trainer(first, model, steps_per_epoch(first, splits[0].train)))
    trainer = population.trainer
    for config, s in zip(configs, splits):
        trainer.check_fit(s.train, config.train.epochs, batch_size=config.train.batch_size,
                          validation_data=s.validation)
    fingerprints = [data_fingerprint(s) for s in splits]
    members = [Member(seed=c.seed, train_rows=tr, validation_rows=va, shuffle_seed=c.seed)
               for c, tr, va in zip(configs, pool.train_rows, pool.validation_rows)]
    extra = [list(cbs) for cbs in callbacks] if callbacks is not None else [[] for _ in range(p)]
    with contextlib.ExitStack() as held:
        for i, workdir in enumerate(workdirs):
            given = locks[i] if locks is not None else None
            lock = given or held.enter_context(RunLock(workdir))
            if not lock.held:
                lock.acquire()
        notes = [note for config, workdir in zip(configs, workdirs) for note in check_workdir(config, workdir)]
        states, resume, stopped = _restore(configs, workdirs, trainer, model, members, fingerprints, verbose)
        for note in notes:
            print(note, file=sys.stderr)
        opened = [open_run(c, w, model, f, int(s.epoch)) for c, w, f, s in zip(configs, workdirs, fingerprints, states)]
        checkpointers = [_OwnScale(checkpointer, _scale_ratio(c, first))
                         for c, (checkpointer, _) in zip(configs, opened)]
        try:
            final, histories = population.fit(
                members, (pool.x, pool.y), batch_size=first.train.batch_size, until=first.train.epochs,
                states=stack(states), callbacks=[[*run_cbs, *more] for (_, run_cbs), more in zip(opened, extra)],
                stopped=stopped, checkpointers=checkpointers, resume=resume, should_stop=should_stop)
        except TrainingInterrupted as err:
            raise interrupted_note(err, list(zip(workdirs, checkpointers))) from None
        finally:
            for checkpointer in checkpointers:
                checkpointer.close()
    out: list[FitResult | Exception] = []
    for i, s in enumerate(splits):
        if i in population.failures:
            out.append(population.failures[i])
            continue
        state = jax.tree.map(lambda leaf, i=i: leaf[i], final)
        scores = trainer.evaluate(state, s.validation, batch_size=256)
        out.append(FitResult(trainer, state, histories[i], {f"val_{k}": v for k, v in scores.items()}))
    return out


def _restore(configs, workdirs, trainer: Trainer, model: Model, members, fingerprints,
             verbose) -> tuple[list[TrainState], list[dict | None], list[bool]]:
    """Each member's state to continue from (its newest checkpoint, or a fresh one), that checkpoint's
    meta and whether the member had finished (stopped early, or trained all its epochs)."""
    found = [restore_run(c, trainer, model, w, f, 0) for c, w, f in zip(configs, workdirs, fingerprints)]
    stopped = [f is not None and bool(f[1].get("stopped") or int(f[0].epoch) >= c.train.epochs)
               for f, c in zip(found, configs)]
    states, resume = [], []
    for config, workdir, m, f in zip(configs, workdirs, members, found):
        if f is None:
            states.append(_with_traced(trainer.init(jax.random.key(m.seed)), config, configs[0]))
            resume.append(None)
        else:
            states.append(_rescaled(f[0], _scale_ratio(config, configs[0])))
            resume.append(f[1])
            if verbose:
                print(f"Resuming {workdir} from epoch {int(f[0].epoch)}.")
    return states, resume, stopped


def _with_traced(state: TrainState, config: ConfigDict, base: ConfigDict) -> TrainState:
    """A fresh member state with ``config``'s traced values where they differ from ``base``'s (whose
    values the Trainer's optimizer was built with): a constant rate and the weight decay set in the
    optimizer state itself, as a run trained alone has them; a scheduled rate as its scale."""
    mine, theirs = traced_values(config), traced_values(base)
    lr = mine.get("optimizer.learning_rate")
    if lr is not None and lr != theirs.get("optimizer.learning_rate") and _scale_ratio(config, base) == 1.0:
        state = state.replace(opt_state=optimizers.set_hyperparameter(state.opt_state, "learning_rate", float(lr)))
    wd = mine.get("optimizer.weight_decay")
    if wd is not None and wd != theirs.get("optimizer.weight_decay"):
        state = state.replace(opt_state=optimizers.set_hyperparameter(state.opt_state, "weight_decay", float(wd)))
    return _rescaled(state, _scale_ratio(config, base))


def _scale_ratio(config: ConfigDict, base: ConfigDict) -> float:
    """What a member's learning-rate scale carries in the population on top of its own: under a
    schedule (a rate optax recomputes from the step, so not a value in the state) its rate over the
    first member's, whose schedule the population's optimizer follows; 1 for a constant rate."""
    lr = traced_values(config).get("optimizer.learning_rate")
    if schedule_name(config) == "constant" or lr is None:
        return 1.0
    return float(lr) / float(base.optimizer.learning_rate)


def _rescaled(state: TrainState, ratio: float) -> TrainState:
    """``state`` with its learning-rate scale times ``ratio``, in float64; a result within a float32
    rounding of 1 is 1 (a member's own scale is 1 unless a callback changed it, so a run carried into
    the population and back continues exactly as the same run trained alone)."""
    if ratio == 1.0:
        return state
    scale = float(lr_scale.get_scale(state.opt_state)) * ratio
    return lr_scale.set_scale(state, 1.0 if abs(scale - 1.0) <= 2.0 ** -23 else scale)


class _OwnScale:
    """A member's checkpointer that saves its state with the member's own learning-rate scale (that of
    the run trained alone), so that ``fit_run`` or another population continues it at its own rate."""

    def __init__(self, checkpointer: Any, ratio: float):
        self.checkpointer, self.ratio = checkpointer, ratio

    def save(self, step: int, state: TrainState, meta: Any, metrics: Any = None, extra: Any = None) -> None:
        self.checkpointer.save(step, _rescaled(state, 1.0 / self.ratio), meta, metrics=metrics, extra=extra)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.checkpointer, name)
