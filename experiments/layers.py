"""Study: the review's layers, measured on digits.

1. Dense: ``(inputs + 1) * units`` parameters, against ``count_params()`` and ``summary()``.
2. Dropout: an MLP at rates 0, 0.2, 0.5 and 0.8 -- training accuracy (inference mode) against
   validation accuracy; and what Dropout does to a value in training and at inference.
3. BatchNormalization off, and on with momentum 0.99 (Keras' default) and 0.9, in the digits CNN
   (``configs/digits_cnn.py``'s architecture): training against validation accuracy per epoch, and how
   far each BatchNormalization layer's moving statistics are from the statistics of its input on the
   training images. The moving statistics start at mean 0 / variance 1 and after t steps still carry
   ``momentum**t`` of that start, so they come within 10% of the data's after
   ``log(0.1) / log(momentum)`` steps (230 at 0.99, 22 at 0.9) -- if the data's statistics stood still.
4. Pooling against strided convolution (the same CNN without BatchNormalization, MaxPooling2D after
   each convolution or the convolution with strides=2): accuracy, parameters, step time.

Every variant is trained for several seeds at once as a population (``fluxnet.train.Population``);
1,150 training images (36 steps of 32 per epoch) and 288 validation images.

    python experiments/layers.py [--seeds 3] [--mlp-epochs 60] [--cnn-epochs 15]

``--quick``: 20 images per class, one epoch, one seed, one Dropout rate, one CNN.
"""
from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import common
import jax
import numpy as np

import fluxnet as fx
from fluxnet import layers, optimizers
from fluxnet.data import limit_per_class, load_dataset, preprocess_splits
from fluxnet.data.splits import Split
from fluxnet.models.builders import build_model
from fluxnet.train import Member, Population

NAME = "layers"
SHAPE, CLASSES, BATCH = (8, 8, 1), 10, 32
SPLITS = {"train": "train", "validation": 0.16, "test": 0.2}  # 1,150 training images: 36 steps of 32
LOSS = fx.losses.get("sparse_categorical_crossentropy", from_logits=True)
DENSE = [((64,), 10, True), ((64,), 128, True), ((784,), 128, True), ((2048,), 1000, True), ((64,), 10, False),
         ((8, 8, 1), 16, True), ((8, 8, 3), 16, True)]  # (input shape, units, use_bias)
RATES = (0.0, 0.2, 0.5, 0.8)
CNNS = {"pool, no BN": ("pool", None), "pool, BN 0.99": ("pool", 0.99), "pool, BN 0.9": ("pool", 0.9),
        "stride, no BN": ("stride", None)}  # (downsampling, BatchNormalization momentum)
WITHIN = 0.1  # "close": the moving statistics' distance from the data's under 10% of where they started
RECOVERED = 0.9  # "recovered": validation accuracy at least this
STEP_TIMING = 50, 5  # a model's step time: the fastest of 5 medians of 50 steps (the machine is shared)


def add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--mlp-epochs", type=int, default=60)
    p.add_argument("--cnn-epochs", type=int, default=15)


def dense_counts() -> list[dict]:
    """Each Dense case's formula count against ``count_params()`` and ``summary()``'s total (asserted)."""
    rows = []
    for shape, units, bias in DENSE:
        model = fx.Sequential([layers.Input(shape), layers.Dense(units, use_bias=bias)])
        summary = int(re.search(r"Total params: ([\d,]+)", model.summary(print_fn=None)).group(1).replace(",", ""))
        formula = (shape[-1] + bias) * units
        rows.append({"input_shape": list(shape), "units": units, "use_bias": bias, "formula": formula,
                     "count_params": model.count_params(), "summary": summary})
        assert formula == rows[-1]["count_params"] == summary, rows[-1]
    return rows


def dropout_values(rate: float, n: int = 100_000) -> dict:
    """What Dropout(rate) makes of ones: the kept fraction and value in training, and the output at
    inference (the review: "at test time multiply everything by 1 - p")."""
    model = fx.Sequential([layers.Input((n,)), layers.Dropout(rate)])
    ones, variables = np.ones((1, n), np.float32), model.init(jax.random.key(0))
    train = np.asarray(model.apply(variables, ones, training=True, rng=jax.random.key(1))[0])
    test = np.asarray(model.apply(variables, ones)[0])
    return {"kept_fraction": float(np.mean(train > 0)), "kept_value": float(train.max()),
            "training_mean": float(train.mean()), "inference_value": float(np.unique(test).item())}


def cnn(downsample: str, momentum: float | None) -> fx.Sequential:
    """The digits CNN (Conv-[BN]-ReLU-downsample x2, Flatten, Dropout 0.3, Dense 128, Dense 10), each
    downsampling a MaxPooling2D after the convolution or the convolution itself with strides=2."""
    model = fx.Sequential([layers.Input(SHAPE)], name=f"cnn_{downsample}")
    for i, filters in enumerate((32, 64), 1):
        model.add(layers.Conv2D(filters, 3, strides=2 if downsample == "stride" else 1, padding="same",
                                use_bias=momentum is None, name=f"conv{i}"))
        if momentum is not None:
            model.add(layers.BatchNormalization(momentum=momentum, name=f"bn{i}"))
        model.add(layers.Activation("relu", name=f"act{i}"))
        if downsample == "pool":
            model.add(layers.MaxPooling2D(name=f"pool{i}"))
    for layer in (layers.Flatten(name="flatten"), layers.Dropout(0.3, name="dropout"),
                  layers.Dense(128, activation="relu", name="fc"), layers.Dense(CLASSES, name="logits")):
        model.add(layer)
    return model


class EpochProbe(fx.callbacks.TrainerCallback):
    """Per epoch: the logged accuracies, the training accuracy in inference mode and, for each
    BatchNormalization layer, how far its moving mean and variance are from the statistics of its input
    on the training images (the layer before it, applied in training mode to all of them), as a fraction
    of how far their start (mean 0, variance 1) is: ``|moving - data| / |start - data|``."""

    def __init__(self, train: Split):
        self.train, self.rows = train, []

    def on_train_begin(self, trainer, state):
        self.trainer, model = trainer, trainer.model
        self.feeds = {layer.name: fx.Model(model.inputs, model.layers[i - 1].output)
                      for i, layer in enumerate(model.layers) if isinstance(layer, layers.BatchNormalization)}

    def on_epoch_end(self, epoch, logs, state):
        row = {"epoch": epoch + 1, "step": int(state.step), "accuracy": logs["accuracy"],
               "val_accuracy": logs["val_accuracy"], "loss": logs["loss"],
               "train_inference_accuracy": self.trainer.evaluate(state, self.train)["accuracy"]}
        for name, feed in self.feeds.items():
            h = np.asarray(feed.apply(state.variables, self.train.images, training=True)[0], np.float64)
            moving = state.variables["batch_stats"][name]
            gaps = [float(np.linalg.norm(np.asarray(moving[f"moving_{stat}"]) - data) / np.linalg.norm(start - data))
                    for stat, data, start in (("mean", h.mean((0, 1, 2)), 0.0), ("variance", h.var((0, 1, 2)), 1.0))]
            row.update({f"{name}_mean_gap": gaps[0], f"{name}_variance_gap": gaps[1], f"{name}_gap": max(gaps)})
        self.rows.append(row)


def train(model: fx.Model, seeds: int, epochs: int, train_split: Split, validation: Split, timings: int) -> dict:
    """``model`` trained for ``seeds`` seeds as one population: parameters, one model's step time (the
    fastest of ``timings`` medians, ``Population.step_cost``) and each seed's :class:`EpochProbe` rows."""
    population = Population(fx.Trainer(model, loss=LOSS, optimizer=optimizers.get("adam", 2e-3), metrics=["accuracy"]))
    costs = [population.step_cost(1, train_split, BATCH, steps=STEP_TIMING[0]) for _ in range(timings)]
    probes = [EpochProbe(train_split) for _ in range(seeds)]
    population.fit([Member(seed=s) for s in range(seeds)], train_split, epochs=epochs, batch_size=BATCH,
                   validation_data=validation, callbacks=[[p] for p in probes])
    return {"parameters": model.count_params(), "step_ms": min(c.step_seconds for c in costs) * 1e3,
            "step_timing": {"medians": timings, "steps": STEP_TIMING[0]}, "compile_s": costs[0].compile_seconds,
            "seeds": [p.rows for p in probes]}


def final(run: dict, key: str) -> list[float]:
    """``key`` at the last epoch, one value per seed."""
    return [rows[-1][key] for rows in run["seeds"]]


def per_epoch(run: dict, key: str) -> np.ndarray:
    """``key`` per epoch, averaged over seeds."""
    return np.mean([[r[key] for r in rows] for rows in run["seeds"]], axis=0)


def epochs(runs: dict) -> int:
    """How many epochs the runs of ``runs`` (a dict of :func:`train` results) trained."""
    return len(next(iter(runs.values()))["seeds"][0])


def first_epoch(values: np.ndarray, ok) -> int | None:
    """The first epoch (1-based) whose value satisfies ``ok``, or None."""
    hits = [i + 1 for i, v in enumerate(values) if ok(v)]
    return hits[0] if hits else None


def steps_within(momentum: float, fraction: float = WITHIN) -> int:
    """Steps until ``momentum**t <= fraction``: the start's share of the moving statistics."""
    return math.ceil(math.log(fraction) / math.log(momentum))


def bn_summary(name: str, run: dict, steps_per_epoch: int) -> dict:
    """When a CNN's validation accuracy recovered, and, with BatchNormalization, when bn1's moving
    statistics came within ``WITHIN`` of the data's: measured, and predicted from the momentum (bn1's
    input, the first convolution's output, is exactly what it averages; bn2's depends on bn1)."""
    momentum = CNNS[name][1]
    out = {"recovered_epoch": first_epoch(per_epoch(run, "val_accuracy"), lambda v: v >= RECOVERED)}
    if momentum is not None:
        steps = steps_within(momentum)
        out.update({"predicted_steps": steps, "predicted_epochs": steps / steps_per_epoch,
                    "within_epoch": first_epoch(per_epoch(run, "bn1_gap"), lambda v: v <= WITHIN)})
    return out


def plot(dropout: dict, cnns: dict, steps_per_epoch: int, path: Path) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    ax = axes[0, 0]
    rates = [float(r) for r in dropout]
    for key, label in (("train_inference_accuracy", "training (inference mode)"), ("accuracy", "training (fit's log)"),
                       ("val_accuracy", "validation")):
        runs = [dropout[r] for r in dropout]
        ax.errorbar(rates, [np.mean(final(r, key)) for r in runs], yerr=[np.std(final(r, key)) for r in runs],
                    marker="o", capsize=3, label=label)
    ax.set(xlabel="Dropout rate", ylabel="accuracy after the last epoch", title="Dropout (MLP 256-256)")
    bn = {n: r for n, r in cnns.items() if n.startswith("pool")}
    ax = axes[0, 1]
    for name, run in bn.items():
        epochs, color = np.arange(1, len(run["seeds"][0]) + 1), f"C{list(CNNS).index(name)}"
        ax.plot(epochs, per_epoch(run, "val_accuracy"), color=color, marker="o", label=f"{name}: validation")
        ax.plot(epochs, per_epoch(run, "accuracy"), color=color, linestyle="--", label=f"{name}: training (fit)")
    ax.set(xlabel="epoch", ylabel="accuracy", title="BatchNormalization: validation (—) vs training (--)")
    ax = axes[1, 0]
    for name, run in ((n, r) for n, r in bn.items() if CNNS[n][1] is not None):
        momentum, epochs, color = CNNS[name][1], np.arange(1, len(run["seeds"][0]) + 1), f"C{list(CNNS).index(name)}"
        for layer, marker in (("bn1", "o"), ("bn2", "s")):
            ax.semilogy(epochs, per_epoch(run, f"{layer}_gap"), color=color, marker=marker,
                        linestyle="-" if layer == "bn1" else ":", label=f"{name}: {layer}, measured")
        ax.semilogy(epochs, momentum ** (epochs * steps_per_epoch), color=color, linestyle="--",
                    label=f"predicted: {momentum}^({steps_per_epoch} x epoch)")
    ax.axhline(WITHIN, color="grey", linewidth=0.8)
    ax.set_ylim(1e-3, 1.5)
    ax.set(xlabel="epoch", ylabel="|moving - data| / |start - data|",
           title="moving statistics' gap (larger of mean and variance)")
    ax = axes[1, 1]
    for name, run in cnns.items():
        if "no BN" in name:
            epochs = np.arange(1, len(run["seeds"][0]) + 1)
            ax.plot(epochs, per_epoch(run, "val_accuracy"), marker="o",
                    label=f"{name}: {run['parameters']:,} params, {run['step_ms']:.2f} ms/step")
    ax.set(xlabel="epoch", ylabel="validation accuracy", title="pooling vs strided convolution")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    common.save_figure(fig, path)


def epoch_row(e: int, cnns: dict, steps_per_epoch: int) -> list:
    """Epoch ``e`` (0-based) of the pooling CNNs: training (fit) / validation accuracy of each, then for
    each with BatchNormalization its bn1 / bn2 gaps and the start's share ``momentum**steps``."""
    row = [e + 1] + [f"{per_epoch(run, 'accuracy')[e]:.3f} / {per_epoch(run, 'val_accuracy')[e]:.3f}"
                     for run in cnns.values()]
    for name, run in cnns.items():
        if CNNS[name][1] is not None:
            row += [f"{per_epoch(run, 'bn1_gap')[e]:.3f} / {per_epoch(run, 'bn2_gap')[e]:.3f}",
                    f"{CNNS[name][1] ** ((e + 1) * steps_per_epoch):.3f}"]
    return row


def tables(dense: list[dict], dropout: dict, cnns: dict, summaries: dict, momentum_delta: float | None,
           steps_per_epoch: int, data: str) -> str:
    ms = lambda run, key: common.mean_std(final(run, key))  # noqa: E731
    seeds, timing = len(next(iter(cnns.values()))["seeds"]), next(iter(cnns.values()))["step_timing"]
    out = [f"Digits: {data}; every variant trained for {seeds} seeds (mean ± std over them), Adam 2e-3, "
           f"batch {BATCH}.", "", "Dense parameters:", "", common.markdown(
        ["input shape", "units", "use_bias", "(inputs + bias) x units", "count_params()", "summary() total"],
        [["x".join(map(str, d["input_shape"])), d["units"], d["use_bias"], f"{d['formula']:,}",
          f"{d['count_params']:,}", f"{d['summary']:,}"] for d in dense], align="lrlrrr")]
    out += ["", f"Dropout (MLP 256-256, {epochs(dropout)} epochs; accuracy after the last epoch):", "", common.markdown(
        ["rate", "training, inference mode", "training, fit's log", "validation", "gap (training − validation)",
         "kept value in training", "value at inference"],
        [[rate, ms(run, "train_inference_accuracy"), ms(run, "accuracy"), ms(run, "val_accuracy"),
          common.mean_std(np.subtract(final(run, "train_inference_accuracy"), final(run, "val_accuracy")).tolist()),
          f"{run['values']['kept_value']:.3f}", f"{run['values']['inference_value']:.3f}"]
         for rate, run in dropout.items()])]
    out += ["", f"CNNs ({epochs(cnns)} epochs; accuracy after the last epoch; step time of one model on this "
            f"machine: the fastest of {timing['medians']} medians of {timing['steps']} steps):", "",
            common.markdown(
                ["CNN", "parameters", "ms/step", "training (fit)", "training (inference)", "validation",
                 f"first epoch val ≥ {RECOVERED}", f"bn1 gap ≤ {WITHIN:.0%}: predicted", "measured (epoch)"],
                [[name, f"{run['parameters']:,}", f"{run['step_ms']:.2f}", ms(run, "accuracy"),
                  ms(run, "train_inference_accuracy"), ms(run, "val_accuracy"),
                  summaries[name]["recovered_epoch"] or "not reached",
                  (f"{summaries[name]['predicted_steps']} steps = epoch {summaries[name]['predicted_epochs']:.1f}"
                   if "predicted_steps" in summaries[name] else "—"),
                  summaries[name].get("within_epoch", "—") or "not reached"]
                 for name, run in cnns.items()])]
    pool = {n: run for n, run in cnns.items() if CNNS[n][0] == "pool"}
    if pool:
        out += ["", "Per epoch (mean over seeds): training (fit) / validation accuracy; for BatchNormalization, "
                "the moving statistics' gap of bn1 / bn2 (the larger of mean and variance) and the start's "
                "predicted share, momentum^steps:", "", common.markdown(
                    ["epoch", *pool] + [h for n in pool if CNNS[n][1] is not None
                                        for h in (f"{n}: gap bn1 / bn2", f"{CNNS[n][1]}^steps")],
                    [epoch_row(e, pool, steps_per_epoch) for e in range(epochs(pool))])]
    if momentum_delta is not None:
        out += ["", f"Training loss per epoch, momentum 0.99 against 0.9: max |difference| = {momentum_delta:.2e} "
                "(momentum changes only the moving statistics, which training does not read)."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict:
    args = common.parse(NAME, __doc__, argv, add)
    splits = load_dataset("digits", data_dir=args.data_dir, splits=SPLITS, seed=0)
    splits, _ = preprocess_splits(splits, {"rescale": 1 / 255})
    train_split, validation = splits.train, splits.validation
    rates, cnns, timings = RATES, CNNS, STEP_TIMING[1]
    if args.quick:
        train_split, validation = limit_per_class(train_split, 20, seed=0), limit_per_class(validation, 10, seed=0)
        args.seeds, args.mlp_epochs, args.cnn_epochs, timings = 1, 1, 1, 1
        rates, cnns = (0.5,), {"pool, BN 0.99": CNNS["pool, BN 0.99"]}
    steps_per_epoch = -(-len(train_split) // BATCH)
    dense = dense_counts()
    dropout = {}
    for rate in rates:
        model = build_model("mlp", SHAPE, CLASSES, units=(256, 256), dropout=rate)
        dropout[rate] = {**train(model, args.seeds, args.mlp_epochs, train_split, validation, timings),
                         "values": dropout_values(rate)}
        print(f"dropout {rate}: validation {common.mean_std(final(dropout[rate], 'val_accuracy'))}", flush=True)
    runs = {}
    for name, (downsample, momentum) in cnns.items():
        runs[name] = train(cnn(downsample, momentum), args.seeds, args.cnn_epochs, train_split, validation, timings)
        print(f"{name}: validation {common.mean_std(final(runs[name], 'val_accuracy'))}", flush=True)
    summaries = {name: bn_summary(name, run, steps_per_epoch) for name, run in runs.items()}
    momentum_delta = (float(np.max(np.abs(per_epoch(runs["pool, BN 0.99"], "loss")
                                          - per_epoch(runs["pool, BN 0.9"], "loss"))))
                      if {"pool, BN 0.99", "pool, BN 0.9"} <= set(runs) else None)
    plot(dropout, runs, steps_per_epoch, common.png(args))
    results = {"steps_per_epoch": steps_per_epoch, "train_examples": len(train_split),
               "validation_examples": len(validation), "dense": dense, "dropout": dropout, "cnns": runs,
               "cnn_summaries": summaries, "momentum_training_loss_max_diff": momentum_delta}
    data = (f"{len(train_split):,} training images ({steps_per_epoch} steps per epoch), {len(validation):,} "
            "validation images")
    return common.write(args, results, tables(dense, dropout, runs, summaries, momentum_delta, steps_per_epoch, data))


if __name__ == "__main__":
    main()
