"""Images as a Keras application takes them: resized to its input size, a single channel repeated to
RGB, then the network's own ``preprocess_input``.

This is what ``fluxnet transfer`` does to every split when its backbone is an application
(``transfer.backbone=mobilenet_v2:PATH.weights.h5``), so that digits-sized grayscale images (8x8x1) feed a
network whose smallest input is 32x32x3 (Xception 71x71x3).
"""
from __future__ import annotations

import numpy as np

from fluxnet.applications.catalog import APPLICATIONS
from fluxnet.data.preprocess import resize
from fluxnet.errors import ArgumentError, DataError


def input_size(name: str, size: int | None = None) -> int:
    """The side application ``name`` is fed at: ``size``, default its smallest (Keras' minimum)."""
    app = APPLICATIONS.get(name)
    if size is None:
        return app.min_size
    if isinstance(size, bool) or not isinstance(size, int) or size < app.min_size:
        raise ArgumentError(f"input size for {name} must be an int of at least {app.min_size} (Keras' minimum), "
                            f"got {size!r}.")
    return size


def application_images(images: np.ndarray, name: str, size: int | None = None,
                       interpolation: str = "bilinear") -> np.ndarray:
    """``images`` (N, H, W, 1 or 3), pixel values in [0, 255], as application ``name`` takes them:
    resized to ``input_size(name, size)`` on both sides, grayscale repeated to three channels, then
    ``preprocess_input`` of the network; float32 numpy."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(f"{name} takes (N, height, width, 1 or 3) images; got shape {images.shape}.")
    side = input_size(name, size)
    x = np.asarray(resize(images, (side, side), interpolation))
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return np.asarray(APPLICATIONS.get(name).preprocess_input(x), np.float32)
