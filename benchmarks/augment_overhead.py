"""How much on-device augmentation adds to the digits CNN's train step.

Trains the main job's CNN (configs/digits_cnn.py) on the digits training images with and without an
augmentation pipeline, alternating the two ``--repeats`` times (the machine's noise is about 15%), and
prints the median step time of each, the overhead in percent, and the compilations of each step.
Target: augmentation adds at most 10% to the step time.

    python benchmarks/augment_overhead.py [--repeats 5] [--epochs 3] [--batch-size 32] [--pipeline geometric]
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

import fluxnet as fx
from fluxnet import augment
from fluxnet.models.builders import build_model

PIPELINES = {
    "geometric": [{"op": "RandomTranslation", "height_factor": 0.125, "width_factor": 0.125,
                   "fill_mode": "constant"},
                  {"op": "RandomRotation", "factor": 0.04, "fill_mode": "constant"}],
    "shift": [{"op": "RandomTranslation", "height_factor": 0.125, "width_factor": 0.125,
               "fill_mode": "constant", "interpolation": "nearest"}],
    "full": [{"op": "RandomTranslation", "height_factor": 0.125, "width_factor": 0.125, "fill_mode": "constant"},
             {"op": "RandomRotation", "factor": 0.04, "fill_mode": "constant"},
             {"op": "RandomZoom", "height_factor": 0.1, "fill_mode": "constant"},
             {"op": "RandomContrast", "factor": 0.2, "value_range": (0, 1)},
             {"op": "RandomErasing", "probability": 0.5, "value_range": (0, 1)}],
}


def make_trainer(pipeline):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (np.round(digits.images * 255 / 16) / 255).astype(np.float32)[..., None]
    y = digits.target.astype(np.int32)
    model = build_model("cnn", (8, 8, 1), 10, filters=(32, 64), dense_units=128, dropout=0.3)
    loss = fx.losses.get("sparse_categorical_crossentropy", from_logits=True)
    trainer = fx.Trainer(model, loss=loss, optimizer="adam", metrics=["accuracy"], augment=pipeline)
    return trainer, trainer.init(jax.random.key(0)), (x, y)


def timed_epochs(trainer, state, data, epochs: int, batch_size: int):
    start = time.perf_counter()
    state, _ = trainer.fit(state, data, epochs=epochs, batch_size=batch_size, verbose=0)
    jax.block_until_ready(state.params)
    steps = epochs * (len(data[0]) // batch_size)
    return state, (time.perf_counter() - start) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pipeline", choices=sorted(PIPELINES), default="geometric")
    args = p.parse_args()
    runs = {"plain": make_trainer(None),
            "augmented": make_trainer(augment.Pipeline.from_config(PIPELINES[args.pipeline]))}
    states, times, compile_s = {}, {name: [] for name in runs}, {}
    for name, (trainer, state, data) in runs.items():  # warm-up: compile outside the timings
        start = time.perf_counter()
        states[name], _ = timed_epochs(trainer, state, data, 1, args.batch_size)
        compile_s[name] = time.perf_counter() - start
    for _ in range(args.repeats):
        for name, (trainer, _, data) in runs.items():
            states[name], step = timed_epochs(trainer, states[name], data, args.epochs, args.batch_size)
            times[name].append(step)
    med = {name: statistics.median(t) for name, t in times.items()}
    overhead = 100 * (med["augmented"] / med["plain"] - 1)
    print(f"device: {jax.devices()[0].platform} x{jax.device_count()}  pipeline: {args.pipeline} "
          f"({len(PIPELINES[args.pipeline])} ops)  batch {args.batch_size}")
    print("| variant | median ms/step | images/s | first epoch incl. compile s | train-step compilations |")
    print("|---|---:|---:|---:|---:|")
    for name, (trainer, _, _) in runs.items():
        print(f"| {name} | {1e3 * med[name]:.3f} | {args.batch_size / med[name]:.0f} | {compile_s[name]:.1f} | "
              f"{trainer.train_step._cache_size()} |")
    print(f"augmentation overhead: {overhead:+.1f}% of the step time (target: <= +10%)")


if __name__ == "__main__":
    main()
