"""Tests for fluxnet.data: tfds without TensorFlow, digits, image folders, splits, preprocessing,
checks, class imbalance, batching and prefetch. Every data dir is a temporary one."""
import socket

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from fluxnet import data
from fluxnet.data import digits as digits_module

@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    """A tfds data dir with digits prepared in it while every network connection fails."""
    data_dir = tmp_path_factory.mktemp("tfds")

    def no_network(*args, **kwargs):
        raise AssertionError("preparing digits tried to use the network")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", no_network)
        patch.setattr(socket, "create_connection", no_network)
        data.open_dataset("digits", data_dir=data_dir)
    return data_dir


@pytest.fixture(scope="module")
def digits(digits_dir):
    """All 1,797 digits, read back through tfds' data source."""
    builder = data.open_dataset("digits", data_dir=digits_dir)
    return data.Split(*data.read_split(builder, "train"))


def rows(images, labels):
    """Examples as a sorted list of (label, pixel bytes), to compare sets of examples in any order."""
    return sorted((int(y), x.tobytes()) for x, y in zip(images, labels))


# ----------------------------------------------------------------------------------------------- digits
def test_digits_prepared_offline_as_array_record(digits_dir, digits):
    builder = data.open_dataset("digits", data_dir=digits_dir)
    assert builder.is_prepared()
    assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
    assert list(builder.info.splits.keys()) == ["train"]
    assert builder.info.splits["train"].num_examples == 1797 == digits_module.NUM_EXAMPLES
    assert digits.images.shape == (1797, 8, 8, 1) and digits.images.dtype == np.uint8
    assert digits.labels.shape == (1797,) and digits.labels.dtype == np.int32
    assert digits.images.min() == 0 and digits.images.max() == 255
    assert np.bincount(digits.labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    # the same examples as scikit-learn's, values scaled 0..16 -> round(v * 255 / 16)
    from sklearn.datasets import load_digits
    sk = load_digits()
    expected = np.round(sk.images * 255 / 16).astype(np.uint8)[..., None]
    assert rows(digits.images, digits.labels) == rows(expected, sk.target)


def test_load_dataset_default_splits_and_metadata(digits_dir):
    splits = data.load_dataset("digits", data_dir=digits_dir)
    meta = splits.metadata
    assert (meta.name, meta.num_classes, meta.image_shape) == ("digits", 10, (8, 8, 1))
    assert meta.class_names == tuple("0123456789")
    # default: validation 10 %, test 20 % of tfds' train split
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (1258, 180, 359)
    # the test split is kept apart: iteration and items() skip it
    assert [name for name, _ in splits] == ["train", "validation"]
    assert [name for name, _ in splits.items(include_test=True)] == ["train", "validation", "test"]
    assert isinstance(splits.train, tuple) and splits.train.images.dtype == np.uint8
    assert splits.test.labels.dtype == np.int32


# ----------------------------------------------------------------------------------------------- splits
def test_stratified_fraction_splits(digits):
    labels = digits.labels
    pieces = data.fraction_split_indices(labels, {"validation": 0.1, "test": 0.2}, seed=3)
    sizes = {k: v.size for k, v in pieces.items()}
    assert sizes == {"train": 1258, "validation": 180, "test": 359}
    joined = np.concatenate(list(pieces.values()))
    assert np.array_equal(np.sort(joined), np.arange(1797))            # disjoint and covering
    overall = np.bincount(labels, minlength=10) / labels.size
    for name, idx in pieces.items():                                   # class ratios kept
        counts = np.bincount(labels[idx], minlength=10)
        assert np.all(np.abs(counts - overall * idx.size) <= 1.0), name
    again = data.fraction_split_indices(labels, {"validation": 0.1, "test": 0.2}, seed=3)
    other = data.fraction_split_indices(labels, {"validation": 0.1, "test": 0.2}, seed=4)
    assert all(np.array_equal(pieces[k], again[k]) for k in pieces)
    assert not np.array_equal(pieces["test"], other["test"])
    unstratified = data.fraction_split_indices(labels, {"test": 0.2}, seed=3, stratify=False)
    assert unstratified["test"].size == 359


def test_load_dataset_fraction_splits_reproducible_and_complete(digits_dir, digits):
    spec = {"validation": 0.15, "test": 0.25}
    a = data.load_dataset("digits", data_dir=digits_dir, splits=spec, seed=7)
    b = data.load_dataset("digits", data_dir=digits_dir, splits=spec, seed=7)
    for (_, x), (_, y) in zip(a.items(include_test=True), b.items(include_test=True)):
        assert np.array_equal(x.images, y.images) and np.array_equal(x.labels, y.labels)
    parts = [s for _, s in a.items(include_test=True)]
    images = np.concatenate([s.images for s in parts])
    labels = np.concatenate([s.labels for s in parts])
    assert rows(images, labels) == rows(digits.images, digits.labels)


def test_tfds_split_strings_on_digits(digits_dir, digits):
    spec = {"train": "train[:80%]", "validation": "train[80%:90%]", "test": "train[90%:]"}
    splits = data.load_dataset("digits", data_dir=digits_dir, splits=spec)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (1438, 179, 180)
    parts = [s for _, s in splits.items(include_test=True)]
    assert np.array_equal(np.concatenate([s.images for s in parts]), digits.images)   # tfds order
    assert np.array_equal(np.concatenate([s.labels for s in parts]), digits.labels)
    mixed = data.load_dataset("digits", data_dir=digits_dir,
                              splits={"train": "train[:50%]", "validation": 0.2, "test": "train[50%:]"})
    assert (len(mixed.train), len(mixed.validation), len(mixed.test)) == (718, 180, 899)
    no_test = data.load_dataset("digits", data_dir=digits_dir, splits={"train": "train[:100]"})
    assert len(no_test.train) == 100 and no_test.validation is None and no_test.test is None


@pytest.mark.parametrize("spec, match", [
    ({"train": "train[5:5]"}, r"'train\[5:5\]' of data set 'digits' selects no examples .*train: 1797"),
    ({"train": "train[90%:90%]"}, "selects no examples"),
    ({"test": "test"}, r"Invalid split 'test' .*Unknown split 'test'"),
    ({"validation": 0.0}, r"splits\['validation'\] must be a tfds split string or a fraction in \(0, 1\)"),
    ({"validation": 1.5}, "fraction in"),
    ({"validation": True}, "fraction in"),
    ({"validation": 0.6, "test": 0.5}, "must sum to less than 1"),
    ({"valid": 0.1}, "Unknown split 'valid'. Did you mean 'validation'"),
    ({"train": "train[:10]", "validation": 0.01}, "validation fraction of 0.01 of 10 examples selects 0"),
    ({"train": "train[:30]", "test": 0.1}, r"stratified test split of 3 examples .*stratify=False"),
])
def test_bad_split_specifications(digits_dir, spec, match):
    with pytest.raises(ValueError, match=match):
        data.load_dataset("digits", data_dir=digits_dir, splits=spec)


def test_train_split_must_be_a_string():
    with pytest.raises(TypeError, match=r"splits\['train'\] must be a tfds split string"):
        data.split_spec_arg({"train": 0.8})


# ------------------------------------------------------------------------------ tfds data sets, absent
def test_unknown_name_suggests_close_ones(tmp_path):
    with pytest.raises(ValueError, match="Unknown data set 'mnistt'.*Did you mean 'mnist'"):
        data.load_dataset("mnistt", data_dir=tmp_path)


def test_absent_dataset_names_the_build_command(tmp_path):
    with pytest.raises(data.DatasetNotPreparedError) as info:
        data.load_dataset("mnist", data_dir=tmp_path)
    message = str(info.value)
    assert "'mnist' is not prepared" in message and str(tmp_path / "mnist") in message
    assert f"fluxnet data prepare mnist --data_dir={tmp_path}" in message   # without TensorFlow
    assert isinstance(info.value.__cause__, NotImplementedError)      # tfds' misleading error, caught


def test_tfrecord_only_dataset_names_the_rebuild_command(tmp_path):
    builder = tfds.builder("mnist", data_dir=tmp_path)     # as TensorFlow's tfds would leave it
    assert builder.info.file_format == tfds.core.FileFormat.TFRECORD
    builder.data_path.mkdir(parents=True)
    builder.info.write_to_directory(builder.data_path)
    with pytest.raises(data.DatasetNotPreparedError) as info:
        data.load_dataset("mnist", data_dir=tmp_path)
    message = str(info.value)
    assert "TFRECORD format only" in message and "cannot be read without TensorFlow" in message
    assert f"fluxnet data prepare mnist --data_dir={tmp_path} --overwrite" in message


def test_tfds_dataset_through_data_source_with_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=40):
        splits = data.load_dataset("mnist", data_dir=tmp_path, stratify=False,
                                   splits={"train": "train", "validation": 0.25, "test": "test"})
    assert splits.train.images.shape == (30, 28, 28, 1) and splits.train.images.dtype == np.uint8
    assert len(splits.validation) == 10 and len(splits.test) == 40
    assert splits.train.labels.dtype == np.int32 and splits.metadata.num_classes == 10
    assert splits.metadata.name == "mnist" and splits.metadata.image_shape == (28, 28, 1)
    with tfds.testing.mock_data(num_examples=3):
        resized = data.load_dataset("mnist", data_dir=tmp_path, splits={"train": "train"},
                                    image_size=(14, 10))
    assert resized.train.images.shape == (3, 14, 10, 1) and resized.metadata.image_shape == (14, 10, 1)


# --------------------------------------------------------------------------------------- image folders
def write_folder(root, sizes, mode="RGB", seed=0):
    """class -> list of (height, width): random PNGs; returns {relative path: (array, label)}."""
    rng = np.random.default_rng(seed)
    written = {}
    for label, (name, shapes) in enumerate(sorted(sizes.items())):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, (h, w) in enumerate(shapes):
            array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(array).convert(mode).save(root / name / f"{i}.png")
            written[f"{name}/{i}.png"] = (np.asarray(Image.open(root / name / f"{i}.png").convert("RGB")),
                                          label)
    return written


def test_image_folder_round_trip(tmp_path):
    root = tmp_path / "pets"
    written = write_folder(root, {"dog": [(5, 6)] * 2, "cat": [(5, 6)] * 3, "emu": [(5, 6)]})
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    splits = data.load_dataset(root, data_dir=tmp_path / "tfds", splits={"train": "train"})
    meta = splits.metadata
    assert (meta.name, meta.class_names, meta.num_classes, meta.image_shape) == (
        "pets", ("cat", "dog", "emu"), 3, (5, 6, 3))
    assert rows(*splits.train) == rows(*zip(*written.values()))
    builder = data.open_dataset(root, data_dir=tmp_path / "tfds")
    assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
    # a changed folder is prepared again; the str path works like the Path
    write_folder(root / "cat" / "more", {"x": [(5, 6)]}, seed=1)
    again = data.load_dataset(str(root), data_dir=tmp_path / "tfds", splits={"train": "train"})
    assert np.bincount(again.train.labels).tolist() == [4, 2, 1]


def test_image_folder_resize_and_color_mode(tmp_path):
    root = tmp_path / "shapes"
    written = write_folder(root, {"a": [(6, 8), (9, 5)], "b": [(4, 4)]})
    splits = data.load_dataset(root, data_dir=tmp_path / "tfds", splits={"train": "train"},
                               image_size=(4, 3), color_mode="grayscale")
    assert splits.train.images.shape == (3, 4, 3, 1) and splits.metadata.image_shape == (4, 3, 1)
    gray = [Image.fromarray(x).convert("L") for x, _ in written.values()]
    expected = [np.asarray(g.resize((3, 4), Image.Resampling.BILINEAR))[..., None] for g in gray]
    assert rows(*splits.train) == rows(expected, [y for _, y in written.values()])


def test_image_folder_errors_name_the_file(tmp_path):
    root = tmp_path / "mixed"
    write_folder(root, {"a": [(6, 8)], "b": [(6, 8), (7, 8)]})
    with pytest.raises(ValueError, match=r"differ in size: 'b/1.png' is 7x8 but 'a/0.png' is 6x8.*image_si"):
        data.load_dataset(root, data_dir=tmp_path / "tfds")
    (root / "b" / "1.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"Cannot read image file '.*b/1.png'"):
        data.load_dataset(root, data_dir=tmp_path / "tfds")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="has class sub-folders \\['a'\\] but no image files"):
        data.load_dataset(tmp_path / "empty", data_dir=tmp_path / "tfds")
    with pytest.raises(ValueError, match="Unknown color_mode 'rbg'. Did you mean 'rgb'"):
        data.load_dataset(root, data_dir=tmp_path / "tfds", color_mode="rbg")


# --------------------------------------------------------------------------------------- preprocessing
def test_preprocess_normalizes_with_training_statistics_only(digits_dir):
    splits = data.load_dataset("digits", data_dir=digits_dir, splits={"validation": 0.2, "test": 0.2})
    config = ml_collections.ConfigDict({"rescale": 1 / 255, "normalize": True})
    out, pre = data.preprocess_splits(splits, config)
    train = splits.train.images.astype(np.float64) / 255
    assert np.allclose(pre.mean, train.mean()) and np.allclose(pre.std, train.std())
    for name, split in out.items(include_test=True):
        assert split.images.dtype == np.float32, name
        raw = getattr(splits, name).images / 255
        assert np.allclose(split.images, (raw - train.mean()) / train.std(), atol=1e-5), name
    assert abs(out.train.images.mean()) < 1e-5 and abs(out.train.images.std() - 1) < 1e-4
    assert abs(out.test.images.mean()) > 1e-4                          # not refitted on test
    # changing the held-out data changes nothing fitted
    altered = data.DatasetSplits(splits.train, splits.validation,
                                 data.Split(splits.test.images * 0, splits.test.labels), splits.metadata)
    _, pre2 = data.preprocess_splits(altered, config)
    assert np.array_equal(pre.mean, pre2.mean) and np.array_equal(pre.std, pre2.std)


def test_channel_stats_per_channel_with_floor():
    images = np.zeros((4, 2, 2, 3), np.float32)
    images[..., 0] = np.arange(4)[:, None, None]
    images[..., 1] = 5.0
    mean, std = data.channel_stats(images)
    assert np.allclose(mean, [1.5, 5.0, 0.0]) and np.allclose(std, [np.sqrt(1.25), 1e-7, 1e-7])
    out = np.asarray(data.normalize(images, mean, std))
    assert out.dtype == np.float32 and np.allclose(out[..., 0].mean(), 0) and np.allclose(out[..., 1], 0)


def test_resize_bilinear_halving_is_block_mean():
    x = np.random.default_rng(0).uniform(0, 255, (2, 4, 6, 3)).astype(np.float32)
    out = np.asarray(data.resize(x, (2, 3)))
    assert out.dtype == np.float32
    assert np.allclose(out, x.reshape(2, 2, 2, 3, 2, 3).mean(axis=(2, 4)), atol=1e-4)
    pre = data.fit_preprocessor({"image_size": [2, 3], "rescale": 2.0, "offset": -1.0}, x)
    assert np.allclose(np.asarray(pre(x)), out * 2 - 1, atol=1e-4)
    assert np.array_equal(np.asarray(data.rescale(np.uint8([0, 255]), 1 / 255)), np.float32([0, 1]))


def test_resize_area_averages_covered_pixels():
    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 1)).astype(np.float32)
    assert np.allclose(np.asarray(data.resize(x, (2, 2), "area")), x.reshape(2, 2, 4, 2, 4, 1).mean(axis=(2, 4)),
                       atol=1e-6)
    weights = np.zeros((3, 8))  # 8 -> 3: output pixel i covers [8i/3, 8(i+1)/3), fractional pixels weighted
    for i in range(3):
        for j in range(8):
            weights[i, j] = max(0.0, min(8 * (i + 1) / 3, j + 1) - max(8 * i / 3, j)) * 3 / 8
    expected = np.einsum("ih,nhwc,jw->nijc", weights, x, weights)
    assert np.allclose(np.asarray(data.resize(x, (3, 3), "area")), expected, atol=1e-6)


def test_preprocessing_config_errors():
    with pytest.raises(ValueError, match="Unknown preprocessing option 'rescal'. Did you mean 'rescale'"):
        data.Preprocessing.from_config({"rescal": 0.5})
    with pytest.raises(ValueError, match="Unknown interpolation 'bilinar'"):
        data.Preprocessing(interpolation="bilinar")
    with pytest.raises(ValueError, match="image_size must be"):
        data.Preprocessing(image_size=(0, 3))


# ---------------------------------------------------------------------------------------------- checks
def test_validate_accepts_good_data_and_wildcards():
    images = np.zeros((5, 8, 8, 1), np.float32)
    data.validate(images, np.arange(5, dtype=np.int32), 5, (8, 8, 1))
    data.validate(images, np.arange(5), 5, (None, None, 1))


@pytest.mark.parametrize("images, labels, match", [
    (np.zeros((0, 8, 8, 1)), np.zeros(0, int), "The train split is empty"),
    (np.zeros((5, 8, 8, 1)), np.zeros(4, int), r"5 images but labels of shape \(4,\)"),
    (np.zeros((5, 28, 28, 1)), np.zeros(5, int), r"shape \(28, 28, 1\) per example, but the model's input "
                                                 r"shape is \(8, 8, 1\)"),
    (np.zeros((5, 8, 8)), np.zeros(5, int), r"shape \(8, 8\) per example"),
    (np.zeros((5, 8, 8, 1)), np.array([0, 12, 3, -1, 10]),
     r"\[0, 10\) for 10 classes: 3 of 5 are outside \(label 12 at index 1, label -1 at index 3, "
     r"label 10 at index 4\)"),
    (np.zeros((5, 8, 8, 1)), np.zeros(5, np.float32), "labels must be integer class ids, got dtype float32"),
])
def test_validate_errors(images, labels, match):
    error = TypeError if "integer" in match else ValueError
    with pytest.raises(error, match=match):
        data.validate(images, labels, 10, (8, 8, 1))


def test_validate_non_finite_and_splits():
    images = np.zeros((6, 2, 2, 1), np.float32)
    images[2, 0, 0, 0] = np.nan
    images[4, 1, 1, 0] = np.inf
    images[4, 0, 1, 0] = -np.inf
    with pytest.raises(ValueError, match=r"validation images contain 3 non-finite values \(NaN or inf\) in 2 "
                                         r"examples, at indices 2, 4"):
        data.validate(images, np.zeros(6, int), 2, (2, 2, 1), split="validation")
    meta = data.DatasetMetadata("toy", 2, ("a", "b"), (2, 2, 1))
    ok = data.Split(np.zeros((6, 2, 2, 1), np.float32), np.zeros(6, np.int32))
    bad = data.Split(ok.images, np.full(6, 2, np.int32))
    with pytest.raises(ValueError, match="test labels must lie in"):
        data.validate_splits(data.DatasetSplits(ok, ok, bad, meta), (2, 2, 1))
    data.validate_splits(data.DatasetSplits(ok, None, None, meta), (2, 2, 1))


# ------------------------------------------------------------------------------------------- imbalance
def test_class_weights_balanced_match_sklearn():
    from sklearn.utils.class_weight import compute_class_weight
    labels = np.array([0] * 7 + [1] * 2 + [2] * 1 + [3] * 10)
    weights = data.class_weights_balanced(labels, 4)
    assert np.allclose(weights, compute_class_weight("balanced", classes=np.arange(4), y=labels))
    assert np.allclose(weights, 20 / (4 * np.array([7, 2, 1, 10])))
    with pytest.raises(ValueError, match=r"classes \[2\] of 3 have no examples"):
        data.class_weights_balanced(np.array([0, 1, 1]), 3)
    with pytest.raises(ValueError, match="label 3 at index 1"):
        data.class_weights_balanced(np.array([0, 3]), 3)


def test_oversampling_balances_classes_per_epoch():
    labels = np.array([0] * 6 + [1] * 2 + [2] * 1)
    it = data.BatchIterator(np.arange(9)[:, None], labels, batch_size=4, oversample=True, seed=1)
    assert it.examples_per_epoch == 18 and it.steps_per_epoch == 5
    epochs = []
    for _ in range(2):
        batches = list(it)
        ids = np.concatenate([b["image"][b["mask"], 0] for b in batches])
        assert np.bincount(labels[ids]).tolist() == [6, 6, 6]
        assert set(ids.tolist()) == set(range(9))                     # every example kept
        epochs.append(ids)
    assert not np.array_equal(epochs[0], epochs[1])                    # redrawn each epoch
    replay = data.BatchIterator(np.arange(9)[:, None], labels, batch_size=4, oversample=True, seed=1)
    assert np.array_equal(replay.epoch_order(1), it.epoch_order(1))
    with pytest.raises(ValueError, match="oversample=True needs labels"):
        data.BatchIterator(np.zeros((3, 1)), None, oversample=True)


# -------------------------------------------------------------------------------------------- batching
@pytest.mark.parametrize("n, bs, drop, expected", [(10, 4, False, 3), (10, 4, True, 2), (8, 4, False, 2),
                                                    (8, 4, True, 2), (3, 4, False, 1), (3, 4, True, 0)])
def test_num_batches(n, bs, drop, expected):
    assert data.num_batches(n, bs, drop) == expected


def test_batches_have_fixed_shapes_and_masks():
    images = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1) + 1
    labels = np.arange(10, dtype=np.int32)
    batches = list(data.BatchIterator(images, labels, batch_size=4, seed=0))
    assert len(batches) == 3
    for b in batches:
        assert set(b) == {"image", "label", "mask"} and b["mask"].dtype == bool
        assert b["image"].shape == (4, 1, 1, 1) and b["label"].shape == (4,) and b["mask"].shape == (4,)
    assert batches[-1]["mask"].tolist() == [True, True, False, False]
    assert batches[-1]["image"][2:].sum() == 0 and batches[-1]["label"][2:].tolist() == [0, 0]
    seen = np.concatenate([b["label"][b["mask"]] for b in batches])
    assert sorted(seen.tolist()) == list(range(10))                   # each example once
    assert np.array_equal(np.concatenate([b["image"][b["mask"]] for b in batches])[:, 0, 0, 0], seen + 1)
    dropped = list(data.BatchIterator(images, labels, batch_size=4, drop_remainder=True))
    assert len(dropped) == 2 and all(b["mask"].all() for b in dropped)
    ordered = list(data.BatchIterator(images, None, batch_size=4, shuffle=False))
    assert "label" not in ordered[0] and ordered[0]["image"][:, 0, 0, 0].tolist() == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="3 examples make no batch of batch_size 4 with drop_remainder"):
        data.BatchIterator(images[:3], labels[:3], batch_size=4, drop_remainder=True)


def test_shuffle_is_a_pure_function_of_seed_and_epoch():
    images, labels = np.zeros((50, 1)), np.arange(50)

    def epoch_labels(it):
        return np.concatenate([b["label"] for b in it])

    a, b = data.BatchIterator(images, labels, 10, seed=5), data.BatchIterator(images, labels, 10, seed=5)
    first, second = epoch_labels(a), epoch_labels(a)
    assert not np.array_equal(first, second)                           # a new order each epoch
    assert np.array_equal(first, epoch_labels(b)) and np.array_equal(second, epoch_labels(b))
    assert np.array_equal(second, np.random.default_rng([5, 1]).permutation(50))
    assert not np.array_equal(first, epoch_labels(data.BatchIterator(images, labels, 10, seed=6)))


def test_resume_from_saved_position_yields_exactly_the_rest():
    images, labels = np.arange(22)[:, None], np.arange(22)
    kwargs = dict(batch_size=4, seed=3)

    def labels_of(batches):
        return [b["label"].tolist() + b["mask"].tolist() for b in batches]

    straight = data.BatchIterator(images, labels, **kwargs)
    everything = labels_of(list(straight) + list(straight) + list(straight))     # 3 epochs x 6 batches
    first = data.BatchIterator(images, labels, **kwargs)
    taken = list(first)
    epoch = iter(first)
    taken += [next(epoch), next(epoch)]
    saved = first.state()
    assert saved == {"epoch": 1, "step": 2} and all(type(v) is int for v in saved.values())
    resumed = data.BatchIterator(images, labels, **kwargs)
    resumed.restore(saved)
    rest = list(resumed) + list(resumed)
    assert labels_of(taken) + labels_of(rest) == everything
    assert resumed.state() == {"epoch": 3, "step": 0}
    with pytest.raises(ValueError, match="past the 6 steps"):
        resumed.restore({"epoch": 0, "step": 6})


def test_prefetcher_puts_batches_on_device_and_tracks_position():
    images, labels = np.arange(20, dtype=np.float32)[:, None], np.arange(20, dtype=np.int32)
    it = data.BatchIterator(images, labels, batch_size=4, seed=0)
    expected = list(data.BatchIterator(images, labels, batch_size=4, seed=0))
    device = jax.devices()[0]
    prefetched = data.Prefetcher(it, size=2, sharding=jax.sharding.SingleDeviceSharding(device))
    stream = iter(prefetched)
    first = next(stream)
    assert isinstance(first["image"], jax.Array) and first["image"].devices() == {device}
    assert it.state() == {"epoch": 0, "step": 3}                        # the source ran ahead...
    assert prefetched.state() == {"epoch": 0, "step": 1}               # ...the consumer did not
    it.restore(prefetched.state())                  # stop early: put back what was read ahead
    got = [first, *data.Prefetcher(it, size=3)]
    assert it.state() == {"epoch": 1, "step": 0}
    for g, e in zip(got, expected, strict=True):
        assert all(np.array_equal(np.asarray(g[k]), e[k]) for k in e)
    plain = list(data.Prefetcher([{"x": np.ones(2)}] * 3, size=5))
    assert len(plain) == 3 and isinstance(plain[0]["x"], jax.Array)
    with pytest.raises(TypeError, match="has no state"):
        data.Prefetcher([]).state()


# ------------------------------------------------------------------------------------------- errors
def test_user_errors_are_fluxnet_errors_and_keep_their_builtin():
    from fluxnet import augment
    from fluxnet.errors import FluxnetError, NotFoundError

    cases = [
        (lambda: data.split_spec_arg({"validation": 1.5}), "fraction in"),
        (lambda: data.check_labels(np.array([0, 3]), 3), "label 3 at index 1"),
        (lambda: augment.Pipeline.from_config([{"op": "RandomFlop"}]), "Unknown augmentation op 'RandomFlop'"),
        (lambda: augment.RandomRotation(2.0), "values must lie in"),
    ]
    for fail, match in cases:
        with pytest.raises(ValueError, match=match) as info:
            fail()
        assert isinstance(info.value, FluxnetError), type(info.value)
    with pytest.raises(TypeError) as info:
        data.split_spec_arg({"train": 0.8})
    assert isinstance(info.value, FluxnetError)
    assert issubclass(data.DatasetNotPreparedError, NotFoundError)
    assert issubclass(data.DatasetNotPreparedError, FileNotFoundError)
