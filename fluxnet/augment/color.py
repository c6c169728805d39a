"""Per-example colour and occlusion ops: brightness, contrast, random erasing (cutout)."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from fluxnet.augment.base import ImageOp, _bounds, _is_number, _value_range, register
from fluxnet.augment.sampler import _box_mask, _span, _uniforms
from fluxnet.errors import ArgumentError, ArgumentTypeError


@register("RandomBrightness")
@dataclasses.dataclass(frozen=True)
class RandomBrightness(ImageOp):
    """Add ``delta * (high - low)`` to every pixel, delta drawn from ``factor``; clip to value_range."""

    factor: float | tuple[float, float]
    value_range: tuple[float, float] = (0, 255)

    def _validate(self) -> None:
        _bounds("RandomBrightness", "factor", self.factor, -1.0, 1.0)
        _value_range("RandomBrightness", self.value_range)

    def transform(self, key: jax.Array, image: jax.Array) -> jax.Array:
        low, high = _value_range("RandomBrightness", self.value_range)
        delta = _uniforms(key, [_bounds("RandomBrightness", "factor", self.factor, -1.0, 1.0)])[0]
        delta = delta * (high - low)
        return jnp.clip(image + delta, low, high)


@register("RandomContrast")
@dataclasses.dataclass(frozen=True)
class RandomContrast(ImageOp):
    """``(x - mean) * c + mean`` per channel (mean over height and width), clipped to value_range.

    c is drawn from [1 - lower, 1 + upper] for ``factor=(lower, upper)``, [1 - f, 1 + f] for a float f.
    """

    factor: float | tuple[float, float]
    value_range: tuple[float, float] = (0, 255)

    def _range(self) -> tuple[float, float]:
        lower, upper = _bounds("RandomContrast", "factor", self.factor, 0.0, 1.0)
        if _is_number(self.factor):            # Keras' docs: a float f means lower = upper = f
            lower = upper
        return 1.0 - lower, 1.0 + upper

    def _validate(self) -> None:
        self._range()
        _value_range("RandomContrast", self.value_range)

    def transform(self, key: jax.Array, image: jax.Array) -> jax.Array:
        low, high = _value_range("RandomContrast", self.value_range)
        contrast = _uniforms(key, [self._range()])[0]
        mean = jnp.mean(image, axis=(0, 1), keepdims=True)
        return jnp.clip((image - mean) * contrast + mean, low, high)


@register("RandomErasing")
@dataclasses.dataclass(frozen=True)
class RandomErasing(ImageOp):
    """Cutout: fill a random rectangle (Keras' RandomErasing).

    ``factor``: the erasing chance is drawn from this range per example (a float f: [0, f]).
    ``scale``: each side of the rectangle is sqrt(s) of the image side, s drawn from ``scale`` per
    axis. ``fill_value``: a number, one number per channel, or None for Gaussian noise times the top
    of ``value_range``; the fill is clipped to ``value_range``.
    """

    factor: float | tuple[float, float] = 1.0
    scale: tuple[float, float] = (0.02, 0.33)
    fill_value: float | tuple[float, ...] | None = None
    value_range: tuple[float, float] = (0, 255)

    def _validate(self) -> None:
        _bounds("RandomErasing", "factor", self.factor, 0.0, 1.0)
        _bounds("RandomErasing", "scale", self.scale, 0.0, 1.0)
        _value_range("RandomErasing", self.value_range)
        fill = self.fill_value
        if not (fill is None or _is_number(fill)
                or (isinstance(fill, tuple) and fill and all(map(_is_number, fill)))):
            raise ArgumentTypeError("RandomErasing: `fill_value` must be None, a number or one number "
                                    f"per channel; got {fill!r}.")

    def _fill(self, key: jax.Array, image: jax.Array) -> jax.Array:
        low, high = _value_range("RandomErasing", self.value_range)
        if self.fill_value is None:
            fill = jax.random.normal(key, image.shape) * high
        else:
            fill = jnp.asarray(self.fill_value, jnp.float32)
            if fill.ndim == 1 and fill.shape[0] != image.shape[-1]:
                raise ArgumentError(f"RandomErasing: `fill_value` has {fill.shape[0]} values for "
                                    f"{image.shape[-1]} channels.")
        return jnp.clip(fill, low, high)

    def transform(self, key: jax.Array, image: jax.Array) -> jax.Array:
        height, width = image.shape[0], image.shape[1]
        key, fill_key = jax.random.split(key)
        scale = _bounds("RandomErasing", "scale", self.scale, 0.0, 1.0)
        chance = _bounds("RandomErasing", "factor", self.factor, 0.0, 1.0)
        u = _uniforms(key, [scale, scale, (0.0, 1.0), (0.0, 1.0), chance, (0.0, 1.0)])
        x0, x1 = _span(u[2], width, jnp.sqrt(u[0]))
        y0, y1 = _span(u[3], height, jnp.sqrt(u[1]))
        erase = _box_mask(height, width, x0, x1, y0, y1) & (u[5] < u[4])
        return jnp.where(erase, self._fill(fill_key, image), image)
