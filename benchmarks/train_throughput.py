"""Training throughput: fluxnet ``Trainer.fit`` against a hand-written flax.linen + optax ``jax.jit`` loop
and Keras 3's ``fit`` on the JAX backend.

Both train the same model on the same in-memory MNIST-shaped random data (28x28x1, 10 classes):
``--model cnn`` is the MNIST-shaped reference CNN Conv32-Pool-Conv64-Pool-Flatten-Dropout(0.5)-Dense128-Dense10
("same" convolutions, 421,642 parameters), ``--model mlp`` is Flatten-Dense256-Dense10. The two
alternate ``--repeats`` times (machine noise is about 15%, so only ratios measured in one run mean
much); each repeat times ``--epochs`` epochs after a warm-up step that compiles (timed as the compile
time). Printed at the end, as a Markdown table: median images/s, the ratio fluxnet / hand-written
(of the medians; also the median of each repeat's own ratio, which load drifting during the run
upsets less), compile time, peak RSS and the number of compilations of each step function.

Peak RSS (``ru_maxrss``) covers the whole process; run ``--only fluxnet`` and ``--only flax`` in
separate processes to get each one's own figure.

    python benchmarks/train_throughput.py                       # CNN, both, 5 repeats
    python benchmarks/train_throughput.py --model mlp
    python benchmarks/train_throughput.py --steps-per-execution 4
    python benchmarks/train_throughput.py --only flax --repeats 3
    python benchmarks/train_throughput.py --no-keras            # without Keras 3 (the dev extra installs it)
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import fluxnet as fx
from fluxnet import layers
from fluxnet.train.trainer import AUTO_FUSED

NUM_CLASSES = 10
INPUT_SHAPE = (28, 28, 1)
LEARNING_RATE = 1e-3
ADAM_EPSILON = 1e-7  # Keras' Adam epsilon, which fluxnet's "adam" uses


# ------------------------------------------------------------------------------------------- models
def fluxnet_model(name: str, dropout: bool = True) -> fx.Sequential:
    if name == "cnn":
        return fx.Sequential([
            layers.Input(INPUT_SHAPE),
            layers.Conv2D(32, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
            layers.Conv2D(64, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
            layers.Flatten(), *([layers.Dropout(0.5)] if dropout else []),
            layers.Dense(128, activation="relu"), layers.Dense(NUM_CLASSES)])
    return fx.Sequential([layers.Input(INPUT_SHAPE), layers.Flatten(),
                          layers.Dense(256, activation="relu"), layers.Dense(NUM_CLASSES)])


class FlaxCNN(nn.Module):
    dropout: bool = True

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.max_pool(nn.relu(nn.Conv(32, (3, 3), padding="SAME")(x)), (2, 2), (2, 2))
        x = nn.max_pool(nn.relu(nn.Conv(64, (3, 3), padding="SAME")(x)), (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        x = nn.Dropout(0.5, deterministic=not train)(x) if self.dropout else x
        return nn.Dense(NUM_CLASSES)(nn.relu(nn.Dense(128)(x)))


class FlaxMLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        return nn.Dense(NUM_CLASSES)(nn.relu(nn.Dense(256)(x.reshape(x.shape[0], -1))))


# ------------------------------------------------------------------------------------------- runners
@dataclass
class Runner:
    """One way of training: ``warmup()`` compiles (first step), ``epochs(n)`` trains ``n`` epochs and
    returns when the device is done; ``compilations()`` reports each step function's cache size."""
    name: str
    warmup: Callable[[], None]
    epochs: Callable[[int], float]          # returns the last epoch's mean loss (a sanity check)
    compilations: Callable[[], dict[str, int]]
    params: int
    rates: list[float] = field(default_factory=list)
    compile_s: float = float("nan")
    loss: float = float("nan")


def make_fluxnet(args, x: np.ndarray, y: np.ndarray) -> Runner:
    model = fluxnet_model(args.model)
    loss = fx.losses.get("sparse_categorical_crossentropy", from_logits=True)  # the models output logits
    trainer = fx.Trainer(model, loss=loss, optimizer="adam", metrics=["accuracy"],
                         steps_per_execution=args.steps_per_execution)
    box = {"state": trainer.init(jax.random.key(args.seed))}
    warm = args.batch_size * fused_steps(args.steps_per_execution)

    def fit(data, n: int) -> float:
        box["state"], history = trainer.fit(box["state"], data, epochs=n, batch_size=args.batch_size,
                                            verbose=0, seed=args.seed)
        return history.history["loss"][-1]

    def compilations() -> dict[str, int]:
        trainer.evaluate(box["state"], (x, y), batch_size=256)
        counts = {"train_step": trainer.train_step._cache_size(), "eval_step": trainer.eval_step._cache_size()}
        if trainer.fused_train_step is not None:
            counts["fused_train_step"] = trainer.fused_train_step._cache_size()
        return counts

    return Runner("fluxnet", lambda: fit((x[:warm], y[:warm]), 1), lambda n: fit((x, y), n), compilations,
                  model.count_params())


def keras_model(name: str, seed: int, dropout: bool = True):
    """The same model in Keras 3 (JAX backend), compiled with Keras' Adam as a Keras user would."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    keras.utils.set_random_seed(seed)
    L = keras.layers
    if name == "cnn":
        body = [L.Conv2D(32, 3, padding="same", activation="relu"), L.MaxPooling2D(),
                L.Conv2D(64, 3, padding="same", activation="relu"), L.MaxPooling2D(),
                L.Flatten(), *([L.Dropout(0.5)] if dropout else []), L.Dense(128, activation="relu"),
                L.Dense(NUM_CLASSES)]
    else:
        body = [L.Flatten(), L.Dense(256, activation="relu"), L.Dense(NUM_CLASSES)]
    model = keras.Sequential([keras.Input(INPUT_SHAPE), *body])
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def make_keras(args, x: np.ndarray, y: np.ndarray) -> Runner:
    """Keras' ``fit`` on the same model and data."""
    model = keras_model(args.model, args.seed)

    def fit(data, n: int) -> float:
        history = model.fit(*data, epochs=n, batch_size=args.batch_size, verbose=0, shuffle=True)
        return history.history["loss"][-1]

    return Runner("keras", lambda: fit((x[:args.batch_size], y[:args.batch_size]), 1), lambda n: fit((x, y), n),
                  lambda: {}, model.count_params())


def flax_training(name: str, seed: int, dropout: bool = True) -> tuple[Callable, tuple, int]:
    """The hand-written loop's jitted, donating step ``(state, x, y) -> (state, metrics)``, its first
    state and the parameter count."""
    module = FlaxCNN(dropout) if name == "cnn" else FlaxMLP()
    tx = optax.adam(LEARNING_RATE, eps=ADAM_EPSILON)
    params = module.init(jax.random.key(seed), jnp.zeros((1, *INPUT_SHAPE)), train=False)["params"]

    def train_step(state, xb, yb):
        params, opt_state, step, key = state

        def loss_fn(p):
            logits = module.apply({"params": p}, xb, train=True, rngs={"dropout": jax.random.fold_in(key, step)})
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == yb)}
        return (optax.apply_updates(params, updates), opt_state, step + 1, key), metrics

    state = jax.jit(lambda p: (p, tx.init(p), jnp.zeros((), jnp.int32), jax.random.key(seed + 1)))(params)
    return jax.jit(train_step, donate_argnums=0), state, sum(p.size for p in jax.tree.leaves(params))


def make_flax(args, x: np.ndarray, y: np.ndarray) -> Runner:
    step_fn, state, count = flax_training(args.model, args.seed)
    box = {"state": state}
    rng = np.random.default_rng(args.seed)
    steps = len(x) // args.batch_size

    def epochs(n: int) -> float:
        for _ in range(n):
            order = rng.permutation(len(x))
            history = []
            for i in range(steps):
                idx = order[i * args.batch_size:(i + 1) * args.batch_size]
                box["state"], metrics = step_fn(box["state"], x[idx], y[idx])
                history.append(metrics)
            history = jax.device_get(history)  # waits for the last step
        return float(np.mean([m["loss"] for m in history]))

    def warmup() -> None:
        box["state"], metrics = step_fn(box["state"], x[:args.batch_size], y[:args.batch_size])
        jax.block_until_ready(metrics)

    return Runner("flax", warmup, epochs, lambda: {"train_step": step_fn._cache_size()}, count)


# ------------------------------------------------------------------------------------------- main
def fused_steps(steps_per_execution: int | str) -> int:
    """The most steps one dispatch of fluxnet's fit may take (``"auto"``: its largest candidate)."""
    return max(k for k, _ in AUTO_FUSED) if steps_per_execution == "auto" else steps_per_execution


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("cnn", "mlp"), default="cnn")
    p.add_argument("--n", type=int, default=4096, help="training examples (default 4096)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs timed per repeat (default: 1 for cnn, 20 for mlp, whose epoch is ~40 ms)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps-per-execution", type=lambda v: v if v == "auto" else int(v), default=1,
                   help="passed to fx.Trainer (fluxnet only): an int or auto")
    p.add_argument("--no-keras", action="store_true", help="leave Keras 3 out")
    p.add_argument("--only", choices=("fluxnet", "flax", "keras"), default=None,
                   help="run one side only (its own process gives its own peak RSS)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.epochs is None:
        args.epochs = 1 if args.model == "cnn" else 20
    for name in ("n", "batch_size", "epochs", "repeats", *(() if args.steps_per_execution == "auto"
                                                          else ("steps_per_execution",))):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    fused = fused_steps(args.steps_per_execution)
    if args.n < args.batch_size * fused:
        p.error(f"--n={args.n} must be at least batch_size * steps_per_execution = {args.batch_size * fused}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    x = rng.random((args.n, *INPUT_SHAPE), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, args.n).astype(np.int32)
    images = args.epochs * (args.n // args.batch_size) * args.batch_size
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} cores, "
          f"{platform.processor() or platform.machine()}); model={args.model} n={args.n} "
          f"batch={args.batch_size} epochs/repeat={args.epochs} repeats={args.repeats} "
          f"steps_per_execution={args.steps_per_execution}", flush=True)

    makers = {"fluxnet": make_fluxnet, "flax": make_flax, **({} if args.no_keras else {"keras": make_keras})}
    runners = [makers[k](args, x, y) for k in makers if args.only in (None, k)]
    for r in runners:
        t0 = time.perf_counter()
        r.warmup()
        r.compile_s = time.perf_counter() - t0
        print(f"{r.name}: {r.params:,} params, first step (compile) {r.compile_s:.2f} s", flush=True)
    for rep in range(args.repeats):
        for r in runners if rep % 2 == 0 else runners[::-1]:  # alternate the order: no runner always first
            t0 = time.perf_counter()
            r.loss = r.epochs(args.epochs)
            r.rates.append(images / (time.perf_counter() - t0))
        print(f"repeat {rep + 1}: " + "  ".join(f"{r.name} {r.rates[-1]:,.0f} img/s" for r in runners),
              flush=True)
    counts = {r.name: r.compilations() for r in runners}
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print_table(args, runners, counts, rss_mb)


def print_table(args, runners: list[Runner], counts: dict, rss_mb: float) -> None:
    medians = {r.name: statistics.median(r.rates) for r in runners}
    bases = [b for b in ("flax", "keras") if b in medians]
    rss = f"{rss_mb:.0f}" + ("" if len(runners) == 1 else " (all, one process)")
    spe = f", steps_per_execution={args.steps_per_execution}" if args.steps_per_execution != 1 else ""
    print(f"\n{args.model}, n={args.n}, batch {args.batch_size}, {args.epochs} epoch(s) x {args.repeats} "
          f"repeats{spe}, jax {jax.__version__}, {os.cpu_count()} CPU cores\n")
    print("| variant | median img/s (min-max) | " + "".join(f"vs {b} | " for b in bases)
          + "compile s | final loss | peak RSS MB | compilations |")
    print("|---|---:|" + "---:|" * len(bases) + "---:|---:|---:|---|")
    for r in runners:
        ratios = "".join(f"{medians[r.name] / medians[b]:.2f}x | " for b in bases)
        comp = ", ".join(f"{k} {v}" for k, v in counts[r.name].items()) or "-"
        print(f"| {r.name} | {medians[r.name]:,.0f} ({min(r.rates):,.0f}-{max(r.rates):,.0f}) | {ratios}"
              f"{r.compile_s:.2f} | {r.loss:.4f} | {rss} | {comp} |")
    if "fluxnet" not in medians:
        return
    mine = next(r for r in runners if r.name == "fluxnet")
    for base in bases:
        other = next(r for r in runners if r.name == base)
        paired = [a / b for a, b in zip(mine.rates, other.rates)]
        print(f"\npaired ratio fluxnet / {base} (each repeat's adjacent runs): median {statistics.median(paired):.2f}x "
              f"(min {min(paired):.2f}x, max {max(paired):.2f}x); target >= 1.0x: "
              f"{'met' if medians['fluxnet'] >= medians[base] else 'NOT met'}")
    once = all(v <= 1 for v in counts["fluxnet"].values()) and counts["fluxnet"]["eval_step"] == 1
    print(f"one compilation per step function: {'met' if once else 'NOT met'}")


if __name__ == "__main__":
    sys.exit(main())
