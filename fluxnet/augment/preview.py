"""``preview_grid``: a PNG of a few images next to augmented versions of them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fluxnet.augment.pipeline import Pipeline
from fluxnet.errors import ArgumentError, DataError


def preview_grid(pipeline: Pipeline, images: Any, key: jax.Array, n_rows: int = 4,
                 path: str | Path = "augment_preview.png", n_augmented: int = 5) -> Path:
    """Write a PNG grid: each of ``n_rows`` images, then ``n_augmented`` augmented versions of it.

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

    figure = Figure(figsize=(1.3 * len(columns), 1.3 * n_rows))
    FigureCanvasAgg(figure)
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
    figure.savefig(path, dpi=100)
    return path
