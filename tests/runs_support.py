"""Helpers of the run-directory tests: the small digits run every test trains, running the command
line in its own process, snapshots and bit-exact comparisons of run directories."""
import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from fluxnet.models import model_from_config
from fluxnet.runs.build import build_trainer
from fluxnet.runs.config import load_saved_config
from fluxnet.train.checkpoint import Checkpointer

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
CONFIG = str(CONFIGS_DIR / "digits_cnn.py")
# EarlyStopping watches val_loss in mode "max", which never improves on epoch 1: it runs all 3 epochs
# and then restores epoch 1's weights, so the final model differs from the last checkpoint's.
EARLY_STOPPING = '{"monitor": "val_loss", "mode": "max", "patience": 5, "restore_best_weights": True}'


def overrides(data_dir, epochs=3, *extra):
    return [f"data.data_dir={data_dir}", "model.cnn.filters=(8,)", "model.cnn.dense_units=16",
            "train.batch_size=64", "optimizer.schedule=constant", f"train.early_stopping={EARLY_STOPPING}",
            f"train.epochs={epochs}", "train.plots=False", *extra]  # the plots: tests that look at them


def device_flags(devices: int) -> str:
    """``XLA_FLAGS`` for a subprocess with ``devices`` CPU devices, keeping the suite's own flags."""
    return f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()


def fluxnet_process(args, crash_at=None):
    env = {k: v for k, v in os.environ.items() if k != "FLUXNET_CRASH_AT"}
    if crash_at:
        env["FLUXNET_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-m", "fluxnet.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300)


# ``python -m fluxnet.cli`` with SIGINT raising KeyboardInterrupt, as Python sets it up when started from an
# interactive shell (a preexec_fn would do it too, but forks a multithreaded JAX process: a deadlock risk)
INTERACTIVE_CLI = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                   "runpy.run_module('fluxnet.cli', run_name='__main__', alter_sys=True)")


def start_until(command: list, ready: Path, **popen) -> subprocess.Popen:
    """``fluxnet COMMAND...`` started in its own process, returned once ``ready`` exists (it is then still
    running: the test fails otherwise). Its faulthandler is on, for :func:`finish`, and its SIGINT is
    Python's default, as an interactive shell starts a command: run from a background job (``make test
    &``), the suite itself ignores SIGINT, and fluxnet keeps a signal its parent ignores ignored."""
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", **popen.pop("env", {})}
    proc = subprocess.Popen([sys.executable, "-c", INTERACTIVE_CLI, *command], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, **popen)
    for _ in range(1800):
        if ready.exists() or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    return proc


def finish(proc: subprocess.Popen, timeout: float) -> str:
    """The stderr of a :func:`start_until` process once it exits; one still running after ``timeout``
    seconds is aborted and the test fails with every thread's Python stack (faulthandler's dump)."""
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        err = proc.communicate(timeout=60)[1]
        raise AssertionError(f"still running after {timeout} s; its stacks:\n{err[-6000:]}") from None


def latest_state(workdir: Path):
    """The latest checkpoint's TrainState, restored as a fresh process would."""
    config = load_saved_config(workdir / "config.json")
    model = model_from_config(json.loads((workdir / "model.json").read_text()))
    trainer = build_trainer(config, model, steps=1)
    checkpointer = Checkpointer(workdir / "checkpoints", read_only=True)
    state, _, _ = checkpointer.restore(checkpointer.latest_step(), trainer.abstract_state())
    checkpointer.close()
    return jax.device_get(state)


def assert_same_run(workdir: Path, reference: Path):
    """Bit-identical results: metrics.jsonl, summary.json's numbers, the latest checkpoint."""
    assert (workdir / "metrics.jsonl").read_bytes() == (reference / "metrics.jsonl").read_bytes()
    ours, theirs = (json.loads((d / "summary.json").read_text()) for d in (workdir, reference))
    for key in ("test", "best_checkpoint", "history", "epochs_completed", "steps", "baseline"):
        assert ours[key] == theirs[key], key
    assert repr(ours["test"]["loss"]) == repr(theirs["test"]["loss"])
    same = jax.tree.map(lambda a, b: np.array_equal(a, b), latest_state(workdir), latest_state(reference))
    assert all(jax.tree.leaves(same))
    assert not glob.glob(str(workdir / "checkpoints" / "*tmp*"))


def snapshot(directory: Path) -> dict:
    """Every path under ``directory`` with its modification time and content."""
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for p in sorted(directory.rglob("*"))}


def digest(directory: Path, skip: tuple[str, ...] = (".lock",)) -> dict:
    """Content hashes of every file under ``directory`` (``skip``: names a refused command may touch)."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name not in skip}


def cli_error(capsys) -> str:
    """The command line's stderr, checked to be one line with no traceback."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err
