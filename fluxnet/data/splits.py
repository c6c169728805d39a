"""Train / validation / test splits: how they are specified, carved, and handed over.

A split specification maps ``train``, ``validation`` and ``test`` to either

- a tfds split string (``"train"``, ``"train[:80%]"``, ``"test"``, ``"train[:10%]+test"``), read as is, or
- (validation and test only) a fraction in (0, 1), carved out of the examples the ``train`` string
  selects, with a seed and optionally stratified by class (scikit-learn's ``train_test_split``);

``None`` (or leaving the key out) means no such split. ``train`` defaults to the tfds split
``"train"``. Examples::

    {"validation": 0.1, "test": 0.2}                                  # 70/10/20 of tfds' "train"
    {"train": "train", "validation": 0.1, "test": "test"}            # MNIST style
    {"train": "train[:80%]", "validation": "train[80%:90%]", "test": "train[90%:]"}

The test split is kept apart: ``DatasetSplits`` iterates over (and ``items()`` returns) only train and
validation; the test split is reached only by naming it, ``splits.test``, once model selection is done.
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import Callable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

from fluxnet.errors import ArgumentError, ArgumentTypeError, DataError
from fluxnet.registry import unknown_name_error

SPLIT_NAMES = ("train", "validation", "test")
DEFAULT_SPLITS: Mapping[str, str | float | None] = {"train": "train", "validation": 0.1, "test": 0.2}

SplitSpec = Mapping[str, "str | float | None"]


class Split(NamedTuple):
    """One split's examples: uint8 (N, H, W, C) images (float32 after preprocessing), int32 labels.

    A tuple, so ``trainer.fit(state, splits.train)`` takes it like ``(x_train, y_train)``.
    """

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:          # the number of examples, not the tuple's two fields
        return int(self.labels.shape[0])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def take(self, index: np.ndarray) -> "Split":
        """The examples at ``index``, in that order."""
        return Split(self.images[index], self.labels[index])

    def relabel(self, table: np.ndarray) -> "Split":
        """Labels mapped through ``table`` (old class id -> new one)."""
        return Split(self.images, table[self.labels].astype(np.int32))

    def map_images(self, fn: Callable[[np.ndarray], np.ndarray]) -> "Split":
        return Split(np.asarray(fn(self.images)), self.labels)


@dataclasses.dataclass(frozen=True)
class DatasetMetadata:
    """What a model needs to know about a data set."""

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    image_shape: tuple[int, ...]       # (height, width, channels), no batch axis


@dataclasses.dataclass(frozen=True)
class DatasetSplits:
    """A data set's splits as in-memory arrays (``Split``) or streams (``fluxnet.data.Stream``, which
    have ``len``, ``labels``, ``take`` and ``relabel`` too), plus its metadata.

    Iterating (and ``items()``) yields ``(name, Split)`` for train and validation only, so loops over
    the splits used while fitting never touch the test split; ``test`` is read by naming it.
    ``validation``/``test`` are None when the specification has none.
    """

    train: Split
    validation: Split | None
    test: Split | None
    metadata: DatasetMetadata

    def items(self, include_test: bool = False) -> list[tuple[str, Split]]:
        """The present splits as (name, Split) pairs; the test split only with ``include_test=True``."""
        names = SPLIT_NAMES if include_test else SPLIT_NAMES[:2]
        return [(n, getattr(self, n)) for n in names if getattr(self, n) is not None]

    def __iter__(self) -> Iterator[tuple[str, Split]]:
        return iter(self.items())

    def map(self, fn: Callable[[Split], Split]) -> "DatasetSplits":
        """The same data set with ``fn`` applied to every split (test included); the metadata's image
        shape is the new training split's."""
        mapped = {n: fn(s) for n, s in self.items(include_test=True)}
        metadata = dataclasses.replace(self.metadata, image_shape=tuple(mapped["train"].image_shape))
        return dataclasses.replace(self, **mapped, metadata=metadata)

    def map_images(self, fn: Callable[[np.ndarray], np.ndarray]) -> "DatasetSplits":
        """The same splits with ``fn`` applied to every split's images (test included); in-memory splits
        only (a streamed split refuses: its images are read batch by batch)."""
        return self.map(lambda split: split.map_images(fn))


def split_spec_arg(splits: SplitSpec | None) -> dict[str, str | float | None]:
    """A split specification checked and completed: every key present, fractions valid."""
    spec: dict[str, str | float | None] = {"train": "train", "validation": None, "test": None}
    for key, value in (DEFAULT_SPLITS if splits is None else splits).items():
        if key not in SPLIT_NAMES:
            raise unknown_name_error("split", key, SPLIT_NAMES)
        spec[key] = value
    if not isinstance(spec["train"], str):
        raise ArgumentTypeError("splits['train'] must be a tfds split string such as 'train' or "
                                f"'train[:80%]', got {spec['train']!r}; fractions apply to validation "
                                "and test only.")
    fractions = {k: v for k, v in spec.items() if k != "train" and v is not None and not isinstance(v, str)}
    for key, value in fractions.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
            raise ArgumentError(f"splits[{key!r}] must be a tfds split string or a fraction in (0, 1) of "
                                f"the train split, got {value!r}.")
    if sum(fractions.values()) >= 1:
        raise ArgumentError(f"The fractions {fractions} carve all of the train split away; they must sum "
                            "to less than 1.")
    return spec


def fraction_split_indices(labels: np.ndarray, fractions: Mapping[str, float], *, seed: int,
                           stratify: bool = True) -> dict[str, np.ndarray]:
    """Sorted, disjoint index arrays covering ``range(len(labels))``: one per fraction, and ``train``.

    Each fraction's size is ``round(fraction * n)``; the pieces are cut one after the other (in the
    order given) by scikit-learn's ``train_test_split`` with ``random_state=seed``, stratified by
    ``labels`` when ``stratify``. The rest is ``train``.
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    n = labels.shape[0]
    remaining = np.arange(n)
    pieces: dict[str, np.ndarray] = {}
    for name, fraction in fractions.items():
        size = round(fraction * n)
        if size == 0 or size >= remaining.size:
            raise DataError(f"A {name} fraction of {fraction} of {n} examples selects {size} examples, "
                            f"leaving {remaining.size - size} for training; choose a fraction that "
                            "leaves both non-empty.")
        try:
            remaining, piece = train_test_split(remaining, test_size=size, random_state=seed,
                                                stratify=labels[remaining] if stratify else None)
        except ValueError as err:
            raise DataError(f"Cannot carve a stratified {name} split of {size} examples from "
                            f"{remaining.size}: {err} Pass stratify=False, or use larger fractions."
                            ) from None
        pieces[name] = np.sort(piece)
    return {"train": np.sort(remaining), **pieces}


def select_classes(splits: DatasetSplits, classes: Sequence[int]) -> DatasetSplits:
    """Only the examples of ``classes`` (original ids), relabelled ``0..len(classes)-1`` in that order,
    in every split (e.g. digits 0-4 as a source task and 5-9 as a target task); in memory or streamed."""
    classes = [int(c) for c in classes]
    n = splits.metadata.num_classes
    if not classes or len(set(classes)) != len(classes) or not all(0 <= c < n for c in classes):
        raise ArgumentError(f"classes must be distinct class ids in [0, {n}), got {classes}.")
    table = np.full(n, -1, np.int64)
    table[classes] = np.arange(len(classes))

    def keep(split: Split | None) -> Split | None:
        if split is None:
            return None
        return split.take(np.flatnonzero(table[split.labels] >= 0)).relabel(table)

    names = tuple(splits.metadata.class_names[c] for c in classes)
    return dataclasses.replace(splits, train=keep(splits.train), validation=keep(splits.validation),
                               test=keep(splits.test),
                               metadata=dataclasses.replace(splits.metadata, num_classes=len(classes),
                                                            class_names=names))


def limit_per_class(split: Split, per_class: int, *, seed: int) -> Split:
    """At most ``per_class`` examples of each class, drawn with ``seed`` (few-shot training sets); in
    memory or streamed."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ArgumentError(f"per_class must be a positive int, got {per_class!r}.")
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(split.labels == c))[:per_class] for c in np.unique(split.labels)]
    return split.take(np.sort(np.concatenate(chosen)))
