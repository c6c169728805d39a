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

Modules: ``base`` (``Op``, ``ImageOp``, ``BatchOp``, the ``OPS`` registry, argument checks), ``sampler``
(``affine_transform``, the transform matrices, random draws), ``geometric``, ``color``, ``mixing``
(MixUp, CutMix), ``pipeline`` (``Pipeline``), ``preview`` (``preview_grid``).
"""
from fluxnet.augment.base import OPS, BatchOp, ImageOp, Op, register
from fluxnet.augment.color import RandomBrightness, RandomContrast, RandomErasing
from fluxnet.augment.geometric import (FLIP_MODES, RandomCrop, RandomFlip, RandomPadCrop, RandomRotation,
                                       RandomTranslation, RandomZoom)
from fluxnet.augment.mixing import CutMix, MixUp
from fluxnet.augment.pipeline import Pipeline
from fluxnet.augment.preview import preview_grid
from fluxnet.augment.sampler import FILL_MODES, INTERPOLATIONS, affine_transform

__all__ = [
    "BatchOp", "CutMix", "FILL_MODES", "FLIP_MODES", "INTERPOLATIONS", "ImageOp", "MixUp", "OPS", "Op",
    "Pipeline", "RandomBrightness", "RandomContrast", "RandomCrop", "RandomErasing", "RandomFlip",
    "RandomPadCrop", "RandomRotation", "RandomTranslation", "RandomZoom", "affine_transform",
    "preview_grid", "register",
]
