"""Where a public data set's official files come from: a folder the user gives, else a download.

Downloads go through tfds' download manager, which checks them against ``checksums.tsv`` (tfds' own
checksums, beside these modules). Files in a manual folder are found here under their official names and
compared with the same checksums; a different checksum is only a warning (a user's own copy in the
official format works), since the format itself is checked when the file is parsed.

The base builder class ``OfficialFilesBuilder`` is defined on first use, so that importing this module
does not import tensorflow-datasets.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Mapping

from fluxnet.data.optional import lazy_class, tfds as import_tfds
from fluxnet.errors import NotFoundError


def sha256(path: Path) -> str:
    """The SHA-256 of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manual_files(name: str, manual_dir: Path, urls: Mapping[str, str],
                 checksums: Mapping[str, str]) -> dict[str, Path]:
    """``{official file name: path}`` in ``manual_dir``; NotFoundError naming the files missing and the
    files expected; a warning for each file whose SHA-256 is not the official one (``checksums``: url ->
    SHA-256)."""
    if not manual_dir.is_dir():
        raise NotFoundError(f"The manual dir {str(manual_dir)!r} for {name} does not exist or is not a folder.")
    missing = [f for f in urls if not (manual_dir / f).is_file()]
    if missing:
        raise NotFoundError(
            f"{name}: {', '.join(missing)} not found in the manual dir {str(manual_dir)!r}; it expects the "
            f"official files {', '.join(urls)} ({', '.join(urls.values())}). Without a manual dir fluxnet "
            "downloads them.")
    for filename, url in urls.items():
        path = manual_dir / filename
        digest = sha256(path)
        if digest != checksums[url]:
            warnings.warn(f"{path}: not the official file (SHA-256 {digest[:16]}..., the official one is "
                          f"{checksums[url][:16]}...); reading it as a copy in the official format.",
                          stacklevel=2)
    return {filename: manual_dir / filename for filename in urls}


def _define_official_files_builder() -> type:
    """The base builder class ``OfficialFilesBuilder`` (imports tensorflow-datasets)."""
    tfds = import_tfds()

    class OfficialFilesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """A tfds builder that reads the official files ``URLS`` (file name -> URL) from ``manual_dir`` or
        downloads them. tfds registers the public names itself, so its subclasses skip registration."""

        URLS: Mapping[str, str]    # official file name -> URL, set by each data set's builder

        def __init__(self, *, manual_dir: str | os.PathLike | None = None, **kwargs):
            self.manual_dir = None if manual_dir is None else Path(manual_dir).expanduser()
            super().__init__(**kwargs)

        def official_files(self, dl_manager) -> dict[str, Path]:
            """``{official file name: local path}``: the manual dir's files, else the downloaded ones."""
            if self.manual_dir is None:
                return {f: Path(p) for f, p in dl_manager.download(dict(self.URLS)).items()}
            checksums = {url: info.checksum for url, info in (self.url_infos or {}).items()}
            return manual_files(self.name, self.manual_dir, self.URLS, checksums)

    OfficialFilesBuilder.__qualname__ = "OfficialFilesBuilder"
    return OfficialFilesBuilder


__getattr__ = lazy_class(globals(), "OfficialFilesBuilder", _define_official_files_builder)
