"""The bundled offline data set ``digits``: scikit-learn's 8x8 handwritten digits as a tfds builder.

scikit-learn ships the 1,797 images (10 classes) inside its package, so preparing this data set reads
no network: on first use it is written to the tfds data dir in ArrayRecord format, like any other tfds
data set, and read back through ``as_data_source`` (no TensorFlow). Pixel values, 0..16 in
scikit-learn, are scaled to 0..255 (``round(v * 255 / 16)``) so that the data looks like any uint8
image data set. tfds shuffles examples deterministically while preparing, so their order is not
scikit-learn's. The single tfds split is ``train``; validation and test are carved from it.

The builder class ``Digits`` is defined on first use (``fluxnet.data.digits.Digits``), so that importing
this module does not import tensorflow-datasets; ``digits_images_and_labels`` needs only scikit-learn.
"""
from __future__ import annotations

import numpy as np

from fluxnet.data.images import to_pil
from fluxnet.data.optional import lazy_class, tfds as import_tfds

NUM_EXAMPLES = 1797


def digits_images_and_labels() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 (1797, 8, 8, 1) images scaled to 0..255 and int32 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return images, digits.target.astype(np.int32)


def _define_digits() -> type:
    """The tfds builder class ``Digits`` (imports tensorflow-datasets)."""
    tfds = import_tfds()

    class Digits(tfds.core.GeneratorBasedBuilder):
        """tfds builder for scikit-learn's bundled 8x8 digits (registered in tfds as ``digits``)."""

        name = "digits"
        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "scikit-learn's load_digits, pixel values scaled from 0..16 to 0..255."}

        def _info(self) -> tfds.core.DatasetInfo:
            return tfds.core.DatasetInfo(
                builder=self,
                description="Optical recognition of handwritten digits (UCI), 8x8 grayscale, as bundled "
                            "with scikit-learn (sklearn.datasets.load_digits).",
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
                }),
                supervised_keys=("image", "label"),
                homepage="https://archive.ics.uci.edu/dataset/80",
            )

        def _split_generators(self, dl_manager):
            del dl_manager  # nothing to download
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            images, labels = digits_images_and_labels()
            for index, (image, label) in enumerate(zip(images, labels)):
                yield index, {"image": to_pil(image), "label": int(label)}

    Digits.__qualname__ = "Digits"
    return Digits


__getattr__ = lazy_class(globals(), "Digits", _define_digits)
