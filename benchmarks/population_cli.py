"""End to end: ``fluxnet cv`` with its folds as one population against ``--population 1``, each a fresh
process (start-up, data, compilation, run directories, checkpoints and baselines included), the two
alternating ``--repeats`` times; prints the median wall time of each and their ratio.

    python benchmarks/population_cli.py [--repeats 3] [--population 5] [-- key=value ...]

Default: ``configs/digits_cnn.py model.name=mlp train.epochs=8 optimizer.schedule=constant --folds 5``
(the issue's target); pass other overrides after ``--``, e.g. ``-- train.epochs=8`` for the CNN.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "digits_cnn.py")
DEFAULT = ["model.name=mlp", "train.epochs=8", "optimizer.schedule=constant"]


def run(overrides: list[str], folds: int, population: str, workdir: Path) -> tuple[float, dict]:
    shutil.rmtree(workdir, ignore_errors=True)
    command = [sys.executable, "-m", "fluxnet.cli", "cv", CONFIG, *overrides, "--folds", str(folds),
               "--workdir", str(workdir), "--quiet", *(["--population", population] if population else [])]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--population", default="5", help="P, or 'auto' for the default choice")
    p.add_argument("overrides", nargs="*", default=None)
    args = p.parse_args()
    overrides = args.overrides or DEFAULT
    strategies = {f"--population {args.population}": "" if args.population == "auto" else args.population,
                  "--population 1": "1"}
    times: dict[str, list[float]] = {name: [] for name in strategies}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for name in (list(strategies) if rep % 2 == 0 else list(strategies)[::-1]):
                seconds, results[name] = run(overrides, args.folds, strategies[name], Path(tmp) / "cv")
                times[name].append(seconds)
            print(f"repeat {rep + 1}: " + "  ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    together, alone = list(strategies)
    print(f"\nfluxnet cv {' '.join(overrides)} --folds {args.folds}")
    print("| strategy | median s | speed-up | mean val_accuracy | mean val_loss |\n|---|---:|---:|---:|---:|")
    for k in strategies:
        print(f"| {k} | {med[k]:.2f} | {med[alone] / med[k]:.2f}x | {results[k]['mean']['val_accuracy']:.4f} | "
              f"{results[k]['mean']['val_loss']:.4f} |")


if __name__ == "__main__":
    main()
