"""``load_dataset``: a data set by name, split into in-memory numpy arrays, in one call."""
from __future__ import annotations

import os

from fluxnet.data.images import image_size_arg
from fluxnet.data.sources import class_names, open_dataset, read_split
from fluxnet.data.splits import (DatasetMetadata, DatasetSplits, Split, SplitSpec, fraction_split_indices,
                                 split_spec_arg)


def load_dataset(name: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                 splits: SplitSpec | None = None, seed: int = 0, stratify: bool = True,
                 image_size: int | tuple[int, int] | None = None,
                 color_mode: str = "rgb") -> DatasetSplits:
    """Load ``name`` as train / validation / test arrays (uint8 NHWC images, int32 labels).

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

    Returns:
      ``DatasetSplits``; its iteration skips the test split (read it as ``.test``).
    """
    spec = split_spec_arg(splits)
    size = None if image_size is None else image_size_arg(image_size)
    builder = open_dataset(name, data_dir=data_dir, image_size=size, color_mode=color_mode)
    from fluxnet.data.image_folder import ImageFolder  # defined by now: open_dataset imported tensorflow-datasets

    label = builder.root.name if isinstance(builder, ImageFolder) else str(name)

    def read(split: str) -> Split:
        return Split(*read_split(builder, split, name=label, data_dir=data_dir, image_size=size))

    pool = read(spec["train"])
    pieces = {k: read(v) for k, v in spec.items() if k != "train" and isinstance(v, str)}
    fractions = {k: v for k, v in spec.items() if k != "train" and v is not None and not isinstance(v, str)}
    if fractions:
        indices = fraction_split_indices(pool.labels, fractions, seed=seed, stratify=stratify)
        pieces.update({k: Split(pool.images[i], pool.labels[i]) for k, i in indices.items()})
    names = class_names(builder)
    metadata = DatasetMetadata(name=label, num_classes=len(names), class_names=names,
                               image_shape=tuple(pool.images.shape[1:]))
    return DatasetSplits(train=pieces.get("train", pool), validation=pieces.get("validation"),
                         test=pieces.get("test"), metadata=metadata)
