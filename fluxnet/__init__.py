"""fluxnet: Keras' ease with JAX's speed and reproducibility.

This module is the façade: it re-exports the library (layers, models, losses, metrics, optimizers,
data, augment, train, callbacks, transfer, applications) and the run-directory entry point ``load_run`` of the
application layer (``fluxnet.runs``). The library packages never import the application layer
(``fluxnet.runs``, ``fluxnet.tune``, ``fluxnet.cli``); ``pyproject.toml``'s import contracts check it.
"""
from fluxnet import (activations, applications, augment, callbacks, errors, initializers, layers, losses,
                     metrics, optimizers, transfer, utils)
from fluxnet.errors import FluxnetError
from fluxnet.models import Model, Sequential, model_from_config
from fluxnet.train import Trainer
from fluxnet.train.saving import load_model
from fluxnet.train.sharding import initialize_distributed
from fluxnet.transfer import load_keras_model, load_keras_weights, pretrained

__version__ = "0.1.0"
__all__ = ["FluxnetError", "Model", "Sequential", "Trainer", "initialize_distributed", "load_keras_model",
           "load_keras_weights", "load_model", "load_run", "model_from_config", "activations", "applications",
           "augment", "callbacks", "errors", "initializers", "layers", "losses", "metrics", "optimizers",
           "pretrained", "transfer", "utils"]


def load_run(workdir, best: bool = False):
    """``(model, variables)`` of a run directory (see ``fluxnet.runs.workdir.load_run``)."""
    from fluxnet.runs.workdir import load_run as _load_run

    return _load_run(workdir, best=best)
