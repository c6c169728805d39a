"""Preparing public data sets without TensorFlow, and what a tfds data dir holds.

    prepare_dataset("mnist", manual_dir="~/Downloads/mnist")   # or without manual_dir: downloads
    list_prepared()                                            # [PreparedDataset(name='mnist', ...)]

``prepare_dataset`` runs fluxnet's own builder of ``mnist``, ``fashion_mnist``, ``cifar10`` or ``cifar100``
(``fluxnet.data.builders``) into the tfds data dir, in ArrayRecord format; afterwards
``load_dataset("mnist")`` and tfds' own ``tfds.builder("mnist").as_data_source()`` read it.
``list_prepared`` reads the ``dataset_info.json`` files under a data dir, without building anything.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from fluxnet.data.builders import builder_class
from fluxnet.data.sources import data_dir_root, prepare_options
from fluxnet.errors import AlreadyExistsError

ARRAY_RECORD = "array_record"


@dataclasses.dataclass(frozen=True)
class PreparedDataset:
    """A data set as its ``dataset_info.json`` records it."""

    name: str                   # "mnist", or "name/config" for a builder with configs
    version: str
    file_format: str            # "array_record" (fluxnet reads it) or "tfrecord" (needs TensorFlow)
    splits: dict[str, int]      # split name -> number of examples
    path: Path

    def split_summary(self) -> str:
        """'train: 60000, test: 10000'."""
        return ", ".join(f"{split}: {count}" for split, count in self.splits.items())


def read_prepared(path: str | os.PathLike) -> PreparedDataset | None:
    """The data set prepared in the folder ``path`` (``DATA_DIR/NAME/[CONFIG/]VERSION``), or None where
    there is no readable ``dataset_info.json``."""
    path = Path(path)
    try:
        info = json.loads((path / "dataset_info.json").read_text())
        name = info["name"] + (f"/{info['configName']}" if info.get("configName") else "")
        splits = {s["name"]: sum(int(n) for n in s.get("shardLengths", ())) for s in info.get("splits", ())}
        return PreparedDataset(name=name, version=info["version"], splits=splits, path=path,
                               file_format=info.get("fileFormat", "tfrecord"))  # tfds' default format
    except (OSError, ValueError, KeyError, TypeError):
        return None


def list_prepared(data_dir: str | os.PathLike | None = None) -> list[PreparedDataset]:
    """Every data set prepared under ``data_dir`` (default: tfds' data dir), sorted by name and version;
    unfinished ones (tfds' ``incomplete.*`` folders) and the ``downloads`` folder are left out."""
    root = Path(data_dir_root(data_dir)).expanduser()
    found = [read_prepared(info.parent) for pattern in ("*/*/dataset_info.json", "*/*/*/dataset_info.json")
             for info in root.glob(pattern)
             if not any(part.startswith("incomplete.") or part == "downloads"
                        for part in info.relative_to(root).parts)]
    return sorted((d for d in found if d is not None), key=lambda d: (d.name, d.version, str(d.path)))


def prepared_path(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Where ``prepare_dataset(name, data_dir=...)`` writes: ``DATA_DIR/NAME/VERSION``."""
    return Path(data_dir_root(data_dir)).expanduser() / name / str(builder_class(name).VERSION)


def prepare_dataset(name: str, *, data_dir: str | os.PathLike | None = None,
                    manual_dir: str | os.PathLike | None = None, overwrite: bool = False) -> PreparedDataset:
    """Prepare ``name`` (mnist, fashion_mnist, cifar10, cifar100) in ``data_dir`` as tfds would, in
    ArrayRecord format, without TensorFlow.

    The official files are read from ``manual_dir`` under their official names (checked by fluxnet: a
    checksum that is not the official one is a warning, a malformed file a DataError naming it), else
    downloaded through tfds' download manager into ``DATA_DIR/downloads`` and checked against the
    official checksums. A data set already prepared in ArrayRecord format is kept as it is; one in
    TFRecord format (``tfds build`` with TensorFlow) raises AlreadyExistsError. ``overwrite`` prepares
    it again in either case.
    """
    def make_builder():
        return builder_class(name)(data_dir=None if data_dir is None else os.fspath(data_dir), manual_dir=manual_dir)

    builder = make_builder()
    if builder.is_prepared() and not overwrite:
        if builder.info.file_format.value != ARRAY_RECORD:
            raise AlreadyExistsError(
                f"Data set {name!r} is prepared in {str(builder.data_path)!r} in "
                f"{builder.info.file_format.value.upper()} format, which fluxnet cannot read without TensorFlow; "
                "prepare it again in ArrayRecord format with overwrite=True "
                f"(fluxnet data prepare {name} --overwrite).")
        return read_prepared(builder.data_path)
    if builder.is_prepared():                   # and overwrite: as tfds' own overwrite, the downloads kept
        shutil.rmtree(builder.data_path)
        builder = make_builder()                # its info no longer restored from the old copy
    options = prepare_options()
    options["download_config"] = dataclasses.replace(options["download_config"], force_checksums_validation=True)
    builder.download_and_prepare(**options)
    return read_prepared(builder.data_path)
