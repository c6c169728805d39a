"""Reliability, hostile files: image folders with symlink loops or shared files, decompression bombs,
truncated or foreign weights files, zoo entries with links, shadowing folders and private modes."""
import os
import stat

import h5py
import jax
import numpy as np
import pytest
from PIL import Image

import fluxnet as fx
from fluxnet import data, layers
from fluxnet.data.image_folder import scan_image_folder
from fluxnet.errors import CheckpointError, DataError, FluxnetError, NotFoundError
from fluxnet.transfer import pretrained


def image(path, value=0, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    for cls in ("cat", "dog"):
        for i in range(20):
            image(root / cls / f"{i}.png", i)
    return root


def test_a_symlink_loop_adds_no_images(folder):
    os.symlink(folder / "cat", folder / "cat" / "loop")          # cat/loop/loop/loop/... forever
    os.symlink(folder / "dog", folder / "dog" / "again")         # the same folder reached twice
    classes, files = scan_image_folder(folder)
    assert classes == ["cat", "dog"] and len(files) == 40


def test_a_linked_class_folder_is_followed(folder, tmp_path):
    image(tmp_path / "elsewhere" / "0.png")
    os.symlink(tmp_path / "elsewhere", folder / "bird")
    classes, files = scan_image_folder(folder)
    assert classes == ["bird", "cat", "dog"] and len(files) == 41


def test_one_file_under_two_classes_is_refused(folder):
    os.symlink(folder / "cat" / "0.png", folder / "dog" / "cat0.png")
    with pytest.raises(DataError, match="holds one image under two classes: 'cat/0.png' and 'dog/cat0.png'"):
        scan_image_folder(folder)


def test_a_broken_link_and_an_empty_class_folder_are_named(folder):
    os.symlink(folder / "nowhere.png", folder / "cat" / "gone.png")
    with pytest.raises(DataError, match="'cat/gone.png' is a broken symbolic link"):
        scan_image_folder(folder)
    os.unlink(folder / "cat" / "gone.png")
    (folder / "bird").mkdir()
    with pytest.raises(DataError, match=r"the class folder\(s\) \['bird'\] hold no image files"):
        scan_image_folder(folder)


def test_a_decompression_bomb_is_a_data_error_naming_the_file(tmp_path, monkeypatch):
    image(tmp_path / "big.png", size=(64, 64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)      # 4096 pixels > 2x the limit: PIL refuses
    with pytest.raises(DataError, match="Cannot read image file .*big.png"):
        data.images.read_image(tmp_path / "big.png", "grayscale")


def test_a_file_that_is_no_image_is_a_data_error_naming_it(tmp_path):
    (tmp_path / "fake.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="fake.png"):
        data.images.read_image(tmp_path / "fake.png", "rgb")


def small_model():
    return fx.Sequential([layers.Input((8, 8, 1)), layers.Conv2D(4, 3, name="c1"), layers.Flatten(),
                          layers.Dense(3, name="d")])


@pytest.fixture
def weights_file(tmp_path):
    pytest.importorskip("keras")
    import keras

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    path = tmp_path / "m.weights.h5"
    model.save_weights(path)
    return path


def test_a_truncated_weights_file_is_a_checkpoint_error_naming_it(weights_file):
    weights_file.write_bytes(weights_file.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="m.weights.h5' cannot be read as HDF5 .* damaged or truncated"):
        fx.load_keras_weights(small_model(), weights_file)


@pytest.mark.parametrize("content, message", [
    (b"plain text", "is neither an HDF5 file"),
    (None, "No Keras weights file"),
])
def test_a_foreign_or_missing_weights_file_is_named(tmp_path, content, message):
    path = tmp_path / "w.weights.h5"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(FluxnetError, match=message):
        fx.load_keras_weights(small_model(), path)


def test_an_hdf5_file_without_layers_is_refused(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(CheckpointError, match="has no 'layers' group"):
        fx.load_keras_weights(small_model(), path)


@pytest.fixture
def entry(tmp_path):
    model = small_model()
    backbone, path = pretrained.export(model, model.init(jax.random.key(0)), "mine", cut="c1", zoo=tmp_path / "zoo")
    return path


def test_zoo_entries_get_the_usual_permissions(entry):
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o777 & ~umask
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o044 == 0o044 & ~umask for p in entry.rglob("*") if p.is_file())


def test_a_linked_variables_folder_is_not_followed_out_of_the_zoo(entry, tmp_path):
    outside = tmp_path / "outside"
    os.rename(entry / "variables", outside)
    os.symlink(outside, entry / "variables")
    with pytest.raises(CheckpointError, match="holds a symbolic link"):
        pretrained.load("mine", zoo=entry.parent)


def test_a_folder_of_the_same_name_does_not_shadow_the_zoo_entry(entry, tmp_path, monkeypatch):
    impostor = tmp_path / "cwd" / "mine"
    other = fx.Sequential([layers.Input((8, 8, 1)), layers.Flatten(name="f")])
    pretrained.save_backbone(other, other.init(jax.random.key(0)), impostor)
    monkeypatch.chdir(tmp_path / "cwd")
    assert pretrained.resolve("mine", zoo=entry.parent) == entry
    backbone, _ = pretrained.load("mine", zoo=entry.parent)
    assert [layer.name for layer in backbone.layers][-1] == "c1"
    assert pretrained.resolve("./mine", zoo=entry.parent) == impostor.resolve()   # a path means the folder


def test_a_zoo_name_that_is_missing_lists_the_entries(entry):
    with pytest.raises(NotFoundError, match=r"entries: \['mine'\]"):
        pretrained.load("yours", zoo=entry.parent)
