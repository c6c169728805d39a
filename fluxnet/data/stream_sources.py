"""Random-access sources of examples for streaming (``fluxnet.data.streaming``).

A source reads one example ``(x, y)`` by index and decodes it there and then -- in a stream's worker
processes, so it pickles cheaply: files are reopened on first read, nothing is loaded up front.

- :class:`TfdsSource`: a tfds data source (``tfds.builder(NAME).as_data_source()[split]``), read
  through its supervised keys (an image and a ClassLabel).
- :class:`RecordSource`: ArrayRecord files of tfds-style ``tf.train.Example`` records with an ``image``
  feature (PNG or JPEG bytes, decoded by PIL) and an int64 ``label``, as tfds writes mnist;
  :func:`write_array_record` writes them.
- :class:`FolderSource`: an image folder (one sub-folder per class), a file per example, read by PIL.
- :class:`GrainSource`: a grain ``MapDataset`` whose elements are ``(x, y)``, ``(x,)`` or
  ``{"image": ..., "label": ...}``.

Each has ``__len__``, ``__getitem__``, ``examples(indices)`` (a batch of them: records are read together,
several times faster than one by one), ``labels(indices)`` (class ids: from the file list of a folder,
without decoding images from records and tfds, by reading the elements of a grain dataset) and
``fingerprint()`` (what identifies its data, so a resumed run can tell it changed). Images come out
as uint8 (height, width, channels), resized with PIL to ``image_size`` where given, exactly as
``load_dataset`` decodes them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from fluxnet.data.image_folder import folder_fingerprint, scan_image_folder
from fluxnet.data.images import from_pil, read_image, to_pil
from fluxnet.data.optional import tfds as import_tfds
from fluxnet.data.sources import example_image
from fluxnet.errors import DataError

IMAGE_KEY, LABEL_KEY = "image", "label"     # the features of a record (tfds' names for mnist, cifar10, ...)
LABEL_CHUNK = 4096                           # records whose labels are read at once


def _file_stats(paths: Sequence[str | os.PathLike]) -> list[tuple[str, int, int]]:
    return [(os.fspath(p), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths]


@dataclasses.dataclass(frozen=True, eq=False)
class TfdsSource:
    """A tfds data source: ``(image, label)`` by its supervised ``keys``; ``what`` names it in errors."""

    source: Any
    keys: tuple[str, str]
    what: str
    image_size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.int32]:
        return self.examples([index])[0]

    def examples(self, indices: Sequence[int]) -> list[tuple[np.ndarray, np.int32]]:
        image, label = self.keys
        return [(example_image(e[image], self.what, i, self.image_size), np.int32(e[label]))
                for i, e in zip(indices, self.source.__getitems__([int(i) for i in indices]))]

    def labels(self, indices: np.ndarray) -> np.ndarray:
        """The labels at ``indices``, read with the image feature left undecoded."""
        quick = self.source
        if dataclasses.is_dataclass(quick) and hasattr(quick, "decoders"):
            quick = dataclasses.replace(quick, decoders={self.keys[0]: import_tfds().decode.SkipDecoding()})
        out = np.empty(len(indices), np.int32)
        for start in range(0, len(indices), LABEL_CHUNK):
            chunk = [int(i) for i in indices[start:start + LABEL_CHUNK]]
            out[start:start + len(chunk)] = [example[self.keys[1]] for example in quick.__getitems__(chunk)]
        return out

    def fingerprint(self) -> str:
        info = self.source.dataset_info
        record = Path(info.data_dir) / "dataset_info.json"
        return repr((info.full_name, str(info.data_dir), str(getattr(self.source, "split", "")), len(self),
                     self.keys, self.image_size, _file_stats([record]) if record.is_file() else None))


@dataclasses.dataclass(frozen=True, eq=False)
class RecordSource:
    """ArrayRecord files of ``tf.train.Example`` records (``image`` bytes, int64 ``label``), in order."""

    paths: tuple[str, ...]
    image_size: tuple[int, int] | None = None

    def __post_init__(self):
        from array_record.python.array_record_data_source import ArrayRecordDataSource

        try:  # opens nothing yet: reads each file's record count; readers open on first read
            object.__setattr__(self, "reader", ArrayRecordDataSource(list(self.paths)))
        except (ValueError, RuntimeError, OSError) as err:
            raise DataError(f"Cannot read {', '.join(self.paths)} as ArrayRecord files: {err}") from None

    def __len__(self) -> int:
        return len(self.reader)

    def _example(self, index: int, record: bytes):
        from tensorflow_datasets.proto import tf_example_pb2  # (imported once; then a dict lookup)

        try:
            features = tf_example_pb2.Example.FromString(record).features.feature
            return features[IMAGE_KEY].bytes_list.value[0], features[LABEL_KEY].int64_list.value[0]
        except Exception as err:  # noqa: BLE001 -- protobuf's DecodeError, a missing feature (IndexError)
            raise DataError(f"Record {index} of {', '.join(self.paths)} is not a tf.train.Example with an "
                            f"{IMAGE_KEY!r} (encoded image bytes) and an int64 {LABEL_KEY!r} feature "
                            f"({type(err).__name__}: {err}).") from None

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.int32]:
        return self.examples([index])[0]

    def examples(self, indices: Sequence[int]) -> list[tuple[np.ndarray, np.int32]]:
        indices = [int(i) for i in indices]
        return [self._decode(i, r) for i, r in zip(indices, self.reader.__getitems__(indices))]

    def _decode(self, index: int, record: bytes) -> tuple[np.ndarray, np.int32]:
        encoded, label = self._example(index, record)
        try:
            with Image.open(io.BytesIO(encoded)) as image:
                pixels = from_pil(image)
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"Record {index} of {', '.join(self.paths)}: its image cannot be decoded ({err}).") \
                from None
        return example_image(pixels, f"record {index} of {self.paths[0]}", index, self.image_size), np.int32(label)

    def labels(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty(len(indices), np.int32)
        for start in range(0, len(indices), LABEL_CHUNK):
            chunk = [int(i) for i in indices[start:start + LABEL_CHUNK]]
            out[start:start + len(chunk)] = [self._example(i, r)[1]
                                             for i, r in zip(chunk, self.reader.__getitems__(chunk))]
        return out

    def fingerprint(self) -> str:
        return repr((_file_stats(self.paths), self.image_size))


@dataclasses.dataclass(frozen=True, eq=False)
class FolderSource:
    """The images of an image folder (``scan_image_folder``), read file by file in ``color_mode``."""

    root: Path
    files: tuple[tuple[str, int], ...]
    color_mode: str = "rgb"
    image_size: tuple[int, int] | None = None

    @classmethod
    def scan(cls, root: str | os.PathLike, color_mode: str = "rgb",
             image_size: tuple[int, int] | None = None) -> "FolderSource":
        root = Path(root).expanduser().resolve()
        return cls(root, tuple(scan_image_folder(root)[1]), color_mode, image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.int32]:
        relpath, label = self.files[index]
        image = read_image(self.root / relpath, self.color_mode)
        return example_image(image, f"image folder {str(self.root)!r}", index, self.image_size), np.int32(label)

    def examples(self, indices: Sequence[int]) -> list[tuple[np.ndarray, np.int32]]:
        return [self[int(i)] for i in indices]

    def labels(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray([self.files[int(i)][1] for i in indices], np.int32)

    def fingerprint(self) -> str:
        return folder_fingerprint(self.root, list(self.files), self.image_size, self.color_mode)


def as_example(element: Any, what: str, index: int) -> tuple[Any, Any]:
    """``(x, y)`` of a dataset element: ``(x, y)``, ``(x,)`` (y None) or a mapping with ``image`` (and
    ``label``) keys, as tfds gives them."""
    if isinstance(element, (tuple, list)) and len(element) in (1, 2):
        return element[0], element[1] if len(element) == 2 else None
    if isinstance(element, Mapping) and IMAGE_KEY in element:
        return element[IMAGE_KEY], element.get(LABEL_KEY)
    raise DataError(f"{what}: element {index} is a {type(element).__name__}; a streamed data set's elements must "
                    f"be (x, y) or (x,) tuples or mappings with {IMAGE_KEY!r} and {LABEL_KEY!r} keys, single "
                    "examples (fluxnet batches them).")


@dataclasses.dataclass(frozen=True, eq=False)
class GrainSource:
    """A grain ``MapDataset`` of examples."""

    dataset: Any

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        return as_example(self.dataset[index], "The grain dataset", index)

    def examples(self, indices: Sequence[int]) -> list[tuple[Any, Any]]:
        return [self[int(i)] for i in indices]

    def labels(self, indices: np.ndarray) -> np.ndarray:
        """The labels at ``indices``: every element there is read (grain has no cheaper way)."""
        return np.asarray([np.asarray(self[int(i)][1]).reshape(()) for i in indices]).astype(np.int32)

    def fingerprint(self) -> str:
        return repr((str(self.dataset), len(self)))


def write_array_record(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write uint8 (N, H, W, C) ``images`` (PNG-encoded with PIL) and integer ``labels`` to the ArrayRecord
    file ``path`` as tfds writes mnist (one ``tf.train.Example`` a record, ``group_size:1`` for random
    access), for :class:`RecordSource`. Returns the path."""
    from array_record.python.array_record_module import ArrayRecordWriter
    from tensorflow_datasets.proto import tf_example_pb2, tf_feature_pb2

    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or images.dtype != np.uint8 or labels.shape != images.shape[:1]:
        raise DataError(f"write_array_record takes uint8 (N, H, W, C) images and N labels, got images of dtype "
                        f"{images.dtype} and shape {images.shape} with labels of shape {labels.shape}.")
    writer = ArrayRecordWriter(os.fspath(path), "group_size:1")
    try:
        for image, label in zip(images, labels):
            png = io.BytesIO()
            to_pil(image).save(png, format="PNG")
            feature = {IMAGE_KEY: tf_feature_pb2.Feature(bytes_list=tf_feature_pb2.BytesList(value=[png.getvalue()])),
                       LABEL_KEY: tf_feature_pb2.Feature(int64_list=tf_feature_pb2.Int64List(value=[int(label)]))}
            writer.write(tf_example_pb2.Example(features=tf_feature_pb2.Features(feature=feature)).SerializeToString())
    finally:
        writer.close()
    return Path(path)


def digest(*parts: Any) -> str:
    """A short hex digest of ``parts`` (strings and numpy arrays, by their bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        if isinstance(part, np.ndarray):
            part = np.ascontiguousarray(part)
            h.update(repr((part.shape, part.dtype.str)).encode())
            h.update(memoryview(part).cast("B"))
        else:
            h.update(repr(part).encode())
    return h.hexdigest()
