"""Study 7: hyperparameter search and cross-validation on the digits MLP (``configs/digits_mlp.py``).

1. TPE against random search at an equal budget of trials: the best validation accuracy so far after
   each trial, over several sampler seeds (``fluxnet tune --pruner none``).
2. What median pruning saves (trials stopped, epochs trained, wall time) and costs (best accuracy).
3. The spread of a single-split validation estimate over seeds (split and initialisation; ``fx.tune.sweep``
   over ``seed``) against the standard deviation of K-fold cross-validations (``fx.tune.cross_validate``).
4. ``fluxnet cv --population K`` against ``--population 1``: wall time, and the same results.

Every timed command runs in a fresh process with a compilation cache of its own.

    python experiments/search.py [--seeds 3] [--trials 20] [--epochs 5] [--split-seeds 10] [--folds 5]
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import common
from fluxnet import runs, tune

NAME = "search"
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "digits_mlp.py"
SEARCHES = (("tpe", "none"), ("random", "none"), ("tpe", "median"))  # (sampler, pruner)
QUICK = {"seeds": 1, "trials": 1, "epochs": 1, "split_seeds": 2, "folds": 2, "searches": SEARCHES[:1]}


def add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, default=3, help="sampler seeds per search")
    p.add_argument("--trials", type=int, default=20, help="finished trials per search")
    p.add_argument("--epochs", type=int, default=5, help="epochs per search trial")
    p.add_argument("--split-seeds", type=int, default=10, help="seeds of the single-split estimate")
    p.add_argument("--folds", type=int, default=5)
    p.set_defaults(searches=SEARCHES)


def read_rows(workdir: Path) -> list[dict]:
    """An experiment's ``results.csv``, in trial order."""
    with open(workdir / "results.csv") as f:
        return sorted(csv.DictReader(f), key=lambda r: int(r["trial"]))


def fluxnet(command: str, workdir: Path, overrides: list[str], *options: str) -> float:
    """``fluxnet COMMAND configs/digits_mlp.py ... --workdir WORKDIR`` in a fresh process with a compilation
    cache of its own (so that no run reuses another's compiled steps, as a first run on a machine), unless
    ``overrides`` choose one; returns its wall time."""
    start = time.perf_counter()
    cache = [] if any(o.startswith("train.compilation_cache=") for o in overrides) else [
        f"train.compilation_cache={workdir / 'xla'}"]
    subprocess.run([sys.executable, "-m", "fluxnet.cli", command, str(CONFIG), *overrides, *cache, *options,
                    "--workdir", str(workdir), "--quiet"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def run_search(workdir: Path, overrides: list[str], sampler: str, pruner: str, seed: int, trials: int) -> dict:
    """One ``fluxnet tune``: the best complete trial's validation accuracy after each trial, epochs
    trained, trials pruned, the wall time and the best trial's test accuracy."""
    seconds = fluxnet("tune", workdir, overrides, "--trials", str(trials), "--sampler", sampler, "--pruner", pruner,
                      "--seed", str(seed))
    rows = read_rows(workdir)
    scores = [float(r["val_accuracy"]) if r["state"] == "complete" else -np.inf for r in rows]
    return {"best_so_far": np.maximum.accumulate(scores).tolist(), "epochs": sum(int(r["epochs"]) for r in rows),
            "pruned": sum(r["state"] == "pruned" for r in rows), "seconds": seconds,
            "test_accuracy": json.loads((workdir / "best.json").read_text())["test"]["accuracy"]}


def cv_summary(cv: dict, seconds: float | None = None) -> dict:
    """A cross-validation's (``cv.json``) val_accuracy and val_loss per fold, its mean and std."""
    return {"val_accuracy": [f["val_accuracy"] for f in cv["folds"]], "val_loss": [f["val_loss"] for f in cv["folds"]],
            "mean": cv["mean"]["val_accuracy"], "std": cv["std"]["val_accuracy"], "seconds": seconds}


def run_cv(workdir: Path, overrides: list[str], folds: int, population: int) -> dict:
    """``fluxnet cv --folds K --population P``, timed."""
    seconds = fluxnet("cv", workdir, overrides, "--folds", str(folds), "--population", str(population))
    return cv_summary(json.loads((workdir / "cv.json").read_text()), seconds)


def main(argv: list[str] | None = None) -> dict:
    args = common.parse(NAME, __doc__, argv, add)
    if args.quick:
        vars(args).update(QUICK)
    overrides = [*([f"data.data_dir={args.data_dir}"] if args.data_dir else []), f"train.epochs={args.epochs}",
                 *(["train.compilation_cache=auto"] if args.quick else [])]  # quick: timings mean nothing
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = {"space": tune.space.load_sweep(CONFIG)}
        # 4: the folds one after another, then the same folds as one population
        sequential = run_cv(tmp / "cv-sequential", overrides, args.folds, 1)
        together = run_cv(tmp / "cv-population", overrides, args.folds, args.folds)
        results["populations"] = {"sequential": sequential, "population": together, "max_abs_diff": {
            k: float(np.max(np.abs(np.subtract(sequential[k], together[k])))) for k in ("val_accuracy", "val_loss")}}
        # 3: single-split estimates over seeds (one sweep) against cv's spread, for several cv seeds
        config = runs.resolve_config(CONFIG, overrides)
        tune.sweep(config, tmp / "split-seeds", tune.space.parse({"seed": list(range(args.split_seeds))}), verbose=0)
        cvs = [together] + [cv_summary(tune.cross_validate(runs.resolve_config(CONFIG, [*overrides, f"seed={s}"]),
                                                           tmp / f"cv-{s}", args.folds, verbose=0))
                            for s in range(1, args.seeds)]
        results["estimates"] = {"single_split": [float(r["val_accuracy"]) for r in read_rows(tmp / "split-seeds")],
                                "cv": [{k: c[k] for k in ("val_accuracy", "mean", "std")} for c in cvs]}
        # 1 and 2: the searches, each seed its own study
        results["searches"] = {
            f"{sampler}+{pruner}": [run_search(tmp / f"{sampler}-{pruner}-{seed}", overrides, sampler, pruner, seed,
                                               args.trials) for seed in range(args.seeds)]
            for sampler, pruner in args.searches}
    results["settings"] = {k: vars(args)[k] for k in ("seeds", "trials", "epochs", "split_seeds", "folds")}
    plot(results, common.png(args))
    return common.write(args, results, tables(results))


def tables(results: dict) -> str:
    s = results["settings"]
    marks = sorted({min(5, s["trials"]), min(10, s["trials"]), s["trials"]})
    rows = []
    for name, runs_ in results["searches"].items():
        curves = np.array([r["best_so_far"] for r in runs_])
        rows.append([name, *[common.mean_std(curves[:, m - 1]) for m in marks],
                     common.mean_std([r["test_accuracy"] for r in runs_]),
                     f"{np.mean([r['pruned'] for r in runs_]):.1f}", f"{np.mean([r['epochs'] for r in runs_]):.0f}",
                     f"{np.mean([r['seconds'] for r in runs_]):.0f}"])
    search = common.markdown(["sampler+pruner", *[f"best val acc, {m} trials" for m in marks], "test acc of best",
                              "pruned trials", "epochs trained", "seconds"], rows)
    e = results["estimates"]
    spread = common.markdown(["estimate", "values", "mean ± std"], [
        [f"single split (15% validation), {len(e['single_split'])} seeds", len(e["single_split"]),
         common.mean_std(e["single_split"])],
        *[[f"{s['folds']}-fold cv, seed {i}: its folds", s["folds"], common.mean_std(c["val_accuracy"])]
          for i, c in enumerate(e["cv"])],
        [f"{s['folds']}-fold cv mean over {len(e['cv'])} seeds", len(e["cv"]),
         common.mean_std([c["mean"] for c in e["cv"]])],
    ])
    p = results["populations"]
    pops = common.markdown(["cv of the MLP", "seconds", "val_accuracy mean ± std"], [
        [f"--population 1 ({s['folds']} folds one after another)", f"{p['sequential']['seconds']:.1f}",
         common.mean_std(p["sequential"]["val_accuracy"])],
        [f"--population {s['folds']} (one program)", f"{p['population']['seconds']:.1f}",
         common.mean_std(p["population"]["val_accuracy"])],
    ])
    diff = p["max_abs_diff"]
    return (f"Searches: {s['seeds']} seeds x {s['trials']} trials x {s['epochs']} epochs, space of "
            f"configs/digits_mlp.py get_sweep(); mean ± std over seeds.\n\n{search}\n\n"
            f"Validation estimates of configs/digits_mlp.py (val_accuracy):\n\n{spread}\n\n"
            f"Populations: {p['sequential']['seconds'] / p['population']['seconds']:.2f}x; largest fold difference "
            f"val_accuracy {diff['val_accuracy']:.2g}, val_loss {diff['val_loss']:.2g}.\n\n{pops}\n")


def plot(results: dict, path: Path) -> None:
    plt = common.pyplot()
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 3.8))
    for name, runs_ in results["searches"].items():
        curves = np.array([r["best_so_far"] for r in runs_])
        trials = np.arange(1, curves.shape[1] + 1)
        a.plot(trials, curves.mean(0), marker=".", label=name)
        a.fill_between(trials, curves.min(0), curves.max(0), alpha=0.15)
    a.set(xlabel="trials", ylabel="best val_accuracy so far", title="search (mean, min-max over seeds)")
    a.legend()
    e = results["estimates"]
    groups = [("single split", e["single_split"]),
              *[(f"cv seed {i}", c["val_accuracy"]) for i, c in enumerate(e["cv"])],
              ("cv means", [c["mean"] for c in e["cv"]])]
    for i, (label, values) in enumerate(groups):
        b.scatter(np.full(len(values), i), values, alpha=0.7)
        b.errorbar(i + 0.15, np.mean(values), yerr=np.std(values), fmt="o", color="k", capsize=4)
    b.set_xticks(range(len(groups)), [g[0] for g in groups], rotation=20)
    b.set(ylabel="val_accuracy", title="validation estimates (mean ± std)")
    p = results["populations"]
    c.bar(["--population 1", f"--population {results['settings']['folds']}"],
          [p["sequential"]["seconds"], p["population"]["seconds"]])
    c.set(ylabel="seconds", title="fluxnet cv wall time")
    common.save_figure(fig, path, (a, b, c))


if __name__ == "__main__":
    main()
