"""Shared fixtures: the bundled digits prepared once per session in a temporary tfds data dir, and a
persistent JAX compilation cache for the session (the training tests build many identical steps, in
this process and in subprocesses; the cache makes each repeat cost milliseconds instead of seconds).

XLA compiles the suite's programs without LLVM optimisation (``--xla_backend_optimization_level=0``, in
``XLA_FLAGS``, inherited by subprocesses): the tests' models are tiny and compiled once or twice each, so
this cuts the suite's CPU time by about a quarter; the results the tests compare are each computed under
the same flags. The benchmarks and the CLI keep XLA's defaults."""
import os
import shutil
import tempfile

import pytest

FAST_COMPILE = "--xla_backend_optimization_level=0"
if FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):  # before JAX starts its backend
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # before JAX compiles anything; inherited by subprocesses
    _CACHE = tempfile.mkdtemp(prefix="fluxnet-jax-cache-")
    _SETTINGS = {"jax_compilation_cache_dir": _CACHE, "jax_persistent_cache_min_compile_time_secs": 0,
                 "jax_persistent_cache_min_entry_size_bytes": 0}
    os.environ.update({k.upper(): str(v) for k, v in _SETTINGS.items()})
    import jax

    for _key, _value in _SETTINGS.items():
        jax.config.update(_key, _value)


def pytest_sessionfinish(session, exitstatus):
    if _CACHE is not None:
        shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def digits_tfds_dir(tmp_path_factory):
    """A tfds data dir holding the prepared ``digits`` data set."""
    from fluxnet import data

    data_dir = tmp_path_factory.mktemp("tfds")
    data.open_dataset("digits", data_dir=data_dir)
    return data_dir


@pytest.fixture(scope="session")
def digits_splits(digits_tfds_dir):
    """Digits as float32 train / validation / test splits (pixels in [0, 1])."""
    from fluxnet import data

    splits = data.load_dataset("digits", data_dir=digits_tfds_dir, splits={"validation": 0.15, "test": 0.2},
                               seed=0)
    return data.preprocess_splits(splits, {"rescale": 1 / 255})[0]


@pytest.fixture(scope="session")
def straight(tmp_path_factory, digits_tfds_dir):
    """The reference run: ``fluxnet train`` for 3 epochs in one go, in its own process."""
    from runs_support import CONFIG, fluxnet_process, overrides

    workdir = tmp_path_factory.mktemp("runs") / "straight"
    proc = fluxnet_process(["train", CONFIG, *overrides(digits_tfds_dir), "--workdir", str(workdir), "--quiet"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc.stdout


@pytest.fixture(scope="session")
def keras():
    """Keras 3 on the JAX backend, for comparisons (skipped where it is not installed)."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("Keras runs on another backend in this process")
    return keras
