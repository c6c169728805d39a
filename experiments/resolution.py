"""Study 5b, image resolution: the review's "the smallest resolution that still separates the classes".

The bundled 8x8 digits are resized to 2x2, 3x3, 4x4 and 6x6 (area averaging: each output pixel is the
mean of the input pixels it covers, fractions weighted) and to 16x16 (bilinear), with
``fluxnet.data.preprocess.resize``. At each resolution logistic regression and the digits CNN (the
learning-curve study's network, "same" pooling so 2x2 inputs pass) train for the same number of epochs
of 1,440 rows (every training image, a few twice), over several seeds, and are scored on one fixed test
split (20%). Cost per training image of a whole ``Trainer.fit``, after a warm-up fit compiled its steps:
the CPU seconds this process spent (all its threads; less sensitive than wall time to other load),
the wall seconds of the fastest seed's fit, and XLA's count of the CNN's forward FLOPs.

    python experiments/resolution.py [--seeds 3] [--epochs 25]
"""
from __future__ import annotations

import argparse
import time

import common
import jax
import numpy as np
from learning_curves import EPOCH_ROWS, FILTERS, QUICK_FILTERS, cnn, logistic, trainer

from fluxnet.data import load_dataset, preprocess_splits, resize

NAME = "resolution"
SIDES = (2, 3, 4, 6, 8, 16)
BATCH = 32


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=25, help="epochs of every training image (batch 32)")


def at_side(images: np.ndarray, side: int) -> np.ndarray:
    """``images`` at ``side`` x ``side``: area-averaged when smaller, bilinear when larger."""
    method = "area" if side < images.shape[1] else "bilinear"
    return np.asarray(resize(images, (side, side), method))


def forward_flops(model, x: np.ndarray) -> float:
    """XLA's FLOP count of one inference forward pass, per image."""
    variables = model.init(jax.random.key(0))
    forward = jax.jit(lambda v, b: model.apply(v, b)[0]).lower(variables, x).compile()
    return forward.cost_analysis()["flops"] / len(x)


def train_and_time(model, train: tuple, test: tuple, seeds: int, epochs: int) -> dict:
    """Test accuracy per seed, and the wall and CPU (all threads of this process) seconds per training
    image of each seed's fit (after a warm-up fit compiled the step)."""
    tr = trainer(model, epochs * len(train[1]) // BATCH)
    tr.fit(tr.init(jax.random.key(0)), train, epochs=1, batch_size=BATCH, verbose=0)  # compiles the step
    out: dict = {"accuracy": [], "seconds_per_image": [], "cpu_seconds_per_image": []}
    for seed in range(seeds):
        state = tr.init(jax.random.key(seed))
        wall, cpu = time.perf_counter(), time.process_time()
        state, _ = tr.fit(state, train, epochs=epochs, batch_size=BATCH, verbose=0, seed=seed)
        jax.block_until_ready(state)
        out["seconds_per_image"].append((time.perf_counter() - wall) / (epochs * len(train[1])))
        out["cpu_seconds_per_image"].append((time.process_time() - cpu) / (epochs * len(train[1])))
        out["accuracy"].append(float(np.mean(tr.predict(state, test[0]).argmax(1) == test[1])))
    return out


def table(results: dict) -> str:
    rows = [[f"{side}x{side}", side * side, common.mean_std(r["logistic"]["accuracy"]),
             common.mean_std(r["cnn"]["accuracy"]), f"{1e6 * np.median(r['logistic']['cpu_seconds_per_image']):.1f}",
             f"{1e6 * np.median(r['cnn']['cpu_seconds_per_image']):.1f}",
             f"{1e6 * min(r['cnn']['seconds_per_image']):.1f}", f"{r['cnn_forward_flops'] / 1e3:.0f}"]
            for side, r in results.items()]
    return ("Test accuracy at each resolution (mean ± std over seeds) and training cost per training image: "
            "CPU µs (this process' threads, median over seeds), wall µs (the fastest seed's fit, the least "
            "disturbed by other load) and XLA's forward kFLOPs of the CNN:\n\n"
            + common.markdown(["resolution", "pixels", "logistic", "CNN", "logistic CPU µs", "CNN CPU µs",
                               "CNN wall µs", "CNN forward kFLOPs"], rows))


def plot(args: argparse.Namespace, results: dict, examples: dict) -> None:
    plt = common.pyplot()
    fig = plt.figure(figsize=(13, 6.5))
    columns = max(2, len(examples))
    grid = fig.add_gridspec(2, columns, height_ratios=[3, 1.3])
    pixels = [side * side for side in results]
    ax = fig.add_subplot(grid[0, :columns // 2])
    for model in ("logistic", "cnn"):
        values = [r[model]["accuracy"] for r in results.values()]
        ax.errorbar(pixels, [np.mean(v) for v in values], yerr=[np.std(v) for v in values], marker="o",
                    capsize=3, label=model)
    ax.set(xscale="log", xlabel="pixels per image", ylabel="test accuracy", title="accuracy against resolution")
    cost = fig.add_subplot(grid[0, columns // 2:])
    for model in ("logistic", "cnn"):
        cost.plot(pixels, [1e6 * np.median(r[model]["cpu_seconds_per_image"]) for r in results.values()],
                  marker="o", label=f"{model}: CPU µs per training image")
    cost.plot(pixels, [r["cnn_forward_flops"] / 1e4 for r in results.values()], "k--", marker=".",
              label="CNN forward FLOPs / 10^4")
    cost.set(xscale="log", yscale="log", xlabel="pixels per image", title="training cost")
    for a in (ax, cost):
        a.set_xticks(pixels, [f"{s}x{s}" for s in results], minor=False)
        a.minorticks_off()
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    for i, (side, image) in enumerate(examples.items()):
        panel = fig.add_subplot(grid[1, i])
        panel.imshow(image, cmap="gray_r", interpolation="nearest")
        panel.set(xticks=[], yticks=[], title=f"{side}x{side}")
    common.save_figure(fig, common.png(args))


def main(argv: list[str] | None = None) -> dict:
    args = common.parse(NAME, __doc__, argv, add_arguments)
    sides, seeds, epochs, filters = ((3,), 1, 1, QUICK_FILTERS) if args.quick else (
        SIDES, args.seeds, args.epochs, FILTERS)
    splits = load_dataset("digits", data_dir=args.data_dir, splits={"train": "train", "test": 0.2}, seed=0)
    splits, _ = preprocess_splits(splits, {"rescale": 1 / 255})
    results, examples = {}, {}
    rows = np.resize(np.arange(len(splits.train)), EPOCH_ROWS)  # every image (a few twice), whole batches
    for side in sides:
        train = (at_side(splits.train.images, side)[rows], splits.train.labels[rows])
        test = (at_side(splits.test.images, side), splits.test.labels)
        shape = train[0].shape[1:]
        results[side] = {"logistic": train_and_time(logistic(shape), train, test, seeds, epochs),
                         "cnn": train_and_time(cnn(shape, filters), train, test, seeds, epochs),
                         "cnn_forward_flops": forward_flops(cnn(shape, filters), test[0][:BATCH])}
        examples[side] = test[0][0, :, :, 0]
        print(f"{side}x{side}: logistic {np.mean(results[side]['logistic']['accuracy']):.4f}, "
              f"cnn {np.mean(results[side]['cnn']['accuracy']):.4f}", flush=True)
    plot(args, results, examples)
    return common.write(args, {"sides": list(sides), "seeds": seeds, "epochs": epochs,
                               "test_images": len(splits.test), "by_side": results}, table(results))


if __name__ == "__main__":
    main()
