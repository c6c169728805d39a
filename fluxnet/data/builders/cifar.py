"""CIFAR-10 and CIFAR-100 from their official *binary* archives, as tfds writes them (version 3.0.2).

``cifar-10-binary.tar.gz`` holds ``cifar-10-batches-bin/`` with ``data_batch_1.bin`` .. ``data_batch_5.bin``,
``test_batch.bin`` and the class names ``batches.meta.txt``; each record is 1 label byte and 3072 pixel
bytes (1024 red, 1024 green, 1024 blue, row by row). ``cifar-100-binary.tar.gz`` holds
``cifar-100-binary/`` with ``train.bin`` and ``test.bin``, records of a coarse label byte, a fine label
byte and the 3072 pixels, and ``coarse_label_names.txt`` / ``fine_label_names.txt``. The number of
examples is each file's size over the record size; a size that is not a whole number of records, a label
out of range or a missing member is named in a one-line DataError. The pickled "python version" of CIFAR
is never read. Features (``id``, ``image``, ``label``, and ``coarse_label`` for CIFAR-100), split names,
descriptions, citation, ids (``train_00000``...) and class names (from the archive's name files) are
tfds' (its ``image_classification/cifar.py``), and examples are keyed by their index as there.

The builder classes are defined on first use (``builder_class``), so that importing this module does not
import tensorflow-datasets.
"""
from __future__ import annotations

import dataclasses
import tarfile
import zlib
from pathlib import Path

import numpy as np

from fluxnet.data.images import to_pil
from fluxnet.data.optional import defined_once, tfds as import_tfds
from fluxnet.errors import DataError

SIZE = 32
PIXELS = 3 * SIZE * SIZE
CITATION = """\
@TECHREPORT{Krizhevsky09learningmultiple,
    author = {Alex Krizhevsky},
    title = {Learning multiple layers of features from tiny images},
    institution = {},
    year = {2009}
}
"""
HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclasses.dataclass(frozen=True)
class Labels:
    """One label byte of each record: its feature, the archive's file of class names, the class count."""

    feature: str
    names_file: str
    num_classes: int


@dataclasses.dataclass(frozen=True)
class CifarDataset:
    """What tells CIFAR-10 and CIFAR-100 apart: the archive's layout and how tfds describes them."""

    name: str
    class_name: str
    archive: str                          # the official file name
    url: str
    folder: str                           # the archive's top folder
    split_files: dict[str, tuple[str, ...]]
    labels: tuple[Labels, ...]            # in the order of the label bytes of a record
    features: tuple[str, ...]             # the order of tfds' FeaturesDict
    description: str

    @property
    def record_size(self) -> int:
        return len(self.labels) + PIXELS


DATASETS = {d.name: d for d in (
    CifarDataset(
        name="cifar10", class_name="Cifar10", archive="cifar-10-binary.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", folder="cifar-10-batches-bin",
        split_files={"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)},
        labels=(Labels("label", "batches.meta.txt", 10),), features=("id", "image", "label"),
        description="The CIFAR-10 dataset consists of 60000 32x32 colour images in 10 classes, with 6000 images "
                    "per class. There are 50000 training images and 10000 test images."),
    CifarDataset(
        name="cifar100", class_name="Cifar100", archive="cifar-100-binary.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", folder="cifar-100-binary",
        split_files={"train": ("train.bin",), "test": ("test.bin",)},
        labels=(Labels("coarse_label", "coarse_label_names.txt", 20),
                Labels("label", "fine_label_names.txt", 100)),
        features=("id", "image", "label", "coarse_label"),
        description="This dataset is just like the CIFAR-10, except it has 100 classes containing 600 images each. "
                    "There are 500 training images and 100 testing images per class. The 100 classes in the "
                    "CIFAR-100 are grouped into 20 superclasses. Each image comes with a \"fine\" label (the "
                    "class to which it belongs) and a \"coarse\" label (the superclass to which it belongs)."),
)}


@dataclasses.dataclass(frozen=True)
class CifarContents:
    """An archive's contents: class names per label feature, and per split (N, 32, 32, 3) uint8 images
    with (N, number of label bytes) uint8 labels."""

    class_names: dict[str, list[str]]
    splits: dict[str, tuple[np.ndarray, np.ndarray]]


def _members(path: Path, dataset: CifarDataset) -> dict[str, bytes]:
    """The bytes of the archive members ``dataset`` needs, by file name; DataError if one is missing."""
    wanted = [*(f for files in dataset.split_files.values() for f in files),
              *(spec.names_file for spec in dataset.labels)]
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                folder, _, filename = member.name.removeprefix("./").rpartition("/")
                if member.isfile() and folder == dataset.folder and filename in wanted:
                    found[filename] = archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise DataError(f"{path}: not a readable tar.gz archive, or a truncated one ({err}).") from None
    missing = [f for f in wanted if f not in found]
    if missing:
        raise DataError(f"{path}: the archive has no {', '.join(f'{dataset.folder}/{f}' for f in missing)}; the "
                        f"official {dataset.archive} (the binary version) holds {dataset.folder}/ with "
                        f"{', '.join(wanted)}.")
    return found


def _records(path: Path, member: str, data: bytes, dataset: CifarDataset) -> tuple[np.ndarray, np.ndarray]:
    """The (labels, images) of one ``.bin`` member, checked: whole records, labels in range."""
    size = dataset.record_size
    if not data or len(data) % size:
        raise DataError(f"{path}: {dataset.folder}/{member} holds {len(data)} bytes, not a whole (non-zero) number "
                        f"of {size}-byte records ({len(dataset.labels)} label byte(s) + {PIXELS} pixels).")
    records = np.frombuffer(data, np.uint8).reshape(-1, size)
    labels = records[:, :len(dataset.labels)]
    for column, spec in enumerate(dataset.labels):
        bad = np.flatnonzero(labels[:, column] >= spec.num_classes)
        if bad.size:
            raise DataError(f"{path}: {dataset.folder}/{member} record {bad[0]} has {spec.feature} "
                            f"{labels[bad[0], column]}, outside 0..{spec.num_classes - 1}.")
    images = records[:, len(dataset.labels):].reshape(-1, 3, SIZE, SIZE).transpose(0, 2, 3, 1)
    return labels, images


def read_archive(path: str | Path, dataset: CifarDataset) -> CifarContents:
    """The class names and split arrays of ``dataset``'s binary archive at ``path``, checked."""
    path = Path(path)
    members = _members(path, dataset)
    names = {}
    for spec in dataset.labels:
        text = members[spec.names_file].decode("utf-8", errors="replace")
        names[spec.feature] = [line.strip() for line in text.split("\n") if line.strip()]  # as tfds reads them
        if len(names[spec.feature]) != spec.num_classes:
            raise DataError(f"{path}: {dataset.folder}/{spec.names_file} names {len(names[spec.feature])} classes, "
                            f"expected {spec.num_classes}.")
    splits = {}
    for split, files in dataset.split_files.items():
        parts = [_records(path, f, members[f], dataset) for f in files]
        splits[split] = (np.concatenate([p[1] for p in parts]), np.concatenate([p[0] for p in parts]))
    return CifarContents(class_names=names, splits=splits)


def _define(dataset: CifarDataset) -> type:
    """The tfds builder class of ``dataset`` (imports tensorflow-datasets)."""
    tfds = import_tfds()
    from fluxnet.data.builders.official import OfficialFilesBuilder

    class CifarBuilder(OfficialFilesBuilder, skip_registration=True):
        """tfds builder of ``dataset`` (cifar10 or cifar100) from its official binary archive."""

        name = dataset.name
        VERSION = tfds.core.Version("3.0.2")
        URLS = {dataset.archive: dataset.url}

        def _info(self) -> tfds.core.DatasetInfo:
            labels = {spec.feature: tfds.features.ClassLabel(num_classes=spec.num_classes) for spec in dataset.labels}
            features = {"id": tfds.features.Text(), "image": tfds.features.Image(shape=(SIZE, SIZE, 3)), **labels}
            return tfds.core.DatasetInfo(
                builder=self,
                description=dataset.description,
                features=tfds.features.FeaturesDict({k: features[k] for k in dataset.features}),
                supervised_keys=("image", "label"),
                homepage=HOMEPAGE,
                citation=CITATION,
            )

        def _split_generators(self, dl_manager):
            contents = read_archive(self.official_files(dl_manager)[dataset.archive], dataset)
            for feature, names in contents.class_names.items():
                self.info.features[feature].names = names
            return {split: self._generate_examples(split, *arrays) for split, arrays in contents.splits.items()}

        def _generate_examples(self, split: str, images: np.ndarray, labels: np.ndarray):
            features = [spec.feature for spec in dataset.labels]
            for index, (image, label) in enumerate(zip(images, labels)):
                yield index, {"id": f"{split}_{index:05d}", "image": to_pil(image),
                              **{f: int(v) for f, v in zip(features, label)}}

    CifarBuilder.__name__ = CifarBuilder.__qualname__ = dataset.class_name
    return CifarBuilder


def builder_class(name: str) -> type:
    """The tfds builder class of ``name`` (``cifar10`` or ``cifar100``), defined on first use."""
    dataset = DATASETS[name]
    return defined_once(globals(), dataset.class_name, lambda: _define(dataset))
