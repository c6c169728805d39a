"""Rebuilding a model of either kind from ``model.get_config()`` (``model.json`` in a run directory)."""
from __future__ import annotations

from typing import Mapping

from fluxnet.models.functional import Model
from fluxnet.models.sequential import Sequential


def model_from_config(config: Mapping) -> Model:
    """A Sequential or Functional model, with fresh layers of the recorded names and arguments (a nested
    model's config is one of its layers' configs: the classes are registered as "Functional" and
    "Sequential")."""
    cls = Sequential if config.get("class_name") == "Sequential" else Model
    return cls.from_config(config)
