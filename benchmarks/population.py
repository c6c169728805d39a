"""Populations: K-fold cross-validation and learning-rate members trained as one vmapped program
(``fluxnet.train.population``) against the same runs one after another with ``Trainer.fit``.

Digits (the bundled set, 1,797 images; scikit-learn's copy, so no tfds preparation is timed), the
MLP and the CNN of ``configs/digits_cnn.py``; the two strategies alternate ``--repeats`` times in one
process and the median wall time of each is printed with their ratio. Compilation is excluded (one
warm-up of each first) and reported separately.

    python benchmarks/population.py [--model mlp|cnn] [--folds 5] [--epochs 8] [--repeats 3]
    python benchmarks/population.py --model cnn --sizes 1,2,4,8,16     # compile time and memory vs P

``--sizes`` measures, for each population size P, the compiled step (``Population.step_cost``): its
compile time, its run time (and per member), and the device memory XLA's memory analysis gives it --
what ``fluxnet cv``'s default population size is chosen from.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import StratifiedKFold

import fluxnet as fx
from fluxnet.models.builders import build_model
from fluxnet.train.population import Member, Population

MODELS = {"mlp": dict(units=(128,), dropout=0.2), "cnn": dict(filters=(16, 32), dense_units=64, dropout=0.3)}


def members_for(args, x, y) -> tuple[str, list[Member]]:
    if args.kind == "cv":
        folds = StratifiedKFold(args.folds, shuffle=True, random_state=0).split(x, y)
        return f"{args.folds}-fold cv", [Member(seed=0, train_rows=tr, validation_rows=va) for tr, va in folds]
    rates = np.geomspace(3e-4, 1e-2, args.rates)
    return f"{args.rates} learning rates", [Member(seed=0, learning_rate=float(r)) for r in rates]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="mlp")
    p.add_argument("--kind", choices=("cv", "lr"), default="cv")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--rates", type=int, default=8)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sizes", default=None, help="comma-separated population sizes: compile time and memory")
    args = p.parse_args()
    digits = load_digits()
    x, y = (digits.images[..., None] / 16).astype("float32"), digits.target
    model = build_model(args.model, (8, 8, 1), 10, **MODELS[args.model])
    trainer = fx.Trainer(model, loss=fx.losses.get("sparse_categorical_crossentropy", from_logits=True),
                         optimizer="adam", metrics=["accuracy"])
    if args.sizes:
        return sizes(args, trainer, x, y)
    title, members = members_for(args, x, y)
    population = Population(trainer)

    def together(epochs: int) -> list:
        _, histories = population.fit(members, (x, y), epochs=epochs, batch_size=args.batch_size)
        return [h.history["loss"][-1] for h in histories]

    def one_by_one(epochs: int) -> list:
        out = []
        for m in members:
            state = population.init([m])
            state = jax.tree.map(lambda a: a[0], state)
            rows = np.arange(len(x)) if m.train_rows is None else m.train_rows
            val = None if m.validation_rows is None else (x[m.validation_rows], y[m.validation_rows])
            _, history = trainer.fit(state, (x[rows], y[rows]), epochs=epochs, batch_size=args.batch_size,
                                     validation_data=val, verbose=0)
            out.append(history.history["loss"][-1])
        return out

    runs = {"population": together, "sequential": one_by_one}
    for name, run in runs.items():
        t0 = time.perf_counter()
        run(1)
        print(f"{name}: warm-up (compile + 1 epoch) {time.perf_counter() - t0:.2f} s", flush=True)
    times: dict[str, list[float]] = {name: [] for name in runs}
    losses = {}
    for rep in range(args.repeats):
        for name in (list(runs) if rep % 2 == 0 else list(runs)[::-1]):
            t0 = time.perf_counter()
            losses[name] = runs[name](args.epochs)
            times[name].append(time.perf_counter() - t0)
        print(f"repeat {rep + 1}: " + "  ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    gap = max(abs(a - b) / abs(b) for a, b in zip(losses["population"], losses["sequential"]))
    platform = jax.devices()[0].platform
    print(f"\n{args.model.upper()}, {title}, {args.epochs} epochs, batch {args.batch_size}, {platform}")
    print("| strategy | median s | speed-up |\n|---|---:|---:|")
    for k in runs:
        print(f"| {k} | {med[k]:.2f} | {med['sequential'] / med[k]:.2f}x |")
    print(f"largest relative gap between the members' final losses: {gap:.1e}")


def sizes(args, trainer, x, y) -> None:
    """Compile time, step time and memory of the population step against the population size."""
    print(f"{args.model.upper()}, batch {args.batch_size}, {jax.devices()[0].platform}")
    print("| P | compile s | step ms | ms per member | memory MiB | MiB per member |\n|---:|---:|---:|---:|---:|---:|")
    for p in [int(v) for v in args.sizes.split(",")]:
        cost = Population(trainer).step_cost(p, (x, y), args.batch_size, steps=20)  # a fresh program for each P
        print(f"| {p} | {cost.compile_seconds:.2f} | {cost.step_seconds * 1e3:.2f} | "
              f"{cost.step_seconds * 1e3 / p:.3f} | {cost.memory_bytes / 2**20:.2f} | "
              f"{cost.memory_bytes / 2**20 / p:.3f} |", flush=True)


if __name__ == "__main__":
    main()
