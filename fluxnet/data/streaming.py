"""Data read on demand: a data set larger than memory trains, evaluates and predicts from batches that
worker processes read, decode and preprocess (grain's ``mp_prefetch``), each batch a pure function of
its index.

    train = data.stream("~/tensorflow_datasets/mnist/3.0.1", split="train", preprocess={"rescale": 1 / 255})
    test = data.stream("~/tensorflow_datasets/mnist/3.0.1", split="test", preprocess=train.preprocessor)
    state, history = trainer.fit(state, train, epochs=3, batch_size=128, validation_data=test)

What streams (:func:`stream`): a tfds data source (``tfds.builder(NAME).as_data_source()[split]``), an
ArrayRecord file, folder of files or glob, a tfds data set folder (``dataset_info.json``), an image
folder, or a grain ``MapDataset`` -- random access, a :class:`Stream` -- or a grain ``IterDataset``,
read in its own order (:class:`SequentialStream`). ``Trainer.fit``/``evaluate``/``predict`` take any of
them; ``load_dataset(..., streaming=True)`` makes its splits Streams.

How a fit reads a :class:`Stream`:

- Epoch ``e``'s batches are the in-memory path's: the same ``BatchIterator`` order (a pure function of
  the seed and ``e``; oversampling included), the last partial batch padded with copies of its own rows
  and masked. Preprocessing runs in numpy in the workers (``Preprocessor.host``, bit for bit the JAX
  transform on CPU), so on the same rows and seed a streamed fit equals an in-memory one on CPU.
- Batch ``k = epoch * steps + step`` is made by :class:`TrainReader` from ``k`` alone; ``mp_prefetch``
  hands the indices to the workers in turn and returns the batches in order, so they do not depend on
  the number of workers (0: read in this process).
- In a multi-process job each process reads only its share of each global batch (``share``: the rows
  of its own devices).
- Resuming needs no reader state: a checkpoint records the epoch, seed and batch size, and a resumed fit
  redoes the killed epoch by reading its batches again from their indices.
- A fit's workers start once for its training batches and once for its validation data (not each
  epoch), and exit with the process that started them, also when it is killed (``kill -9``). A pipeline
  of fewer than ``MIN_WORKER_BATCHES`` batches is read in the training process: starting a worker
  (about a second: it imports fluxnet) would cost more than it saves.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn

import jax
import numpy as np
from absl import logging as absl_logging

from fluxnet.data.batching import BatchIterator, train_rows
from fluxnet.data.optional import grain as import_grain, tfds as import_tfds
from fluxnet.data.preprocess import Preprocessing, Preprocessor, fit_preprocessor
from fluxnet.data.sources import data_source, supervised_keys
from fluxnet.data.splits import Split
from fluxnet.data.stream_sources import FolderSource, GrainSource, RecordSource, TfdsSource, as_example, digest
from fluxnet.errors import ArgumentError, ArgumentTypeError, DataError, NotFoundError

DEFAULT_WORKERS = 2      # worker processes of a stream (each starts in about a second: it imports fluxnet)
STATS_SAMPLE = 10_000    # rows whose pixels give a stream's normalisation statistics (all rows when fewer)
PREFETCH = 2             # batches each worker reads ahead
MIN_WORKER_BATCHES = 32  # a shorter pipeline reads in this process: starting workers would cost more
STREAMABLE = ("a tfds data source, an ArrayRecord path (file, folder or glob), a tfds data set folder, an image "
              "folder, a grain MapDataset or IterDataset, or a fluxnet.data.Stream")


def _stack(values: list, what: str) -> Any:
    """``values`` (arrays, or pytrees of them) stacked on a new leading axis; DataError naming ``what``."""
    try:
        if isinstance(values[0], (np.ndarray, np.generic, int, float)):
            return np.stack(values)
        return jax.tree.map(lambda *leaves: np.stack(leaves), *values)
    except ValueError as err:
        raise DataError(f"{what} differ in shape or structure ({err}); a stream's examples must all have one "
                        "(resize images with image_size=).") from None


@dataclasses.dataclass(frozen=True, eq=False)
class Stream:
    """The rows ``rows`` of a random-access ``source`` (``fluxnet.data.stream_sources``), read batch by
    batch in ``workers`` processes, each example relabelled through ``label_map`` and its batch
    preprocessed by ``preprocessor.host`` (see the module docstring). Like an in-memory ``Split`` it has
    ``len``, ``labels`` (read from the source on first use: without decoding images for records, tfds
    and folders), ``take`` and ``relabel``; ``sample`` reads a seeded sample into memory."""

    source: Any
    rows: np.ndarray
    preprocessor: Preprocessor | None = None
    label_map: np.ndarray | None = None
    workers: int = DEFAULT_WORKERS
    known_labels: np.ndarray | None = dataclasses.field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @functools.cached_property
    def labels(self) -> np.ndarray:
        """The rows' class ids (int32)."""
        if self.known_labels is not None:
            return self.known_labels
        labels = self.source.labels(self.rows)
        return labels if self.label_map is None else self.label_map[labels].astype(np.int32)

    def _labels_if_read(self) -> np.ndarray | None:
        return self.__dict__.get("labels", self.known_labels)

    def take(self, index: np.ndarray | slice) -> "Stream":
        """The rows at ``index`` (positions in this stream), in that order."""
        known = self._labels_if_read()
        return dataclasses.replace(self, rows=self.rows[index], known_labels=None if known is None else known[index])

    def relabel(self, table: np.ndarray) -> "Stream":
        """Labels mapped through ``table`` (old class id -> new one) as they are read."""
        table = np.asarray(table)
        return dataclasses.replace(self, label_map=table if self.label_map is None else table[self.label_map],
                                   known_labels=table[self.labels].astype(np.int32))

    def map_images(self, fn: Callable) -> NoReturn:
        raise ArgumentError("This split is streamed (read batch by batch), so a function of all its images "
                            "cannot be applied to it; load the data into memory instead (data.streaming=false, "
                            "or load_dataset(..., streaming=False)).")

    def with_preprocessor(self, preprocessor: Preprocessor) -> "Stream":
        """This stream with ``preprocessor`` applied to each batch as it is read."""
        preprocessor.check_host()
        return dataclasses.replace(self, preprocessor=preprocessor)

    @functools.cached_property
    def image_shape(self) -> tuple[int, ...]:
        """The shape of one example's ``x`` as decoded (preprocessing keeps it)."""
        return tuple(np.shape(self.source[int(self.rows[0])][0]))

    def read(self, positions: np.ndarray, targets: bool = True) -> tuple[Any, Any]:
        """``(x, y)`` of the rows at ``positions``, decoded, relabelled and preprocessed, in this process
        (``y`` None without ``targets`` or where the examples have none)."""
        rows = self.rows[positions]
        examples = self.source.examples(rows)
        what = f"The examples at rows {rows[0]}..{rows[-1]}"
        x = _stack([e[0] for e in examples], what)
        y = None
        if targets and examples[0][1] is not None:
            y = _stack([e[1] for e in examples], what + " (their targets)")
            if self.label_map is not None:
                y = self.label_map[y].astype(np.int32)
        return (x if self.preprocessor is None else self.preprocessor.host(x)), y

    def sample(self, size: int, seed: int = 0) -> Split:
        """A seeded sample of at most ``size`` rows (all of them, in order, when there are fewer), read
        into memory as a ``Split``."""
        n = len(self)
        positions = np.arange(n) if size >= n else np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
        return Split(*self.read(positions))

    def raw_sample(self, size: int = STATS_SAMPLE, seed: int = 0) -> Split:
        """:meth:`sample` without preprocessing: what normalisation statistics are computed from."""
        return dataclasses.replace(self, preprocessor=None).sample(size, seed)

    def fingerprint(self) -> str:
        """A digest of the source, the rows, the relabelling and the preprocessing."""
        p = self.preprocessor
        return digest(self.source.fingerprint(), self.rows, self.label_map,
                      None if p is None else repr(p.config), None if p is None else p.mean,
                      None if p is None else p.std)


@dataclasses.dataclass(frozen=True, eq=False)
class SequentialStream:
    """A grain ``IterDataset`` of examples, read in its own order: every pass (an epoch, an evaluation)
    iterates it from its start, so a resumed fit redoes an epoch exactly where the dataset is
    deterministic. fluxnet does not shuffle it (``fit``'s ``shuffle`` does not apply, as in Keras for
    datasets) and learns its length from the first pass; it has no random access, so no ``labels``,
    class weights, oversampling or ``validation_split``, and in a multi-process job every process reads
    all of it, keeping its share of each batch (shard the dataset itself to spare the reading)."""

    dataset: Any
    preprocessor: Preprocessor | None = None

    def with_preprocessor(self, preprocessor: Preprocessor) -> "SequentialStream":
        preprocessor.check_host()
        return dataclasses.replace(self, preprocessor=preprocessor)

    def examples(self) -> Iterator[tuple[Any, Any]]:
        for index, element in enumerate(self.dataset):
            yield as_example(element, "The grain IterDataset", index)

    def batch(self, examples: list, batch_size: int, share: slice, masked: bool, targets: bool = True) -> dict:
        """The batch of ``examples``: padded to ``batch_size`` with copies of its own rows where short,
        with a ``mask`` where ``masked`` or padded, this process's ``share`` of it."""
        rows, mask = train_rows(np.arange(len(examples)), batch_size)
        mask = np.ones(batch_size, bool) if mask is None and masked else mask
        chosen = [examples[i] for i in rows[share]]
        x = _stack([e[0] for e in chosen], "The examples of a batch of the IterDataset")
        batch = {"x": x if self.preprocessor is None else self.preprocessor.host(x)}
        if targets and chosen[0][1] is not None:
            batch["y"] = _stack([e[1] for e in chosen], "The targets of a batch of the IterDataset")
        return batch if mask is None else {**batch, "mask": mask[share]}

    def raw_sample(self, size: int = STATS_SAMPLE, seed: int = 0) -> Split:
        """The first ``size`` examples, unpreprocessed (an IterDataset has no random access to sample)."""
        examples = []
        for example in self.examples():
            examples.append(example)
            if len(examples) == size:
                break
        if not examples:
            raise DataError("The grain IterDataset holds no examples.")
        labels = None if examples[0][1] is None else _stack([e[1] for e in examples], "The first targets")
        return Split(_stack([e[0] for e in examples], "The first examples"), labels)

    def fingerprint(self) -> str:
        p = self.preprocessor
        return digest(str(self.dataset), None if p is None else repr(p.config), None if p is None else p.mean,
                      None if p is None else p.std)


def _is_tfds_source(data: Any) -> bool:
    return hasattr(data, "dataset_info") and hasattr(data, "__getitem__") and hasattr(data, "__len__")


def _is_grain(data: Any) -> bool:
    return type(data).__module__.split(".")[0] == "grain"


def is_streamable(data: Any) -> bool:
    """Whether ``data`` is something fluxnet streams rather than in-memory arrays."""
    return isinstance(data, (Stream, SequentialStream, str, os.PathLike)) or _is_tfds_source(data) or _is_grain(data)


def stream(data: Any, *, split: str = "train", workers: int | None = None,
           preprocess: Preprocessing | Preprocessor | dict | None = None, image_size: tuple[int, int] | None = None,
           color_mode: str = "rgb") -> Stream | SequentialStream:
    """``data`` (see the module docstring; a Stream is returned as it is, with ``workers`` or
    ``preprocess`` replaced where given) as a stream read by ``workers`` processes (default 2; 0 reads in
    this process). ``split`` picks the split of a tfds data set folder; ``image_size`` resizes each image
    as it is decoded (PIL bilinear, as ``load_dataset``); ``color_mode`` converts an image folder's files.
    ``preprocess`` is a fitted ``Preprocessor`` (e.g. the training stream's, for its validation data) or
    ``Preprocessing`` settings, whose normalisation statistics then come from a seeded sample of this
    stream (``STATS_SAMPLE`` rows)."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ArgumentError(f"workers must be an int >= 0 (0: read in this process), got {workers!r}.")
    s = data if isinstance(data, (Stream, SequentialStream)) else _open(data, split, image_size, color_mode)
    if workers is not None:
        if isinstance(s, SequentialStream):
            raise ArgumentError("A grain IterDataset runs its own pipeline: give it workers with its mp_prefetch, "
                                "not with workers=.")
        s = dataclasses.replace(s, workers=workers)
    if preprocess is not None:
        if not isinstance(preprocess, Preprocessor):
            config = Preprocessing.from_config(preprocess)
            preprocess = fit_preprocessor(config, s.raw_sample().images if config.normalize else None)
        s = s.with_preprocessor(preprocess)
    return s


def _open(data: Any, split: str, image_size: tuple[int, int] | None, color_mode: str) -> Stream | SequentialStream:
    if isinstance(data, (str, os.PathLike)):
        source = _path_source(os.fspath(data), split, image_size, color_mode)
    elif _is_tfds_source(data):
        info = data.dataset_info
        source = TfdsSource(data, supervised_keys(info), f"split {str(getattr(data, 'split', ''))!r} of data set "
                            f"{info.name!r}", image_size)
    elif _is_grain(data) and isinstance(data, import_grain().MapDataset):
        source = GrainSource(data)
    elif _is_grain(data) and isinstance(data, import_grain().IterDataset):
        return SequentialStream(data)
    else:
        raise ArgumentTypeError(f"fluxnet streams {STREAMABLE}; got {type(data).__name__}.")
    if len(source) == 0:
        raise DataError(f"The streamed data ({type(source).__name__}) holds no examples.")
    return Stream(source, np.arange(len(source)))


def _path_source(text: str, split: str, image_size: tuple[int, int] | None, color_mode: str):
    """The source a path names: a glob or file of ArrayRecord records, a tfds data set folder, a folder of
    ArrayRecord files, or an image folder."""
    path = Path(text).expanduser()
    if glob.has_magic(text):
        files = sorted(glob.glob(os.path.expanduser(text)))
        if not files:
            raise NotFoundError(f"No file matches {text!r}.")
        return RecordSource(tuple(files), image_size)
    if path.is_file():
        return RecordSource((str(path),), image_size)
    if not path.is_dir():
        raise NotFoundError(f"{text!r} does not exist; fluxnet streams {STREAMABLE}.")
    if (path / "dataset_info.json").is_file():
        builder = import_tfds().builder_from_directory(path)
        return TfdsSource(data_source(builder, split, name=str(path)), supervised_keys(builder),
                          f"split {split!r} of {str(path)!r}", image_size)
    records = sorted(str(f) for f in path.iterdir() if ".array_record" in f.name and f.is_file())
    if records:
        return RecordSource(tuple(records), image_size)
    try:
        return FolderSource.scan(path, color_mode, image_size)
    except DataError as err:
        raise DataError(f"{err} ({str(path)!r} has no dataset_info.json and no *.array_record* files either, so "
                        "it was read as an image folder.)") from None


def read_batch(s: Stream, positions: np.ndarray, mask: np.ndarray | None, weights: np.ndarray | None,
               targets: bool = True) -> dict:
    """The host batch of ``s``'s rows at ``positions``: ``x``, ``y`` where there are targets, ``weight``
    and ``mask`` where given -- the keys of the in-memory path's batches."""
    x, y = s.read(positions, targets)
    batch = {"x": x} if y is None else {"x": x, "y": y}
    if weights is not None:
        batch["weight"] = weights[positions]
    return batch if mask is None else {**batch, "mask": mask}


class TrainReader:
    """Training batch ``k = epoch * steps + step`` of a fit on ``stream``, as the in-memory path makes it
    from ``plan`` (its ``BatchIterator``), ``share`` of its rows. Picklable: the worker processes run it;
    each keeps the order of the epoch it is reading."""

    def __init__(self, s: Stream, plan: BatchIterator, weights: np.ndarray | None, share: slice):
        self.stream, self.plan, self.weights, self.share = s, plan, weights, share
        self._order: tuple[int, np.ndarray] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_order": None}

    def __call__(self, k: int) -> dict:
        epoch, step = divmod(int(k), self.plan.steps_per_epoch)
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, self.plan.epoch_order(epoch))
        size = self.plan.batch_size
        rows, mask = train_rows(self._order[1][step * size:(step + 1) * size], size)
        return read_batch(self.stream, rows[self.share], None if mask is None else mask[self.share], self.weights)


class EvalReader:
    """Evaluation batch ``k`` (modulo the batches of one pass) of ``stream``: its rows in order, the last
    batch padded to ``batch_size`` with row 0 (as the in-memory path pads) and masked; ``share`` of it."""

    def __init__(self, s: Stream, batch_size: int, share: slice, targets: bool):
        self.stream, self.batch_size, self.share, self.targets = s, batch_size, share, targets
        self.steps = -(-len(s) // batch_size)

    def __call__(self, k: int) -> dict:
        start = int(k) % self.steps * self.batch_size
        positions = np.arange(start, min(start + self.batch_size, len(self.stream)))
        mask = np.arange(self.batch_size) < positions.size
        positions = np.concatenate([positions, np.zeros(self.batch_size - positions.size, positions.dtype)])
        return read_batch(self.stream, positions[self.share], mask[self.share], None, self.targets)


def _start_worker(index: int, count: int, verbosity: int) -> None:
    """A worker's start: absl logs at its parent's ``verbosity`` (the command line quiets tfds'), and
    the worker ends once the process that started it is gone (one killed by ``kill -9`` cannot stop its
    workers, and grain's would wait for it forever)."""
    del index, count
    absl_logging.set_verbosity(verbosity)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="fluxnet-exit-with-parent").start()


class Pipeline:
    """``reader(k)`` for ``k`` in ``[start, stop)``, in order, read ahead by ``workers`` grain processes
    (0, or fewer than ``MIN_WORKER_BATCHES`` batches: read here, when asked). ``position`` is the next
    ``k``."""

    def __init__(self, reader: Callable[[int], dict], start: int, stop: int, workers: int):
        workers = workers if stop - start >= MIN_WORKER_BATCHES else 0
        self.position, self.stop, self.workers = start, stop, workers
        if workers == 0:
            self._iterator = map(reader, range(start, stop))
            return
        grain = import_grain()
        dataset = (grain.MapDataset.range(start, stop).map(reader)
                   .to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=PREFETCH))
                   .mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=PREFETCH),
                                worker_init_fn=functools.partial(_start_worker,
                                                                 verbosity=absl_logging.get_verbosity())))
        self._iterator = iter(dataset)

    def __next__(self) -> dict:
        batch = next(self._iterator)
        self.position += 1
        return jax.tree.map(np.array, batch) if self.workers else batch  # out of grain's shared memory

    def close(self) -> None:
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()


class TrainFeed:
    """The training batches of a fit of ``epochs`` epochs on a Stream, epoch by epoch, from one pipeline
    over the fit's epochs from the first one asked for (workers start once; a request out of turn starts
    a new pipeline). ``check`` (the Trainer's data checks and structuring) sees every batch before a
    step does."""

    def __init__(self, s: Stream, plan: BatchIterator, weights: np.ndarray | None, share: slice, epochs: int,
                 check: Callable[[dict], dict]):
        self.stream, self.plan, self.epochs, self.check = s, plan, max(1, epochs), check
        self.reader = TrainReader(s, plan, weights, share)
        self._pipeline: Pipeline | None = None

    @property
    def full_batches(self) -> int:
        return self.plan.examples_per_epoch // self.plan.batch_size

    def epoch(self, epoch: int) -> Iterator[dict]:
        steps = self.plan.steps_per_epoch
        if self._pipeline is None or self._pipeline.position != epoch * steps:
            self.close()
            self._pipeline = Pipeline(self.reader, epoch * steps, (epoch + self.epochs) * steps, self.stream.workers)
        for _ in range(steps):
            yield self.check(next(self._pipeline))

    def probe(self) -> dict:
        """A full batch (rows ``0..batch_size-1``, wrapping), read here whole (every process)."""
        positions = np.arange(self.plan.batch_size) % len(self.stream)
        return self.check(read_batch(self.stream, positions, None, self.reader.weights))

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None


class EvalFeed:
    """The evaluation (or prediction: no ``targets``) batches of a Stream, one pass per call of
    :meth:`batches`, from one pipeline over ``repeats`` passes (a fit's validation: one a epoch)."""

    def __init__(self, s: Stream, batch_size: int, share: slice, targets: bool, repeats: int,
                 check: Callable[[dict], dict]):
        self.stream, self.repeats, self.check = s, max(1, repeats), check
        self.reader = EvalReader(s, batch_size, share, targets)
        self._pipeline: Pipeline | None = None

    def batches(self) -> Iterator[dict]:
        steps, p = self.reader.steps, self._pipeline
        if p is None or p.position % steps or p.position >= p.stop:
            self.close()
            self._pipeline = Pipeline(self.reader, 0, self.repeats * steps, self.stream.workers)
        for _ in range(steps):
            yield self.check(next(self._pipeline))

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None


@dataclasses.dataclass
class SequentialPlan:
    """The batch plan of a fit on a SequentialStream: its counts are known after the first pass."""

    batch_size: int
    steps_per_epoch: int | None = None
    examples_per_epoch: int | None = None
    epoch: int = 0

    def restore(self, state: dict) -> None:
        self.epoch = int(state["epoch"])


class SequentialFeed:
    """The batches of a SequentialStream: each pass (:meth:`epoch`, :meth:`batches`) iterates the dataset
    from its start; ``masked`` gives every batch a mask (evaluation) rather than only a padded one."""

    full_batches = None  # fused steps need the count up front

    def __init__(self, s: SequentialStream, batch_size: int, share: slice, masked: bool, targets: bool,
                 check: Callable[[dict], dict], plan: SequentialPlan | None = None):
        self.stream, self.batch_size, self.share, self.masked, self.targets = s, batch_size, share, masked, targets
        self.check, self.plan = check, plan

    def batches(self) -> Iterator[dict]:
        pending, steps, examples = [], 0, 0
        for example in self.stream.examples():
            pending.append(example)
            if len(pending) == self.batch_size:
                yield self.check(self.stream.batch(pending, self.batch_size, self.share, self.masked, self.targets))
                steps, examples, pending = steps + 1, examples + len(pending), []
        if pending:
            yield self.check(self.stream.batch(pending, self.batch_size, self.share, self.masked, self.targets))
            steps, examples = steps + 1, examples + len(pending)
        if self.plan is not None:
            self.plan.steps_per_epoch, self.plan.examples_per_epoch = steps, examples

    def epoch(self, epoch: int) -> Iterator[dict]:
        return self.batches()

    def probe(self) -> dict:
        return next(iter(self.batches()))

    def close(self) -> None:
        """Nothing to stop: the dataset's own pipeline ends with its iterator."""
