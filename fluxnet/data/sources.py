"""Where data sets come from: a name becomes a prepared tfds builder, a split string becomes arrays.

Everything is read through ``builder.as_data_source`` (random access to ArrayRecord files), which
works without TensorFlow. A name is resolved in this order:

1. a bundled data set (``digits``): prepared into the data dir on first use, offline;
2. a directory (or any ``os.PathLike``): an image folder, prepared on first use (``ImageFolder``);
3. a tensorflow-datasets name (``mnist``, ``cifar10``, ``fashion_mnist:3.0.1``, ...): it must already be
   prepared in the data dir in ArrayRecord format. fluxnet prepares ``mnist``, ``fashion_mnist``,
   ``cifar10`` and ``cifar100`` itself, without TensorFlow (``fluxnet data prepare NAME``,
   ``fluxnet.data.prepare``); any other tfds data set is prepared with TensorFlow, once:
   ``tfds build NAME --file_format=array_record``. An absent or TFRecord-only data set raises
   ``DatasetNotPreparedError`` with the command that prepares it.

``data_dir`` defaults to tfds' own (``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``).

tensorflow-datasets is imported inside the functions that use it (``fluxnet.data.optional``), not with
this module.
"""
from __future__ import annotations

import os
import shlex
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

from fluxnet.data.builders import PREPARABLE, builder_class
from fluxnet.data.images import resize_uint8
from fluxnet.data.optional import tfds as import_tfds
from fluxnet.errors import ArgumentError, ArgumentTypeError, DataError, NotFoundError, UnknownNameError
from fluxnet.registry import Registry, closest

if TYPE_CHECKING:
    import tensorflow_datasets as tfds


def _digits(**kwargs) -> tfds.core.DatasetBuilder:
    from fluxnet.data.digits import Digits

    return Digits(**kwargs)


# name -> a callable(data_dir=...) making the data set's tfds builder
BUNDLED_DATASETS: Registry[Callable[..., tfds.core.DatasetBuilder]] = Registry("bundled data set")
BUNDLED_DATASETS.register("digits", _digits)


def prepare_options() -> dict:
    """The ``download_and_prepare`` options of the data sets fluxnet prepares itself."""
    tfds = import_tfds()
    return {"file_format": "array_record",          # readable without TensorFlow
            "download_config": tfds.download.DownloadConfig(try_download_gcs=False)}


def __getattr__(name: str):
    if name == "PREPARE_OPTIONS":  # was a constant; now made on use (it imports tensorflow-datasets)
        return prepare_options()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class DatasetNotPreparedError(NotFoundError):
    """A tfds data set is absent from the data dir, or there only in TFRecord format."""


def data_dir_root(data_dir: str | os.PathLike | None) -> str:
    """The tfds data dir actually used: ``data_dir``, else tfds' default."""
    return os.fspath(data_dir) if data_dir is not None else import_tfds().core.constants.get_default_data_dir()


def open_dataset(name: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                 image_size: tuple[int, int] | None = None,
                 color_mode: str = "rgb") -> tfds.core.DatasetBuilder:
    """The tfds builder for ``name`` (see the module docstring), prepared where fluxnet can prepare it.

    ``image_size`` and ``color_mode`` shape an image folder while it is prepared; other data sets
    ignore them here (``read_split`` resizes).
    """
    tfds = import_tfds()
    data_dir = None if data_dir is None else os.fspath(data_dir)
    if isinstance(name, str) and name in BUNDLED_DATASETS:
        return _prepared(BUNDLED_DATASETS.get(name)(data_dir=data_dir))
    if isinstance(name, os.PathLike) or (isinstance(name, str) and os.path.isdir(os.path.expanduser(name))):
        from fluxnet.data.image_folder import ImageFolder

        return _prepared(ImageFolder(name, image_size=image_size, color_mode=color_mode, data_dir=data_dir))
    if not isinstance(name, str):
        raise ArgumentTypeError(f"A data set is named by a str or a directory path, got {type(name).__name__}.")
    try:
        return tfds.builder(name, data_dir=data_dir)
    except (tfds.core.registered.DatasetNotFoundError, ValueError):  # ValueError: not even a name ('', 'a b')
        known = [*BUNDLED_DATASETS.names(), *tfds.list_builders(with_community_datasets=False)]
        hint = closest(name.split(":")[0].split("/")[0], known)
        raise UnknownNameError(
            f"Unknown data set {name!r}: not a bundled data set ({', '.join(BUNDLED_DATASETS.names())}), not an "
            "existing directory of class sub-folders, and not a tensorflow-datasets name."
            + (f" Did you mean {' or '.join(repr(h) for h in hint)}?" if hint else "")) from None


def _prepared(builder: tfds.core.DatasetBuilder) -> tfds.core.DatasetBuilder:
    if not builder.is_prepared():
        builder.download_and_prepare(**prepare_options())
    return builder


def not_prepared_error(builder: tfds.core.DatasetBuilder, name: str,
                       data_dir: str | os.PathLike | None) -> DatasetNotPreparedError:
    """The error for a data set that is absent or TFRecord-only, with the command that prepares it."""
    root = data_dir_root(data_dir)
    if builder.name in PREPARABLE and builder.version == builder_class(builder.name).VERSION:
        command = f"fluxnet data prepare {builder.name} --data_dir={shlex.quote(root)}"
        how = ("fluxnet reads tfds data sets in the ArrayRecord format. Prepare it once, without TensorFlow, "
               "with the command below; it downloads the official files (--manual_dir DIR reads them from DIR "
               "instead):\n    ")
    else:
        command = f"tfds build {shlex.quote(name)} --file_format=array_record --data_dir={shlex.quote(root)}"
        how = ("fluxnet reads tfds data sets without TensorFlow, which needs the ArrayRecord format. "
               "Prepare it once with the command below; that step downloads through TensorFlow "
               "(`pip install tensorflow` first), reading it afterwards does not:\n    ")
    if builder.is_prepared():
        return DatasetNotPreparedError(
            f"Data set {name!r} is prepared in {str(builder.data_path)!r} in "
            f"{builder.info.file_format.value.upper()} format only, which cannot be read without "
            f"TensorFlow. {how}{command} --overwrite")
    return DatasetNotPreparedError(
        f"Data set {name!r} is not prepared in the tfds data dir {root!r} "
        f"(looked for {str(builder.data_path)!r}). {how}{command}")


def split_summary(builder: tfds.core.DatasetBuilder) -> str:
    """'train: 60000, test: 10000' — the prepared splits and their sizes, for error messages."""
    splits = builder.info.splits
    return ", ".join(f"{s}: {splits[s].num_examples}" for s in splits) or "unknown (not prepared)"


def supervised_keys(builder: tfds.core.DatasetBuilder | tfds.core.DatasetInfo) -> tuple[str, str]:
    """The (image, label) feature names of a builder's (or a ``DatasetInfo``'s) data set: its supervised
    keys, else ('image', 'label')."""
    info = getattr(builder, "info", builder)
    keys = info.supervised_keys
    keys = keys if (isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys)) \
        else ("image", "label")
    features = info.features
    missing = [k for k in keys if k not in features]
    label = None if missing else features[keys[1]]
    if missing or not isinstance(label, import_tfds().features.ClassLabel):
        raise DataError(f"Data set {info.name!r} is not an image classification data set that "
                        f"fluxnet can read: it needs an image feature and a ClassLabel feature, "
                        f"looked for {keys}, found features {list(features.keys())}.")
    return keys


def class_names(builder: tfds.core.DatasetBuilder) -> tuple[str, ...]:
    """The label feature's class names, in label-id order."""
    return tuple(builder.info.features[supervised_keys(builder)[1]].names)


def read_split(builder: tfds.core.DatasetBuilder, split: str, *, name: str | None = None,
               data_dir: str | os.PathLike | None = None,
               image_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The examples a tfds split string selects, as uint8 (N, H, W, C) images and int32 labels.

    ``image_size`` resizes images of another size (PIL bilinear); without it every image must have
    the same shape. Errors as :func:`data_source`.
    """
    name = name or builder.name
    source = data_source(builder, split, name=name, data_dir=data_dir)
    return _to_arrays(source, supervised_keys(builder), f"split {split!r} of data set {name!r}", image_size)


def data_source(builder: tfds.core.DatasetBuilder, split: str, *, name: str | None = None,
                data_dir: str | os.PathLike | None = None):
    """The tfds data source of a split string (random access; an example is decoded when read). A split
    string that selects nothing raises DataError; a data set that is not prepared in ArrayRecord format
    raises ``DatasetNotPreparedError`` (``name`` and ``data_dir`` only shape that message)."""
    name = name or builder.name
    if not isinstance(split, str):
        raise ArgumentTypeError(f"A tfds split is a string such as 'train[:80%]', got {split!r}.")
    if builder.info.splits:      # prepared: check the split against the recorded sizes first
        try:
            size = builder.info.splits[split].num_examples
        except (KeyError, ValueError) as err:
            raise ArgumentError(f"Invalid split {split!r} for data set {name!r} ({err}). "
                                f"Its splits: {split_summary(builder)}.") from None
        if size == 0:
            raise _empty_split_error(builder, split, name)
    try:
        source = builder.as_data_source(split=split)
    except NotImplementedError as err:          # tfds: "Random access data source for ... TFRECORD"
        raise not_prepared_error(builder, name, data_dir) from err
    if len(source) == 0:
        raise _empty_split_error(builder, split, name)
    return source


def example_image(image: np.ndarray, what: str, index: int, image_size: tuple[int, int] | None) -> np.ndarray:
    """One example's image as uint8 (height, width, channels) -- a grey (height, width) image gets its
    channel axis -- resized to ``image_size`` where given; DataError naming ``what`` and ``index`` for
    anything else."""
    image = np.asarray(image)
    image = image[..., None] if image.ndim == 2 else image
    if image.dtype != np.uint8 or image.ndim != 3:
        raise DataError(f"{what}: expected uint8 (height, width, channels) images, got dtype "
                        f"{image.dtype} and shape {image.shape} at index {index}.")
    return image if image_size is None else resize_uint8(image, image_size)


def _empty_split_error(builder, split: str, name: str) -> DataError:
    return DataError(f"Split {split!r} of data set {name!r} selects no examples "
                     f"(its splits: {split_summary(builder)}).")


def _to_arrays(source, keys: tuple[str, str], what: str,
               image_size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Decode every example of a data source into preallocated numpy arrays."""
    image_key, label_key = keys
    images = labels = None
    for index in range(len(source)):
        example: Mapping = source[index]
        image = example_image(example[image_key], what, index, image_size)
        if images is None:
            images = np.empty((len(source), *image.shape), np.uint8)
            labels = np.empty(len(source), np.int32)
        elif image.shape != images.shape[1:]:
            raise DataError(f"{what}: images differ in shape ({images.shape[1:]} at index 0, "
                            f"{image.shape} at index {index}); pass image_size=(height, width) to "
                            "resize them to one size.")
        images[index] = image
        labels[index] = example[label_key]
    return images, labels
