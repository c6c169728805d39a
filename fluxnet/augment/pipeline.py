"""``Pipeline``: per-example ops (vmapped), then batch ops, as one pure function; built from a config."""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp

from fluxnet.augment.base import OPS, BatchOp, ImageOp, Op, _float_images
from fluxnet.augment.geometric import _AffineOp
from fluxnet.errors import ArgumentError, ArgumentTypeError, DataError
from fluxnet.registry import unknown_name_error


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
                raise ArgumentTypeError("Pipeline ops must be augmentation ops "
                                        f"({', '.join(OPS.names())}); got {op!r}.")
            if isinstance(op, ImageOp) and seen_batch_op:
                raise ArgumentError(f"Pipeline: {type(op).__name__} comes after a batch op; batch ops "
                                    "(MixUp, CutMix) must come last.")
            seen_batch_op |= isinstance(op, BatchOp)
        if self.num_classes is not None and not (isinstance(self.num_classes, int)
                                                 and self.num_classes > 0):
            raise ArgumentError(f"Pipeline: `num_classes` must be a positive int or None; "
                                f"got {self.num_classes!r}.")

    @classmethod
    def from_config(cls, config: Iterable[Mapping[str, Any]],
                    num_classes: int | None = None) -> Pipeline:
        """Build from ``[{"op": "RandomFlip", "mode": "horizontal"}, ...]`` (op names from ``OPS``)."""
        if isinstance(config, (str, bytes, Mapping)):
            raise ArgumentTypeError("Pipeline config must be a list of op entries like "
                                    f"{{'op': 'RandomFlip', ...}}; got {type(config).__name__}.")
        ops = []
        for index, entry in enumerate(config):
            try:
                entry = dict(entry)
            except (TypeError, ValueError):
                raise ArgumentTypeError(f"Pipeline config entry {index} must be a mapping; "
                                        f"got {entry!r}.") from None
            if "op" not in entry:
                raise ArgumentError(f"Pipeline config entry {index} has no 'op' key; got {entry!r}. "
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
            raise ArgumentError("Pipeline: MixUp/CutMix mix labels; pass labels.")
        labels = jnp.asarray(labels)
        if not jnp.issubdtype(labels.dtype, jnp.integer):
            return labels.astype(jnp.promote_types(labels.dtype, jnp.float32))
        if self.num_classes is None:
            raise ArgumentError("Pipeline: integer (sparse) labels need Pipeline(num_classes=...) to "
                                "become one-hot for MixUp/CutMix.")
        if labels.shape not in ((batch,), (batch, 1)):
            raise DataError(f"Pipeline: sparse labels must have shape ({batch},) or ({batch}, 1); "
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
