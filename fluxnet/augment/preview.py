"""``preview_grid``: a PNG of a few images next to augmented versions of them, titled with the pipeline's ops."""
from __future__ import annotations

import dataclasses
import os
import secrets
import textwrap
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fluxnet.augment.base import Op
from fluxnet.augment.pipeline import Pipeline
from fluxnet.errors import ArgumentError, DataError


def op_label(op: Op) -> str:
    """``RandomRotation(factor=0.1)``: the op's name and the arguments it sets away from their defaults
    (its own arguments first, as ``Op.to_config`` orders them)."""
    args = []
    for field in sorted(dataclasses.fields(op), key=lambda f: f.kw_only):
        value = getattr(op, field.name)
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING \
                or value != field.default:
            args.append(f"{field.name}={value!r}")
    return f"{type(op).__name__}({', '.join(args)})"


def preview_grid(pipeline: Pipeline, images: Any, key: jax.Array, path: str | Path, n_rows: int = 4,
                 n_augmented: int = 5) -> Path:
    """Write a PNG grid to ``path`` (atomically, its folder created if needed): each of ``n_rows`` images,
    then ``n_augmented`` augmented versions of it, under a title that lists the pipeline's ops in order.

    Pixel values are scaled to [0, 1] by the originals' min and max; 1-channel images are grey.
    Batch ops mix the shown images among themselves (with dummy labels).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise DataError("preview_grid: images must be (batch, height, width, 1|3|4 channels); "
                        f"got shape {images.shape}.")
    if not (isinstance(n_rows, int) and 0 < n_rows <= len(images)):
        raise ArgumentError(f"preview_grid: n_rows must be in [1, {len(images)}]; got {n_rows!r}.")
    if not (isinstance(n_augmented, int) and n_augmented > 0):
        raise ArgumentError(f"preview_grid: n_augmented must be a positive int; got {n_augmented!r}.")
    originals = images[:n_rows].astype(np.float32)
    dummy_labels = jnp.zeros((n_rows, 1), jnp.float32)
    augment = jax.jit(lambda k: pipeline(k, originals, dummy_labels, training=True)[0])
    columns = [originals] + [np.asarray(augment(jax.random.fold_in(key, i)))
                             for i in range(n_augmented)]
    low, high = float(originals.min()), float(originals.max())
    scale = (high - low) or 1.0

    width = 1.3 * len(columns)
    title = textwrap.fill("augmentation: " + (" → ".join(map(op_label, pipeline.ops)) or "none (no ops)"),
                          width=max(30, int(width * 12)), subsequent_indent="  ")
    figure = Figure(figsize=(width, 1.3 * n_rows + 0.2 * (title.count("\n") + 1)), layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title, fontsize=8)
    axes = figure.subplots(n_rows, len(columns), squeeze=False)
    for col, column in enumerate(columns):
        axes[0, col].set_title("original" if col == 0 else f"augmented {col}", fontsize=8)
        for row in range(n_rows):
            panel = np.clip((column[row] - low) / scale, 0.0, 1.0)
            grey = panel.shape[-1] == 1
            axes[row, col].imshow(panel[..., 0] if grey else panel, cmap="gray" if grey else None,
                                  vmin=0.0, vmax=1.0)
            axes[row, col].axis("off")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:  # a temporary file renamed over the target: a crash never leaves half a PNG
        figure.savefig(tmp, format=path.suffix[1:].lower() or "png", dpi=100)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
