"""``fluxnet sweep | tune | cv``: experiments of many runs (``fluxnet.tune``), each in a directory
(default ``runs/<config stem>-sweep``, ``-tune``, ``-cv``) that a rerun resumes.

    fluxnet sweep CONFIG [key=value ...] [--space K=SPEC ...] [--workdir DIR] [--method grid|random]
                  [--trials N] [--seed S] [--cv K] [--population P]
    fluxnet tune  CONFIG [key=value ...] [--space K=SPEC ...] [--workdir DIR] --trials N [--storage URL]
                  [--study NAME] [--sampler tpe|random|cmaes|grid] [--pruner hyperband|median|none]
                  [--metric NAME] [--direction maximize|minimize] [--seed S] [--cv K] [--population P]
    fluxnet cv    CONFIG [key=value ...] [--workdir DIR] --folds K [--population P]
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from fluxnet import runs, tune
from fluxnet.cli.args import add_config
from fluxnet.runs import compilation_cache
from fluxnet.runs.signals import StopSignals
from fluxnet.tune.study import PRUNERS, SAMPLERS


def add_parsers(sub) -> None:
    s = sub.add_parser("sweep", help="train a grid or random points of a search space")
    _common(s)
    s.add_argument("--method", default="grid", choices=tune.experiments.METHODS)
    s.add_argument("--trials", type=int, default=None, help="points to train (random: default 10)")
    s.add_argument("--population", type=int, default=None, metavar="P",
                   help="points differing only in learning rate, weight decay or seed train together, P at a time "
                        "(1: one after another; default: as many as fit in memory)")
    s.set_defaults(run=run_sweep, suffix="-sweep")
    t = sub.add_parser("tune", help="an Optuna search of a space (resumable; workers may share it)")
    _common(t)
    t.add_argument("--trials", type=int, required=True, help="finished trials of the study, over all workers")
    t.add_argument("--storage", default=None, help="an Optuna storage URL (default: a journal file in DIR)")
    t.add_argument("--study", default=None, help="the study's name (default: DIR's name)")
    t.add_argument("--sampler", default="tpe", choices=SAMPLERS)
    t.add_argument("--pruner", default="median", choices=PRUNERS)
    t.add_argument("--metric", default="val_accuracy", help="the validation metric to optimise")
    t.add_argument("--direction", default=None, choices=("maximize", "minimize"),
                   help="default: the metric's own (maximize accuracy, minimize loss)")
    t.add_argument("--population", type=int, default=1, metavar="P",
                   help="ask P trials at once and train those differing only in learning rate, weight decay or "
                        "seed together (default 1: one at a time, each informed by all before it)")
    t.set_defaults(run=run_tune, suffix="-tune")
    c = sub.add_parser("cv", help="stratified K-fold cross-validation of a config")
    add_config(c)
    c.add_argument("--workdir", default=None, help="default: runs/<config stem>-cv")
    c.add_argument("--folds", type=int, required=True)
    c.add_argument("--population", type=int, default=None, metavar="P",
                   help="folds trained together as one vmapped program, P at a time (1: one after another; "
                        "default: all where they fit in memory and it is measured faster)")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(run=run_cv, suffix="-cv")


def _common(p) -> None:
    add_config(p)
    p.add_argument("--space", action="append", default=[], metavar="KEY=SPEC",
                   help="add or replace a dimension, SPEC a Python literal (a list or {'loguniform': [lo, hi]})")
    p.add_argument("--workdir", default=None, help="the experiment directory (default: runs/<config stem>-...)")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    p.add_argument("--cv", type=int, default=None, metavar="K", help="score each trial by K-fold cross-validation")
    p.add_argument("--quiet", action="store_true")


def _setup(args):
    # workers sharing one accelerator must not each take most of its memory up front
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    config = runs.resolve_config(args.config, args.overrides)
    compilation_cache.configure(config)
    workdir = args.workdir or str(Path("runs") / (Path(args.config).stem + args.suffix))
    return config, workdir


def _space(args):
    return tune.space.parse(tune.space.load_sweep(args.config), args.space)


def run_sweep(args) -> None:
    config, workdir = _setup(args)
    with StopSignals() as stop:
        best = tune.sweep(config, workdir, _space(args), method=args.method, trials=args.trials,
                          seed=args.seed, cv=args.cv, verbose=0 if args.quiet else 1, should_stop=stop,
                          population=args.population)
    print(json.dumps({k: best[k] for k in ("trial", "params", "value", "metric", "test")} if best else None))


def run_tune(args) -> None:
    config, workdir = _setup(args)
    with StopSignals() as stop:
        best = tune.search(config, workdir, _space(args), args.trials, storage=args.storage,
                           study_name=args.study, sampler=args.sampler, pruner=args.pruner, metric=args.metric,
                           direction=args.direction, seed=args.seed, cv=args.cv, verbose=0 if args.quiet else 1,
                           should_stop=stop, population=args.population)
    print(json.dumps({k: best[k] for k in ("trial", "params", "value", "metric", "test")} if best else None))


def run_cv(args) -> None:
    config, workdir = _setup(args)
    with StopSignals() as stop:
        result = tune.cross_validate(config, workdir, args.folds, verbose=0 if args.quiet else 1, should_stop=stop,
                                     population=args.population)
    print(json.dumps({"mean": result["mean"], "std": result["std"]}))
