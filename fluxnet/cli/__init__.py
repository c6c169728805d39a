"""The ``fluxnet`` command line: train, evaluate, summary, baseline.

    fluxnet train CONFIG [key=value ...] [--workdir DIR]
    fluxnet pretrain CONFIG [key=value ...] [--workdir DIR]      (fluxnet.transfer.pretrain)
    fluxnet transfer CONFIG [key=value ...] [--workdir DIR]      (fluxnet.transfer.transfer)
    fluxnet evaluate WORKDIR [--split test] [--best]
    fluxnet summary CONFIG [key=value ...]
    fluxnet baseline CONFIG [key=value ...]
    fluxnet augment-preview CONFIG [key=value ...] [--output PNG]

Errors in configs, data or checkpoints end the command with a one-line message and exit code 2; a
training loss that becomes NaN or inf ends it with exit code 1 (the last good checkpoint is kept).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fluxnet.data.sources import DatasetNotPreparedError


def _default_workdir(config_path: str) -> str:
    return str(Path("runs") / Path(config_path).stem)


def _run_command(args) -> None:
    """``train``, ``pretrain`` or ``transfer``: a run directory from a config; prints the summary's head."""
    from fluxnet import run, transfer

    job = {"train": run.train, "pretrain": transfer.pretrain, "transfer": transfer.transfer}[args.command]
    config = run.resolve_config(args.config, args.overrides)
    summary = job(config, args.workdir or _default_workdir(args.config), verbose=0 if args.quiet else 1)
    print(json.dumps({"test": summary["test"], "baseline": summary["baseline"],
                      "epochs_completed": summary["epochs_completed"]}))


def _cmd_evaluate(args) -> None:
    from fluxnet import run

    print(json.dumps(run.evaluate_run(args.workdir, split=args.split, best=args.best)))


def _cmd_summary(args) -> None:
    from fluxnet import run

    config = run.resolve_config(args.config, args.overrides)
    splits, _ = run.prepare_data(config)
    run.build_configured_model(config, splits.metadata.image_shape, splits.metadata.num_classes).summary()


def _cmd_baseline(args) -> None:
    from fluxnet import run

    print(json.dumps(run.baseline_report(run.resolve_config(args.config, args.overrides))))


def _cmd_augment_preview(args) -> None:
    import jax

    from fluxnet import run
    from fluxnet.augment import preview_grid

    config = run.resolve_config(args.config, args.overrides)
    if not config.get("augment"):
        raise ValueError(f"{args.config} configures no augmentation: it needs an `augment` list of ops, "
                         "e.g. ({'op': 'RandomRotation', 'factor': 0.1},).")
    splits, _ = run.prepare_data(config)
    pipeline = run.build_augment(config, splits.metadata.num_classes)
    print(preview_grid(pipeline, splits.train.images, jax.random.key(config.seed), path=args.output))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fluxnet", description="Keras-style deep learning on JAX.")
    sub = p.add_subparsers(dest="command", required=True)

    for name, text in [("train", "train a config into a run directory (resumes if it exists)"),
                       ("pretrain", "train a source task and export its backbone (configs/digits_pretrain.py)"),
                       ("transfer", "train a new head on a pretrained backbone (configs/digits_transfer.py)")]:
        t = sub.add_parser(name, help=text)
        t.add_argument("config")
        t.add_argument("overrides", nargs="*", help="dotted key=value overrides")
        t.add_argument("--workdir", default=None, help="run directory (default: runs/<config stem>)")
        t.add_argument("--quiet", action="store_true", help="no progress output")
        t.set_defaults(fn=_run_command)

    e = sub.add_parser("evaluate", help="evaluate a run's checkpoint")
    e.add_argument("workdir")
    e.add_argument("--split", default="test", choices=["train", "validation", "test"])
    e.add_argument("--best", action="store_true", help="the best checkpoint instead of the latest")
    e.set_defaults(fn=_cmd_evaluate)

    for name, fn, text in [("summary", _cmd_summary, "print the configured model's summary"),
                           ("baseline", _cmd_baseline, "majority and logistic-regression accuracy")]:
        s = sub.add_parser(name, help=text)
        s.add_argument("config")
        s.add_argument("overrides", nargs="*")
        s.set_defaults(fn=fn)

    a = sub.add_parser("augment-preview", help="a PNG grid of training images and augmented versions of them")
    a.add_argument("config")
    a.add_argument("overrides", nargs="*")
    a.add_argument("--output", default="augment_preview.png", help="the PNG to write")
    a.set_defaults(fn=_cmd_augment_preview)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    from fluxnet.train.sharding import initialize_distributed

    initialize_distributed()
    # key=value overrides may also come after options (``--workdir DIR train.epochs=3``)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.fn(args)
    except (ValueError, TypeError, FileNotFoundError, DatasetNotPreparedError) as err:
        print(f"fluxnet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(f"fluxnet {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
