"""``fluxnet augment-preview CONFIG [key=value ...] [--workdir DIR | --output PNG]``: a grid of training
images and augmented versions of them, titled with the configured ops, written to
``WORKDIR/augment_preview.png`` (the workdir ``fluxnet train`` would use: ``runs/<config stem>``)."""
from __future__ import annotations

from pathlib import Path

import jax

from fluxnet import runs
from fluxnet.augment import preview_grid
from fluxnet.cli.args import add_config, default_workdir
from fluxnet.errors import ConfigError
from fluxnet.runs.build import build_augment, prepare_data

PREVIEW_FILE = "augment_preview.png"


def add_parsers(sub) -> None:
    p = sub.add_parser("augment-preview", help="a PNG grid of training images and augmented versions of them")
    add_config(p)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workdir", default=None,
                       help=f"run directory to write {PREVIEW_FILE} into (default: runs/<config stem>)")
    where.add_argument("--output", default=None, help="the PNG to write instead")
    p.set_defaults(run=run)


def run(args) -> None:
    config = runs.resolve_config(args.config, args.overrides)
    if not config.get("augment"):
        raise ConfigError(f"{args.config} configures no augmentation: it needs an `augment` list of ops, "
                          "e.g. ({'op': 'RandomRotation', 'factor': 0.1},).")
    output = args.output or Path(args.workdir or default_workdir(args.config)) / PREVIEW_FILE
    splits, _ = prepare_data(config)
    pipeline = build_augment(config, splits.metadata.num_classes)
    print(preview_grid(pipeline, splits.train.images, jax.random.key(config.seed), output))
