"""``fluxnet augment-preview CONFIG [key=value ...] [--output PNG]``: a grid of training images and
augmented versions of them."""
from __future__ import annotations

import jax

from fluxnet import runs
from fluxnet.augment import preview_grid
from fluxnet.cli.args import add_config
from fluxnet.errors import ConfigError
from fluxnet.runs.build import build_augment, prepare_data


def add_parsers(sub) -> None:
    p = sub.add_parser("augment-preview", help="a PNG grid of training images and augmented versions of them")
    add_config(p)
    p.add_argument("--output", default="augment_preview.png", help="the PNG to write")
    p.set_defaults(run=run)


def run(args) -> None:
    config = runs.resolve_config(args.config, args.overrides)
    if not config.get("augment"):
        raise ConfigError(f"{args.config} configures no augmentation: it needs an `augment` list of ops, "
                          "e.g. ({'op': 'RandomRotation', 'factor': 0.1},).")
    splits, _ = prepare_data(config)
    pipeline = build_augment(config, splits.metadata.num_classes)
    print(preview_grid(pipeline, splits.train.images, jax.random.key(config.seed), path=args.output))
