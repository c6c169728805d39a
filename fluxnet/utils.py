"""Small Keras utilities."""
from __future__ import annotations

import numpy as np

from fluxnet.errors import ArgumentError, DataError


def to_categorical(y, num_classes: int | None = None, dtype: str = "float32") -> np.ndarray:
    """Class ids as one-hot rows (Keras' ``to_categorical``): shape ``y.shape + (num_classes,)``, with a
    trailing axis of size 1 squeezed first; ``num_classes`` defaults to ``max(y) + 1``."""
    y = np.asarray(y)
    if y.ndim and y.shape[-1] == 1 and y.ndim > 1:
        y = y.reshape(y.shape[:-1])
    if y.size and (not np.issubdtype(y.dtype, np.number) or np.any(y != np.round(y)) or y.min() < 0):
        raise DataError(f"to_categorical needs non-negative whole class ids, got {y.ravel()[:3]}.")
    n = int(y.max()) + 1 if num_classes is None and y.size else num_classes or 0
    if y.size and y.max() >= n:
        raise ArgumentError(f"to_categorical: class {int(y.max())} does not fit num_classes={n}.")
    return np.eye(n, dtype=dtype)[y.astype(np.int64)]
