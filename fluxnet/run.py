"""Run directories: config -> data -> model -> trainer -> checkpoints -> report, resumable.

``train(config, workdir)`` is what ``fluxnet train`` runs. A workdir holds ``config.json`` (the
resolved config), ``model.json`` (the architecture), ``checkpoints/`` (orbax), ``metrics.jsonl``,
TensorBoard events in ``tensorboard/``, ``curves.png``, ``confusion_matrix.png`` and ``summary.json``.
Running the same config on the same workdir resumes from the latest checkpoint; only a larger
``train.epochs`` may differ, anything else fails before the workdir is touched. A resumed run equals
an uninterrupted one exactly (parameters, ``metrics.jsonl``, ``summary.json``), wherever the first one
stopped: records of epochs after the restored checkpoint are cut from ``metrics.jsonl`` (and hidden
in TensorBoard) and written again. Growing ``train.epochs`` continues the run; a learning-rate
schedule whose length derives from ``train.epochs`` (``cosine`` without ``decay_steps``) is then
stretched to the new length from the resume point on, so only a constant or fixed-length schedule
makes the continued run equal one configured with the larger value from the start.

Testing hook: ``FLUXNET_CRASH_AT=epoch:E`` or ``save:E`` kills the process (SIGKILL) halfway through
epoch E or while its checkpoint is being written (``fluxnet.train.faults``), to test resuming.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import jax
from ml_collections import ConfigDict

from fluxnet import losses as losses_lib
from fluxnet import optimizers
from fluxnet.checkpoint import Checkpointer
from fluxnet.config import apply_overrides, config_diff, load_config, load_saved_config, plain, save_config
from fluxnet.data import DEFAULT_SPLITS, limit_per_class, load_dataset, num_batches, preprocess_splits, select_classes
from fluxnet.models import Model, model_from_config
from fluxnet.models.zoo import build_model
from fluxnet.plots import confusion_matrix_plot, training_curves
from fluxnet.train import EarlyStopping, MetricsLog, TensorBoard, Trainer
from fluxnet.tune.baselines import baselines

CONFIG_FILE, MODEL_FILE, SUMMARY_FILE, METRICS_FILE = "config.json", "model.json", "summary.json", "metrics.jsonl"


class ConfigMismatchError(ValueError):
    """A workdir holds a run with another config."""


def resolve_config(path: str | os.PathLike, overrides: list[str] = ()) -> ConfigDict:
    """The config of a ``configs/`` file with ``key=value`` overrides applied."""
    return apply_overrides(load_config(path), list(overrides))


def prepare_data(config: ConfigDict):
    """``(splits, preprocessor)``: the configured data set split, restricted to ``data.classes`` (relabelled
    0..k-1) and to ``data.train_per_class`` training examples per class where set, and preprocessed."""
    d = config.data
    splits = load_dataset(d.name, data_dir=d.data_dir, splits=plain(d.splits), seed=config.seed,
                          stratify=d.stratify, image_size=d.image_size)
    if d.get("classes"):
        splits = select_classes(splits, d.classes)
    if d.get("train_per_class"):
        splits = dataclasses.replace(splits, train=limit_per_class(splits.train, d.train_per_class, seed=config.seed))
    return preprocess_splits(splits, plain(d.preprocess))


def build_configured_model(config: ConfigDict, input_shape, num_classes: int) -> Model:
    name = config.model.name
    return build_model(name, input_shape, num_classes, **plain(config.model.get(name, {})))


def build_augment(config: ConfigDict, num_classes: int):
    """The on-device augmentation pipeline of ``config.augment`` (a list of ops), or None."""
    from fluxnet.augment import Pipeline

    ops = plain(config.get("augment"))
    return Pipeline.from_config(ops, num_classes=num_classes) if ops else None


def build_trainer(config: ConfigDict, model: Model, steps_per_epoch: int, optimizer: Any = None,
                  param_groups: Mapping[str, str] | None = None) -> Trainer:
    """The Trainer a config describes (``optimizer``: an optax transform, or one per parameter group
    of ``param_groups``, replacing the config's); ``config.augment`` runs inside its train step."""
    augment = build_augment(config, model.outputs[0].shape[-1])
    loss_cfg = dict(plain(config.loss))
    loss = losses_lib.get(loss_cfg.pop("name"), **loss_cfg)
    if optimizer is None:
        optimizer = optimizers.build_optimizer(plain(config.optimizer),
                                               total_steps=max(1, config.train.epochs * steps_per_epoch))
    return Trainer(model, loss=loss, optimizer=optimizer, metrics=list(config.metrics), augment=augment,
                   steps_per_execution=config.train.steps_per_execution, param_groups=param_groups,
                   parallel=config.train.get("parallel", "sharding"))


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("fluxnet", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets", "numpy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def git_revision() -> str | None:
    """The project's git commit (with ``-dirty`` for uncommitted changes), or None outside a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if rev.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def check_workdir(config: ConfigDict, workdir: Path) -> None:
    """Refuse a workdir that holds a run of another config (only ``train.epochs`` may change)."""
    saved_path = workdir / CONFIG_FILE
    if saved_path.exists():
        diff = config_diff(load_saved_config(saved_path), config, ignore=("train.epochs",))
        if diff:
            lines = "\n  ".join(f"{k}: {old!r} (saved) -> {new!r}" for k, old, new in diff)
            raise ConfigMismatchError(
                f"{workdir} holds a run with a different config; nothing was changed. Differing keys:\n  "
                f"{lines}\nUse another --workdir, or the saved config (only train.epochs may grow).")


def _callbacks(config: ConfigDict, workdir: Path) -> list:
    cbs = [MetricsLog(str(workdir / METRICS_FILE)), TensorBoard(str(workdir / "tensorboard"))]
    es = plain(config.train.early_stopping)
    if es and es.get("patience"):
        cbs.append(EarlyStopping(**es))
    return cbs


def _stopped_early(meta: Mapping | None) -> bool:
    states = (meta or {}).get("callbacks", {})
    return any(k.endswith(":EarlyStopping") and v.get("stopped_epoch", 0) > 0 for k, v in states.items())


def _monitor(config: ConfigDict) -> str | None:
    """The metric that ranks checkpoints (``train.checkpoint.monitor``); None without a validation split."""
    has_validation = (plain(config.data.splits) or DEFAULT_SPLITS).get("validation") is not None
    return plain(config.train.checkpoint).get("monitor") if has_validation else None


def _open_checkpoints(config: ConfigDict, workdir: Path, read_only: bool = True, meta: Mapping | None = None,
                      monitor: str | None = None) -> Checkpointer:
    ck = plain(config.train.checkpoint)
    return Checkpointer(workdir / "checkpoints", keep=ck.get("keep", 2), monitor=monitor, meta=meta,
                        read_only=read_only)


def _restore(trainer: Trainer, checkpointer: Checkpointer, step: int):
    """``(state, meta)`` of checkpoint ``step``, with the callbacks' arrays in ``meta["arrays"]``."""
    state, meta, arrays = checkpointer.restore(step, trainer.abstract_state())
    return state, {**meta, "arrays": arrays}


def _warn_if_schedule_stretched(config: ConfigDict, workdir: Path) -> None:
    """A note on stderr when a grown ``train.epochs`` stretches a schedule that spans the whole run."""
    saved = workdir / CONFIG_FILE
    if not saved.exists() or load_saved_config(saved).train.epochs == config.train.epochs:
        return
    schedule = plain(config.optimizer.get("schedule"))
    name = schedule.get("name") if isinstance(schedule, Mapping) else schedule
    if name in ("cosine", "warmup_cosine") and not (isinstance(schedule, Mapping) and schedule.get("decay_steps")):
        print(f"Note: train.epochs changed, so the {name!r} learning-rate schedule now spans "
              f"{config.train.epochs} epochs from here on, and the result will differ from a run started "
              f"with train.epochs={config.train.epochs} (a constant schedule, or a fixed decay_steps, "
              "would not).", file=sys.stderr)


def fit_run(config: ConfigDict, workdir: str | os.PathLike, model: Model, splits, *, verbose: int = 1,
            optimizer: Any = None, init_variables: Any = None,
            param_groups: Mapping[str, str] | None = None, extra_summary: Mapping | None = None) -> dict:
    """Train ``model`` on ``splits`` into ``workdir`` (resuming if it holds a checkpoint), evaluate on
    the test split and write the report. Shared by ``train``, ``pretrain`` and ``transfer``.

    Everything that can fail on a resume (the config, the checkpoint's fit to the model) is checked
    before anything in the workdir is written."""
    workdir = Path(workdir)
    check_workdir(config, workdir)
    train, val, test = splits.train, splits.validation, splits.test
    steps_per_epoch = num_batches(len(train), config.train.batch_size, True)
    trainer = build_trainer(config, model, steps_per_epoch, optimizer, param_groups)
    state = trainer.init(jax.random.key(config.seed))
    if init_variables is not None:
        state = trainer.with_variables(state, init_variables)
    resume = None
    if (workdir / "checkpoints").is_dir():
        reader = _open_checkpoints(config, workdir)
        latest = reader.latest_step()
        if latest is not None:
            state, resume = _restore(trainer, reader, latest)
            if verbose:
                print(f"Resuming {workdir} from epoch {int(state.epoch)}.")
        reader.close()
    _warn_if_schedule_stretched(config, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    checkpointer = _open_checkpoints(config, workdir, read_only=False, meta={"model_config": model.get_config()},
                                     monitor=_monitor(config))
    save_config(config, workdir / CONFIG_FILE)
    (workdir / MODEL_FILE).write_text(json.dumps(model.get_config(), indent=1))
    callbacks = _callbacks(config, workdir)
    callbacks[0].truncate(int(state.epoch))
    base = baselines(train.images, train.labels, test.images, test.labels, seed=config.seed)
    if verbose:
        print(f"Baselines on the test split: majority {base['majority']:.4f}, "
              f"logistic regression {base['logistic_regression']:.4f}")
    remaining = 0 if _stopped_early(resume) else max(0, config.train.epochs - int(state.epoch))
    state, history = trainer.fit(
        state, train, epochs=remaining, batch_size=config.train.batch_size, validation_data=val,
        verbose=verbose, callbacks=callbacks, class_weight=plain(config.train.class_weight),
        oversample=config.train.oversample, seed=config.seed, checkpointer=checkpointer, resume=resume)
    test_metrics = trainer.evaluate(state, test, batch_size=256)
    best_step = checkpointer.best_step()
    best = None
    if best_step is not None:
        best_state, _ = _restore(trainer, checkpointer, best_step)
        best = {"epoch": best_step, "monitor": checkpointer.monitor,
                "test": trainer.evaluate(best_state, test, batch_size=256)}
    checkpointer.close()
    if verbose:
        print("Test: " + " - ".join(f"{k}: {v:.4f}" for k, v in test_metrics.items())
              + f" (baseline accuracy {base['accuracy']:.4f})")
    if history.history:
        training_curves(history.history, str(workdir / "curves.png"))
    predictions = trainer.predict(state, test.images).argmax(-1)
    confusion_matrix_plot(test.labels, predictions, splits.metadata.class_names,
                          str(workdir / "confusion_matrix.png"))
    counts = model.param_counts()
    summary = {"test": test_metrics, "baseline": base, "epochs_completed": int(state.epoch),
               "steps": int(state.step), "best_checkpoint": best, "history": history.history,
               "trainable_params": counts["trainable"], "non_trainable_params": counts["non_trainable"],
               "data": {"name": splits.metadata.name, "train": len(train), "validation": len(val) if val else 0,
                        "test": len(test)},
               "versions": versions(), "git_revision": git_revision(), "devices": len(trainer.mesh.devices.ravel()),
               **(extra_summary or {})}
    tmp = workdir / (SUMMARY_FILE + ".tmp")
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, workdir / SUMMARY_FILE)
    return summary


def train(config: ConfigDict, workdir: str | os.PathLike, verbose: int = 1) -> dict:
    """``fluxnet train``: the configured model on the configured data, with a run directory."""
    check_workdir(config, Path(workdir))
    splits, _ = prepare_data(config)
    model = build_configured_model(config, splits.metadata.image_shape, splits.metadata.num_classes)
    if verbose:
        model.summary()
    return fit_run(config, workdir, model, splits, verbose=verbose)


def _final_state(state, meta: Mapping, config: ConfigDict):
    """The state a finished run ended with: with ``restore_best_weights`` EarlyStopping's best weights
    (checkpointed with the last epoch), as ``fit`` returned them and ``summary.json`` evaluated them."""
    finished = _stopped_early(meta) or meta["epoch"] >= config.train.epochs
    arrays = meta.get("arrays") or {}
    best = next((v for k, v in arrays.items() if k.endswith(":EarlyStopping")), None)
    if not finished or best is None:
        return state
    return state.replace(params=best["params"], model_state={k: v for k, v in best.items() if k != "params"})


def _restore_variables(workdir: Path, best: bool):
    config = load_saved_config(workdir / CONFIG_FILE)
    model = model_from_config(json.loads((workdir / MODEL_FILE).read_text()))
    trainer = build_trainer(config, model, steps_per_epoch=1)
    if not (workdir / "checkpoints").is_dir():
        raise FileNotFoundError(f"{workdir} has no checkpoints/ to load.")
    checkpointer = _open_checkpoints(config, workdir, monitor=_monitor(config))
    step = checkpointer.best_step() if best else checkpointer.latest_step()
    if step is None:
        raise FileNotFoundError(f"{workdir} has no checkpoint to load.")
    variables, meta, arrays = checkpointer.restore_variables(step, model.abstract_variables())
    checkpointer.close()
    state = trainer.with_variables(trainer.init(jax.random.key(0)), variables)  # evaluation needs no optimizer
    return config, model, trainer, state if best else _final_state(state, {**meta, "arrays": arrays}, config)


def load_run(workdir: str | os.PathLike, best: bool = False) -> tuple[Model, dict]:
    """``(model, variables)`` of a run directory: the recorded architecture with the latest checkpoint's
    variables (those ``summary.json``'s ``test`` reports; for a finished run with EarlyStopping's
    ``restore_best_weights``, its best weights), or with ``best=True`` the best checkpoint's by
    ``train.checkpoint.monitor`` (``summary.json``'s ``best_checkpoint``)."""
    _, model, _, state = _restore_variables(Path(workdir), best)
    return model, jax.device_get(state.variables)


def evaluate_run(workdir: str | os.PathLike, split: str = "test", best: bool = False) -> dict[str, float]:
    """``fluxnet evaluate``: a run's checkpoint on one split of its configured data."""
    config, model, trainer, state = _restore_variables(Path(workdir), best)
    splits, _ = prepare_data(config)
    data = getattr(splits, split, None) if split in ("train", "validation", "test") else None
    if data is None:
        raise ValueError(f"Split {split!r} is not in this run's data; choose train, validation or test.")
    return trainer.evaluate(state, data)


def baseline_report(config: ConfigDict) -> dict:
    """``fluxnet baseline``: majority-class and logistic-regression accuracy on the test split."""
    splits, _ = prepare_data(config)
    return baselines(splits.train.images, splits.train.labels, splits.test.images, splits.test.labels,
                     seed=config.seed)
