"""The shared geometric sampler ``affine_transform``, the matrices of the geometric ops, and the
random draws (uniform parameters, spans, Beta weights, box masks) that the ops share."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fluxnet.augment.base import _check_choice

FILL_MODES = ("reflect", "wrap", "constant", "nearest")
INTERPOLATIONS = {"nearest": 0, "bilinear": 1}       # name -> spline order of map_coordinates


def affine_transform(image: jax.Array, matrix: jax.Array, *, fill_mode: str = "reflect",
                     interpolation: str = "bilinear", fill_value: float = 0.0) -> jax.Array:
    """Resample an (H, W, C) image: output pixel (x, y) takes the input at ``matrix @ (x, y, 1)``.

    ``matrix`` is 3x3 with last row (0, 0, 1), in pixel units, x = column, y = row (Keras/TF convention).
    """
    _check_choice("affine_transform", "fill_mode", fill_mode, FILL_MODES)
    _check_choice("affine_transform", "interpolation", interpolation, INTERPOLATIONS)
    height, width = image.shape[0], image.shape[1]
    rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                              jnp.arange(width, dtype=jnp.float32), indexing="ij")
    matrix = jnp.asarray(matrix, jnp.float32)
    x = matrix[0, 0] * cols + matrix[0, 1] * rows + matrix[0, 2]
    y = matrix[1, 0] * cols + matrix[1, 1] * rows + matrix[1, 2]

    def sample(channel: jax.Array) -> jax.Array:
        return jax.scipy.ndimage.map_coordinates(channel, [y, x], order=INTERPOLATIONS[interpolation],
                                                 mode=fill_mode, cval=fill_value)

    return jax.vmap(sample, in_axes=-1, out_axes=-1)(image)


def _affine_matrix(a0, a1, a2, b0, b1, b2) -> jax.Array:
    row = lambda *values: jnp.stack([jnp.asarray(v, jnp.float32) for v in values])
    return jnp.stack([row(a0, a1, a2), row(b0, b1, b2), row(0.0, 0.0, 1.0)])


def _translation_matrix(dx: jax.Array, dy: jax.Array) -> jax.Array:
    """Shift the content right by ``dx`` and down by ``dy`` pixels."""
    return _affine_matrix(1.0, 0.0, -dx, 0.0, 1.0, -dy)


def _rotation_matrix(angle: jax.Array, height: int, width: int) -> jax.Array:
    """Rotate counter-clockwise by ``angle`` radians about the image centre (Keras' matrix)."""
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    return _affine_matrix(cos, -sin, cx - cx * cos + cy * sin, sin, cos, cy - cx * sin - cy * cos)


def _zoom_matrix(zoom_x: jax.Array, zoom_y: jax.Array, height: int, width: int) -> jax.Array:
    """Sample ``zoom`` times the extent about the centre: zoom > 1 zooms out, zoom < 1 zooms in."""
    return _affine_matrix(zoom_x, 0.0, (width - 1) / 2.0 * (1.0 - zoom_x),
                          0.0, zoom_y, (height - 1) / 2.0 * (1.0 - zoom_y))


def _uniforms(key: jax.Array, bounds: list[tuple[float, float]]) -> jax.Array:
    """One uniform draw per (low, high) pair, from one random call (each call costs compile time)."""
    lows, highs = (jnp.asarray(values, jnp.float32) for values in zip(*bounds))
    return lows + (highs - lows) * jax.random.uniform(key, (len(bounds),))


def _span(u: jax.Array, length: int, fraction: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[start, end) of ``fraction * length`` pixels at relative position u in [0, 1) (Keras' bounds)."""
    span = fraction * length
    start = u * (length - span)
    return start, start + span


def _symmetric_beta(key: jax.Array, alpha: jax.Array | float, n: int) -> jax.Array:
    """n draws of Beta(alpha, alpha) as sigmoid(log G1 - log G2), G ~ Gamma(alpha): one sampler
    call (half of ``jax.random.beta``'s compile time), stable for tiny alpha."""
    log_gammas = jax.random.loggamma(key, alpha, (2, n))
    return jax.nn.sigmoid(log_gammas[0] - log_gammas[1])


def _box_mask(height: int, width: int, x0, x1, y0, y1) -> jax.Array:
    """(H, W, 1) mask of the pixels with x0 <= column < x1 and y0 <= row < y1."""
    rows = jnp.arange(height, dtype=jnp.float32)[:, None, None]
    cols = jnp.arange(width, dtype=jnp.float32)[None, :, None]
    return (cols >= x0) & (cols < x1) & (rows >= y0) & (rows < y1)
