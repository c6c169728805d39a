"""Start-up and profiling: the command line's persistent compilation cache (``train.compilation_cache``)
and ``fluxnet train --profile``."""
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from jax.experimental.compilation_cache import compilation_cache as jax_cache

from fluxnet import runs
from fluxnet.errors import ConfigError
from fluxnet.runs import compilation_cache

MLP = str(Path(__file__).resolve().parent.parent / "configs" / "digits_mlp.py")


def test_the_cache_directory_follows_the_config_and_the_environment(tmp_path, monkeypatch):
    config = runs.resolve_config(MLP)
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compilation_cache.cache_dir(config) == tmp_path / "xdg" / "fluxnet" / "jax"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
    assert compilation_cache.cache_dir(config) == tmp_path / "jax"            # JAX's own setting wins
    assert compilation_cache.cache_dir(runs.resolve_config(MLP, ["train.compilation_cache=None"])) is None
    moved = runs.resolve_config(MLP, [f"train.compilation_cache={tmp_path / 'mine'}"])
    assert compilation_cache.cache_dir(moved) == tmp_path / "mine"
    with pytest.raises(ConfigError, match="train.compilation_cache"):
        compilation_cache.cache_dir(runs.resolve_config(MLP, ["train.compilation_cache=''"]))


def test_configuring_the_cache_again_in_one_process_moves_it(tmp_path):
    """JAX opens its cache once per process; ``configure`` reopens it where the config says."""
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    before = {name: getattr(jax.config, name) for name in names}
    try:
        for size, name in ((3, "first"), (5, "second")):
            compilation_cache.configure(runs.resolve_config(MLP, [f"train.compilation_cache={tmp_path / name}"]))
            jax.jit(lambda x: jnp.sin(x) * 2)(jnp.arange(size, dtype=jnp.float32)).block_until_ready()
            assert list((tmp_path / name).iterdir()), name
    finally:
        for name, value in before.items():
            jax.config.update(name, value)
        jax_cache.reset_cache()


def test_a_second_run_loads_its_steps_from_the_cache_and_profile_writes_a_trace(tmp_path, digits_tfds_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}   # not the test session's cache
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    args = ["train", MLP, f"data.data_dir={digits_tfds_dir}", "train.epochs=1", "model.mlp.units=(16,)", "--quiet"]
    first = subprocess.run([sys.executable, "-m", "fluxnet.cli", *args, "--workdir", str(tmp_path / "a"),
                            "--profile"], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    cached = sorted((tmp_path / "xdg" / "fluxnet" / "jax").iterdir())
    assert any("train_step" in p.name for p in cached), [p.name for p in cached]
    traces = list((tmp_path / "a" / "tensorboard" / "plugins" / "profile").rglob("*.xplane.pb"))
    assert traces and traces[0].stat().st_size > 1000
    stamps = {p: p.stat().st_mtime_ns for p in cached}
    second = subprocess.run([sys.executable, "-m", "fluxnet.cli", *args, "--workdir", str(tmp_path / "b")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in cached} == stamps                # read, not compiled and written again
    assert sorted((tmp_path / "xdg" / "fluxnet" / "jax").iterdir()) == cached  # every program was a hit
    assert not (tmp_path / "b" / "tensorboard" / "plugins").exists()          # no trace without --profile
