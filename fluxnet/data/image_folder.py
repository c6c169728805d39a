"""The user's own labelled images (one sub-folder per class) as a tfds data set, read with PIL.

``tfds.folder_dataset.ImageFolder`` decodes through tf.data, so it needs TensorFlow; this builder
does the same job with PIL and is prepared into the tfds data dir in ArrayRecord format like any other
data set. Layout, as Keras' ``image_dataset_from_directory``:

    root/cat/0001.png
    root/cat/more/0002.jpg      # sub-folders of a class folder are searched too
    root/dog/0003.png

Class names are the sorted sub-folder names, their positions the label ids. Files ending in .bmp,
.gif, .jpeg, .jpg or .png (any case) are read; hidden files and folders are skipped. Symbolic links are
followed, each real folder and file counted once (a link loop or a second link to the same image adds
nothing, so no image can land in two splits); one file under two classes is an error. Images are
converted to ``color_mode`` and resized to ``image_size`` (PIL bilinear), or, with ``image_size=None``,
must all share one size (a DataError names the first file that does not).

Each prepared copy lives under ``<data_dir>/fluxnet_image_folder/<folder name>_<fingerprint>/``; the
fingerprint covers the folder's path, every file's path, size and modification time, ``image_size``
and ``color_mode``, so a changed folder is prepared again and an unchanged one is read back as is.
All images form the single tfds split ``train``.

The builder class ``ImageFolder`` is defined on first use (``fluxnet.data.image_folder.ImageFolder``), so
that importing this module does not import tensorflow-datasets (``scan_image_folder`` needs none).
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from fluxnet.data.images import CHANNELS, color_mode_arg, image_size_arg, read_image, resize_uint8, to_pil
from fluxnet.data.optional import lazy_class, tfds as import_tfds
from fluxnet.errors import DataError

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


def scan_image_folder(root: str | os.PathLike) -> tuple[list[str], list[tuple[str, int]]]:
    """The class names (sorted sub-folders) and the (relative path, label) of every image, sorted."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"Image folder {str(root)!r} does not exist or is not a directory.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"Image folder {str(root)!r} has no class sub-folders; expected "
                        f"{str(root / '<class name>' / '<image file>')!r}.")
    files, owner = [], {}  # owner: real path of each image -> its first relative path
    for label, name in enumerate(classes):
        visited = set()  # real folders walked: a symlink loop or a second link to a folder adds nothing
        for dirpath, dirnames, filenames in os.walk(root / name, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in visited:
                dirnames[:] = []
                continue
            visited.add(real)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if f.startswith(".") or not f.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                relpath = os.path.relpath(os.path.join(dirpath, f), root)
                if not os.path.exists(os.path.join(dirpath, f)):
                    raise DataError(f"Image folder {str(root)!r}: {relpath!r} is a broken symbolic link "
                                    f"(to {os.readlink(os.path.join(dirpath, f))!r}); remove it or fix its target.")
                first = owner.setdefault(os.path.realpath(os.path.join(dirpath, f)), relpath)
                if first == relpath:
                    files.append((relpath, label))
                elif first.split(os.sep, 1)[0] != name:
                    raise DataError(f"Image folder {str(root)!r} holds one image under two classes: {first!r} "
                                    f"and {relpath!r} are the same file. An image must belong to one class.")
    if not files:
        raise DataError(f"Image folder {str(root)!r} has class sub-folders {classes} but no image files "
                        f"(looked for {', '.join(IMAGE_EXTENSIONS)}).")
    empty = sorted(set(classes) - {classes[label] for _, label in files})
    if empty:  # Keras would keep an empty class: a label that can never be predicted right
        raise DataError(f"Image folder {str(root)!r}: the class folder(s) {empty} hold no image files "
                        f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder(s).")
    return classes, files


def folder_fingerprint(root: Path, files: list[tuple[str, int]], image_size, color_mode: str) -> str:
    """A digest of the folder's path, every file's path, label, size and modification time, and the
    options that shape its images: a changed folder has another."""
    digest = hashlib.sha256(repr((str(root), image_size, color_mode)).encode())
    for relpath, label in files:
        stat = (root / relpath).stat()
        digest.update(repr((relpath, label, stat.st_size, stat.st_mtime_ns)).encode())
    return digest.hexdigest()[:16]


def _define_image_folder() -> type:
    """The tfds builder class ``ImageFolder`` (imports tensorflow-datasets)."""
    tfds = import_tfds()

    class ImageFolder(tfds.core.GeneratorBasedBuilder):
        """tfds builder over a folder of class sub-folders (see the module docstring)."""

        name = "fluxnet_image_folder"
        VERSION = tfds.core.Version("1.0.0")

        def __init__(self, root: str | os.PathLike, *, image_size: int | tuple[int, int] | None = None,
                     color_mode: str = "rgb", data_dir: str | os.PathLike | None = None):
            self.root = Path(root).expanduser().resolve()
            self.color_mode = color_mode_arg(color_mode)
            self.image_size = None if image_size is None else image_size_arg(image_size)
            self.class_names, self.files = scan_image_folder(self.root)
            slug = re.sub(r"[^A-Za-z0-9]+", "_", self.root.name).strip("_") or "folder"
            config = tfds.core.BuilderConfig(
                name=f"{slug}_{folder_fingerprint(self.root, self.files, self.image_size, self.color_mode)}",
                description=f"images of {str(self.root)!r}")
            super().__init__(data_dir=data_dir, config=config)

        def _info(self) -> tfds.core.DatasetInfo:
            height, width = self.image_size or (None, None)
            return tfds.core.DatasetInfo(
                builder=self,
                description=f"Labelled images read from {str(self.root)!r}.",
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(height, width, CHANNELS[self.color_mode])),
                    "label": tfds.features.ClassLabel(names=self.class_names),
                }),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            del dl_manager  # everything is local
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            first = None
            for relpath, label in self.files:
                image = read_image(self.root / relpath, self.color_mode)
                if self.image_size is not None:
                    image = resize_uint8(image, self.image_size)
                elif first is None:
                    first = (relpath, image.shape)
                elif image.shape != first[1]:
                    raise DataError(
                        f"Images in {str(self.root)!r} differ in size: {relpath!r} is {_hw(image.shape)} but "
                        f"{first[0]!r} is {_hw(first[1])} (height x width). Pass image_size=(height, width) "
                        "to resize every image to one size.")
                yield relpath, {"image": to_pil(image), "label": label}

    ImageFolder.__qualname__ = "ImageFolder"
    return ImageFolder


def _hw(shape: tuple[int, ...]) -> str:
    return f"{shape[0]}x{shape[1]}"


__getattr__ = lazy_class(globals(), "ImageFolder", _define_image_folder)
