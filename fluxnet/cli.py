"""The ``fluxnet`` command line: train, evaluate, summary, baseline.

    fluxnet train CONFIG [key=value ...] [--workdir DIR]
    fluxnet evaluate WORKDIR [--split test] [--best]
    fluxnet summary CONFIG [key=value ...]
    fluxnet baseline CONFIG [key=value ...]

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


def _cmd_train(args) -> None:
    from fluxnet import run

    config = run.resolve_config(args.config, args.overrides)
    summary = run.train(config, args.workdir or _default_workdir(args.config), verbose=0 if args.quiet else 1)
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fluxnet", description="Keras-style deep learning on JAX.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a config into a run directory (resumes if it exists)")
    t.add_argument("config")
    t.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    t.add_argument("--workdir", default=None, help="run directory (default: runs/<config stem>)")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    t.set_defaults(fn=_cmd_train)

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
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
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
