"""Study 5a, data collection: how many images per class, and how separable are the classes?

Learning curves: logistic regression (softmax on the 64 pixels) and the digits CNN
(``configs/digits_cnn.py``'s network) learn from 1 to all (about 144) training images per class of the
bundled digits, over several seeds (which images, initialisation, shuffle; a seed's smaller sets are
subsets of its larger ones), and are scored on one fixed test split (20% of the images). Every run gets
the same budget: 15 epochs of 1,440 rows (the chosen images repeated in a shuffled order to fill
them), 675 Adam steps of 32. Logistic regression trains every (size, seed) as one population.

Class separability: the CNNs trained on 10 images per class and on all of them give a per-pair
confusion rate on the test split, ((i taken for j) + (j taken for i)) / (test images of i and j), over
all seeds; a linear-separability score per pair is the held-out accuracy of a pairwise logistic
regression (the same 675-step budget), 5-fold cross-validated over all the images of the two classes
(the 45 pairs x 5 folds train as one population).

    python experiments/learning_curves.py [--seeds 5]
"""
from __future__ import annotations

import argparse
import itertools

import common
import jax
import numpy as np

import fluxnet as fx
from fluxnet import layers, optimizers
from fluxnet.data import load_dataset, preprocess_splits
from fluxnet.train import Member, Population

NAME = "learning_curves"
PER_CLASS = (1, 2, 5, 10, 25, 50, None)  # None: every training image
BATCH = 32
EPOCH_ROWS = 1440  # every run's epoch: its images repeated to this many rows (>= the whole training split)
EPOCHS = 15
FOLDS = 5
CONFUSION_AT = ("10", "all")  # training set sizes whose CNN confusions the separability compares
FILTERS, QUICK_FILTERS = (32, 64), (8,)  # the CNN's conv blocks; --quick's tiny one
LOSS = fx.losses.get("sparse_categorical_crossentropy", from_logits=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, default=5, help="seeds per training-set size")


def cnn(shape: tuple[int, ...], filters: tuple[int, ...] = FILTERS) -> fx.Sequential:
    """The digits CNN (Conv-BN-ReLU-MaxPool per entry of ``filters``, Dropout 0.3, Dense 128) with "same"
    pooling, so that inputs down to 2x2 pass; at 8x8 it is ``build_model("cnn", ...)``'s network."""
    model = fx.Sequential([layers.Input(shape)], name="cnn")
    for i, f in enumerate(filters):
        model.add(layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{i + 1}"))
        model.add(layers.BatchNormalization(name=f"bn{i + 1}"))
        model.add(layers.Activation("relu", name=f"act{i + 1}"))
        model.add(layers.MaxPooling2D(padding="same", name=f"pool{i + 1}"))
    for layer in (layers.Flatten(), layers.Dropout(0.3), layers.Dense(128, activation="relu"),
                  layers.Dense(10)):
        model.add(layer)
    return model


def logistic(shape: tuple[int, ...], num_classes: int = 10) -> fx.Sequential:
    """Multinomial logistic regression on the pixels."""
    return fx.Sequential([layers.Input(shape), layers.Flatten(), layers.Dense(num_classes)], name="logistic")


def trainer(model: fx.Sequential, steps: int, loss=LOSS, metrics=()) -> fx.Trainer:
    """Adam with a cosine decay over ``steps``: the main job's 2e-3 for the CNN, 1e-2 for a linear model."""
    rate = 2e-3 if model.name == "cnn" else 1e-2
    return fx.Trainer(model, loss=loss, metrics=metrics, optimizer=optimizers.build_optimizer(
        {"name": "adam", "learning_rate": rate, "schedule": "cosine"}, total_steps=steps))


def accuracy(tr: fx.Trainer, state, images: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    predicted = tr.predict(state, images).argmax(1)
    return float(np.mean(predicted == labels)), predicted


def label(n: int | None) -> str:
    return "all" if n is None else str(n)


def describe(size: str) -> str:
    return "all images" if size == "all" else f"{size} images/class"


def subsets(labels: np.ndarray, seed: int, sizes: tuple[int | None, ...]) -> dict[str, np.ndarray]:
    """Row indices of each size (images per class), nested: a per-class seeded order, its first n rows."""
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    return {label(n): np.sort(np.concatenate([o[:n] for o in orders])) for n in sizes}


def learning_curves(splits, sizes: tuple[int | None, ...], seeds: int, epochs: int, filters: tuple[int, ...]
                    ) -> tuple[dict, dict]:
    """Test accuracy per (model, size, seed); and per size the CNN's (``filters``) test confusion matrix,
    summed over the seeds."""
    train, test = splits.train, splits.test
    steps = epochs * EPOCH_ROWS // BATCH
    runs = [(n, seed, np.resize(rows, EPOCH_ROWS)) for seed in range(seeds)
            for n, rows in subsets(train.labels, seed, sizes).items()]
    curves: dict = {"logistic": {}, "cnn": {}}
    linear = trainer(logistic(splits.metadata.image_shape), steps, metrics=["accuracy"])
    _, histories = Population(linear).fit([Member(seed=seed, train_rows=rows) for _, seed, rows in runs],
                                          (train.images, train.labels), epochs=epochs, batch_size=BATCH,
                                          validation_data=(test.images, test.labels))
    for (n, _, _), history in zip(runs, histories):
        curves["logistic"].setdefault(n, []).append(history.history["val_accuracy"][-1])
    conv = trainer(cnn(splits.metadata.image_shape, filters), steps)
    confusion = {n: np.zeros((10, 10), int) for n in curves["logistic"]}
    for n, seed, rows in runs:
        state, _ = conv.fit(conv.init(jax.random.key(seed)), (train.images[rows], train.labels[rows]),
                            epochs=epochs, batch_size=BATCH, verbose=0, seed=seed)
        acc, predicted = accuracy(conv, state, test.images, test.labels)
        curves["cnn"].setdefault(n, []).append(acc)
        np.add.at(confusion[n], (test.labels, predicted), 1)
        print(f"cnn, {describe(n)}, seed {seed}: {acc:.4f}", flush=True)
    return curves, confusion


def pairwise_separability(images: np.ndarray, labels: np.ndarray, pairs: list[tuple[int, int]],
                          epochs: int) -> np.ndarray:
    """Held-out accuracy of a logistic regression per class pair (``FOLDS``-fold cv), as a 10x10 matrix
    (NaN for the pairs not given)."""
    blocks = [np.flatnonzero((labels == i) | (labels == j)) for i, j in pairs]
    x = np.concatenate([images[b] for b in blocks])
    y = np.concatenate([(labels[b] == j).astype(np.float32)[:, None] for b, (_, j) in zip(blocks, pairs)])
    starts = np.cumsum([0] + [len(b) for b in blocks])
    members = []
    for p, (start, block) in enumerate(zip(starts, blocks)):
        folds = np.array_split(start + np.random.default_rng(p).permutation(len(block)), FOLDS)
        members += [Member(seed=k, train_rows=np.resize(np.concatenate(folds[:k] + folds[k + 1:]), EPOCH_ROWS),
                           validation_rows=folds[k]) for k in range(FOLDS)]
    steps = epochs * EPOCH_ROWS // BATCH
    tr = trainer(logistic(images.shape[1:], 1), steps, loss=fx.losses.get("binary_crossentropy", from_logits=True),
                 metrics=[fx.metrics.get("binary_accuracy", threshold=0.0)])  # logits: 0 is probability 0.5
    _, histories = Population(tr).fit(members, (x, y), epochs=epochs, batch_size=BATCH)
    correct = np.zeros(len(pairs))
    for i, (m, history) in enumerate(zip(members, histories)):  # pair-major: member i is a fold of pair i // FOLDS
        correct[i // FOLDS] += history.history["val_binary_accuracy"][-1] * len(m.validation_rows)
    score = np.full((10, 10), np.nan)
    for (i, j), c, block in zip(pairs, correct, blocks):
        score[i, j] = score[j, i] = c / len(block)
    return score


def pair_confusion(confusion: np.ndarray) -> np.ndarray:
    """``(C[i, j] + C[j, i]) / (n_i + n_j)``: how often the pair is mixed up, either way."""
    n = confusion.sum(1)
    return (confusion + confusion.T) / (n[:, None] + n[None, :])


def tables(curves: dict, per_class: dict, pairs: list[tuple[int, int]], linear: np.ndarray, confused: dict,
           spearman: dict) -> str:
    head = ["model"] + [f"all (~{per_class[k]})" if k == "all" else k for k in curves["cnn"]]
    rows = [[model] + [common.mean_std(v) for v in by_size.values()] for model, by_size in curves.items()]
    hard = [[f"{i}-{j}", f"{linear[i, j]:.3f}"] + [f"{c[i, j]:.4f}" for c in confused.values()]
            for i, j in sorted(pairs, key=lambda p: linear[p])[:8]]
    notes = [f"CNN with {describe(n)}: Spearman correlation of its pair confusion with the linear error over the "
             f"{len(pairs)} pairs {spearman[n]:.2f}; its most confused pairs "
             + ", ".join(f"{i}-{j} ({c[i, j]:.4f})" for i, j in sorted(pairs, key=lambda p: -c[p])[:5]) + "."
             for n, c in confused.items()]
    return ("Test accuracy against training images per class (mean ± std over seeds):\n\n"
            + common.markdown(head, rows)
            + "\n\nThe 8 class pairs a pairwise logistic regression separates worst (held-out accuracy, "
            f"{FOLDS}-fold cv) and how often the CNN mixes them up on the test split (either way, all seeds):\n\n"
            + common.markdown(["pair", "linear separability"] + [f"CNN confusion, {describe(n)}" for n in confused],
                              hard)
            + "\n\n" + "\n".join(f"- {note}" for note in notes))


def plot(args: argparse.Namespace, curves: dict, per_class: dict, linear: np.ndarray, confused: dict) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2 + len(confused), figsize=(5 * (2 + len(confused)), 4.4))
    for model, by_size in curves.items():
        values = list(by_size.values())
        axes[0].errorbar([per_class[k] for k in by_size], [np.mean(v) for v in values],
                         yerr=[np.std(v) for v in values], marker="o", capsize=3, label=model)
    axes[0].set(xscale="log", xlabel="training images per class", ylabel="test accuracy", title="learning curves")
    axes[0].set_xticks(list(per_class.values()), [str(v) for v in per_class.values()])
    axes[0].minorticks_off()
    axes[0].grid(alpha=0.3)
    axes[0].legend()
    panels = [(1 - linear, "pairwise logistic regression:\nheld-out error")] + [
        (c, f"CNN ({describe(n)}):\npair confusion rate (test)") for n, c in confused.items()]
    for ax, (matrix, title) in zip(axes[1:], panels):
        im = ax.imshow(np.where(np.eye(10, dtype=bool), np.nan, matrix), cmap="viridis")
        ax.set(xticks=range(10), yticks=range(10), title=title)
        fig.colorbar(im, ax=ax, fraction=0.046)
    common.save_figure(fig, common.png(args))


def main(argv: list[str] | None = None) -> dict:
    from scipy.stats import spearmanr

    args = common.parse(NAME, __doc__, argv, add_arguments)
    epochs, seeds, sizes, filters = (1, 1, (10, None), QUICK_FILTERS) if args.quick else (
        EPOCHS, args.seeds, PER_CLASS, FILTERS)
    splits = load_dataset("digits", data_dir=args.data_dir, splits={"train": "train", "test": 0.2}, seed=0)
    splits, _ = preprocess_splits(splits, {"rescale": 1 / 255})
    curves, confusion = learning_curves(splits, sizes, seeds, epochs, filters)
    images = np.concatenate([splits.train.images, splits.test.images])
    labels = np.concatenate([splits.train.labels, splits.test.labels])
    pairs = list(itertools.combinations(range(3 if args.quick else 10), 2))
    linear = pairwise_separability(images, labels, pairs, epochs)
    confused = {n: pair_confusion(confusion[n]) for n in CONFUSION_AT}
    index = tuple(np.array(pairs).T)
    spearman = {n: float(spearmanr(1 - linear[index], c[index]).statistic) for n, c in confused.items()}
    per_class = {label(n): n or int(np.bincount(splits.train.labels).mean().round()) for n in sizes}
    results = {"accuracy": curves, "linear_separability": {f"{i}-{j}": float(linear[i, j]) for i, j in pairs},
               "cnn_confusion_matrices": {n: c.tolist() for n, c in confusion.items()},
               "spearman_linear_error_vs_cnn_confusion": spearman, "seeds": seeds, "epochs": epochs,
               "steps_per_run": epochs * EPOCH_ROWS // BATCH, "test_images": len(splits.test)}
    plot(args, curves, per_class, linear, confused)
    return common.write(args, results, tables(curves, per_class, pairs, linear, confused, spearman))


if __name__ == "__main__":
    main()
