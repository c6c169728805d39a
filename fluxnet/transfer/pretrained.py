"""Pretrained backbones as orbax checkpoints in a zoo directory, and strict variable restoring.

A zoo entry is a folder ``<zoo>/<name>/`` holding ``backbone.json`` (the backbone's architecture,
``model.get_config()``), ``variables/`` (an orbax checkpoint of its variables) and ``info.json``
(where it came from: source data, cut layer, classes). The zoo is ``$FLUXNET_ZOO`` or
``~/.cache/fluxnet/zoo`` (``$XDG_CACHE_HOME`` honoured) unless a ``zoo=`` argument says otherwise.

    backbone, variables = fx.pretrained.load("digits04")      # a zoo name
    backbone, variables = fx.pretrained.load("runs/pretrain")  # a pretrain run directory, or an entry dir

Restoring is strict (:func:`restore_into`): every missing, unexpected or shape-mismatched variable is
listed and nothing is restored, unless the user excludes those paths by pattern (e.g. a new head).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterable, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from fluxnet import tree
from fluxnet.errors import AlreadyExistsError, ArgumentError, CheckpointError, NotFoundError
from fluxnet.files import write_dir_atomic
from fluxnet.models import Model, model_from_config

BACKBONE_FILE, INFO_FILE, VARIABLES_DIR, RUN_BACKBONE_DIR = "backbone.json", "info.json", "variables", "backbone"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def zoo_dir(zoo: str | os.PathLike | None = None) -> Path:
    """The zoo folder: ``zoo``, else ``$FLUXNET_ZOO``, else the user's cache directory."""
    if zoo is not None:
        return Path(zoo).expanduser().resolve()
    if os.environ.get("FLUXNET_ZOO"):
        return Path(os.environ["FLUXNET_ZOO"]).expanduser().resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (cache / "fluxnet" / "zoo").resolve()


def entry_dir(name: str, zoo: str | os.PathLike | None = None) -> Path:
    """The folder of zoo entry ``name``; names are plain (letters, digits, ``_.-``) and never leave
    the zoo."""
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", "..") or ".." in name:
        raise ArgumentError(f"Invalid zoo name {name!r}: use letters, digits, '_', '.' and '-' (no path "
                            "separators or '..'), at most 128 characters.")
    root = zoo_dir(zoo)
    path = (root / name).resolve()
    if path.parent != root:
        raise ArgumentError(f"Zoo name {name!r} would leave the zoo {root}.")
    return path


def subset_variables(model: Model, variables: Mapping) -> dict:
    """The part of ``variables`` that belongs to ``model``'s layers (e.g. a backbone of a bigger model)."""
    names = {layer.name for layer in model.layers}
    return {c: {k: v for k, v in sub.items() if k in names} for c, sub in variables.items()
            if any(k in names for k in sub) or c == "params"}


def save_backbone(backbone: Model, variables: Mapping, path: str | os.PathLike, *, info: Mapping | None = None,
                  overwrite: bool = False) -> Path:
    """Write a backbone entry (architecture, variables, info) to ``path`` atomically: it is assembled
    in a temporary folder and renamed into place, so a failure never leaves half an entry. An existing
    entry is replaced only with ``overwrite=True``."""
    path = Path(path).resolve()
    if path.exists() and not overwrite:
        raise AlreadyExistsError(f"{path} already exists; pass overwrite=True (config pretrain.overwrite=True) "
                                 "to replace it.")
    variables = subset_variables(backbone, variables)
    backbone._check_variables(variables)

    def fill(tmp: Path) -> None:
        (tmp / BACKBONE_FILE).write_text(json.dumps(backbone.get_config(), indent=1))
        (tmp / INFO_FILE).write_text(json.dumps(dict(info or {}), indent=1))
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(tmp / VARIABLES_DIR, jax.device_get(variables))

    write_dir_atomic(path, fill)
    return path


def _check_no_links(entry: Path) -> None:
    """Refuse an entry with a symbolic link inside: loading must not follow it out of the zoo."""
    for path in [entry, *entry.rglob("*")]:
        if path.is_symlink():
            raise CheckpointError(f"Zoo entry {entry} holds a symbolic link, {path} -> {os.readlink(path)}; "
                                  "an entry must hold its own files. Copy the target in, or re-export it.")


def export(model: Model, variables: Mapping, name: str, cut: str, *, zoo: str | os.PathLike | None = None,
           info: Mapping | None = None, overwrite: bool = False) -> tuple[Model, Path]:
    """Export ``model``'s layers up to layer ``cut`` (its output is the backbone's output) as zoo entry
    ``name``; returns the backbone model and the entry folder."""
    backbone = Model(model.inputs, model.get_layer(cut).output, name=f"{name}_backbone")
    path = save_backbone(backbone, variables, entry_dir(name, zoo), info={**dict(info or {}), "cut": cut},
                         overwrite=overwrite)
    return backbone, path


def resolve(name_or_path: str | os.PathLike, zoo: str | os.PathLike | None = None) -> Path:
    """The entry folder for a zoo name, an entry folder, or a pretrain run directory. A plain name
    (no ``/``) is a zoo name first, so a folder of that name in the current directory never shadows
    the zoo entry; write ``./NAME`` to mean the folder."""
    if isinstance(name_or_path, str) and _NAME.match(name_or_path):
        entry = entry_dir(name_or_path, zoo)
        if (entry / BACKBONE_FILE).is_file():
            return entry
    path = Path(name_or_path).expanduser()
    for candidate in (path, path / RUN_BACKBONE_DIR):
        if (candidate / BACKBONE_FILE).is_file():
            return candidate.resolve()
    root = zoo_dir(zoo)
    names = sorted(p.name for p in root.iterdir() if (p / BACKBONE_FILE).is_file()) if root.is_dir() else []
    raise NotFoundError(f"No pretrained backbone {str(name_or_path)!r}: not an entry folder, not a pretrain "
                        f"run directory, and not a name in the zoo {root} (entries: {names or 'none'}). "
                        "Create one with `fluxnet pretrain CONFIG`.")


def load(name_or_path: str | os.PathLike, zoo: str | os.PathLike | None = None) -> tuple[Model, dict]:
    """``(backbone model, variables)`` of a zoo name, an entry folder or a pretrain run directory."""
    entry = resolve(name_or_path, zoo)
    _check_no_links(entry)
    backbone = model_from_config(json.loads((entry / BACKBONE_FILE).read_text()))
    target = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), backbone.abstract_variables())
    with ocp.StandardCheckpointer() as ckptr:
        saved = ckptr.metadata(entry / VARIABLES_DIR)
        saved = getattr(saved, "item_metadata", saved)
        problems = tree.mismatches(target, getattr(saved, "tree", saved), "checkpoint")
        if problems:
            raise CheckpointError(f"The backbone variables in {entry} do not fit its architecture:\n  "
                                  + "\n  ".join(problems))
        variables = ckptr.restore(entry / VARIABLES_DIR, target)
    return backbone, variables


def info(name_or_path: str | os.PathLike, zoo: str | os.PathLike | None = None) -> dict:
    return json.loads((resolve(name_or_path, zoo) / INFO_FILE).read_text())


def restore_into(target: Mapping, source: Mapping, exclude: Iterable[str] = ()) -> dict:
    """``target`` with every variable that ``source`` has copied in, strictly: any missing, unexpected
    or shape-mismatched path not matched by ``exclude`` makes it refuse, listing them all. Excluded
    paths keep the target's values; nothing is dropped, padded or truncated silently."""
    exclude = list(exclude)
    problems = tree.mismatches(target, source, "source", exclude)
    if problems:
        raise CheckpointError("Cannot restore the variables strictly:\n  " + "\n  ".join(problems)
                              + "\nExclude paths that are meant to differ (e.g. a new head) by pattern.")
    flat_source = {tree.path_str(p): v for p, v in jax.tree_util.tree_leaves_with_path(source)
                   if not tree.excluded(tree.path_str(p), exclude)}
    return jax.tree_util.tree_map_with_path(lambda p, v: flat_source.get(tree.path_str(p), v), target)
