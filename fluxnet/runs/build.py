"""From a config to the objects a run needs: data splits, the model, its augmentation, the Trainer and
its callbacks. Nothing here reads or writes a run directory."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from ml_collections import ConfigDict

from fluxnet import losses, optimizers, pretrained
from fluxnet.applications import APPLICATIONS
from fluxnet.applications.inputs import application_images, input_size
from fluxnet.augment import Pipeline
from fluxnet.errors import ConfigError, NotFoundError
from fluxnet.registry import unknown_name_error
from fluxnet.data import DEFAULT_SPLITS, limit_per_class, load_dataset, num_batches, preprocess_splits, select_classes
from fluxnet.data.load import DEFAULT_MAX_IN_MEMORY_MB
from fluxnet.data.splits import DatasetMetadata, DatasetSplits, Split
from fluxnet.data.streaming import DEFAULT_WORKERS, Stream
from fluxnet.models import Model
from fluxnet.models.builders import build_model
from fluxnet.train import EarlyStopping, MetricsLog, TensorBoard, Trainer
from fluxnet.tree import plain

METRICS_FILE, TENSORBOARD_DIR = "metrics.jsonl", "tensorboard"
BASELINE_SAMPLE = 10_000  # the rows of a streamed split the baselines fit and score


def streaming_mode(config: ConfigDict, allow_streaming: bool) -> bool | str:
    """``data.streaming`` (``"auto"``, True, False; default ``"auto"``) where the command streams
    (``allow_streaming``); elsewhere False, and data.streaming=True refused by name."""
    mode = config.data.get("streaming", "auto")
    if allow_streaming:
        return mode
    if mode is True:
        raise ConfigError("Config key 'data.streaming' is True, but this command reads its data into memory (sweeps, "
                          "tuning, cross-validation, populations, baselines and augmentation previews do); set "
                          "data.streaming=False or 'auto'. fluxnet train, pretrain, transfer and evaluate stream.")
    return False


def load_splits(config: ConfigDict, allow_streaming: bool = False) -> DatasetSplits:
    """The configured data set split (raw images), restricted to ``data.classes`` (relabelled 0..k-1) and
    to ``data.train_per_class`` training examples per class where set. With ``allow_streaming`` the
    splits are streams (``fluxnet.data.Stream``, read by ``data.workers`` processes) as ``data.streaming``
    says: True, or ``"auto"`` when the decoded images exceed ``data.max_in_memory_mb``."""
    d = config.data
    splits = load_dataset(d.name, data_dir=d.data_dir, splits=plain(d.splits), seed=config.seed,
                          stratify=d.stratify, image_size=d.image_size,
                          streaming=streaming_mode(config, allow_streaming),
                          max_in_memory_mb=d.get("max_in_memory_mb", DEFAULT_MAX_IN_MEMORY_MB),
                          workers=d.get("workers", DEFAULT_WORKERS))
    if d.get("classes"):
        splits = select_classes(splits, d.classes)
    if d.get("train_per_class"):
        splits = dataclasses.replace(splits, train=limit_per_class(splits.train, d.train_per_class, seed=config.seed))
    return splits


def preprocess(config: ConfigDict, splits: DatasetSplits) -> tuple[DatasetSplits, Any]:
    """``(splits, preprocessor)``: ``data.preprocess`` fitted on the training split only, applied to all;
    for a Keras application backbone, that network's own inputs instead (:func:`application_input`)."""
    app = application_input(config)
    if app is None:
        return preprocess_splits(splits, plain(config.data.preprocess))
    name, size = app
    given = {k: v for k, v in plain(config.data.preprocess).items() if v not in (None, False, 0.0, "bilinear")}
    if given:
        raise ConfigError(f"transfer.backbone is the Keras application {name!r}, which takes its own inputs "
                          f"(resized, RGB, its preprocess_input on 0..255 pixels), but data.preprocess also sets "
                          f"{given}: set those keys to None (e.g. data.preprocess.rescale=None).")
    return splits.map_images(lambda images: application_images(images, name, size)), None


def application_input(config: ConfigDict) -> tuple[str, int] | None:
    """``(application name, input side)`` when ``transfer.backbone`` is a Keras application --
    ``NAME:WEIGHTS.weights.h5`` or a zoo entry made from one (``"application"`` in its info) -- else None.
    The side is ``transfer.input_size``, default the network's smallest."""
    t = config.get("transfer")
    if t is None:
        return None
    spec = application_spec(t.backbone)
    if spec is not None:
        name = spec[0]
    else:
        try:  # a zoo entry made from an application says so; a missing one is the transfer job's error
            name = pretrained.info(t.backbone, t.zoo).get("application")
        except NotFoundError:
            return None
    return None if name is None else (name, input_size(name, t.get("input_size")))


def application_spec(backbone: str) -> tuple[str, str] | None:
    """``(name, weights path)`` of a ``NAME:PATH`` backbone (NAME a registered application); None for a
    zoo name or a folder."""
    name, sep, path = str(backbone).partition(":")
    if not sep or Path(backbone).exists():
        return None
    if name not in APPLICATIONS:
        raise unknown_name_error("application (transfer.backbone=NAME:WEIGHTS)", name, APPLICATIONS.names())
    return name, path


def prepare_data(config: ConfigDict, allow_streaming: bool = False) -> tuple[DatasetSplits, Any]:
    """``(splits, preprocessor)``: :func:`load_splits`, then :func:`preprocess` (a streamed split's
    statistics come from a seeded sample of its training split)."""
    return preprocess(config, load_splits(config, allow_streaming))


def in_memory(split: Split | Stream, seed: int) -> Split:
    """A split as arrays: an in-memory one as it is, a seeded sample of at most ``BASELINE_SAMPLE`` rows of
    a streamed one (what the baselines fit and score)."""
    return split if isinstance(split, Split) else split.sample(BASELINE_SAMPLE, seed)


def model_inputs(split: Split | Stream) -> Any:
    """What ``Trainer.predict`` takes of a split: its images, or the stream itself."""
    return split.images if isinstance(split, Split) else split


def configured_model(config: ConfigDict, metadata: DatasetMetadata) -> Model:
    """The model ``model.name`` builds (arguments from ``model.<name>``) for the data's shape and classes,
    in ``train.dtype_policy`` (``fluxnet.dtype_policies``)."""
    name = config.model.name
    model = build_model(name, metadata.image_shape, metadata.num_classes, **plain(config.model.get(name, {})))
    policy = config.train.get("dtype_policy", "float32")
    if policy != "float32":  # part of the architecture: model.json records each layer's policy
        model.dtype_policy = policy
    return model


def build_augment(config: ConfigDict, num_classes: int) -> Pipeline | None:
    """The on-device augmentation pipeline of ``config.augment`` (a list of ops), or None."""
    ops = plain(config.get("augment"))
    return Pipeline.from_config(ops, num_classes=num_classes) if ops else None


def epoch_examples(config: ConfigDict, train: Split) -> int:
    """The examples an epoch trains on: the training split's, or with ``train.oversample`` every class
    present at the majority class's count (what oversampling draws each epoch)."""
    if not config.train.oversample:
        return len(train)
    counts = np.unique(np.asarray(train.labels), return_counts=True)[1]
    return int(counts.max()) * len(counts)


def steps_per_epoch(config: ConfigDict, train: Split) -> int:
    """Optimisation steps in an epoch: one a batch, the last partial batch included (as in Keras)."""
    return num_batches(epoch_examples(config, train), config.train.batch_size, drop_remainder=False)


def schedule_name(config: ConfigDict) -> str:
    """The name of ``optimizer.schedule`` (a name or ``{"name": ..., **arguments}``; None: constant)."""
    schedule = plain(config.optimizer.get("schedule"))
    return (schedule.get("name") if isinstance(schedule, Mapping) else schedule) or "constant"


def build_optimizer(config: ConfigDict, steps: int, learning_rate: float | None = None):
    """``config.optimizer`` for a run of ``steps`` steps per epoch (its schedules span the run), with
    ``learning_rate`` replacing the configured one where given."""
    opt = plain(config.optimizer)
    if learning_rate is not None:
        opt = {**opt, "learning_rate": learning_rate}
    return optimizers.build_optimizer(opt, total_steps=max(1, config.train.epochs * steps))


def build_trainer(config: ConfigDict, model: Model, steps: int, optimizer: Any = None,
                  param_groups: Mapping[str, str] | None = None) -> Trainer:
    """The Trainer a config describes (``optimizer``: an optax transform, or one per parameter group
    of ``param_groups``, replacing the config's); ``config.augment`` runs inside its train step."""
    loss_cfg = dict(plain(config.loss))
    loss = losses.get(loss_cfg.pop("name"), **loss_cfg)
    return Trainer(model, loss=loss, optimizer=build_optimizer(config, steps) if optimizer is None else optimizer,
                   metrics=list(config.metrics), augment=build_augment(config, model.outputs[0].shape[-1]),
                   steps_per_execution=config.train.steps_per_execution, param_groups=param_groups,
                   parallel=config.train.get("parallel", "sharding"),
                   grad_accum_steps=config.train.get("grad_accum_steps", 1), remat=config.train.get("remat", "none"))


def early_stopping(config: ConfigDict) -> EarlyStopping | None:
    """``train.early_stopping`` as a callback, or None when it sets no patience."""
    es = plain(config.train.early_stopping)
    return EarlyStopping(**es) if es and es.get("patience") else None


def build_callbacks(config: ConfigDict, workdir: Path) -> list:
    """The callbacks of a run: ``metrics.jsonl``, TensorBoard, and EarlyStopping where configured."""
    es = early_stopping(config)
    return [MetricsLog(str(workdir / METRICS_FILE)), TensorBoard(str(workdir / TENSORBOARD_DIR)),
            *([es] if es else [])]


def checkpoint_monitor(config: ConfigDict) -> str | None:
    """The metric that ranks checkpoints (``train.checkpoint.monitor``); None without a validation split."""
    has_validation = (plain(config.data.splits) or DEFAULT_SPLITS).get("validation") is not None
    return plain(config.train.checkpoint).get("monitor") if has_validation else None
