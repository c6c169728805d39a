"""``load_dataset``: a data set by name, split into in-memory numpy arrays or streams, in one call."""
from __future__ import annotations

import os

import numpy as np

from fluxnet.data.images import image_size_arg
from fluxnet.data.sources import class_names, data_source, open_dataset, read_split, supervised_keys
from fluxnet.data.splits import (DatasetMetadata, DatasetSplits, Split, SplitSpec, fraction_split_indices,
                                 split_spec_arg)
from fluxnet.data.stream_sources import TfdsSource
from fluxnet.data.streaming import DEFAULT_WORKERS, Stream
from fluxnet.errors import ArgumentError

DEFAULT_MAX_IN_MEMORY_MB = 2048  # streaming="auto" streams a data set whose decoded images exceed this
STREAMING_MODES = ("auto", True, False)


def load_dataset(name: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                 splits: SplitSpec | None = None, seed: int = 0, stratify: bool = True,
                 image_size: int | tuple[int, int] | None = None, color_mode: str = "rgb",
                 streaming: bool | str = False, max_in_memory_mb: float = DEFAULT_MAX_IN_MEMORY_MB,
                 workers: int = DEFAULT_WORKERS) -> DatasetSplits:
    """Load ``name`` as train / validation / test arrays (uint8 NHWC images, int32 labels), or streams.

    Args:
      name: ``"digits"`` (bundled, offline), a tensorflow-datasets name (``"mnist"``, ``"cifar10"``,
        ...; must be prepared in ArrayRecord format, see ``fluxnet.data.sources``), or a directory with
        one sub-folder of images per class.
      data_dir: the tfds data dir; default tfds' own (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      splits: a split specification (see ``fluxnet.data.splits``); default
        ``{"train": "train", "validation": 0.1, "test": 0.2}``.
      seed: seeds the fraction splits (same seed, same splits).
      stratify: keep class ratios in fraction splits.
      image_size: (height, width) of the returned images; other sizes are resized (PIL bilinear).
        None keeps the data set's own size, which then must be one size for all images.
      color_mode: for image folders only: ``"rgb"`` (default, as Keras), ``"grayscale"`` or ``"rgba"``.
      streaming: True makes every split a ``fluxnet.data.Stream`` read by ``workers`` processes (the
        same rows as in memory: fraction splits are index sets of the train split's rows, whose labels
        are read without decoding images); ``"auto"`` streams when the decoded images (:func:`decoded_mb`)
        would exceed ``max_in_memory_mb``.

    Returns:
      ``DatasetSplits``; its iteration skips the test split (read it as ``.test``).
    """
    spec = split_spec_arg(splits)
    size = None if image_size is None else image_size_arg(image_size)
    builder = open_dataset(name, data_dir=data_dir, image_size=size, color_mode=color_mode)
    from fluxnet.data.image_folder import ImageFolder  # defined by now: open_dataset imported tensorflow-datasets

    label = builder.root.name if isinstance(builder, ImageFolder) else str(name)
    if streaming == "auto":
        streaming = decoded_mb(builder, spec, size, name=label, data_dir=data_dir) > max_in_memory_mb
    elif streaming not in STREAMING_MODES:
        raise ArgumentError(f"streaming must be True, False or 'auto', got {streaming!r}.")
    keys = supervised_keys(builder)

    def read(split: str) -> Split | Stream:
        if not streaming:
            return Split(*read_split(builder, split, name=label, data_dir=data_dir, image_size=size))
        source = TfdsSource(data_source(builder, split, name=label, data_dir=data_dir), keys,
                            f"split {split!r} of data set {label!r}", size)
        return Stream(source, np.arange(len(source)), workers=workers)

    pool = read(spec["train"])
    pieces = {k: read(v) for k, v in spec.items() if k != "train" and isinstance(v, str)}
    fractions = {k: v for k, v in spec.items() if k != "train" and v is not None and not isinstance(v, str)}
    if fractions:  # unstratified, only the count matters: a stream's labels are not read for it
        labels = pool.labels if stratify else np.zeros(len(pool), np.int32)
        indices = fraction_split_indices(labels, fractions, seed=seed, stratify=stratify)
        pieces.update({k: pool.take(i) for k, i in indices.items()})
    names = class_names(builder)
    metadata = DatasetMetadata(name=label, num_classes=len(names), class_names=names, image_shape=pool.image_shape)
    return DatasetSplits(train=pieces.get("train", pool), validation=pieces.get("validation"),
                         test=pieces.get("test"), metadata=metadata)


def decoded_mb(builder, spec: SplitSpec, image_size: tuple[int, int] | None, *, name: str,
               data_dir: str | os.PathLike | None = None) -> float:
    """The decoded size in MiB of the examples the split strings of ``spec`` select: examples x height x
    width x channels uint8 pixels, from the data set's recorded counts and its image feature's shape
    (``image_size`` where given; the first image, decoded, where the shape is not fixed). The float32
    arrays preprocessing makes of them take four times as much."""
    strings = {v for v in spec.values() if isinstance(v, str)}
    sources = {split: data_source(builder, split, name=name, data_dir=data_dir) for split in strings}
    image_key = supervised_keys(builder)[0]
    shape = tuple(builder.info.features[image_key].shape)
    if image_size is not None:
        shape = (*image_size, *shape[2:])
    if None in shape or len(shape) != 3:
        first = np.asarray(sources[spec["train"]][0][image_key])
        shape = (*(image_size or first.shape[:2]), first.shape[2] if first.ndim == 3 else 1)
    return sum(len(s) for s in sources.values()) * int(np.prod(shape)) / 2 ** 20
