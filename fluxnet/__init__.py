"""fluxnet: Keras' ease with JAX's speed and reproducibility."""
from fluxnet import (activations, applications, augment, initializers, layers, losses, metrics, optimizers,
                     pretrained, transfer)
from fluxnet.keras_weights import load_keras_weights
from fluxnet.models import Model, Sequential, model_from_config
from fluxnet.train import Trainer

__version__ = "0.1.0"
__all__ = ["Model", "Sequential", "Trainer", "model_from_config", "load_run", "load_keras_weights", "layers",
           "activations", "initializers", "losses", "metrics", "optimizers", "augment", "applications",
           "pretrained", "transfer"]


def load_run(workdir, best: bool = False):
    """``(model, variables)`` of a run directory (see ``fluxnet.run.load_run``)."""
    from fluxnet.run import load_run as _load_run

    return _load_run(workdir, best=best)
