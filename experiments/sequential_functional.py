"""Study: Sequential against Functional, and what each intermediate layer knows.

The digits CNN (``configs/digits_cnn.py``'s architecture) is built twice: as ``fx.Sequential``
(``fluxnet.models.builders.build_model("cnn")``), trained Keras-style (``compile``/``fit``), and
written out as a functional ``fx.Model``. Both must have the same parameter counts and give the same
outputs for the trained variables (asserted). Every layer's output is read through
``fx.Model(model.inputs, layer.output)``: a linear probe (logistic regression on the frozen, flattened
features, ``fluxnet.runs.baselines``) measures how linearly separable the classes are at each depth, for
the trained network and for the same network at its random initialisation.

    python experiments/sequential_functional.py [--epochs 15] [--seeds 3]

``--quick``: 20 training and 10 test images per class, one epoch, one seed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import common
import jax
import numpy as np
from threadpoolctl import threadpool_limits

import fluxnet as fx
from fluxnet import layers
from fluxnet.data import limit_per_class, load_dataset, preprocess_splits
from fluxnet.models.builders import build_model
from fluxnet.runs.baselines import logistic_regression_accuracy

NAME = "sequential_functional"
SHAPE, CLASSES = (8, 8, 1), 10
CNN = {"filters": (32, 64), "dense_units": 128, "dropout": 0.3, "batch_norm": True}  # configs/digits_cnn.py


def add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seeds", type=int, default=3)


def functional_cnn() -> fx.Model:
    """``build_model("cnn", SHAPE, CLASSES, **CNN)`` written in the functional style, same layer names."""
    inputs = layers.Input(SHAPE)
    x = inputs
    for i, filters in enumerate(CNN["filters"], 1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.Activation("relu", name=f"act{i}")(x)
        x = layers.MaxPooling2D(name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(CNN["dropout"], name="dropout")(x)
    x = layers.Dense(CNN["dense_units"], activation="relu", name="fc")(x)
    return fx.Model(inputs, layers.Dense(CLASSES, name="logits")(x), name="cnn_functional")


def same_network(sequential: fx.Sequential, variables: dict, x: np.ndarray) -> list[dict]:
    """``sequential`` and :func:`functional_cnn`: their layer and parameter counts, and how far each
    one's outputs on ``x`` for ``variables`` are from the Sequential's, in inference and in training mode
    (the same dropout key). Asserts that counts and outputs are equal."""
    models = (sequential, functional_cnn())
    outputs = [{mode: np.asarray(m.apply(variables, x, training=mode, rng=jax.random.key(1))[0])
                for mode in (False, True)} for m in models]
    rows = [{"model": type(m).__name__, "layers": len(m.layers), **m.param_counts(), "total": m.count_params(),
             **{f"max_abs_diff_{name}": float(np.max(np.abs(out[mode] - outputs[0][mode])))
                for mode, name in ((False, "inference"), (True, "training"))}} for m, out in zip(models, outputs)]
    assert rows[0]["total"] == rows[1]["total"] and rows[0]["trainable"] == rows[1]["trainable"], rows
    assert rows[1]["max_abs_diff_inference"] == rows[1]["max_abs_diff_training"] == 0.0, rows
    return rows


def probes(model: fx.Model, variables: dict, train, test) -> list[dict]:
    """Linear-probe test accuracy on the input and on each layer's output of ``model`` (``variables``)."""
    images = np.concatenate([train.images, test.images])
    rows = []
    for depth, layer in enumerate([None, *model.layers]):
        features = images if layer is None else np.asarray(
            fx.Model(model.inputs, layer.output).apply(variables, images)[0])
        with threadpool_limits(1):  # one BLAS thread: on this shared 2-core machine more made each fit ~10x slower
            accuracy = logistic_regression_accuracy(features[:len(train)], train.labels, features[len(train):],
                                                    test.labels)
        rows.append({"depth": depth, "layer": "input" if layer is None else layer.name,
                     "shape": list(features.shape[1:]), "features": int(np.prod(features.shape[1:])),
                     "accuracy": accuracy})
    return rows


def one_seed(seed: int, args: argparse.Namespace) -> dict:
    """A split and an initialisation of ``seed``: the probes before and after training, the trained
    network's test accuracy, and (seed 0) the two builds compared on its trained variables."""
    splits = load_dataset("digits", data_dir=args.data_dir, splits={"train": "train", "test": 0.2}, seed=seed)
    splits, _ = preprocess_splits(splits, {"rescale": 1 / 255})
    train, test = splits.train, splits.test
    if args.quick:
        train, test = limit_per_class(train, 20, seed=seed), limit_per_class(test, 10, seed=seed)
    model = build_model("cnn", SHAPE, CLASSES, **CNN)
    model.compile(optimizer={"name": "adam", "learning_rate": 2e-3}, metrics=["accuracy"], seed=seed,
                  loss=fx.losses.get("sparse_categorical_crossentropy", from_logits=True))
    untrained = probes(model, model.variables, train, test)
    model.fit(train.images, train.labels, batch_size=32, epochs=args.epochs, verbose=0)
    out = {"seed": seed, "train": len(train), "test": len(test), "untrained": untrained,
           "trained": probes(model, model.variables, train, test),
           "network": model.evaluate(test.images, test.labels, return_dict=True, verbose=0)["accuracy"]}
    if seed == 0:
        out["builds"] = same_network(model, model.variables, np.concatenate([train.images, test.images]))
    print(f"seed {seed}: network test accuracy {out['network']:.3f}", flush=True)
    return out


def accuracies(runs: list[dict], key: str) -> np.ndarray:
    """(seeds, depths) probe accuracies."""
    return np.array([[r["accuracy"] for r in run[key]] for run in runs])


def plot(runs: list[dict], path: Path) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    depths = [r["depth"] for r in runs[0]["trained"]]
    for key, label in (("trained", "trained network"), ("untrained", "random initialisation")):
        acc = accuracies(runs, key)
        ax.errorbar(depths, acc.mean(0), yerr=acc.std(0), marker="o", capsize=3, label=f"probe: {label}")
    ax.axhline(np.mean([r["network"] for r in runs]), color="grey", linestyle="--",
               label="trained network's own output")
    ax.set_xticks(depths, [r["layer"] for r in runs[0]["trained"]], rotation=45, ha="right")
    ax.set_ylabel("test accuracy")
    ax.set_title("linear probe (logistic regression) on each layer's output")
    ax.grid(alpha=0.3)
    ax.legend()
    common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict:
    args = common.parse(NAME, __doc__, argv, add)
    if args.quick:
        args.seeds, args.epochs = 1, 1
    runs = [one_seed(seed, args) for seed in range(args.seeds)]
    builds, first = runs[0]["builds"], runs[0]
    table = common.markdown(["build", "model.layers", "parameters", "trainable",
                             "max abs output diff (inference)", "max abs output diff (training)"],
                            [[b["model"], b["layers"], f"{b['total']:,}", f"{b['trainable']:,}",
                              b["max_abs_diff_inference"], b["max_abs_diff_training"]] for b in builds])
    table += (f"\n\nBoth builds applied to the trained Sequential's variables (seed 0) on all "
              f"{first['train'] + first['test']} images (training mode: the same dropout key).")
    trained, untrained = accuracies(runs, "trained"), accuracies(runs, "untrained")
    table += "\n\n" + common.markdown(
        ["depth", "layer", "output shape", "features", "probe (trained)", "probe (random init)"],
        [[r["depth"], r["layer"], "x".join(map(str, r["shape"])), r["features"],
          common.mean_std(trained[:, d].tolist()), common.mean_std(untrained[:, d].tolist())]
         for d, r in enumerate(first["trained"])], align="rllrrr")
    table += (f"\n\nLinear-probe test accuracy, mean ± std over {args.seeds} seeds (split and initialisation; "
              f"{first['test']} test images, probes and network trained on {first['train']}); the trained "
              f"network's own test accuracy: {common.mean_std([r['network'] for r in runs])} after {args.epochs} "
              "epochs.")
    plot(runs, common.png(args))
    return common.write(args, {"epochs": args.epochs, "seeds": runs}, table)


if __name__ == "__main__":
    main()
