"""MNIST and Fashion-MNIST from their official IDX files, as tfds writes them (version 3.0.1).

The four gzip files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``) are parsed here: an IDX file is a 4-byte
magic number (0, 0, the element type 0x08 for unsigned bytes, the number of dimensions), one big-endian
uint32 per dimension, then the elements. The number of examples comes from the header, which must agree
with the file's length, the 28x28 image shape and the labels file; a file that does not is named in a
one-line DataError. Features, split names, descriptions and citations are tfds' (its
``image_classification/mnist.py``), and examples are keyed by their index as there, so tfds shuffles
them into the same order.

The builder classes are defined on first use (``builder_class``), so that importing this module does not
import tensorflow-datasets.
"""
from __future__ import annotations

import dataclasses
import gzip
import zlib
from pathlib import Path

import numpy as np

from fluxnet.data.images import to_pil
from fluxnet.data.optional import defined_once, tfds as import_tfds
from fluxnet.errors import DataError

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
SPLIT_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
               "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
FILES = tuple(f for files in SPLIT_FILES.values() for f in files)   # the official file names
UNSIGNED_BYTE = 0x08


@dataclasses.dataclass(frozen=True)
class IdxDataset:
    """What tells MNIST and Fashion-MNIST apart: where their files are and how tfds describes them."""

    name: str
    class_name: str
    url: str                              # the folder of the four official files
    description: str
    homepage: str
    citation: str
    class_names: tuple[str, ...] | None   # None: tfds' ClassLabel(num_classes=10), names "0".."9"


MNIST_CITATION = """\
@article{lecun2010mnist,
  title={MNIST handwritten digit database},
  author={LeCun, Yann and Cortes, Corinna and Burges, CJ},
  journal={ATT Labs [Online]. Available: http://yann.lecun.com/exdb/mnist},
  volume={2},
  year={2010}
}
"""

FASHION_MNIST_CITATION = """\
@article{DBLP:journals/corr/abs-1708-07747,
  author    = {Han Xiao and
               Kashif Rasul and
               Roland Vollgraf},
  title     = {Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
               Algorithms},
  journal   = {CoRR},
  volume    = {abs/1708.07747},
  year      = {2017},
  url       = {http://arxiv.org/abs/1708.07747},
  archivePrefix = {arXiv},
  eprint    = {1708.07747},
  timestamp = {Mon, 13 Aug 2018 16:47:27 +0200},
  biburl    = {https://dblp.org/rec/bib/journals/corr/abs-1708-07747},
  bibsource = {dblp computer science bibliography, https://dblp.org}
}
"""

DATASETS = {d.name: d for d in (
    IdxDataset(name="mnist", class_name="Mnist", url="https://storage.googleapis.com/cvdf-datasets/mnist/",
               description="The MNIST database of handwritten digits.",
               homepage="http://yann.lecun.com/exdb/mnist/", citation=MNIST_CITATION, class_names=None),
    IdxDataset(name="fashion_mnist", class_name="FashionMnist",
               url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
               description="Fashion-MNIST is a dataset of Zalando's article images consisting of a training set "
                           "of 60,000 examples and a test set of 10,000 examples. Each example is a 28x28 "
                           "grayscale image, associated with a label from 10 classes.",
               homepage="https://github.com/zalandoresearch/fashion-mnist", citation=FASHION_MNIST_CITATION,
               class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                            "Sneaker", "Bag", "Ankle boot")),
)}


def read_idx(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """The uint8 array of the gzipped IDX file at ``path``, whose dimensions after the first (the
    number of items) must be ``shape``; DataError naming the file if it is not such a file."""
    path = Path(path)
    try:
        data = gzip.decompress(path.read_bytes())
    except gzip.BadGzipFile as err:
        raise DataError(f"{path}: not a gzip file ({err}).") from None
    except EOFError:
        raise DataError(f"{path}: the gzip data ends early (a truncated file?).") from None
    except zlib.error as err:
        raise DataError(f"{path}: damaged gzip data ({err}).") from None
    ndim = len(shape) + 1
    expected_magic = bytes((0, 0, UNSIGNED_BYTE, ndim))
    if data[:4] != expected_magic:
        raise DataError(f"{path}: not an IDX file of unsigned bytes with {ndim} dimension(s): its magic number "
                        f"is {data[:4].hex()}, expected {expected_magic.hex()}.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: the IDX header is cut short ({len(data)} bytes, expected {header}).")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    if dims[1:] != shape:
        raise DataError(f"{path}: the header gives items of shape {dims[1:]}, expected {shape}.")
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DataError(f"{path}: the header announces {dims[0]} items ({expected} bytes after the header), but "
                        f"the file holds {len(data) - header} bytes after it.")
    if dims[0] == 0:
        raise DataError(f"{path}: the file holds no items.")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def read_split(images_path: str | Path, labels_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One split's uint8 (N, 28, 28, 1) images and int64 labels from its two IDX files, checked to agree."""
    images, labels = read_idx(images_path, IMAGE_SHAPE), read_idx(labels_path, ())
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: holds {len(labels)} labels, but {images_path} holds {len(images)} images.")
    if labels.max() >= NUM_CLASSES:
        index = int(np.argmax(labels >= NUM_CLASSES))
        raise DataError(f"{labels_path}: label {labels[index]} at index {index} is outside 0..{NUM_CLASSES - 1}.")
    return images[..., None], labels.astype(np.int64)


def _define(dataset: IdxDataset) -> type:
    """The tfds builder class of ``dataset`` (imports tensorflow-datasets)."""
    tfds = import_tfds()
    from fluxnet.data.builders.official import OfficialFilesBuilder

    class IdxBuilder(OfficialFilesBuilder, skip_registration=True):
        """tfds builder of ``dataset`` (mnist or fashion_mnist) from its official IDX files."""

        name = dataset.name
        VERSION = tfds.core.Version("3.0.1")
        URLS = {f: dataset.url + f for f in FILES}

        def _info(self) -> tfds.core.DatasetInfo:
            label = (tfds.features.ClassLabel(num_classes=NUM_CLASSES) if dataset.class_names is None
                     else tfds.features.ClassLabel(names=list(dataset.class_names)))
            return tfds.core.DatasetInfo(
                builder=self,
                description=dataset.description,
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(*IMAGE_SHAPE, 1)),
                    "label": label,
                }),
                supervised_keys=("image", "label"),
                homepage=dataset.homepage,
                citation=dataset.citation,
            )

        def _split_generators(self, dl_manager):
            files = self.official_files(dl_manager)
            splits = {split: read_split(files[images], files[labels])   # all checked before any is written
                      for split, (images, labels) in SPLIT_FILES.items()}
            return {split: self._generate_examples(*arrays) for split, arrays in splits.items()}

        def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
            for index, (image, label) in enumerate(zip(images, labels)):
                yield index, {"image": to_pil(image), "label": int(label)}

    IdxBuilder.__name__ = IdxBuilder.__qualname__ = dataset.class_name
    return IdxBuilder


def builder_class(name: str) -> type:
    """The tfds builder class of ``name`` (``mnist`` or ``fashion_mnist``), defined on first use."""
    dataset = DATASETS[name]
    return defined_once(globals(), dataset.class_name, lambda: _define(dataset))
