"""Data: tfds data sets without TensorFlow, image folders, splits, preprocessing, checks, batching.

    from fluxnet import data
    splits = data.load_dataset("digits", splits={"validation": 0.1, "test": 0.2}, seed=0)
    splits, preprocessor = data.preprocess_splits(splits, {"rescale": 1 / 255})
    data.validate_splits(splits, input_shape=(8, 8, 1))
    it = data.BatchIterator(*splits.train, batch_size=128, seed=0)
    for batch in data.Prefetcher(it, size=2):      # {"image", "label", "mask"}, on the device
        ...
    splits.test                                     # kept apart: iteration skips it

Modules: ``sources`` (names -> tfds builders -> arrays), ``digits`` (bundled data set),
``image_folder`` (class sub-folders, PIL), ``images`` (single-image PIL helpers), ``splits``,
``load`` (``load_dataset``), ``preprocess``, ``checks``, ``imbalance``, ``batching``, ``prefetch``.
"""
from fluxnet.data.batching import BatchIterator, num_batches
from fluxnet.data.checks import check_labels, validate, validate_splits
from fluxnet.data.digits import Digits
from fluxnet.data.image_folder import ImageFolder
from fluxnet.data.imbalance import class_weights_balanced, oversample_indices
from fluxnet.data.load import load_dataset
from fluxnet.data.prefetch import Prefetcher
from fluxnet.data.preprocess import (Preprocessing, Preprocessor, channel_stats, fit_preprocessor,
                                     normalize, preprocess_splits, rescale, resize)
from fluxnet.data.sources import BUNDLED_DATASETS, DatasetNotPreparedError, open_dataset, read_split
from fluxnet.data.splits import (DEFAULT_SPLITS, DatasetMetadata, DatasetSplits, Split,
                                 fraction_split_indices, limit_per_class, select_classes, split_spec_arg)

__all__ = [
    "BUNDLED_DATASETS", "BatchIterator", "DEFAULT_SPLITS", "DatasetMetadata", "DatasetNotPreparedError",
    "DatasetSplits", "Digits", "ImageFolder", "Prefetcher", "Preprocessing", "Preprocessor", "Split",
    "channel_stats", "check_labels", "class_weights_balanced", "fit_preprocessor", "fraction_split_indices",
    "load_dataset", "normalize", "num_batches", "open_dataset", "oversample_indices", "preprocess_splits",
    "read_split", "rescale", "resize", "split_spec_arg", "validate", "validate_splits", "select_classes",
    "limit_per_class",
]
