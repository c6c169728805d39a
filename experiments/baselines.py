"""Study: baseline first ("always good to have a baseline").

Majority class, logistic regression, MLP and CNN on the bundled digits, and logistic regression
against the MLP on scikit-learn's breast_cancer and wine: stratified 5-fold cross-validation, the same
folds for every model of a data set (``fluxnet.tune.folds.folds_of``: inputs standardised with each
fold's training statistics). The baselines are ``fluxnet.runs.baselines``; the neural models are the
repository's configs (``configs/digits_mlp.py``, ``configs/digits_cnn.py``) with the Trainer the CLI
builds from them, their folds trained together as one population, as ``fluxnet cv`` trains them
(without its run directories).

    python experiments/baselines.py [--folds 5]

``--quick``: 20 examples per class, one epoch, digits and wine only, no CNN (its path is the MLP's).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import common
import numpy as np
from ml_collections import ConfigDict

from fluxnet.data.splits import DatasetMetadata, DatasetSplits, Split
from fluxnet.runs.baselines import logistic_regression_accuracy, majority_accuracy
from fluxnet.runs.build import build_trainer, configured_model, load_splits, steps_per_epoch
from fluxnet.runs.config import load_config
from fluxnet.runs.population import Pool
from fluxnet.tune.folds import Fold, folds_of
from fluxnet.train import Member, Population

NAME = "baselines"
CONFIGS = Path(__file__).resolve().parent.parent / "configs"
MODELS = ("majority", "logistic", "mlp", "cnn")
TABULAR = ("breast_cancer", "wine")
TABULAR_MODELS = ("majority", "logistic", "mlp")
TABULAR_EPOCHS = 50  # configs/digits_mlp.py's 8 epochs: 360 steps on digits, 120 on breast_cancer, 40 on wine


def add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--folds", type=int, default=5)


def config_for(model: str, data_name: str, args: argparse.Namespace) -> ConfigDict:
    """The run config of ``model`` (``mlp`` or ``cnn``) on ``data_name``: the repository's digits
    config, every example in the folds (no test split held out), inputs standardised."""
    config = load_config(CONFIGS / f"digits_{model}.py")
    config.data.update({"data_dir": args.data_dir, "splits": {"train": "train", "validation": None, "test": None},
                        "preprocess": {"rescale": 1 / 255 if data_name == "digits" else None, "normalize": True}})
    if data_name != "digits":
        config.train.epochs = TABULAR_EPOCHS
    if args.quick:
        config.train.epochs = 1
        config.data.train_per_class = 20 if data_name == "digits" else None
    return config


def tabular(name: str, quick: bool) -> DatasetSplits:
    """scikit-learn's ``name`` (``load_<name>``) as one training split of float feature vectors."""
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, f"load_{name}")()
    x, y = bunch.data.astype(np.float32), bunch.target.astype(np.int32)
    if quick:
        keep = np.concatenate([np.flatnonzero(y == c)[:20] for c in np.unique(y)])
        x, y = x[keep], y[keep]
    metadata = DatasetMetadata(name, int(y.max()) + 1, tuple(map(str, bunch.target_names)), x.shape[1:])
    return DatasetSplits(train=Split(x, y), validation=None, test=None, metadata=metadata)


def neural_cv(config: ConfigDict, folds: list[Fold], metadata: DatasetMetadata) -> list[float]:
    """Each fold's final validation accuracy of ``config``'s model and Trainer, the folds trained together
    as one population (``fluxnet cv``'s execution, without its run directories)."""
    pool = Pool.of_parts([(f.x, f.y, f.train_rows, f.validation_rows) for f in folds], metadata)
    trainer = build_trainer(config, configured_model(config, metadata), steps_per_epoch(config, pool.splits(0).train))
    members = [Member(seed=config.seed, train_rows=tr, validation_rows=va, shuffle_seed=config.seed)
               for tr, va in zip(pool.train_rows, pool.validation_rows)]
    _, histories = Population(trainer).fit(members, (pool.x, pool.y), epochs=config.train.epochs,
                                           batch_size=config.train.batch_size)
    return [h.history["val_accuracy"][-1] for h in histories]


def study(data_name: str, models: tuple[str, ...], args: argparse.Namespace) -> dict:
    """The data set's size and ``{"accuracy": {model: validation accuracy per fold}}``, every model on
    the same folds."""
    raw = load_splits(config_for("mlp", data_name, args)) if data_name == "digits" else tabular(data_name, args.quick)
    folds = folds_of(config_for("mlp", data_name, args), raw, args.folds)
    scores: dict[str, list[float]] = {}
    for model in models:
        if model == "majority":
            scores[model] = [majority_accuracy(f.y[f.train_rows], f.y[f.validation_rows]) for f in folds]
        elif model == "logistic":
            scores[model] = [logistic_regression_accuracy(f.x[f.train_rows], f.y[f.train_rows],
                                                          f.x[f.validation_rows], f.y[f.validation_rows])
                             for f in folds]
        else:
            scores[model] = neural_cv(config_for(model, data_name, args), folds, raw.metadata)
        print(f"{data_name:14s} {model:9s} {common.mean_std(scores[model])}", flush=True)
    return {"examples": len(raw.train), "input_shape": list(raw.metadata.image_shape),
            "classes": raw.metadata.num_classes, "accuracy": scores}


def table_row(name: str, result: dict) -> list:
    """A table row: the data set, each model's mean ± std, and the best neural model's per-fold (paired)
    difference from logistic regression, with the folds where it is better and worse."""
    scores = result["accuracy"]
    best = max((m for m in scores if m in ("mlp", "cnn")), key=lambda m: np.mean(scores[m]))
    paired = np.subtract(scores[best], scores["logistic"])
    mean = round(float(paired.mean()), 9) + 0.0  # no "-0.000" for a difference that is zero
    shape = "x".join(map(str, result["input_shape"]))
    return ([f"{name} ({result['examples']} x {shape}, {result['classes']} classes)"]
            + [common.mean_std(scores[m]) if m in scores else "" for m in MODELS]
            + [f"{best}: {mean:+.3f} ± {paired.std():.3f} (better in {np.sum(paired > 0)}, worse in "
               f"{np.sum(paired < 0)} of {len(paired)})"])


def plot(results: dict[str, dict], folds: int, path: Path) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    models = [m for m in MODELS if any(m in r["accuracy"] for r in results.values())]
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        sets = [d for d in results if model in results[d]["accuracy"]]
        xs = [list(results).index(d) + (i - (len(models) - 1) / 2) * width for d in sets]
        scores = [results[d]["accuracy"][model] for d in sets]
        ax.bar(xs, np.mean(scores, axis=1), width, yerr=np.std(scores, axis=1), capsize=3, label=model)
    ax.set_xticks(range(len(results)), list(results))
    ax.set_ylabel(f"{folds}-fold cv accuracy")
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(ncol=len(models), loc="upper center")
    common.save_figure(fig, path, rect=(0, 0, 1, 0.9))


def main(argv: list[str] | None = None) -> dict:
    args = common.parse(NAME, __doc__, argv, add)
    plan = {"digits": MODELS[:3], "wine": TABULAR_MODELS} if args.quick else \
        {"digits": MODELS, **{name: TABULAR_MODELS for name in TABULAR}}
    results = {name: study(name, models, args) for name, models in plan.items()}
    table = common.markdown(["data set", *MODELS, "best neural − logistic"],
                            [table_row(name, result) for name, result in results.items()])
    table += (f"\n\nValidation accuracy, mean ± std over {args.folds} stratified folds (the same folds for every "
              "model of a data set; the last column: the per-fold difference).")
    plot(results, args.folds, common.png(args))
    return common.write(args, results, table)


if __name__ == "__main__":
    main()
