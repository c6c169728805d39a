"""One train step in isolation: fluxnet's jitted ``Trainer.train_step``, the hand-written flax.linen +
optax step and Keras 3's train function (JAX backend), each on the same batch already on the device,
``--steps`` steps per timing, the three alternated ``--repeats`` times.

``train_throughput.py`` times whole epochs; this takes the loop (batch gather, dispatch, progress,
metrics) away, so what is left is the compiled step itself. ``--no-dropout`` drops the CNN's Dropout
from all three; ``--hlo`` prints op counts of each compiled program (XLA's optimised HLO).

    python benchmarks/step_time.py                   # CNN
    python benchmarks/step_time.py --no-dropout --hlo
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import jax
import numpy as np

import fluxnet as fx
from train_throughput import INPUT_SHAPE, NUM_CLASSES, flax_training, fluxnet_model, keras_model

HLO_OPS = ("fusion", "convolution", "dot", "copy", "transpose", "xor")
HLO_PATTERNS = [re.compile(rf" {op}\(") for op in HLO_OPS]


@dataclass
class Side:
    """One way of taking a train step: ``advance(state) -> state`` on a fixed device batch, its first
    state, and ``hlo(state)``, the compiled program's text."""
    advance: Callable[[Any], Any]
    state: Any
    hlo: Callable[[Any], str]

    def steps(self, n: int) -> None:
        for _ in range(n):
            self.state = self.advance(self.state)
        jax.block_until_ready(self.state)


def fluxnet_side(name: str, dropout: bool, x: np.ndarray, y: np.ndarray) -> Side:
    trainer = fx.Trainer(fluxnet_model(name, dropout), optimizer="adam", metrics=["accuracy"],
                         loss=fx.losses.get("sparse_categorical_crossentropy", from_logits=True))
    batch = trainer.batches.place({"x": x, "y": y})
    return Side(lambda s: trainer.train_step(s, batch)[0], trainer.init(jax.random.key(0)),
                lambda s: trainer.train_step.lower(s, batch).compile().as_text())


def flax_side(name: str, dropout: bool, x: np.ndarray, y: np.ndarray) -> Side:
    step_fn, state, _ = flax_training(name, 0, dropout)
    xd, yd = jax.device_put(x), jax.device_put(y)
    return Side(lambda s: step_fn(s, xd, yd)[0], state, lambda s: step_fn.lower(s, xd, yd).compile().as_text())


def keras_side(name: str, dropout: bool, x: np.ndarray, y: np.ndarray) -> Side:
    """Keras' own jitted train function (``make_train_function``) on its state tuple, as ``fit`` calls it."""
    model = keras_model(name, 0, dropout)
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)  # builds the optimizer and metric variables
    state = tuple(tuple(v.value for v in vs) for vs in (
        model.trainable_variables, model.non_trainable_variables, model.optimizer.variables,
        model.metrics_variables))
    data = (jax.device_put(x), jax.device_put(y), None)
    return Side(lambda s: model.train_function(s, iter([data]))[1], state,
                lambda s: jax.jit(model.train_step, donate_argnums=0).lower(s, data).compile().as_text())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("cnn", "mlp"), default="cnn")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=40, help="steps per timing")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--no-dropout", action="store_true", help="the CNN without its Dropout layer")
    p.add_argument("--hlo", action="store_true", help="op counts of each compiled step")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch_size, *INPUT_SHAPE), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, args.batch_size).astype(np.int32)
    sides = {name: make(args.model, not args.no_dropout, x, y)
             for name, make in (("fluxnet", fluxnet_side), ("flax", flax_side), ("keras", keras_side))}
    for side in sides.values():
        side.steps(3)  # compiles
    ms = {name: [] for name in sides}
    for rep in range(args.repeats):
        for name in list(sides) if rep % 2 == 0 else list(sides)[::-1]:
            start = time.perf_counter()
            sides[name].steps(args.steps)
            ms[name].append((time.perf_counter() - start) / args.steps * 1e3)
    base = statistics.median(ms["flax"])
    print(f"{args.model}{' without dropout' if args.no_dropout else ''}, batch {args.batch_size}, "
          f"{args.steps} steps x {args.repeats} repeats, jax {jax.__version__}\n")
    ops = "".join(f" {op} |" for op in HLO_OPS) if args.hlo else ""
    print("| step | median ms (min-max) | vs flax (time) |" + ops)
    print("|---|---:|---:|" + ("---:|" * len(HLO_OPS) if args.hlo else ""))
    for name, side in sides.items():
        counts = ""
        if args.hlo:  # every instruction, those inside fused computations too
            text = side.hlo(side.state)
            counts = "".join(f" {len(re.findall(pattern, text))} |" for pattern in HLO_PATTERNS)
        print(f"| {name} | {statistics.median(ms[name]):.2f} ({min(ms[name]):.2f}-{max(ms[name]):.2f}) | "
              f"{statistics.median(ms[name]) / base:.3f} |{counts}")


if __name__ == "__main__":
    sys.exit(main())
