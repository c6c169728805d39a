"""Preprocessing from config: resize, then rescale, then per-channel normalisation; float32 out.

The steps are pure functions on arrays (jittable, numpy or jax in, jax float32 out). Normalisation
statistics come from the TRAINING split only and are applied unchanged to every split, so nothing of
the validation or test data leaks into the inputs::

    splits, preprocessor = preprocess_splits(splits, {"rescale": 1 / 255, "normalize": True})
    preprocessor(new_images)          # the same transform, e.g. at inference

Names follow Keras' preprocessing layers: ``Resizing(height, width, interpolation="bilinear",
antialias=False)``, ``Rescaling(scale, offset)`` and ``Normalization`` (``(x - mean) /
max(sqrt(var), 1e-7)``, population variance).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from fluxnet.tree import plain
from fluxnet.data.images import image_size_arg
from fluxnet.data.splits import DatasetSplits, Split
from fluxnet.errors import ArgumentError, DataError
from fluxnet.registry import unknown_name_error

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos3", "lanczos5", "area")  # area: tf.keras' pixel average
EPSILON = 1e-7        # Keras' backend.epsilon(), the floor on a channel's std
_STATS_CHUNK = 1 << 20


def resize(images: jax.Array | np.ndarray, image_size: tuple[int, int], interpolation: str = "bilinear",
           antialias: bool = False) -> jax.Array:
    """(N, H, W, C) images resized to ``image_size`` = (height, width), as float32. ``"area"`` averages the
    input pixels each output pixel covers (fractional overlaps weighted), e.g. 8x8 digits to 3x3;
    ``"bilinear"`` without ``antialias`` samples, so a 4x reduction reads only 4 of every 16 pixels."""
    if interpolation not in INTERPOLATIONS:
        raise unknown_name_error("interpolation", interpolation, INTERPOLATIONS)
    images = jnp.asarray(images, jnp.float32)
    shape = (images.shape[0], *image_size, images.shape[-1])
    if shape == images.shape:
        return images
    method = {"bilinear": "linear", "bicubic": "cubic"}.get(interpolation, interpolation)   # jax's names
    return jax.image.resize(images, shape, method=method, antialias=antialias)


def rescale(images: jax.Array | np.ndarray, scale: float, offset: float = 0.0) -> jax.Array:
    """``images * scale + offset`` as float32 (Keras' Rescaling)."""
    return jnp.asarray(images, jnp.float32) * scale + offset


def channel_stats(images: jax.Array | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (population, floored at 1e-7) over every axis but the last, in float64."""
    flat = np.asarray(images).reshape(-1, np.shape(images)[-1])
    if flat.shape[0] == 0:
        raise DataError("Cannot compute normalisation statistics of an empty split.")
    mean = flat.mean(axis=0, dtype=np.float64)
    squares = sum(((flat[i:i + _STATS_CHUNK] - mean) ** 2).sum(axis=0)
                  for i in range(0, flat.shape[0], _STATS_CHUNK))
    return mean, np.maximum(np.sqrt(squares / flat.shape[0]), EPSILON)


def normalize(images: jax.Array | np.ndarray, mean: np.ndarray, std: np.ndarray) -> jax.Array:
    """``(images - mean) / std`` per channel, as float32."""
    return (jnp.asarray(images, jnp.float32) - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """Preprocessing settings as a run config gives them; each step is off by default."""

    image_size: tuple[int, int] | None = None
    interpolation: str = "bilinear"
    antialias: bool = False
    rescale: float | None = None        # e.g. 1 / 255
    offset: float = 0.0
    normalize: bool = False             # per channel, statistics of the training split

    def __post_init__(self):
        if self.image_size is not None:
            object.__setattr__(self, "image_size", image_size_arg(self.image_size))
        if self.interpolation not in INTERPOLATIONS:
            raise unknown_name_error("interpolation", self.interpolation, INTERPOLATIONS)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | Any | None) -> "Preprocessing":
        """From a mapping or ``ml_collections.ConfigDict``; unknown keys raise UnknownNameError."""
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        items = dict(plain(config))
        fields = [f.name for f in dataclasses.fields(cls)]
        for key in items:
            if key not in fields:
                raise unknown_name_error("preprocessing option", key, fields)
        return cls(**items)


@dataclasses.dataclass(frozen=True)
class Preprocessor:
    """``Preprocessing`` fitted to a training split: call it on any split's images."""

    config: Preprocessing
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def __call__(self, images: jax.Array | np.ndarray) -> jax.Array:
        x = jnp.asarray(images, jnp.float32)
        if self.config.image_size is not None:
            x = resize(x, self.config.image_size, self.config.interpolation, self.config.antialias)
        if self.config.rescale is not None:
            x = rescale(x, self.config.rescale, self.config.offset)
        if self.mean is not None:
            x = normalize(x, self.mean, self.std)
        return x

    def check_host(self) -> None:
        """Refuse what :meth:`host` cannot do: resizing."""
        if self.config.image_size is not None:
            raise ArgumentError(f"Preprocessing image_size={self.config.image_size} resizes whole arrays with JAX, "
                                "which a stream's worker processes do not run; resize each image as it is decoded "
                                "instead (fluxnet.data.stream(..., image_size=...), or data.image_size in a run).")

    def host(self, images: np.ndarray) -> np.ndarray:
        """The rescaling and normalisation of ``__call__`` in numpy float32, for the worker processes of a
        stream (no JAX there), bit for bit what ``__call__`` gives on CPU: XLA divides by multiplying
        with the reciprocal, and so does this. Resizing (``image_size``) is ``__call__``'s alone."""
        self.check_host()
        x = np.asarray(images, np.float32)
        if self.config.rescale is not None:
            x = x * np.float32(self.config.rescale) + np.float32(self.config.offset)
        if self.mean is not None:
            x = (x - self.mean.astype(np.float32)) * (np.float32(1) / self.std.astype(np.float32))
        return x


def fit_preprocessor(config: Preprocessing | Mapping[str, Any] | None,
                     train_images: jax.Array | np.ndarray) -> Preprocessor:
    """The preprocessor for ``config``, its normalisation statistics taken from ``train_images``."""
    config = Preprocessing.from_config(config)
    unnormalized = Preprocessor(config)
    if not config.normalize:
        return unnormalized
    return Preprocessor(config, *channel_stats(unnormalized(train_images)))


def preprocess_splits(splits: DatasetSplits, config: Preprocessing | Mapping[str, Any] | None
                      ) -> tuple[DatasetSplits, Preprocessor]:
    """Every split preprocessed with statistics from the training split only: in-memory splits become
    float32 numpy images; streamed splits (``fluxnet.data.streaming.Stream``) take the preprocessor,
    applied as their batches are read, with statistics from a seeded sample of the training split."""
    config = Preprocessing.from_config(config)
    train = splits.train
    images = None
    if config.normalize:
        images = train.images if isinstance(train, Split) else train.raw_sample().images
    preprocessor = fit_preprocessor(config, images)
    return splits.map(lambda split: split.map_images(lambda x: np.asarray(preprocessor(x)))
                      if isinstance(split, Split) else split.with_preprocessor(preprocessor)), preprocessor
