"""Data: tfds data sets without TensorFlow, image folders, splits, preprocessing, checks, batching.

    from fluxnet import data
    splits = data.load_dataset("digits", splits={"validation": 0.1, "test": 0.2}, seed=0)
    splits, preprocessor = data.preprocess_splits(splits, {"rescale": 1 / 255})
    data.validate_splits(splits, input_shape=(8, 8, 1))
    it = data.BatchIterator(*splits.train, batch_size=128, seed=0)
    for batch in data.Prefetcher(it, size=2):      # {"image", "label", "mask"}, on the device
        ...
    splits.test                                     # kept apart: iteration skips it

Data larger than memory streams (``streaming``: ``stream(...)`` over a tfds data source, ArrayRecord
files, an image folder or a grain dataset, read by grain worker processes; ``stream_sources``)::

    train = data.stream("path/to/records-*.array_record", preprocess={"rescale": 1 / 255})
    trainer.fit(state, train, epochs=3, batch_size=128)

Modules: ``sources`` (names -> tfds builders -> arrays), ``digits`` (bundled data set),
``image_folder`` (class sub-folders, PIL), ``images`` (single-image PIL helpers), ``splits``,
``load`` (``load_dataset``), ``prepare`` (``prepare_dataset``: mnist, fashion_mnist, cifar10, cifar100
without TensorFlow; ``list_prepared``) with its tfds builders in ``builders``, ``preprocess``, ``checks``,
``imbalance``, ``batching``, ``prefetch``, ``streaming`` with ``stream_sources``.

Importing it does not import tensorflow-datasets: the functions that read data sets by name or from
folders do (``optional``), and the tfds builder classes ``Digits`` and ``ImageFolder`` are defined on
first use; grain is imported by the streams that start worker processes. In-memory numpy arrays need
neither tensorflow-datasets, array_record nor grain.
"""
from fluxnet.data import digits, image_folder  # noqa: F401 (their tfds builder classes are made on first use)
from fluxnet.data.batching import BatchIterator, num_batches
from fluxnet.data.checks import check_labels, validate, validate_splits
from fluxnet.data.imbalance import class_weights_balanced, oversample_indices
from fluxnet.data.load import load_dataset
from fluxnet.data.optional import tfds_installed
from fluxnet.data.prefetch import Prefetcher
from fluxnet.data.prepare import PreparedDataset, list_prepared, prepare_dataset
from fluxnet.data.preprocess import (Preprocessing, Preprocessor, channel_stats, fit_preprocessor,
                                     normalize, preprocess_splits, rescale, resize)
from fluxnet.data.sources import BUNDLED_DATASETS, DatasetNotPreparedError, open_dataset, read_split
from fluxnet.data.splits import (DEFAULT_SPLITS, DatasetMetadata, DatasetSplits, Split,
                                 fraction_split_indices, limit_per_class, select_classes, split_spec_arg)
from fluxnet.data.stream_sources import write_array_record
from fluxnet.data.streaming import SequentialStream, Stream, stream

__all__ = [
    "BUNDLED_DATASETS", "BatchIterator", "DEFAULT_SPLITS", "DatasetMetadata", "DatasetNotPreparedError",
    "DatasetSplits", "Digits", "ImageFolder", "Prefetcher", "PreparedDataset", "Preprocessing", "Preprocessor",
    "SequentialStream", "Split", "Stream", "channel_stats", "check_labels", "class_weights_balanced",
    "fit_preprocessor", "fraction_split_indices",
    "list_prepared", "load_dataset", "normalize", "num_batches", "open_dataset", "oversample_indices",
    "prepare_dataset", "preprocess_splits",
    "read_split", "rescale", "resize", "split_spec_arg", "stream", "validate", "validate_splits", "select_classes",
    "limit_per_class", "write_array_record",
]

_BUILDERS = {"Digits": digits, "ImageFolder": image_folder}
if not tfds_installed():  # a star import then leaves out the classes it could not make
    __all__ = [name for name in __all__ if name not in _BUILDERS]


def __getattr__(name: str):
    if name in _BUILDERS:  # tfds builder classes: making them imports tensorflow-datasets
        value = getattr(_BUILDERS[name], name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_BUILDERS})
