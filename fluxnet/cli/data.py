"""``fluxnet data prepare NAME [--data_dir D] [--manual_dir M] [--overwrite]``: mnist, fashion_mnist,
cifar10 or cifar100 written to the tfds data dir in ArrayRecord format, without TensorFlow, from the
official files in M or downloaded; ``fluxnet data list [--data_dir D]``: the data sets prepared there."""
from __future__ import annotations

import contextlib
import io
import sys
import warnings

from fluxnet.data.builders import PREPARABLE, official_files
from fluxnet.data.prepare import PreparedDataset, list_prepared, prepare_dataset, prepared_path, read_prepared
from fluxnet.data.sources import data_dir_root

DATA_DIR_HELP = "the tfds data dir (default: $TFDS_DATA_DIR, else ~/tensorflow_datasets)"


def add_parsers(sub) -> None:
    p = sub.add_parser("data", help="prepare public data sets without TensorFlow; list the prepared ones")
    actions = p.add_subparsers(dest="action", required=True)
    prepare = actions.add_parser(
        "prepare", help="write a public data set to the tfds data dir in ArrayRecord format, without TensorFlow")
    prepare.add_argument("name", choices=PREPARABLE.names(), help="the data set")
    prepare.add_argument("--data_dir", default=None, help=DATA_DIR_HELP)
    names_by_files: dict[tuple[str, ...], list[str]] = {}
    for name in PREPARABLE.names():
        names_by_files.setdefault(official_files(name), []).append(name)
    files = "; ".join(f"{', '.join(names)}: {' '.join(f)}" for f, names in names_by_files.items())
    prepare.add_argument("--manual_dir", default=None,
                         help=f"read the official files from this folder instead of downloading them ({files})")
    prepare.add_argument("--overwrite", action="store_true",
                         help="prepare it again where it is already prepared (also over a TFRecord copy)")
    prepare.set_defaults(run=run_prepare)
    listing = actions.add_parser("list", help="the data sets prepared in the tfds data dir")
    listing.add_argument("--data_dir", default=None, help=DATA_DIR_HELP)
    listing.set_defaults(run=run_list)


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"fluxnet data prepare: warning: {message}", file=sys.stderr)


def run_prepare(args) -> None:
    existing = read_prepared(prepared_path(args.name, args.data_dir))
    if existing is not None and existing.file_format == "array_record" and not args.overwrite:
        print(f"{_describe(existing)}: already prepared (--overwrite prepares it again).")
        return
    source = f"the files in {args.manual_dir}" if args.manual_dir else "downloaded official files"
    print(f"Preparing {args.name} in {data_dir_root(args.data_dir)} from {source}...", flush=True)
    # tfds prints "Downloading and preparing dataset ..." and "... prepared to ...": fluxnet's lines say it
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.showwarning = _print_warning   # one line each, e.g. a file that is not the official one
        dataset = prepare_dataset(args.name, data_dir=args.data_dir, manual_dir=args.manual_dir,
                                  overwrite=args.overwrite)
    print(f"{_describe(dataset)}: prepared.")


def _describe(dataset: PreparedDataset) -> str:
    return f"{dataset.name} {dataset.version} in {dataset.path} ({dataset.split_summary()})"


def run_list(args) -> None:
    root = data_dir_root(args.data_dir)
    datasets = list_prepared(args.data_dir)
    if not datasets:
        print(f"No data sets are prepared in {root}. Prepare one with: fluxnet data prepare NAME "
              f"({', '.join(PREPARABLE.names())}).")
        return
    print(f"Data sets prepared in {root}:")
    print(format_table(datasets))


def format_table(datasets: list[PreparedDataset]) -> str:
    """One row per data set: name, version, file format, splits, path (TFRecord ones need TensorFlow)."""
    rows = [("NAME", "VERSION", "FORMAT", "SPLITS", "PATH")]
    rows += [(d.name, d.version, d.file_format + ("" if d.file_format == "array_record" else " (needs TensorFlow)"),
              d.split_summary(), str(d.path)) for d in datasets]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  " + "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]) for row in rows)
