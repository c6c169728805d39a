"""``fluxnet evaluate WORKDIR [--split test] [--best]``: a run's checkpoint on one split; prints one
JSON object of metrics."""
from __future__ import annotations

import json

from fluxnet import runs
from fluxnet.runs.workdir import SPLITS


def add_parsers(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a run's checkpoint")
    p.add_argument("workdir")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--best", action="store_true", help="the best checkpoint instead of the latest")
    p.set_defaults(run=run)


def run(args) -> None:
    print(json.dumps(runs.evaluate_run(args.workdir, split=args.split, best=args.best)))
