"""The op base classes (``Op``, ``ImageOp``, ``BatchOp``), the ``OPS`` registry and argument checks."""
from __future__ import annotations

import abc
import dataclasses
import numbers
from typing import Any, Iterable

import jax
import jax.numpy as jnp

from fluxnet.errors import ArgumentError, DataError
from fluxnet.registry import Registry

OPS: Registry[type] = Registry("augmentation op")
register = OPS.register  # @register("Name"): an op available to Pipeline.from_config


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_choice(owner: str, name: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ArgumentError(f"{owner}: `{name}` must be one of {', '.join(map(repr, choices))}; "
                            f"got {value!r}.")


def _check_pair(owner: str, name: str, value: Any) -> tuple[float, float]:
    if not (isinstance(value, tuple) and len(value) == 2 and all(map(_is_number, value))):
        raise ArgumentError(f"{owner}: `{name}` must be a pair of numbers; got {value!r}.")
    return float(value[0]), float(value[1])


def _bounds(owner: str, name: str, factor: Any, low: float, high: float,
            open_low: bool = False) -> tuple[float, float]:
    """Keras' factor convention: f -> (max(-|f|, low), |f|); (a, b) -> sorted; values in [low, high]."""
    given = (factor,) if _is_number(factor) else _check_pair(owner, name, factor)
    for value in given:
        if not (low < value <= high if open_low else low <= value <= high):
            interval = f"({low}, {high}]" if open_low else f"[{low}, {high}]"
            raise ArgumentError(f"{owner}: `{name}` values must lie in {interval}; got {factor!r}.")
    if _is_number(factor):
        return max(-abs(float(factor)), low), abs(float(factor))
    lower, upper = sorted(given)
    return lower, upper


def _value_range(owner: str, value_range: Any) -> tuple[float, float]:
    low, high = sorted(_check_pair(owner, "value_range", value_range))
    if low == high:
        raise ArgumentError(f"{owner}: `value_range` must span an interval; got {value_range!r}.")
    return low, high


def _float_images(images: Any, rank: int, what: str) -> jax.Array:
    """``images`` as a floating array of the given rank (integers become float32, as in Keras)."""
    images = jnp.asarray(images)
    if images.ndim != rank:
        layout = "(height, width, channels)" if rank == 3 else "(batch, height, width, channels)"
        raise DataError(f"{what} must have rank {rank} {layout}; got shape {images.shape}.")
    return images if jnp.issubdtype(images.dtype, jnp.floating) else images.astype(jnp.float32)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Op(abc.ABC):
    """Shared by all ops: a ``probability`` of acting on an example, validation, config export."""

    probability: float = 1.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):           # config lists -> hashable tuples
            if isinstance(getattr(self, field.name), list):
                object.__setattr__(self, field.name, tuple(getattr(self, field.name)))
        if not (_is_number(self.probability) and 0.0 <= self.probability <= 1.0):
            raise ArgumentError(f"{type(self).__name__}: `probability` must be a number in [0, 1]; "
                                f"got {self.probability!r}.")
        self._validate()

    def _validate(self) -> None:
        """Check the op's own arguments (raise ArgumentError/ArgumentTypeError naming them)."""

    def to_config(self) -> dict[str, Any]:
        """``{"op": name, **arguments}``, the entry ``Pipeline.from_config`` reads back."""
        fields = sorted(dataclasses.fields(self), key=lambda f: f.kw_only)
        return {"op": type(self).__name__, **{f.name: getattr(self, f.name) for f in fields}}


@dataclasses.dataclass(frozen=True)
class ImageOp(Op):
    """A per-example op: ``op(key, image, training)`` on one (H, W, C) image."""

    def __call__(self, key: jax.Array, image: jax.Array, training: bool = True) -> jax.Array:
        image = _float_images(image, 3, f"{type(self).__name__} image")
        if not training:
            return self.evaluate(image)
        if self.probability >= 1.0:
            return self.transform(key, image).astype(image.dtype)
        apply_key, key = jax.random.split(key)
        out = jnp.where(jax.random.uniform(apply_key) < self.probability,
                        self.transform(key, image), self.evaluate(image))
        return out.astype(image.dtype)

    @abc.abstractmethod
    def transform(self, key: jax.Array, image: jax.Array) -> jax.Array:
        """The random transformation of one float image (always applied)."""

    def evaluate(self, image: jax.Array) -> jax.Array:
        """The output at evaluation time (and for examples the op skips): the image itself."""
        return image


@dataclasses.dataclass(frozen=True)
class BatchOp(Op):
    """A batch op: ``op(key, images, labels)`` mixes each example with a random partner.

    ``labels`` are dense (batch, ...) floats (one-hot for classes); each example keeps a weight w of
    its own content and label, ``w * label + (1 - w) * partner_label``. ``probability``: per example.
    """

    def __call__(self, key: jax.Array, images: jax.Array,
                 labels: jax.Array) -> tuple[jax.Array, jax.Array]:
        name = type(self).__name__
        images = _float_images(images, 4, f"{name} images")
        labels = jnp.asarray(labels)
        batch = images.shape[0]
        if labels.ndim == 0 or labels.shape[0] != batch or not jnp.issubdtype(labels.dtype,
                                                                               jnp.floating):
            raise DataError(f"{name}: labels must be floats of shape ({batch}, ...) (one-hot for "
                            f"classes); got {labels.dtype} {labels.shape}.")
        perm_key, mix_key, apply_key = jax.random.split(key, 3)
        partner = jax.random.permutation(perm_key, batch)
        mixed, weight = self.mix(mix_key, images, images[partner])
        if self.probability < 1.0:
            apply = jax.random.uniform(apply_key, (batch,)) < self.probability
            mixed = jnp.where(apply[:, None, None, None], mixed, images)
            weight = jnp.where(apply, weight, 1.0)
        weight = weight.reshape((batch,) + (1,) * (labels.ndim - 1)).astype(labels.dtype)
        return mixed.astype(images.dtype), weight * labels + (1 - weight) * labels[partner]

    @abc.abstractmethod
    def mix(self, key: jax.Array, images: jax.Array,
            partners: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mixed images and each example's own share w, shape (batch,)."""
