"""Batch ops that mix each example and its label with a random partner: MixUp and CutMix."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from fluxnet.augment.base import BatchOp, _bounds, _is_number, register
from fluxnet.augment.sampler import _box_mask, _span, _symmetric_beta, _uniforms
from fluxnet.errors import ArgumentError


@register("MixUp")
@dataclasses.dataclass(frozen=True)
class MixUp(BatchOp):
    """``w * x + (1 - w) * partner``, w ~ Beta(alpha, alpha) per example; labels mixed alike."""

    alpha: float = 0.2

    def _validate(self) -> None:
        if not (_is_number(self.alpha) and self.alpha > 0):
            raise ArgumentError(f"MixUp: `alpha` must be a positive number; got {self.alpha!r}.")

    def mix(self, key, images, partners):
        weight = _symmetric_beta(key, self.alpha, images.shape[0])
        w = weight[:, None, None, None]
        return w * images + (1 - w) * partners, weight


@register("CutMix")
@dataclasses.dataclass(frozen=True)
class CutMix(BatchOp):
    """Paste a random box of the partner into each example; labels weighted by the pasted area.

    As Keras: alpha is drawn from ``factor`` (a float f: [0, f]) once per batch, lambda ~
    Beta(alpha, alpha) per example, and the box sides are sqrt(1 - lambda) of the image sides.
    """

    factor: float | tuple[float, float] = 1.0

    def _validate(self) -> None:
        _bounds("CutMix", "factor", self.factor, 0.0, 1.0)

    def mix(self, key, images, partners):
        batch, height, width = images.shape[:3]
        alpha_key, lam_key, span_key = jax.random.split(key, 3)
        alpha = _uniforms(alpha_key, [_bounds("CutMix", "factor", self.factor, 0.0, 1.0)])[0] + 1e-6
        ratio = jnp.sqrt(1.0 - _symmetric_beta(lam_key, alpha, batch))
        u = jax.random.uniform(span_key, (2, batch))
        x0, x1 = _span(u[0], width, ratio)
        y0, y1 = _span(u[1], height, ratio)
        masks = jax.vmap(lambda *box: _box_mask(height, width, *box))(x0, x1, y0, y1)
        return jnp.where(masks, partners, images), 1.0 - jnp.mean(masks, axis=(1, 2, 3))
