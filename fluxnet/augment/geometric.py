"""Geometric per-example ops: flips, rotations, zooms, translations, pad-and-crop shifts, crops."""
from __future__ import annotations

import abc
import dataclasses
import math

import jax
import jax.numpy as jnp

from fluxnet.augment.base import ImageOp, _bounds, _check_choice, _is_number, register
from fluxnet.augment.sampler import (FILL_MODES, INTERPOLATIONS, _rotation_matrix, _translation_matrix,
                                     _uniforms, _zoom_matrix, affine_transform)
from fluxnet.errors import ArgumentError, ArgumentTypeError

FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")


@dataclasses.dataclass(frozen=True, kw_only=True)
class _AffineOp(ImageOp):
    """A geometric op: a random 3x3 matrix per example, resampled by ``affine_transform``."""

    fill_mode: str = "reflect"
    interpolation: str = "bilinear"
    fill_value: float = 0.0

    def _validate(self) -> None:
        name = type(self).__name__
        _check_choice(name, "fill_mode", self.fill_mode, FILL_MODES)
        _check_choice(name, "interpolation", self.interpolation, INTERPOLATIONS)
        if not _is_number(self.fill_value):
            raise ArgumentTypeError(f"{name}: `fill_value` must be a number; got {self.fill_value!r}.")
        self.ranges()

    @abc.abstractmethod
    def ranges(self) -> list[tuple[float, float]]:
        """The (low, high) range of each random parameter (validates the factor arguments)."""

    @abc.abstractmethod
    def matrix(self, u: jax.Array, height: int, width: int) -> jax.Array:
        """The output-to-input 3x3 matrix for parameters ``u`` drawn from ``ranges()``."""

    def transform(self, key: jax.Array, image: jax.Array) -> jax.Array:
        u = _uniforms(key, self.ranges())
        return self.resample(image, self.matrix(u, image.shape[0], image.shape[1]))

    def resample(self, image: jax.Array, matrix: jax.Array) -> jax.Array:
        return affine_transform(image, matrix, fill_mode=self.fill_mode, interpolation=self.interpolation,
                                fill_value=self.fill_value).astype(image.dtype)

    def sampling(self) -> tuple:
        """What resampling depends on: consecutive ops that agree on it share one resampling."""
        return self.fill_mode, self.interpolation, self.fill_value

    def random_matrix(self, key: jax.Array, height: int, width: int) -> jax.Array:
        """This op's matrix for one example, the identity when ``probability`` skips it (the same
        draws as ``__call__``)."""
        if self.probability >= 1.0:
            return self.matrix(_uniforms(key, self.ranges()), height, width)
        apply_key, key = jax.random.split(key)
        matrix = self.matrix(_uniforms(key, self.ranges()), height, width)
        return jnp.where(jax.random.uniform(apply_key) < self.probability, matrix, jnp.eye(3))


@register("RandomFlip")
@dataclasses.dataclass(frozen=True)
class RandomFlip(ImageOp):
    """Flip left-right ("horizontal"), top-bottom ("vertical") or each independently, with chance 1/2."""

    mode: str = "horizontal_and_vertical"

    def _validate(self) -> None:
        _check_choice("RandomFlip", "mode", self.mode, FLIP_MODES)

    def transform(self, key: jax.Array, image: jax.Array) -> jax.Array:
        flips = jax.random.bernoulli(key, 0.5, (2,))
        if self.mode != "vertical":
            image = jnp.where(flips[0], image[:, ::-1], image)
        if self.mode != "horizontal":
            image = jnp.where(flips[1], image[::-1], image)
        return image


@register("RandomRotation")
@dataclasses.dataclass(frozen=True)
class RandomRotation(_AffineOp):
    """Rotate by a random fraction of a full turn from ``factor``; positive is counter-clockwise."""

    factor: float | tuple[float, float]

    def ranges(self) -> list[tuple[float, float]]:
        return [_bounds("RandomRotation", "factor", self.factor, -1.0, 1.0)]

    def matrix(self, u: jax.Array, height: int, width: int) -> jax.Array:
        return _rotation_matrix(u[0] * 2.0 * math.pi, height, width)


@register("RandomZoom")
@dataclasses.dataclass(frozen=True)
class RandomZoom(_AffineOp):
    """Zoom by 1 + a random value from ``height_factor`` (and ``width_factor``; None keeps the aspect).

    Keras' sign convention: a positive factor zooms OUT (the image shrinks, borders get filled), a
    negative one zooms in.
    """

    height_factor: float | tuple[float, float]
    width_factor: float | tuple[float, float] | None = None

    def ranges(self) -> list[tuple[float, float]]:
        factors = {"height_factor": self.height_factor, "width_factor": self.width_factor}
        return [_bounds("RandomZoom", name, factor, -1.0, 1.0, open_low=True)
                for name, factor in factors.items() if factor is not None]

    def matrix(self, u: jax.Array, height: int, width: int) -> jax.Array:
        # without width_factor, one draw serves both axes and keeps the aspect ratio
        return _zoom_matrix(1.0 + u[-1], 1.0 + u[0], height, width)


@register("RandomTranslation")
@dataclasses.dataclass(frozen=True)
class RandomTranslation(_AffineOp):
    """Shift by random fractions of the height (positive: down) and width (positive: right)."""

    height_factor: float | tuple[float, float]
    width_factor: float | tuple[float, float]

    def ranges(self) -> list[tuple[float, float]]:
        return [_bounds("RandomTranslation", "height_factor", self.height_factor, -1.0, 1.0),
                _bounds("RandomTranslation", "width_factor", self.width_factor, -1.0, 1.0)]

    def matrix(self, u: jax.Array, height: int, width: int) -> jax.Array:
        return _translation_matrix(u[1] * width, u[0] * height)


@register("RandomPadCrop")
@dataclasses.dataclass(frozen=True)
class RandomPadCrop(ImageOp):
    """CIFAR-style "pad by ``padding`` and crop back at random": a random whole-pixel shift.

    ``padding``: an int or (pad_height, pad_width); the shift is uniform in [-pad, pad] on each axis,
    the uncovered border filled per ``fill_mode`` (default "constant" with ``fill_value``: zero padding).
    """

    padding: int | tuple[int, int] = 4
    fill_mode: str = "constant"
    fill_value: float = 0.0

    def _pads(self) -> tuple[int, int]:
        pads = (self.padding, self.padding) if not isinstance(self.padding, tuple) else self.padding
        if len(pads) != 2 or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0
                                     for p in pads):
            raise ArgumentError("RandomPadCrop: `padding` must be a non-negative int or a pair of them; "
                                f"got {self.padding!r}.")
        return pads

    def _validate(self) -> None:
        self._pads()
        _check_choice("RandomPadCrop", "fill_mode", self.fill_mode, FILL_MODES)
        if not _is_number(self.fill_value):
            raise ArgumentTypeError(f"RandomPadCrop: `fill_value` must be a number; "
                                    f"got {self.fill_value!r}.")

    def transform(self, key: jax.Array, image: jax.Array) -> jax.Array:
        pad_h, pad_w = self._pads()
        dy, dx = jax.random.randint(key, (2,), jnp.array([-pad_h, -pad_w]),
                                    jnp.array([pad_h + 1, pad_w + 1]))
        return affine_transform(image, _translation_matrix(dx, dy), fill_mode=self.fill_mode,
                                interpolation="nearest", fill_value=self.fill_value)


@register("RandomCrop")
@dataclasses.dataclass(frozen=True)
class RandomCrop(ImageOp):
    """Crop a random ``height`` x ``width`` window (one per example).

    As Keras, at evaluation, and in training when the image is not larger than the target on both
    axes, it takes the largest central window with the target's aspect ratio and resizes it
    (bilinear) to (height, width).
    """

    height: int
    width: int

    def _validate(self) -> None:
        for name in ("height", "width"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise ArgumentError(f"RandomCrop: `{name}` must be a positive int; got {value!r}.")

    def transform(self, key: jax.Array, image: jax.Array) -> jax.Array:
        in_height, in_width, channels = image.shape
        if not (in_height > self.height and in_width > self.width):
            return self.evaluate(image)
        top, left = jax.random.randint(key, (2,), 0, jnp.array([in_height - self.height + 1,
                                                                in_width - self.width + 1]))
        return jax.lax.dynamic_slice(image, (top, left, 0), (self.height, self.width, channels))

    def evaluate(self, image: jax.Array) -> jax.Array:
        in_height, in_width, channels = image.shape
        crop_h = max(min(in_height, int(in_width * self.height / self.width)), 1)
        crop_w = max(min(in_width, int(in_height * self.width / self.height)), 1)
        top, left = int((in_height - crop_h) / 2), int((in_width - crop_w) / 2)
        image = image[top:top + crop_h, left:left + crop_w]
        if (crop_h, crop_w) != (self.height, self.width):
            image = jax.image.resize(image, (self.height, self.width, channels), method="bilinear",
                                     antialias=False)
        return image
