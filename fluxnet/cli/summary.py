"""``fluxnet summary CONFIG [key=value ...]``: the configured model's summary table."""
from __future__ import annotations

from fluxnet import runs
from fluxnet.cli.args import add_config
from fluxnet.runs.build import configured_model, prepare_data


def add_parsers(sub) -> None:
    p = sub.add_parser("summary", help="print the configured model's summary")
    add_config(p)
    p.set_defaults(run=run)


def run(args) -> None:
    config = runs.resolve_config(args.config, args.overrides)
    configured_model(config, prepare_data(config)[0].metadata).summary()
