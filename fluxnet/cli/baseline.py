"""``fluxnet baseline CONFIG [key=value ...]``: majority-class and logistic-regression accuracy on the test
split; prints one JSON object that names the split and its size."""
from __future__ import annotations

import json

from fluxnet import runs
from fluxnet.cli.args import add_config


def add_parsers(sub) -> None:
    p = sub.add_parser("baseline", help="majority and logistic-regression accuracy on the test split")
    add_config(p)
    p.set_defaults(run=run)


def run(args) -> None:
    print(json.dumps(runs.baseline_report(runs.resolve_config(args.config, args.overrides))))
