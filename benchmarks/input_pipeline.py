"""The streamed input pipeline (``fluxnet.data.stream``, grain workers) against in-memory arrays.

Generates MNIST-shaped ArrayRecord sets -- PNG-encoded 28x28x1 uint8 images with int64 labels, one
``tf.train.Example`` a record as tfds writes mnist (``fluxnet.data.write_array_record``), drawn from
scikit-learn's digits upscaled and shifted -- of each ``--sizes`` (default 100,000 and 1,000,000 rows),
cached under ``--data-dir`` (written once, by one process per core). Then, each variant in its own
process (so ``ru_maxrss`` is its own):

- ``pipeline``: the input pipeline alone, ``--workers`` processes reading shuffled batches of
  ``--batch-size`` (decode PNG, rescale), ``--pipeline-batches`` of them after the first;
- ``streamed``: ``Trainer.fit`` of the digits CNN (``configs/digits_cnn.py``'s model) on a seeded random
  ``--steps`` x ``--batch-size`` rows of the set, streamed;
- ``in memory`` (the smallest size only): the whole set decoded into arrays first (its time is
  printed), then the same fit on the same rows from the arrays, alternated ``--pairs`` times with the
  streamed one in that process: the ratio of the two step times under one machine load.

A fit runs 2 epochs of ``--steps`` steps; the second (compiled, its workers running) is timed. Printed: a Markdown
table of images/s, ms per train step and peak RSS (the main process; the largest worker), then the
ratios the issue targets (streamed step time <= 1.1x in memory; 1M rows' peak RSS within 150 MB of
100k rows').

    python benchmarks/input_pipeline.py                             # data written once, then cached
    python benchmarks/input_pipeline.py --data-dir /tmp/fluxnet-bench --sizes 100000 --steps 100
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

IMAGE = 28
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "digits_cnn.py"


# ------------------------------------------------------------------------------------------- data
def _shard(job: tuple[str, int, int]) -> None:
    """Rows ``[start, stop)`` of the set into the ArrayRecord file ``path``: digit ``row % 1797``
    upscaled to 20x20 and placed in the 28x28 frame at a shift drawn from the shard's seed (``start``)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from fluxnet.data import write_array_record

    path, start, stop = job
    digits = load_digits()
    small = [Image.fromarray((d * 255 / 16).astype(np.uint8)).resize((20, 20), Image.Resampling.BILINEAR)
             for d in digits.images]
    images = np.zeros((stop - start, IMAGE, IMAGE, 1), np.uint8)
    labels = np.empty(stop - start, np.int64)
    shifts = np.random.default_rng(start).integers(0, IMAGE - 20 + 1, (stop - start, 2))
    for i, row in enumerate(range(start, stop)):
        dy, dx = shifts[i]
        images[i, dy:dy + 20, dx:dx + 20, 0] = np.asarray(small[row % len(small)])
        labels[i] = digits.target[row % len(small)]
    write_array_record(path + ".tmp", images, labels)
    os.replace(path + ".tmp", path)


def generate(root: Path, rows: int) -> tuple[Path, float | None]:
    """The folder of the set of ``rows`` rows (made once: 50,000 rows a shard, one process per core),
    and the seconds it took to write here (None: it was cached)."""
    folder = root / f"mnist_like_{rows}"
    done = folder / "DONE"
    if done.is_file():
        return folder, None
    folder.mkdir(parents=True, exist_ok=True)
    bounds = list(range(0, rows, 50_000)) + [rows]
    jobs = [(str(folder / f"digits.array_record-{i:05d}-of-{len(bounds) - 1:05d}"), a, b)
            for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(os.cpu_count()) as pool:
        pool.map(_shard, jobs)
    seconds = time.perf_counter() - start
    done.write_text(json.dumps({"rows": rows, "seconds": seconds}))
    return folder, seconds


# ------------------------------------------------------------------------------------------- variants
class WorkerPeak:
    """The largest peak RSS (``VmHWM``, Linux) in MB of this process's worker processes, sampled every
    0.2 s while they run (``RUSAGE_CHILDREN`` would count the forks ``platform`` makes at the parent's
    size, and workers stop when their pipeline ends)."""

    def __init__(self):
        self.mb, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            for worker in multiprocessing.active_children():
                try:
                    lines = Path(f"/proc/{worker.pid}/status").read_text().splitlines()
                except OSError:
                    continue
                self.mb = max([self.mb, *(int(line.split()[1]) / 1024 for line in lines if line.startswith("VmHWM:"))])

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.mb


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_pipeline(folder: Path, args) -> dict:
    from fluxnet import data
    from fluxnet.data.streaming import TrainFeed

    peak = WorkerPeak()
    s = data.stream(folder, workers=args.workers, preprocess={"rescale": 1 / 255})
    plan = data.BatchIterator(np.arange(len(s)), None, args.batch_size, seed=0)
    epochs = -(-(args.pipeline_batches + 1) // plan.steps_per_epoch)
    feed = TrainFeed(s, plan, None, slice(0, args.batch_size), epochs, lambda b: b)
    start = time.perf_counter()
    batches = (b for e in range(epochs) for b in feed.epoch(e))
    next(batches)
    first = time.perf_counter()
    for _ in range(args.pipeline_batches):
        next(batches)
    seconds = time.perf_counter() - first
    feed.close()
    return {"images_per_s": args.pipeline_batches * args.batch_size / seconds, "first_batch_s": first - start,
            "rss_mb": _peak_mb(), "worker_rss_mb": peak.stop()}


def run_fit(folder: Path, args, in_memory: bool) -> dict:
    """The streamed fit, or (``in_memory``) the whole set decoded first, then fits alternating in-memory
    and streamed on the same rows (``--pairs`` of each), so their ratio is measured under one load."""
    import jax

    from fluxnet import data, losses
    from fluxnet.models.builders import build_model
    from fluxnet.runs.config import load_config
    from fluxnet.train import Callback, Trainer

    class LastEpoch(Callback):
        """Wall time of a fit's last epoch (its end waits for the epoch's metrics, so for its steps)."""

        def on_epoch_begin(self, epoch, state):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs, state):
            self.seconds = time.perf_counter() - self.start

    s = data.stream(folder, workers=args.workers, preprocess={"rescale": 1 / 255})
    rows = np.sort(np.random.default_rng(0).choice(len(s), args.steps * args.batch_size, replace=False))
    trainer = Trainer(build_model("cnn", (IMAGE, IMAGE, 1), 10, **load_config(CONFIG).model.cnn),
                      loss=losses.get("sparse_categorical_crossentropy", from_logits=True), optimizer="adam",
                      metrics=["accuracy"])
    start_state = trainer.init(jax.random.key(0))

    def step_ms(train) -> float:  # 2 epochs: the second is compiled and its workers running
        timer = LastEpoch()
        trainer.fit(start_state, train, epochs=2, batch_size=args.batch_size, verbose=0, seed=0, callbacks=[timer])
        return 1000 * timer.seconds / args.steps

    if not in_memory:
        peak = WorkerPeak()
        ms = step_ms(s.take(rows))
        return {"step_ms": ms, "images_per_s": 1000 * args.batch_size / ms, "rss_mb": _peak_mb(),
                "worker_rss_mb": peak.stop()}
    start = time.perf_counter()  # the whole set decoded, as in-memory training holds it
    x = np.concatenate([s.read(np.arange(i, min(i + 10_000, len(s))))[0] for i in range(0, len(s), 10_000)])
    y = s.labels
    decode_s = time.perf_counter() - start
    pairs = [(step_ms((x[rows], y[rows])), step_ms(s.take(rows))) for _ in range(args.pairs)]
    ms = float(np.median([m for m, _ in pairs]))
    return {"decode_s": decode_s, "step_ms": ms, "images_per_s": 1000 * args.batch_size / ms, "rss_mb": _peak_mb(),
            "paired_ratio": float(np.median([st / m for m, st in pairs])), "pairs": pairs}


def child(args) -> None:
    folder = Path(args.child_folder)
    result = run_pipeline(folder, args) if args.child == "pipeline" else run_fit(folder, args, args.child == "memory")
    print("RESULT " + json.dumps(result))


def in_own_process(variant: str, folder: Path, args) -> dict:
    command = [sys.executable, __file__, "--child", variant, "--child-folder", str(folder), "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--workers", str(args.workers),
               "--pipeline-batches", str(args.pipeline_batches), "--pairs", str(args.pairs)]
    proc = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{variant} on {folder} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# ------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "fluxnet-input-pipeline"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--steps", type=int, default=100, help="train steps a timed epoch")
    parser.add_argument("--pairs", type=int, default=2, help="in-memory and streamed fits alternated")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pipeline-batches", type=int, default=400)
    parser.add_argument("--child", choices=("pipeline", "streamed", "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--child-folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    sizes = sorted(args.sizes)
    root = Path(args.data_dir).expanduser()
    rows = []
    for size in sizes:
        folder, seconds = generate(root, size)
        note = "cached" if seconds is None else f"written in {seconds:.0f} s"
        print(f"{size:,} rows in {folder} ({note})", file=sys.stderr)
        variants = ["pipeline", "streamed", *(["memory"] if size == sizes[0] else [])]
        for variant in variants:
            result = in_own_process(variant, folder, args)
            print(f"  {variant}: {result}", file=sys.stderr)
            rows.append((size, variant, result))
    print(f"\n{args.workers} workers, batch {args.batch_size}, {args.steps} timed steps a fit "
          f"({os.cpu_count()} CPU cores)\n")
    print("| rows | variant | images/s | ms / train step | peak RSS MB (main) | peak RSS MB (a worker) |")
    print("|---:|---|---:|---:|---:|---:|")
    names = {"pipeline": "input pipeline alone", "streamed": "fit, streamed", "memory": "fit, in memory"}
    for size, variant, r in rows:
        step = f"{r['step_ms']:.1f}" if "step_ms" in r else ""
        worker = f"{r['worker_rss_mb']:.0f}" if variant != "memory" else ""
        extra = f" (decoded in {r['decode_s']:.1f} s first)" if "decode_s" in r else ""
        print(f"| {size:,} | {names[variant]}{extra} | {r['images_per_s']:,.0f} | {step} | {r['rss_mb']:.0f} | "
              f"{worker} |")
    by = {(size, variant): r for size, variant, r in rows}
    small, large = sizes[0], sizes[-1]
    print()
    memory = by[small, "memory"]
    print(f"- streamed / in-memory train step time at {small:,} rows: {memory['paired_ratio']:.3f}x, the median of "
          f"{args.pairs} fits of each alternated in one process (ms: "
          f"{', '.join(f'{m:.1f} / {st:.1f}' for m, st in memory['pairs'])}); "
          f"{by[small, 'streamed']['step_ms'] / memory['step_ms']:.3f}x across processes (target <= 1.1x)")
    if large != small:
        for variant in ("pipeline", "streamed"):
            grow = by[large, variant]["rss_mb"] - by[small, variant]["rss_mb"]
            print(f"- peak RSS of the {names[variant]}, {large:,} rows minus {small:,}: {grow:+.0f} MB main, "
                  f"{by[large, variant]['worker_rss_mb'] - by[small, variant]['worker_rss_mb']:+.0f} MB a worker "
                  "(target: within 150 MB)")


if __name__ == "__main__":
    main()
