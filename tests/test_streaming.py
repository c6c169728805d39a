"""Streaming (``fluxnet.data.streaming``): a streamed fit, evaluation and prediction equal the in-memory
ones on the same rows and seed (same batches, same preprocessing bit for bit on CPU), whatever the
number of worker processes; every accepted source; run configs with ``data.streaming``; a streamed run
killed mid-epoch resumes exactly (its workers die with it)."""
import os
import time
import uuid
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

import fluxnet as fx
from fluxnet import data, layers, losses
from fluxnet.augment import Pipeline as Augment
from fluxnet.data.streaming import TrainFeed
from fluxnet.errors import ArgumentError, ArgumentTypeError, ConfigError, DataError, NotFoundError
from fluxnet.runs.build import load_splits
from fluxnet.runs.config import apply_overrides, load_config
from fluxnet.runs.schema import check_run_config
from fluxnet.train.epoch_iterator import EpochIterator, local_batch
from fluxnet.train.sharding import batch_sharded, data_mesh
from runs_support import CONFIG, assert_same_run, fluxnet_process, overrides

ROWS = 300
PREPROCESS = {"rescale": 1 / 255, "normalize": True}


def tiny_cnn():
    return fx.Sequential([layers.Input((8, 8, 1)), layers.Conv2D(4, 3, activation="relu"),
                          layers.BatchNormalization(), layers.Flatten(), layers.Dropout(0.2), layers.Dense(10)])


def trainer(**kw):
    return fx.Trainer(tiny_cnn(), loss=losses.get("sparse_categorical_crossentropy", from_logits=True),
                      metrics=["accuracy"], **kw)


def same(a, b) -> bool:
    return all(jax.tree.leaves(jax.tree.map(np.array_equal, jax.device_get(a), jax.device_get(b))))


@pytest.fixture(scope="module")
def digits_rows(digits_tfds_dir):
    """The first ROWS raw digits (uint8 images, int32 labels)."""
    images, labels = data.read_split(data.open_dataset("digits", data_dir=digits_tfds_dir), "train")
    return images[:ROWS], labels[:ROWS]


@pytest.fixture(scope="module")
def records(digits_rows, tmp_path_factory):
    """The same rows as an ArrayRecord file of PNG-encoded records (as tfds writes mnist)."""
    return data.write_array_record(tmp_path_factory.mktemp("records") / "digits.array_record", *digits_rows)


def test_a_streamed_fit_equals_the_in_memory_fit(digits_rows, records):
    """Same rows, seed and preprocessing: the same history and parameters, with class weights, the last
    partial batch (300 rows, batch 64), streamed validation data and on-device augmentation."""
    images, labels = digits_rows
    stream = data.stream(records, workers=0, preprocess=PREPROCESS)
    pre = data.fit_preprocessor(PREPROCESS, images)
    assert np.array_equal(stream.preprocessor.mean, pre.mean) and np.array_equal(stream.preprocessor.std, pre.std)
    x = np.asarray(pre(images))
    t = trainer(augment=Augment.from_config([{"op": "RandomTranslation", "height_factor": 0.1, "width_factor": 0.1}],
                                            num_classes=10))
    start = t.init(jax.random.key(0))
    fit = dict(epochs=2, batch_size=64, seed=3, verbose=0, class_weight="balanced")
    in_memory, h_memory = t.fit(start, (x[:240], labels[:240]), validation_data=(x[240:], labels[240:]), **fit)
    streamed, h_streamed = t.fit(start, stream.take(np.arange(240)), validation_data=stream.take(np.arange(240, 300)),
                                 **fit)
    assert h_streamed.history == h_memory.history
    assert same(streamed, in_memory)


def test_the_worker_count_does_not_change_the_batches(records):
    """Batch k is a function of k alone: 0 workers (read here) and 2 worker processes give the same
    epochs, bit for bit; the order depends only on the seed and the epoch."""
    stream = data.stream(records, preprocess={"rescale": 1 / 255})
    plan = data.BatchIterator(np.arange(ROWS), None, 16, seed=5)

    def epochs(workers, first=0):
        feed = TrainFeed(data.stream(stream, workers=workers), plan, None, slice(0, 16), 2, lambda b: b)
        try:
            return [[b for b in feed.epoch(e)] for e in range(first, 2)]
        finally:
            feed.close()

    here, workers = epochs(0), epochs(2)
    assert len(here[0]) == 19 and "mask" in here[0][-1] and "mask" not in here[0][0]
    assert same(here, workers)
    assert same(here[1], epochs(0, first=1)[0])  # a fit resumed at epoch 1 reads that epoch's batches
    assert not np.array_equal(here[0][0]["y"], here[1][0]["y"])  # a new order each epoch


def test_evaluate_and_predict_streamed_equal_in_memory(digits_tfds_dir):
    """A tfds data source, streamed: the same metrics and outputs as its arrays (the last batch padded)."""
    builder = data.open_dataset("digits", data_dir=digits_tfds_dir)
    source = builder.as_data_source()["train"]
    images, labels = data.read_split(builder, "train")
    t = trainer()
    state = t.init(jax.random.key(1))
    assert t.evaluate(state, source, batch_size=500) == t.evaluate(state, (images, labels), batch_size=500)
    assert np.array_equal(t.predict(state, source, batch_size=500), t.predict(state, images, batch_size=500))


def test_a_grain_dataset_is_accepted(digits_rows):
    """A grain MapDataset of (x, y) trains as its arrays do; an IterDataset evaluates and predicts as they
    do and trains, read in its own order (its length learnt on the first pass)."""
    import grain

    images, labels = digits_rows
    x = images.astype(np.float32) / 16
    elements = grain.MapDataset.source([(x[i], labels[i]) for i in range(ROWS)])
    t = trainer()
    start = t.init(jax.random.key(2))
    fit = dict(epochs=2, batch_size=64, seed=0, verbose=0)
    assert same(t.fit(start, elements, **fit)[0], t.fit(start, (x, labels), **fit)[0])
    sequential = elements.to_iter_dataset()
    assert t.evaluate(start, sequential, batch_size=128) == t.evaluate(start, (x, labels), batch_size=128)
    assert np.array_equal(t.predict(start, sequential, batch_size=128), t.predict(start, x, batch_size=128))
    state, history = t.fit(start, sequential, epochs=2, batch_size=64, verbose=0)
    assert int(state.step) == 10 and all(np.isfinite(history.history["loss"]))
    with pytest.raises(ArgumentError, match="class_weight need every example's label up front"):
        t.fit(start, sequential, class_weight="balanced", verbose=0)


def test_an_image_folder_streams_file_by_file(tmp_path):
    """An image folder is read with PIL as the in-memory loader reads it (here in file order)."""
    rng = np.random.default_rng(0)
    files = []
    for label, name in enumerate(("a", "b")):
        (tmp_path / name).mkdir()
        for i in range(6):
            pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.png")
            files.append((pixels[..., None], label))
    stream = data.stream(tmp_path, color_mode="grayscale")
    x, y = stream.read(np.arange(len(stream)))
    assert np.array_equal(x, np.stack([f[0] for f in files])) and list(y) == [f[1] for f in files]
    assert list(stream.labels) == [f[1] for f in files]
    t = trainer()
    state, history = t.fit(t.init(jax.random.key(0)), stream, epochs=1, batch_size=4, verbose=0)
    assert int(state.step) == 3


def test_streamed_splits_hold_the_rows_of_the_in_memory_splits(digits_tfds_dir):
    """load_dataset(streaming=True): every split, fractions included, has the in-memory split's rows."""
    spec = {"validation": 0.15, "test": 0.2}
    memory = data.load_dataset("digits", data_dir=digits_tfds_dir, splits=spec, seed=4)
    streamed = data.load_dataset("digits", data_dir=digits_tfds_dir, splits=spec, seed=4, streaming=True)
    assert streamed.metadata == memory.metadata
    for (name, arrays), (_, s) in zip(memory.items(include_test=True), streamed.items(include_test=True)):
        assert isinstance(s, data.Stream), name
        rows = s.sample(len(s))
        assert np.array_equal(rows.images, arrays.images) and np.array_equal(rows.labels, arrays.labels), name
    chosen = data.select_classes(streamed, [3, 7])
    expected = data.select_classes(memory, [3, 7]).train
    assert np.array_equal(chosen.train.sample(len(chosen.train)).labels, expected.labels)


def test_streaming_auto_keeps_digits_in_memory_and_streams_past_the_limit(digits_tfds_dir):
    config = apply_overrides(load_config(CONFIG), [f"data.data_dir={digits_tfds_dir}"])
    assert isinstance(load_splits(config, allow_streaming=True).train, data.Split)  # 1797 * 64 bytes
    tiny = apply_overrides(config, ["data.max_in_memory_mb=0.05"])
    assert isinstance(load_splits(tiny, allow_streaming=True).train, data.Stream)
    assert isinstance(load_splits(tiny).train, data.Split)  # a command that needs arrays reads them
    forced = apply_overrides(config, ["data.streaming=true"])
    assert forced.data.streaming is True and isinstance(load_splits(forced, allow_streaming=True).train, data.Stream)
    with pytest.raises(ConfigError, match="data.streaming' is True, but this command reads its data into memory"):
        load_splits(forced)


def test_streaming_config_keys_are_checked():
    config = load_config(CONFIG)
    with pytest.raises(ConfigError, match="expects 'auto', True or False"):
        apply_overrides(config, ["data.streaming=maybe"])
    for override, key in (("data.max_in_memory_mb=0", "max_in_memory_mb"), ("data.workers=-1", "workers")):
        with pytest.raises(ConfigError, match=key):
            check_run_config(apply_overrides(config, [override]))


def test_a_bad_source_names_what_streams(tmp_path):
    t = trainer()
    state = t.init(jax.random.key(0))
    with pytest.raises(ArgumentTypeError,
                       match="fit data must be .*or streamed data .a tfds data source, an ArrayRecord path"):
        t.fit(state, 42, verbose=0)
    with pytest.raises(ArgumentTypeError, match="fluxnet streams a tfds data source.*got dict"):
        data.stream({"x": 1})
    with pytest.raises(NotFoundError, match="does not exist"):
        data.stream(tmp_path / "missing")
    with pytest.raises(DataError, match=r"no dataset_info.json and no \*\.array_record\* files either"):
        data.stream(tmp_path)
    with pytest.raises(ArgumentError, match="workers must be an int >= 0"):
        data.stream(tmp_path, workers=-1)


def test_a_process_reads_its_share_of_each_batch():
    """On one process the share is the whole batch and its local rows make the global array (two
    processes: the slow test below)."""
    mesh = data_mesh()
    batches = EpochIterator(mesh)
    assert batches.share(64) == slice(0, 64)
    rows = np.arange(64, dtype=np.float32)
    assert np.array_equal(np.asarray(local_batch({"x": rows}, batch_sharded(mesh))["x"]), rows)


def _workers_of(marker: str) -> list[int]:
    """The processes whose environment holds ``marker`` (a run and the workers it started)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


def test_a_streamed_run_killed_mid_epoch_resumes_exactly(straight, tmp_path, digits_tfds_dir, monkeypatch):
    """data.streaming=True with 2 workers, killed halfway through epoch 2 (kill -9), its workers exit;
    the resumed run redoes epoch 2 from its indices and ends as the in-memory straight run."""
    reference, _ = straight
    workdir = tmp_path / "streamed"
    marker = f"FLUXNET_STREAM_TEST={uuid.uuid4().hex}"
    monkeypatch.setenv(*marker.split("="))
    args = ["train", CONFIG, *overrides(digits_tfds_dir), "data.streaming=True", "data.workers=2",
            "--workdir", str(workdir), "--quiet"]
    proc = fluxnet_process(args, crash_at="epoch:2")
    assert proc.returncode == -9, proc.stderr[-3000:]
    for _ in range(40):
        if not _workers_of(marker):
            break
        time.sleep(0.25)
    assert not _workers_of(marker)
    proc = fluxnet_process(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(workdir, reference)


@pytest.mark.slow
def test_two_processes_stream_their_shares_as_one_process_trains_on_arrays():
    """Two processes with two CPU devices each, each reading only its devices' rows of every batch
    (``jax.make_array_from_process_local_data``), train, evaluate and predict as one process with four
    devices on the arrays (within float rounding: the gradients are summed in another order)."""
    from test_distributed import run_workers

    worker = str(Path(__file__).resolve().parent / "distributed_stream_worker.py")

    def run(mode, processes, devices):
        return run_workers([worker, mode], processes, devices)

    alone, = run("memory", 1, 4)
    for streamed in run("stream", 2, 2):
        assert streamed["joined"] and streamed["devices"] == 4
        for key, values in alone["history"].items():
            np.testing.assert_allclose(streamed["history"][key], values, rtol=1e-5)
        for ours, theirs in zip(streamed["params"], alone["params"]):
            np.testing.assert_allclose(ours, theirs, atol=1e-6)
        np.testing.assert_allclose(streamed["predict"], alone["predict"], atol=1e-5)
        assert streamed["evaluate"] == pytest.approx(alone["evaluate"], rel=1e-5)
