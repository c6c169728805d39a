"""Populations: P members of one model trained together as one ``jax.vmap``-ed program.

A small model leaves a device mostly idle; P members of it -- different seeds, different subsets of one
shared training set (cross-validation folds), different learning rates -- fill it. Each member sees
exactly what it would see trained alone with ``Trainer.fit(trainer.init(key(seed)), (x[rows], y[rows]),
...)``: the same initial variables, the same shuffle (``(seed, epoch)``), the same batches, the same
per-step randomness; only the batched kernels round differently (about 1e-6 relative per step). The
data is stored once and each member gathers its batches by index; a member whose epoch has fewer
steps than the longest one is masked out of the steps it does not have (its parameters, optimizer
state, statistics and step counter stay as they are). A member's learning rate is the Trainer's
learning-rate scale (``lr_scale.py``), a traced value: one compiled step serves every rate.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fluxnet.data.batching import BatchIterator
from fluxnet.errors import ArgumentError, ArgumentTypeError
from fluxnet.train import lr_scale, sharding
from fluxnet.train.callbacks import Callback, History, epoch_end_answer, replacement
from fluxnet.train.data_adapter import as_xy, check_data, check_fit_counts, num_rows, take
from fluxnet.train.state import TrainState
from fluxnet.train.trainer import diverged, interrupted, median_step_seconds, restore_callbacks, save_checkpoint
from fluxnet.train.steps import finalize, make_eval_step, make_train_step, sum_metrics


@dataclasses.dataclass(frozen=True)
class Member:
    """One member: ``seed`` (initialisation, randomness, shuffle); ``train_rows`` and
    ``validation_rows``, indices into the shared training arrays (None: all rows / no validation
    from them); ``learning_rate`` (None: the optimizer's own), set when the member is initialised
    (continued ``states`` keep the rate they have)."""

    seed: int = 0
    train_rows: Any = None
    validation_rows: Any = None
    learning_rate: float | None = None
    shuffle_seed: int | None = None  # Trainer.fit's ``seed``; None: derived from the member's key, as there


@dataclasses.dataclass(frozen=True)
class StepCost:
    """``Population.step_cost``: seconds to compile and to run one step, and the bytes it needs."""

    compile_seconds: float
    step_seconds: float
    memory_bytes: int


def stack(states: Sequence[TrainState]) -> TrainState:
    """Member states stacked on a leading axis (the population's layout)."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def member(states: TrainState, i: int) -> TrainState:
    """Member ``i`` of a stacked population state, as an ordinary TrainState (for ``Trainer.evaluate``,
    ``predict``, saving...)."""
    return jax.tree.map(lambda leaf: leaf[i], states)


class Population:
    """Trains members of ``trainer``'s model together: ``fit(members, data, ...)`` -> ``(states,
    histories)``. Runs on one device (the Trainer's first)."""

    def __init__(self, trainer):
        if trainer.parallel != "sharding":
            raise ArgumentError("A population vmaps its members on one device; build the Trainer with "
                                "parallel='sharding'.")
        self.trainer = trainer
        step = make_train_step(trainer.model, trainer.objective, trainer.tx, trainer.augment,
                               loss_fns=trainer.train_loss_fns, grad_accum_steps=trainer.grad_accum_steps,
                               remat=trainer.remat)

        def member_step(state: TrainState, batch: dict):
            new, metrics = step(state, batch)
            active = jnp.any(batch["mask"])  # no real rows: this member has no such step; keep it as it is
            return jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state), metrics

        self.train_step = jax.jit(jax.vmap(member_step), donate_argnums=0)
        self.eval_step = jax.jit(jax.vmap(make_eval_step(trainer.model, trainer.objective)))

    def init_one(self, m: Member) -> TrainState:
        """Member ``m``'s state alone: ``trainer.init(key(seed))`` with its learning rate."""
        state = jax.device_get(self.trainer.init(jax.random.key(m.seed)))
        if m.learning_rate is not None:
            state = lr_scale.set_learning_rate(state, float(m.learning_rate), f"member (seed {m.seed})")
        return state

    def init(self, members: Sequence[Member]) -> TrainState:
        """The stacked states: member ``i`` is ``trainer.init(key(seed_i))`` with its learning rate."""
        return jax.device_put(stack([self.init_one(m) for m in members]), jax.devices()[0])

    def step_cost(self, members: int, data: Any, batch_size: int, steps: int = 3) -> StepCost:
        """What one training step of ``members`` members on batches of ``data`` costs: its compile time,
        its measured time (the median of ``steps`` steps after a warm-up) and the device memory its
        compiled program needs (XLA's memory analysis: arguments, outputs and temporaries). The
        program stays compiled, so a ``fit`` of that many members starts without compiling it."""
        x, y = as_xy(data, "data")
        x, y = check_data(self.trainer.objective, self.trainer.model, x, y, "train")
        n = num_rows(x)
        index = np.resize(np.arange(n), (members, batch_size))
        batch = {"x": take(x, index), "y": take(y, index), "mask": np.ones((members, batch_size), bool)}
        states = self.init([Member(seed=i) for i in range(members)])
        start = time.perf_counter()
        compiled = self.train_step.lower(states, batch).compile()
        compile_seconds = time.perf_counter() - start
        memory = compiled.memory_analysis()
        needed = (memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
                  - memory.alias_size_in_bytes) if memory is not None else 0
        return StepCost(compile_seconds, median_step_seconds(self.train_step, states, batch, steps), int(needed))

    def fit(self, members: Sequence[Member], data: Any, epochs: int = 1, batch_size: int = 32, *,
            validation_data: Any = None, states: TrainState | None = None,
            callbacks: Sequence[Sequence[Callback]] | None = None, stopped: Sequence[bool] | None = None,
            checkpointers: Sequence[Any] | None = None, resume: Sequence[Mapping | None] | None = None,
            should_stop: Callable[[int], Any] | None = None, until: int | None = None
            ) -> tuple[TrainState, list[History]]:
        """Train every member ``epochs`` more epochs, or up to epoch ``until`` (``states``: a previous
        result, else ``init``). Members may be at different epochs: each trains its own next epoch
        (its own shuffle and steps) in every round, so a member's computation is the same whatever
        epoch the others are at.
        ``validation_data`` is shared by all members; a member's ``validation_rows`` validate it on its
        own rows of ``data`` instead. ``callbacks[i]`` are member ``i``'s Trainer callbacks, called with
        its own logs and state as ``Trainer.fit`` calls them: one that stops training (EarlyStopping, a
        pruner) masks that member out of the remaining steps while the others go on; a returned state
        (a learning-rate callback, restored best weights) replaces the member's. A member whose epoch
        loss is not finite stops too, unsaved, its error in ``self.failures[i]``. Returns the stacked
        states and one ``History`` per member.

        As ``Trainer.fit``: ``checkpointers[i]`` saves member ``i`` after each of its epochs (its state,
        its callbacks' states, whether it stopped), ``resume[i]`` is the meta its checkpoint was restored
        with, ``should_stop(step)`` ends training at once with ``TrainingInterrupted`` (the epoch under
        way unsaved). ``stopped[i]``: the member finished before (a restored early stop); it stays in
        the program, masked, so the others compute exactly what they computed with it."""
        members = list(members)
        if not members or not all(isinstance(m, Member) for m in members):
            raise ArgumentTypeError("A population needs a non-empty list of population.Member, got "
                                    f"{[type(m).__name__ for m in members]}.")
        check_fit_counts(epochs, batch_size)
        p = len(members)
        cbs = self._callbacks(callbacks, p)
        active = ~np.asarray(_per_member(stopped, p, "stopped", False), bool)
        checkpointers = _per_member(checkpointers, p, "checkpointers", None)
        resume = _per_member(resume, p, "resume", None)
        x, y = as_xy(data, "fit data")
        if y is None:
            raise ArgumentError("fit needs targets: pass (x, y).")
        x, y = check_data(self.trainer.objective, self.trainer.model, x, y, "train")
        n = num_rows(x)
        rows = [np.arange(n) if m.train_rows is None else _rows(m.train_rows, n, "train_rows") for m in members]
        if states is None:
            states = self.init(members)
        else:
            self._check_states(states, p)
            # on init's device (no second compilation); a copy: the step donates it, the caller keeps theirs
            states = sharding.owned_copy(states, jax.devices()[0])
        # each member's shuffle seed, derived from its key as Trainer.fit derives it
        seeds = [int(rng.ravel()[-1]) % (2 ** 31) if m.shuffle_seed is None else m.shuffle_seed
                 for m, rng in zip(members, np.asarray(jax.device_get(states.rng)))]
        iterators = [BatchIterator(np.arange(len(r)), None, min(batch_size, len(r)), seed=seed, drop_remainder=False)
                     for r, seed in zip(rows, seeds)]  # for their shuffles and step counts
        if len({it.batch_size for it in iterators}) > 1:
            raise ArgumentError("Every member needs at least batch_size training rows (the batches are stacked).")
        if iterators[0].batch_size % self.trainer.grad_accum_steps:
            raise ArgumentError(f"batch_size {iterators[0].batch_size} does not split into grad_accum_steps="
                                f"{self.trainer.grad_accum_steps} equal micro-batches; use a multiple of it.")
        validation = self._validation(members, x, y, validation_data, n)
        view = _View(states)
        for i, member_cbs in enumerate(cbs):
            for cb in member_cbs:
                view.replace(i, cb.on_train_begin(self.trainer, view.member(i)))
            if resume[i] is not None:
                restore_callbacks(member_cbs, resume[i])
        self.failures: dict[int, Exception] = {}
        epoch_of = np.asarray(jax.device_get(view.states.epoch)).astype(np.int64)
        end = np.full(p, until) if until is not None else epoch_of + epochs
        active &= epoch_of < end
        done = int(np.asarray(jax.device_get(view.states.step)).max())  # should_stop's step count
        try:
            while active.any():  # a round: every active member trains its own next epoch
                for i in np.flatnonzero(active):
                    for cb in cbs[i]:
                        view.replace(i, cb.on_epoch_begin(int(epoch_of[i]), view.member(i)))
                states, logs, done = self._epoch(view.states, {"x": x, "y": y}, rows, iterators, epoch_of, active,
                                                 should_stop, done)
                for i in np.flatnonzero(active):
                    if not math.isfinite(logs[i]["loss"]):
                        self.failures[i] = diverged(logs[i]["loss"], int(epoch_of[i]), int(states.step[i]))
                        active[i] = False
                if validation is not None:
                    for i, val in enumerate(self._evaluate(states, *validation, batch_size)):
                        logs[i].update({f"val_{k}": v for k, v in val.items()})
                view.set(states.replace(epoch=jnp.where(active, jnp.asarray(epoch_of + 1, states.epoch.dtype),
                                                        states.epoch)))
                for i in np.flatnonzero(active):
                    logs[i]["learning_rate"] = lr_scale.learning_rate(view.member(i).opt_state)
                    halted = False
                    for cb in cbs[i]:
                        new, halt = epoch_end_answer(cb.on_epoch_end(int(epoch_of[i]), logs[i], view.member(i)))
                        view.replace(i, new)
                        halted = halted or halt
                    if checkpointers[i] is not None:
                        save_checkpoint(checkpointers[i], view.member(i), cbs[i], logs[i], stopped=halted)
                    epoch_of[i] += 1
                    active[i] = not halted and epoch_of[i] < end[i]
        finally:  # also on a failure: every member's last good checkpoint must be complete
            for checkpointer in checkpointers:
                if checkpointer is not None:
                    checkpointer.wait()
        for i, member_cbs in enumerate(cbs):
            if i in self.failures:
                continue
            for cb in member_cbs:
                view.replace(i, cb.on_train_end(view.member(i)))
        return view.states, [member_cbs[0] for member_cbs in cbs]

    @staticmethod
    def _callbacks(callbacks: Sequence[Sequence[Callback]] | None, members: int) -> list[list[Callback]]:
        """Each member's callbacks after its own ``History``, checked: per-step hooks and callbacks that
        need the whole fit (``runs_last``, e.g. BackupAndRestore) have no place in a population yet."""
        if callbacks is None:
            callbacks = [()] * members
        if len(callbacks) != members:
            raise ArgumentError(f"callbacks must hold one list per member ({members}), got {len(callbacks)}.")
        out = []
        for member_cbs in callbacks:
            for cb in member_cbs:
                if not isinstance(cb, Callback) or type(cb).on_train_batch_end is not Callback.on_train_batch_end \
                        or getattr(cb, "runs_last", False):
                    raise ArgumentError(f"{type(cb).__name__} cannot run in a population: members take Trainer "
                                        "callbacks with epoch hooks only (no batch hooks, no BackupAndRestore).")
            out.append([History(), *member_cbs])
        return out

    def _check_states(self, states: Any, members: int) -> None:
        if not isinstance(states, TrainState) or any(np.ndim(leaf) == 0 or np.shape(leaf)[0] != members
                                                     for leaf in jax.tree.leaves(states)):
            raise ArgumentError(f"states must be the stacked states of {members} members (population.stack of "
                                "TrainStates, or a previous Population.fit's result).")

    def _epoch(self, states, arrays: dict, rows: list, iterators: list, epochs: np.ndarray, active: np.ndarray,
               should_stop: Callable[[int], Any] | None, done: int):
        """One round: member ``i`` trains (the steps of) its epoch ``epochs[i]``."""
        steps = max(it.steps_per_epoch for it, on in zip(iterators, active) if on)
        plans = [_epoch_plan(r, it, int(e), steps) for r, it, e in zip(rows, iterators, epochs)]
        index, mask = np.stack([p[0] for p in plans], 1), np.stack([p[1] for p in plans], 1)  # (steps, P, B)
        mask &= active[None, :, None]  # a stopped member sits every step out
        sums = []
        for step in range(steps):
            batch = {k: jax.tree.map(lambda a: a[index[step]], v) for k, v in arrays.items()}
            batch["mask"] = mask[step]
            states, metrics = self.train_step(states, batch)
            sums.append(metrics)
            if should_stop is not None and (reason := should_stop(done + step + 1)):
                raise interrupted(reason, int(epochs[active].min()))
        return states, self._per_member(sums, len(rows)), done + steps

    def _validation(self, members, x, y, validation_data, n):
        """``(x, y, rows per member)`` of the validation: each member's own rows of the training
        arrays, or the shared ``validation_data`` (every member all of its rows), or None."""
        own = [m.validation_rows is not None for m in members]
        if any(own) and not all(own):
            raise ArgumentError("Give every member validation_rows, or none of them.")
        if all(own):
            if validation_data is not None:
                raise ArgumentError("Pass validation_data or members' validation_rows, not both.")
            return x, y, [_rows(m.validation_rows, n, "validation_rows") for m in members]
        if validation_data is None:
            return None
        vx, vy = as_xy(validation_data, "validation_data")
        vx, vy = check_data(self.trainer.objective, self.trainer.model, vx, vy, "validation")
        return vx, vy, [np.arange(num_rows(vx))] * len(members)

    def _evaluate(self, states, x, y, rows: list, batch_size: int) -> list[dict]:
        size = min(batch_size, max(len(r) for r in rows))
        sums = []
        for start in range(0, max(len(r) for r in rows), size):
            chunks = [r[start:start + size] for r in rows]
            index = np.stack([np.resize(c, size) if len(c) else np.zeros(size, np.int64) for c in chunks])
            mask = np.stack([np.arange(size) < len(c) for c in chunks])
            sums.append(self.eval_step(states, {"x": take(x, index), "y": take(y, index), "mask": mask}))
        return self._per_member(sums, len(rows))

    def _per_member(self, sums: list, members: int) -> list[dict]:
        """Per-member epoch averages from stacked step sums (added in float64 on the host)."""
        host = jax.device_get(sums)
        names = self.trainer.objective.log_names()
        out = []
        for i in range(members):
            logs = finalize(sum_metrics([jax.tree.map(lambda a, i=i: a[i], m) for m in host]))
            out.append({k: logs[k] for k in names})  # Keras' order (the host copy sorts the keys)
        return out


class _View:
    """The stacked states on the device, each member's state read from one host copy of them (a
    device slice per leaf, member and hook would dispatch thousands of small ops an epoch)."""

    def __init__(self, states: TrainState):
        self.states, self._host = states, None

    def member(self, i: int) -> TrainState:
        if self._host is None:
            self._host = jax.device_get(self.states)
        return jax.tree.map(lambda leaf: leaf[i], self._host)

    def set(self, states: TrainState) -> None:
        self.states, self._host = states, None

    def replace(self, i: int, answer: Any) -> None:
        """Member ``i`` replaced by the state a callback hook returned (None: unchanged)."""
        if replacement(answer) is not None:
            self.set(jax.tree.map(lambda s, a: s.at[i].set(a), self.states, answer))


def _epoch_plan(rows: np.ndarray, batches: BatchIterator, epoch: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """A member's epoch as ``(steps, batch)`` row indices into the shared arrays and their mask: the
    batches ``Trainer.fit`` would train on ``rows`` (its shuffle, a last partial batch padded with
    copies of its own rows), then all-masked steps up to the population's ``steps``."""
    size, order = batches.batch_size, rows[batches.epoch_order(epoch)]
    full, rest = divmod(len(order), size)
    index, mask = np.full((steps, size), order[0]), np.zeros((steps, size), bool)
    index[:full], mask[:full] = order[:full * size].reshape(full, size), True
    if rest:
        index[full], mask[full, :rest] = np.resize(order[full * size:], size), True
    return index, mask


def _per_member(values: Sequence | None, members: int, what: str, default: Any) -> list:
    """One value per member (``default`` for each when None), checked for length."""
    if values is None:
        return [default] * members
    if len(values) != members:
        raise ArgumentError(f"{what} must hold one entry per member ({members}), got {len(values)}.")
    return list(values)


def _rows(indices: Any, n: int, what: str) -> np.ndarray:
    rows = np.asarray(indices)
    if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer) or rows.size == 0:
        raise ArgumentError(f"A member's {what} must be a non-empty 1-D array of row indices, got shape {rows.shape} "
                            f"and dtype {rows.dtype}.")
    if rows.min() < 0 or rows.max() >= n:
        raise ArgumentError(f"A member's {what} must lie in [0, {n}); got {rows.min()}..{rows.max()}.")
    return rows
