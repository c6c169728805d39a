"""Reading a Keras 3 ``.keras`` archive safely: a zip of ``metadata.json``, ``config.json`` and
``model.weights.h5``, read as data only (zipfile, json, h5py; never pickle or code).

:func:`open_archive` checks the zip directory before anything is read: no absolute names, no ``..``, no
duplicates, no encrypted members, at most ``MAX_MEMBERS`` members and ``MAX_ARCHIVE_BYTES`` uncompressed,
no member over ``EXPANSION_FLOOR`` bytes expanding more than ``MAX_EXPANSION`` times (Keras stores members
uncompressed). :func:`read_member` never takes more than a member's checked, declared size. Both the model
reader (``keras_file``) and the weights reader (``keras_weights``, given a ``.keras`` path) go through here.
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import zipfile
import zlib
from typing import Iterator

from fluxnet.errors import CheckpointError, NotFoundError

CONFIG, METADATA, WEIGHTS = "config.json", "metadata.json", "model.weights.h5"

MAX_ARCHIVE_BYTES = 4 << 30  # all members together, uncompressed
MAX_JSON_BYTES = 64 << 20  # config.json, metadata.json
MAX_MEMBERS = 1000
MAX_EXPANSION = 100  # uncompressed / compressed size, for members over EXPANSION_FLOOR bytes
EXPANSION_FLOOR = 1 << 20



@contextlib.contextmanager
def open_archive(source: str) -> Iterator[zipfile.ZipFile]:
    """The zip archive at ``source``, its directory checked (``_check_directory``)."""
    if not os.path.isfile(source):
        raise NotFoundError(f"No .keras archive at {source!r}.")
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{source!r} is not a readable .keras archive (zip: {err}): the file is truncated or "
                              "damaged; save or download it again.") from None
    with archive:
        _check_directory(archive, source)
        yield archive


def _check_directory(archive: zipfile.ZipFile, source: str) -> None:
    """CheckpointError for an archive that is unsafe to read or not a Keras 3 model archive."""
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise CheckpointError(f"{source!r} holds {len(infos)} members; a .keras archive has a few (at most "
                              f"{MAX_MEMBERS} are read).")
    for name, count in collections.Counter(info.filename for info in infos).items():
        if count > 1:
            raise CheckpointError(f"{source!r} holds the member {name!r} {count} times; refusing an ambiguous archive.")
    for info in infos:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts or "\0" in name:
            raise CheckpointError(f"{source!r} holds the member {name!r}, an absolute path or one outside the "
                                  "archive; refusing it.")
        if info.flag_bits & 0x1:
            raise CheckpointError(f"{source!r}: the member {name!r} is encrypted; Keras never writes encrypted "
                                  "members.")
        if info.file_size > EXPANSION_FLOOR and info.file_size > MAX_EXPANSION * info.compress_size:
            raise CheckpointError(f"{source!r}: the member {name!r} declares {info.file_size} bytes from "
                                  f"{info.compress_size} stored (more than {MAX_EXPANSION}x); refusing a "
                                  "decompression bomb.")
    total = sum(info.file_size for info in infos)
    if total > MAX_ARCHIVE_BYTES:
        raise CheckpointError(f"{source!r} declares {total} bytes uncompressed, more than the {MAX_ARCHIVE_BYTES} "
                              "read from a .keras archive (fluxnet.transfer.keras_archive.MAX_ARCHIVE_BYTES).")
    names = archive.namelist()
    if CONFIG not in names or WEIGHTS not in names:
        hint = " (its weights are in the npz format; save it with Keras' default h5)" \
            if "model.weights.npz" in names else ""
        raise CheckpointError(f"{source!r} is a zip archive without {CONFIG!r} and {WEIGHTS!r}, so not a Keras 3 "
                              f".keras model file{hint}; it holds {sorted(names)[:10]}.")


def read_member(archive: zipfile.ZipFile, name: str, limit: int, source: str) -> bytes:
    """The bytes of member ``name``: never more than its declared size, which must be at most ``limit``."""
    info = archive.getinfo(name)
    if info.file_size > limit:
        raise CheckpointError(f"{source!r}: the member {name!r} declares {info.file_size} bytes, more than the "
                              f"{limit} read for it.")
    try:
        with archive.open(info) as member:
            data = member.read(info.file_size + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as err:
        raise CheckpointError(f"{source!r}: the member {name!r} cannot be read ({err}): the archive is damaged "
                              "or truncated; save or download it again.") from None
    if len(data) != info.file_size:
        raise CheckpointError(f"{source!r}: the member {name!r} holds {len(data)} bytes where its directory "
                              f"entry declares {info.file_size}: the archive is damaged.")
    return data


def read_json(archive: zipfile.ZipFile, name: str, source: str) -> dict:
    try:
        value = json.loads(read_member(archive, name, MAX_JSON_BYTES, source))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{source!r}: {name!r} is not JSON ({err}).") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{source!r}: {name!r} holds a {type(value).__name__}, not a JSON object.")
    return value
