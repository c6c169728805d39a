"""A persistent XLA compilation cache for the command line: a second run of the same config loads its
compiled steps from disk instead of compiling them again.

``train.compilation_cache``: ``"auto"`` (the default) is JAX's own ``$JAX_COMPILATION_CACHE_DIR`` where
it is set, else a per-user directory, ``$XDG_CACHE_HOME/fluxnet/jax`` (``~/.cache/fluxnet/jax``); a
path is that directory; None turns it off. Set before anything compiles (the CLI does it right after
reading the config). Every program is kept, however fast it compiled (:data:`MIN_COMPILE_SECONDS`): on
a CPU a step compiles in 0.3-2 s, below JAX's own default threshold of 1 s, and reading a small program
back costs less than compiling it; a threshold would also make what is cached depend on the load.
"""
from __future__ import annotations

import os
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cache
from ml_collections import ConfigDict

from fluxnet.errors import ConfigError
from fluxnet.tree import plain

MIN_COMPILE_SECONDS = 0.0


def cache_dir(config: ConfigDict) -> Path | None:
    """The directory ``config`` asks for, or None when the cache is off."""
    train = config.get("train")  # a config without it is refused by name later, by the job
    value = plain(train.get("compilation_cache", "auto")) if hasattr(train, "get") else "auto"
    if value is None or value is False:
        return None
    if value == "auto":
        if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
            return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fluxnet" / "jax"
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ConfigError(f"Config key 'train.compilation_cache' must be 'auto', a directory or None, got {value!r}.")
    return Path(value).expanduser()


def configure(config: ConfigDict) -> Path | None:
    """Point JAX's persistent compilation cache at ``config``'s directory (or turn it off); returns it.
    JAX opens its cache once per process: it is reset, so that a second call takes effect."""
    directory = cache_dir(config)
    jax_cache.reset_cache()
    if directory is None:
        jax.config.update("jax_compilation_cache_dir", None)
        return None
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory
