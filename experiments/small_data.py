"""Study 6: small data on digits, with the CNN of ``configs/digits_cnn.py``.

1. Augmentation against training-set size: 10, 25, 50 and 100% of the training split (stratified),
   without augmentation and with two kinds of on-device augmentation suited to 8x8 digits: whole-pixel
   shifts (``transfer_digits.AUGMENT``, nearest-neighbour: interpolation would blur the strokes away)
   and random contrast (no resampling at all); every run the same number of optimizer steps.
2. Class imbalance: digits 5-9 cut to a tenth of their training images (10:1), trained as they are, with
   balanced class weights (``class_weight="balanced"``) and with oversampling (``oversample=True``);
   accuracy, balanced accuracy and per-class recall on the untouched test split.

Transfer learning, the third remedy for small data, is ``experiments/transfer_digits.py``.

    python experiments/small_data.py [--seeds 3] [--steps 500]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import jax
import numpy as np

import common
import fluxnet as fx
from fluxnet import augment, optimizers
from fluxnet.data import load_dataset, preprocess_splits
from fluxnet.data.splits import Split
from fluxnet.models.builders import build_model
from transfer_digits import AUGMENT, CNN, LOSS

NAME = "small_data"
FRACTIONS = (0.1, 0.25, 0.5, 1.0)
MINORITY, KEEP = (5, 6, 7, 8, 9), 0.1  # the classes cut, and the share of their training images kept
METHODS = ("none", "class_weight", "oversample")
AUGMENTS = {"none": [], "shift": AUGMENT, "contrast": [{"op": "RandomContrast", "factor": 0.5, "value_range": (0, 1)}]}
BATCH = 32
QUICK = {"seeds": 1, "steps": 20, "fractions": (0.1,), "augments": ("none", "shift")}


def add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=500, help="optimizer steps per run")
    p.set_defaults(fractions=FRACTIONS, augments=tuple(AUGMENTS))


def subset(split: Split, keep: dict[int, float], seed: int) -> Split:
    """``keep[c]`` of the examples of each class ``c`` (all of a class not listed), drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in np.unique(split.labels):
        members = rng.permutation(np.flatnonzero(split.labels == c))
        rows.append(members[:max(1, round(keep.get(int(c), 1.0) * len(members)))])
    return split.take(np.sort(np.concatenate(rows)))


def train(splits, train_split: Split, steps: int, seed: int, *, augmentation: str = "none",
          method: str = "none") -> np.ndarray:
    """Train the CNN for ``steps`` optimizer steps (an oversampled epoch is longer: fewer epochs) and
    return its test predictions."""
    counts = np.bincount(train_split.labels, minlength=splits.metadata.num_classes)
    rows = counts.max() * len(counts) if method == "oversample" else len(train_split)
    epochs = -(-steps // -(-rows // BATCH))  # an epoch trains its last partial batch too
    model = build_model("cnn", splits.metadata.image_shape, splits.metadata.num_classes, **CNN)
    ops = AUGMENTS[augmentation]
    trainer = fx.Trainer(model, loss=LOSS, optimizer=optimizers.get("adam", 2e-3), metrics=["accuracy"],
                         augment=augment.Pipeline.from_config(ops) if ops else None)
    state, _ = trainer.fit(trainer.init(jax.random.key(seed)), train_split, epochs=epochs, batch_size=BATCH,
                           verbose=0, seed=seed, class_weight="balanced" if method == "class_weight" else None,
                           oversample=method == "oversample")
    return np.asarray(trainer.predict(state, splits.test.images)).argmax(-1)


def recalls(labels: np.ndarray, predicted: np.ndarray, classes: int) -> list[float]:
    return [float(np.mean(predicted[labels == c] == c)) for c in range(classes)]


def augmentation_runs(args, splits) -> dict:
    """Test accuracy per training-set fraction and augmentation, over ``args.seeds`` seeds."""
    classes, runs = splits.metadata.num_classes, {}
    for fraction in args.fractions:
        for name in args.augments:
            parts = [subset(splits.train, {c: fraction for c in range(classes)}, seed) for seed in range(args.seeds)]
            accuracies = [float(np.mean(train(splits, part, args.steps, seed, augmentation=name) == splits.test.labels))
                          for seed, part in enumerate(parts)]
            runs[f"{fraction}|{name}"] = {"train_images": len(parts[0]), "accuracy": accuracies}
            print(f"{fraction:.0%} of train, augmentation {name}: {common.mean_std(accuracies)}", flush=True)
    return runs


def imbalance_runs(args, splits) -> dict:
    """Each imbalance remedy on the imbalanced split: accuracy, balanced accuracy, per-class recall."""
    imbalanced = subset(splits.train, {c: KEEP for c in MINORITY}, 0)
    test, classes = splits.test.labels, splits.metadata.num_classes
    runs = {"train_counts": np.bincount(imbalanced.labels, minlength=classes).tolist()}
    for method in METHODS:
        predicted = [train(splits, imbalanced, args.steps, seed, method=method) for seed in range(args.seeds)]
        per_class = [recalls(test, p, classes) for p in predicted]
        runs[method] = {"recall": per_class, "accuracy": [float(np.mean(p == test)) for p in predicted],
                        "balanced_accuracy": [float(np.mean(r)) for r in per_class]}
        print(f"imbalance, {method}: balanced accuracy {common.mean_std(runs[method]['balanced_accuracy'])}",
              flush=True)
    return runs


def main(argv: list[str] | None = None) -> dict:
    args = common.parse(NAME, __doc__, argv, add)
    if args.quick:
        vars(args).update(QUICK)
    raw = load_dataset("digits", data_dir=args.data_dir, splits={"train": "train", "test": 0.2}, seed=0)
    splits, _ = preprocess_splits(raw, {"rescale": 1 / 255})
    with tempfile.TemporaryDirectory() as tmp, common.compilation_cache(Path(tmp)):
        results = {"augments": {n: AUGMENTS[n] for n in args.augments}, "steps": args.steps, "seeds": args.seeds,
                   "test_images": len(splits.test),
                   "augmentation": augmentation_runs(args, splits), "imbalance": imbalance_runs(args, splits)}
    plot(results, args.fractions, common.png(args))
    return common.write(args, results, tables(results, args.fractions))


def tables(results: dict, fractions) -> str:
    a = results["augmentation"]
    rows = [[f"{f:.0%}", a[f"{f}|none"]["train_images"],
             *[common.mean_std(a[f"{f}|{n}"]["accuracy"]) for n in results["augments"]]] for f in fractions]
    augmentation = common.markdown(["training set", "images", *[f"augmentation: {n}" for n in results["augments"]]],
                                   rows)
    imb = results["imbalance"]
    minority = list(MINORITY)
    rows = [[m, common.mean_std(imb[m]["accuracy"]), common.mean_std(imb[m]["balanced_accuracy"]),
             common.mean_std([np.mean(np.array(r)[minority]) for r in imb[m]["recall"]]),
             *[f"{np.mean([r[c] for r in imb[m]['recall']]):.2f}" for c in range(len(imb["train_counts"]))]]
            for m in METHODS]
    imbalance = common.markdown(["method", "accuracy", "balanced accuracy", "recall of 5-9",
                                 *[f"recall {c}" for c in range(len(imb["train_counts"]))]], rows)
    return (f"Test accuracy on digits ({results['test_images']} test images), mean ± std over {results['seeds']} "
            f"seeds, {results['steps']} optimizer steps of {BATCH} per run:\n\n{augmentation}\n\n"
            f"Class imbalance: training images per class {imb['train_counts']}; per-class recall is the mean "
            f"over seeds:\n\n{imbalance}\n")


def plot(results: dict, fractions, path) -> None:
    plt = common.pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    images = [results["augmentation"][f"{f}|none"]["train_images"] for f in fractions]
    for name in results["augments"]:
        values = [results["augmentation"][f"{f}|{name}"]["accuracy"] for f in fractions]
        a.errorbar(images, np.mean(values, 1), yerr=np.std(values, 1), marker="o", capsize=3,
                   label=f"augmentation: {name}")
    a.set_xscale("log")
    a.set_xticks(images, [f"{n}\n({f:.0%})" for n, f in zip(images, fractions)])
    a.minorticks_off()
    a.set(xlabel="training images", ylabel="test accuracy", title="augmentation against training-set size")
    a.legend()
    imb = results["imbalance"]
    classes = np.arange(len(imb["train_counts"]))
    for i, m in enumerate(METHODS):
        mean = np.mean(imb[m]["recall"], 0)
        b.bar(classes + (i - 1) * 0.27, mean, width=0.27,
              label=f"{m} (balanced acc {np.mean(imb[m]['balanced_accuracy']):.3f})")
    b.set_xticks(classes, [f"{c}\n({n})" for c, n in zip(classes, imb["train_counts"])])
    b.set(xlabel="class (training images)", ylabel="test recall", title="class imbalance (10:1)", ylim=(0, 1.05))
    b.legend(loc="lower left", fontsize=8)
    common.save_figure(fig, path, (a, b))


if __name__ == "__main__":
    main()
