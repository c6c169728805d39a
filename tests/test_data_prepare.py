"""``fluxnet data prepare`` / ``list``: mnist, fashion_mnist, cifar10 and cifar100 prepared without
TensorFlow from small files this test writes in the official formats, read back by tfds' own builders
and by fluxnet's loader; malformed files named in one-line errors; split overrides on the command line."""
import argparse
import gzip
import io
import json
import tarfile
import warnings

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from fluxnet.cli import data as data_cli  # noqa: E402
from fluxnet.cli.errors import report  # noqa: E402
from fluxnet.data import DatasetNotPreparedError, list_prepared, load_dataset, prepare_dataset  # noqa: E402
from fluxnet.data.builders import PREPARABLE, builder_class, cifar, official_files  # noqa: E402
from fluxnet.data.builders.official import manual_files, sha256  # noqa: E402
from fluxnet.errors import AlreadyExistsError, DataError, NotFoundError  # noqa: E402
from fluxnet.runs.build import load_splits  # noqa: E402
from fluxnet.runs.config import resolve_config  # noqa: E402

VERSIONS = {"mnist": "3.0.1", "fashion_mnist": "3.0.1", "cifar10": "3.0.2", "cifar100": "3.0.2"}
NOT_OFFICIAL = "ignore:.*not the official file"   # every file written here has its own checksum
MNIST_SIZES = {"train": 12, "test": 5}
CIFAR10_BATCHES = {"train": (2, 3, 1, 2, 2), "test": (4,)}    # records per .bin file
CIFAR100_BATCHES = {"train": (7,), "test": (3,)}


# ------------------------------------------------------------------------------ the official formats
def idx_bytes(array: np.ndarray, magic: bytes | None = None) -> bytes:
    """An IDX file of unsigned bytes: magic (0, 0, 0x08, ndim), big-endian uint32 dims, the data."""
    magic = bytes((0, 0, 0x08, array.ndim)) if magic is None else magic
    return magic + np.asarray(array.shape, ">u4").tobytes() + array.astype(np.uint8).tobytes()


def write_mnist(folder, seed=0) -> dict:
    """The four gzipped IDX files; returns {split: (images (N, 28, 28, 1), labels)}."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        n = MNIST_SIZES[split]
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
        written[split] = (images[..., None], labels)
    return written


def tar_gz(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))


def write_cifar(folder, name: str, seed=0) -> dict:
    """The binary archive of ``name``; returns {"names": {feature: names}, split: (images, labels (N, k))}."""
    dataset = cifar.DATASETS[name]
    rng = np.random.default_rng(seed)
    batches = CIFAR10_BATCHES if name == "cifar10" else CIFAR100_BATCHES
    members, written = {}, {"names": {}}
    for spec in dataset.labels:
        names = [f"{spec.feature}_{i}" for i in range(spec.num_classes)]
        members[f"{dataset.folder}/{spec.names_file}"] = ("\n".join(names) + "\n\n").encode()
        written["names"][spec.feature] = names
    for split, files in dataset.split_files.items():
        images, labels = [], []
        for filename, n in zip(files, batches[split]):
            image = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
            label = np.stack([rng.integers(0, spec.num_classes, n) for spec in dataset.labels], 1).astype(np.uint8)
            records = np.concatenate([label, image.transpose(0, 3, 1, 2).reshape(n, -1)], 1)  # channel planes
            members[f"{dataset.folder}/{filename}"] = records.tobytes()
            images.append(image)
            labels.append(label)
        written[split] = (np.concatenate(images), np.concatenate(labels))
    tar_gz(folder / dataset.archive, members)
    return written


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """All four data sets prepared from manual dirs into one data dir; what was written, per name."""
    data_dir = tmp_path_factory.mktemp("tfds")
    written = {}
    for name in VERSIONS:
        manual = tmp_path_factory.mktemp(name)
        written[name] = write_mnist(manual) if "mnist" in name else write_cifar(manual, name)
        with pytest.warns(UserWarning, match="not the official file"):
            prepare_dataset(name, data_dir=data_dir, manual_dir=manual)
    return data_dir, written


def by_content(images: np.ndarray, labels: np.ndarray) -> list:
    """Examples as sorted (image bytes, label) pairs: tfds shuffles while it writes."""
    return sorted((np.asarray(image).tobytes(), int(np.asarray(label).reshape(-1)[0]))
                  for image, label in zip(images, labels))


# ------------------------------------------------------------------------------ the prepared data sets
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mnist_reads_back_through_tfds_and_fluxnet(prepared, name):
    data_dir, written = prepared
    builder = tfds.builder(name, data_dir=data_dir)           # tfds' own, registered builder
    assert str(builder.version) == "3.0.1" and builder.info.file_format.value == "array_record"
    for split, (images, labels) in written[name].items():
        source = builder.as_data_source(split=split)
        assert len(source) == MNIST_SIZES[split]
        examples = [source[i] for i in range(len(source))]
        assert by_content([e["image"] for e in examples], [e["label"] for e in examples]) == by_content(images, labels)
    splits = load_dataset(name, data_dir=data_dir, splits={"train": "train", "test": "test"})
    assert splits.train.images.shape == (12, 28, 28, 1) and splits.test.images.shape == (5, 28, 28, 1)
    assert by_content(*splits.test) == by_content(*written[name]["test"])
    expected_names = tfds.builder(name, data_dir=data_dir.parent / "empty").info.features["label"].names
    assert list(splits.metadata.class_names) == expected_names      # Fashion-MNIST's T-shirt/top ... too


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_reads_back_through_tfds_with_its_ids(prepared, name):
    data_dir, written = prepared
    builder = tfds.builder(name, data_dir=data_dir)
    assert str(builder.version) == "3.0.2"
    label_features = [spec.feature for spec in cifar.DATASETS[name].labels]
    for feature, names in written[name]["names"].items():
        assert builder.info.features[feature].names == names    # from the archive's name files, as tfds
    for split in ("train", "test"):
        images, labels = written[name][split]
        source = builder.as_data_source(split=split)
        assert len(source) == len(images)
        for example in (source[i] for i in range(len(source))):
            prefix, index = example["id"].decode().split("_")  # tfds' ids: train_00000, test_00003
            assert prefix == split
            np.testing.assert_array_equal(example["image"], images[int(index)])
            assert [example[f] for f in label_features] == list(labels[int(index)])
    splits = load_dataset(name, data_dir=data_dir, splits={"train": "train", "test": "test"})
    assert splits.train.images.shape == (len(written[name]["train"][0]), 32, 32, 3)
    assert splits.metadata.num_classes == (10 if name == "cifar10" else 100)


@pytest.mark.parametrize("name", list(VERSIONS))
def test_layout_and_info_are_tfds(prepared, name):
    data_dir, _ = prepared
    folder = data_dir / name / VERSIONS[name]
    shards = {f"{name}-{split}.array_record-00000-of-00001" for split in ("train", "test")}
    labels = {"mnist": set(), "fashion_mnist": {"label.labels.txt"}, "cifar10": {"label.labels.txt"},
              "cifar100": {"label.labels.txt", "coarse_label.labels.txt"}}[name]
    assert {p.name for p in folder.iterdir()} == {"dataset_info.json", "features.json", *shards, *labels}
    info = json.loads((folder / "dataset_info.json").read_text())
    assert (info["name"], info["version"], info["fileFormat"]) == (name, VERSIONS[name], "array_record")
    assert [s["name"] for s in info["splits"]] == ["train", "test"]
    ours = builder_class(name)(data_dir=data_dir.parent / "fresh").info   # as defined, before preparing
    theirs = tfds.builder(name, data_dir=data_dir.parent / "fresh").info
    assert ours.features.to_json() == theirs.features.to_json()
    assert (ours.description, ours.citation, ours.homepage, ours.supervised_keys, str(ours.version)) == \
           (theirs.description, theirs.citation, theirs.homepage, theirs.supervised_keys, str(theirs.version))


def test_list_shows_what_is_prepared_where(prepared, capsys, tmp_path):
    data_dir, _ = prepared
    listed = {d.name: d for d in list_prepared(data_dir)}
    assert set(listed) == set(VERSIONS)
    assert listed["mnist"].splits == {"train": 12, "test": 5} and listed["cifar10"].splits == {"train": 10, "test": 4}
    run_cli(["data", "list", "--data_dir", str(data_dir)])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.split()[:1] == ["mnist"])
    assert row.split()[:3] == ["mnist", "3.0.1", "array_record"]
    assert "train: 12, test: 5" in row and row.endswith(str(data_dir / "mnist" / "3.0.1"))
    assert f"Data sets prepared in {data_dir}" in out
    run_cli(["data", "list", "--data_dir", str(tmp_path)])
    assert "No data sets are prepared in" in capsys.readouterr().out


# ------------------------------------------------------------------------------ the command line
def run_cli(argv: list[str]) -> int:
    """``fluxnet data ...`` through its parser and run function; a user error as the CLI reports it."""
    parser = argparse.ArgumentParser(prog="fluxnet")
    data_cli.add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except Exception as err:
        code = report(args.command, err)
        if code is None:
            raise
        return code
    return 0


def test_cli_prepare_warns_in_one_line_then_reports_already_prepared(tmp_path, capsys):
    manual = tmp_path / "manual"
    manual.mkdir()
    write_mnist(manual)
    argv = ["data", "prepare", "mnist", "--data_dir", str(tmp_path / "d"), "--manual_dir", str(manual)]
    assert run_cli(argv) == 0
    out, err = capsys.readouterr()
    warned = [line for line in err.splitlines() if line.startswith("fluxnet data prepare: warning:")]
    assert len(warned) == 4 and all("not the official file" in line for line in warned)
    assert "mnist 3.0.1 in" in out and "(train: 12, test: 5): prepared." in out
    for f in manual.iterdir():                       # prepared: the manual dir is not read again
        f.unlink()
    assert run_cli(argv) == 0
    assert "already prepared" in capsys.readouterr().out


def test_cli_names_the_missing_file_in_one_line(tmp_path, capsys):
    manual = tmp_path / "manual"
    manual.mkdir()
    write_mnist(manual)
    (manual / "t10k-labels-idx1-ubyte.gz").unlink()
    assert run_cli(["data", "prepare", "mnist", "--data_dir", str(tmp_path), "--manual_dir", str(manual)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fluxnet data: error: mnist: t10k-labels-idx1-ubyte.gz not found") and "\n" not in err
    assert all(f in err for f in official_files("mnist")) and not (tmp_path / "mnist" / "3.0.1").exists()


# ------------------------------------------------------------------------------ malformed files
def gz(content: bytes) -> bytes:
    return gzip.compress(content)


IMAGES = np.zeros((12, 28, 28), np.uint8)
MNIST_DAMAGE = {   # file -> (its content, what the error says)
    "truncated gzip": ("train-images-idx3-ubyte.gz", gz(idx_bytes(IMAGES))[:-40], "gzip data ends early"),
    "not gzip": ("train-images-idx3-ubyte.gz", idx_bytes(IMAGES), "not a gzip file"),
    "wrong magic": ("train-images-idx3-ubyte.gz", gz(idx_bytes(IMAGES, magic=b"\x00\x00\x08\x01")), "magic number"),
    "fewer images than the header says": ("train-images-idx3-ubyte.gz", gz(idx_bytes(IMAGES)[:-784]),
                                          "header announces 12 items"),
    "another image shape": ("train-images-idx3-ubyte.gz", gz(idx_bytes(np.zeros((12, 32, 32), np.uint8))),
                            r"items of shape \(32, 32\), expected \(28, 28\)"),
    "labels and images disagree": ("train-labels-idx1-ubyte.gz", gz(idx_bytes(np.zeros(11, np.uint8))),
                                   "holds 11 labels, but .* holds 12 images"),
    "label out of range": ("train-labels-idx1-ubyte.gz", gz(idx_bytes(np.full(12, 10, np.uint8))),
                           r"label 10 at index 0 is outside 0..9"),
}


@pytest.mark.filterwarnings(NOT_OFFICIAL)
@pytest.mark.parametrize("damage", list(MNIST_DAMAGE))
def test_malformed_mnist_file_is_named_in_one_line(tmp_path, damage):
    filename, content, message = MNIST_DAMAGE[damage]
    write_mnist(tmp_path)
    (tmp_path / filename).write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        prepare_dataset("mnist", data_dir=tmp_path / "d", manual_dir=tmp_path)
    assert str(info.value).startswith(str(tmp_path / filename)) and "\n" not in str(info.value)
    assert not (tmp_path / "d" / "mnist" / "3.0.1").exists()


def cifar10_members(**changes: bytes | None) -> dict[str, bytes]:
    """The members of a small valid cifar-10 archive, with some replaced (None: left out)."""
    record = bytes(3073)
    members = {f"cifar-10-batches-bin/{f}": record * 2 for f in cifar.DATASETS["cifar10"].split_files["train"]}
    members["cifar-10-batches-bin/test_batch.bin"] = record
    members["cifar-10-batches-bin/batches.meta.txt"] = "\n".join(f"c{i}" for i in range(10)).encode()
    for name, content in changes.items():
        members[f"cifar-10-batches-bin/{name}"] = content
    return {k: v for k, v in members.items() if v is not None}


CIFAR_DAMAGE = {
    "not whole records": (cifar10_members(**{"data_batch_2.bin": bytes(3073 * 2 + 5)}),
                          "data_batch_2.bin holds 6151 bytes, not a whole"),
    "missing batch": (cifar10_members(**{"data_batch_5.bin": None}),
                      "the archive has no cifar-10-batches-bin/data_batch_5.bin"),
    "label out of range": (cifar10_members(**{"test_batch.bin": b"\x0a" + bytes(3072)}),
                           "test_batch.bin record 0 has label 10, outside 0..9"),
    "too few class names": (cifar10_members(**{"batches.meta.txt": b"a\nb\n"}), "names 2 classes, expected 10"),
}


@pytest.mark.filterwarnings(NOT_OFFICIAL)
@pytest.mark.parametrize("damage", list(CIFAR_DAMAGE))
def test_malformed_cifar_archive_is_named_in_one_line(tmp_path, damage):
    members, message = CIFAR_DAMAGE[damage]
    tar_gz(tmp_path / "cifar-10-binary.tar.gz", members)
    with pytest.raises(DataError, match=message) as info:
        prepare_dataset("cifar10", data_dir=tmp_path / "d", manual_dir=tmp_path)
    assert str(info.value).startswith(str(tmp_path / "cifar-10-binary.tar.gz")) and "\n" not in str(info.value)


@pytest.mark.filterwarnings(NOT_OFFICIAL)
@pytest.mark.parametrize("cut", ["truncated", "not an archive"])
def test_truncated_cifar_archive_is_named_in_one_line(tmp_path, cut):
    path = tmp_path / "cifar-10-binary.tar.gz"
    tar_gz(path, cifar10_members())
    path.write_bytes(path.read_bytes()[:200] if cut == "truncated" else b"not a tar archive")
    with pytest.raises(DataError, match="not a readable tar.gz archive, or a truncated one") as info:
        prepare_dataset("cifar10", data_dir=tmp_path / "d", manual_dir=tmp_path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_missing_manual_files_are_listed_with_the_expected_ones(tmp_path):
    with pytest.raises(ValueError, match="Unknown data set to prepare 'mnits'. Did you mean 'mnist'"):
        prepare_dataset("mnits", data_dir=tmp_path)
    with pytest.raises(NotFoundError, match="cifar100: cifar-100-binary.tar.gz not found in the manual dir"):
        prepare_dataset("cifar100", data_dir=tmp_path / "d", manual_dir=tmp_path)
    with pytest.raises(NotFoundError, match="does not exist or is not a folder"):
        prepare_dataset("mnist", data_dir=tmp_path / "d", manual_dir=tmp_path / "absent")


def test_only_a_non_official_checksum_warns(tmp_path):
    write_mnist(tmp_path)
    urls = builder_class("mnist").URLS
    official = {url: sha256(tmp_path / f) for f, url in urls.items()}   # as if these were the official ones
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert manual_files("mnist", tmp_path, urls, official) == {f: tmp_path / f for f in urls}
    other = {**official, urls["train-images-idx3-ubyte.gz"]: "0" * 64}
    with pytest.warns(UserWarning, match="train-images-idx3-ubyte.gz: not the official file") as record:
        manual_files("mnist", tmp_path, urls, other)
    assert len(record) == 1


# ------------------------------------------------------------------------------ downloads
@pytest.mark.parametrize("name", list(VERSIONS))
def test_checksums_are_tfds_own(name):
    theirs = tfds.core.download.checksums.load_url_infos(
        tfds.core.utils.tfds_path() / "url_checksums" / f"{name}.txt")
    cls = builder_class(name)
    assert set(cls.URLS.values()) == set(theirs) and {u: cls.url_infos[u] for u in theirs} == theirs
    assert sorted(cls.URLS) == sorted(info.filename for info in theirs.values()) == sorted(official_files(name))


def test_without_a_manual_dir_the_official_urls_go_through_tfds_download_manager(tmp_path, monkeypatch):
    files = tmp_path / "served"
    files.mkdir()
    write_mnist(files)
    asked = []

    def download(self, urls):                        # offline: serve the local copies
        asked.append(dict(urls))
        return {f: files / f for f in urls}

    monkeypatch.setattr(tfds.download.DownloadManager, "download", download)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)   # downloaded files are checked by tfds, not warned about
        prepare_dataset("fashion_mnist", data_dir=tmp_path / "d")
    assert asked == [builder_class("fashion_mnist").URLS]
    assert all(url.startswith("http://fashion-mnist.s3-website") for url in asked[0].values())
    assert load_dataset("fashion_mnist", data_dir=tmp_path / "d", splits={"train": "train"}).train.images.shape == \
           (12, 28, 28, 1)


# ------------------------------------------------------------------------------ missing and TFRecord copies
def test_missing_dataset_names_fluxnet_data_prepare(tmp_path):
    for name in PREPARABLE.names():
        with pytest.raises(DatasetNotPreparedError, match=f"fluxnet data prepare {name} --data_dir={tmp_path}$"):
            load_dataset(name, data_dir=tmp_path)
    with pytest.raises(DatasetNotPreparedError, match="tfds build kmnist --file_format=array_record"):
        load_dataset("kmnist", data_dir=tmp_path)        # one fluxnet does not prepare: TensorFlow's tfds


@pytest.mark.filterwarnings(NOT_OFFICIAL)
def test_tfrecord_copy_is_refused_then_overwritten(tmp_path):
    builder = tfds.builder("mnist", data_dir=tmp_path / "d")   # as `tfds build mnist` with TensorFlow leaves it
    builder.data_path.mkdir(parents=True)
    builder.info.write_to_directory(builder.data_path)
    with pytest.raises(DatasetNotPreparedError, match=r"fluxnet data prepare mnist .* --overwrite"):
        load_dataset("mnist", data_dir=tmp_path / "d")
    write_mnist(tmp_path)
    with pytest.raises(AlreadyExistsError, match="TFRECORD format"):
        prepare_dataset("mnist", data_dir=tmp_path / "d", manual_dir=tmp_path)
    dataset = prepare_dataset("mnist", data_dir=tmp_path / "d", manual_dir=tmp_path, overwrite=True)
    assert dataset.file_format == "array_record" and dataset.splits == {"train": 12, "test": 5}


# ------------------------------------------------------------------------------ run configs
def test_split_overrides_take_a_split_string_on_the_command_line(prepared):
    data_dir, written = prepared
    config = resolve_config("configs/digits_cnn.py", ["data.name=mnist", f"data.data_dir={str(data_dir)!r}",
                                                      "data.splits.test=test", "data.splits.validation=None"])
    assert config.data.splits.to_dict() == {"train": "train", "validation": None, "test": "test"}
    splits = load_splits(config)
    assert len(splits.train) == 12 and by_content(*splits.test) == by_content(*written["mnist"]["test"])
    back = resolve_config("configs/digits_cnn.py", ["data.splits.test=test", "data.splits.test=0.25",
                                                    "data.splits.validation=train[:10%]"])
    assert back.data.splits.test == 0.25 and back.data.splits.validation == "train[:10%]"
    with pytest.raises(ValueError, match="'data.splits.test' expects a fraction or a tfds split string"):
        resolve_config("configs/digits_cnn.py", ["data.splits.test=[0.2]"])
