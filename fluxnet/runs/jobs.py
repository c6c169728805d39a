"""The jobs of the command line: ``train``, ``pretrain`` and ``transfer``, each build -> fit -> report
in one locked run directory, and ``baseline``.

Each job first checks the config and refuses a workdir of another config (reading only), and locks an
existing workdir at once, so a second process on it stops before any work; a new workdir is created
(and locked) only once the data and model are built and checked, so a mistake leaves nothing behind.
``should_stop`` (a :class:`~fluxnet.runs.signals.StopSignals`) is asked between phases and after every
training step: a signal ends the job with ``TrainingInterrupted`` and nothing half-written. A finished
run of fewer than ``SHORT_RUN_STEPS`` optimisation steps in all ends with a warning (also at ``verbose=0``).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jax
from ml_collections import ConfigDict

from fluxnet import optimizers
from fluxnet.applications import APPLICATIONS
from fluxnet.data.splits import Split
from fluxnet.errors import AlreadyExistsError
from fluxnet.models import Model
from fluxnet.runs.baselines import baselines
from fluxnet.runs.build import (TENSORBOARD_DIR, application_input, application_spec, build_optimizer,
                                configured_model, epoch_examples, prepare_data, steps_per_epoch)
from fluxnet.runs.fit import FitResult, fit_run
from fluxnet.runs.lock import RunLock
from fluxnet.runs.report import write_report
from fluxnet.runs.schema import check_reportable, check_run_config
from fluxnet.runs.signals import StopSignals
from fluxnet.runs.workdir import check_workdir
from fluxnet.train.callbacks import Profile
from fluxnet.train.faults import CrashPoint
from fluxnet.transfer import build_transfer_model, configure, load_keras_weights, pretrained
from fluxnet.tree import plain

SHORT_RUN_STEPS = 100  # a run of fewer optimisation steps rarely trains a model: likely a mistake


def _claim(config: ConfigDict, workdir: Path, lock: RunLock) -> None:
    check_run_config(config)
    check_reportable(config)
    check_workdir(config, workdir)  # refused before anything is loaded; fit_run prints the notes
    if workdir.exists():
        lock.acquire()


def _fit_and_report(config: ConfigDict, workdir: Path, lock: RunLock, model: Model, splits, *, verbose: int,
                    crash_at: CrashPoint | None, should_stop: StopSignals | None, extra_summary=None,
                    **fit_options) -> tuple[FitResult, dict]:
    """fit -> report in the locked ``workdir``, stopping cleanly between the phases on a signal."""
    if should_stop is not None:
        should_stop.check(f"{workdir} was not changed")
    fit = fit_run(config, workdir, model, splits, verbose=verbose, lock=lock, crash_at=crash_at,
                  should_stop=should_stop, **fit_options)
    if should_stop is not None:
        should_stop.check(f"training is complete and saved in {workdir}; run the same command to write its report")
    summary = write_report(config, workdir, fit, splits, verbose=verbose, extra_summary=extra_summary)
    if should_stop is not None:
        should_stop.check(f"the run in {workdir} is complete and reported")
    _warn_if_short(config, splits.train)  # beside the test metrics and baselines: why a score may fall short
    return fit, summary


def _warn_if_short(config: ConfigDict, train: Split) -> None:
    """One line on stderr when the whole run trains fewer than ``SHORT_RUN_STEPS`` steps (few-shot data
    at a large batch size: 50 images at batch 32 are 2 steps an epoch), counted as Keras batches:
    ``train.epochs * ceil(examples an epoch / train.batch_size)``."""
    steps = config.train.epochs * steps_per_epoch(config, train)
    if steps >= SHORT_RUN_STEPS:
        return
    examples = epoch_examples(config, train)
    drawn = f" (oversampled from {len(train)})" if examples != len(train) else ""
    print(f"Warning: this run trains only {steps} optimisation steps (train.epochs={config.train.epochs} x "
          f"ceil({examples} training examples{drawn} / train.batch_size={config.train.batch_size})); fewer than "
          f"{SHORT_RUN_STEPS} rarely train a model: raise train.epochs or lower train.batch_size.", file=sys.stderr)


def train(config: ConfigDict, workdir: str | os.PathLike, verbose: int = 1,
          crash_at: CrashPoint | None = None, should_stop: StopSignals | None = None, profile: bool = False) -> dict:
    """``fluxnet train``: the configured model on the configured data, with a run directory;
    ``profile``: a ``jax.profiler`` trace of a few steps into its TensorBoard folder."""
    workdir = Path(workdir)
    with RunLock(workdir) as lock:
        _claim(config, workdir, lock)
        splits, _ = prepare_data(config, allow_streaming=True)
        model = configured_model(config, splits.metadata)
        if verbose:
            model.summary()
        callbacks = [Profile(str(workdir / TENSORBOARD_DIR))] if profile else []
        return _fit_and_report(config, workdir, lock, model, splits, verbose=verbose, crash_at=crash_at,
                               should_stop=should_stop, callbacks=callbacks)[1]


def pretrain(config: ConfigDict, workdir: str | os.PathLike, verbose: int = 1,
             crash_at: CrashPoint | None = None, should_stop: StopSignals | None = None) -> dict:
    """``fluxnet pretrain``: train the configured model, then export the layers up to ``pretrain.cut``
    to ``WORKDIR/backbone`` and, when ``pretrain.name`` is set, to the zoo."""
    workdir, p = Path(workdir), config.pretrain
    own = False  # the zoo entry is this run's own earlier export (a rerun may replace it)
    if p.name is not None:
        entry = pretrained.entry_dir(p.name, p.zoo)  # a bad zoo name fails before training
        own = (entry / pretrained.INFO_FILE).is_file() and \
            json.loads((entry / pretrained.INFO_FILE).read_text()).get("workdir") == str(workdir.resolve())
        if entry.exists() and not (p.overwrite or own):
            raise AlreadyExistsError(f"The zoo entry {entry} exists (from another run); pass "
                                     "pretrain.overwrite=True to replace it, or choose another pretrain.name.")
    with RunLock(workdir) as lock:
        _claim(config, workdir, lock)
        splits, _ = prepare_data(config, allow_streaming=True)
        model = configured_model(config, splits.metadata)
        model.get_layer(p.cut)  # an unknown cut layer fails before training (listing the layer names)
        fit, summary = _fit_and_report(config, workdir, lock, model, splits, verbose=verbose, crash_at=crash_at,
                                       should_stop=should_stop)
        backbone = Model(model.inputs, model.get_layer(p.cut).output, name="backbone")
        variables = jax.device_get(fit.state.variables)
        info = {"source": {"data": config.data.name, "classes": list(config.data.get("classes") or []) or None,
                           "class_names": list(splits.metadata.class_names)},
                "cut": p.cut, "test": summary["test"], "workdir": str(workdir.resolve())}
        pretrained.save_backbone(backbone, variables, workdir / pretrained.RUN_BACKBONE_DIR, info=info,
                                 overwrite=True)
    if p.name is not None:
        path = pretrained.save_backbone(backbone, variables, entry, info=info, overwrite=p.overwrite or own)
        if verbose:
            print(f"Backbone exported to the zoo as {p.name!r}: {path}")
    return summary


def transfer(config: ConfigDict, workdir: str | os.PathLike, verbose: int = 1,
             crash_at: CrashPoint | None = None, should_stop: StopSignals | None = None) -> dict:
    """``fluxnet transfer``: a new head on the configured backbone, trained in the configured mode
    (the backbone's group learns at ``transfer.backbone_lr_factor`` times the head's rate)."""
    workdir, t = Path(workdir), config.transfer
    with RunLock(workdir) as lock:
        _claim(config, workdir, lock)
        backbone, backbone_variables, source = transfer_backbone(config)
        splits, _ = prepare_data(config, allow_streaming=True)
        model = build_transfer_model(backbone, splits.metadata.num_classes, **plain(t.head))
        groups = configure(model, backbone, t.mode, t.fine_tune_layers)
        init = pretrained.restore_into(model.init(jax.random.key(config.seed)), backbone_variables,
                                       exclude=list(t.exclude))
        steps = steps_per_epoch(config, splits.train)
        head_lr = config.optimizer.get("learning_rate") or optimizers.default_learning_rate(config.optimizer.name)
        txs = {"head": build_optimizer(config, steps),
               "backbone": build_optimizer(config, steps, learning_rate=head_lr * t.backbone_lr_factor)}
        if verbose:
            model.summary()
        extra = {"transfer": {"mode": t.mode, "backbone": source}}
        return _fit_and_report(config, workdir, lock, model, splits, verbose=verbose, crash_at=crash_at,
                               should_stop=should_stop, extra_summary=extra, optimizer=txs, param_groups=groups,
                               init_variables=init)[1]


def transfer_backbone(config: ConfigDict) -> tuple[Model, dict, str]:
    """``(backbone, variables, where they came from)`` of ``transfer.backbone``: a Keras application
    with its Keras 3 weights file (``NAME:PATH``; headless, at ``transfer.input_size``), or a zoo
    name, zoo entry folder or pretrain run directory."""
    t = config.transfer
    spec = application_spec(t.backbone)
    if spec is None:
        backbone, variables = pretrained.load(t.backbone, t.zoo)
        return backbone, variables, str(pretrained.resolve(t.backbone, t.zoo))
    name, weights = spec
    _, side = application_input(config)
    backbone = APPLICATIONS.get(name).builder(include_top=False, weights=weights, input_shape=(side, side, 3))
    return backbone, load_keras_weights(backbone, weights), str(Path(weights).resolve())


def baseline_report(config: ConfigDict) -> dict:
    """``fluxnet baseline``: majority-class and logistic-regression accuracy on the test split (fitted on
    the training split), with the split's name and both splits' sizes."""
    check_reportable(config)
    splits, _ = prepare_data(config)
    train, test = splits.train, splits.test
    return {"split": "test", "examples": {"train": len(train), "test": len(test)},
            **baselines(train.images, train.labels, test.images, test.labels, seed=config.seed)}
