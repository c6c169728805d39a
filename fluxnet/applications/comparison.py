"""The registered applications measured on this machine beside Keras' ImageNet figures.

:func:`table` builds each network with its 1000-class top and measures it: parameters (counted at the
network's default input size, where Keras counts them), forward FLOPs per image (XLA's cost analysis of
the compiled forward pass), inference images per second and compile seconds at a small input size.
:func:`format_table` prints the rows, :func:`plot_table` draws parameters against Keras' top-1 accuracy.
"""
from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from fluxnet.applications.catalog import APPLICATIONS, Application
from fluxnet.errors import ArgumentError
from fluxnet.registry import Registry

DEFAULT_SIZE, DEFAULT_BATCH = 32, 8  # the whole table in well under a minute on two CPU cores


@dataclass(frozen=True)
class Row:
    """One network measured: ``size`` is the input's height and width (the requested size, or the
    network's minimum if larger), ``gflops`` the forward GFLOPs per image at that size; Keras' figures
    as the catalog has them (None: not listed by Keras)."""
    name: str
    size: int
    batch: int
    params: int
    keras_depth: int | None
    keras_top1: float
    keras_top5: float | None
    gflops: float
    images_per_s: float
    compile_s: float
    device: str


def _positive_int(value: object, argument: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ArgumentError(f"`{argument}` must be a positive integer. Received: {argument}={value!r}")
    return value


def measure(name: str, app: Application, size: int = DEFAULT_SIZE, batch: int = DEFAULT_BATCH,
            seconds: float = 0.5) -> Row:
    """Build ``app`` at ``size`` (at least its minimum), compile its forward pass on ``batch`` images
    and run it for about ``seconds`` (twice at least) after one warm-up call."""
    size = max(_positive_int(size, "size"), app.min_size)
    batch = _positive_int(batch, "batch")
    model = app.builder(input_shape=(size, size, 3))
    params = (model if size == app.default_size else
              app.builder(input_shape=(app.default_size, app.default_size, 3))).count_params()
    variables = model.init(jax.random.key(0))
    images = app.preprocess_input(np.random.default_rng(0).uniform(0.0, 255.0, (batch, size, size, 3)))
    start = time.perf_counter()
    forward = jax.jit(lambda v, x: model.apply(v, x)[0]).lower(variables, images).compile()
    compile_s = time.perf_counter() - start
    flops = forward.cost_analysis()["flops"] / batch
    jax.block_until_ready(forward(variables, images))
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < seconds:
        jax.block_until_ready(forward(variables, images))
        calls += 1
    images_per_s = calls * batch / (time.perf_counter() - start)
    return Row(name, size, batch, params, app.keras_depth, app.keras_top1, app.keras_top5, flops / 1e9,
               images_per_s, compile_s, jax.devices()[0].device_kind)


def table(size: int = DEFAULT_SIZE, batch: int = DEFAULT_BATCH, seconds: float = 0.5,
          registry: Registry[Application] | None = None) -> list[Row]:
    """A :class:`Row` per application of ``registry`` (default: every registered one), in name order,
    each from :func:`measure` at input ``size`` x ``size`` on ``batch`` images."""
    _positive_int(size, "size")
    _positive_int(batch, "batch")
    registry = APPLICATIONS if registry is None else registry
    return [measure(name, registry.get(name), size, batch, seconds) for name in registry.names()]


def format_table(rows: list[Row]) -> str:
    """The rows as a text table, with where and at what input size they were measured."""
    header = ("name", "input", "params", "depth", "top-1 %", "top-5 %", "GFLOPs/image", "images/s", "compile s")
    cells = [(r.name, f"{r.size}x{r.size}", f"{r.params:,}", "-" if r.keras_depth is None else str(r.keras_depth),
              f"{r.keras_top1:.1f}", "-" if r.keras_top5 is None else f"{r.keras_top5:.1f}", f"{r.gflops:.3f}",
              f"{r.images_per_s:.1f}", f"{r.compile_s:.1f}") for r in rows]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in [header, *cells]]
    where = f"measured on {rows[0].device}, batch {rows[0].batch}" if rows else "no applications"
    return "\n".join([f"Keras applications ({where}; depth and ImageNet top-1/top-5 as Keras reports them, "
                      "https://keras.io/api/applications/)", *lines])


def plot_table(rows: list[Row], path: str | os.PathLike) -> Path:
    """A PNG at ``path``: parameters (log scale) against Keras' top-1 accuracy, one labelled point per
    row with its area proportional to the measured images per second. Written atomically."""
    if not rows:
        raise ArgumentError("plot_table needs at least one row (from fx.applications.table()). Received: rows=[]")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    fastest = max(r.images_per_s for r in rows)
    ax.scatter([r.params for r in rows], [r.keras_top1 for r in rows],
               s=[30 + 600 * r.images_per_s / fastest for r in rows], alpha=0.5)
    for r in rows:
        ax.annotate(f"{r.name}\n{r.images_per_s:.0f} images/s", (r.params, r.keras_top1), fontsize=8,
                    textcoords="offset points", xytext=(10, 4))
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("Keras ImageNet top-1 accuracy (%)")
    ax.set_title(f"marker area: images/s at {rows[0].size}x{rows[0].size}, batch {rows[0].batch}, "
                 f"on {rows[0].device}", fontsize=9)
    ax.margins(x=0.3, y=0.15)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:  # a temporary file renamed over the target: a crash never leaves half a PNG
        figure.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
