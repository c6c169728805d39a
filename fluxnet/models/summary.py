"""Keras-like model summary: one row per layer (name, type, output shape, parameters), then totals."""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import numpy as np

from fluxnet.layers.base import format_shape
from fluxnet.layers.core import InputLayer

if TYPE_CHECKING:
    from fluxnet.models.functional import Model


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}"
        n /= 1024


def _shapes(layer) -> str:
    shapes = [format_shape(node.output.shape) for node in layer._nodes]
    return ", ".join(dict.fromkeys(shapes))


def _type_name(layer) -> str:
    """The class name, as Keras shows it; ``fx.Model`` itself is Keras' ``Functional``."""
    name = type(layer).__name__
    return "Functional" if name == "Model" else name


def summary_table(model: "Model") -> str:
    """The summary text; a functional model also shows which layers feed each one (Keras 3). A nested
    model is one row (``base (Functional)``) with its output shape and all its variables' count."""
    functional = model.shows_connections
    node_ids = {id(n) for n in model._graph_nodes}
    rows = []
    for layer in model._layers:
        if isinstance(layer, InputLayer) and not functional:
            continue
        params = sum(model.layer_param_sizes(layer).values())
        row = [f"{layer.name} ({_type_name(layer)})", _shapes(layer), f"{params:,}"]
        if functional:
            sources = [f"{p.layer.name}[{p.node.call_index}][0]" for node in layer._nodes
                       if id(node) in node_ids for p in node.parents]
            row.append(", ".join(sources) or "-")
        rows.append(row)
    header = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if functional else [])
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))] if rows else \
        [len(h) for h in header]

    def line(cells: list[str]) -> str:
        return "│ " + " │ ".join(c.rjust(w) if i == 2 else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " │"

    rule = lambda l, m, r: l + m.join("─" * (w + 2) for w in widths) + r  # noqa: E731
    counts = model.param_counts()
    dtype_size = {c: np.dtype(leaf.dtype).itemsize for c, sub in model.abstract_variables().items()
                  for leaf in jax.tree.leaves(sub)[:1]}
    size = dtype_size.get("params", 4)
    total = counts["trainable"] + counts["non_trainable"]
    out = [f'Model: "{model.name}"', rule("┌", "┬", "┐"), line(header), rule("├", "┼", "┤")]
    out += [line(r) for r in rows]
    out += [rule("└", "┴", "┘"),
            f" Total params: {total:,} ({_bytes(total * size)})",
            f" Trainable params: {counts['trainable']:,} ({_bytes(counts['trainable'] * size)})",
            f" Non-trainable params: {counts['non_trainable']:,} ({_bytes(counts['non_trainable'] * size)})"]
    return "\n".join(out)
