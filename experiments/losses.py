"""Study 4, losses: which regression loss resists outliers, and what each classification loss does to
accuracy and calibration.

Regression: the review's five losses (MSE, MAE, MAPE, MSLE, log-cosh) train a small MLP on
scikit-learn's diabetes data (442 patients, 10 features; 80/20 split per seed, features standardised
with training statistics). A fraction of the training targets (0, 5, 10, 20%) is corrupted: each chosen
row's target gets ``u * std(y_train)`` added, ``u ~ U(5, 10)`` (gross one-sided errors, seeded; the
5% rows are among the 10% ones, which are among the 20% ones). MSE, MAE and log-cosh learn the
targets standardised with the (corrupted) training mean and std; MAPE and MSLE need positive
targets, so they learn ``y / mean(y_train)``. Scores: MAE and RMSE on the CLEAN test targets, in the
data set's units. Every (seed, fraction) of one loss trains as one population.

Classification: the review's seven losses train the digits CNN (``configs/digits_cnn.py``'s network).
Cross-entropies, KL divergence and cosine proximity get a softmax output layer (probabilities, as in
Keras); the three hinge losses get the raw scores with one-hot targets (Keras turns 0/1 into -1/1), and
their probabilities are the softmax of those scores. Scores: test accuracy and the expected calibration
error (15 equal-width bins of the top probability), before and after temperature scaling fitted on
the validation split.

    python experiments/losses.py [--seeds 5] [--class-seeds 3] [--epochs 150] [--class-epochs 25]
"""
from __future__ import annotations

import argparse

import common
import jax
import numpy as np

import fluxnet as fx
from fluxnet import layers, optimizers
from fluxnet.data import load_dataset, preprocess_splits
from fluxnet.models.builders import build_model
from fluxnet.train import Member, Population, population

NAME = "losses"
# row label: (loss, how its targets are scaled: "standard" mean/std, "relative" y / mean (positive targets for
# MAPE and MSLE), "robust" median / (1.4826 MAD), which the outliers hardly move)
REGRESSION = {name: (name, "standard") for name in ("mean_squared_error", "mean_absolute_error")}
REGRESSION |= {name: (name, "relative") for name in ("mean_absolute_percentage_error",
                                                     "mean_squared_logarithmic_error")}
REGRESSION |= {"log_cosh": ("log_cosh", "standard"), "log_cosh, median/MAD scaling": ("log_cosh", "robust")}
CLASSIFICATION = ("categorical_crossentropy", "sparse_categorical_crossentropy", "kl_divergence", "hinge",
                  "squared_hinge", "categorical_hinge", "cosine_similarity")
HINGES = ("hinge", "squared_hinge", "categorical_hinge")  # trained on raw scores, no softmax layer
FRACTIONS = (0.0, 0.05, 0.1, 0.2)
OUTLIER_SIGMAS = (5.0, 10.0)
CNN = ("cnn", {"filters": (32, 64), "dense_units": 128, "dropout": 0.3, "batch_norm": True})  # configs/digits_cnn.py
QUICK_MODEL = ("mlp", {"units": (16,), "dropout": 0.0})
BINS = 15
TEMPERATURES = np.geomspace(0.05, 20.0, 200)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, default=5, help="regression seeds (split, corruption, initialisation)")
    p.add_argument("--class-seeds", type=int, default=3, help="classification seeds (initialisation, shuffle)")
    p.add_argument("--epochs", type=int, default=150, help="regression epochs (batch 32)")
    p.add_argument("--class-epochs", type=int, default=25, help="classification epochs (batch 32)")


# ------------------------------------------------------------------------------------------ regression
def diabetes_runs(seeds: int, fractions: tuple[float, ...]) -> list[dict]:
    """One run per (seed, fraction): standardised features, corrupted training targets, clean test targets."""
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    runs = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(x))
        test, train = order[:len(x) // 5], order[len(x) // 5:]
        mean, std = x[train].mean(0), x[train].std(0)
        corrupt_order = rng.permutation(len(train))  # the first k rows are the corrupted ones: nested fractions
        shifts = rng.uniform(*OUTLIER_SIGMAS, len(train)) * y[train].std()
        for fraction in fractions:
            targets = y[train].copy()
            chosen = corrupt_order[:round(fraction * len(train))]
            targets[chosen] += shifts[chosen]
            runs.append({"seed": seed, "fraction": fraction, "x_train": (x[train] - mean) / std,
                         "y_train": targets, "x_test": (x[test] - mean) / std, "y_test": y[test],
                         "std_inflation": targets.std() / y[train].std()})
    return runs


def target_scale(scaling: str, y_train: np.ndarray) -> tuple[float, float]:
    """``(offset, scale)`` with ``t = (y - offset) / scale`` the targets learnt, from the training targets."""
    if scaling == "relative":
        return 0.0, y_train.mean()
    if scaling == "robust":
        median = np.median(y_train)
        return median, 1.4826 * np.median(np.abs(y_train - median))
    return y_train.mean(), y_train.std()


def regression_scores(loss: str, scaling: str, runs: list[dict], epochs: int) -> list[dict]:
    """Train one MLP per run with ``loss`` on targets scaled by ``scaling`` (all runs as one population);
    test MAE and RMSE per run, in the data set's units."""
    model = fx.Sequential([layers.Input((runs[0]["x_train"].shape[1],)), layers.Dense(32, activation="relu"),
                           layers.Dense(1)])
    trainer = fx.Trainer(model, loss=loss, optimizer=optimizers.get("adam", 3e-3))
    scales = [target_scale(scaling, r["y_train"]) for r in runs]
    x = np.concatenate([r["x_train"] for r in runs]).astype(np.float32)
    t = np.concatenate([(r["y_train"] - o) / s for r, (o, s) in zip(runs, scales)]).astype(np.float32)
    bounds = np.cumsum([0] + [len(r["y_train"]) for r in runs])
    members = [Member(seed=r["seed"], train_rows=np.arange(a, b)) for r, a, b in zip(runs, bounds, bounds[1:])]
    states, _ = Population(trainer).fit(members, (x, t), epochs=epochs, batch_size=32)
    scores = []
    for i, (r, (offset, scale)) in enumerate(zip(runs, scales)):
        pred = trainer.predict(population.member(states, i), r["x_test"].astype(np.float32))[:, 0] * scale + offset
        err = pred - r["y_test"]
        scores.append({"seed": r["seed"], "fraction": r["fraction"], "mae": float(np.abs(err).mean()),
                       "rmse": float(np.sqrt(np.mean(err ** 2)))})
    return scores


# -------------------------------------------------------------------------------------- classification
def ece(probs: np.ndarray, labels: np.ndarray) -> float:
    """Expected calibration error: ``sum_b n_b / n * |accuracy_b - confidence_b|`` over ``BINS``
    equal-width bins of the top probability."""
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    which = np.minimum((confidence * BINS).astype(int), BINS - 1)
    return float(sum(np.mean(which == b) * abs(correct[which == b].mean() - confidence[which == b].mean())
                     for b in range(BINS) if np.any(which == b)))


def softmax(scores: np.ndarray) -> np.ndarray:
    e = np.exp(scores - scores.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """The temperature (on a grid) minimising the validation negative log-likelihood of ``softmax(scores / T)``."""
    nll = [-np.log(softmax(scores / t)[np.arange(len(labels)), labels] + 1e-12).mean() for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(nll))])


def classification_scores(loss: str, splits, seeds: int, epochs: int, spec: tuple[str, dict]
                          ) -> tuple[list[dict], np.ndarray]:
    """Train the network ``spec`` (a builder's name and arguments) with ``loss`` once per seed: test accuracy
    and ECE before and after temperature scaling, and seed 0's test probabilities."""
    model = build_model(spec[0], splits.metadata.image_shape, 10, **spec[1])
    if loss not in HINGES:
        model.add(layers.Activation("softmax", name="softmax"))
    steps = epochs * -(-len(splits.train) // 32)
    trainer = fx.Trainer(model, loss=loss, optimizer=optimizers.build_optimizer(
        {"name": "adam", "learning_rate": 2e-3, "schedule": "cosine"}, total_steps=steps))
    labels = splits.train.labels
    targets = labels if loss == "sparse_categorical_crossentropy" else np.eye(10, dtype=np.float32)[labels]
    scores, first = [], None
    for seed in range(seeds):
        state, _ = trainer.fit(trainer.init(jax.random.key(seed)), (splits.train.images, targets), epochs=epochs,
                               batch_size=32, verbose=0, seed=seed)
        # log-probabilities (softmax models) or raw scores (hinge models): softmax of either is the probabilities
        val, test = (trainer.predict(state, s.images) for s in (splits.validation, splits.test))
        if loss not in HINGES:
            val, test = np.log(np.maximum(val, 1e-12)), np.log(np.maximum(test, 1e-12))
        t = temperature(val, splits.validation.labels)
        scores.append({"seed": seed, "accuracy": float(np.mean(test.argmax(1) == splits.test.labels)),
                       "ece": ece(softmax(test), splits.test.labels), "temperature": t,
                       "ece_scaled": ece(softmax(test / t), splits.test.labels)})
        first = softmax(test) if first is None else first
    return scores, first


# ----------------------------------------------------------------------------------------------- output
def tables(regression: dict, classification: dict, fractions: tuple[float, ...], inflation: dict) -> str:
    head = ["loss"] + [f"{f:.0%} outliers" for f in fractions]
    parts = []
    for metric in ("mae", "rmse"):
        rows = [[loss] + [common.mean_std([s[metric] for s in regression[loss] if s["fraction"] == f])
                          for f in fractions] for loss in regression]
        parts.append(f"Diabetes, test {metric.upper()} on clean targets (disease progression units), "
                     f"mean ± std over seeds:\n\n" + common.markdown(head, rows))
    parts.append("The corrupted training targets' std, as a multiple of the clean ones' (mean over seeds): "
                 + ", ".join(f"{f:.0%}: {inflation[f]:.2f}" for f in fractions) + ".")
    rows = [[loss] + [common.mean_std([s[k] for s in scores]) for k in ("accuracy", "ece", "ece_scaled")]
            + [f"{np.median([s['temperature'] for s in scores]):.2f}"] for loss, scores in classification.items()]
    parts.append("Digits CNN, test accuracy and expected calibration error (15 bins), mean ± std over seeds; "
                 "ECE after temperature scaling fitted on the validation split, and the median temperature:\n\n"
                 + common.markdown(["loss", "accuracy", "ECE", "ECE (T-scaled)", "T"], rows))
    return "\n\n".join(parts)


def plot(args: argparse.Namespace, regression: dict, classification: dict, fractions: tuple[float, ...],
         probabilities: dict) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for loss, scores in regression.items():
        means = [np.mean([s["rmse"] for s in scores if s["fraction"] == f]) for f in fractions]
        stds = [np.std([s["rmse"] for s in scores if s["fraction"] == f]) for f in fractions]
        axes[0].errorbar([100 * f for f in fractions], means, yerr=stds, marker="o", capsize=3, label=loss)
    axes[0].set(xlabel="training targets corrupted (%)", ylabel="test RMSE (clean targets)",
                title="diabetes: regression losses")
    names = list(classification)
    pos = np.arange(len(names))
    for shift, key, what in ((-0.2, "ece", "ECE"), (0.2, "ece_scaled", "ECE, temperature-scaled")):
        axes[1].bar(pos + shift, [np.mean([s[key] for s in classification[n]]) for n in names], 0.4, label=what)
    axes[1].set_xticks(pos, [n.replace("_", "\n") + f"\n{np.mean([s['accuracy'] for s in classification[n]]):.3f}"
                             for n in names], fontsize=6.5)
    axes[1].set(ylabel="expected calibration error", title="digits: calibration (test accuracy under the names)")
    edges = np.linspace(0, 1, BINS + 1)
    for loss, probs in probabilities.items():
        axes[2].stairs(np.histogram(probs.max(1), edges)[0], edges, label=loss)
    axes[2].set(yscale="log", xlabel="top probability (the 15 ECE bins)", ylabel="test images",
                title="where the confidences fall, seed 0")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    common.save_figure(fig, common.png(args))


def main(argv: list[str] | None = None) -> dict:
    args = common.parse(NAME, __doc__, argv, add_arguments)
    if args.quick:
        args.seeds, args.class_seeds, args.epochs, args.class_epochs = 1, 1, 2, 1
    fractions = (0.0, 0.2) if args.quick else FRACTIONS
    regression_losses = {k: REGRESSION[k] for k in ("mean_squared_logarithmic_error",)} if args.quick else REGRESSION
    class_losses = ("hinge",) if args.quick else CLASSIFICATION
    spec = QUICK_MODEL if args.quick else CNN

    runs = diabetes_runs(args.seeds, fractions)
    regression = {}
    for label, (loss, scaling) in regression_losses.items():
        regression[label] = regression_scores(loss, scaling, runs, args.epochs)
        print(f"{label:32s} RMSE by fraction: " + ", ".join(
            f"{np.mean([s['rmse'] for s in regression[label] if s['fraction'] == f]):.1f}" for f in fractions),
            flush=True)

    splits = load_dataset("digits", data_dir=args.data_dir,
                          splits={"train": "train", "validation": 0.15, "test": 0.2}, seed=0)
    splits, _ = preprocess_splits(splits, {"rescale": 1 / 255})
    classification, probabilities = {}, {}
    for loss in class_losses:
        classification[loss], probabilities[loss] = classification_scores(loss, splits, args.class_seeds,
                                                                          args.class_epochs, spec)
        print(f"{loss:32s} accuracy {np.mean([s['accuracy'] for s in classification[loss]]):.4f} "
              f"ECE {np.mean([s['ece'] for s in classification[loss]]):.4f}", flush=True)
    inflation = {f: float(np.mean([r["std_inflation"] for r in runs if r["fraction"] == f])) for f in fractions}
    results = {"regression": regression, "target_std_inflation": inflation, "classification": classification,
               "fractions": fractions,
               "outlier_shift_in_std": OUTLIER_SIGMAS, "seeds": args.seeds, "class_seeds": args.class_seeds,
               "epochs": args.epochs, "class_epochs": args.class_epochs,
               "test_sizes": {"diabetes": len(runs[0]["y_test"]), "digits": len(splits.test)}}
    plot(args, regression, classification, fractions, probabilities)
    return common.write(args, results, tables(regression, classification, fractions, inflation))


if __name__ == "__main__":
    main()
