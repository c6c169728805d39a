"""tensorflow-datasets and grain, imported where they are used (``tfds()``, ``grain()``), never when
``fluxnet`` is imported.

Data sets by name, image folders and the ``digits`` builder are tfds builders read through ArrayRecord
files; in-memory numpy arrays need neither tensorflow-datasets nor array_record, so a machine without
them trains, evaluates and predicts all the same.
"""
from __future__ import annotations

import importlib.util
import threading
from typing import Callable

NEEDS_TFDS = (
    "Reading a data set by name or from an image folder (fluxnet.data.load_dataset, open_dataset, Digits, "
    "ImageFolder), or preparing one (fluxnet data prepare), needs tensorflow-datasets and array_record: "
    "pip install tensorflow-datasets array_record. "
    "Training on in-memory numpy arrays needs neither; scikit-learn's digits as arrays without them: "
    "fluxnet.data.digits.digits_images_and_labels().")


NEEDS_GRAIN = ("Streaming a data set (fluxnet.data.stream, or Trainer.fit on a tfds data source, an ArrayRecord "
               "path, an image folder or a grain dataset) needs grain: pip install grain. In-memory numpy arrays "
               "do not.")


def tfds_installed() -> bool:
    """Whether tensorflow-datasets can be imported (found on the path; not imported)."""
    try:
        return importlib.util.find_spec("tensorflow_datasets") is not None
    except (ImportError, ValueError):
        return False


def tfds():
    """The ``tensorflow_datasets`` module; ModuleNotFoundError saying what needs it where it is missing."""
    try:
        import tensorflow_datasets
    except ImportError as err:
        raise ModuleNotFoundError(f"{NEEDS_TFDS} ({err})", name=getattr(err, "name", None)) from err
    return tensorflow_datasets


def grain():
    """The ``grain`` module; ModuleNotFoundError saying what needs it where it is missing. Outside
    ``absl.app`` (absl flags unparsed) grain would refuse to start worker processes, reading its
    worker-profiling flag: that one flag is marked given, at its default (off)."""
    try:
        import grain as grain_module
    except ImportError as err:
        raise ModuleNotFoundError(f"{NEEDS_GRAIN} ({err})", name=getattr(err, "name", None)) from err
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS["grain_enable_multiprocess_worker_profiling"].present = True
    return grain_module


_DEFINING = threading.RLock()  # re-entrant: a builder class may subclass one that is defined on first use too


def defined_once(namespace: dict, name: str, define: Callable[[], type]) -> type:
    """``namespace[name]`` (a module's globals), made by ``define()`` on first use. A module's
    ``__getattr__`` calls it for its tfds builder class, so that importing the module does not import
    tensorflow-datasets; the lock keeps two threads from defining the class twice (tfds registers a
    builder class by name as it is created and refuses a second one)."""
    with _DEFINING:
        if name not in namespace:
            namespace[name] = define()
        return namespace[name]


def lazy_class(namespace: dict, name: str, define: Callable[[], type]) -> Callable[[str], type]:
    """A module ``__getattr__`` (``__getattr__ = lazy_class(globals(), "Digits", _define_digits)``) that
    defines the class ``name`` on first access, with :func:`defined_once`."""
    def __getattr__(attr: str) -> type:
        if attr == name:
            return defined_once(namespace, name, define)
        raise AttributeError(f"module {namespace['__name__']!r} has no attribute {attr!r}")

    return __getattr__
