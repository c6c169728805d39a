"""``fluxnet applications [--size N] [--batch B] [--output PNG] [--json PATH]``: every registered Keras
application measured on this machine (parameters, forward FLOPs, images/s, compile seconds at a small
input size) beside Keras' ImageNet accuracy and depth, printed as a table; optionally plotted and saved
as JSON. Offline: the networks are built with random weights."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from fluxnet import applications
from fluxnet.applications.comparison import DEFAULT_BATCH, DEFAULT_SIZE
from fluxnet.files import write_atomic


def add_parsers(sub) -> None:
    p = sub.add_parser("applications", help="compare the registered Keras applications on this machine")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE,
                   help=f"input height and width (default {DEFAULT_SIZE}; a network with a larger minimum uses "
                        "its minimum)")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH, help=f"images per call (default {DEFAULT_BATCH})")
    p.add_argument("--output", default=None, help="a PNG: parameters vs Keras top-1, marker area ~ images/s")
    p.add_argument("--json", default=None, help="write the rows as JSON to this file")
    p.set_defaults(run=run)


def run(args) -> None:
    rows = applications.table(size=args.size, batch=args.batch)
    print(applications.format_table(rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.json, json.dumps([dataclasses.asdict(row) for row in rows], indent=2) + "\n")
        print(args.json)
    if args.output:
        print(applications.plot_table(rows, args.output))
