"""What a run config must hold, checked whole before a run touches anything.

:func:`check_run_config` names the first offending key and what it expects. ``OPTIONAL`` lists the
settings that ``key=None`` may turn off on the command line (a key whose default is None takes None
too); a required setting given None is refused here by name.
"""
from __future__ import annotations

import inspect
import math
import numbers
from typing import Any, Mapping, Sequence

from ml_collections import ConfigDict

from fluxnet import metrics as metrics_lib
from fluxnet.errors import ConfigError
from fluxnet.train.callbacks import EarlyStopping
from fluxnet.tree import plain

GROUPS = ("data", "loss", "optimizer", "train")  # and "model", or the "transfer" group that replaces it
OPTIONAL = frozenset({
    "data.data_dir", "data.splits.validation", "data.image_size", "data.classes",
    "data.train_per_class", "data.preprocess.rescale", "augment", "optimizer.learning_rate", "optimizer.schedule",
    "optimizer.weight_decay", "optimizer.mu_dtype", "optimizer.clipnorm", "optimizer.clipvalue",
    "optimizer.global_clipnorm",
    "train.class_weight", "train.early_stopping", "train.compilation_cache", "train.plots", "train.checkpoint.monitor",
    "pretrain.name", "pretrain.zoo",
    "transfer.zoo", "transfer.fine_tune_layers", "transfer.input_size",
})


def is_optional(key: str) -> bool:
    return key in OPTIONAL


def _get(config: ConfigDict, key: str) -> Any:
    value = config
    for part in key.split("."):
        value = value.get(part) if hasattr(value, "get") else None
    return plain(value)


def _int(config: ConfigDict, key: str, minimum: int | None = None, optional: bool = False) -> None:
    value = _get(config, key)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ConfigError(f"Config key {key!r} must be an int{bound}{' or None' if optional else ''}, got {value!r}.")


def _finite(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def _has_validation(config: ConfigDict) -> bool:
    return (_get(config, "data.splits") or {}).get("validation", 0.1) is not None


def logged_names(config: ConfigDict) -> list[str]:
    """What a run logs each epoch: the loss, each metric, the learning rate, and val_* of the first two
    when the data has a validation split."""
    names = ["loss", *(metrics_lib.name_of(m) for m in plain(config.get("metrics")) or ())]
    return [*names, "learning_rate", *(f"val_{n}" for n in names if _has_validation(config))]


def _check_monitor(config: ConfigDict, key: str) -> None:
    monitor = _get(config, key)
    logged = logged_names(config)
    if monitor is not None and monitor not in logged:
        raise ConfigError(f"Config key {key!r} is {monitor!r}, which the run does not log; logged values: "
                          f"{', '.join(logged)}.")


def _check_class_weight(value: Any) -> None:
    if value is None or value == "balanced":
        return
    items = value.items() if isinstance(value, Mapping) else enumerate(value) \
        if isinstance(value, Sequence) and not isinstance(value, str) else None
    if items is None:
        raise ConfigError(f"Config key 'train.class_weight' must be None, 'balanced', a dict or a list of "
                          f"weights, got {value!r}.")
    for cls, weight in items:
        if isinstance(cls, bool) or not isinstance(cls, int) and not (isinstance(cls, str) and cls.isdigit()):
            raise ConfigError(f"Config key 'train.class_weight' names the class {cls!r}; classes are ids "
                              "(0, 1, ...).")
        if not _finite(weight) or weight < 0:
            raise ConfigError(f"Config key 'train.class_weight' gives class {cls} the weight {weight!r}; "
                              "weights must be finite numbers >= 0.")


def _check_streaming(config: ConfigDict) -> None:
    """``data.streaming`` is "auto", True or False; ``data.max_in_memory_mb`` a finite number > 0;
    ``data.workers`` an int >= 0 (each absent from older configs: their defaults)."""
    mode = _get(config, "data.streaming")
    if mode is not None and not (mode == "auto" or isinstance(mode, bool)):
        raise ConfigError(f"Config key 'data.streaming' must be 'auto', True or False, got {mode!r}.")
    limit = _get(config, "data.max_in_memory_mb")
    if limit is not None and (not _finite(limit) or limit <= 0):
        raise ConfigError(f"Config key 'data.max_in_memory_mb' must be a finite number > 0 (MiB of decoded images "
                          f"above which data.streaming='auto' streams), got {limit!r}.")
    if _get(config, "data.workers") is not None:
        _int(config, "data.workers", minimum=0)


def check_run_config(config: ConfigDict) -> None:
    """Refuse a config no run can use, naming the key: missing groups, impossible counts, a learning
    rate or rescale that is not a finite positive number, a monitor the run does not log, bad class
    weights. Everything else is checked where it is used, still before the workdir is written."""
    missing = [g for g in GROUPS if not hasattr(config.get(g), "keys")]
    if missing:
        raise ConfigError(f"The config has no {', '.join(repr(g) for g in missing)} group; a run config needs "
                          f"{', '.join(GROUPS)} (see configs/digits_cnn.py).")
    _int(config, "seed", minimum=0)
    if _get(config, "seed") >= 2 ** 32:
        raise ConfigError(f"Config key 'seed' must be below 2**32, got {_get(config, 'seed')}.")
    for key in ("train.epochs", "train.batch_size", "train.checkpoint.keep"):
        _int(config, key, minimum=1)
    if _get(config, "train.steps_per_execution") != "auto":
        _int(config, "train.steps_per_execution", minimum=1)
    if _get(config, "train.grad_accum_steps") is not None:
        _int(config, "train.grad_accum_steps", minimum=1)
    _int(config, "data.train_per_class", minimum=1, optional=True)
    _check_streaming(config)
    if not isinstance(_get(config, "train.plots"), (bool, type(None))):
        raise ConfigError(f"Config key 'train.plots' must be True or False, got {_get(config, 'train.plots')!r}.")
    for key in ("optimizer.learning_rate", "data.preprocess.rescale"):
        value = _get(config, key)
        if value is not None and (not _finite(value) or value <= 0):
            raise ConfigError(f"Config key {key!r} must be a finite number > 0 (or None), got {value!r}.")
    _check_class_weight(_get(config, "train.class_weight"))
    if _has_validation(config):  # without a validation split checkpoints are kept by recency alone
        _check_monitor(config, "train.checkpoint.monitor")
    early_stopping = _get(config, "train.early_stopping")
    if early_stopping:
        unknown = sorted(set(early_stopping) - set(inspect.signature(EarlyStopping).parameters))
        if unknown:
            raise ConfigError(f"Config key 'train.early_stopping' has unknown argument(s) {unknown}; EarlyStopping "
                              f"takes {', '.join(inspect.signature(EarlyStopping).parameters)}.")
    if early_stopping and early_stopping.get("patience"):
        _int(config, "train.early_stopping.patience", minimum=0)
        _check_monitor(config, "train.early_stopping.monitor")


def check_reportable(config: ConfigDict) -> None:
    """A ``train``/``pretrain``/``transfer`` run reports on its test split: it must have one (sweeps and
    cross-validation select on validation and need none)."""
    if (_get(config, "data.splits") or {}).get("test", 0.2) is None:
        raise ConfigError("Config key 'data.splits.test' is None, but a run reports its test metrics; give a "
                          "fraction or a tfds split (experiments: fluxnet sweep/tune/cv select on validation).")
