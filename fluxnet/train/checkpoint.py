"""Orbax checkpoints of whole train states: the latest N and the best by a monitored metric.

One checkpoint per saved epoch holds three items: ``state`` (the TrainState pytree: params, BN
statistics, optimizer state, step, epoch, rng), ``extra`` (arrays owned by callbacks, e.g.
EarlyStopping's best weights) and ``meta`` (JSON: epoch and step, whether a callback stopped training,
the callbacks' state, the model config).
Orbax writes each checkpoint into a temporary folder and renames it when complete, so a process killed
mid-save leaves the previous checkpoint as the latest one; a writing ``Checkpointer`` removes such
leftover folders when it opens, a ``read_only`` one (for loading and evaluating) never changes anything.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import AnyPreservationPolicy, BestN, LatestN

from fluxnet import tree
from fluxnet.optimizers import INJECTED_STATES
from fluxnet.errors import CheckpointError
from fluxnet.metrics import monitor_mode
from fluxnet.train.faults import CrashPoint


class Checkpointer:
    """``CheckpointManager`` in ``directory``: keeps the latest ``keep`` and the ``keep_best`` best by
    ``monitor`` (``mode`` "min" or "max"; "auto" means max for accuracy-like names, else min).
    ``read_only=True`` opens an existing directory for restoring only; ``crash_at`` (a test hook,
    ``fluxnet.train.faults``) kills the process while that checkpoint is being written."""

    def __init__(self, directory: str | os.PathLike, keep: int = 2, monitor: str | None = "val_loss",
                 mode: str = "auto", keep_best: int = 1, async_save: bool = True, meta: Mapping | None = None,
                 read_only: bool = False, crash_at: CrashPoint | None = None):
        if monitor is not None:
            mode = monitor_mode(monitor, mode)
        self.directory = os.path.abspath(os.fspath(directory))
        self.static_meta = dict(meta or {})  # written into every checkpoint (e.g. the model config)
        self.monitor, self.mode = monitor, mode
        policies = [LatestN(n=keep)]
        best_fn = None
        if monitor is not None:
            best_fn = lambda metrics: float(metrics[monitor])  # noqa: E731
            policies.append(BestN(get_metric_fn=best_fn, reverse=(mode == "min"), n=keep_best))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=AnyPreservationPolicy(policies), best_fn=best_fn,
            best_mode=mode if monitor is not None else "max", enable_async_checkpointing=async_save,
            create=not read_only, read_only=read_only, cleanup_tmp_directories=not read_only,
            save_interval_steps=0 if read_only else 1)
        handlers = {"state": ocp.StandardCheckpointHandler(), "extra": ocp.StandardCheckpointHandler(),
                    "meta": MetaHandler(crash_at)}  # known up front, so a new process reads metadata
        if not read_only:  # every process sees it existing: orbax's creation path (and its barriers) is one
            os.makedirs(self.directory, exist_ok=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def save(self, step: int, state: Any, meta: Mapping, metrics: Mapping | None = None,
             extra: Any = None) -> None:
        """Save asynchronously under ``step``; ``metrics`` rank it for keep-best."""
        items = {"state": ocp.args.StandardSave(state),
                 "meta": MetaSave({**self.static_meta, **meta}, step=step)}
        if extra is not None:
            items["extra"] = ocp.args.StandardSave(extra)
        ranked = None
        if metrics is not None and self.monitor is not None and self.monitor in metrics:
            ranked = {self.monitor: float(metrics[self.monitor])}
        self.manager.save(step, args=ocp.args.Composite(**items), metrics=ranked)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return self.manager.best_step() if self.monitor is not None else self.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def read_meta(self, step: int) -> dict:
        """The JSON ``meta`` of checkpoint ``step`` alone (cheap: no arrays are read)."""
        return dict(self.manager.restore(step, args=ocp.args.Composite(meta=MetaRestore()))["meta"])

    def restore(self, step: int, abstract_state: Any, fresh: Callable[[], Any] | None = None) -> tuple[Any, dict, Any]:
        """``(state, meta, extra)`` of ``step`` restored onto the shapes, dtypes and shardings of
        ``abstract_state`` (``extra`` onto its sharding, or None if the checkpoint has none); a
        checkpoint that does not fit raises with every mismatched path listed. A checkpoint written
        before fluxnet injected an optimizer hyperparameter (``weight_decay``, a constant of the
        optimizer then) restores with its value from ``fresh()``, a newly initialised state."""
        saved = self.manager.item_metadata(step)
        older = _older_hyperparameters(abstract_state, _tree_of(saved, "state")) if fresh is not None else {}
        target = _without_hyperparameters(abstract_state, older) if older else abstract_state
        self._check_fits(step, target, _tree_of(saved, "state"), "model/optimizer")
        sharding = jax.tree.leaves(abstract_state)[0].sharding
        out = self._restore_items(step, saved, sharding, state=ocp.args.StandardRestore(target))
        state = _with_hyperparameters(out["state"], fresh()) if older else out["state"]
        return state, dict(out["meta"]), out.get("extra")

    def restore_variables(self, step: int, abstract_variables: Any) -> tuple[dict, dict, Any]:
        """``(variables, meta, extra)`` of ``step``: only the model's variables of the train state (a
        partial restore), so no optimizer needs to be rebuilt -- for inference and evaluation."""
        saved = self.manager.item_metadata(step)
        params, model_state = tree.split_variables(abstract_variables)
        target = {"params": params, "model_state": model_state}
        saved_state = _tree_of(saved, "state")
        self._check_fits(step, target, {k: saved_state[k] for k in target if k in saved_state}, "model")
        with ocp.PyTreeCheckpointer() as reader:
            out = reader.restore(os.path.join(self.directory, str(step), "state"), args=ocp.args.PyTreeRestore(
                item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                partial_restore=True))
        rest = self._restore_items(step, saved, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
        return tree.join_variables(out["params"], out["model_state"]), dict(rest["meta"]), rest.get("extra")

    def _check_fits(self, step: int, target: Any, saved_tree: Any, what: str) -> None:
        problems = tree.mismatches(target, saved_tree, "checkpoint")
        if problems:
            raise CheckpointError(f"Checkpoint {self.directory}/{step} does not fit this {what}:\n  "
                             + "\n  ".join(problems))

    def _restore_items(self, step: int, saved: Any, sharding: Any, **items) -> dict:
        """Restore ``items`` plus ``meta`` and, when the checkpoint has one, ``extra`` (onto ``sharding``)."""
        items["meta"] = MetaRestore()
        if "extra" in _item_names(saved):
            items["extra"] = ocp.args.StandardRestore(jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=sharding),
                _tree_of(saved, "extra")))
        return dict(self.manager.restore(step, args=ocp.args.Composite(**items)))

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


ADDED_HYPERPARAMETERS = ("weight_decay",)  # injected since the populations' issue; before, a constant


def _older_hyperparameters(abstract_state: Any, saved_tree: Any) -> set[str]:
    """The paths of hyperparameters the state injects and an older checkpoint lacks (nothing else)."""
    saved = tree.shapes(saved_tree)
    missing = {p for p in tree.shapes(abstract_state) if p not in saved}
    older = {p for p in missing if p.rsplit("/", 1)[-1] in ADDED_HYPERPARAMETERS and "/hyperparams/" in p}
    return older if older == missing else set()


def _without_hyperparameters(state: Any, paths: set[str]) -> Any:
    names = {p.rsplit("/", 1)[-1] for p in paths}
    def drop(s):
        if not isinstance(s, INJECTED_STATES):
            return s
        return s._replace(hyperparams={k: v for k, v in s.hyperparams.items() if k not in names})

    return jax.tree.map(drop, state, is_leaf=lambda s: isinstance(s, INJECTED_STATES))


def _with_hyperparameters(state: Any, fresh: Any) -> Any:
    """``state`` with the hyperparameters only ``fresh`` has (the same optimizer, newly initialised)."""
    def add(s, f):
        if not isinstance(s, INJECTED_STATES):
            return s
        return s._replace(hyperparams={**{k: v for k, v in f.hyperparams.items() if k not in s.hyperparams},
                                       **s.hyperparams})

    return jax.tree.map(add, state, fresh, is_leaf=lambda s: isinstance(s, INJECTED_STATES))


class MetaHandler(ocp.JsonCheckpointHandler):
    """Orbax's JSON handler for the ``meta`` item, with the ``save:E`` crash hook
    (``fluxnet.train.faults``): once checkpoint E's meta is written into its temporary folder, a last
    commit future kills the process, so orbax never finalises that checkpoint."""

    def __init__(self, crash_at: CrashPoint | None = None):
        super().__init__()
        self.crash_at = crash_at

    async def async_save(self, directory, item=None, args=None):
        futures = list(await super().async_save(directory, item, args) or [])
        if self.crash_at is None or not self.crash_at.at("save", args.step):
            return futures

        async def crash():
            for f in futures:
                f.result()
            self.crash_at.crash_if_at("save", args.step)

        return [*futures, ocp.future.CommitFutureAwaitingContractedSignals(crash(), name="fluxnet_crash")]


@ocp.args.register_with_handler(MetaHandler, for_save=True)
@dataclasses.dataclass
class MetaSave(ocp.args.JsonSave):
    step: int = -1  # the checkpoint's step, for the crash hook


@ocp.args.register_with_handler(MetaHandler, for_restore=True)
@dataclasses.dataclass
class MetaRestore(ocp.args.JsonRestore):
    pass


def _item_names(metadata: Any) -> list[str]:
    return [k for k, v in (metadata.items() if isinstance(metadata, Mapping) else vars(metadata).items())
            if v is not None]


def _tree_of(metadata: Any, item: str) -> Any:
    """The array metadata tree of one item from ``item_metadata`` (its layout varies by handler)."""
    tree = metadata[item] if isinstance(metadata, Mapping) else getattr(metadata, item)
    return getattr(tree, "tree", tree)

