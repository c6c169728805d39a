"""fluxnet's own tfds builders of public data sets, which prepare them without TensorFlow.

tensorflow-datasets' builders of ``mnist``, ``fashion_mnist``, ``cifar10`` and ``cifar100`` read their
files through ``tf.io.gfile`` and encode images through ``tf.image``. These parse the official files
themselves, encode PNG with PIL and write what ``tfds build NAME --file_format=array_record`` writes:
``DATA_DIR/NAME/VERSION/`` with tfds' version, file names, ``dataset_info.json``, features and split
names, so that ``tfds.builder(NAME, data_dir=DATA_DIR)`` (tfds' own, registered builder) reads the result.

Modules: ``official`` (files from a manual dir, checked, or downloaded through tfds' download manager
against ``checksums.tsv``, tfds' own checksums), ``mnist`` (IDX files: mnist, fashion_mnist), ``cifar``
(binary archives: cifar10, cifar100). Their builder classes are defined on first use, so that importing
this package does not import tensorflow-datasets.
"""
from __future__ import annotations

import functools
from typing import Callable

from fluxnet.data.builders import cifar, mnist
from fluxnet.registry import Registry

# name -> a callable returning its tfds builder class (which takes data_dir= and manual_dir=)
PREPARABLE: Registry[Callable[[], type]] = Registry("data set to prepare")
for _module in (mnist, cifar):
    for _name in _module.DATASETS:
        PREPARABLE.register(_name, functools.partial(_module.builder_class, _name))


def builder_class(name: str) -> type:
    """The tfds builder class that prepares ``name``; UnknownNameError listing the names it knows."""
    return PREPARABLE.get(name)()


def official_files(name: str) -> tuple[str, ...]:
    """The official file names ``name`` is prepared from (what a manual dir holds)."""
    PREPARABLE.get(name)  # UnknownNameError for any other name
    return mnist.FILES if name in mnist.DATASETS else (cifar.DATASETS[name].archive,)
