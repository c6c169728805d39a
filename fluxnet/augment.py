"""On-device random image augmentation with Keras 3 preprocessing-layer names and semantics.

Every op is a small frozen dataclass. Per-example ops (``ImageOp``) transform ONE (H, W, C) image,
``op(key, image, training=True)``, so a train step vmaps them with one key per example and jits the
whole thing; batch ops (``BatchOp``: MixUp, CutMix) mix examples and their labels. ``Pipeline`` chains
them as declared in a run config and runs inside the jitted train step:

    pipeline = Pipeline.from_config([{"op": "RandomFlip", "mode": "horizontal"},
                                     {"op": "RandomRotation", "factor": 0.1, "probability": 0.5},
                                     {"op": "MixUp", "alpha": 0.2}], num_classes=10)
    images, labels = pipeline(key, images, labels, training=True)   # labels -> soft one-hot

Conventions (Keras 3 on JAX, which follows TF's ImageProjectiveTransformV3):
- Geometric ops build a 3x3 matrix mapping each OUTPUT pixel (x = column, y = row, 1) to the INPUT
  location it samples; one sampler, ``affine_transform``, serves them all, with fill modes
  ``reflect`` (d c b a | a b c d | d c b a), ``wrap`` (a b c d | a b c d), ``nearest`` (a a | a b c d),
  ``constant`` (k k | a b c d) and ``nearest``/``bilinear`` interpolation.
- ``factor`` arguments follow Keras: a number f means the range (-f, f) (or (0, f) where the range
  starts at 0), a pair (a, b) means [a, b]; RandomRotation's factor is a fraction of a full turn, a
  positive angle turns the image counter-clockwise (factor 0.25 equals ``np.rot90(image, 1)``).
- Ops return floats in the input's floating dtype; integer images are cast to float32 (as Keras).
- ``probability`` (every op, default 1): the chance an example is transformed at all; an example left
  alone gets the op's evaluation output. At evaluation (``training=False``) every op is the identity,
  except RandomCrop, which (as Keras documents) crops the largest central window of the target aspect
  ratio and resizes it to (height, width), so train and evaluation shapes agree.

Where Keras 3.15's code departs from its own documentation, this module follows the documentation:
RandomFlip("horizontal_and_vertical") flips each axis with its own draw (Keras 3.15 draws once and flips
both axes together); RandomContrast(f) draws the contrast from [1 - f, 1 + f] (Keras 3.15: [1, 1 + f]);
RandomCrop's central crop-and-resize uses the aspect-ratio window (Keras 3.15 returns evaluation input
unchanged, and in training slices a target-sized window before resizing).
By design every draw is per example: RandomCrop picks a window per example (Keras: one per batch), and
CutMix weighs labels by the share of pixels actually pasted (Keras: by the continuous box area).
"""
from __future__ import annotations

import abc
import dataclasses
import math
import numbers
from pathlib import Path
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from fluxnet.registry import Registry, unknown_name_error

FILL_MODES = ("reflect", "wrap", "constant", "nearest")
INTERPOLATIONS = {"nearest": 0, "bilinear": 1}       # name -> spline order of map_coordinates
FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")

OPS: Registry[type] = Registry("augmentation op")
register = OPS.register  # @register("Name"): an op available to Pipeline.from_config


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_choice(owner: str, name: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{owner}: `{name}` must be one of {', '.join(map(repr, choices))}; "
                         f"got {value!r}.")


def _check_pair(owner: str, name: str, value: Any) -> tuple[float, float]:
    if not (isinstance(value, tuple) and len(value) == 2 and all(map(_is_number, value))):
        raise ValueError(f"{owner}: `{name}` must be a pair of numbers; got {value!r}.")
    return float(value[0]), float(value[1])


def _bounds(owner: str, name: str, factor: Any, low: float, high: float,
            open_low: bool = False) -> tuple[float, float]:
    """Keras' factor convention: f -> (max(-|f|, low), |f|); (a, b) -> sorted; values in [low, high]."""
    given = (factor,) if _is_number(factor) else _check_pair(owner, name, factor)
    for value in given:
        if not (low < value <= high if open_low else low <= value <= high):
            interval = f"({low}, {high}]" if open_low else f"[{low}, {high}]"
            raise ValueError(f"{owner}: `{name}` values must lie in {interval}; got {factor!r}.")
    if _is_number(factor):
        return max(-abs(float(factor)), low), abs(float(factor))
    lower, upper = sorted(given)
    return lower, upper


def _value_range(owner: str, value_range: Any) -> tuple[float, float]:
    low, high = sorted(_check_pair(owner, "value_range", value_range))
    if low == high:
        raise ValueError(f"{owner}: `value_range` must span an interval; got {value_range!r}.")
    return low, high


def _float_images(images: Any, rank: int, what: str) -> jax.Array:
    """``images`` as a floating array of the given rank (integers become float32, as in Keras)."""
    images = jnp.asarray(images)
    if images.ndim != rank:
        layout = "(height, width, channels)" if rank == 3 else "(batch, height, width, channels)"
        raise ValueError(f"{what} must have rank {rank} {layout}; got shape {images.shape}.")
    return images if jnp.issubdtype(images.dtype, jnp.floating) else images.astype(jnp.float32)


# ----------------------------------------------------------------------------------------------
# The shared geometric sampler and the matrices of the geometric ops
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# Op base classes
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, kw_only=True)
class Op(abc.ABC):
    """Shared by all ops: a ``probability`` of acting on an example, validation, config export."""

    probability: float = 1.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):           # config lists -> hashable tuples
            if isinstance(getattr(self, field.name), list):
                object.__setattr__(self, field.name, tuple(getattr(self, field.name)))
        if not (_is_number(self.probability) and 0.0 <= self.probability <= 1.0):
            raise ValueError(f"{type(self).__name__}: `probability` must be a number in [0, 1]; "
                             f"got {self.probability!r}.")
        self._validate()

    def _validate(self) -> None:
        """Check the op's own arguments (raise ValueError/TypeError naming them)."""

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
            raise TypeError(f"{name}: `fill_value` must be a number; got {self.fill_value!r}.")
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
            raise ValueError(f"{name}: labels must be floats of shape ({batch}, ...) (one-hot for "
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


# ----------------------------------------------------------------------------------------------
# Per-example ops
# ----------------------------------------------------------------------------------------------

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
            raise ValueError("RandomPadCrop: `padding` must be a non-negative int or a pair of them; "
                             f"got {self.padding!r}.")
        return pads

    def _validate(self) -> None:
        self._pads()
        _check_choice("RandomPadCrop", "fill_mode", self.fill_mode, FILL_MODES)
        if not _is_number(self.fill_value):
            raise TypeError(f"RandomPadCrop: `fill_value` must be a number; got {self.fill_value!r}.")

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
                raise ValueError(f"RandomCrop: `{name}` must be a positive int; got {value!r}.")

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
            raise TypeError("RandomErasing: `fill_value` must be None, a number or one number per "
                            f"channel; got {fill!r}.")

    def _fill(self, key: jax.Array, image: jax.Array) -> jax.Array:
        low, high = _value_range("RandomErasing", self.value_range)
        if self.fill_value is None:
            fill = jax.random.normal(key, image.shape) * high
        else:
            fill = jnp.asarray(self.fill_value, jnp.float32)
            if fill.ndim == 1 and fill.shape[0] != image.shape[-1]:
                raise ValueError(f"RandomErasing: `fill_value` has {fill.shape[0]} values for "
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


# ----------------------------------------------------------------------------------------------
# Batch ops
# ----------------------------------------------------------------------------------------------

@register("MixUp")
@dataclasses.dataclass(frozen=True)
class MixUp(BatchOp):
    """``w * x + (1 - w) * partner``, w ~ Beta(alpha, alpha) per example; labels mixed alike."""

    alpha: float = 0.2

    def _validate(self) -> None:
        if not (_is_number(self.alpha) and self.alpha > 0):
            raise ValueError(f"MixUp: `alpha` must be a positive number; got {self.alpha!r}.")

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


# ----------------------------------------------------------------------------------------------
# Pipeline
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Pipeline:
    """Per-example ops (vmapped, one key per example) followed by batch ops, as one pure function.

    ``num_classes`` turns integer (sparse) labels into one-hot before MixUp/CutMix; pipelines with
    batch ops return soft float labels in training, and leave labels untouched at evaluation.
    """

    ops: tuple[Op, ...] = ()
    num_classes: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        seen_batch_op = False
        for op in self.ops:
            if not isinstance(op, (ImageOp, BatchOp)):
                raise TypeError(f"Pipeline ops must be augmentation ops ({', '.join(OPS.names())}); "
                                f"got {op!r}.")
            if isinstance(op, ImageOp) and seen_batch_op:
                raise ValueError(f"Pipeline: {type(op).__name__} comes after a batch op; batch ops "
                                 "(MixUp, CutMix) must come last.")
            seen_batch_op |= isinstance(op, BatchOp)
        if self.num_classes is not None and not (isinstance(self.num_classes, int)
                                                 and self.num_classes > 0):
            raise ValueError(f"Pipeline: `num_classes` must be a positive int or None; "
                             f"got {self.num_classes!r}.")

    @classmethod
    def from_config(cls, config: Iterable[Mapping[str, Any]],
                    num_classes: int | None = None) -> Pipeline:
        """Build from ``[{"op": "RandomFlip", "mode": "horizontal"}, ...]`` (op names from ``OPS``)."""
        if isinstance(config, (str, bytes, Mapping)):
            raise TypeError("Pipeline config must be a list of op entries like "
                            f"{{'op': 'RandomFlip', ...}}; got {type(config).__name__}.")
        ops = []
        for index, entry in enumerate(config):
            try:
                entry = dict(entry)
            except (TypeError, ValueError):
                raise TypeError(f"Pipeline config entry {index} must be a mapping; "
                                f"got {entry!r}.") from None
            if "op" not in entry:
                raise ValueError(f"Pipeline config entry {index} has no 'op' key; got {entry!r}. "
                                 f"Valid ops: {', '.join(OPS.names())}.")
            op_class = OPS.get(entry.pop("op"))
            valid = [f.name for f in dataclasses.fields(op_class)]
            for name in entry:
                if name not in valid:
                    raise unknown_name_error(f"argument of {op_class.__name__}", name, valid)
            ops.append(op_class(**entry))
        return cls(tuple(ops), num_classes=num_classes)

    def to_config(self) -> list[dict[str, Any]]:
        """The op entries ``from_config`` reads back (``num_classes`` is passed separately)."""
        return [op.to_config() for op in self.ops]

    @property
    def mixes_labels(self) -> bool:
        """Whether training outputs soft (mixed, one-hot) labels."""
        return any(isinstance(op, BatchOp) for op in self.ops)

    def _dense_labels(self, labels: Any, batch: int) -> jax.Array:
        if labels is None:
            raise ValueError("Pipeline: MixUp/CutMix mix labels; pass labels.")
        labels = jnp.asarray(labels)
        if not jnp.issubdtype(labels.dtype, jnp.integer):
            return labels.astype(jnp.promote_types(labels.dtype, jnp.float32))
        if self.num_classes is None:
            raise ValueError("Pipeline: integer (sparse) labels need Pipeline(num_classes=...) to "
                             "become one-hot for MixUp/CutMix.")
        if labels.shape not in ((batch,), (batch, 1)):
            raise ValueError(f"Pipeline: sparse labels must have shape ({batch},) or ({batch}, 1); "
                             f"got {labels.shape}.")
        return jax.nn.one_hot(labels.reshape(batch), self.num_classes, dtype=jnp.float32)

    def __call__(self, key: jax.Array, images: jax.Array, labels: Any = None,
                 training: bool = True) -> tuple[jax.Array, Any]:
        """Augment a (batch, H, W, C) batch; returns (images, labels).

        Pure and jittable (``training`` must be a Python bool: static under jit); a new key never
        recompiles. Per-example ops get ``jax.random.split(key, batch)``-derived keys.
        """
        images = _float_images(images, 4, "Pipeline images")
        image_ops = [op for op in self.ops if isinstance(op, ImageOp)]
        batch_ops = [op for op in self.ops if isinstance(op, BatchOp)]
        if not training:
            if image_ops:
                images = jax.vmap(lambda image: _chain_evaluate(image_ops, image))(images)
            return images, labels
        example_key, batch_key = jax.random.split(key)
        if image_ops:
            keys = jax.random.split(example_key, images.shape[0])
            images = jax.vmap(lambda k, image: _chain(image_ops, k, image))(keys, images)
        if batch_ops:
            labels = self._dense_labels(labels, images.shape[0])
            for op, op_key in zip(batch_ops, jax.random.split(batch_key, len(batch_ops))):
                images, labels = op(op_key, images, labels)
        return images, labels


def _chain(ops: list[ImageOp], key: jax.Array, image: jax.Array) -> jax.Array:
    """Apply ``ops`` in order. A run of geometric ops with the same fill and interpolation settings is
    resampled once, through the product of their matrices (output-to-input: op 1's matrix first), which
    costs one gather instead of one per op and blurs less than repeated interpolation."""
    image = _float_images(image, 3, "image")
    pending: list[tuple[_AffineOp, jax.Array]] = []

    def flush(img: jax.Array) -> jax.Array:
        if not pending:
            return img
        matrix = pending[0][1]
        for _, m in pending[1:]:
            matrix = matrix @ m
        out = pending[0][0].resample(img, matrix)
        pending.clear()
        return out

    for op, op_key in zip(ops, jax.random.split(key, len(ops))):
        if isinstance(op, _AffineOp):
            if pending and pending[0][0].sampling() != op.sampling():
                image = flush(image)
            pending.append((op, op.random_matrix(op_key, image.shape[0], image.shape[1])))
        else:
            image = op(op_key, flush(image))
    return flush(image)


def _chain_evaluate(ops: list[ImageOp], image: jax.Array) -> jax.Array:
    for op in ops:
        image = op.evaluate(image)
    return image


# ----------------------------------------------------------------------------------------------
# Preview
# ----------------------------------------------------------------------------------------------

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
        raise ValueError("preview_grid: images must be (batch, height, width, 1|3|4 channels); "
                         f"got shape {images.shape}.")
    if not (isinstance(n_rows, int) and 0 < n_rows <= len(images)):
        raise ValueError(f"preview_grid: n_rows must be in [1, {len(images)}]; got {n_rows!r}.")
    if not (isinstance(n_augmented, int) and n_augmented > 0):
        raise ValueError(f"preview_grid: n_augmented must be a positive int; got {n_augmented!r}.")
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
