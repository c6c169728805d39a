"""Pytree helpers shared by models, training, checkpoints and transfer: one copy of each.

Variables are ``{"params": {layer: {...}}, <state collection>: {layer: {...}}}`` (Flax's layout);
a train state keeps ``params`` apart from the rest (``model_state``). Paths are written
``params/conv2d/kernel``.
"""
from __future__ import annotations

import fnmatch
from typing import Any, Iterable, Mapping

import jax
import numpy as np

def path_parts(keypath: tuple) -> tuple[str, ...]:
    """``("params", "conv2d", "kernel")`` for a pytree key path (dict keys, attributes, indices)."""
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in keypath)


def path_str(keypath: tuple) -> str:
    """``params/conv2d/kernel`` for a pytree key path."""
    return "/".join(path_parts(keypath))


def split_variables(variables: Mapping) -> tuple[Any, dict]:
    """``(params, state)``: the trained collection and the others (BatchNormalization statistics)."""
    return variables["params"], {c: v for c, v in variables.items() if c != "params"}


def join_variables(params: Any, state: Mapping) -> dict:
    """The inverse of :func:`split_variables`: ``{"params": params, **state}``."""
    return {"params": params, **state}


def plain(value: Any) -> Any:
    """A ConfigDict (or FrozenConfigDict) as a plain nested dict; any other value unchanged."""
    return value.to_dict() if hasattr(value, "to_dict") else value


def shapes(tree: Any) -> dict[str, tuple]:
    """``{path: shape}`` of every leaf (arrays, shape structs or checkpoint metadata)."""
    return {path_str(p): tuple(getattr(v, "shape", np.shape(v)))
            for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def excluded(path: str, patterns: Iterable[str]) -> bool:
    """Whether ``path`` matches one of the glob ``patterns`` (``params/head*``)."""
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns)


def mismatches(target: Any, source: Any, source_name: str = "source", exclude: Iterable[str] = ()) -> list[str]:
    """Every path missing from ``source``, in it but not in ``target`` (the model), or of another
    shape, except paths matching an ``exclude`` pattern; ``source_name`` names the source in the
    messages ("checkpoint", "variables")."""
    exclude = list(exclude)
    t, s = shapes(target), shapes(source)
    t = {p: v for p, v in t.items() if not excluded(p, exclude)}
    s = {p: v for p, v in s.items() if not excluded(p, exclude)}
    problems = [f"{p}: missing from the {source_name} (model expects {t[p]})" for p in t if p not in s]
    problems += [f"{p}: unexpected (in the {source_name}, not in the model), shape {s[p]}" for p in s if p not in t]
    problems += [f"{p}: {source_name} shape {s[p]}, model expects {t[p]}" for p in t if p in s and s[p] != t[p]]
    return problems
