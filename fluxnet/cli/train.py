"""``fluxnet train|pretrain|transfer CONFIG [key=value ...] [--workdir DIR] [--quiet]`` (train also
``[--profile]``): a run directory from a config (resumed if it exists); prints the summary's head as
JSON on the last line. Compiled steps are cached on disk (``runs.compilation_cache``)."""
from __future__ import annotations

import json

from fluxnet import runs
from fluxnet.cli.args import add_config, default_workdir
from fluxnet.runs import compilation_cache
from fluxnet.runs.signals import StopSignals
from fluxnet.train.faults import from_environment

JOBS = {"train": (runs.train, "train a config into a run directory (resumes if it exists)"),
        "pretrain": (runs.pretrain, "train a source task and export its backbone (configs/digits_pretrain.py)"),
        "transfer": (runs.transfer, "train a new head on a pretrained backbone (configs/digits_transfer.py)")}


def add_parsers(sub) -> None:
    for name, (_, text) in JOBS.items():
        p = sub.add_parser(name, help=text)
        add_config(p)
        p.add_argument("--workdir", default=None, help="run directory (default: runs/<config stem>)")
        p.add_argument("--quiet", action="store_true", help="no progress output")
        if name == "train":
            p.add_argument("--profile", action="store_true",
                           help="write a jax.profiler trace of a few steps into the run's tensorboard/ folder")
        p.set_defaults(run=run)


def run(args) -> None:
    job = JOBS[args.command][0]
    config = runs.resolve_config(args.config, args.overrides)
    compilation_cache.configure(config)
    profile = {"profile": True} if getattr(args, "profile", False) else {}
    with StopSignals() as stop:  # SIGTERM/SIGINT: stop at the next step, the last checkpoint complete
        summary = job(config, args.workdir or default_workdir(args.config), verbose=0 if args.quiet else 1,
                      crash_at=from_environment(),  # the resume tests' kill hook, off unless $FLUXNET_CRASH_AT
                      should_stop=stop, **profile)
    print(json.dumps({"test": summary["test"], "baseline": summary["baseline"],
                      "epochs_completed": summary["epochs_completed"]}))
